//! Lockout at login: a locked user or client address is refused before anything reaches
//! PostgreSQL; a rejected authentication is counted, and a lock it imposes is recorded.

use std::net::SocketAddr;

use crate::access::{Locked, Scope};
use crate::audit::record::{EventType, Outcome, Record};
use crate::protocol::PgError;
use crate::proxy::Proxy;

/// The FATAL a login refused by `locked` gets.
pub fn refusal(locked: &Locked) -> PgError {
    let secs = locked.remaining.as_secs().max(1);
    let (what, hint) = match locked.scope {
        Scope::User => (
            format!("user \"{}\"", locked.key),
            format!(
                "An operator can lift the lock with `pgvakt admin unlock {}`.",
                locked.key
            ),
        ),
        Scope::Client => (
            format!("client address {}", locked.key),
            format!(
                "An operator can lift the lock with `pgvakt admin unlock --client {}`.",
                locked.key
            ),
        ),
    };
    PgError::fatal(
        "28000",
        format!(
            "pgvakt: {what} is locked after {} failed logins; try again in {secs} s",
            locked.failures
        ),
    )
    .with_hint(hint)
}

/// Whether PostgreSQL's SQLSTATE says the credentials were rejected (class 28: invalid
/// authorization or password), as opposed to a server that could not take the login.
pub fn is_credential_failure(sqlstate: Option<&str>) -> bool {
    sqlstate.is_some_and(|s| s.starts_with("28"))
}

/// Count a rejected login of `user` from `peer`; every lock it imposes is logged and recorded.
pub async fn count_failure(proxy: &Proxy, user: &str, peer: SocketAddr, session_id: u64) {
    for l in proxy.lockout.failed(user, peer.ip()).await {
        tracing::warn!(
            lockout.scope = l.scope.as_str(),
            user = %user,
            client.addr = %peer,
            failures = l.failures,
            lock_s = l.remaining.as_secs(),
            "locked after repeated failed logins"
        );
        let mut r = Record::new(EventType::Anomaly, Outcome::Refused);
        r.user = Some(user.to_owned());
        r.client_addr = Some(peer.to_string());
        r.session_id = Some(session_id.to_string());
        r.sqlstate = Some("28000".into());
        r.message = Some(format!(
            "lockout: {} {} locked for {} s after {} failed logins",
            l.scope.as_str(),
            l.key,
            l.remaining.as_secs(),
            l.failures
        ));
        if let Some(h) = &proxy.audit {
            if let Err(e) = h.record(r).await {
                tracing::error!(error = %e, "audit record not written");
            }
        }
    }
}
