//! The PostgreSQL-table sink: each batch of sealed lines becomes one multi-row INSERT, committed
//! (with `synchronous_commit` at least `on`) before the writer tells waiting sessions their
//! records are durable. A fleet of pgvakt instances writes into one table, each as its own
//! replica with its own chain; see `table.rs` for the layout.
//!
//! Chain continuity across restarts and reconnections: on every new connection the sink takes
//! a session advisory lock for its replica (a second instance configured with the same replica
//! name cannot interleave records; it stays unready instead) and reads the replica's last
//! `(seq, mac)`. A batch is inserted only where the table's chain ends; a batch already there
//! (its COMMIT reached the server but the answer was lost) is recognised by its last MAC and
//! not inserted twice; anything else is an error the writer keeps retrying, so the proxy stays
//! failed closed until an operator looks.
//!
//! The sink runs in the audit writer's thread: it owns a small single-threaded runtime that
//! drives the connection only while a call is in progress.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::chain::{MacBytes, GENESIS};
use super::files::Sink;
use super::table::{connect, db_error, tls_config, TableName};
use super::table_settings::AuditTableConfig;

#[derive(Debug, thiserror::Error)]
pub enum TableSinkError {
    #[error("audit.postgres.dsn: {0}")]
    Dsn(String),
    #[error("audit.postgres.table: {0}")]
    Table(String),
    #[error("audit.postgres: {0}")]
    Tls(String),
}

struct Conn {
    client: Client,
    insert: Statement,
    /// The replica's last record in the table, as far as this connection knows: (0, GENESIS)
    /// for none.
    last: (u64, MacBytes),
}

pub struct TableSink {
    pg: tokio_postgres::Config,
    tls: Option<Arc<ClientConfig>>,
    password_file: Option<std::path::PathBuf>,
    password_env: String,
    table: TableName,
    replica: String,
    timeout: Duration,
    rt: Option<tokio::runtime::Runtime>,
    conn: Option<Conn>,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl TableSink {
    /// Checks the settings; connects only when first used (in the writer thread).
    pub fn new(cfg: &AuditTableConfig) -> Result<TableSink, TableSinkError> {
        let mut pg: tokio_postgres::Config = cfg
            .dsn
            .parse()
            .map_err(|e: tokio_postgres::Error| TableSinkError::Dsn(crate::cause::chain(&e)))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        pg.application_name("pgvakt-audit").connect_timeout(timeout);
        Ok(TableSink {
            pg,
            tls: tls_config(cfg.tls, cfg.ca_file.as_deref(), "audit.postgres.ca_file")
                .map_err(TableSinkError::Tls)?,
            password_file: cfg.password_file.clone(),
            password_env: cfg.password_env.clone(),
            table: TableName::parse(&cfg.table).map_err(TableSinkError::Table)?,
            replica: cfg.replica_name(),
            timeout,
            rt: None,
            conn: None,
        })
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Read at every connection, so a rotated password file is picked up.
    fn password(&self) -> io::Result<Option<String>> {
        if let Some(p) = &self.password_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| err(format!("audit.postgres.password_file {}: {e}", p.display())))?;
            return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
        }
        Ok(std::env::var(&self.password_env)
            .ok()
            .filter(|p| !p.is_empty()))
    }

    fn runtime(&mut self) -> io::Result<&tokio::runtime::Runtime> {
        if self.rt.is_none() {
            self.rt = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            );
        }
        self.rt.as_ref().ok_or_else(|| err("no runtime"))
    }

    /// The open connection, opening one (lock, last record) if there is none.
    fn conn(&mut self) -> io::Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut pg = self.pg.clone();
            if let Some(p) = self.password()? {
                pg.password(p);
            }
            let (tls, table, replica, timeout) = (
                self.tls.clone(),
                self.table.clone(),
                self.replica.clone(),
                self.timeout,
            );
            let opened = self.runtime()?.block_on(async move {
                let client = connect(&pg, tls.as_ref(), timeout).await?;
                tokio::time::timeout(timeout, prepare(client, &table, &replica))
                    .await
                    .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
            });
            let conn = opened.map_err(|e| err(format!("audit table {}: {e}", self.table)))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| err("no connection"))
    }

    fn insert(&mut self, rows: &Rows) -> io::Result<()> {
        self.conn()?;
        let (Some(conn), Some(rt)) = (self.conn.as_ref(), self.rt.as_ref()) else {
            return Err(err("no connection"));
        };
        let params: [&(dyn ToSql + Sync); 5] = [
            &self.replica,
            &rows.seqs,
            &rows.tss,
            &rows.macs,
            &rows.records,
        ];
        let timeout = self.timeout;
        let done = rt.block_on(async {
            tokio::time::timeout(timeout, conn.client.execute(&conn.insert, &params)).await
        });
        match done {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(err(format!("audit table {}: {}", self.table, db_error(&e)))),
            Err(_) => Err(err(format!(
                "audit table {}: the insert took longer than {} ms",
                self.table,
                timeout.as_millis()
            ))),
        }
    }
}

