//! `pgvakt subject export <id>`: every row of every inventory table that belongs to the
//! subject, and who received their data according to the audit trail, as a ZIP with
//! `subject-<id>.json` (machine-readable, for portability under Art. 20) and `subject-<id>.html`
//! (a self-contained page to hand to the person).

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_postgres::Client;

use super::plan::{db_error, Plan, PlanTable};
use super::recipients::{self, AuditSource, Recipients};
use super::trail::{Trail, TrailArgs};
use super::{connect, Connection, SubjectError};
use crate::audit::record::{
    Access, Action, ColumnAccess, EventType, Outcome, Record, SubjectGroup, TableAccess, TableCount,
};

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The subject's id (the subject key's value, e.g. the contact id `42`).
    pub id: String,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub audit: AuditSource,
    /// The archive to write. Default: `subject-<id>.zip` in the current directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub trail: TrailArgs,
}

#[derive(Debug, Serialize)]
pub struct ColumnOut {
    pub name: String,
    #[serde(rename = "type")]
    pub sql_type: String,
    pub category: String,
}

/// One table's rows of the subject; each row is an object of column → value.
#[derive(Debug, Serialize)]
pub struct TableOut {
    pub table: String,
    pub subject_key: String,
    pub columns: Vec<ColumnOut>,
    pub rows: Vec<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub struct Export {
    pub format: &'static str,
    pub subject_type: String,
    pub subject_id: String,
    pub generated_at: String,
    pub database: String,
    pub tables: Vec<TableOut>,
    pub recipients: Recipients,
}

/// The subject's rows of one table, ordered by their JSON text so exports compare.
pub async fn rows_of(
    client: &Client,
    t: &PlanTable,
    id: &str,
) -> Result<Vec<Map<String, Value>>, SubjectError> {
    let sql = format!(
        "SELECT pg_catalog.row_to_json(t)::text FROM {} AS t WHERE {}",
        t.quoted(),
        t.key_filter("t", 1)
    );
    let rows = client
        .query(&sql, &[&id])
        .await
        .map_err(|e| db_error(&format!("reading {}", t.name()), &e))?;
    let mut out: Vec<(String, Map<String, Value>)> = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r.get(0);
        let v: Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| SubjectError::Database(format!("{}: row as JSON: {e}", t.name())))?;
        out.push((text, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Gather everything; nothing is written yet.
pub async fn gather(
    args: &ExportArgs,
    client: &Client,
    policy: &crate::policy::PolicySet,
) -> Result<Export, SubjectError> {
    // The trail first, so this export's own reads are not listed as a recipient.
    let plan = Plan::load(client, policy, args.connection.subject_type.as_deref()).await?;
    let recipients = recipients::find(&args.audit, &plan.subject_type, &args.id)?;
    let mut tables = Vec::new();
    for t in &plan.tables {
        tables.push(TableOut {
            table: t.name(),
            subject_key: t.key.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| ColumnOut {
                    name: c.name.clone(),
                    sql_type: c.sql_type.clone(),
                    category: c.category.clone(),
                })
                .collect(),
            rows: rows_of(client, t, &args.id).await?,
        });
    }
    let database: String = client
        .query_one("SELECT pg_catalog.current_database()::text", &[])
        .await
        .map_err(|e| db_error("current_database", &e))?
        .get(0);
    Ok(Export {
        format: "pgvakt-subject-export/1",
        subject_type: plan.subject_type,
        subject_id: args.id.clone(),
        generated_at: crate::audit::record::rfc3339_millis(std::time::SystemTime::now()),
        database,
        tables,
        recipients,
    })
}

/// The export's audit record: the subject's pseudonym, every column handed out, rows per table.
fn record(trail: &Trail, export: &Export) -> Record {
    let mut rec = trail.record(EventType::SubjectExport, Outcome::Ok);
    if let Some(r) = trail.subject_ref(&export.subject_type, &export.subject_id) {
        rec.subjects = vec![SubjectGroup {
            table: export.subject_type.clone(),
            refs: vec![r],
        }];
        rec.subject_count = Some(1);
    }
    for t in &export.tables {
        rec.tables.push(TableAccess {
            table: t.table.clone(),
            access: Access::Read,
            columns: t
                .columns
                .iter()
                .map(|c| ColumnAccess {
                    column: c.name.clone(),
                    category: c.category.clone(),
                    action: Action::Allowed,
                })
                .collect(),
            subject: Some(export.subject_type.clone()),
        });
        rec.table_counts.push(TableCount {
            table: t.table.clone(),
            rows: t.rows.len() as u64,
            deleted: false,
            columns: Vec::new(),
        });
    }
    rec.rows = Some(export.tables.iter().map(|t| t.rows.len() as u64).sum());
    rec
}

/// The command: writes the archive and prints where, with counts. The audit record is durable
/// before the archive exists.
pub async fn run(args: &ExportArgs) -> Result<String, SubjectError> {
    const APP: &str = "pgvakt subject export";
    let policy = super::load_policy(&args.connection.policy)?;
    let mut trail = Trail::open(&args.trail, APP, &policy).await?;
    let result = async {
        let client = connect(&args.connection, APP).await?;
        trail.connected(&client).await?;
        let trail = &trail;
        let export = gather(args, &client, &policy).await?;
        trail.write(record(trail, &export)).await?;
        write_archive(args, &export)
    }
    .await;
    if let Err(e) = &result {
        trail.failed(EventType::SubjectExport, e).await;
    }
    trail.close().await;
    result
}

/// The ZIP, and the report of what it holds.
fn write_archive(args: &ExportArgs, export: &Export) -> Result<String, SubjectError> {
    let json =
        serde_json::to_vec_pretty(export).map_err(|e| SubjectError::Io(format!("JSON: {e}")))?;
    let html = super::html::page(export);
    let safe: String = args
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (json_name, html_name) = (
        format!("subject-{safe}.json"),
        format!("subject-{safe}.html"),
    );
    let zip = super::zip::archive(&[(&json_name, &json), (&html_name, html.as_bytes())]);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("subject-{safe}.zip")));
    super::write_file(&out, &zip)?;
    let rows: usize = export.tables.iter().map(|t| t.rows.len()).sum();
    Ok(format!(
        "{}: {rows} rows of subject {} ({}) from {} tables; {}\n",
        out.display(),
        export.subject_id,
        export.subject_type,
        export.tables.len(),
        if export.recipients.searched {
            format!(
                "{} recipients in {} audit records",
                export.recipients.recipients.len(),
                export.recipients.records_matched
            )
        } else {
            "audit trail not searched (give --audit DIR or --from-db)".to_owned()
        }
    ))
}
