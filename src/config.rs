//! The proxy's configuration file: strict YAML, every field documented with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::access::console::{AdminConfig, CONSOLE_DATABASE};
pub use crate::access::settings::{LockoutConfig, Threshold};
pub use crate::audit::settings::{AuditConfig, AuditSink, Durability, OnFull};
pub use crate::audit::table_settings::{AuditTableConfig, TableTls};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid configuration:\n{}", .problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// Top level of `pgvakt.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to. Default `127.0.0.1:6432`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub upstream: UpstreamConfig,
    pub tls: ClientTlsConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Absent: no audit trail.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    #[serde(default)]
    pub log: LogConfig,
    /// Lockout after repeated failed logins; defaults in `LockoutConfig`.
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// The admin console (database `pgvakt`). Default: nobody may use it.
    #[serde(default)]
    pub admin: AdminConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6432))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP to PostgreSQL (suitable on loopback or a private link). The default.
    #[default]
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS with certificate and host name verification against `ca_file`.
    VerifyFull,
}

/// The PostgreSQL server behind the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name or IP address. Required.
    pub host: String,
    /// Port. Default 5432.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// `disable` (default), `require` or `verify-full`.
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// CA bundle (PEM) for `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the server certificate against; default `host`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Connect timeout in milliseconds. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Login the proxy uses for its own connection (catalog and role membership). Default none:
    /// then only the statically configured catalog snapshot, if any, is used.
    #[serde(default)]
    pub service_user: Option<String>,
    /// File holding the service user's password (first line). Takes precedence over the
    /// environment variable. Default none.
    #[serde(default)]
    pub service_password_file: Option<PathBuf>,
    /// Environment variable holding the service user's password. Default `PGVAKT_SERVICE_PASSWORD`.
    #[serde(default = "default_service_password_env")]
    pub service_password_env: String,
    /// Database the service connection uses for the catalog. Default `postgres`.
    #[serde(default = "default_service_database")]
    pub service_database: String,
}

fn default_pg_port() -> u16 {
    5432
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_service_password_env() -> String {
    "PGVAKT_SERVICE_PASSWORD".into()
}
fn default_service_database() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Every client must negotiate TLS; plaintext startups get FATAL 28000. The default.
    #[default]
    Required,
    /// Plaintext allowed (for local development only; logged loudly at start).
    Optional,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V13,
}

/// TLS between clients and the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// `required` (default) or `optional`.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// Server certificate chain (PEM). Required.
    pub cert_file: PathBuf,
    /// Private key (PEM). Required.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// Resource limits; each is answered with a proper error when hit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted from a client, in bytes. Default 64 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most concurrent client sessions. Default 4096. Also sizes the listen queue (see
    /// `listener::listen_backlog`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed from TCP accept to the end of authentication, ms. Default 60000, as
    /// PostgreSQL's `authentication_timeout`: under a burst of logins a session waits for CPU
    /// for its TLS handshake, and a shorter limit ends sessions PostgreSQL itself would serve.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// Close sessions idle (outside a transaction) for this long, ms. Default 0 (never).
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// End a session whose client accepts no result bytes for this long, ms (0: never). A client
    /// that stops reading would otherwise hold its session and PostgreSQL backend. Default 120000.
    #[serde(default = "default_client_write_timeout_ms")]
    pub client_write_timeout_ms: u64,
    /// On shutdown, how long sessions may finish their work before FATAL 57P01, ms. Default 10000.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Threads that do clients' TLS handshakes, apart from the threads that relay established
    /// sessions: a burst of new connections then costs its own CPU time instead of queueing
    /// ahead of running sessions' statements. Default: half the CPUs, at least 1. 0 runs
    /// handshakes on the session threads.
    #[serde(default = "default_handshake_threads")]
    pub handshake_threads: usize,
}

fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_max_connections() -> usize {
    4096
}
fn default_startup_timeout_ms() -> u64 {
    60_000
}
fn default_client_write_timeout_ms() -> u64 {
    120_000
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

fn default_handshake_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message_bytes(),
            max_connections: default_max_connections(),
            startup_timeout_ms: default_startup_timeout_ms(),
            idle_timeout_ms: 0,
            client_write_timeout_ms: default_client_write_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            handshake_threads: default_handshake_threads(),
        }
    }
}

