//! What the subject commands leave in the audit trail, written by the commands themselves so
//! they are recorded also when they connect to PostgreSQL directly: a `subject_export` record
//! before the archive is written, a `subject_erase` record before the erasure commits (dry
//! runs included), and `retention_run` records before each transaction of a run commits and
//! for the run as a whole. A record holds the subject's keyed pseudonym, the database user and
//! the operating-system user, counts per table and column, never a value. If the record cannot
//! be made durable, nothing is written and nothing is committed.
//!
//! The records go into the trail `--config` (pgvakt's configuration file) describes, with its
//! keys, in a chain of their own: a running pgvakt owns its chain, and a second writer would
//! fork it. With `audit.sink: file` that chain is the directory `dpo/` inside `audit.dir`
//! (`pgvakt audit verify DIR/dpo`); with `postgres`, the audit table as replica
//! `<replica>/dpo`, verified with every other replica's chain. One command at a time writes it.

use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio_postgres::Client;

use super::SubjectError;
use crate::audit::record::{ColumnCount, EventType, Outcome, Record, TableCount};
use crate::audit::settings::AuditSink;
use crate::audit::{Audit, AuditHandle, AuditMetrics};

/// The subdirectory of `audit.dir` (and the suffix of the replica name) of the commands' chain.
pub const CHAIN: &str = "dpo";

/// How a subject command records itself.
#[derive(clap::Args, Debug, Clone)]
pub struct TrailArgs {
    /// pgvakt's configuration file: the command records what it did in the audit trail of its
    /// `audit:` section (same keys), in a chain of its own (`<audit.dir>/dpo`, or replica
    /// `<replica>/dpo` of the audit table). Required unless --no-audit-record.
    #[arg(long, required_unless_present = "no_audit_record")]
    pub config: Option<PathBuf>,
    /// Run without recording the command in the audit trail (a test copy of the database):
    /// connected straight to PostgreSQL, nothing then records it.
    #[arg(long, conflicts_with = "config")]
    pub no_audit_record: bool,
}

/// The open trail of one command run.
pub struct Trail {
    handle: Option<AuditHandle>,
    /// Held while the writer runs: one command at a time continues the chain.
    _lock: Option<Flock<std::fs::File>>,
    /// Who the connection is (session user, database), once connected.
    user: Option<String>,
    database: Option<String>,
    application: String,
    operator: Option<String>,
    policy_version: String,
}

impl Trail {
    /// Start the writer (when recording), before connecting: a command that cannot connect
    /// is recorded too.
    pub async fn open(
        args: &TrailArgs,
        application: &str,
        policy: &crate::policy::PolicySet,
    ) -> Result<Trail, SubjectError> {
        let (handle, lock) = match &args.config {
            Some(path) => {
                let (handle, lock) = start(path).await?;
                (Some(handle), lock)
            }
            None => (None, None),
        };
        Ok(Trail {
            handle,
            _lock: lock,
            user: None,
            database: None,
            application: application.to_owned(),
            operator: operator(),
            policy_version: policy.version.clone(),
        })
    }

    /// Learn who the connection is: the user and database its records name.
    pub async fn connected(&mut self, client: &Client) -> Result<(), SubjectError> {
        let row = client
            .query_one(
                "SELECT pg_catalog.session_user()::text, pg_catalog.current_database()::text",
                &[],
            )
            .await
            .map_err(|e| super::plan::db_error("session user", &e))?;
        self.user = Some(row.get(0));
        self.database = Some(row.get(1));
        Ok(())
    }

    /// A record of this command's kind, filled with who ran it and where.
    pub fn record(&self, event: EventType, outcome: Outcome) -> Record {
        let mut rec = Record::new(event, outcome);
        rec.user.clone_from(&self.user);
        rec.database.clone_from(&self.database);
        rec.application_name = Some(self.application.clone());
        rec.operator = self.operator.clone();
        rec.policy_version = Some(self.policy_version.clone());
        rec
    }

    /// The audit pseudonym of subject `id` of `subject_type`, as pgvakt's own records name it.
    pub fn subject_ref(&self, subject_type: &str, id: &str) -> Option<String> {
        self.handle
            .as_ref()
            .map(|h| h.subject_ref(subject_type, id))
    }

    /// A collector for many subjects, capped as the proxy caps a statement's.
    pub fn subjects(&self) -> Option<crate::audit::SubjectSet> {
        self.handle.as_ref().map(AuditHandle::subjects)
    }

    /// Write `rec` and wait until it is durable. Err: what it records must not happen.
    pub async fn write(&self, rec: Record) -> Result<(), SubjectError> {
        match &self.handle {
            Some(h) => h
                .record_durable(rec)
                .await
                .map_err(|e| SubjectError::Audit(e.to_string())),
            None => Ok(()),
        }
    }

    /// Record that the command failed (best effort: the failure is reported either way). The
    /// message is the error's kind, not its text, which can quote the subject's id.
    pub async fn failed(&self, event: EventType, e: &SubjectError) {
        let mut rec = self.record(event, Outcome::Error);
        rec.message = Some(format!("failed: {}", e.kind()));
        let _ = self.write(rec).await;
    }

