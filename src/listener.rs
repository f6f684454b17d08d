//! The accept loop and the server's life cycle: start, reload, drain, stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::enforce::Enforcer;
use crate::metrics::{self, Metrics, RefuseReason};
use crate::protocol::PgError;
use crate::proxy::{Handshakes, Phase, Proxy};
use crate::readiness::Readiness;
use crate::upstream::Upstream;
use crate::{session, tls};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot start the TLS handshake threads: {0}")]
    Threads(std::io::Error),
}

/// A running proxy: its addresses and the handle to stop it.
pub struct Server {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    metrics_task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bind both listeners and start accepting.
    pub async fn start(config: Config, enforcer: Enforcer) -> Result<Server, ServerError> {
        let server_tls = tls::server_tls(&config.tls)?;
        let upstream = Upstream::new(&config.upstream)?;
        let (listener, addr) = listening(
            config.listen,
            bind(config.listen, config.limits.max_connections),
        )?;
        let (metrics_listener, metrics_addr) = listening(
            config.metrics.listen,
            metrics::bind(config.metrics.listen).await,
        )?;
        let metrics = Arc::new(Metrics::new(&enforcer.counters()));
        metrics.set_tls_certificate_expiry(server_tls.not_after);
        metrics.set_roles(enforcer.role_names().iter().map(String::as_str));
        if let Some(at) = enforcer.loaded_at() {
            metrics.set_policy_loaded_at(at);
        }
        if let Some(v) = enforcer.policy_version() {
            metrics.set_policy_version(&v);
        }
        let audit = match &config.audit {
            Some(a) => Some(crate::audit::Audit::start(a, &metrics.audit)?),
            None => None,
        };
        let reads = read_limits(&enforcer, &metrics);
        follow_reloads(&enforcer, &metrics, &reads, &audit);
        let readiness = Readiness::new(enforcer.clone(), audit.clone());
        readiness.set_upstream(upstream_reachable(&upstream).await);
        let (phase, _) = watch::channel(Phase::Running);
        let handshakes =
            Handshakes::new(config.limits.handshake_threads).map_err(ServerError::Threads)?;
        let upstream_probe = upstream.clone();
        let enforcer_probe = enforcer.clone();
        let readiness_probe = readiness.clone();
        let ready: metrics::ReadyCheck = {
            let r = readiness.clone();
            Arc::new(move || r.not_ready())
        };
        let lockout = crate::access::Lockout::start(
            config.lockout,
            enforcer
                .service_clients()
                .map(crate::access::shared::SharedState::new),
            metrics.access.clone(),
        );
        let proxy = Arc::new(Proxy {
            config,
            tls: ArcSwap::new(server_tls.config),
            upstream,
            cancels: Default::default(),
            metrics: metrics.clone(),
            readiness,
            enforcer,
            phase,
            audit,
            prelogin: Default::default(),
            lockout,
            reads,
            handshakes,
            sessions: Default::default(),
        });
        let metrics_task = tokio::spawn(async move {
            tokio::join!(
                metrics::serve(metrics_listener, metrics.clone(), ready),
                probe_upstream(upstream_probe, enforcer_probe, readiness_probe, metrics)
            );
        });
        let accept = tokio::spawn(accept_loop(listener, proxy.clone()));
        tracing::info!(listen = %addr, metrics = %metrics_addr, upstream = %proxy.upstream.addr(), "pgvakt listening");
        Ok(Server {
            proxy,
            addr,
            metrics_addr,
            accept,
            metrics_task,
        })
    }

    /// Re-read the TLS certificate and key; the next handshake uses them.
    pub fn reload_tls(&self) -> Result<(), tls::TlsError> {
        self.proxy.reload_tls()
    }

