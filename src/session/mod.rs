//! One client session: open (TLS, startup) → login relayed to the upstream → statement relay.

mod auth;
mod console_login;
mod handshake;
mod identity;
mod lockout;
mod login;
pub mod prelogin;
mod refusals;
mod relay;
pub mod rowwatch;
mod texts;
mod trail;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::metrics::RefuseReason;
use crate::protocol::PgError;
use crate::proxy::{Phase, Proxy};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A client frame whose length cannot be right.
    #[error("protocol violation: {0}")]
    Frame(#[from] crate::protocol::FrameError),
    /// A startup packet that cannot be read.
    #[error("protocol violation: {0}")]
    Startup(#[from] crate::protocol::startup::StartupError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("TLS: {0}")]
    TlsHandshake(#[source] std::io::Error),
    #[error("{0}")]
    Upstream(String),
    #[error("upstream sent a {0}")]
    UpstreamMessage(#[from] crate::protocol::message::MessageError),
    #[error("upstream sent an invalid message: {0}")]
    UpstreamFrame(#[source] crate::protocol::FrameError),
    /// PostgreSQL refused the login, with its SQLSTATE (28P01 for a wrong password).
    #[error("login failed: {message}")]
    LoginFailed {
        message: String,
        sqlstate: Option<String>,
        /// PostgreSQL's ErrorResponse of a rejected authentication, not yet relayed: the
        /// failure is counted (lockout) before the client learns of it, so a client that
        /// retries at once meets the count it raised.
        unsent: Option<bytes::Bytes>,
    },
    /// An error the client should see before the session closes.
    #[error("{0}")]
    Client(PgError),
}

impl SessionError {
    /// A protocol violation's own words, without the kind Display puts first.
    fn detail(&self) -> String {
        match self {
            SessionError::Protocol(m) => m.clone(),
            SessionError::Frame(e) => e.to_string(),
            SessionError::Startup(e) => e.to_string(),
            other => other.to_string(),
        }
    }

    /// The FATAL message to send the client for this error, if one should be sent.
    fn client_error(&self) -> Option<PgError> {
        match self {
            SessionError::Protocol(_) | SessionError::Frame(_) | SessionError::Startup(_) => {
                Some(PgError::protocol_violation(format!(
                    "pgvakt: invalid message from client: {}",
                    self.detail()
                )))
            }
            SessionError::Upstream(_)
            | SessionError::UpstreamMessage(_)
            | SessionError::UpstreamFrame(_) => {
                Some(PgError::upstream_unavailable(format!("pgvakt: {self}")))
            }
            SessionError::Client(e) => Some(e.clone()),
            _ => None,
        }
    }
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// How long a session ended from the console may take to close on its own.
const ENDED_GRACE: Duration = Duration::from_secs(1);

/// Run one client connection to completion. Never panics on peer input; errors end only this
/// session.
pub async fn run(tcp: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>) {
    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", session.id = id, client.addr = %peer);
    async move {
        let _ = tcp.set_nodelay(true);
        proxy.metrics.connections_total.inc();
        proxy.metrics.connections_current.inc();
        let result = serve(tcp, peer, id, &proxy).await;
        proxy.metrics.connections_current.dec();
        match result {
            Ok(()) | Err(SessionError::Closed) => tracing::debug!("session ended"),
            // Logged at warn, with the user, where it was recorded (`prelogin`).
            Err(SessionError::LoginFailed { message, .. }) => {
                tracing::debug!(reason = %message, "login failed")
            }
            Err(e) => tracing::info!(error = %e, "session ended with error"),
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    proxy: &Arc<Proxy>,
) -> Result<(), SessionError> {
    let mut s = match start_in_time(tcp, peer, id, proxy).await? {
        None => return Ok(()),
        Some(Begun::Console(c)) => return console_login::serve(c, proxy).await,
        Some(Begun::Relay(s)) => s,
    };
    let registered = proxy.sessions.register(registry_entry(&s, peer, id, proxy));
    let since = std::time::Instant::now();
    if let Some(a) = &s.audit {
        let w = a.lock().writer();
        w.login().await;
    }
    let result = relay_until_ended(&mut s, proxy, &registered.live).await;
    if let Some(a) = &s.audit {
        let w = a.lock().writer();
        w.disconnect(since.elapsed().as_millis() as u64).await;
    }
    proxy.cancels.unregister(s.cancel_key);
    // The upstream goes first: its backend must end even if the client below never reads.
    drop(s.upstream_wr);
    drop(s.upstream_rd);
    last_words(&mut s.client_wr, &result).await;
    result
}

/// `start` within limits.startup_timeout_ms; a timeout or a connection that fails before
/// login is recorded as a refusal (PostgreSQL never saw it, so only pgvakt can).
async fn start_in_time(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    proxy: &Arc<Proxy>,
) -> Result<Option<Begun>, SessionError> {
    let startup_timeout = Duration::from_millis(proxy.config.limits.startup_timeout_ms);
    let started = tokio::time::timeout(startup_timeout, start(tcp, peer, id, proxy)).await;
    let Ok(started) = started else {
        proxy.metrics.refused(RefuseReason::StartupTimeout);
        let mut r = crate::audit::refusals::Refusal::new(
            crate::audit::EventType::ConnectionRefused,
            "startup_timeout",
            peer,
            Some(id),
        );
        r.message = "no complete login within limits.startup_timeout_ms".into();
        prelogin::report(proxy, r).await;
        return Err(SessionError::Protocol("startup timed out".into()));
    };
    match started {
        Err(
            e @ (SessionError::Protocol(_)
            | SessionError::Frame(_)
            | SessionError::Startup(_)
            | SessionError::Tls(_)
            | SessionError::TlsHandshake(_)),
        ) => {
            let (reason, sqlstate) = match &e {
                SessionError::Tls(_) | SessionError::TlsHandshake(_) => ("tls_handshake", None),
                _ => ("protocol", Some("08P01".to_owned())),
            };
            let mut r = crate::audit::refusals::Refusal::new(
                crate::audit::EventType::ConnectionRefused,
                reason,
                peer,
                Some(id),
            );
            r.sqlstate = sqlstate;
            r.message = e.to_string();
            prelogin::report(proxy, r).await;
            Err(e)
        }
        other => other,
    }
}

/// The registry's entry for a relay session (what the console lists and can end).
fn registry_entry(
    s: &Started,
    peer: SocketAddr,
    id: u64,
    proxy: &Proxy,
) -> crate::registry::Opened {
    crate::registry::Opened {
        id,
        user: s.user.clone(),
        database: s.policy.database.clone(),
        client: peer,
        application_name: s.application_name.clone(),
        tls_version: s.tls_version.clone(),
        kind: crate::registry::Kind::Relay {
            groups: s.policy.groups.clone(),
        },
        upstream: proxy.cancels.target(s.cancel_key),
    }
}

/// The statement relay, until it ends or the session is ended from the console.
async fn relay_until_ended(
    s: &mut Started,
    proxy: &Proxy,
    live: &Arc<crate::registry::Live>,
) -> Result<(), SessionError> {
    let mut ended = live.ended();
    let relay = relay::run(s, proxy, live);
    tokio::pin!(relay);
    tokio::select! {
        r = &mut relay => r,
        why = crate::registry::wait_ended(&mut ended) => {
            // The relay tells its client and closes; one stuck on a client that does not
            // read is dropped after a moment.
            tokio::time::timeout(ENDED_GRACE, &mut relay)
                .await
                .unwrap_or_else(|_| Err(SessionError::Client(why.error())))
        }
    }
}

/// Send the client the session's error, if it gets one, and close its side.
async fn last_words(
    client_wr: &mut tokio::io::WriteHalf<crate::stream::BoxStream>,
    result: &Result<(), SessionError>,
) {
    // A client that stopped reading would hold these writes (and the task) forever.
    let last_words = async {
        if let Err(e) = result {
            if let Some(pg) = e.client_error() {
                let _ = client_wr.write_all(&pg.to_bytes()).await;
            }
        }
        let _ = client_wr.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), last_words).await;
}

/// A logged-in session ready for the statement relay.
pub struct Started {
    pub client_rd: tokio::io::ReadHalf<crate::stream::BoxStream>,
    pub client_wr: tokio::io::WriteHalf<crate::stream::BoxStream>,
    pub client_buf: BytesMut,
    pub upstream_rd: tokio::io::ReadHalf<crate::stream::BoxStream>,
    pub upstream_wr: tokio::io::WriteHalf<crate::stream::BoxStream>,
    pub upstream_buf: BytesMut,
    pub cancel_key: crate::cancel::CancelKey,
    /// The session's client_encoding is UTF8 (as PostgreSQL reported it at login).
    pub client_utf8: bool,
    pub policy: crate::enforce::SessionPolicy,
    pub user: String,
    pub tls_version: Option<String>,
    pub application_name: Option<String>,
    pub audit: Option<trail::requests::FrontAudit>,
}

/// What a completed login goes on with.
enum Begun {
    Relay(Box<Started>),
    Console(console_login::Opened),
}

async fn start(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    proxy: &Arc<Proxy>,
) -> Result<Option<Begun>, SessionError> {
    let Some((mut client, startup, tls_version)) = opened(tcp, peer, id, proxy).await? else {
        return Ok(None);
    };
    // Refusals and failed logins from here on name the user and database the client asked for.
    let asked = login::Asked {
        user: startup.user().to_owned(),
        database: startup.database().to_owned(),
        application_name: startup
            .params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone()),
        tls_version,
        peer,
        id,
    };
    let user = asked.user.clone();
    let refused = crate::audit::EventType::ConnectionRefused;
    if let Some((reason, e)) = refused_before_login(&user, peer, proxy).await {
        asked.refuse(&mut client, proxy, refused, reason, &e).await;
        return Ok(None);
    }
    if startup.database() == crate::console::DATABASE {
        // The console is pgvakt's own; nothing of it is forwarded to PostgreSQL.
        let opened = console_login::open(client, &startup, &asked, proxy).await?;
        return Ok(opened.map(Begun::Console));
    }
    let policy = match session_policy(&startup, proxy).await {
        Ok(p) => p,
        Err((reason, e)) => {
            asked.refuse(&mut client, proxy, refused, reason, &e).await;
            return Ok(None);
        }
    };
    let Some(login::Authenticated {
        mut upstream,
        client_buf,
        upstream_buf,
        logged_in,
    }) = login::authenticate(&mut client, &startup, &asked, proxy).await?
    else {
        return Ok(None);
    };
    if let Some(e) = unanalysable_settings(&policy, &logged_in.parameters) {
        let _ = client.write_all(&e.to_bytes()).await;
        login::close_after_login(&mut client, &mut upstream, proxy, logged_in.cancel_key).await;
        prelogin::report(proxy, asked.refusal(refused, "session_settings", &e)).await;
        return Ok(None);
    }
    proxy.lockout.succeeded(&user).await;
    client.write_all(&logged_in.ready.raw).await?;
    client.flush().await?;
    tracing::info!(user = %user, database = %startup.database(), tls = asked.tls_version.as_deref().unwrap_or("none"), "login");
    let audit = front_audit(proxy, &policy, &asked, startup.database(), &user);
    let (client_rd, client_wr) = tokio::io::split(client);
    let (upstream_rd, upstream_wr) = tokio::io::split(upstream);
    Ok(Some(Begun::Relay(Box::new(Started {
        client_rd,
        client_wr,
        client_buf,
        upstream_rd,
        upstream_wr,
        upstream_buf,
        cancel_key: logged_in.cancel_key,
        client_utf8: client_utf8(&logged_in.parameters),
        policy,
        user,
        tls_version: asked.tls_version,
        application_name: asked.application_name,
        audit,
    }))))
}

/// The client after the handshake: its stream, startup packet and TLS version, or None when
/// the connection was a cancel request or was refused (and recorded).
async fn opened(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    proxy: &Arc<Proxy>,
) -> Result<
    Option<(
        crate::stream::BoxStream,
        crate::protocol::startup::StartupMessage,
        Option<String>,
    )>,
    SessionError,
> {
    match handshake::open(tcp, proxy).await? {
        handshake::Opened::Done => Ok(None),
        handshake::Opened::Refused { reason, error } => {
            let mut r = crate::audit::refusals::Refusal::new(
                crate::audit::EventType::ConnectionRefused,
                reason,
                peer,
                Some(id),
            );
            r.sqlstate = Some(error.code.to_owned());
            r.message = error.message;
            prelogin::report(proxy, r).await;
            Ok(None)
        }
        handshake::Opened::Session {
            stream,
            startup,
            tls_version,
        } => Ok(Some((stream, startup, tls_version))),
    }
}

/// The user's policy for the session, if its role can be looked up and the role allows the
/// startup parameters the client sent; else why not, with the error the client gets.
async fn session_policy(
    startup: &crate::protocol::startup::StartupMessage,
    proxy: &Arc<Proxy>,
) -> Result<crate::enforce::SessionPolicy, (&'static str, PgError)> {
    let policy = proxy
        .enforcer
        .session(startup.user(), startup.database())
        .await
        .map_err(|e| {
            proxy.metrics.refused(RefuseReason::RoleLookup);
            ("role_lookup", e)
        })?;
    policy
        .check_startup_options(&startup.params)
        .map_err(|e| ("startup_parameters", e))?;
    Ok(policy)
}

/// Why a login is refused before PostgreSQL sees it (the proxy is shutting down, or the user
/// or address is locked out), with the error the client gets.
async fn refused_before_login(
    user: &str,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
) -> Option<(&'static str, PgError)> {
    if proxy.phase() != Phase::Running {
        proxy.metrics.refused(RefuseReason::ShuttingDown);
        return Some(("shutting_down", PgError::admin_shutdown()));
    }
    // Refused here: PostgreSQL never sees attempts on a locked user or address.
    let locked = proxy.lockout.check(user, peer.ip()).await?;
    proxy.metrics.refused(RefuseReason::LockedOut);
    Some(("locked_out", lockout::refusal(&locked)))
}

/// Analysis reads strings the standard way and text as UTF-8; a restricted session whose
/// settings (role or database defaults) say otherwise would run something else than was
/// analysed: the error it is refused with.
fn unanalysable_settings(
    policy: &crate::enforce::SessionPolicy,
    parameters: &[(String, String)],
) -> Option<PgError> {
    if !policy.role().is_some_and(|(_, restricted)| restricted) {
        return None;
    }
    parameters.iter().find_map(|(name, value)| {
        let bad = match name.as_str() {
            "standard_conforming_strings" => value != "on",
            "client_encoding" => value != "UTF8",
            _ => false,
        };
        bad.then(|| {
            PgError::fatal(
                "42501",
                format!("pgvakt: {name} is {value} for this session; restricted roles need standard_conforming_strings on and UTF8"),
            )
        })
    })
}

/// Whether the session's client_encoding is UTF8, as PostgreSQL last reported it at login.
fn client_utf8(parameters: &[(String, String)]) -> bool {
    parameters
        .iter()
        .rev()
        .find(|(k, _)| k == "client_encoding")
        .is_some_and(|(_, v)| v == "UTF8")
}

/// The session's audit trail, when audit records are written.
fn front_audit(
    proxy: &Arc<Proxy>,
    policy: &crate::enforce::SessionPolicy,
    asked: &login::Asked,
    database: &str,
    user: &str,
) -> Option<trail::requests::FrontAudit> {
    proxy.audit.as_ref().map(|h| {
        let info = trail::SessionInfo {
            user: user.to_owned(),
            role: policy.role().map(|(r, _)| r).unwrap_or_default(),
            session_id: asked.id.to_string(),
            client_addr: asked.peer,
            application_name: asked.application_name.clone(),
            tls_version: asked.tls_version.clone(),
            database: database.to_owned(),
            policy_version: policy.policy_version(),
            purpose: policy.purpose(),
            reads: Some(crate::access::reads::ReadWatch {
                limits: proxy.reads.clone(),
                metrics: proxy.metrics.access.clone(),
            }),
            purposes: policy.purposes(),
        };
        let mut trail = trail::AuditTrail::new(h.clone(), info);
        trail.set_facts(policy.audit_facts());
        trail::requests::FrontAudit::new(trail, policy.is_restricted())
    })
}
