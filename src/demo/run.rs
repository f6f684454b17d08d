//! `pgvakt demo`: a throwaway PostgreSQL with the demo CRM, and pgvakt in front of it.
//!
//! [`start`] builds everything in one directory (the cluster, certificates, the proxy
//! configuration and the audit log path) and returns a [`DemoHandle`] with the real addresses, so
//! the CLI and the integration tests drive the same code. The configuration is written to a file
//! and read back with [`Config::load`] on purpose: the demo then exercises the same loading path
//! as `pgvakt run --config`, and the file shows users a working configuration. When the policy
//! has a pseudonym key, `pgvakt install` runs as the database owner before the proxy starts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::certs::{self, CertError};
use crate::cluster::{Cluster, ClusterError, ClusterOptions};
use crate::config::{Config, ConfigError};
use crate::enforce::{EnforceError, Enforcer};
use crate::listener::{Server, ServerError};

use super::{DemoError, DATABASE, LOGIN_ROLES};

/// The demo's service login; its password is its name, like every demo user's.
const SERVICE_USER: &str = "admin";
/// How often the demo checks its policy file for changes.
const POLICY_WATCH_MS: u64 = 2000;

/// Sessions still open at Ctrl-C get this long to finish: a demo should stop promptly.
const SHUTDOWN_GRACE_MS: u64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum DemoRunError {
    #[error("creating the demo directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting PostgreSQL: {0}")]
    Cluster(#[from] ClusterError),
    #[error("installing the demo data: {0}")]
    Install(#[from] DemoError),
    #[error("pgvakt install (the pseudonym key): {0}")]
    PseudonymInstall(#[from] crate::install::InstallError),
    #[error("generating certificates: {0}")]
    Certs(#[from] CertError),
    #[error(
        "policy file {0} not found (looked relative to the current directory and the source tree)"
    )]
    PolicyNotFound(PathBuf),
    #[error("demo configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("loading policy and catalog: {0}")]
    Enforce(#[from] EnforceError),
    #[error("starting pgvakt: {0}")]
    Server(#[from] ServerError),
    #[error("stopping PostgreSQL in a blocking task: {0}")]
    Join(String),
}

/// What to start. `DemoOptions::default()` matches the CLI defaults.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Address clients connect to. Default `127.0.0.1:6432`; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Metrics HTTP address. Default `127.0.0.1:9187`; port 0 picks a free one.
    pub metrics_listen: SocketAddr,
    /// Contacts to generate. Default [`super::DEFAULT_CONTACTS`].
    pub contacts: usize,
    /// Directory for the cluster, certificates, configuration and audit log; kept afterwards.
    /// Default: a temporary directory removed at shutdown.
    pub dir: Option<PathBuf>,
    /// Policy file. Default: `policies/crm.yaml` under the current directory, else under the
    /// source tree this binary was built from.
    pub policy: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            contacts: super::DEFAULT_CONTACTS,
            dir: None,
            policy: None,
        }
    }
}

/// A running demo. Call [`DemoHandle::shutdown`] to stop it; dropping it also stops
/// PostgreSQL (through [`Cluster`]'s drop) but does not drain the proxy's sessions.
pub struct DemoHandle {
    server: Server,
    cluster: Cluster,
    /// Held so the directory lives as long as the demo; `None` when the caller chose it.
    temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    /// Proxy address clients connect to.
    pub addr: SocketAddr,
    /// Metrics HTTP address.
    pub metrics_addr: SocketAddr,
    /// PostgreSQL's port (plain TCP, SCRAM).
    pub upstream_port: u16,
    pub config_path: PathBuf,
    pub audit_path: PathBuf,
    policy: PathBuf,
    /// The policy was given (`--policy`), not the repository's.
    own_policy: bool,
    /// Time from [`start`] being called to the proxy accepting connections.
    pub startup: Duration,
}

impl DemoHandle {
    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq connection string through the proxy for a demo user (password = user name).
    pub fn dsn(&self, user: &str, sslmode: &str) -> String {
        format!(
            "host={} port={} user={user} password={user} dbname={DATABASE} sslmode={sslmode}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// A libpq connection string straight to PostgreSQL as its superuser (not through pgvakt):
    /// for schema changes while trying a policy.
    pub fn superuser_dsn(&self) -> String {
        self.cluster
            .dsn(self.cluster.superuser(), self.cluster.password(), DATABASE)
    }

    /// The policy file the demo enforces (reloaded when it changes).
    pub fn policy_path(&self) -> &Path {
        &self.policy
    }

    /// The direct (unprotected) URL of the upstream database as the demo's admin.
    pub fn upstream_url(&self) -> String {
        format!(
            "postgresql://{SERVICE_USER}:{SERVICE_USER}@127.0.0.1:{}/{DATABASE}",
            self.upstream_port
        )
    }

    /// What the CLI prints once the demo is up.
    pub fn instructions(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pgvakt demo ready in {:.1} s on {}",
            self.startup.as_secs_f64(),
            self.addr
        );
        let _ = writeln!(out, "connect through pgvakt:");
        for user in LOGIN_ROLES {
            let _ = writeln!(out, "  psql \"{}\"", self.dsn(user, "require"));
        }
        let _ = writeln!(
            out,
            "audit log: {} (keys: {}/audit-*.key)",
            self.audit_path.display(),
            self.dir.display()
        );
        let _ = writeln!(out, "metrics: http://{}/metrics", self.metrics_addr);
        let _ = writeln!(out, "config: {}", self.config_path.display());
        if self.own_policy {
            let _ = writeln!(
                out,
                "policy: {} (edit it: changes are reloaded within {} s; `pgvakt policy check {}` says why one is not)",
                self.policy.display(),
                POLICY_WATCH_MS / 1000,
                self.policy.display()
            );
        } else {
            let _ = writeln!(
                out,
                "policy: {} (to try changes, start the demo with --policy on a copy)",
                self.policy.display()
            );
        }
        let _ = writeln!(out, "upstream: {}", self.upstream_url());
        let _ = writeln!(
            out,
            "superuser, straight to PostgreSQL for schema changes (pgvakt sees them within 30 s):\n  psql \"{}\"",
            self.superuser_dsn()
        );
        out
    }

    /// Drains the proxy, stops PostgreSQL and removes the directory unless the caller chose it.
    pub async fn shutdown(self) -> Result<(), DemoRunError> {
        let DemoHandle {
            server,
            cluster,
            temp,
            ..
        } = self;
        server.shutdown().await;
        // pg_ctl blocks for up to a few seconds.
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .map_err(|e| DemoRunError::Join(e.to_string()))??;
        drop(temp);
        Ok(())
    }
}

/// Starts PostgreSQL, installs the demo data and starts pgvakt in front of it.
pub async fn start(opts: DemoOptions) -> Result<DemoHandle, DemoRunError> {
    let started = Instant::now();
    let policy = match &opts.policy {
        // Absolute, so the configuration written into the demo directory finds it.
        Some(p) => std::fs::canonicalize(p).map_err(io_err("resolving", p))?,
        None => find_policy()?,
    };
    let (dir, temp) = demo_dir(opts.dir.as_deref())?;
    let cluster = start_database(&dir, temp.is_some(), &policy, opts.contacts).await?;
    let (config_path, audit_path) = write_config(&dir, &opts, &cluster, &policy)?;

    let config = Config::load(&config_path)?;
    let enforcer = Enforcer::load(&config).await?;
    let server = Server::start(config, enforcer).await?;
    Ok(DemoHandle {
        addr: server.addr,
        metrics_addr: server.metrics_addr,
        upstream_port: cluster.port(),
        server,
        cluster,
        temp,
        dir,
        config_path,
        audit_path,
        policy,
        own_policy: opts.policy.is_some(),
        startup: started.elapsed(),
    })
}

/// The demo directory: the one the user named, kept at exit, or a temporary one, removed when
/// the returned handle is dropped.
fn demo_dir(chosen: Option<&Path>) -> Result<(PathBuf, Option<TempDir>), DemoRunError> {
    Ok(match chosen {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
            let dir = std::fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
            allow_traverse(&dir)?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("pgvakt-demo-")
                .tempdir()
                .map_err(DemoRunError::TempDir)?;
            (temp.path().to_path_buf(), Some(temp))
        }
    })
}

/// PostgreSQL with the demo data and pgvakt's install in it, ready for the proxy.
async fn start_database(
    dir: &Path,
    temporary: bool,
    policy: &Path,
    contacts: usize,
) -> Result<Cluster, DemoRunError> {
    // In a temporary demo directory the cluster takes a temporary directory of its own: ours is
    // private to this user, and as root PostgreSQL runs as `postgres`, which could not enter it.
    let cluster = Cluster::start_async(ClusterOptions {
        dir: (!temporary).then(|| dir.join("postgres")),
        ..Default::default()
    })
    .await?;
    let summary = super::install(&cluster.superuser_config("postgres"), contacts).await?;
    tracing::info!(
        contacts = summary.rows.contacts,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "demo data installed"
    );
    install_pseudonym(&cluster, policy).await?;
    Ok(cluster)
}

/// Everything the proxy's configuration names (certificates, the service password, fresh audit
/// keys) and the configuration itself, written into `dir`; the configuration's path and the
/// audit log's.
fn write_config(
    dir: &Path,
    opts: &DemoOptions,
    cluster: &Cluster,
    policy: &Path,
) -> Result<(PathBuf, PathBuf), DemoRunError> {
    let certs = certs::generate(dir, "demo-client")?;
    let password_file = dir.join("service-password");
    write_file(&password_file, &format!("{SERVICE_USER}\n"))?;
    restrict(&password_file)?;
    let audit_path = dir.join("audit");
    // Fresh random keys per demo: the audit trail refuses to run without them.
    for name in ["audit-chain.key", "audit-subject.key"] {
        let key = format!(
            "{:032x}{:032x}\n",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        write_file(&dir.join(name), &key)?;
        restrict(&dir.join(name))?;
    }
    let config_path = dir.join("pgvakt.yaml");
    let yaml = config_yaml(&ConfigValues {
        listen: opts.listen,
        metrics_listen: opts.metrics_listen,
        upstream_port: cluster.port(),
        cert: &certs.server_cert,
        key: &certs.server_key,
        password_file: &password_file,
        policy,
        audit: &audit_path,
    });
    write_file(&config_path, &yaml)?;
    Ok((config_path, audit_path))
}

/// `pgvakt install` as the database owner, as an operator would run it: the state replicas
/// share (lockout counts), and the pseudonym key when the policy has one (e.g.
/// `PGVAKT_PSEUDONYM_KEY` set for `pgvakt demo`); without one the mask is unavailable and
/// statements needing it are refused.
async fn install_pseudonym(cluster: &Cluster, policy: &Path) -> Result<(), DemoRunError> {
    let mut owner = cluster.superuser_config(DATABASE);
    owner
        .user(SERVICE_USER)
        .password(SERVICE_USER)
        .application_name("pgvakt install");
    let mut client = crate::install::connect(&owner, None).await?;
    crate::install::install_state(&mut client, None).await?;
    // A policy that does not load is reported when the enforcer loads it.
    let Ok(set) = crate::policy::load(&[policy.to_path_buf()]) else {
        return Ok(());
    };
    let Some(key) = set.pseudonym_key() else {
        tracing::info!("no pseudonym key configured: pseudonym function not installed");
        return Ok(());
    };
    let report = crate::install::install(&mut client, key).await?;
    tracing::info!(key = %report.key_id, owner = %report.owner, "pseudonym key installed");
    Ok(())
}

struct ConfigValues<'a> {
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    upstream_port: u16,
    cert: &'a Path,
    key: &'a Path,
    password_file: &'a Path,
    policy: &'a Path,
    audit: &'a Path,
}

/// The proxy configuration as YAML. Paths are written as double-quoted YAML strings with JSON
/// escaping (valid YAML), so unusual directory names cannot break the file.
fn config_yaml(v: &ConfigValues<'_>) -> String {
    let q = |p: &Path| serde_json::Value::String(p.display().to_string()).to_string();
    format!(
        "# Written by `pgvakt demo`. Every field is described in deploy/pgvakt.example.yaml.\n\
         listen: {listen}\n\
         upstream:\n  host: 127.0.0.1\n  port: {port}\n  tls: disable\n  \
         service_user: {SERVICE_USER}\n  service_password_file: {password}\n  \
         service_database: {DATABASE}\n\
         tls:\n  mode: required\n  cert_file: {cert}\n  key_file: {key}\n\
         limits:\n  shutdown_grace_ms: {SHUTDOWN_GRACE_MS}\n\
         metrics:\n  listen: {metrics}\n\
         policy:\n  paths: [{policy}]\n  watch_interval_ms: {POLICY_WATCH_MS}\n\
         audit:\n  dir: {audit}\n  chain_key_file: audit-chain.key\n  \
         subject_key_file: audit-subject.key\n",
        listen = v.listen,
        port = v.upstream_port,
        password = q(v.password_file),
        cert = q(v.cert),
        key = q(v.key),
        metrics = v.metrics_listen,
        policy = q(v.policy),
        audit = q(v.audit),
    )
}

/// `policies/crm.yaml` relative to the current directory (the repository root when run through
/// `scripts/demo.sh`), else in the source tree the binary was built from.
fn find_policy() -> Result<PathBuf, DemoRunError> {
    let relative = Path::new("policies").join("crm.yaml");
    let candidates = [
        std::env::current_dir().ok().map(|d| d.join(&relative)),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(&relative)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or(DemoRunError::PolicyNotFound(relative))
}

/// As root, PostgreSQL runs as `postgres` and must pass through the chosen directory to reach its
/// own subdirectory; execute permission lets it do so without listing or reading our files.
fn allow_traverse(dir: &Path) -> Result<(), DemoRunError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(io_err("reading", dir))?
        .permissions()
        .mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
        .map_err(io_err("setting permissions of", dir))
}

fn restrict(path: &Path) -> Result<(), DemoRunError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("restricting", path))
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoRunError> {
    std::fs::write(path, text).map_err(io_err("writing", path))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DemoRunError {
    let path = path.to_path_buf();
    move |source| DemoRunError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_parses_with_odd_paths() {
        let odd = Path::new("/tmp/a dir: with \"quotes\"/x");
        let yaml = config_yaml(&ConfigValues {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            upstream_port: 5432,
            cert: odd,
            key: odd,
            password_file: odd,
            policy: odd,
            audit: odd,
        });
        let cfg = Config::parse(&yaml, "demo.yaml").unwrap();
        assert_eq!(cfg.tls.cert_file, odd);
        assert_eq!(cfg.policy.paths, vec![odd.to_path_buf()]);
        assert_eq!(cfg.upstream.service_user.as_deref(), Some("admin"));
        assert_eq!(cfg.upstream.service_database, "crm");
        let audit = cfg.audit.expect("audit section");
        assert_eq!(audit.dir.as_deref(), Some(odd));
        assert_eq!(
            audit.chain_key_file.as_deref(),
            Some(Path::new("audit-chain.key"))
        );
    }
}
