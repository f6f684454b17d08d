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

use tokio_postgres::Client;

use super::erase::{erase_subject, erased_value, subject_pseudonym};
use super::plan::{db_error, Plan, PlanTable};
use super::{connect, Connection, SubjectError};
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
}

/// Apply every retention period of every subject type.
pub async fn apply(
    client: &mut Client,
    policy: &crate::policy::PolicySet,
    now: &str,
    dry_run: bool,
) -> Result<Outcome, SubjectError> {
    let mut out = Outcome::default();
    for ty in Plan::subject_types(policy) {
        let plan = Plan::load(client, policy, Some(&ty)).await?;
        for (i, t) in plan.tables.iter().enumerate() {
            if t.retention.is_none() {
                continue;
            }
            if i == 0 {
                subjects_past(client, policy, &plan, now, dry_run, &mut out).await?;
            } else {
                rows_past(client, t, now, dry_run, &mut out).await?;
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
        let changes = erase_subject(client, &plan, id, pseudonym.as_deref(), dry_run).await?;
        let n: i64 = changes
            .iter()
            .map(|c| {
                if c.delete {
                    c.rows
                } else {
                    c.columns.iter().map(|x| x.2).max().unwrap_or(0)
                }
            })
            .sum();
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
async fn rows_past(
    client: &mut Client,
    t: &PlanTable,
    now: &str,
    dry_run: bool,
    out: &mut Outcome,
) -> Result<(), SubjectError> {
    let Some(r) = &t.retention else {
        return Ok(());
    };
    let past = r.past("t", 1);
    let (count, change) = if r.delete {
        (
            format!("SELECT count(*) FROM {} AS t WHERE {past}", t.quoted()),
            format!("DELETE FROM {} AS t WHERE {past}", t.quoted()),
        )
    } else {
        let mut sets = Vec::new();
        let mut differs = Vec::new();
        for c in t.columns.iter().filter(|c| c.erase != EraseAction::Keep) {
            let v = erased_value(t, c, None)?;
            sets.push(format!("{} = {v}", super::plan::q(&c.name)));
            differs.push(format!("{} IS DISTINCT FROM {v}", super::plan::q(&c.name)));
        }
        if sets.is_empty() {
            return Ok(());
        }
        let filter = format!("{past} AND ({})", differs.join(" OR "));
        (
            format!("SELECT count(*) FROM {} AS t WHERE {filter}", t.quoted()),
            format!(
                "UPDATE {} AS t SET {} WHERE {filter}",
                t.quoted(),
                sets.join(", ")
            ),
        )
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
        tx.execute(&change, &[&now])
            .await
            .map_err(|e| db_error(&format!("retention of {}", t.name()), &e))?;
        let left: i64 = tx
            .query_one(&count, &[&now])
            .await
            .map_err(|e| db_error(&format!("checking {}", t.name()), &e))?
            .get(0);
        if left > 0 {
            return Err(SubjectError::Check(format!(
                "{}: {left} rows past retention still hold their values",
                t.name()
            )));
        }
        tx.commit().await.map_err(|e| db_error("COMMIT", &e))?;
        out.changed += overdue;
    }
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

/// The command: (exit status, report).
pub async fn run(args: &RetentionArgs) -> (i32, String) {
    let result = async {
        let policy = super::load_policy(&args.connection.policy)?;
        let mut client = connect(&args.connection, "pgvakt retention run").await?;
        apply(&mut client, &policy, &args.now, args.dry_run).await
    }
    .await;
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
