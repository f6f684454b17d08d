//! The audit table for the tools: `audit search` and `audit verify` read it with `--from-db`
//! (a fleet answers from one place), and `audit install-table` creates it.
//!
//! The tools reuse the file logic: the rows are copied, in chain order, into temporary JSON-
//! lines files (one per replica for verify, one in time order for search), which are then
//! searched and verified exactly as the file sink's files are. The copy is read in one
//! read-only REPEATABLE READ transaction, so it is one consistent snapshot of the fleet.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel};

use super::chain::{open_line, ChainKey};
use super::table::{connect, db_error, install_sql, tls_config, TableName};
use super::table_settings::TableTls;
use super::verify::{verify_files, Report};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows fetched per round trip while copying.
const FETCH_ROWS: i32 = 2000;

/// Where the audit table is, for the tools.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    /// Read the audit table in this database (libpq connection string, e.g. "host=audit-db
    /// dbname=audit user=dpo") instead of files. The password: in the string, or PGPASSWORD.
    #[arg(long, value_name = "DSN")]
    pub from_db: Option<String>,
    /// The audit table (audit.postgres.table).
    #[arg(long, default_value = "pgvakt_audit.records")]
    pub db_table: String,
    /// TLS towards the audit database.
    #[arg(long, value_enum, default_value = "verify-full")]
    pub db_tls: TableTls,
    /// CA bundle (PEM) for --db-tls verify-full.
    #[arg(long)]
    pub db_ca_file: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

async fn open(db: &DbArgs) -> Result<(Client, TableName), String> {
    let dsn = db.from_db.as_deref().ok_or("--from-db: required")?;
    let mut pg: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("--from-db: {}", crate::cause::chain(&e)))?;
    if pg.get_password().is_none() {
        if let Ok(p) = std::env::var("PGPASSWORD") {
            pg.password(p);
        }
    }
    pg.application_name("pgvakt-audit-tool");
    let table = TableName::parse(&db.db_table).map_err(|e| format!("--db-table: {e}"))?;
    let tls = tls_config(db.db_tls, db.db_ca_file.as_deref(), "--db-ca-file")?;
    let client = connect(&pg, tls.as_ref(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("--from-db: {e}"))?;
    Ok((client, table))
}

/// Run `sql` in a read-only snapshot and hand every row to `each`.
async fn copy_rows(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    mut each: impl FnMut(&tokio_postgres::Row) -> Result<(), String>,
) -> Result<(), String> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| db_error(&e))?;
    let stmt = tx.prepare(sql).await.map_err(|e| db_error(&e))?;
    let portal = tx.bind(&stmt, params).await.map_err(|e| db_error(&e))?;
    loop {
        let rows = tx
            .query_portal(&portal, FETCH_ROWS)
            .await
            .map_err(|e| db_error(&e))?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            each(row)?;
        }
    }
    tx.commit().await.map_err(|e| db_error(&e))
}

fn temp_file(dir: &tempfile::TempDir, name: &str) -> Result<(PathBuf, std::fs::File), String> {
    let path = dir.path().join(name);
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, file))
}

/// The records of every replica in time order, in one temporary file, for `audit search`.
/// `since`/`until` (Unix seconds) narrow the copy with a second's margin; the search applies
/// them exactly.
pub fn export_for_search(
    db: &DbArgs,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<(tempfile::TempDir, Vec<PathBuf>), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let (path, file) = temp_file(&dir, "audit-table.jsonl")?;
    let mut out = std::io::BufWriter::new(file);
    runtime()?.block_on(async {
        let (mut client, table) = open(db).await?;
        let sql = format!(
            "SELECT record FROM {} \
             WHERE ($1::float8 IS NULL OR ts >= pg_catalog.to_timestamp($1::float8 - 1)) \
               AND ($2::float8 IS NULL OR ts < pg_catalog.to_timestamp($2::float8 + 1)) \
             ORDER BY ts, replica, seq",
            table.sql()
        );
        let (since, until) = (since.map(|s| s as f64), until.map(|u| u as f64));
        copy_rows(&mut client, &sql, &[&since, &until], |row| {
            let line: String = row.get(0);
            writeln!(out, "{line}").map_err(|e| format!("{}: {e}", path.display()))
        })
        .await
    })?;
    out.flush()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((dir, vec![path]))
}

/// One replica's verdict.
pub struct ReplicaReport {
    pub replica: String,
    pub report: Report,
    /// A row whose `seq` or `mac` column differs from the record it holds (the columns the
    /// writer resumes from were edited): its seq.
    pub column_mismatch: Option<i64>,
}

