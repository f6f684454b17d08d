//! `pgvakt subject erase <id> [--dry-run]`: erasure by anonymisation as the inventory declares
//! it per column (`inventory.tables.<t>.erase`, defaults by category), in one transaction.
//! Before committing, the subject is read back: every erased column must hold its erased value
//! and no row of a `rows: delete` table may remain, or everything is rolled back. Running it
//! again changes nothing (pseudonyms are of the subject, not of the old value). What it prints
//! and what the audit trail records are counts and column names, never the erased values.

use std::fmt::Write;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::plan::{db_error, q, Plan, PlanColumn, PlanTable};
use super::trail::{erasure_record, Trail, TrailArgs};
use super::{connect, Connection, SubjectError};
use crate::audit::record::EventType;
use crate::policy::erase::{EraseAction, RowsAction};
use crate::policy::masks::MaskKind;
use crate::policy::model::{ColumnType, MaskMethod};

#[derive(clap::Args, Debug, Clone)]
pub struct EraseArgs {
    /// The subject's id (the subject key's value, e.g. the contact id `42`).
    pub id: String,
    #[command(flatten)]
    pub connection: Connection,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub trail: TrailArgs,
}

/// What erasure does to one table of one subject.
#[derive(Debug, Default)]
pub struct TableChange {
    pub table: String,
    pub rows: i64,
    pub delete: bool,
    /// (column, action, rows whose value would change or changed).
    pub columns: Vec<(String, EraseAction, i64)>,
}

/// The erased value of a column for the subject: `$1` is the subject id, `$2` its keyed
/// pseudonym prefix computed by pgvakt (never sent when no column needs it).
pub(super) fn erased_value(
    t: &PlanTable,
    c: &PlanColumn,
    pseudonym: Option<&str>,
) -> Result<String, SubjectError> {
    let ty = ColumnType {
        sql_name: c.sql_type.clone(),
        category: c.type_category,
    };
    match c.erase {
        EraseAction::Keep => Ok(q(&c.name)),
        EraseAction::Null => Ok(format!("CAST(NULL AS {})", c.sql_type)),
        EraseAction::Redact => MaskMethod::builtin(MaskKind::Redact)
            .render(&q(&c.name), &ty)
            .map_err(|e| SubjectError::Plan(format!("{}.{}: {e}", t.name(), c.name))),
        EraseAction::Pseudonym if c.type_category == 'S' && pseudonym.is_some() => {
            // The subject's keyed pseudonym and a tag of the column: distinct per subject and
            // column, the same on every run.
            let column = format!("{}.{}", t.name(), c.name).replace('\'', "''");
            Ok(format!(
                "CAST(CAST($2 AS text) || '-' || pg_catalog.substr(pg_catalog.md5('{column}'), 1, 8) AS {})",
                c.sql_type
            ))
        }
        EraseAction::Pseudonym if c.type_category == 'S' => Err(SubjectError::Plan(format!(
            "{}.{}: erase to a pseudonym needs the policy's pseudonym key (pseudonym: key_env or key_file)",
            t.name(),
            c.name
        ))),
        EraseAction::Pseudonym => Err(SubjectError::Plan(format!(
            "{}.{}: erase to a pseudonym works on text columns only ({})",
            t.name(),
            c.name,
            c.sql_type
        ))),
    }
}

/// `count(*)` and, per erased column, how many of the subject's rows differ from the erased
/// value: what a run would change, and after a run what it failed to change.
async fn measure(
    client: &impl GenericClient,
    t: &PlanTable,
    id: &str,
    pseudonym: Option<&str>,
) -> Result<TableChange, SubjectError> {
    let erased: Vec<&PlanColumn> = t
        .columns
        .iter()
        .filter(|c| c.erase != EraseAction::Keep)
        .collect();
    let mut sql = String::from("SELECT count(*)");
    for c in &erased {
        let _ = write!(
            sql,
            ", count(*) FILTER (WHERE t.{} IS DISTINCT FROM {})",
            q(&c.name),
            erased_value(t, c, pseudonym)?
        );
    }
    let _ = write!(
        sql,
        " FROM {} AS t WHERE {}",
        t.quoted(),
        t.key_filter("t", 1)
    );
    let (id, pseudonym) = (id.to_owned(), pseudonym.map(str::to_owned));
    let params = params(&id, pseudonym.as_ref(), &sql);
    let row = client
        .query_one(&sql, &params)
        .await
        .map_err(|e| db_error(&format!("measuring {}", t.name()), &e))?;
    Ok(TableChange {
        table: t.name(),
        rows: row.get(0),
        delete: t.rows == RowsAction::Delete,
        columns: erased
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), c.erase, row.get::<_, i64>(i + 1)))
            .collect(),
    })
}

/// `$1` (the id) and, when the statement uses it, `$2` (the subject's pseudonym).
fn params<'a>(
    id: &'a String,
    pseudonym: Option<&'a String>,
    sql: &str,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut p: Vec<&(dyn ToSql + Sync)> = vec![id];
    if let (true, Some(ps)) = (sql.contains("$2"), pseudonym) {
        p.push(ps);
    }
    p
}

/// The statements for one table: an UPDATE of the columns that differ, or a DELETE.
fn statement(t: &PlanTable, pseudonym: Option<&str>) -> Result<Option<String>, SubjectError> {
    if t.rows == RowsAction::Delete {
        return Ok(Some(format!(
            "DELETE FROM {} AS t WHERE {}",
            t.quoted(),
            t.key_filter("t", 1)
        )));
    }
    let mut sets = Vec::new();
    let mut differs = Vec::new();
    for c in t.columns.iter().filter(|c| c.erase != EraseAction::Keep) {
        let v = erased_value(t, c, pseudonym)?;
        sets.push(format!("{} = {v}", q(&c.name)));
        differs.push(format!("{} IS DISTINCT FROM {v}", q(&c.name)));
    }
    if sets.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "UPDATE {} AS t SET {} WHERE {} AND ({})",
        t.quoted(),
        sets.join(", "),
        t.key_filter("t", 1),
        differs.join(" OR ")
    )))
}

