//! Metrics of access control, registered into the process registry with the others.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::local::Scope;

/// `scope`: `user` or `client` (snake_case, from [`Scope::as_str`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

impl From<Scope> for ScopeLabel {
    fn from(s: Scope) -> Self {
        ScopeLabel { scope: s.as_str() }
    }
}

/// Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct AccessMetrics {
    /// Locks imposed after repeated failed logins.
    pub lockouts: Family<ScopeLabel, Counter>,
    /// 1 while the last round trip to the shared state succeeded.
    pub shared_state_up: Gauge,
    /// Decisions taken on this replica's own counts because the shared state did not answer.
    pub shared_state_fallbacks: Counter,
}

impl Default for AccessMetrics {
    fn default() -> Self {
        let m = AccessMetrics {
            lockouts: Family::default(),
            shared_state_up: Gauge::default(),
            shared_state_fallbacks: Counter::default(),
        };
        // Both series from 0, so increase() sees the first lock.
        for s in [Scope::User, Scope::Client] {
            let _ = m.lockouts.get_or_create(&s.into());
        }
        m
    }
}

impl AccessMetrics {
    /// Register under the registry's prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "lockouts",
            "Users (scope=user) or client addresses (scope=client) locked after repeated failed logins",
            self.lockouts.clone(),
        );
        registry.register(
            "shared_state_up",
            "1 while the state replicas share (schema pgvakt upstream) answers, 0 while this replica counts on its own",
            self.shared_state_up.clone(),
        );
        registry.register(
            "shared_state_fallbacks",
            "Lockout decisions taken on this replica's own counts because the shared state did not answer",
            self.shared_state_fallbacks.clone(),
        );
    }
}
