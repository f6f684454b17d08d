//! State shared by every session: configuration, TLS, upstream, cancel keys, metrics, policy.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::enforce::Enforcer;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// Life-cycle phases every session watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new connections; sessions may finish.
    Draining,
    /// Grace period over: sessions end with FATAL 57P01.
    Terminating,
}

pub struct Proxy {
    pub config: Config,
    pub tls: ArcSwap<ServerConfig>,
    pub upstream: Upstream,
    pub cancels: CancelRegistry,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<crate::readiness::Readiness>,
    pub enforcer: Enforcer,
    pub phase: watch::Sender<Phase>,
    /// The audit trail writer, when `audit` is configured.
    pub audit: Option<crate::audit::AuditHandle>,
    /// Rate limit of the records and log lines of refusals before login.
    pub prelogin: crate::audit::refusals::PreloginLimiter,
    /// Lockout after repeated failed logins.
    pub lockout: Arc<crate::access::Lockout>,
}

impl Proxy {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }
}
