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
    /// Mass-read alarms: personal data read per user and hour.
    pub reads: Arc<crate::access::reads::ReadLimits>,
    /// Threads for clients' TLS handshakes.
    pub handshakes: Handshakes,
    /// The sessions open now (the admin console lists and ends them).
    pub sessions: crate::registry::Registry,
}

impl Proxy {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Re-read the TLS certificate and key; the next handshake uses them. Blocks on file IO.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        let served = crate::tls::server_tls(&self.config.tls)?;
        self.tls.store(served.config);
        self.metrics.set_tls_certificate_expiry(served.not_after);
        Ok(())
    }
}

/// Threads for clients' TLS handshakes. A handshake is CPU work (key exchange, signature); run
/// on the threads that relay established sessions, a burst of new connections queues ahead of
/// their statements (seconds of added latency under a connect storm on two cores). Here the
/// burst gets its own threads, which the OS schedules beside the session threads.
pub struct Handshakes {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Handshakes {
    /// `threads` 0: handshakes run where they are awaited.
    pub fn new(threads: usize) -> std::io::Result<Handshakes> {
        let runtime = (threads > 0)
            .then(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("pgvakt-tls")
                    .enable_all()
                    .build()
            })
            .transpose()?;
        Ok(Handshakes { runtime })
    }

    /// Run `work` on the handshake threads. The sockets it uses stay registered with the
    /// session runtime's reactor, which wakes it there. None if the work panicked.
    pub async fn run<F>(&self, work: F) -> Option<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => rt.spawn(work).await.ok(),
            None => Some(work.await),
        }
    }
}

impl Drop for Handshakes {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking on its threads) inside another one.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Handshakes;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    #[tokio::test]
    async fn handshakes_run_on_their_own_threads_and_stop_inside_a_runtime() {
        let pool = Handshakes::new(1).expect("threads");
        let ran_on = pool.run(async { thread_name() }).await.flatten();
        assert_eq!(ran_on.as_deref(), Some("pgvakt-tls"));
        // A panicking handshake is a failed one, not a failed proxy.
        assert_eq!(pool.run(async { panic!("bad peer") }).await, None::<()>);
        drop(pool);

        let inline = Handshakes::new(0).expect("no threads");
        assert_eq!(
            inline.run(async { thread_name() }).await,
            Some(thread_name())
        );
    }
}