    /// Stop accepting, let sessions finish for the grace period, then end the rest with FATAL
    /// 57P01 and wait for them.
    pub async fn shutdown(self) {
        let grace = Duration::from_millis(self.proxy.config.limits.shutdown_grace_ms);
        let _ = self.proxy.phase.send(Phase::Draining);
        self.proxy.readiness.set_draining();
        tracing::info!(
            grace_ms = self.proxy.config.limits.shutdown_grace_ms,
            sessions = self.proxy.metrics.connections_current.get(),
            "shutting down"
        );
        let mut accept = self.accept;
        // The accept loop owns the session tasks; it returns when they have all ended.
        if tokio::time::timeout(grace, &mut accept).await.is_err() {
            tracing::info!(
                sessions = self.proxy.metrics.connections_current.get(),
                "grace period over: ending the remaining sessions"
            );
            let _ = self.proxy.phase.send(Phase::Terminating);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut accept).await;
            accept.abort();
        }
        // Every session has ended: what they queued is written and synced before exit.
        if let Some(h) = self.proxy.audit.clone() {
            h.close().await;
        }
        self.metrics_task.abort();
    }
}

/// Keep the grant expiry gauge, the roles' refusal series and the read limits on the policy
/// in force.
async fn track_grants_and_limits(
    mut reloads: tokio::sync::broadcast::Receiver<Result<String, String>>,
    enforcer: crate::enforce::WeakEnforcer,
    metrics: Arc<Metrics>,
    reads: Arc<crate::access::reads::ReadLimits>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match reloads.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {
                // Weak, so that this task does not keep the enforcer and its service
                // connection open after the server stopped.
                let Some(enforcer) = enforcer.upgrade() else {
                    return;
                };
                metrics.access.set_grants(&enforcer.grants());
                metrics.set_roles(enforcer.role_names().iter().map(String::as_str));
                reads.set_limits(enforcer.read_limits());
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Counts every policy reload and, with an audit trail, writes its record, in the order they
/// happened.
async fn count_and_record_reloads(
    mut reloads: tokio::sync::broadcast::Receiver<Result<String, String>>,
    metrics: Arc<Metrics>,
    audit: Option<crate::audit::AuditHandle>,
    mut version: Option<String>,
) {
    use crate::audit::{EventType, Outcome as AuditOutcome, Record};
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let r = match reloads.recv().await {
            Ok(r) => r,
            Err(RecvError::Closed) => return,
            Err(RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "policy reloads happened faster than they could be recorded"
                );
                continue;
            }
        };
        metrics.policy_reloaded(r.as_ref().ok().map(String::as_str));
        let Some(h) = &audit else { continue };
        let mut rec = Record::new(
            EventType::PolicyReload,
            if r.is_ok() {
                AuditOutcome::Ok
            } else {
                AuditOutcome::Error
            },
        );
        match r {
            Ok(v) => {
                rec.policy_version = Some(v.clone());
                version = Some(v);
            }
            Err(e) => {
                rec.policy_version = version.clone();
                rec.message = Some(e);
            }
        }
        if let Err(e) = h.record(rec).await {
            tracing::error!(error = %e, "audit record of a policy reload not written");
        }
    }
}

/// Connections the kernel may hold for pgvakt before it accepts them. tokio's `bind` (like
/// std's) asks for 128: a burst of a few thousand connects, as when application servers start
/// or reconnect together, overflows that queue, and every connect beyond it waits for TCP
/// retransmissions (1 s, 3 s, 7 s...) while pgvakt sits idle. PostgreSQL asks for twice its
/// `max_connections` (at most 10,000); pgvakt does the same, and the kernel caps it at
/// `net.core.somaxconn`.
pub fn listen_backlog(max_connections: usize) -> u32 {
    max_connections.saturating_mul(2).clamp(128, 10_000) as u32
}

