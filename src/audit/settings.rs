//! The `audit:` section of the configuration, owned by the audit trail it configures (the
//! configuration file is composed of its sections; nothing here reads the rest of it).

use std::path::PathBuf;

use serde::Deserialize;

use super::table_settings::AuditTableConfig;

/// Where audit records go.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// Rotated JSON-lines files in `dir` (the default).
    #[default]
    File,
    /// Standard output, for a log collector; the chain restarts at seq 1 at every start.
    Stdout,
    /// A PostgreSQL table shared by a fleet (`postgres:` below), one chain per replica.
    Postgres,
}

/// What happens when the audit queue is full or the sink is failing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Callers wait up to `block_timeout_ms`, then get an error; while the sink fails they get
    /// it at once. Personal data is not released unrecorded. The default.
    #[default]
    Block,
    /// Records that do not fit are dropped and counted (`pgvakt_audit_records_dropped_total`).
    Drop,
}

/// When the record of a statement that may touch personal data must be durable.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// An intent record (who, role, session, statement, columns and categories) is written and
    /// synced before the statement is forwarded upstream (a read that runs alone is forwarded
    /// while its record syncs, its answers held until then), so no result reaches the client
    /// without a durable record; if it cannot be, the statement is refused. Sessions share
    /// fsyncs (group commit). The completion record (rows, subjects) follows, naming the
    /// intent. The default.
    #[default]
    BeforeRelease,
    /// Only the completion record, queued after the result is complete and synced in the next
    /// batch: results released in the last batch window (about 10 ms plus one fsync, more
    /// under load) have no record if the process is killed. Opt-in, for throughput.
    AfterCompletion,
}

/// Audit trail settings. Absent section: no audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `file` (default), `stdout` or `postgres`.
    #[serde(default)]
    pub sink: AuditSink,
    /// Directory of the audit files (`audit-<seq>-<UTC time>.jsonl`); required for `file`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The audit table; required for `postgres`, ignored otherwise.
    #[serde(default)]
    pub postgres: Option<AuditTableConfig>,
    /// Start a new file when the current one would grow past this many bytes. Default 64 MiB;
    /// 0 = never.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Start a new file when the current one is this old (checked at each write). Default
    /// 86400 (a day); 0 = never.
    #[serde(default = "default_rotate_seconds")]
    pub rotate_seconds: u64,
    /// Records that may wait for the writer. Default 10000.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// `block` (default) or `drop`. Intent records (`durability: before_release`) always wait.
    #[serde(default)]
    pub on_full: OnFull,
    /// `before_release` (default) or `after_completion`; see [`Durability`].
    #[serde(default)]
    pub durability: Durability,
    /// With `block`, how long a caller waits for queue space before its statement fails, ms.
    /// Default 2000.
    #[serde(default = "default_block_timeout_ms")]
    pub block_timeout_ms: u64,
    /// Environment variable holding the chain key (at least 32 bytes). Default
    /// `PGVAKT_AUDIT_CHAIN_KEY`.
    #[serde(default = "default_chain_key_env")]
    pub chain_key_env: String,
    /// File holding the chain key; takes precedence over the variable. Default none.
    #[serde(default)]
    pub chain_key_file: Option<PathBuf>,
    /// Environment variable holding the subject-pseudonym key (at least 32 bytes, different
    /// from the chain key). Default `PGVAKT_AUDIT_SUBJECT_KEY`.
    #[serde(default = "default_subject_key_env")]
    pub subject_key_env: String,
    /// File holding the subject key; takes precedence over the variable. Default none.
    #[serde(default)]
    pub subject_key_file: Option<PathBuf>,
    /// Most subject pseudonyms listed in one record; beyond it `subjects_truncated` is set.
    /// Default 1000.
    #[serde(default = "default_max_subjects")]
    pub max_subjects: usize,
}

fn default_rotate_bytes() -> u64 {
    64 << 20
}
fn default_rotate_seconds() -> u64 {
    86_400
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_block_timeout_ms() -> u64 {
    2000
}
fn default_chain_key_env() -> String {
    "PGVAKT_AUDIT_CHAIN_KEY".into()
}
fn default_subject_key_env() -> String {
    "PGVAKT_AUDIT_SUBJECT_KEY".into()
}
fn default_max_subjects() -> usize {
    1000
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: AuditSink::default(),
            dir: None,
            postgres: None,
            rotate_bytes: default_rotate_bytes(),
            rotate_seconds: default_rotate_seconds(),
            queue_capacity: default_queue_capacity(),
            on_full: OnFull::default(),
            durability: Durability::default(),
            block_timeout_ms: default_block_timeout_ms(),
            chain_key_env: default_chain_key_env(),
            chain_key_file: None,
            subject_key_env: default_subject_key_env(),
            subject_key_file: None,
            max_subjects: default_max_subjects(),
        }
    }
}

impl AuditConfig {
    pub(crate) fn problems(&self, problems: &mut Vec<String>) {
        if self.sink == AuditSink::File && self.dir.is_none() {
            problems.push("audit.dir: required when audit.sink is file".into());
        }
        match (&self.postgres, self.sink) {
            (Some(t), AuditSink::Postgres) => t.problems(problems),
            (None, AuditSink::Postgres) => {
                problems.push("audit.postgres: required when audit.sink is postgres".into())
            }
            _ => {}
        }
        if self.queue_capacity == 0 {
            problems.push("audit.queue_capacity: must be at least 1".into());
        }
        // Privacy by default: an audit trail without its keys would be neither tamper-evident
        // nor pseudonymous, so it is a configuration error rather than a warning.
        if let Err(errors) = crate::audit::keys::Keys::load(self) {
            problems.extend(errors.iter().map(ToString::to_string));
        }
    }
}
