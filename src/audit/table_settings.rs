//! The `audit.postgres:` section of the configuration: where the PostgreSQL-table sink writes.

use std::path::PathBuf;

use serde::Deserialize;

/// TLS towards the audit database. There is no `require` (encryption without authenticating
/// the server): the records leave the host, and a server that is not checked could be anyone.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TableTls {
    /// Plain TCP or a Unix socket (loopback, a private link).
    Disable,
    /// TLS with the server certificate and host name checked against `ca_file`. The default.
    #[default]
    VerifyFull,
}

/// The audit table a fleet of pgvakt instances (replicas) writes into, each with its own chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTableConfig {
    /// Connection string of the audit database (libpq key/value or URL form), e.g.
    /// `host=audit-db dbname=audit user=pgvakt_audit_writer`. Required. Give the password
    /// through `password_file` or `password_env` rather than here.
    pub dsn: String,
    /// File holding the password (first line); takes precedence over the variable and over a
    /// password in `dsn`. Default none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password, used when set and `password_file` is not.
    /// Default `PGVAKT_AUDIT_DB_PASSWORD`.
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// `verify-full` (default) or `disable`.
    #[serde(default)]
    pub tls: TableTls,
    /// CA bundle (PEM) for `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The table, `schema.table`. Default `pgvakt_audit.records` (create it with
    /// `pgvakt audit install-table`).
    #[serde(default = "default_table")]
    pub table: String,
    /// This instance's name in the table's `replica` column; each replica keeps its own chain.
    /// Must be unique in the fleet and stable across restarts (a StatefulSet pod name, a host
    /// name). Default: the host name.
    #[serde(default)]
    pub replica: Option<String>,
    /// Connect timeout, and the longest one batch insert may take before the sink counts as
    /// failing, in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_password_env() -> String {
    "PGVAKT_AUDIT_DB_PASSWORD".into()
}
fn default_table() -> String {
    "pgvakt_audit.records".into()
}
fn default_timeout_ms() -> u64 {
    5000
}

impl AuditTableConfig {
    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        if let Err(e) = self.dsn.parse::<tokio_postgres::Config>() {
            problems.push(format!("audit.postgres.dsn: not a connection string: {e}"));
        }
        if let Err(e) = super::table::TableName::parse(&self.table) {
            problems.push(format!("audit.postgres.table: {e}"));
        }
        if self.tls == TableTls::VerifyFull && self.ca_file.is_none() {
            problems.push(
                "audit.postgres.ca_file: required when audit.postgres.tls is verify-full".into(),
            );
        }
        if let Some(r) = &self.replica {
            if r.is_empty() || r.len() > 200 || r.chars().any(char::is_control) {
                problems.push(
                    "audit.postgres.replica: 1 to 200 characters, no control characters".into(),
                );
            }
        }
        if self.timeout_ms == 0 {
            problems.push("audit.postgres.timeout_ms: must be at least 1".into());
        }
    }

    /// `replica`, or the host name.
    pub fn replica_name(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "pgvakt".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> AuditTableConfig {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn defaults_are_the_safe_ones_and_mistakes_are_all_reported() {
        let ok = parse("dsn: \"host=db user=w\"\nca_file: ca.pem\n");
        assert_eq!(ok.tls, TableTls::VerifyFull);
        assert_eq!(ok.table, "pgvakt_audit.records");
        let mut problems = Vec::new();
        ok.problems(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");

        let bad = parse("dsn: \"host=db port=notaport\"\ntable: records\nreplica: \"\"\n");
        let mut problems = Vec::new();
        bad.problems(&mut problems);
        let text = problems.join("\n");
        for field in [
            "audit.postgres.dsn",
            "audit.postgres.table",
            "audit.postgres.ca_file",
            "audit.postgres.replica",
        ] {
            assert!(text.contains(field), "{field} not reported: {text}");
        }
    }
}
