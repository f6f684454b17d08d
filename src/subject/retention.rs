//! `pgvakt retention run [--dry-run] [--now TIME]`: the inventory's retention periods applied
//! with the erasure's machinery. A subject whose own row (`contacts.last_activity_at`) is past
//! its period is erased as a whole, as `subject erase` would (or deleted, with
//! `action: delete`); rows of a dependent table past that table's own period are anonymised
//! (or deleted) row by row. Rows already anonymised are not changed again, so a run after a run
//! changes nothing, and "overdue" means rows that still hold what the period says must go.
//!
//! For schedulers: exit status 0 when nothing is left overdue, 1 when a dry run finds overdue
//! rows, 2 when the run failed; `--metrics-file` writes the outcome for Prometheus' node
//! exporter textfile collector (the alert rules are in deploy/prometheus/retention-alerts.yml).

use std::fmt::Write;
use std::path::PathBuf;

use tokio_postgres::{Client, Transaction};

use super::erase::{changed_rows, erase_subject, erased_value, subject_pseudonym};
use super::plan::{db_error, Plan, PlanRetention, PlanTable};
use super::trail::{Trail, TrailArgs};
use super::{connect, Connection, SubjectError};
use crate::audit::record::{
    Access, Action, ColumnAccess, ColumnCount, EventType, Outcome as RecordOutcome, Record,
    TableAccess, TableCount,
};
use crate::policy::erase::{EraseAction, RowsAction};

#[derive(clap::Args, Debug, Clone)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Report what is overdue, change nothing (exit 1 when something is).
    #[arg(long)]
    pub dry_run: bool,
    /// The time to measure periods from (RFC 3339 or anything PostgreSQL reads as a
    /// timestamptz). Default: the database's clock.
    #[arg(long, default_value = "now")]
    pub now: String,
    /// Write the outcome as Prometheus text for the node exporter's textfile collector.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub trail: TrailArgs,
}

/// What one run found and did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub lines: Vec<String>,
    /// Rows past their period that still needed a change when the run looked.
    pub overdue: i64,
    pub changed: i64,
    /// Rows still overdue after the run (0 after a successful run, `overdue` for a dry run).
    pub remaining: i64,
    /// Per table and kind (anonymised or deleted): rows changed (or, in a dry run, that would
    /// be).
    pub tables: Vec<TableCount>,
}

impl Outcome {
    fn count(&mut self, table: &str, rows: i64, deleted: bool) {
        let rows = u64::try_from(rows).unwrap_or(0);
        // Anonymised and deleted rows of one table are counted apart.
        match self
            .tables
            .iter_mut()
            .find(|t| t.table == table && t.deleted == deleted)
        {
            Some(t) => t.rows += rows,
            None => self.tables.push(TableCount {
                table: table.to_owned(),
                rows,
                deleted,
                columns: Vec::new(),
            }),
        }
    }
}

/// Apply every retention period of every subject type.
pub async fn apply(
    client: &mut Client,
    policy: &crate::policy::PolicySet,
    now: &str,
    dry_run: bool,
    trail: &Trail,
) -> Result<Outcome, SubjectError> {
    let mut out = Outcome::default();
    for ty in Plan::subject_types(policy) {
        let plan = Plan::load(client, policy, Some(&ty)).await?;
        for (i, t) in plan.tables.iter().enumerate() {
            if t.retention.is_none() {
                continue;
            }
            if i == 0 {
                subjects_past(client, policy, &plan, now, dry_run, trail, &mut out).await?;
            } else {
                let subject_type = plan.subject_type.as_str();
                rows_past(client, t, subject_type, now, dry_run, trail, &mut out).await?;
            }
        }
    }
    if dry_run {
        out.remaining = out.overdue;
    }
    Ok(out)
}

