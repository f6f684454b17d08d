//! Prometheus metrics, declared once (`Metrics::new`), and the HTTP listener serving
//! `/metrics`, `/healthz` and `/readyz` (`http.rs`).
//!
//! prometheus-client is the Prometheus project's own crate: explicit registry, OpenMetrics text.
//! Label values come only from the fixed sets in `labels.rs`, never from SQL, user or table
//! names; the standard `process_*` metrics come from `process.rs`.

mod declared;
mod http;
mod labels;
mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use declared::*;

pub use http::{bind, classic_text, serve, ReadyCheck};
pub use labels::{
    snake, Class, Decision, Direction, DirectionLabel, Outcome, OutcomeLabel, ReadLabels,
    ReasonLabel, RefusalLabels, RefusalReason, RefuseReason, StatementLabels,
};

/// A declared purpose's name (`purposes:` of the policy: a small set the policy fixes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabel {
    pub purpose: String,
}

/// The label of the `_info` metrics: a version string (pgvakt's, or the policy's hash).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// Every metric pgvakt exports.
pub struct Metrics {
    registry: Registry,
    /// The unprefixed `process_*` metrics.
    process: Registry,
    policy_info: Family<VersionLabel, Gauge>,
    pub connections_current: Gauge,
    pub connections_total: Counter,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub tls_handshakes: Family<OutcomeLabel, Counter>,
    pub statements: Family<StatementLabels, Counter>,
    /// By the declared purposes (`purposes:`) of the session's role.
    pub statements_by_purpose: Family<PurposeLabel, Counter>,
    pub statement_seconds: Histogram,
    pub upstream_connect_errors: Counter,
    pub bytes: Family<DirectionLabel, Counter>,
    pub policy_reloads: Family<OutcomeLabel, Counter>,
    pub policy_loaded_at: Gauge,
    pub enforcement_anomalies: Counter,
    /// Statements refused, by policy role and reason.
    refusals: Family<RefusalLabels, Counter>,
    /// Statements reading personal data, by policy role, category and action.
    personal_reads: Family<ReadLabels, Counter>,
    /// notAfter of the certificate clients are served.
    tls_certificate_expiry: Gauge,
    pub analysis_cache_hits: Counter,
    pub analysis_cache_misses: Counter,
    pub analysis_cache_entries: Gauge,
    /// Logins refused because the user's PostgreSQL groups could not be looked up.
    role_lookup_failures: Counter,
    pub audit: crate::audit::AuditMetrics,
    pub access: crate::access::AccessMetrics,
    ready: Gauge,
}

/// The counters the enforcer keeps itself (it exists before the server and its registry do):
/// its analysis cache and its catalog. The registry holds clones of the same counters.
#[derive(Debug, Clone, Default)]
pub struct AnalysisCounters {
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    /// Unix time of the last successful catalog load (0 before the first).
    pub catalog_loaded_at: Gauge,
    /// Catalog loads and refreshes that failed (the previous catalog stays).
    pub catalog_refresh_failures: Counter,
}

impl AnalysisCounters {
    /// A catalog load succeeded now.
    pub fn catalog_loaded(&self) {
        self.catalog_loaded_at
            .set(unix_seconds(std::time::SystemTime::now()));
    }
}

fn unix_seconds(at: std::time::SystemTime) -> i64 {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// `metric`, registered under its declared name and help text.
fn registered<M: Metric + Clone>(registry: &mut Registry, (name, help): Declared, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// `build_info`, always 1, its label the running version.
fn register_build_info(r: &mut Registry) {
    registered(r, BUILD_INFO, Family::<VersionLabel, Gauge>::default())
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
}

/// The enforcer's own catalog counters (the registry holds clones).
fn register_catalog_counters(r: &mut Registry, analysis: &AnalysisCounters) {
    registered(
        r,
        CATALOG_LOADED_TIMESTAMP_SECONDS,
        analysis.catalog_loaded_at.clone(),
    );
    registered(
        r,
        CATALOG_REFRESH_FAILURES,
        analysis.catalog_refresh_failures.clone(),
    );
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&AnalysisCounters::default())
    }
}

