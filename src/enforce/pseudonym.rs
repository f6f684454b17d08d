//! The pseudonym mask's precondition: statements calling `pgvakt.pseudonym` go upstream only
//! while the catalog has seen the function installed with the policy's key.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::Inner;
use crate::policy::masks::PSEUDONYM_CALL;
use crate::policy::PolicySet;
use crate::protocol::PgError;

/// A statement whose masks call `pgvakt.pseudonym` is forwarded only when the catalog found the
/// function installed upstream with the policy's key (see `src/install.rs`); otherwise it is
/// refused, and the catalog is refreshed soon so that a fresh `pgvakt install` takes effect.
pub(super) fn pseudonym_ready(inner: &Inner, set: &PolicySet, sql: &str) -> Result<(), PgError> {
    let catalog = inner.catalog.load();
    // A catalog not read from a live database (tests, offline tools) forwards nothing upstream.
    let Some(installed) = &catalog.pseudonym else {
        return Ok(());
    };
    let Err(why) = installed.check(set.pseudonym_key()) else {
        return Ok(());
    };
    if !sql.contains(PSEUDONYM_CALL) {
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(inner.loaded_at)
        .map_or(0, |d| d.as_millis() as u64)
        .max(1);
    let last = inner.pseudonym_refresh_ms.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= PSEUDONYM_REFRESH_MS
        && inner
            .pseudonym_refresh_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        inner.refresh.notify_one();
    }
    Err(PgError::error(
        "55000",
        format!(
            "the pseudonym mask is not available in database {}: {why}",
            catalog.database
        ),
    )
    .with_hint(
        "An administrator must run `pgvakt install --upstream <dsn>` as the database owner          with the policy's pseudonym key; pgvakt notices it within seconds.",
    ))
}

/// Refusals ask for a catalog refresh at most this often.
const PSEUDONYM_REFRESH_MS: u64 = 1000;
