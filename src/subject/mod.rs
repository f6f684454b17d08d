//! Data-subject rights from the data map: `pgvakt subject export` (GDPR Art. 15 and 20) and
//! `pgvakt subject erase` (Art. 17). Both follow the policy's inventory: every table whose
//! `subject_key` refers to the subject type (`contacts.id`, `activities.contact_id`,
//! `consents.contact_id`, ...) holds part of a person's data.
//!
//! They are DPO tools and connect with a connection string of the DPO's choosing. Each records
//! itself in the audit trail (`trail.rs`: who, which subject by pseudonym, counts per table,
//! never values) whether it connects to pgvakt or straight to PostgreSQL; pointed at pgvakt as
//! the DPO's login, every row they read or change is also a statement record under the
//! subject's pseudonym, with `application_name` naming the command.

pub mod erase;
pub mod export;
mod html;
mod plan;
mod recipients;
pub mod retention;
pub mod trail;
mod zip;

use std::path::{Path, PathBuf};

pub use plan::{Plan, PlanColumn, PlanRetention, PlanTable};

/// Everything that can stop a subject command.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error("policy: {0}")]
    Policy(String),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("{0}")]
    Database(String),
    #[error("audit trail: {0}")]
    Audit(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Plan(String),
    #[error("erasure check failed, nothing was changed: {0}")]
    Check(String),
}

impl SubjectError {
    /// What kind of failure, for audit records (the message can quote the subject's id).
    pub fn kind(&self) -> &'static str {
        match self {
            SubjectError::Policy(_) => "policy",
            SubjectError::Connect(_) => "connecting",
            SubjectError::Database(_) => "database",
            SubjectError::Audit(_) => "audit trail",
            SubjectError::Io(_) => "writing the output",
            SubjectError::Plan(_) => "plan",
            SubjectError::Check(_) => "erasure check",
        }
    }
}

/// Options every subject command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Database to work on (libpq connection string): pgvakt as the DPO's login, so every read
    /// and change is audited, or PostgreSQL itself. TLS unless `sslmode=disable`.
    #[arg(long)]
    pub upstream: String,
    /// Verify the server's certificate against these CA certificates (PEM). Without it, TLS is
    /// encrypted but not verified, as libpq's `sslmode=require`.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Policy files or directories: the inventory says where subjects' data lives.
    #[arg(long, default_value = "policies")]
    pub policy: Vec<PathBuf>,
    /// The subject type: the inventory table holding the subjects (default: the one table
    /// with a subject_key of its own, e.g. `contacts`).
    #[arg(long = "type")]
    pub subject_type: Option<String>,
}

/// Connects as the DPO asked; the command's name goes into `application_name`, which audit
/// records carry.
pub async fn connect(
    c: &Connection,
    application: &str,
) -> Result<tokio_postgres::Client, SubjectError> {
    let mut config: tokio_postgres::Config = c
        .upstream
        .parse()
        .map_err(|e: tokio_postgres::Error| SubjectError::Connect(crate::cause::chain(&e)))?;
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    let message = |e: tokio_postgres::Error| {
        SubjectError::Connect(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => crate::cause::chain(&e),
        })
    };
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(message)?;
        tokio::spawn(conn);
        return Ok(client);
    }
    let tls = crate::tls::tool_client_config(c.ca_file.as_deref())
        .map_err(|e| SubjectError::Connect(e.to_string()))?;
    let (client, conn) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
            (*tls).clone(),
        ))
        .await
        .map_err(message)?;
    tokio::spawn(conn);
    Ok(client)
}

/// The policy, loaded and validated.
pub fn load_policy(paths: &[PathBuf]) -> Result<crate::policy::PolicySet, SubjectError> {
    crate::policy::load(paths).map_err(|e| SubjectError::Policy(e.to_string()))
}

/// Write `bytes` to `path` atomically enough for a report: a temporary name, then rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SubjectError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| SubjectError::Io(format!("{}: {e}", path.display())))
}