/// Subjects whose own row is past the period: each erased (or deleted) as a whole.
async fn subjects_past(
    client: &mut Client,
    policy: &crate::policy::PolicySet,
    plan: &Plan,
    now: &str,
    dry_run: bool,
    trail: &Trail,
    out: &mut Outcome,
) -> Result<(), SubjectError> {
    let t = &plan.tables[0];
    let Some(r) = &t.retention else {
        return Ok(());
    };
    let sql = format!(
        "SELECT CAST(t.{} AS text) FROM {} AS t WHERE {} ORDER BY 1",
        super::plan::q(&t.key),
        t.quoted(),
        r.past("t", 1)
    );
    let ids: Vec<String> = client
        .query(&sql, &[&now])
        .await
        .map_err(|e| db_error(&format!("subjects past retention in {}", t.name()), &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut plan = plan.clone();
    if r.delete {
        for t in plan.tables.iter_mut() {
            t.rows = RowsAction::Delete;
        }
    }
    let (mut subjects, mut rows) = (0, 0);
    for id in &ids {
        let pseudonym = subject_pseudonym(policy, &plan, id);
        // A dry run is recorded once, as a whole, by the run's summary.
        let record = (!dry_run).then_some((trail, EventType::RetentionRun));
        let changes =
            erase_subject(client, &plan, id, pseudonym.as_deref(), dry_run, record).await?;
        let n = changed_rows(&changes);
        for c in &changes {
            let rows = if c.delete {
                c.rows
            } else {
                c.columns.iter().map(|x| x.2).max().unwrap_or(0)
            };
            out.count(&c.table, rows, c.delete);
        }
        if n > 0 {
            subjects += 1;
            rows += n;
        }
    }
    out.overdue += rows;
    if !dry_run {
        out.changed += rows;
    }
    out.lines.push(format!(
        "{}: {} subjects past {} ({} {}); {subjects} overdue, {rows} rows {}",
        t.name(),
        ids.len(),
        r.interval,
        r.column,
        if r.delete { "delete" } else { "anonymise" },
        if dry_run { "would change" } else { "changed" }
    ));
    Ok(())
}

/// Rows of a dependent table past its own period, anonymised (or deleted) row by row.
#[allow(clippy::too_many_arguments)]
async fn rows_past(
    client: &mut Client,
    t: &PlanTable,
    subject_type: &str,
    now: &str,
    dry_run: bool,
    trail: &Trail,
    out: &mut Outcome,
) -> Result<(), SubjectError> {
    let Some(r) = &t.retention else {
        return Ok(());
    };
    let Some((count, change)) = retention_statements(t, r)? else {
        return Ok(());
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| db_error("BEGIN", &e))?;
    let overdue: i64 = tx
        .query_one(&count, &[&now])
        .await
        .map_err(|e| db_error(&format!("rows past retention in {}", t.name()), &e))?
        .get(0);
    if !dry_run && overdue > 0 {
        let past = Past {
            count: &count,
            now,
            overdue,
        };
        change_rows(tx, t, &change, &past, subject_type, trail).await?;
        out.changed += overdue;
    }
    out.count(&t.name(), overdue, r.delete);
    out.overdue += overdue;
    out.lines.push(format!(
        "{}: {overdue} rows past {} ({} {}) {}",
        t.name(),
        r.interval,
        r.column,
        if r.delete { "delete" } else { "anonymise" },
        if dry_run { "would change" } else { "changed" }
    ));
    Ok(())
}

/// The statement counting the table's rows past retention and the one that deletes or
/// anonymises them. Anonymised rows that already hold the erased values are not counted, so a
/// second run finds nothing to do; none when the table has no column to anonymise.
fn retention_statements(
    t: &PlanTable,
    r: &PlanRetention,
) -> Result<Option<(String, String)>, SubjectError> {
    let past = r.past("t", 1);
    if r.delete {
        return Ok(Some((
            format!("SELECT count(*) FROM {} AS t WHERE {past}", t.quoted()),
            format!("DELETE FROM {} AS t WHERE {past}", t.quoted()),
        )));
    }
    let mut sets = Vec::new();
    let mut differs = Vec::new();
    for c in t.columns.iter().filter(|c| c.erase != EraseAction::Keep) {
        let v = erased_value(t, c, None)?;
        sets.push(format!("{} = {v}", super::plan::q(&c.name)));
        differs.push(format!("{} IS DISTINCT FROM {v}", super::plan::q(&c.name)));
    }
    if sets.is_empty() {
        return Ok(None);
    }
    let filter = format!("{past} AND ({})", differs.join(" OR "));
    Ok(Some((
        format!("SELECT count(*) FROM {} AS t WHERE {filter}", t.quoted()),
        format!(
            "UPDATE {} AS t SET {} WHERE {filter}",
            t.quoted(),
            sets.join(", ")
        ),
    )))
}

/// What was counted before the change: the count statement, the time it was taken at, and
/// the rows it found.
struct Past<'a> {
    count: &'a str,
    now: &'a str,
    overdue: i64,
}

/// Changes the rows, checks that none past retention still holds its values, and records whose
/// rows they were before committing: a change that is not in the audit trail is not made.
async fn change_rows(
    tx: Transaction<'_>,
    t: &PlanTable,
    change: &str,
    past: &Past<'_>,
    subject_type: &str,
    trail: &Trail,
) -> Result<(), SubjectError> {
    let now = past.now;
    let change = format!(
        "{change} RETURNING CAST(t.{} AS text)",
        super::plan::q(&t.key)
    );
    let keys = tx
        .query(&change, &[&now])
        .await
        .map_err(|e| db_error(&format!("retention of {}", t.name()), &e))?;
    let left: i64 = tx
        .query_one(past.count, &[&now])
        .await
        .map_err(|e| db_error(&format!("checking {}", t.name()), &e))?
        .get(0);
    if left > 0 {
        return Err(SubjectError::Check(format!(
            "{}: {left} rows past retention still hold their values",
            t.name()
        )));
    }
    let keys: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
    trail
        .write(rows_record(trail, t, subject_type, &keys, past.overdue))
        .await?;
    tx.commit().await.map_err(|e| db_error("COMMIT", &e))?;
    Ok(())
}

/// The record of one table's rows past their period: the subjects they belonged to (capped as
/// a statement's are), the columns erased or the rows deleted, the count.
fn rows_record(
    trail: &Trail,
    t: &PlanTable,
    subject_type: &str,
    keys: &[String],
    rows: i64,
) -> Record {
    let mut rec = trail.record(EventType::RetentionRun, RecordOutcome::Ok);
    let deleted = t.retention.as_ref().is_some_and(|r| r.delete);
    let columns: Vec<_> = t
        .columns
        .iter()
        .filter(|c| deleted || c.erase != EraseAction::Keep)
        .collect();
    rec.tables = vec![TableAccess {
        table: t.name(),
        access: Access::Write,
        columns: columns
            .iter()
            .map(|c| ColumnAccess {
                column: c.name.clone(),
                category: c.category.clone(),
                action: Action::Allowed,
            })
            .collect(),
        subject: Some(subject_type.to_owned()),
    }];
    let rows = u64::try_from(rows).unwrap_or(0);
    rec.table_counts = vec![TableCount {
        table: t.name(),
        rows,
        deleted,
        columns: if deleted {
            Vec::new()
        } else {
            columns
                .iter()
                .map(|c| ColumnCount {
                    column: c.name.clone(),
                    erase: c.erase.as_str().to_owned(),
                    changed: rows,
                })
                .collect()
        },
    }];
    rec.rows = Some(rows);
    if let Some(mut set) = trail.subjects() {
        for k in keys {
            set.add(subject_type, k);
        }
        set.finish(&mut rec);
    }
    rec
}

/// Prometheus text for the textfile collector: the last run's outcome and time.
pub fn metrics_text(outcome: Option<&Outcome>, now_unix: u64) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = write!(
            m,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        );
    };
    gauge(
        "pgvakt_retention_last_run_timestamp_seconds",
        "When pgvakt retention run last ran.",
        now_unix.to_string(),
    );
    gauge(
        "pgvakt_retention_last_run_success",
        "1 when the last retention run completed, 0 when it failed.",
        u8::from(outcome.is_some()).to_string(),
    );
    if let Some(o) = outcome {
        gauge(
            "pgvakt_retention_overdue_rows",
            "Rows past their retention period still holding their values after the last run.",
            o.remaining.to_string(),
        );
        gauge(
            "pgvakt_retention_changed_rows",
            "Rows the last retention run anonymised or deleted.",
            o.changed.to_string(),
        );
    }
    m
}

