//! The audit database for the table-sink tests: a separate PostgreSQL with the audit table
//! created as an operator would, and helpers that read it and run the tools against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pgvakt::cluster::{Cluster, ClusterOptions, ServerTls};
use serde_json::Value;

use super::Env;

pub const WRITER_PASSWORD: &str = "writer-secret";
pub const DPO_PASSWORD: &str = "dpo-secret";

/// A separate PostgreSQL for the audit table, set up as an operator would: a database, a login
/// for pgvakt and one for the DPO, then `pgvakt audit install-table`.
pub struct AuditDb {
    pub cluster: Cluster,
    /// Keys and the writer's password file.
    pub dir: tempfile::TempDir,
    /// With TLS: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
}

impl AuditDb {
    pub async fn start() -> AuditDb {
        Self::start_with(None).await
    }

    /// With `certs`, the audit database serves TLS with that server certificate.
    pub async fn start_with(certs: Option<&pgvakt::certs::GeneratedCerts>) -> AuditDb {
        let cluster = Cluster::start_async(ClusterOptions {
            tls: certs.map(|c| ServerTls {
                cert_pem: c.server_cert.clone(),
                key_pem: c.server_key.clone(),
            }),
            ..ClusterOptions::default()
        })
        .await
        .expect("start the audit database");
        let su = cluster.connect("postgres").await.expect("superuser");
        su.batch_execute("CREATE DATABASE audit")
            .await
            .expect("database");
        su.batch_execute(&format!(
            "CREATE ROLE pgvakt_audit_writer LOGIN PASSWORD '{WRITER_PASSWORD}'; \
             CREATE ROLE dpo LOGIN PASSWORD '{DPO_PASSWORD}';"
        ))
        .await
        .expect("database and roles");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("chain.key"),
            "a chain key that is long enough for the tests\n",
        )
        .expect("key");
        std::fs::write(
            dir.path().join("subject.key"),
            "a subject key, different and long enough too\n",
        )
        .expect("key");
        std::fs::write(
            dir.path().join("writer-password"),
            format!("{WRITER_PASSWORD}\n"),
        )
        .expect("password file");
        let db = AuditDb {
            cluster,
            dir,
            ca: certs.map(|c| c.ca_cert.clone()),
        };
        let su_dsn = db.cluster.dsn("postgres", "postgres", "audit");
        let (code, text) = tool(&[
            "install-table",
            "--from-db",
            &su_dsn,
            "--db-tls",
            "disable",
            "--writer",
            "pgvakt_audit_writer",
            "--reader",
            "dpo",
        ]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("pgvakt_audit.records ready"), "{text}");
        db
    }

    /// The `audit:` section of a replica writing into the table.
    pub fn yaml(&self, replica: &str) -> String {
        let d = self.dir.path();
        format!(
            "audit:\n  sink: postgres\n  chain_key_file: {}\n  subject_key_file: {}\n  block_timeout_ms: 500\n  postgres:\n    dsn: \"host=127.0.0.1 port={} dbname=audit user=pgvakt_audit_writer\"\n    password_file: {}\n{}    replica: {replica}\n    timeout_ms: 2000\n",
            d.join("chain.key").display(),
            d.join("subject.key").display(),
            self.cluster.port(),
            d.join("writer-password").display(),
            match &self.ca {
                Some(ca) => format!("    tls: verify-full\n    ca_file: {}\n", ca.display()),
                None => "    tls: disable\n".into(),
            },
        )
    }

    /// `--db-tls` and `--db-ca-file` for the tools.
    pub fn tls_args(&self) -> Vec<String> {
        match &self.ca {
            Some(ca) => vec![
                "--db-tls".into(),
                "verify-full".into(),
                "--db-ca-file".into(),
                ca.display().to_string(),
            ],
            None => vec!["--db-tls".into(), "disable".into()],
        }
    }

    pub fn dpo_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=audit user=dpo",
            self.cluster.port()
        )
    }

    /// Terminates the sink's connection to the audit database (as an idle timeout or a failover
    /// would); how many backends were terminated.
    pub async fn terminate_writer(&self) -> i64 {
        let su = self.cluster.connect("audit").await.expect("superuser");
        su.query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgvakt-audit') t",
            &[],
        )
        .await
        .expect("terminate")
        .get(0)
    }

    /// Every record in the table, with its replica.
    pub async fn records(&self) -> Vec<(String, Value)> {
        let c = self.cluster.connect("audit").await.expect("superuser");
        c.query(
            "SELECT replica, record FROM pgvakt_audit.records ORDER BY replica, seq",
            &[],
        )
        .await
        .expect("read the table")
        .iter()
        .map(|r| {
            let text: String = r.get(1);
            (r.get(0), serde_json::from_str(&text).expect("a record"))
        })
        .collect()
    }

    /// Every record in the table, checked against `deploy/audit-record.schema.json`; how many.
    pub async fn assert_records_valid(&self) -> usize {
        let schema = super::schema::audit_record_schema();
        let recs = self.records().await;
        let problems: Vec<String> = recs
            .iter()
            .flat_map(|(replica, r)| {
                schema
                    .errors(r)
                    .into_iter()
                    .map(move |e| format!("replica {replica} seq {}: {e}", r["seq"]))
            })
            .collect();
        assert!(
            problems.is_empty(),
            "records outside the schema:\n{}",
            problems.join("\n")
        );
        recs.len()
    }

    pub fn search(&self, args: &[&str]) -> (i32, String) {
        let dsn = self.dpo_dsn();
        let key = self.dir.path().join("subject.key");
        let tls = self.tls_args();
        let mut all = vec!["search", "--from-db", &dsn];
        all.extend(tls.iter().map(String::as_str));
        all.extend_from_slice(args);
        all.extend_from_slice(&["--key-file", key.to_str().expect("utf-8 path")]);
        tool(&all)
    }

    pub fn verify(&self) -> (i32, String) {
        let dsn = self.dpo_dsn();
        let key = self.dir.path().join("chain.key");
        let tls = self.tls_args();
        let mut all = vec!["verify", "--from-db", &dsn];
        all.extend(tls.iter().map(String::as_str));
        all.extend_from_slice(&["--key-file", key.to_str().expect("utf-8 path")]);
        tool(&all)
    }
}

/// `pgvakt audit ARGS` as the DPO (PGPASSWORD); exit status and all output.
pub fn tool(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .arg("audit")
        .args(args)
        .env("PGPASSWORD", DPO_PASSWORD)
        .output()
        .expect("run pgvakt audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub async fn connect(port: u16, env: &Env, user: &str, app: &str) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(user)
        .dbname("crm")
        .application_name(app)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = cfg.connect(env.tls()).await.expect("connect");
    tokio::spawn(conn);
    client
}

pub fn of<'a>(recs: &'a [(String, Value)], event: &str, app: &str) -> Vec<&'a Value> {
    recs.iter()
        .map(|(_, r)| r)
        .filter(|r| r["event"] == event && r["application_name"] == app)
        .collect()
}

pub fn process_yaml(env: &Env, dir: &Path, audit: &str) -> String {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    std::fs::write(dir.join("service-password"), "admin\n").expect("password");
    format!(
        "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: admin\n  service_password_file: {}\n  service_database: crm\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  shutdown_grace_ms: 500\npolicy:\n  paths: [{}]\n  watch_interval_ms: 0\nlog:\n  level: info\n  format: json\n{audit}",
        env.cluster.port(),
        dir.join("service-password").display(),
        env.certs.server_cert.display(),
        env.certs.server_key.display(),
        policy.display(),
    )
}