impl Metrics {
    pub fn new(analysis: &AnalysisCounters) -> Self {
        let mut registry = Registry::with_prefix("pgvakt");
        let r = &mut registry;
        register_build_info(r);
        let policy_info = registered(r, POLICY_INFO, Family::default());
        let connections_current = registered(r, CLIENT_CONNECTIONS, Gauge::default());
        let connections_total = registered(r, CLIENT_CONNECTIONS_ACCEPTED, Counter::default());
        let connections_refused = registered(r, CLIENT_CONNECTIONS_REFUSED, Family::default());
        let tls_handshakes = registered(r, TLS_HANDSHAKES, Family::default());
        let statements = registered(r, STATEMENTS, Family::default());
        let statements_by_purpose = registered(r, STATEMENTS_BY_PURPOSE, Family::default());
        let statement_seconds = registered(
            r,
            STATEMENT_DURATION_SECONDS,
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
        );
        let upstream_connect_errors = registered(r, UPSTREAM_CONNECT_ERRORS, Counter::default());
        let bytes = registered(r, RELAYED_BYTES, Family::default());
        let policy_reloads = registered(r, POLICY_RELOADS, Family::default());
        let policy_loaded_at = registered(r, POLICY_LOADED_TIMESTAMP_SECONDS, Gauge::default());
        let enforcement_anomalies = registered(r, ENFORCEMENT_ANOMALIES, Counter::default());
        registered(
            r,
            PARSER_DISAGREEMENTS,
            crate::analysis::authority::DISAGREEMENTS.clone(),
        );
        let refusals = registered(r, STATEMENT_REFUSALS, Family::default());
        let personal_reads = registered(r, PERSONAL_DATA_READS, Family::default());
        let tls_certificate_expiry = registered(
            r,
            TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
            Gauge::default(),
        );
        register_catalog_counters(r, analysis);
        let role_lookup_failures = registered(r, ROLE_LOOKUP_FAILURES, Counter::default());
        let analysis_cache_hits = registered(r, ANALYSIS_CACHE_HITS, analysis.cache_hits.clone());
        let analysis_cache_misses =
            registered(r, ANALYSIS_CACHE_MISSES, analysis.cache_misses.clone());
        let analysis_cache_entries =
            registered(r, ANALYSIS_CACHE_ENTRIES, analysis.cache_entries.clone());
        let audit = crate::audit::AuditMetrics::default();
        audit.register(r);
        let access = crate::access::AccessMetrics::default();
        access.register(r);
        let ready = registered(r, READY, Gauge::default());
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        let metrics = Metrics {
            registry,
            process,
            policy_info,
            connections_current,
            connections_total,
            connections_refused,
            tls_handshakes,
            statements,
            statements_by_purpose,
            statement_seconds,
            upstream_connect_errors,
            bytes,
            policy_reloads,
            policy_loaded_at,
            enforcement_anomalies,
            refusals,
            personal_reads,
            tls_certificate_expiry,
            analysis_cache_hits,
            analysis_cache_misses,
            analysis_cache_entries,
            role_lookup_failures,
            audit,
            access,
            ready,
        };
        metrics.start_fixed_series_at_zero();
        metrics
    }

    fn start_fixed_series_at_zero(&self) {
        // Every series of a fixed label set starts at 0, so increase() and rate() see the first
        // event (a failed reload, a plaintext attempt) instead of a series appearing at 1.
        for reason in RefuseReason::ALL {
            let _ = self
                .connections_refused
                .get_or_create(&ReasonLabel { reason: *reason });
        }
        for outcome in Outcome::ALL {
            let _ = self
                .tls_handshakes
                .get_or_create(&OutcomeLabel { outcome: *outcome });
            let _ = self
                .policy_reloads
                .get_or_create(&OutcomeLabel { outcome: *outcome });
        }
        for direction in Direction::ALL {
            let _ = self.bytes.get_or_create(&DirectionLabel {
                direction: *direction,
            });
        }
        for decision in Decision::ALL {
            for class in Class::ALL {
                let _ = self.statements.get_or_create(&StatementLabels {
                    decision: *decision,
                    class: *class,
                });
            }
        }
    }

