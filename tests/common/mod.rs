//! Shared fixtures: a throwaway PostgreSQL, pgvakt started in-process in front of it, and
//! clients that connect through it with TLS.
#![allow(dead_code)]

pub mod answers;
pub mod audit_db;
pub mod catalog;
pub mod cli;
pub mod faults;
pub mod leaks;
pub mod notifications;
pub mod policy_files;
pub mod process;
pub mod raw;
pub mod reads;
pub mod rows;
pub mod schema;
pub mod trail;

use std::path::PathBuf;
use std::sync::Arc;

use pgvakt::certs::{self, GeneratedCerts};
use pgvakt::cluster::{Cluster, ClusterOptions};
use pgvakt::config::Config;
use pgvakt::enforce::Enforcer;
use pgvakt::listener::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::{Client, Config as PgConfig};
use tokio_postgres_rustls::MakeRustlsConnect;

pub struct Env {
    pub cluster: Cluster,
    pub server: Option<Server>,
    pub certs: GeneratedCerts,
    pub dir: tempfile::TempDir,
    /// The proxy's audit directory, if it writes one: its records are checked against
    /// `deploy/audit-record.schema.json` when the environment is dropped.
    pub audit_dir: Option<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let (Some(dir), false) = (&self.audit_dir, std::thread::panicking()) {
            schema::assert_audit_dir_valid(dir);
        }
    }
}