/// A listener bound to `addr` (or why not), with the address it got: port 0 picks one.
fn listening(
    addr: SocketAddr,
    bound: std::io::Result<TcpListener>,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = bound.map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// The read limits of the policy in force, shared across replicas when the service
/// connection is there.
fn read_limits(
    enforcer: &Enforcer,
    metrics: &Arc<Metrics>,
) -> Arc<crate::access::reads::ReadLimits> {
    let reads = Arc::new(crate::access::reads::ReadLimits::default());
    reads.set_limits(enforcer.read_limits());
    if let Some(source) = enforcer.service_clients() {
        let up = metrics.access.shared_state_up.clone();
        crate::access::reads_shared::start(&reads, source, move |ok| {
            up.set(i64::from(ok));
        });
    }
    reads
}

/// Grants, read limits, reload counts and reload audit records follow each policy reload.
fn follow_reloads(
    enforcer: &Enforcer,
    metrics: &Arc<Metrics>,
    reads: &Arc<crate::access::reads::ReadLimits>,
    audit: &Option<crate::audit::AuditHandle>,
) {
    metrics.access.set_grants(&enforcer.grants());
    if let Some(reloads) = enforcer.reloads() {
        tokio::spawn(track_grants_and_limits(
            reloads.resubscribe(),
            enforcer.downgrade(),
            metrics.clone(),
            reads.clone(),
        ));
        tokio::spawn(count_and_record_reloads(
            reloads,
            metrics.clone(),
            audit.clone(),
            enforcer.policy_version(),
        ));
    }
}

fn bind(addr: SocketAddr, max_connections: usize) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As tokio's own bind does: a restarted pgvakt can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(listen_backlog(max_connections))
}

/// How often readiness re-checks that the upstream accepts connections.
const UPSTREAM_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A bare TCP connect: PostgreSQL does not log connections that send nothing, and it is
/// enough for a load balancer to stop sending clients while the database is down.
async fn upstream_reachable(upstream: &Upstream) -> bool {
    let cfg = upstream.config();
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let connect = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port));
    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
}

/// Ready means the upstream answers and pgvakt's own service connection (catalog, group
/// lookups) is open: without it, logins that depend on groups are refused.
async fn probe_upstream(
    upstream: Upstream,
    enforcer: Enforcer,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) {
    loop {
        tokio::time::sleep(UPSTREAM_PROBE_INTERVAL).await;
        readiness.set_upstream(upstream_reachable(&upstream).await);
        metrics.set_role_lookup_failures(enforcer.role_lookup_failures());
    }
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>) {
    let permits = Arc::new(Semaphore::new(proxy.config.limits.max_connections));
    let mut sessions = JoinSet::new();
    let mut phase = proxy.phase.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let proxy = proxy.clone();
                        sessions.spawn(async move {
                            session::run(tcp, peer, proxy).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        proxy.metrics.refused(RefuseReason::TooManyConnections);
                        let proxy = proxy.clone();
                        sessions.spawn(refuse_over_limit(tcp, peer, proxy));
                    }
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = async { phase.wait_for(|p| *p != Phase::Running).await.map(|_| ()) } => break,
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Over the connection limit: answer like PostgreSQL does (53300), after TLS when the client
/// asks for it, so the client can read the reason.
async fn refuse_over_limit(
    mut tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    proxy: Arc<Proxy>,
) {
    let err = PgError::too_many_connections();
    let mut refusal = crate::audit::refusals::Refusal::new(
        crate::audit::EventType::ConnectionRefused,
        "too_many_connections",
        peer,
        None,
    );
    refusal.sqlstate = Some(err.code.to_owned());
    refusal.message = err.message.clone();
    session::prelogin::report(&proxy, refusal).await;
    let msg = err.to_bytes();
    let mut header = [0u8; 8];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut header),
    )
    .await;
    let is_ssl = matches!(read, Ok(Ok(_))) && crate::protocol::startup::is_ssl_request(&header);
    if is_ssl && tcp.write_all(b"S").await.is_ok() {
        let acceptor = tokio_rustls::TlsAcceptor::from(proxy.tls.load_full());
        if let Ok(Ok(mut tls)) =
            tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
        {
            let _ = tls.write_all(&msg).await;
            let _ = tls.shutdown().await;
        }
        return;
    }
    let _ = tcp.write_all(&msg).await;
}
