//! The way into the admin console (database `pgvakt`): only login users `admin.users` names,
//! each with a password PostgreSQL checks (the login is relayed to `admin.auth_database` and
//! the upstream connection closed once PostgreSQL has confirmed it). Failed logins count for
//! lockout as any other.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::login::{self, Asked};
use super::SessionError;
use crate::audit::EventType;
use crate::console::Console;
use crate::metrics::RefuseReason;
use crate::protocol::startup::StartupMessage;
use crate::protocol::PgError;
use crate::proxy::Proxy;
use crate::stream::BoxStream;

/// A console client whose login PostgreSQL accepted.
pub struct Opened {
    stream: BoxStream,
    buf: BytesMut,
    console: Console,
}

/// Startup parameters passed on for the console's login: who, where, and what the client's
/// display needs. Nothing else (`options`, `replication`) matters for a login checked and
/// closed at once.
const PASSED_ON: &[&str] = &["user", "application_name", "client_encoding"];

/// Check that `asked.user` may use the console and let PostgreSQL check its password. None:
/// refused, the client told and the refusal recorded.
pub async fn open(
    mut client: BoxStream,
    startup: &StartupMessage,
    asked: &Asked,
    proxy: &Arc<Proxy>,
) -> Result<Option<Opened>, SessionError> {
    let admin = &proxy.config.admin;
    if !admin.allows(&asked.user) {
        proxy.metrics.refused(RefuseReason::ConsoleNotAllowed);
        let e = PgError::fatal(
            "28000",
            format!(
                "pgvakt: user \"{}\" may not use the admin console (database {})",
                asked.user,
                crate::console::DATABASE
            ),
        )
        .with_hint("The configuration's admin.users names the console's users.");
        asked
            .refuse(
                &mut client,
                proxy,
                EventType::Admin,
                "console_not_allowed",
                &e,
            )
            .await;
        let _ = client.shutdown().await;
        return Ok(None);
    }
    let auth_database = admin
        .auth_database
        .clone()
        .unwrap_or_else(|| proxy.config.upstream.service_database.clone());
    let mut params: Vec<(String, String)> = startup
        .params
        .iter()
        .filter(|(k, _)| PASSED_ON.contains(&k.as_str()))
        .cloned()
        .collect();
    params.push(("database".into(), auth_database));
    let upstream_startup = StartupMessage {
        major: startup.major,
        minor: startup.minor,
        params,
    };
    let Some(auth) = login::authenticate(&mut client, &upstream_startup, asked, proxy).await?
    else {
        return Ok(None);
    };
    let login::Authenticated {
        mut upstream,
        client_buf,
        logged_in,
        ..
    } = auth;
    // PostgreSQL has confirmed the user: its connection is not needed any more.
    proxy.cancels.unregister(logged_in.cancel_key);
    login::close_upstream(&mut upstream).await;
    proxy.lockout.succeeded(&asked.user).await;
    Ok(Some(Opened {
        stream: client,
        buf: client_buf,
        console: Console {
            id: asked.id,
            user: asked.user.clone(),
            client: asked.peer,
            tls_version: asked.tls_version.clone(),
            application_name: asked.application_name.clone(),
        },
    }))
}

/// Run the console for a client `open` let in.
pub async fn serve(o: Opened, proxy: &Arc<Proxy>) -> Result<(), SessionError> {
    let Opened {
        mut stream,
        buf,
        console,
    } = o;
    let r = crate::console::serve(&mut stream, buf, console, proxy).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.shutdown()).await;
    r.map_err(|e| match e {
        crate::console::ConsoleError::Io(e) => SessionError::Io(e),
        crate::console::ConsoleError::Protocol(m) => SessionError::Protocol(m),
    })
}