/// Extra YAML appended to the generated proxy configuration.
#[derive(Default, Clone)]
pub struct EnvOptions {
    pub extra_yaml: String,
    /// Install the demo CRM database with this many contacts and enforce `policies/crm.yaml`.
    pub demo_contacts: Option<usize>,
    /// With `demo_contacts`: enforce this policy file instead of `policies/crm.yaml`.
    pub policy_file: Option<PathBuf>,
    /// Policy file watch interval (0: reload only when asked).
    pub policy_watch_ms: u64,
    /// Further `postgresql.conf` settings of the throwaway server, e.g. `log_statement = all`.
    pub pg_settings: Vec<(String, String)>,
    /// Further lines of the proxy's `limits:` section, e.g. `  client_write_timeout_ms: 2000\n`.
    pub limits_yaml: String,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(EnvOptions::default()).await
    }

    pub async fn start_with(opts: EnvOptions) -> Env {
        let cluster = Cluster::start_async(ClusterOptions {
            settings: opts.pg_settings.clone(),
            ..Default::default()
        })
        .await
        .expect("start PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = certs::generate(dir.path(), "client").expect("certs");
        let mut extra = opts.extra_yaml.clone();
        if let Some(n) = opts.demo_contacts {
            pgvakt::demo::install(&cluster.superuser_config("postgres"), n)
                .await
                .expect("demo install");
            let pw = dir.path().join("service-password");
            std::fs::write(&pw, "admin\n").expect("password file");
            let policy = opts.policy_file.clone().unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml")
            });
            extra.push_str(&format!(
                "policy:\n  paths: [{}]\n  watch_interval_ms: {}\n",
                policy.display(),
                opts.policy_watch_ms
            ));
        }
        let yaml = format!(
            "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n{}tls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  max_message_bytes: 1048576\n  shutdown_grace_ms: 1000\n{}{}",
            cluster.port(),
            service_lines(&opts, dir.path()),
            certs.server_cert.display(),
            certs.server_key.display(),
            opts.limits_yaml,
            extra
        );
        let config = Config::parse(&yaml, "test.yaml").expect("config");
        let audit_dir = config.audit.as_ref().and_then(|a| a.dir.clone());
        install_pseudonym(&cluster, &config).await;
        install_state(&cluster, &config).await;
        let enforcer = Enforcer::load(&config).await.expect("policy and catalog");
        let server = Server::start(config, enforcer).await.expect("start pgvakt");
        Env {
            cluster,
            server: Some(server),
            certs,
            dir,
            audit_dir,
        }
    }

    /// The demo CRM with `contacts` people, enforcing `policies/crm.yaml`.
    pub async fn start_demo(contacts: usize) -> Env {
        Self::start_with(EnvOptions {
            demo_contacts: Some(contacts),
            ..Default::default()
        })
        .await
    }

    /// The demo with `contacts` people and the audit trail on, as the demo runs: plain SELECTs
    /// then carry hidden subject-key columns. The audit directory (`audit_dir`) is kept after
    /// the test, for a look at the records when it fails.
    pub async fn start_audited_demo(contacts: usize) -> Env {
        let audit = tempfile::tempdir().expect("tempdir").keep();
        Env::start_with(EnvOptions {
            demo_contacts: Some(contacts),
            extra_yaml: audit_yaml(&audit),
            ..Default::default()
        })
        .await
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn proxy_port(&self) -> u16 {
        self.server().addr.port()
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.server().metrics_addr)
    }

    /// Superuser connection straight to PostgreSQL, for setup and for comparisons.
    pub async fn direct(&self) -> Client {
        self.cluster
            .connect("postgres")
            .await
            .expect("direct connection")
    }

    /// Run `sql` on the demo database straight on PostgreSQL as the superuser: set-up the roles
    /// under test may not do. `what` names it if it fails.
    pub async fn setup_crm(&self, sql: &str, what: &str) {
        self.cluster
            .connect("crm")
            .await
            .expect("direct")
            .batch_execute(sql)
            .await
            .expect(what);
    }

    /// Create a login role with a SCRAM password.
    pub async fn create_user(&self, user: &str, password: &str, superuser: bool) {
        let su = if superuser { "SUPERUSER" } else { "" };
        self.direct()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN {su} PASSWORD '{password}'"
            ))
            .await
            .expect("create role");
    }

    /// Let `user` log in without a password (for hand-written protocol clients).
    pub async fn trust_user(&self, user: &str) {
        let hba = self.cluster.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("host all {user} 127.0.0.1/32 trust\n{old}"))
            .expect("write pg_hba.conf");
        self.direct()
            .await
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
    }

    pub fn pg_config(&self, user: &str, password: &str, db: &str) -> PgConfig {
        let mut c = PgConfig::new();
        c.host("127.0.0.1")
            .port(self.proxy_port())
            .user(user)
            .password(password)
            .dbname(db)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        c
    }

    pub fn tls(&self) -> MakeRustlsConnect {
        MakeRustlsConnect::new((*client_tls(&self.certs.ca_cert)).clone())
    }

    /// Connect through pgvakt with TLS; the connection task runs in the background.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = self
            .pg_config(user, password, db)
            .connect(self.tls())
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn metrics(&self) -> String {
        http_get(self.server().metrics_addr, "/metrics").await
    }

    /// The metrics once `done` holds of them. Counters that follow an event the client has
    /// already seen (an alert sent, a session ended) are updated a moment later by the task
    /// that handled it, so a test that asserts them at once races that task.
    pub async fn metrics_when(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let m = self.metrics().await;
            if done(&m) {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never happened:\n{m}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A second pgvakt with the same configuration in front of the same PostgreSQL, as a
    /// replica behind a load balancer (its own ports).
    pub async fn start_replica(&self) -> Server {
        let config = self.server().proxy.config.clone();
        let enforcer = Enforcer::load(&config).await.expect("policy and catalog");
        Server::start(config, enforcer)
            .await
            .expect("start replica")
    }

    /// Connect through the pgvakt listening on `port` with TLS.
    pub async fn connect_port(
        &self,
        port: u16,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = PgConfig::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(user)
            .password(password)
            .dbname(db)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, conn) = config.connect(self.tls()).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// `pgvakt install` as an operator runs it before starting pgvakt: when the policy configures a
/// pseudonym key, into the service database as the service user (the demo's `admin`, which owns
/// `crm`), or as the superuser when there is none.
pub async fn install_pseudonym(cluster: &Cluster, config: &Config) {
    if config.policy.paths.is_empty() {
        return;
    }
    // A policy that does not load is the enforcer's to report.
    let Ok(set) = pgvakt::policy::load(&config.policy.paths) else {
        return;
    };
    let Some(key) = set.pseudonym_key() else {
        return;
    };
    let up = &config.upstream;
    let mut pg = cluster.superuser_config(&up.service_database);
    if let (Some(user), Some(file)) = (&up.service_user, &up.service_password_file) {
        let password = std::fs::read_to_string(file).expect("service password");
        pg.user(user).password(password.trim_end());
    }
    let mut client = pgvakt::install::connect(&pg, None)
        .await
        .expect("connect for pgvakt install");
    pgvakt::install::install(&mut client, key)
        .await
        .expect("pgvakt install");
}

/// `pgvakt install`'s shared state (lockout counts) in the service database, owned by the
/// service user, when the configuration has one.
pub async fn install_state(cluster: &Cluster, config: &Config) {
    let up = &config.upstream;
    let (Some(user), Some(file)) = (&up.service_user, &up.service_password_file) else {
        return;
    };
    let mut pg = cluster.superuser_config(&up.service_database);
    let password = std::fs::read_to_string(file).expect("service password");
    pg.user(user).password(password.trim_end());
    let mut client = pgvakt::install::connect(&pg, None)
        .await
        .expect("connect for pgvakt install");
    pgvakt::install::install_state(&mut client, None)
        .await
        .expect("pgvakt install (shared state)");
}

fn service_lines(opts: &EnvOptions, dir: &std::path::Path) -> String {
    match opts.demo_contacts {
        Some(_) => format!(
            "  service_user: admin\n  service_password_file: {}\n  service_database: crm\n",
            dir.join("service-password").display()
        ),
        None => String::new(),
    }
}

/// rustls client configuration trusting the test CA.
pub fn client_tls(ca: &PathBuf) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Minimal HTTP GET returning the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// Value of a metric line `name{labels} value` (labels given exactly as exported), 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// SQLSTATE of a tokio-postgres error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// Primary message of a tokio-postgres error from the server (or its text otherwise).
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// An `audit:` configuration section writing under `dir`, with fresh keys there. Records are
/// given 5 s to reach the disk: tests run side by side, each with its own PostgreSQL, and one
/// fsync on a busy CI disk can take longer than production's 2 s default. Tests of a failing
/// sink set their own, shorter limit.
pub fn audit_yaml(dir: &std::path::Path) -> String {
    let chain = dir.join("chain.key");
    let subject = dir.join("subject.key");
    std::fs::write(&chain, "a chain key that is long enough for the tests\n").expect("key");
    std::fs::write(&subject, "a subject key, different and long enough too\n").expect("key");
    format!(
        "audit:\n  dir: {}\n  chain_key_file: {}\n  subject_key_file: {}\n  block_timeout_ms: 5000\n",
        dir.join("audit").display(),
        chain.display(),
        subject.display()
    )
}
