//! The audit trail: one tamper-evident JSON line per event, with keyed pseudonyms of the data
//! subjects whose rows were read, so a DPO can answer "who read subject X".
//!
//! # Using it from a session
//!
//! ```no_run
//! # async fn example(cfg: &pgvakt::config::AuditConfig, metrics: &pgvakt::audit::AuditMetrics)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use pgvakt::audit::{Audit, EventType, Outcome, Record};
//!
//! let audit = Audit::start(cfg, metrics)?;          // once, at proxy start; clone per session
//! // Before forwarding a personal-data read (fail closed while the sink is down):
//! if !audit.is_healthy() { /* refuse with the AuditUnavailable::SinkFailing text */ }
//! let mut subjects = audit.subjects();               // per statement
//! subjects.add("public.contacts", "42");             // per returned row: table, key as text
//! let mut rec = Record::new(EventType::StatementRead, Outcome::Ok);
//! rec.user = Some("secretary".into());
//! subjects.finish(&mut rec);
//! audit.record(rec).await?;                          // Err: do not release unrecorded data
//! audit.close().await;                               // at shutdown: drains and syncs
//! # Ok(()) }
//! ```
//!
//! With `audit.durability: before_release` (the default) a session writes a
//! `statement_intent` record with `record_durable` before it forwards a statement that may
//! touch personal data, and waits for it to be synced (group commit: one fsync serves every
//! session waiting then), or, for a read that runs alone, forwards it at once and holds its
//! answers until the sync (`submit_durable`); the completion record names the intent's event
//! id in `intent`.
//!
//! `record` honours `audit.on_full`: `block` waits for queue space up to `block_timeout_ms` and
//! fails at once while the sink is failing; `drop` counts and discards when the queue is full.
//! The writer retries a failing sink forever (backing off to 2 s) and `is_healthy` turns true
//! again on the first successful write.
//!
//! # Layout
//!
//! - `record.rs`: the record's fields, canonical JSON, timestamps.
//! - `chain.rs`: sequence numbers and the HMAC chain; sealing and reopening lines.
//! - `subjects.rs`: subject pseudonyms and the capped per-statement collector.
//! - `keys.rs`: the chain and subject keys, from files or environment variables.
//! - `writer.rs`: `AuditHandle`, the bounded queue and the batching writer thread.
//! - `files.rs`: sinks (rotated files, stdout), file naming, recovering the chain's end.
//! - `table.rs`, `table_sink.rs`, `table_settings.rs`: the PostgreSQL-table sink a fleet of
//!   replicas shares; `table_read.rs` feeds verify and search from it (`--from-db`) and
//!   creates it.
//! - `verify.rs`, `search.rs`: `pgvakt audit verify` and `pgvakt audit search` (its output in
//!   `search_view.rs`). Every record names the fingerprints of the keys it was sealed and
//!   pseudonymised with (`keys::fingerprint`), so both say "not written with this key" (exit
//!   2) instead of "tampered" or "nothing found".
//! - `refusals.rs`: records of refusals before login and failed logins, rate-limited.
//! - `metrics.rs`: `AuditMetrics`.

pub mod chain;
pub mod files;
pub mod keys;
pub mod logins;
pub mod metrics;
pub mod record;
pub mod refusals;
pub mod search;
mod search_view;
pub mod settings;
pub mod subjects;
pub mod table;
pub mod table_read;
pub mod table_settings;
pub mod table_sink;
pub mod verify;
pub mod writer;

use std::time::Duration;

pub use metrics::AuditMetrics;
pub use record::{
    Access, Action, ColumnAccess, EventType, Outcome, Record, Statement, StatementClass,
    SubjectGroup, TableAccess,
};
pub use subjects::SubjectSet;
pub use writer::{AuditHandle, AuditUnavailable, Syncing};

use crate::audit::settings::{AuditConfig, AuditSink};
use chain::{Chain, ChainKey};
use files::{FileSink, RecoverError, Sink, StdoutSink};
use keys::{KeyError, Keys};
use subjects::SubjectKey;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Keys(Vec<KeyError>),
    #[error("audit.dir: required when audit.sink is file")]
    NoDir,
    #[error("audit.dir: cannot create or write in {}: {source}", path.display())]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("audit: cannot continue the chain: {0}")]
    Recover(#[from] RecoverError),
    #[error("audit.postgres: required when audit.sink is postgres")]
    NoTable,
    #[error("{0}")]
    Table(#[from] table_sink::TableSinkError),
    #[error("audit: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// Entry point: `Audit::start`.
pub struct Audit;

impl Audit {
    /// Load the keys, find where the chain ended (file sink) and start the writer thread. Does
    /// blocking file IO; call it at start-up.
    pub fn start(cfg: &AuditConfig, metrics: &AuditMetrics) -> Result<AuditHandle, AuditError> {
        let keys = Keys::load(cfg).map_err(AuditError::Keys)?;
        let chain_key = ChainKey::new(&keys.chain);
        let (sink, chain): (Box<dyn Sink>, Chain) = match cfg.sink {
            AuditSink::File => {
                let dir = cfg.dir.clone().ok_or(AuditError::NoDir)?;
                std::fs::create_dir_all(&dir).map_err(|source| AuditError::Dir {
                    path: dir.clone(),
                    source,
                })?;
                let chain = match files::recover(&dir)? {
                    Some((seq, mac)) => Chain::resume(chain_key, seq, mac),
                    None => Chain::genesis(chain_key),
                };
                let rotate_after =
                    (cfg.rotate_seconds > 0).then(|| Duration::from_secs(cfg.rotate_seconds));
                let mut sink = FileSink::new(dir.clone(), cfg.rotate_bytes, rotate_after);
                // Open the first file now, so an unwritable directory stops the start instead of
                // the first personal-data read; the first batch goes into this same file.
                sink.write_batch(chain.next_seq, b"")
                    .map_err(|source| AuditError::Dir { path: dir, source })?;
                (Box::new(sink), chain)
            }
            AuditSink::Stdout => (Box::new(StdoutSink), Chain::genesis(chain_key)),
            AuditSink::Postgres => {
                let table = cfg.postgres.as_ref().ok_or(AuditError::NoTable)?;
                let sink = table_sink::TableSink::new(table)?;
                tracing::info!(audit.table = %table.table, audit.replica = sink.replica(), "audit records go to a PostgreSQL table");
                // Where this replica's chain ended is read from the table by the writer.
                (Box::new(sink), Chain::genesis(chain_key))
            }
        };
        Self::start_with(cfg, sink, chain, SubjectKey::new(&keys.subject), metrics)
    }

    pub(crate) fn start_with(
        cfg: &AuditConfig,
        sink: Box<dyn Sink>,
        chain: Chain,
        subject_key: SubjectKey,
        metrics: &AuditMetrics,
    ) -> Result<AuditHandle, AuditError> {
        let settings = writer::Settings {
            on_full: cfg.on_full,
            block_timeout: Duration::from_millis(cfg.block_timeout_ms),
            capacity: cfg.queue_capacity,
            max_subjects: cfg.max_subjects,
            durability: cfg.durability,
            chain_from_sink: cfg.sink == AuditSink::Postgres,
        };
        writer::spawn(sink, chain, settings, subject_key, metrics.clone())
            .map_err(AuditError::Thread)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_keys;
#[cfg(test)]
mod tests_writer;
