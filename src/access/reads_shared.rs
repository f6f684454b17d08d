//! The mass-read counts and blocks every replica shares, in schema `pgvakt`: written in batches
//! once a second (never a round trip per row or statement), read back as totals per user.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::reads::{ReadLimits, WINDOW};
use super::shared::ClientSource;

/// How often a replica writes what it read and reads the totals back.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Tables of the shared read counts; created by `pgvakt install` with the lockout table.
pub const READS_SQL: &str = "\
CREATE TABLE IF NOT EXISTS pgvakt.read_subjects (
    user_name text NOT NULL,
    subject text NOT NULL,
    last_read timestamptz NOT NULL,
    PRIMARY KEY (user_name, subject)
);
CREATE TABLE IF NOT EXISTS pgvakt.read_rows (
    user_name text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    rows bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS read_rows_user_at ON pgvakt.read_rows (user_name, at);
CREATE TABLE IF NOT EXISTS pgvakt.read_blocks (
    user_name text PRIMARY KEY,
    blocked_until timestamptz NOT NULL
);
REVOKE ALL ON TABLE pgvakt.read_subjects, pgvakt.read_rows, pgvakt.read_blocks FROM PUBLIC;";

/// Write this replica's reads and new blocks, then take every replica's totals and blocks.
pub async fn sync_once(limits: &ReadLimits, source: &ClientSource) -> Result<(), String> {
    let c = source().ok_or("the service connection is down")?;
    let err = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => crate::cause::chain(&e),
    };
    let now = Instant::now();
    let pending = limits.take_pending();
    for (i, (user, subjects, rows)) in pending.iter().enumerate() {
        if let Err(e) = write_reads(&c, user, subjects, *rows).await {
            // Kept for the next sync: what was not written is not lost to the shared counts.
            limits.give_back(pending[i..].to_vec());
            return Err(err(e));
        }
    }
    // A block ends at its crossing plus the window; one whose crossing came before the end of
    // the row already there (a reset's mark, or a block that ran out) is not written.
    for (user, left) in limits.take_new_blocks(now) {
        c.execute(
            "INSERT INTO pgvakt.read_blocks (user_name, blocked_until) \
             VALUES ($1, now() + make_interval(secs => $2)) \
             ON CONFLICT (user_name) DO UPDATE SET blocked_until = \
               greatest(pgvakt.read_blocks.blocked_until, EXCLUDED.blocked_until) \
             WHERE pgvakt.read_blocks.blocked_until > now() \
                OR EXCLUDED.blocked_until - make_interval(secs => $3) > pgvakt.read_blocks.blocked_until",
            &[&user, &left.as_secs_f64(), &WINDOW.as_secs_f64()],
        )
        .await
        .map_err(err)?;
    }
    // Blocks before totals: a reset that lands between the two reads then shows as a block
    // with no counts (lifted at the next sync), never as counts with no block, which would be
    // taken for a new crossing.
    let mut blocks = HashMap::new();
    for r in c
        .query(
            "SELECT user_name, extract(epoch FROM blocked_until - now())::float8 \
             FROM pgvakt.read_blocks WHERE blocked_until > now()",
            &[],
        )
        .await
        .map_err(err)?
    {
        let left: f64 = r.get(1);
        if left.is_finite() && left > 0.0 {
            blocks.insert(r.get::<_, String>(0), Duration::from_secs_f64(left));
        }
    }
    let users = limits.users();
    let window = WINDOW.as_secs_f64();
    let mut totals: HashMap<String, (u64, u64)> = HashMap::new();
    for r in c
        .query(
            "SELECT user_name, count(*) FROM pgvakt.read_subjects \
             WHERE user_name = ANY($1) AND last_read > now() - make_interval(secs => $2) \
             GROUP BY user_name",
            &[&users, &window],
        )
        .await
        .map_err(err)?
    {
        let n: i64 = r.get(1);
        totals.entry(r.get(0)).or_default().0 = u64::try_from(n).unwrap_or(0);
    }
    for r in c
        .query(
            "SELECT user_name, sum(rows)::bigint FROM pgvakt.read_rows \
             WHERE user_name = ANY($1) AND at > now() - make_interval(secs => $2) \
             GROUP BY user_name",
            &[&users, &window],
        )
        .await
        .map_err(err)?
    {
        let n: Option<i64> = r.get(1);
        totals.entry(r.get(0)).or_default().1 = u64::try_from(n.unwrap_or(0)).unwrap_or(0);
    }
    limits.synced(&totals, &blocks, Instant::now());
    Ok(())
}