    /// Drain and sync the writer.
    pub async fn close(self) {
        if let Some(h) = self.handle {
            h.close().await;
        }
    }
}

/// How long a command waits for another one that is writing the chain.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The writer for the commands' chain, with the keys of pgvakt's configuration, and (file
/// sink) the lock that keeps a second command from forking the chain. The audit table's sink
/// locks its replica itself.
async fn start(
    path: &std::path::Path,
) -> Result<(AuditHandle, Option<Flock<std::fs::File>>), SubjectError> {
    // Only the audit section matters here: the command may run where pgvakt's certificates
    // are not (a Kubernetes Job), so the rest of the file is parsed but not checked.
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SubjectError::Audit(format!("--config {origin}: {e}")))?;
    let mut config = crate::config::Config::parse(&text, &origin)
        .map_err(|e| SubjectError::Audit(format!("--config: {e}")))?;
    if let Some(dir) = path.parent() {
        config.resolve_paths(dir);
    }
    let mut audit = config.audit.ok_or_else(|| {
        SubjectError::Audit(format!(
            "--config {}: no audit section, so there is no trail to record in",
            path.display()
        ))
    })?;
    let mut problems = Vec::new();
    audit.problems(&mut problems);
    if !problems.is_empty() {
        return Err(SubjectError::Audit(format!(
            "--config {origin}: {}",
            problems.join("; ")
        )));
    }
    let mut lock = None;
    match audit.sink {
        AuditSink::File => {
            let dir = audit.dir.as_ref().map(|d| d.join(CHAIN)).ok_or_else(|| {
                SubjectError::Audit("audit.dir: required when audit.sink is file".into())
            })?;
            lock = Some(lock_chain(&dir).await?);
            audit.dir = Some(dir);
        }
        AuditSink::Postgres => {
            if let Some(t) = audit.postgres.as_mut() {
                t.replica = Some(format!("{}/{CHAIN}", t.replica_name()));
            }
        }
        AuditSink::Stdout => {
            return Err(SubjectError::Audit(
                "audit.sink stdout: a command cannot write into pgvakt's own output stream; record with a file or postgres sink"
                    .into(),
            ))
        }
    }
    let handle = Audit::start(&audit, &AuditMetrics::default())
        .map_err(|e| SubjectError::Audit(e.to_string()))?;
    Ok((handle, lock))
}

/// An exclusive lock on `dir/.lock` (released when the process ends, however it ends),
/// waiting up to [`LOCK_WAIT`] for a command holding it.
async fn lock_chain(dir: &std::path::Path) -> Result<Flock<std::fs::File>, SubjectError> {
    let io = |e: std::io::Error| SubjectError::Audit(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(io)?;
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) if std::time::Instant::now() < until => {
                file = f;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(SubjectError::Audit(format!(
                    "{}: another command has been writing this chain for {} s",
                    dir.display(),
                    LOCK_WAIT.as_secs()
                )))
            }
            Err((_, e)) => return Err(io(e.into())),
        }
    }
}

/// The operating-system user running the command, as the environment names it.
fn operator() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// Per-table counts of an erasure, for the record.
pub fn counts(changes: &[super::erase::TableChange]) -> Vec<TableCount> {
    changes
        .iter()
        .map(|c| TableCount {
            table: c.table.clone(),
            rows: u64::try_from(c.rows).unwrap_or(0),
            deleted: c.delete,
            columns: if c.delete {
                Vec::new()
            } else {
                c.columns
                    .iter()
                    .map(|(column, action, n)| ColumnCount {
                        column: column.clone(),
                        erase: action.as_str().to_owned(),
                        changed: u64::try_from(*n).unwrap_or(0),
                    })
                    .collect()
            },
        })
        .collect()
}

/// The record of one subject's erasure (or its dry run): the subject's pseudonym, the columns
/// erased per table, counts.
pub fn erasure_record(
    trail: &Trail,
    event: EventType,
    plan: &super::Plan,
    id: &str,
    changes: &[super::erase::TableChange],
    dry_run: bool,
) -> Record {
    use crate::audit::record::{Access, Action, ColumnAccess, SubjectGroup, TableAccess};
    use crate::policy::erase::{EraseAction, RowsAction};
    let mut rec = trail.record(event, Outcome::Ok);
    rec.dry_run = dry_run;
    if let Some(r) = trail.subject_ref(&plan.subject_type, id) {
        rec.subjects = vec![SubjectGroup {
            table: plan.subject_type.clone(),
            refs: vec![r],
        }];
        rec.subject_count = Some(1);
    }
    rec.tables = plan
        .tables
        .iter()
        .map(|t| TableAccess {
            table: t.name(),
            access: Access::Write,
            columns: t
                .columns
                .iter()
                .filter(|c| t.rows == RowsAction::Delete || c.erase != EraseAction::Keep)
                .map(|c| ColumnAccess {
                    column: c.name.clone(),
                    category: c.category.clone(),
                    action: Action::Allowed,
                })
                .collect(),
            subject: Some(plan.subject_type.clone()),
        })
        .collect();
    rec.table_counts = counts(changes);
    rec.rows = Some(u64::try_from(super::erase::changed_rows(changes)).unwrap_or(0));
    rec
}