/// After connecting: lock the replica, make commits durable, read where the chain ends.
async fn prepare(client: Client, table: &TableName, replica: &str) -> Result<Conn, String> {
    claim_replica(&client, table, replica).await?;
    durable_commits(&client).await?;
    warn_unless_insert_only(&client, table).await?;
    let last = chain_end(&client, table, replica).await?;
    let insert = prepare_insert(&client, table).await?;
    Ok(Conn {
        client,
        insert,
        last,
    })
}

/// Holds the replica's advisory lock for as long as the connection lives, so no second writer
/// can interleave records in this replica's chain.
async fn claim_replica(client: &Client, table: &TableName, replica: &str) -> Result<(), String> {
    let e = |e: tokio_postgres::Error| db_error(&e);
    let found = client
        .query_one(
            "SELECT pg_catalog.to_regclass($1::text) IS NOT NULL",
            &[&table.sql()],
        )
        .await
        .map_err(e)?;
    if !found.get::<_, bool>(0) {
        return Err(
            "the table does not exist (create it with `pgvakt audit install-table`)".into(),
        );
    }
    let lock_name = format!("pgvakt audit {table} {replica}");
    let locked = client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended($1, 0))",
            &[&lock_name],
        )
        .await
        .map_err(e)?;
    if !locked.get::<_, bool>(0) {
        return Err(format!(
            "another connection holds replica '{replica}' (two pgvakt instances with the same \
             audit.postgres.replica, or the previous connection's backend has not ended yet)"
        ));
    }
    Ok(())
}

