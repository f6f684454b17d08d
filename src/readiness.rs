//! `/readyz`: whether a load balancer should send this instance new sessions. Composed of the
//! parts that decide it, each owned by its module: the upstream answers, the enforcer's service
//! connection (catalog, group lookups) is open, the audit sink is writable, and the server is
//! not draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::audit::AuditHandle;
use crate::enforce::Enforcer;

pub struct Readiness {
    upstream: AtomicBool,
    draining: AtomicBool,
    enforcer: Enforcer,
    audit: Option<AuditHandle>,
}

impl Readiness {
    pub fn new(enforcer: Enforcer, audit: Option<AuditHandle>) -> Arc<Readiness> {
        Arc::new(Readiness {
            upstream: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            enforcer,
            audit,
        })
    }

    /// What the last probe or session connect found.
    pub fn set_upstream(&self, reachable: bool) {
        self.upstream.store(reachable, Ordering::Relaxed);
    }

    /// A draining proxy accepts no new sessions, so load balancers should stop sending them.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_empty()
    }

    /// Why the instance is not ready, in words `/readyz` answers with; empty when ready.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.upstream.load(Ordering::Relaxed) {
            why.push("upstream unreachable");
        }
        if !self.enforcer.service_healthy() {
            why.push("service connection down (catalog and group lookups)");
        }
        if !self.audit.as_ref().is_none_or(AuditHandle::is_healthy) {
            why.push("audit sink failing");
        }
        if self.draining.load(Ordering::Relaxed) {
            why.push("draining");
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_the_upstream_and_ends_with_draining() {
        let r = Readiness::new(Enforcer::new(), None);
        assert!(!r.is_ready(), "not ready before the upstream was seen");
        assert_eq!(r.not_ready(), ["upstream unreachable"]);
        r.set_upstream(true);
        assert!(r.is_ready());
        r.set_draining();
        assert_eq!(r.not_ready(), ["draining"]);
    }
}