/// One user's reads since the last sync: subjects first (written again harmlessly if the rows
/// fail and the whole is given back), then rows.
async fn write_reads(
    c: &tokio_postgres::Client,
    user: &str,
    subjects: &[String],
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    if !subjects.is_empty() {
        c.execute(
            "INSERT INTO pgvakt.read_subjects (user_name, subject, last_read) \
             SELECT $1, s, now() FROM unnest($2::text[]) AS s \
             ON CONFLICT (user_name, subject) DO UPDATE SET last_read = now()",
            &[&user, &subjects],
        )
        .await?;
    }
    if rows > 0 {
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        c.execute(
            "INSERT INTO pgvakt.read_rows (user_name, rows) VALUES ($1, $2)",
            &[&user, &rows],
        )
        .await?;
    }
    Ok(())
}

/// Sync every [`SYNC_EVERY`] while `limits` lives; counts older than the window are removed
/// once a minute. `up` is told whether the shared state answered.
pub async fn sync_loop(limits: Weak<ReadLimits>, source: ClientSource, up: impl Fn(bool)) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let Some(l) = limits.upgrade() else { return };
        if !l.any() {
            continue;
        }
        let r = tokio::time::timeout(Duration::from_secs(5), sync_once(&l, &source)).await;
        let ok = matches!(r, Ok(Ok(())));
        if let Ok(Err(e)) = &r {
            tracing::debug!(error = %e, "shared read counts not synced");
        }
        up(ok);
        ticks += 1;
        if ok && ticks % 60 == 0 {
            if let Some(c) = source() {
                let _ = c
                    .batch_execute(
                        "DELETE FROM pgvakt.read_subjects WHERE last_read < now() - interval '1 hour'; \
                         DELETE FROM pgvakt.read_rows WHERE at < now() - interval '1 hour'; \
                         DELETE FROM pgvakt.read_blocks WHERE blocked_until < now() - interval '1 hour'",
                    )
                    .await;
            }
        }
    }
}

/// Lift `user`'s block and forget its counts in the shared state (`pgvakt admin reset-limits`).
pub async fn reset(source: &ClientSource, user: &str) -> Result<u64, String> {
    let c = source().ok_or("the service connection is down")?;
    // One statement, so that no replica's sync sees the block gone and the counts still there
    // (it would take them for a new crossing and block the user again). The block's row stays
    // as a mark of the reset (ended now): a replica that crossed before the reset and writes
    // its block only after it does not bring the block back.
    let row = c
        .query_one(
            "WITH b AS (INSERT INTO pgvakt.read_blocks (user_name, blocked_until) VALUES ($1, now()) \
                        ON CONFLICT (user_name) DO UPDATE SET blocked_until = now()), \
                  s AS (DELETE FROM pgvakt.read_subjects WHERE user_name = $1 RETURNING 1), \
                  r AS (DELETE FROM pgvakt.read_rows WHERE user_name = $1 RETURNING 1) \
             SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM r)",
            &[&user],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Start syncing `limits` in the background (it stops when they are dropped).
pub fn start(limits: &Arc<ReadLimits>, source: ClientSource, up: impl Fn(bool) + Send + 'static) {
    tokio::spawn(sync_loop(Arc::downgrade(limits), source, up));
}
