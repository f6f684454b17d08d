//! Who tried to get in: failed logins and connections refused before login are recorded with
//! the user, database and client address as fields (so `audit search --user X --event
//! login_failed` finds them) and logged at `warn` with the same fields, and a flood of refused
//! connections leaves one record per address and reason, not one per attempt.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::config::SslMode;
use tokio_postgres::Config as PgConfig;

use crate::common::process::PgvaktProcess;
use crate::common::{self, Env};

/// The binary in front of the demo CRM with the demo policy and an audit trail under `dir`.
async fn start(env: &Env, dir: &Path) -> PgvaktProcess {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: admin\n  service_password_file: {}\n  service_database: crm\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\npolicy:\n  paths: [{}]\n  watch_interval_ms: 0\nlog:\n  level: info\n  format: json\n{}",
        env.cluster.port(),
        env.dir.path().join("service-password").display(),
        env.certs.server_cert.display(),
        env.certs.server_key.display(),
        policy.display(),
        common::audit_yaml(dir),
    );
    PgvaktProcess::start(dir, &yaml).await
}

/// Client settings for the binary on `port`, TLS required unless `mode` says otherwise.
fn client(port: u16, user: &str, password: &str, mode: SslMode) -> PgConfig {
    let mut c = PgConfig::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("crm")
        .ssl_mode(mode);
    c
}

/// Every record of the audit trail under `dir`.
fn records(dir: &Path) -> Vec<Value> {
    common::trail::all_records(&dir.join("audit"))
}

async fn wait_records(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let r = records(dir);
        if pred(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", records(dir));
}

/// The next `warn` log line with this message.
async fn warn_line(proxy: &mut PgvaktProcess, message: &str) -> Value {
    let line = proxy.log_line(message).await;
    assert_eq!(line["level"], "WARN", "{line}");
    line["fields"].clone()
}

#[tokio::test]
async fn failed_logins_and_refused_connections_name_who_and_from_where() {
    let env = Env::start_demo(20).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = start(&env, dir.path()).await;
    let port = proxy.addr.port();

    // A wrong password.
    let cfg = client(port, "secretary", "not the password", SslMode::Require);
    let err = cfg.connect(env.tls()).await.err().expect("login fails");
    assert_eq!(common::sqlstate(&err), "28P01", "{err}");
    let log = warn_line(&mut proxy, "login failed").await;
    assert_eq!(log["user"], "secretary");
    assert_eq!(log["database"], "crm");
    assert_eq!(log["event"], "login_failed");
    assert!(log["client.addr"]
        .as_str()
        .unwrap_or_default()
        .starts_with("127.0.0.1:"));
    let recs = wait_records(dir.path(), "login_failed", |r| {
        r.iter().any(|r| r["event"] == "login_failed")
    })
    .await;
    let failed = recs.iter().find(|r| r["event"] == "login_failed").unwrap();
    assert_eq!(failed["user"], "secretary");
    assert_eq!(failed["database"], "crm");
    assert_eq!(failed["outcome"], "error");
    assert_eq!(failed["sqlstate"], "28P01", "PostgreSQL's own SQLSTATE");
    assert_eq!(failed["client_addr"], log["client.addr"]);
    assert!(failed["tls_version"].as_str().is_some(), "{failed}");

    let search = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args([
            "audit",
            "search",
            "--user",
            "secretary",
            "--event",
            "login_failed",
        ])
        .arg(dir.path().join("audit"))
        .output()
        .expect("search");
    let text = String::from_utf8_lossy(&search.stdout);
    assert!(search.status.success(), "{search:?}");
    assert!(
        text.contains("login_failed") && text.trim_end().ends_with("(1 records)"),
        "{text}"
    );

    // Plaintext, refused for missing TLS: recorded with the client address, logged at warn.
    let plain = client(port, "secretary", "secretary", SslMode::Disable);
    let err = plain
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(common::sqlstate(&err), "28000", "{err}");
    let log = warn_line(&mut proxy, "connection refused before login").await;
    assert_eq!(log["reason"], "tls_required");
    assert_eq!(log["sqlstate"], "28000");
    let recs = wait_records(dir.path(), "connection_refused", |r| {
        r.iter().any(|r| r["event"] == "connection_refused")
    })
    .await;
    let refused: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "connection_refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["sqlstate"], "28000");
    assert_eq!(refused[0]["client_addr"], log["client.addr"]);
    assert_eq!(refused[0]["outcome"], "refused");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tls_required: "),
        "{}",
        refused[0]
    );

    // A flood from the same address: each attempt is refused, the trail does not grow with it
    // (one summary follows when the minute is over).
    for _ in 0..30 {
        let err = plain
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("refused");
        assert_eq!(common::sqlstate(&err), "28000");
    }
    // A record written after the flood: everything before it is in the file.
    let ok = client(port, "secretary", "secretary", SslMode::Require);
    let (c, conn) = ok.connect(env.tls()).await.expect("login");
    tokio::spawn(conn);
    drop(c);
    let recs = wait_records(dir.path(), "the login after the flood", |r| {
        r.iter().any(|r| r["event"] == "disconnect")
    })
    .await;
    let refused = recs
        .iter()
        .filter(|r| r["event"] == "connection_refused")
        .count();
    assert_eq!(refused, 1, "the flood is counted, not recorded one by one");
    let metrics = common::http_get(proxy.metrics_addr, "/metrics").await;
    assert_eq!(
        common::metric(
            &metrics,
            "pgvakt_client_connections_refused_total{reason=\"tls_required\"}"
        ),
        31.0
    );
    assert!(common::schema::assert_audit_dir_valid(&dir.path().join("audit")) >= 4);
}