/// The HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address; default `127.0.0.1:9187`. Absent section: metrics still served there.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// Where policies come from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy files or directories. Default none: every user gets the default role, which sees
    /// no personal data.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Check the files for changes every this many ms and reload. Default 2000; 0 disables.
    #[serde(default = "default_watch_ms")]
    pub watch_interval_ms: u64,
}

fn default_watch_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `pgvakt=debug`. Default `info`; `RUST_LOG` overrides.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

impl Config {
    /// Read, parse and validate a configuration file. Relative paths inside are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Parse YAML text; errors carry the file name, line and column, and the field.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        serde_saphyr::from_str::<Config>(text).map_err(|e| {
            let location = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            // The parser's own text shows the offending lines; name the real file in it.
            let detail = crate::policy::diag::yaml_message(&e, true).replace("<input>", origin);
            ConfigError::Parse {
                path: origin.to_owned(),
                message: format!("{origin}{location}: {detail}"),
            }
        })
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert_file);
        fix(&mut self.tls.key_file);
        if let Some(p) = self.tls.client_ca_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.upstream.ca_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.upstream.service_password_file.as_mut() {
            fix(p);
        }
        for p in self.policy.paths.iter_mut() {
            fix(p);
        }
        if let Some(audit) = self.audit.as_mut() {
            let (table_password, table_ca) = match audit.postgres.as_mut() {
                Some(t) => (t.password_file.as_mut(), t.ca_file.as_mut()),
                None => (None, None),
            };
            for p in [
                audit.dir.as_mut(),
                audit.chain_key_file.as_mut(),
                audit.subject_key_file.as_mut(),
                table_password,
                table_ca,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
    }

    /// Semantic checks; all problems are reported together.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.upstream.host.trim().is_empty() {
            problems.push("upstream.host: must not be empty".to_owned());
        }
        if self.upstream.tls == UpstreamTlsMode::VerifyFull && self.upstream.ca_file.is_none() {
            problems.push("upstream.ca_file: required when upstream.tls is verify-full".into());
        }
        for (field, p) in [
            ("tls.cert_file", Some(&self.tls.cert_file)),
            ("tls.key_file", Some(&self.tls.key_file)),
            ("tls.client_ca_file", self.tls.client_ca_file.as_ref()),
            ("upstream.ca_file", self.upstream.ca_file.as_ref()),
        ] {
            if let Some(p) = p {
                if !p.is_file() {
                    problems.push(format!("{field}: file {} does not exist", p.display()));
                }
            }
        }
        for (i, p) in self.policy.paths.iter().enumerate() {
            if !p.exists() {
                problems.push(format!("policy.paths[{i}]: {} does not exist", p.display()));
            }
        }
        if self.limits.max_message_bytes < 1024 {
            problems.push("limits.max_message_bytes: must be at least 1024".into());
        }
        if self.limits.max_connections == 0 {
            problems.push("limits.max_connections: must be at least 1".into());
        }
        // Port 0 means "any free port" (tests, the demo): two such listeners never collide.
        if self.listen == self.metrics.listen && self.listen.port() != 0 {
            problems.push("metrics.listen: must differ from listen".into());
        }
        if let Some(audit) = &self.audit {
            audit.problems(&mut problems);
        }
        self.lockout.problems(&mut problems);
        self.admin.problems(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "upstream:\n  host: 127.0.0.1\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n";

    #[test]
    fn defaults_apply() {
        let c = Config::parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(c.listen.port(), 6432);
        assert_eq!(c.upstream.port, 5432);
        assert_eq!(c.tls.mode, ClientTlsMode::Required);
        assert_eq!(c.limits.max_message_bytes, 64 << 20);
        assert_eq!(c.metrics.listen.port(), 9187);
    }

    #[test]
    fn the_admin_console_admits_nobody_unless_named() {
        let c = Config::parse(MINIMAL, "t.yaml").unwrap();
        assert!(!c.admin.allows("postgres") && !c.admin.allows(""));
        let text = format!("{MINIMAL}admin:\n  users: [ops]\n  auth_database: pgvakt\n");
        let c = Config::parse(&text, "t.yaml").unwrap();
        assert!(c.admin.allows("ops") && !c.admin.allows("OPS"));
        let err = c.validate("t.yaml").unwrap_err().to_string();
        assert!(
            err.contains("admin.auth_database: must be a PostgreSQL database"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_reported_with_line() {
        let text = format!("{MINIMAL}limits:\n  max_mesage_bytes: 10\n");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:7:3: "), "{err}");
        assert!(err.contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn validation_reports_everything() {
        let text = format!("{MINIMAL}upstream_x: 1\n");
        assert!(Config::parse(&text, "t.yaml").is_err());
        let mut c = Config::parse(MINIMAL, "t.yaml").unwrap();
        c.upstream.tls = UpstreamTlsMode::VerifyFull;
        c.limits.max_connections = 0;
        let err = c.validate("t.yaml").unwrap_err().to_string();
        assert!(err.contains("upstream.ca_file: required"), "{err}");
        assert!(
            err.contains("tls.cert_file: file c.pem does not exist"),
            "{err}"
        );
        assert!(err.contains("limits.max_connections"), "{err}");
    }

    #[test]
    fn audit_without_keys_is_a_configuration_error() {
        let text = format!(
            "{MINIMAL}audit:\n  dir: log\n  chain_key_env: PGVAKT_TEST_NO_SUCH_VAR_A\n  \
             subject_key_env: PGVAKT_TEST_NO_SUCH_VAR_B\n"
        );
        let c = Config::parse(&text, "t.yaml").unwrap();
        let audit = c.audit.as_ref().unwrap();
        assert_eq!(audit.on_full, OnFull::Block);
        assert_eq!(audit.max_subjects, 1000);
        let err = c.validate("t.yaml").unwrap_err().to_string();
        assert!(
            err.contains(
                "audit.chain_key_env: environment variable PGVAKT_TEST_NO_SUCH_VAR_A is not set"
            ),
            "{err}"
        );
        assert!(
            err.contains("audit.subject_key_env: environment variable PGVAKT_TEST_NO_SUCH_VAR_B"),
            "{err}"
        );
    }

    #[test]
    fn audit_keys_must_differ_and_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = "k".repeat(40);
        std::fs::write(dir.path().join("a.key"), &key).unwrap();
        std::fs::write(dir.path().join("b.key"), &key).unwrap();
        let path = dir.path().join("pgvakt.yaml");
        let body = "audit:\n  dir: log\n  chain_key_file: a.key\n  subject_key_file: b.key\n";
        std::fs::write(&path, format!("{MINIMAL}{body}")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("audit.subject_key: must differ from audit.chain_key"),
            "{err}"
        );
        std::fs::write(dir.path().join("b.key"), "s".repeat(40)).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(!err.contains("audit"), "{err}");
        let text = format!("{MINIMAL}audit:\n  file: audit.jsonl\n");
        assert!(
            Config::parse(&text, "t.yaml").is_err(),
            "audit.file is gone: dir replaces it"
        );
    }

    #[test]
    fn same_listen_address_is_refused_unless_both_pick_a_free_port() {
        let mut c = Config::parse(MINIMAL, "t.yaml").unwrap();
        c.metrics.listen = c.listen;
        let err = c.validate("t.yaml").unwrap_err().to_string();
        assert!(err.contains("metrics.listen: must differ"), "{err}");
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.metrics.listen = c.listen;
        let err = c.validate("t.yaml").unwrap_err().to_string();
        assert!(!err.contains("metrics.listen"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn duplicate_keys_are_reported_without_parser_api_advice() {
        let text =
            super::Config::parse("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", "pgvakt.yaml")
                .unwrap_err()
                .to_string();
        assert!(!text.contains("Options"), "{text}");
        assert!(
            text.contains("duplicate") && text.contains("listen"),
            "{text}"
        );
    }

    use super::Config;

    /// The shipped example must stay a valid configuration (files aside).
    #[test]
    fn deploy_example_parses() {
        let text = include_str!("../deploy/pgvakt.example.yaml");
        let cfg = Config::parse(text, "deploy/pgvakt.example.yaml").expect("example parses");
        assert_eq!(cfg.listen.port(), 6432);
        assert_eq!(cfg.limits.max_message_bytes, 64 << 20);
    }
}
