//! The analysis cache: per (statement text, role — and user where `$user` is on the path —,
//! policy version, search_path), through the statement's shape when it has constants. A hit
//! is a hash lookup confirmed against the stored key, without allocating.

use std::sync::Arc;

use super::{Inner, SessionPolicy};
use crate::analysis::{self, Ctx, Outcome, Reason, Refusal};
use crate::policy::model::RoleRules;

pub(super) struct CacheEntry {
    sql: Box<str>,
    role: Box<str>,
    version: Box<str>,
    search_path: Box<[String]>,
    outcome: Arc<Outcome>,
    /// For a statement analysed through its shape: the text to forward.
    filled: Option<Arc<str>>,
}

impl CacheEntry {
    fn is_for(&self, sql: &str, role: &str, version: &str, search_path: &[String]) -> bool {
        &*self.sql == sql
            && &*self.role == role
            && &*self.version == version
            && &*self.search_path == search_path
    }
}

pub(super) fn cache_key(sql: &str, role: &str, version: &str, search_path: &[String]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    // A fixed-key hasher is enough: entries are confirmed against their full key on a hit.
    let mut h = CACHE_HASHER.build_hasher();
    sql.hash(&mut h);
    role.hash(&mut h);
    version.hash(&mut h);
    search_path.hash(&mut h);
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
        let scope = self.cache_scope(rules);
        let key = cache_key(sql, &scope, &set.version, &self.search_path);
        if let Some(e) = inner
            .cache
            .get(&key)
            .filter(|e| e.is_for(sql, &scope, &set.version, &self.search_path))
        {
            inner.counters.cache_hits.inc();
            return (e.outcome.clone(), e.filled.as_deref().map(str::to_owned));
        }
        if let Some(shape) = analysis::literals::shape(sql) {
            let o = self.analysed_text(inner, set, rules, &shape.text);
            if let Outcome::Forward(a) = o.as_ref() {
                // The constants go back only where PostgreSQL's scanner reads each as the one
                // literal it was; otherwise the text is analysed as it is.
                if let Some(filled) = analysis::literals::fill(&a.sql, &shape.literals)
                    .filter(|f| analysis::authority::same_but_literals(&a.sql, f, &shape.literals))
                {
                    self.remember(inner, key, sql, &scope, set, o.clone(), Some(&filled));
                    return (o, Some(filled));
                }
            }
        }
        (self.analysed_text(inner, set, rules, sql), None)
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

    #[allow(clippy::too_many_arguments)]
    fn remember(
        &self,
        inner: &Inner,
        key: u64,
        sql: &str,
        role: &str,
        set: &crate::policy::PolicySet,
        outcome: Arc<Outcome>,
        filled: Option<&str>,
    ) {
        inner.cache.insert(
            key,
            Arc::new(CacheEntry {
                sql: sql.into(),
                role: role.into(),
                version: set.version.as_str().into(),
                search_path: self.search_path.clone().into_boxed_slice(),
                outcome,
                filled: filled.map(Into::into),
            }),
        );
    }

    fn analysed_text(
        &self,
        inner: &Inner,
        set: &crate::policy::PolicySet,
        rules: &dyn RoleRules,
        sql: &str,
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
        let role = self.cache_scope(rules);
        let role = role.as_str();
        let key = cache_key(sql, role, &set.version, &self.search_path);
        let cached = inner
            .cache
            .get(&key)
            .filter(|e| e.is_for(sql, role, &set.version, &self.search_path))
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
        self.remember(inner, key, sql, role, set, o.clone(), None);
        inner.counters.cache_misses.inc();
        inner
            .counters
            .cache_entries
            .set(i64::try_from(inner.cache.len()).unwrap_or(i64::MAX));
        o
    }
}