/// Connect, apply, and record the run as a whole (also when it failed).
async fn recorded(args: &RetentionArgs) -> Result<Outcome, SubjectError> {
    const APP: &str = "pgvakt retention run";
    let policy = super::load_policy(&args.connection.policy)?;
    let mut trail = Trail::open(&args.trail, APP, &policy).await?;
    let result = async {
        let mut client = connect(&args.connection, APP).await?;
        trail.connected(&client).await?;
        apply(&mut client, &policy, &args.now, args.dry_run, &trail).await
    }
    .await;
    let summary = match &result {
        Ok(o) => {
            let mut rec = trail.record(EventType::RetentionRun, RecordOutcome::Ok);
            rec.dry_run = args.dry_run;
            rec.table_counts = o.tables.clone();
            rec.rows = Some(u64::try_from(o.changed).unwrap_or(0));
            rec.message = Some(format!(
                "run complete: {} rows overdue, {} changed, {} left overdue",
                o.overdue, o.changed, o.remaining
            ));
            trail.write(rec).await
        }
        Err(e) => {
            trail.failed(EventType::RetentionRun, e).await;
            Ok(())
        }
    };
    trail.close().await;
    let outcome = result?;
    summary?;
    Ok(outcome)
}

/// The command: (exit status, report).
pub async fn run(args: &RetentionArgs) -> (i32, String) {
    let result = recorded(args).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(path) = &args.metrics_file {
        if let Err(e) = super::write_file(path, metrics_text(result.as_ref().ok(), now).as_bytes())
        {
            return (2, format!("pgvakt retention: {e}\n"));
        }
    }
    match result {
        Ok(o) => {
            let mut report = o.lines.join("\n");
            let _ = write!(
                report,
                "\n{} rows overdue, {} changed, {} left overdue\n",
                o.overdue, o.changed, o.remaining
            );
            (i32::from(o.remaining > 0), report)
        }
        Err(e) => (2, format!("pgvakt retention: {e}\n")),
    }
}
