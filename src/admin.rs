//! `pgvakt admin`: operator commands on the state replicas share (schema `pgvakt` in the
//! service database), through the service connection the configuration describes.

use std::sync::Arc;

use crate::access::shared::SharedState;
use crate::access::Scope;
use crate::config::Config;

/// The shared state as the configuration's service user sees it.
async fn shared(config: &Config) -> Result<SharedState, String> {
    let user = config
        .upstream
        .service_user
        .as_deref()
        .ok_or("the configuration names no upstream.service_user: there is no shared state")?;
    let client = Arc::new(
        crate::enforce::service_connect(config, user)
            .await
            .map_err(|e| e.to_string())?,
    );
    Ok(SharedState::new(Arc::new(move || Some(client.clone()))))
}

/// Lift the lock of a user or client address on every replica.
pub async fn unlock(config: &Config, scope: Scope, key: &str) -> Result<String, String> {
    let n = shared(config).await?.unlock(scope, key).await?;
    Ok(if n == 0 {
        format!(
            "{} {key}: no failed logins counted, nothing to unlock\n",
            scope.as_str()
        )
    } else {
        format!(
            "{} {key}: unlocked, failed-login count cleared\n",
            scope.as_str()
        )
    })
}

/// Lift `user`'s mass-read block and forget its counts on every replica (they follow within a
/// second).
pub async fn reset_limits(config: &Config, user: &str) -> Result<String, String> {
    let user_name = config
        .upstream
        .service_user
        .as_deref()
        .ok_or("the configuration names no upstream.service_user: there is no shared state")?;
    let client = Arc::new(
        crate::enforce::service_connect(config, user_name)
            .await
            .map_err(|e| e.to_string())?,
    );
    let source: crate::access::shared::ClientSource = Arc::new(move || Some(client.clone()));
    let n = crate::access::reads_shared::reset(&source, user).await?;
    Ok(format!(
        "user {user}: read limits reset ({n} shared entries removed); replicas follow within a second\n"
    ))
}

/// The locks in force, as a table.
pub async fn lockouts(config: &Config) -> Result<String, String> {
    let rows = shared(config).await?.locks().await?;
    let mut out = format!(
        "{:<8} {:<40} {:>8} {:>12}\n",
        "SCOPE", "KEY", "FAILURES", "REMAINING_S"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<40} {:>8} {:>12}\n",
            r.scope.as_str(),
            r.key,
            r.failures,
            r.lock_remaining.map(|d| d.as_secs()).unwrap_or(0)
        ));
    }
    Ok(out)
}
