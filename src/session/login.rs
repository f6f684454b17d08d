//! The login as PostgreSQL checks it: connect upstream, relay the authentication, confirm the
//! identity PostgreSQL logged in. Shared by ordinary sessions and the admin console, so both
//! count failed logins for lockout and record them the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::auth::LoggedIn;
use super::{auth, handshake, identity, lockout, prelogin, SessionError};
use crate::audit::refusals::Refusal;
use crate::audit::EventType;
use crate::metrics::RefuseReason;
use crate::protocol::startup::StartupMessage;
use crate::protocol::PgError;
use crate::proxy::Proxy;
use crate::stream::BoxStream;

/// Who the client asked to be: what refusals and failed logins are recorded with.
pub struct Asked {
    pub user: String,
    pub database: String,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub peer: SocketAddr,
    pub id: u64,
}

impl Asked {
    pub fn refusal(&self, event: EventType, reason: &'static str, error: &PgError) -> Refusal {
        let mut r = Refusal::new(event, reason, self.peer, Some(self.id));
        r.sqlstate = Some(error.code.to_owned());
        r.message = error.message.clone();
        r.user = Some(self.user.clone());
        r.database = Some(self.database.clone());
        r.application_name = self.application_name.clone();
        r.tls_version = self.tls_version.clone();
        r
    }

    /// Tell the client `e` and record the refusal.
    pub async fn refuse(
        &self,
        client: &mut BoxStream,
        proxy: &Arc<Proxy>,
        event: EventType,
        reason: &'static str,
        e: &PgError,
    ) {
        let _ = client.write_all(&e.to_bytes()).await;
        let _ = client.flush().await;
        prelogin::report(proxy, self.refusal(event, reason, e)).await;
    }
}

/// A login PostgreSQL accepted and confirmed, before the client's first ReadyForQuery.
pub struct Authenticated {
    pub upstream: BoxStream,
    pub client_buf: BytesMut,
    pub upstream_buf: BytesMut,
    pub logged_in: LoggedIn,
}

/// Log `startup` in upstream, relaying the authentication to `client`, and confirm that
/// PostgreSQL logged in `asked.user` to `startup`'s database. None: refused, the client told
/// and the refusal recorded.
pub async fn authenticate(
    client: &mut BoxStream,
    startup: &StartupMessage,
    asked: &Asked,
    proxy: &Arc<Proxy>,
) -> Result<Option<Authenticated>, SessionError> {
    let mut upstream = match proxy.upstream.connect().await {
        Ok(u) => u,
        Err(e) => {
            proxy.metrics.upstream_connect_errors.inc();
            proxy.metrics.refused(RefuseReason::Upstream);
            proxy.readiness.set_upstream(false);
            tracing::warn!(error = %e, "upstream connection failed");
            let e = PgError::upstream_unavailable(format!("pgvakt: {e}"));
            let refused = EventType::ConnectionRefused;
            asked
                .refuse(client, proxy, refused, "upstream_unavailable", &e)
                .await;
            return Ok(None);
        }
    };
    proxy.readiness.set_upstream(true);
    upstream.write_all(&startup.encode()).await?;
    upstream.flush().await?;
    let mut client_buf = handshake::startup_buffer();
    let mut upstream_buf = handshake::startup_buffer();
    let logged_in = match auth::relay_login(
        client,
        &mut client_buf,
        &mut upstream,
        &mut upstream_buf,
        proxy,
        &identity::probe(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            failed(client, &e, asked, proxy).await;
            return Err(e);
        }
    };
    // PostgreSQL must have logged in the user and database the policy and audit use; the
    // client gets its first ReadyForQuery only then.
    let expected = identity::Expected {
        user: &asked.user,
        database: startup.database(),
    };
    let confirmed = match identity::check_reported_user(&logged_in.parameters, &expected) {
        Ok(()) => identity::check_probe(client, &mut upstream, &mut upstream_buf, &expected).await,
        Err(e) => Err(SessionError::Client(e)),
    };
    if let Err(e) = confirmed {
        if let Some(pg) = e.client_error() {
            let _ = client.write_all(&pg.to_bytes()).await;
        }
        close_after_login(client, &mut upstream, proxy, logged_in.cancel_key).await;
        return Err(match e {
            SessionError::Client(pg) => {
                let r = asked.refusal(EventType::LoginFailed, "identity_not_confirmed", &pg);
                proxy.metrics.access.failed_login("identity_not_confirmed");
                prelogin::report(proxy, r).await;
                SessionError::LoginFailed {
                    message: pg.message,
                    sqlstate: Some(pg.code.to_owned()),
                    unsent: None,
                }
            }
            other => other,
        });
    }
    Ok(Some(Authenticated {
        upstream,
        client_buf,
        upstream_buf,
        logged_in,
    }))
}

/// A login PostgreSQL rejected (or pgvakt could not relay): the client is told, a rejected
/// password is counted for lockout, and the failure is recorded and counted.
async fn failed(client: &mut BoxStream, e: &SessionError, asked: &Asked, proxy: &Arc<Proxy>) {
    if let Some(pg) = e.client_error() {
        let _ = client.write_all(&pg.to_bytes()).await;
    }
    if let SessionError::LoginFailed {
        sqlstate,
        unsent: Some(raw),
        ..
    } = e
    {
        if lockout::is_credential_failure(sqlstate.as_deref()) {
            lockout::count_failure(proxy, &asked.user, asked.peer, asked.id).await;
        }
        let _ = client.write_all(raw).await;
        let _ = client.flush().await;
    }
    let reason = match e {
        SessionError::LoginFailed { sqlstate, .. } => Some(
            crate::access::metrics::failed_login_reason(sqlstate.as_deref()),
        ),
        SessionError::Client(_) => Some("authentication_method"),
        _ => None,
    };
    if let Some(reason) = reason {
        proxy.metrics.access.failed_login(reason);
    }
    let failed = EventType::LoginFailed;
    let r = match e {
        SessionError::LoginFailed {
            message, sqlstate, ..
        } => {
            let mut r = asked.refusal(
                failed,
                "authentication",
                &PgError::auth_failed(message.clone()),
            );
            // PostgreSQL's own SQLSTATE, as the client got it.
            r.sqlstate = sqlstate.clone();
            Some(r)
        }
        SessionError::Client(pg) => Some(asked.refusal(failed, "authentication_method", pg)),
        _ => None,
    };
    if let Some(r) = r {
        prelogin::report(proxy, r).await;
    }
}

/// End a session refused after the upstream logged it in: the client has its FATAL, the
/// upstream gets Terminate, and the cancel key is forgotten.
pub async fn close_after_login(
    client: &mut BoxStream,
    upstream: &mut BoxStream,
    proxy: &Proxy,
    cancel_key: crate::cancel::CancelKey,
) {
    proxy.cancels.unregister(cancel_key);
    let _ = client.flush().await;
    let _ = client.shutdown().await;
    close_upstream(upstream).await;
}

/// Terminate, then close: PostgreSQL ends the backend without logging a lost connection.
pub async fn close_upstream(upstream: &mut BoxStream) {
    let _ = upstream.write_all(&[b'X', 0, 0, 0, 4]).await;
    let _ = upstream.shutdown().await;
}