/// A commit the server could lose in a crash would break the promise made to sessions.
async fn durable_commits(client: &Client) -> Result<(), String> {
    let e = |e: tokio_postgres::Error| db_error(&e);
    let sync = client
        .query_one(
            "SELECT pg_catalog.current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map_err(e)?;
    if sync.get::<_, String>(0) == "off" {
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(e)?;
    }
    Ok(())
}

/// A writer that may change or remove records could hide what it wrote; that is for the
/// operator to fix, so it is a warning, not a refusal to write.
async fn warn_unless_insert_only(client: &Client, table: &TableName) -> Result<(), String> {
    let rights = client
        .query_one(
            "SELECT pg_catalog.has_table_privilege($1::text, 'UPDATE') \
             OR pg_catalog.has_table_privilege($1::text, 'DELETE') \
             OR pg_catalog.has_table_privilege($1::text, 'TRUNCATE')",
            &[&table.sql()],
        )
        .await
        .map_err(|e| db_error(&e))?;
    if rights.get::<_, bool>(0) {
        tracing::warn!(
            audit.table = %table,
            "the audit writer's role may UPDATE, DELETE or TRUNCATE the audit table; grant it INSERT only (pgvakt audit install-table)"
        );
    }
    Ok(())
}

/// The replica's last `(seq, mac)` in the table, where the next batch must continue the chain.
async fn chain_end(
    client: &Client,
    table: &TableName,
    replica: &str,
) -> Result<(u64, MacBytes), String> {
    let t = table.sql();
    let last = client
        .query_opt(
            &format!("SELECT seq, mac FROM {t} WHERE replica = $1 ORDER BY seq DESC LIMIT 1"),
            &[&replica],
        )
        .await
        .map_err(|e| db_error(&e))?;
    Ok(match last {
        None => (0, GENESIS),
        Some(row) => {
            let seq: i64 = row.get(0);
            let mac: String = row.get(1);
            let mac = hex::decode(&mac)
                .ok()
                .and_then(|b| MacBytes::try_from(b.as_slice()).ok())
                .ok_or_else(|| {
                    format!("replica '{replica}' seq {seq}: the mac column is not a MAC")
                })?;
            (u64::try_from(seq).unwrap_or(0), mac)
        }
    })
}

/// The batch INSERT, prepared once per connection: a batch is sent as one array per column.
async fn prepare_insert(client: &Client, table: &TableName) -> Result<Statement, String> {
    let t = table.sql();
    client
        .prepare(&format!(
            "INSERT INTO {t} (replica, seq, ts, mac, record) \
             SELECT $1, u.seq, u.ts::timestamptz, u.mac, u.record \
             FROM ROWS FROM (pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::text[]), \
                             pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[])) \
             AS u(seq, ts, mac, record)"
        ))
        .await
        .map_err(|e| db_error(&e))
}

/// A batch as columns.
#[derive(Default)]
struct Rows {
    seqs: Vec<i64>,
    tss: Vec<String>,
    macs: Vec<String>,
    records: Vec<String>,
    last_mac: Option<MacBytes>,
}

impl Rows {
    fn last(&self) -> Option<(u64, MacBytes)> {
        let seq = u64::try_from(*self.seqs.last()?).ok()?;
        Some((seq, self.last_mac?))
    }
}

fn rows(bytes: &[u8]) -> io::Result<Rows> {
    let text = std::str::from_utf8(bytes).map_err(|e| err(format!("audit batch: {e}")))?;
    let mut rows = Rows::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("audit batch: {e}")))?;
        let seq = v["seq"].as_u64().and_then(|s| i64::try_from(s).ok());
        let (Some(seq), Some(ts), Some(mac)) = (seq, v["ts"].as_str(), v["mac"].as_str()) else {
            return Err(err("audit batch: a line without seq, ts or mac"));
        };
        let parsed = hex::decode(mac)
            .ok()
            .and_then(|b| MacBytes::try_from(b.as_slice()).ok());
        rows.last_mac = Some(parsed.ok_or_else(|| err("audit batch: a mac that is not one"))?);
        rows.seqs.push(seq);
        rows.tss.push(ts.to_owned());
        rows.macs.push(mac.to_owned());
        rows.records.push(line.to_owned());
    }
    Ok(rows)
}

impl TableSink {
    /// Insert `rows` where the replica's chain ends in the table; `last` is the batch's last
    /// `(seq, mac)`.
    fn append(&mut self, first_seq: u64, rows: &Rows, last: (u64, MacBytes)) -> io::Result<()> {
        let table_end = self.conn()?.last;
        if table_end == last {
            // An earlier attempt committed; only its answer was lost.
            return Ok(());
        }
        if table_end.0 + 1 != first_seq {
            return Err(err(format!(
                "audit table {}: replica '{}' ends at seq {} there, but this batch starts at \
                 {first_seq}; records were removed or written by another instance (run \
                 `pgvakt audit verify --from-db`)",
                self.table, self.replica, table_end.0
            )));
        }
        self.insert(rows)
    }
}

impl Sink for TableSink {
    fn write_batch(&mut self, first_seq: u64, bytes: &[u8]) -> io::Result<()> {
        let rows = rows(bytes)?;
        let Some(last) = rows.last() else {
            self.conn()?;
            return Ok(());
        };
        let reused = self.conn.is_some();
        let mut result = self.append(first_seq, &rows, last);
        if result.is_err() && reused {
            // The connection may have ended while idle (backend terminated, server restarted,
            // an idle timeout): one immediate attempt on a new connection, so a session
            // waiting for this batch is not refused for that alone. The new connection reads
            // where the chain ends, so a first attempt that got through is not repeated.
            self.conn = None;
            result = self.append(first_seq, &rows, last);
        }
        match result {
            Ok(()) => {
                if let Some(c) = self.conn.as_mut() {
                    c.last = last;
                }
                Ok(())
            }
            Err(e) => {
                // Reconnect before the writer's retry: the new connection reads where the
                // chain ends.
                self.conn = None;
                Err(e)
            }
        }
    }

    fn chain_end(&mut self) -> io::Result<Option<(u64, MacBytes)>> {
        Ok(Some(self.conn()?.last))
    }
}
