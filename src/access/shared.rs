//! The state all replicas share, in schema `pgvakt` of the service database (created by
//! `pgvakt install`, see [`STATE_SQL`]), read and written through pgvakt's service connection.
//! Times are the database's (`now()`), so replicas with skewed clocks agree on windows and locks.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::local::Scope;

/// How long one round trip to the shared state may take before this replica falls back to its
/// own counts.
const STATE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tables of the shared state; idempotent, so `pgvakt install` brings older installs up to
/// date. Nobody but their owner (pgvakt's service user) may read or change them: a user who
/// could would lift their own lock.
pub const STATE_SQL: &str = "\
CREATE TABLE IF NOT EXISTS pgvakt.login_failures (
    scope text NOT NULL CHECK (scope IN ('user', 'client')),
    key text NOT NULL,
    window_start timestamptz NOT NULL,
    failures integer NOT NULL,
    locked_until timestamptz,
    PRIMARY KEY (scope, key)
);
COMMENT ON TABLE pgvakt.login_failures IS
    'pgvakt lockout: failed logins per user and client address, shared by every replica.';
REVOKE ALL ON TABLE pgvakt.login_failures FROM PUBLIC;";

/// The shared tables, for ownership and grants.
pub const STATE_TABLES: &[&str] = &[
    "pgvakt.login_failures",
    "pgvakt.read_subjects",
    "pgvakt.read_rows",
    "pgvakt.read_blocks",
];

/// Where the service connection comes from (the enforcer supervises it).
pub type ClientSource = Arc<dyn Fn() -> Option<Arc<Client>> + Send + Sync>;

/// One row of `pgvakt.login_failures` as a replica reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRow {
    pub scope: Scope,
    pub key: String,
    pub failures: u32,
    /// Time left on the lock, if one is in force.
    pub lock_remaining: Option<Duration>,
}

#[derive(Clone)]
pub struct SharedState {
    source: ClientSource,
}

/// When the window or the lock of a row is over, a failure starts a new count.
const RESTART: &str =
    "((f.locked_until IS NULL AND f.window_start <= now() - make_interval(secs => $4)) \
     OR (f.locked_until IS NOT NULL AND f.locked_until <= now()))";

impl SharedState {
    pub fn new(source: ClientSource) -> SharedState {
        SharedState { source }
    }

    async fn client(&self) -> Result<Arc<Client>, String> {
        (self.source)().ok_or_else(|| "the service connection is down".to_owned())
    }

    /// The rows of `user` and `client`, locked or not.
    pub async fn read(&self, user: &str, client: &str) -> Result<Vec<FailureRow>, String> {
        let c = self.client().await?;
        let rows = timed(c.query(
            "SELECT scope, key, failures, \
                    extract(epoch FROM locked_until - now())::float8 \
             FROM pgvakt.login_failures \
             WHERE (scope = 'user' AND key = $1) OR (scope = 'client' AND key = $2)",
            &[&user, &client],
        ))
        .await?;
        Ok(rows.iter().filter_map(row).collect())
    }

    /// Count one failure; the row after it, and whether this failure locked the scope.
    pub async fn fail(
        &self,
        scope: Scope,
        key: &str,
        max_failures: u32,
        window: Duration,
        lock: Duration,
    ) -> Result<(FailureRow, bool), String> {
        let c = self.client().await?;
        let sql = format!(
            "INSERT INTO pgvakt.login_failures AS f (scope, key, window_start, failures, locked_until) \
             VALUES ($1, $2, now(), 1, CASE WHEN $3 <= 1 THEN now() + make_interval(secs => $5) END) \
             ON CONFLICT (scope, key) DO UPDATE SET \
               window_start = CASE WHEN {RESTART} THEN now() ELSE f.window_start END, \
               failures = CASE WHEN {RESTART} THEN 1 ELSE f.failures + 1 END, \
               locked_until = CASE \
                 WHEN {RESTART} THEN CASE WHEN $3 <= 1 THEN now() + make_interval(secs => $5) END \
                 WHEN f.locked_until > now() THEN f.locked_until \
                 WHEN f.failures + 1 >= $3 THEN now() + make_interval(secs => $5) \
               END \
             RETURNING scope, key, failures, extract(epoch FROM locked_until - now())::float8"
        );
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        let rows = timed(c.query(
            &sql,
            &[
                &scope.as_str(),
                &key,
                &max,
                &window.as_secs_f64(),
                &lock.as_secs_f64(),
            ],
        ))
        .await?;
        let r = rows
            .first()
            .and_then(row)
            .ok_or_else(|| "the failure was not counted".to_owned())?;
        let newly = r.lock_remaining.is_some() && r.failures == max_failures;
        Ok((r, newly))
    }

    /// Forget the count of `key` unless a lock is in force (a successful login).
    pub async fn reset(&self, scope: Scope, key: &str) -> Result<(), String> {
        let c = self.client().await?;
        timed(c.execute(
            "DELETE FROM pgvakt.login_failures WHERE scope = $1 AND key = $2 \
             AND (locked_until IS NULL OR locked_until <= now())",
            &[&scope.as_str(), &key],
        ))
        .await
        .map(|_| ())
    }

    /// Lift the lock and forget the count of `key` (an operator's unlock); rows removed.
    pub async fn unlock(&self, scope: Scope, key: &str) -> Result<u64, String> {
        let c = self.client().await?;
        timed(c.execute(
            "DELETE FROM pgvakt.login_failures WHERE scope = $1 AND key = $2",
            &[&scope.as_str(), &key],
        ))
        .await
    }

    /// Every lock in force.
    pub async fn locks(&self) -> Result<Vec<FailureRow>, String> {
        let c = self.client().await?;
        Ok(timed(c.query(
            "SELECT scope, key, failures, extract(epoch FROM locked_until - now())::float8 \
             FROM pgvakt.login_failures WHERE locked_until > now() ORDER BY scope, key",
            &[],
        ))
        .await?
        .iter()
        .filter_map(row)
        .collect())
    }

    /// Remove counts that no longer matter: windows over and locks ended.
    pub async fn prune(&self, longest_window: Duration) -> Result<u64, String> {
        let c = self.client().await?;
        timed(c.execute(
            "DELETE FROM pgvakt.login_failures \
             WHERE (locked_until IS NULL AND window_start < now() - make_interval(secs => $1)) \
                OR locked_until < now()",
            &[&longest_window.as_secs_f64()],
        ))
        .await
    }
}

fn row(r: &tokio_postgres::Row) -> Option<FailureRow> {
    let scope = Scope::parse(r.try_get::<_, &str>(0).ok()?)?;
    let key: String = r.try_get(1).ok()?;
    let failures: i32 = r.try_get(2).ok()?;
    let remaining: Option<f64> = r.try_get(3).ok()?;
    Some(FailureRow {
        scope,
        key,
        failures: u32::try_from(failures).unwrap_or(0),
        lock_remaining: remaining
            .filter(|s| *s > 0.0 && s.is_finite())
            .map(Duration::from_secs_f64),
    })
}

async fn timed<T>(
    q: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(STATE_TIMEOUT, q).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.as_db_error() {
            Some(d) => format!("{} ({})", d.message(), d.code().code()),
            None => crate::cause::chain(&e),
        }),
        Err(_) => Err(format!("no answer within {} ms", STATE_TIMEOUT.as_millis())),
    }
}