use tokio_postgres::GenericClient;

/// Erase (or with `dry_run` only measure) the subject `id` of `plan` in one transaction. With
/// `record`, the erasure's audit record is made durable before the commit (for a dry run,
/// before returning): an erasure the trail cannot record does not happen.
pub async fn erase_subject(
    client: &mut Client,
    plan: &Plan,
    id: &str,
    pseudonym: Option<&str>,
    dry_run: bool,
    record: Option<(&Trail, EventType)>,
) -> Result<Vec<TableChange>, SubjectError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| db_error("BEGIN", &e))?;
    let mut changes = Vec::new();
    for t in &plan.tables {
        changes.push(measure(&tx, t, id, pseudonym).await?);
    }
    if dry_run {
        if let Some((trail, event)) = record {
            trail
                .write(erasure_record(trail, event, plan, id, &changes, true))
                .await?;
        }
        return Ok(changes);
    }
    // Dependent tables first, so a deleted subject row does not take rows with it that the
    // inventory says to keep (foreign keys with ON DELETE CASCADE).
    for t in plan.tables.iter().rev() {
        if let Some(sql) = statement(t, pseudonym)? {
            let (id, pseudonym) = (id.to_owned(), pseudonym.map(str::to_owned));
            let params = params(&id, pseudonym.as_ref(), &sql);
            tx.execute(&sql, &params)
                .await
                .map_err(|e| db_error(&format!("erasing {}", t.name()), &e))?;
        }
    }
    for t in &plan.tables {
        let after = measure(&tx, t, id, pseudonym).await?;
        if t.rows == RowsAction::Delete && after.rows > 0 {
            return Err(SubjectError::Check(format!(
                "{} still holds {} rows of the subject",
                t.name(),
                after.rows
            )));
        }
        if let Some((c, _, n)) = after.columns.iter().find(|(_, _, n)| *n > 0) {
            return Err(SubjectError::Check(format!(
                "{}.{c} still differs from its erased value in {n} rows",
                t.name()
            )));
        }
    }
    if let Some((trail, event)) = record {
        if changed_rows(&changes) > 0 || event == EventType::SubjectErase {
            trail
                .write(erasure_record(trail, event, plan, id, &changes, false))
                .await?;
        }
    }
    tx.commit().await.map_err(|e| db_error("COMMIT", &e))?;
    Ok(changes)
}

/// Rows an erasure changed (or would change): deleted rows, and per anonymised table the
/// column that changed in the most rows.
pub fn changed_rows(changes: &[TableChange]) -> i64 {
    changes
        .iter()
        .map(|c| {
            if c.delete {
                c.rows
            } else {
                c.columns.iter().map(|x| x.2).max().unwrap_or(0)
            }
        })
        .sum()
}

/// The report: per table, rows and what happens to each erased column; never values.
pub fn report(changes: &[TableChange], id: &str, dry_run: bool) -> String {
    let mut out = String::new();
    let verb = if dry_run { "would change" } else { "changed" };
    for c in changes {
        if c.delete {
            let _ = writeln!(
                out,
                "{}: {} rows {}",
                c.table,
                c.rows,
                if dry_run {
                    "would be deleted"
                } else {
                    "deleted"
                }
            );
            continue;
        }
        let _ = writeln!(out, "{}: {} rows", c.table, c.rows);
        for (col, action, n) in &c.columns {
            let _ = writeln!(out, "  {col}: {} ({n} rows {verb})", action.as_str());
        }
    }
    let total = changed_rows(changes);
    let _ = writeln!(
        out,
        "subject {id}: {}",
        match (dry_run, total) {
            (true, 0) => "nothing to erase (already erased or no data)".to_owned(),
            (true, _) => "dry run, nothing changed".to_owned(),
            (false, 0) => "nothing to erase; checked: no personal value remains".to_owned(),
            (false, _) => "erased and checked: no personal value remains".to_owned(),
        }
    );
    out
}

/// The keyed pseudonym prefix of a subject, computed with the policy's pseudonym key.
pub(super) fn subject_pseudonym(
    policy: &crate::policy::PolicySet,
    plan: &Plan,
    id: &str,
) -> Option<String> {
    let key = policy.pseudonym_key()?;
    let mac = key.hmac_hex(format!("{}\0{id}", plan.subject_type).as_bytes());
    Some(format!("erased-{}", &mac[..16.min(mac.len())]))
}

pub async fn run(args: &EraseArgs) -> Result<String, SubjectError> {
    const APP: &str = "pgvakt subject erase";
    let policy = super::load_policy(&args.connection.policy)?;
    let mut trail = Trail::open(&args.trail, APP, &policy).await?;
    let result = async {
        let mut client = connect(&args.connection, APP).await?;
        trail.connected(&client).await?;
        let trail = &trail;
        let plan = Plan::load(&client, &policy, args.connection.subject_type.as_deref()).await?;
        let pseudonym = subject_pseudonym(&policy, &plan, &args.id);
        erase_subject(
            &mut client,
            &plan,
            &args.id,
            pseudonym.as_deref(),
            args.dry_run,
            Some((trail, EventType::SubjectErase)),
        )
        .await
    }
    .await;
    if let Err(e) = &result {
        trail.failed(EventType::SubjectErase, e).await;
    }
    trail.close().await;
    Ok(report(&result?, &args.id, args.dry_run))
}
