//! What the enforcer holds, as operators and other parts of pgvakt read it: the policy in force
//! and its reloads, grants and roles, analysis counters, the catalog and the service
//! connection's health.

use super::*;

impl Enforcer {
    /// Reload the policy files now (SIGHUP).
    pub fn reload_policy(&self) -> Option<Result<String, String>> {
        let inner = self.inner.as_ref()?;
        let paths = inner.store.paths().to_vec();
        let r = inner.store.reload(&paths).map_err(|e| e.to_string());
        inner.reloaded(&r);
        Some(r)
    }

    /// The analysis cache's counters, for the metrics registry.
    pub fn counters(&self) -> AnalysisCounters {
        self.inner
            .as_ref()
            .map(|i| i.counters.clone())
            .unwrap_or_default()
    }

    /// When the policy in force at start was loaded.
    pub fn loaded_at(&self) -> Option<SystemTime> {
        Some(self.inner.as_ref()?.loaded_at)
    }

    /// Every later reload's outcome: the new version, or why the old policy stays.
    pub fn reloads(&self) -> Option<tokio::sync::broadcast::Receiver<Result<String, String>>> {
        Some(self.inner.as_ref()?.reloads.subscribe())
    }

    /// Version of the policy in force, if any.
    pub fn policy_version(&self) -> Option<String> {
        Some(self.inner.as_ref()?.store.current().version.clone())
    }

    /// Reload pgvakt's catalog from the upstream soon (SIGHUP), instead of at the next
    /// 30-second refresh: after DDL made directly in PostgreSQL, not through pgvakt.
    pub fn refresh_catalog(&self) {
        if let Some(inner) = &self.inner {
            inner.refresh.notify_one();
        }
    }

    /// The names of the policy's roles (the default role included), for metric labels.
    pub fn role_names(&self) -> Vec<String> {
        self.inner.as_ref().map_or_else(Vec::new, |i| {
            let set = i.store.current();
            let mut names: Vec<String> = set.roles.keys().cloned().collect();
            names.push(set.default_role.name.clone());
            names.sort();
            names.dedup();
            names
        })
    }

    /// The read limits of the policy in force, by role.
    pub fn read_limits(
        &self,
    ) -> std::collections::BTreeMap<String, crate::policy::limits::ReadLimit> {
        self.inner
            .as_ref()
            .map(|i| i.store.current().read_limits.clone())
            .unwrap_or_default()
    }

    /// The policy in force and when it was loaded (None without a policy).
    pub fn policy_in_force(&self) -> Option<(Arc<crate::policy::PolicySet>, SystemTime)> {
        let store = &self.inner.as_ref()?.store;
        Some((store.current(), store.loaded_at()))
    }

    /// The policy role a session of `user` (member of `groups`) runs its next statement as,
    /// by the policy in force now (None without a policy).
    pub fn role_of(&self, user: &str, groups: &[String]) -> Option<String> {
        let set = self.inner.as_ref()?.store.current();
        Some(
            set.resolve(user, groups, SystemTime::now())
                .role
                .name()
                .to_owned(),
        )
    }

    /// The grants of the policy in force (none without a policy).
    pub fn grants(&self) -> Vec<crate::policy::Grant> {
        self.inner
            .as_ref()
            .map(|i| i.store.current().grants.clone())
            .unwrap_or_default()
    }

    /// A source of the open service connection (None while it is down, or without one), for
    /// the state replicas share.
    pub fn service_clients(&self) -> Option<crate::access::shared::ClientSource> {
        // Weak: the enforcer owns the service connection, and it closes when the enforcer
        // goes, whoever still asks for it.
        let service = std::sync::Arc::downgrade(self.inner.as_ref()?.service.as_ref()?);
        Some(std::sync::Arc::new(move || service.upgrade()?.client()))
    }

    /// Whether the service connection (catalog, group lookups) is up, when there is one.
    pub fn service_healthy(&self) -> bool {
        self.inner
            .as_ref()
            .and_then(|i| i.service.as_ref())
            .is_none_or(|s| s.is_healthy())
    }

    /// Group lookups that could not be answered since start.
    pub fn role_lookup_failures(&self) -> u64 {
        self.inner
            .as_ref()
            .and_then(|i| i.service.as_ref())
            .map_or(0, |s| {
                s.lookup_failures.load(std::sync::atomic::Ordering::Relaxed)
            })
    }
}