    pub fn refused(&self, reason: RefuseReason) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A statement of a session in `role` refused with SQLSTATE `code`.
    pub fn refusal(&self, role: &str, code: &str) {
        // Without a policy there are no roles (and next to nothing is refused).
        let role = if role.is_empty() { "no_policy" } else { role };
        self.refusals
            .get_or_create(&RefusalLabels {
                role: snake(role),
                reason: RefusalReason::of_sqlstate(code),
            })
            .inc();
    }

    /// A statement of `role` decided to read `columns`: one count per category and action.
    pub fn personal_reads(&self, role: &str, columns: &[crate::analysis::ColumnUse]) {
        use crate::analysis::UseAction;
        let mut seen: Vec<(&str, &'static str)> = Vec::new();
        for c in columns {
            let action = match c.action {
                UseAction::Masked => "masked",
                UseAction::Allowed => "allowed",
                _ => continue,
            };
            if c.category == crate::policy::inventory::NONE || seen.contains(&(&c.category, action))
            {
                continue;
            }
            seen.push((&c.category, action));
        }
        let role = snake(role);
        for (category, action) in seen {
            self.personal_reads
                .get_or_create(&ReadLabels {
                    role: role.clone(),
                    category: snake(category),
                    action,
                })
                .inc();
        }
    }

    /// A statement of `role` refused for naming a blocked column of `category`.
    pub fn blocked_read(&self, role: &str, category: &str) {
        self.personal_reads
            .get_or_create(&ReadLabels {
                role: snake(role),
                category: snake(category),
                action: "blocked",
            })
            .inc();
    }

    /// Series from 0 for the policy's roles, so that the first refusal shows in `increase()`.
    pub fn set_roles<'a>(&self, roles: impl Iterator<Item = &'a str>) {
        for role in roles {
            for reason in RefusalReason::ALL {
                let _ = self.refusals.get_or_create(&RefusalLabels {
                    role: snake(role),
                    reason: *reason,
                });
            }
        }
    }

    /// notAfter of the certificate served from now on (0: unknown).
    pub fn set_tls_certificate_expiry(&self, not_after: Option<std::time::SystemTime>) {
        self.tls_certificate_expiry
            .set(not_after.map_or(0, unix_seconds));
    }

    pub fn statement(&self, decision: Decision, class: Class) {
        self.statements
            .get_or_create(&StatementLabels { decision, class })
            .inc();
    }

    /// Count a statement for each declared purpose of the session's role.
    pub fn statement_purposes(&self, purposes: &[String]) {
        for p in purposes {
            self.statements_by_purpose
                .get_or_create(&PurposeLabel { purpose: p.clone() })
                .inc();
        }
    }

    /// The service's count of failed group lookups, exported as a counter.
    pub fn set_role_lookup_failures(&self, total: u64) {
        let seen = self.role_lookup_failures.get();
        if total > seen {
            self.role_lookup_failures.inc_by(total - seen);
        }
    }

    /// Count a policy reload attempt; a successful one (with the new policy's version) also
    /// resets the policy's age and names the version in `pgvakt_policy_info`.
    pub fn policy_reloaded(&self, version: Option<&str>) {
        let outcome = if version.is_some() {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.policy_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        if let Some(v) = version {
            self.set_policy_loaded_at(std::time::SystemTime::now());
            self.set_policy_version(v);
        }
    }

    /// The version of the policy in force (one series; none without a policy).
    pub fn set_policy_version(&self, version: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&VersionLabel {
                version: version.to_owned(),
            })
            .set(1);
    }

    pub fn set_policy_loaded_at(&self, at: std::time::SystemTime) {
        self.policy_loaded_at.set(unix_seconds(at));
    }

    /// The text exposition of every metric, with readiness as `/readyz` answers it now.
    pub fn render(&self, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }
}