/// Verify every replica's chain in the table with `key`.
pub fn verify_table(
    db: &DbArgs,
    key: &ChainKey,
    partial: bool,
) -> Result<Vec<ReplicaReport>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let rt = runtime()?;
    let (mut client, table) = rt.block_on(open(db))?;
    let replicas: Vec<String> = rt
        .block_on(client.query(
            &format!("SELECT DISTINCT replica FROM {} ORDER BY 1", table.sql()),
            &[],
        ))
        .map_err(|e| db_error(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sql = format!(
        "SELECT seq, mac, record FROM {} WHERE replica = $1 ORDER BY seq",
        table.sql()
    );
    let mut reports = Vec::new();
    for (n, replica) in replicas.into_iter().enumerate() {
        let (path, file) = temp_file(&dir, &format!("replica-{n}.jsonl"))?;
        let mut out = std::io::BufWriter::new(file);
        let mut column_mismatch = None;
        rt.block_on(copy_rows(&mut client, &sql, &[&replica], |row| {
            let (seq, mac, line): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            let same = open_line(&line)
                .is_ok_and(|s| i64::try_from(s.seq) == Ok(seq) && hex::encode(s.mac) == mac);
            if !same && column_mismatch.is_none() {
                column_mismatch = Some(seq);
            }
            writeln!(out, "{line}").map_err(|e| format!("{}: {e}", path.display()))
        }))?;
        out.flush()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        drop(out);
        let mut report = verify_files(vec![path], key, partial).map_err(|e| e.to_string())?;
        if let Some(p) = report.problem.as_mut() {
            p.file = Some(PathBuf::from(format!("{table} replica '{replica}', row")));
        }
        reports.push(ReplicaReport {
            replica,
            report,
            column_mismatch,
        });
    }
    Ok(reports)
}

/// Print the verdicts; exit status 0 when every replica's chain holds, 1 when one is broken
/// (or the table is empty), 2 when records were written with another key.
pub fn print_verdicts(table: &str, reports: &[ReplicaReport]) -> i32 {
    if reports.is_empty() {
        println!("FAILED: no audit records in {table}");
        return 1;
    }
    let mut code = 0;
    for r in reports {
        print!("replica {}: {}", r.replica, r.report);
        if let Some(seq) = r.column_mismatch {
            println!(
                "FAILED at seq {seq}: the row's seq or mac column differs from its record (edited)"
            );
            code = 1;
        }
        code = code.max(r.report.exit_code());
    }
    println!("{} replicas", reports.len());
    code
}

/// `pgvakt audit install-table`.
#[derive(clap::Args, Debug, Clone)]
pub struct InstallTableArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The login role pgvakt writes as (audit.postgres.dsn's user): gets INSERT, and SELECT on
    /// replica, seq and mac only. Must exist and must not own the table.
    #[arg(long)]
    pub writer: String,
    /// A role that reads the table for `audit search`/`audit verify` (SELECT). Optional.
    #[arg(long)]
    pub reader: Option<String>,
}

/// Creates the table and its grants (idempotent; re-running resets the writer's grants).
pub fn install_table(args: &InstallTableArgs) -> i32 {
    let done = runtime().and_then(|rt| {
        rt.block_on(async {
            let (mut client, table) = open(&args.db).await?;
            let sql = install_sql(&table, &args.writer, args.reader.as_deref())?;
            let tx = client.transaction().await.map_err(|e| db_error(&e))?;
            tx.batch_execute(&sql).await.map_err(|e| db_error(&e))?;
            let owner: String = tx
                .query_one(
                    "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class \
                     WHERE oid = pg_catalog.to_regclass($1::text)",
                    &[&table.sql()],
                )
                .await
                .map_err(|e| db_error(&e))?
                .get(0);
            if owner == args.writer {
                return Err(format!(
                    "{table} is owned by {owner}, the writer role: an owner can change and delete \
                     audit rows whatever is granted; run install-table as another role"
                ));
            }
            tx.commit().await.map_err(|e| db_error(&e))?;
            Ok(format!(
                "audit table {table} ready (owner {owner}); {} may INSERT{}",
                args.writer,
                args.reader
                    .as_deref()
                    .map(|r| format!(", {r} may SELECT"))
                    .unwrap_or_default()
            ))
        })
    });
    match done {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("pgvakt audit install-table: {e}");
            2
        }
    }
}
