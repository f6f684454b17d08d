//! Per-statement policy decisions for a session: which role applies and what is forwarded.
//!
//! The policy store and the catalog are shared; each session keeps its user, groups and
//! search_path. Analysis results are cached per (statement text, role, policy version,
//! search_path), so a repeated statement costs a hash lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::analysis::{self, Analysed, Outcome};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::metrics::AnalysisCounters;
use crate::policy::model::RoleRules;
use crate::policy::store::PolicyStore;
use crate::protocol::PgError;
pub use origins::Protected;
use search_path::TxPath;

mod cache;
pub mod epoch;
mod groups;
mod pseudonym;
use pseudonym::pseudonym_ready;
mod origins;
mod policy_state;
mod prepared;
mod search_path;
mod service;

pub use service::service_connect;
mod startup;
use cache::CacheEntry;
use origins::protected_origins;
pub use origins::AuditFacts;

/// What the session does with one statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the client's bytes unchanged.
    Forward,
    /// Forward `sql` of this analysis instead (the rendering of the analysed, rewritten
    /// statement); it also says what the statement reads and writes.
    Rewrite(Rewrite),
    /// Do not forward; the client gets this error.
    Refuse(PgError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyErrors),
    #[error("catalog: {}: {source}", path.display())]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// tokio-postgres's own text is only "db error": the server's message is in its chain.
    #[error(
        "catalog: service connection as {user}: {}",
        crate::cause::chain(source)
    )]
    Connect {
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("catalog: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Cache bound. Beyond it the least useful entries are evicted (S3-FIFO: one-off statements
/// leave first), so a client sending many distinct statements cannot flush the statements
/// every other session repeats; an evicted statement is only analysed again.
const CACHE_MAX: usize = 20_000;

struct Inner {
    store: Arc<PolicyStore>,
    catalog: ArcSwap<Catalog>,
    /// Counts loads that changed the catalog (raised once the new one is in force): prepared
    /// statements are decided again after one (see [`epoch`]).
    catalog_generation: AtomicU64,
    service: Option<Arc<service::Service>>,
    /// Analysis results by a hash of (statement text, role, policy version, search_path); each
    /// entry keeps its key so a hit is confirmed without allocating.
    cache: quick_cache::sync::Cache<u64, Arc<CacheEntry>>,
    /// Per (role, policy version): columns the role may not see as stored, by origin.
    protected: DashMap<(String, String), Arc<Protected>>,
    /// Per policy version: what audit records need to know about the catalog.
    audit_facts: DashMap<String, Arc<AuditFacts>>,
    refresh: tokio::sync::Notify,
    /// Audit records are written: plain SELECTs carry hidden subject-key columns.
    hidden_subjects: bool,
    /// Every reload's outcome (SIGHUP or file change), for whoever counts and records them.
    reloads: tokio::sync::broadcast::Sender<Result<String, String>>,
    loaded_at: SystemTime,
    /// The analysis cache's counters; the metrics registry holds clones.
    counters: AnalysisCounters,
    /// When (ms after `loaded_at`) a refusal for want of the pseudonym function last asked for
    /// a catalog refresh, so that `pgvakt install` takes effect without waiting for the timer.
    pseudonym_refresh_ms: AtomicU64,
}

/// A statement to forward as rewritten: its analysis, and the text when the analysis was of
/// the statement's shape (constants put back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub analysed: Arc<Analysed>,
    filled: Option<String>,
}

impl Rewrite {
    /// The text to forward.
    pub fn sql(&self) -> &str {
        self.filled.as_deref().unwrap_or(&self.analysed.sql)
    }
}

impl std::ops::Deref for Rewrite {
    type Target = Analysed;
    fn deref(&self) -> &Analysed {
        &self.analysed
    }
}

/// What an unrestricted role's statement touches, for its audit record.
pub enum Observed {
    Reads(Arc<Analysed>),
    /// It could not be analysed: personal data may have been read.
    Unknown,
}

/// Reload outcomes queued for a slow listener before it misses some (and is told how many).
const RELOAD_BACKLOG: usize = 64;

impl Inner {
    fn reloaded(&self, r: &Result<String, String>) {
        match r {
            Ok(v) => tracing::info!(policy.version = %v, "policy reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "policy reload failed; the previous policy stays in force")
            }
        }
        // No listener (tests, offline tools) is not an error.
        let _ = self.reloads.send(r.clone());
    }
}

/// The catalog at startup. Until the catalog is read, restricted roles can read no table (fail
/// closed).
async fn first_catalog(s: &service::Service, db: &str, counters: &AnalysisCounters) -> Catalog {
    match s.load_catalog(db).await {
        Ok(cat) => {
            counters.catalog_loaded();
            cat
        }
        Err(e) => {
            counters.catalog_refresh_failures.inc();
            tracing::warn!(error = %e, "catalog not loaded yet; restricted roles can read no table until it is");
            Catalog::new(db)
        }
    }
}

/// Reload the catalog when asked, when the service connection is back, and every 30 s, for as
/// long as the enforcer lives.
async fn keep_catalog(weak: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some(service) = inner.service.clone() else {
            return;
        };
        tokio::select! {
            _ = inner.refresh.notified() => {}
            _ = service.reconnected.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        inner.reload_catalog(&service).await;
    }
}

impl Inner {
    /// Read the catalog again; what was derived from the old one is dropped. A failed read
    /// keeps the previous catalog.
    async fn reload_catalog(&self, service: &service::Service) {
        match service.load_catalog(&self.catalog.load().database).await {
            Ok(cat) => {
                // Most loads find the schema as it was: those keep the epoch, so names
                // defined more than once stay usable.
                let changed = **self.catalog.load() != cat;
                self.catalog.store(Arc::new(cat));
                if changed {
                    self.catalog_generation.fetch_add(1, Ordering::Release);
                    // Derived from the old catalog. An unchanged one keeps them: dropping
                    // every analysed statement each 30 s made every shape pay its first
                    // analysis again.
                    self.cache.clear();
                    self.protected.clear();
                    self.audit_facts.clear();
                    self.counters.cache_entries.set(0);
                }
                self.counters.catalog_loaded();
            }
            Err(e) => {
                self.counters.catalog_refresh_failures.inc();
                tracing::warn!(error = %e, "catalog refresh failed; keeping the previous one")
            }
        }
    }
}

/// Builds the per-session view of the policy. Without policy files every session passes
/// through untouched (the proxy is then a plain TLS-terminating relay).
#[derive(Default, Clone)]
pub struct Enforcer {
    inner: Option<Arc<Inner>>,
}

/// An enforcer that does not keep it (or its service connection) alive: for tasks that follow
/// it and must end with it.
#[derive(Clone)]
pub struct WeakEnforcer {
    inner: Option<std::sync::Weak<Inner>>,
}

impl WeakEnforcer {
    /// The enforcer, while anything else still holds it.
    pub fn upgrade(&self) -> Option<Enforcer> {
        match &self.inner {
            Some(w) => w.upgrade().map(|i| Enforcer { inner: Some(i) }),
            None => Some(Enforcer { inner: None }),
        }
    }
}

impl Enforcer {
    pub fn downgrade(&self) -> WeakEnforcer {
        WeakEnforcer {
            inner: self.inner.as_ref().map(Arc::downgrade),
        }
    }

    pub fn new() -> Self {
        Enforcer { inner: None }
    }

    /// Enforcer over a given policy store and catalog (tests, offline explain).
    pub fn with_parts(store: Arc<PolicyStore>, catalog: Catalog) -> Self {
        Enforcer {
            inner: Some(Arc::new(Inner {
                store,
                catalog: ArcSwap::from_pointee(catalog),
                catalog_generation: AtomicU64::new(0),
                service: None,
                cache: quick_cache::sync::Cache::new(CACHE_MAX),
                protected: DashMap::new(),
                audit_facts: DashMap::new(),
                refresh: tokio::sync::Notify::new(),
                reloads: tokio::sync::broadcast::channel(RELOAD_BACKLOG).0,
                hidden_subjects: false,
                loaded_at: SystemTime::now(),
                counters: AnalysisCounters::default(),
                pseudonym_refresh_ms: AtomicU64::new(0),
            })),
        }
    }

    /// Load the policy files and the upstream catalog named by the configuration.
    pub async fn load(config: &Config) -> Result<Enforcer, EnforceError> {
        if config.policy.paths.is_empty() {
            tracing::warn!("no policy configured: every statement passes through unchanged");
            return Ok(Enforcer::new());
        }
        let store = Arc::new(PolicyStore::open(config.policy.paths.clone())?);
        let db = config.upstream.service_database.clone();
        let service = match &config.upstream.service_user {
            Some(user) => Some(service::Service::start(config, user).await),
            None => None,
        };
        let counters = AnalysisCounters::default();
        let catalog = match &service {
            Some(s) => first_catalog(s, &db, &counters).await,
            None => {
                tracing::warn!("no upstream.service_user: the catalog is empty, restricted roles can read no table");
                Catalog::new(&db)
            }
        };
        tracing::info!(relations = catalog.len(), policy.version = %store.current().version, "policy and catalog loaded");
        let inner = Arc::new(Inner {
            store: store.clone(),
            catalog: ArcSwap::from_pointee(catalog),
            catalog_generation: AtomicU64::new(0),
            service,
            cache: quick_cache::sync::Cache::new(CACHE_MAX),
            protected: DashMap::new(),
            audit_facts: DashMap::new(),
            refresh: tokio::sync::Notify::new(),
            reloads: tokio::sync::broadcast::channel(RELOAD_BACKLOG).0,
            hidden_subjects: config.audit.is_some(),
            loaded_at: SystemTime::now(),
            counters,
            pseudonym_refresh_ms: AtomicU64::new(0),
        });
        if config.policy.watch_interval_ms > 0 {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(crate::policy::store::watch(
                store,
                Duration::from_millis(config.policy.watch_interval_ms),
                move |r| {
                    if let Some(inner) = weak.upgrade() {
                        inner.reloaded(&r.map_err(|e| e.to_string()));
                    }
                },
            ));
        }
        tokio::spawn(keep_catalog(Arc::downgrade(&inner)));
        Ok(Enforcer { inner: Some(inner) })
    }

    /// The policy view for a new session of `user`. When the policy grants roles to PostgreSQL
    /// groups and `user`'s groups cannot be looked up now, the login is refused: any role
    /// chosen without them could be wider than the one they would choose.
    pub async fn session(&self, user: &str, database: &str) -> Result<SessionPolicy, PgError> {
        let needs_groups = self
            .inner
            .as_ref()
            .is_some_and(|i| i.store.current().has_group_grants());
        let groups = if needs_groups {
            let lookup = match self.inner.as_ref().and_then(|i| i.service.as_ref()) {
                Some(s) => s.member_groups(user).await,
                None => Err("no upstream.service_user is configured".to_owned()),
            };
            lookup.map_err(|e| {
                PgError::fatal(
                    "28000",
                    format!("pgvakt: the policy role of user {user} depends on its PostgreSQL groups, which cannot be looked up now ({e}); the login is refused"),
                )
                .with_hint("Try again shortly; pgvakt reconnects to PostgreSQL on its own.")
            })?
        } else {
            Vec::new()
        };
        Ok(SessionPolicy {
            inner: self.inner.clone(),
            user: user.to_owned(),
            database: database.to_owned(),
            groups,
            groups_at: needs_groups.then(std::time::Instant::now),
            search_path: analysis::default_search_path(),
            protected: None,
            protected_for: None,
            ddl_sent: false,
            tx_path: None,
            tx_ends_seen: 0,
            in_tx: false,
            tx_failed: false,
            epochs: epoch::Epochs::new(),
        })
    }
}

/// The policy as one session sees it, with the session state analysis depends on.
pub struct SessionPolicy {
    inner: Option<Arc<Inner>>,
    pub user: String,
    pub database: String,
    pub groups: Vec<String>,
    /// When `groups` were looked up (None: not yet; see [`groups`]).
    groups_at: Option<std::time::Instant>,
    pub search_path: Vec<String>,
    /// Origins of the columns the current role may not see as stored (None: unrestricted).
    pub protected: Option<Arc<Protected>>,
    /// (role, policy version) `protected` was computed for.
    protected_for: Option<(String, String)>,
    /// A statement that changes the schema was forwarded; the catalog is reloaded once it has
    /// completed (reloading when it is sent would read the catalog before it commits).
    ddl_sent: bool,
    /// search_path changes inside the open transaction, undone or kept when it ends.
    tx_path: Option<TxPath>,
    /// Transactions seen ending (the relay's count) and whether one is open now.
    tx_ends_seen: u64,
    in_tx: bool,
    /// The open block failed: its COMMIT rolls back.
    tx_failed: bool,
    /// Prepared statements and portals defined under the current policy role, once it changed.
    epochs: epoch::Epochs,
}

/// Reloads pgvakt's catalog on request; the relay's result side holds one.
#[derive(Clone)]
pub struct CatalogRefresh(Option<Arc<Inner>>);

impl CatalogRefresh {
    pub fn request(&self) {
        if let Some(inner) = &self.0 {
            inner.refresh.notify_one();
        }
    }
}

impl SessionPolicy {
    pub fn catalog_refresh(&self) -> CatalogRefresh {
        CatalogRefresh(self.inner.clone())
    }

    /// Whether a schema-changing statement was forwarded since the last call.
    pub fn take_ddl_sent(&mut self) -> bool {
        std::mem::take(&mut self.ddl_sent)
    }

    /// True when statements must go through `check` (a policy is loaded).
    pub fn is_restricted(&self) -> bool {
        self.inner.is_some()
    }

    /// Version of the policy in force, if any.
    pub fn policy_version(&self) -> Option<String> {
        Some(self.inner.as_ref()?.store.current().version.clone())
    }

    /// Identity of the policy set in force: changes with every reload (cheap to compare).
    pub fn policy_generation(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| Arc::as_ptr(&i.store.current()) as usize)
    }

    /// The session's current policy role and whether it has any restriction.
    pub fn role(&self) -> Option<(String, bool)> {
        let inner = self.inner.as_ref()?;
        let r = inner
            .store
            .current()
            .resolve(&self.user, &self.groups, SystemTime::now());
        Some((r.role.name().to_owned(), !r.role.is_unrestricted()))
    }

    /// The session role's declared purpose and GDPR Art. 6(1) legal basis, if it has them.
    pub fn purpose(&self) -> Option<(String, String)> {
        let inner = self.inner.as_ref()?;
        let r = inner
            .store
            .current()
            .resolve(&self.user, &self.groups, SystemTime::now());
        r.role.purpose.clone()
    }

    /// The declared purposes (`roles.*.purposes`) of the session's role.
    pub fn purposes(&self) -> Vec<String> {
        let Some(inner) = self.inner.as_ref() else {
            return Vec::new();
        };
        let r = inner
            .store
            .current()
            .resolve(&self.user, &self.groups, SystemTime::now());
        r.role.purposes.clone()
    }

    /// Decide a simple-protocol query or a statement to prepare.
    pub fn check(&mut self, sql: &str) -> Verdict {
        let Some(inner) = self.inner.clone() else {
            return Verdict::Forward;
        };
        let parsing = self.epochs.take_parsing();
        let set = inner.store.current();
        let resolution = set.resolve(&self.user, &self.groups, SystemTime::now());
        let rules = resolution.role;
        let catalog = inner.catalog_generation.load(Ordering::Acquire);
        self.epochs.enter(rules.name(), &set.version, catalog);
        if rules.is_unrestricted() {
            self.protected = None;
            self.protected_for = None;
        } else if self
            .protected_for
            .as_ref()
            .is_none_or(|(r, v)| r != rules.name() || *v != set.version)
            || self.protected.is_none()
        {
            let key = (rules.name().to_owned(), set.version.clone());
            self.protected = Some(
                inner
                    .protected
                    .entry(key.clone())
                    .or_insert_with(|| {
                        Arc::new(protected_origins(&inner.catalog.load(), rules.as_ref()))
                    })
                    .clone(),
            );
            self.protected_for = Some(key);
        }
        if rules.is_unrestricted() {
            if looks_like_ddl(sql) {
                self.ddl_sent = true;
            }
            if epoch::may_define_names(sql) {
                // Only remembered, for a later change: nothing is checked here.
                let _ = self.epochs.text(
                    &analysis::session_names::name_ops(sql),
                    None,
                    false,
                    &mut |_| Ok(()),
                );
            }
            return Verdict::Forward;
        }
        let (outcome, filled) = self.analysed(&inner, &set, rules.as_ref(), sql);
        match outcome.as_ref() {
            Outcome::Forward(a) => {
                if let Err(e) = pseudonym_ready(&inner, &set, &a.sql) {
                    return Verdict::Refuse(e);
                }
                let rewrite = Rewrite {
                    analysed: a.clone(),
                    filled,
                };
                let decided = (sql, rewrite.sql());
                if let Err(e) = self.follow_names(&inner, &set, rules.as_ref(), decided, parsing) {
                    return Verdict::Refuse(e);
                }
                self.apply_path_events(&a.path_events);
                Verdict::Rewrite(rewrite)
            }
            // Where a refusal becomes the error the client gets.
            Outcome::Refuse(r) => Verdict::Refuse(r.to_pg_error()),
        }
    }

    /// For audit records of an unrestricted role, whose statements pass unchanged: what the
    /// statement reads and writes. None when it cannot touch personal data.
    pub fn observe(&mut self, sql: &str) -> Option<Observed> {
        let inner = self.inner.clone()?;
        let set = inner.store.current();
        let facts = self.audit_facts()?;
        if !facts.may_touch(sql) {
            return None;
        }
        let rules = set
            .resolve(&self.user, &self.groups, SystemTime::now())
            .role;
        Some(
            match self.analysed(&inner, &set, rules.as_ref(), sql).0.as_ref() {
                Outcome::Forward(a) => {
                    self.apply_path_events(&a.path_events);
                    if !a.touches_personal_data() {
                        return None;
                    }
                    Observed::Reads(a.clone())
                }
                Outcome::Refuse(_) => Observed::Unknown,
            },
        )
    }

    /// Subject keys and personal relation names for the policy and catalog in force.
    pub fn audit_facts(&self) -> Option<Arc<AuditFacts>> {
        let inner = self.inner.as_ref()?;
        let set = inner.store.current();
        Some(
            inner
                .audit_facts
                .entry(set.version.clone())
                .or_insert_with(|| Arc::new(AuditFacts::compute(&inner.catalog.load(), &set)))
                .clone(),
        )
    }
}

fn looks_like_ddl(sql: &str) -> bool {
    let head: String = sql
        .trim_start()
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    ["create", "alter", "drop", "comment"]
        .iter()
        .any(|k| head.starts_with(k))
}
