//! The analysis cache: per (statement text, role — and user where `$user` is on the path —,
//! policy version, search_path), through the statement's shape when it has constants. A hit
//! is a hash lookup confirmed against the stored key, without allocating.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Inner, SessionPolicy};
use crate::analysis::{self, Ctx, Outcome, Reason, Refusal};
use crate::policy::model::RoleRules;

pub(super) struct CacheEntry {
    sql: Box<str>,
    role: Box<str>,
    version: Box<str>,
    search_path: Box<[String]>,
    /// The catalog generation the analysis may have read (see [`Scope::catalog`]).
    catalog: u64,
    outcome: Arc<Outcome>,
    /// For a statement analysed through its shape: the text to forward.
    filled: Option<Arc<str>>,
}

/// What decides an analysis besides the statement's text.
struct Scope<'s> {
    /// The role, and the user where `$user` is on the search_path.
    role: &'s str,
    version: &'s str,
    search_path: &'s [String],
    /// The catalog generation read before the catalog: an analysis that began on an older
    /// catalog is never served once a changed one is in force, even if it is stored after the
    /// reload cleared the cache.
    catalog: u64,
}

impl CacheEntry {
    fn is_for(&self, sql: &str, scope: &Scope) -> bool {
        &*self.sql == sql
            && &*self.role == scope.role
            && &*self.version == scope.version
            && &*self.search_path == scope.search_path
            && self.catalog == scope.catalog
    }
}

fn cache_key(sql: &str, scope: &Scope) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    // A fixed-key hasher is enough: entries are confirmed against their full key on a hit.
    let mut h = CACHE_HASHER.build_hasher();
    sql.hash(&mut h);
    scope.role.hash(&mut h);
    scope.version.hash(&mut h);
    scope.search_path.hash(&mut h);
    scope.catalog.hash(&mut h);
    h.finish()
}

static CACHE_HASHER: std::sync::LazyLock<std::collections::hash_map::RandomState> =
    std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);

impl SessionPolicy {
    /// The analysis of `sql`, through its shape when it has one (one analysis for every
    /// choice of constants), with the text to forward when that differs from the analysis's.
    pub(super) fn analysed(
        &self,
        inner: &Inner,
        set: &crate::policy::PolicySet,
        rules: &dyn RoleRules,
        sql: &str,
    ) -> (Arc<Outcome>, Option<String>) {
        // The exact text first: a repeated statement costs one lookup.
        let role = self.cache_scope(rules);
        let scope = Scope {
            role: &role,
            version: &set.version,
            search_path: &self.search_path,
            catalog: inner.catalog_generation.load(Ordering::Acquire),
        };
        let key = cache_key(sql, &scope);
        if let Some(e) = inner.cache.get(&key).filter(|e| e.is_for(sql, &scope)) {
            inner.counters.cache_hits.inc();
            return (e.outcome.clone(), e.filled.as_deref().map(str::to_owned));
        }
        if let Some(shape) = analysis::literals::shape(sql) {
            let o = self.analysed_text(inner, set, rules, &shape.text, &scope);
            if let Outcome::Forward(a) = o.as_ref() {
                // The constants go back only where PostgreSQL's scanner reads each as the one
                // literal it was; otherwise the text is analysed as it is.
                if let Some(filled) = analysis::literals::fill(&a.sql, &shape.literals)
                    .filter(|f| analysis::authority::same_but_literals(&a.sql, f, &shape.literals))
                {
                    remember(inner, key, sql, &scope, o.clone(), Some(&filled));
                    return (o, Some(filled));
                }
            }
        }
        (self.analysed_text(inner, set, rules, sql, &scope), None)
    }

    /// What besides the text decides an analysis: the role, and the user when the search_path
    /// names `$user` (the same name can then mean another table for another user).
    fn cache_scope(&self, rules: &dyn RoleRules) -> String {
        if self.search_path.iter().any(|s| s == "$user") {
            format!("{}\u{0}{}", rules.name(), self.user)
        } else {
            rules.name().to_owned()
        }
    }

    fn analysed_text(
        &self,
        inner: &Inner,
        set: &crate::policy::PolicySet,
        rules: &dyn RoleRules,
        sql: &str,
        scope: &Scope,
    ) -> Arc<Outcome> {
        let catalog = inner.catalog.load();
        if catalog.database != self.database {
            return Arc::new(Outcome::Refuse(Refusal {
                role: rules.name().to_owned(),
                policy_version: set.version.clone(),
                reason: Box::new(Reason::OtherDatabase {
                    database: catalog.database.clone(),
                }),
            }));
        }
        let key = cache_key(sql, scope);
        let cached = inner
            .cache
            .get(&key)
            .filter(|e| e.is_for(sql, scope))
            .map(|e| e.outcome.clone());
        if let Some(o) = cached {
            inner.counters.cache_hits.inc();
            return o;
        }
        let ctx = Ctx {
            catalog: &catalog,
            rules,
            search_path: &self.search_path,
            user: &self.user,
            policy_version: &set.version,
            // Unrestricted roles' statements are forwarded as sent: nothing could be stripped.
            hidden_subjects: inner.hidden_subjects && !rules.is_unrestricted(),
        };
        let o = Arc::new(analysis::analyse_on_a_fitting_stack(sql, &ctx));
        remember(inner, key, sql, scope, o.clone(), None);
        inner.counters.cache_misses.inc();
        inner
            .counters
            .cache_entries
            .set(i64::try_from(inner.cache.len()).unwrap_or(i64::MAX));
        o
    }
}

fn remember(
    inner: &Inner,
    key: u64,
    sql: &str,
    scope: &Scope,
    outcome: Arc<Outcome>,
    filled: Option<&str>,
) {
    inner.cache.insert(
        key,
        Arc::new(CacheEntry {
            sql: sql.into(),
            role: scope.role.into(),
            version: scope.version.into(),
            search_path: scope.search_path.into(),
            catalog: scope.catalog,
            outcome,
            filled: filled.map(Into::into),
        }),
    );
}
