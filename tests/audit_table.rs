//! The PostgreSQL-table audit sink: a fleet of pgvakt instances (replicas) writes one table,
//! each with its own HMAC chain, and `audit search`/`audit verify --from-db` answer from it.
//! The durability promise holds as with files: a personal-data read is forwarded only after its
//! intent is committed in the audit database, reads are refused while it is down, and the
//! chain continues intact when it returns.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::PgvaktProcess;
use common::{sqlstate, Env, EnvOptions};
use nix::sys::signal::Signal;
use pgvakt::cluster::{Cluster, ClusterOptions};
use serde_json::Value;

const WRITER_PASSWORD: &str = "writer-secret";
const DPO_PASSWORD: &str = "dpo-secret";

/// A separate PostgreSQL for the audit table, set up as an operator would: a database, a login
/// for pgvakt and one for the DPO, then `pgvakt audit install-table`.
struct AuditDb {
    cluster: Cluster,
    /// Keys and the writer's password file.
    dir: tempfile::TempDir,
}

impl AuditDb {
    async fn start() -> AuditDb {
        let cluster = Cluster::start_async(ClusterOptions::default())
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
        let db = AuditDb { cluster, dir };
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
    fn yaml(&self, replica: &str) -> String {
        let d = self.dir.path();
        format!(
            "audit:\n  sink: postgres\n  chain_key_file: {}\n  subject_key_file: {}\n  block_timeout_ms: 500\n  postgres:\n    dsn: \"host=127.0.0.1 port={} dbname=audit user=pgvakt_audit_writer\"\n    password_file: {}\n    tls: disable\n    replica: {replica}\n    timeout_ms: 2000\n",
            d.join("chain.key").display(),
            d.join("subject.key").display(),
            self.cluster.port(),
            d.join("writer-password").display(),
        )
    }

    fn dpo_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=audit user=dpo",
            self.cluster.port()
        )
    }

    /// Every record in the table, with its replica.
    async fn records(&self) -> Vec<(String, Value)> {
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

    fn search(&self, args: &[&str]) -> (i32, String) {
        let dsn = self.dpo_dsn();
        let key = self.dir.path().join("subject.key");
        let mut all = vec!["search", "--from-db", &dsn, "--db-tls", "disable"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--key-file", key.to_str().expect("utf-8 path")]);
        tool(&all)
    }

    fn verify(&self) -> (i32, String) {
        let dsn = self.dpo_dsn();
        let key = self.dir.path().join("chain.key");
        tool(&[
            "verify",
            "--from-db",
            &dsn,
            "--db-tls",
            "disable",
            "--key-file",
            key.to_str().expect("utf-8 path"),
        ])
    }
}

/// `pgvakt audit ARGS` as the DPO (PGPASSWORD); exit status and all output.
fn tool(args: &[&str]) -> (i32, String) {
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

async fn connect(port: u16, env: &Env, user: &str, app: &str) -> tokio_postgres::Client {
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

fn of<'a>(recs: &'a [(String, Value)], event: &str, app: &str) -> Vec<&'a Value> {
    recs.iter()
        .map(|(_, r)| r)
        .filter(|r| r["event"] == event && r["application_name"] == app)
        .collect()
}

#[tokio::test]
async fn a_sessions_records_land_in_the_table_and_the_tools_answer_from_it() {
    let db = AuditDb::start().await;
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: db.yaml("solo"),
        ..Default::default()
    })
    .await;
    let c = connect(env.proxy_port(), &env, "secretary", "dpo-story").await;
    c.simple_query("SELECT first_name, email FROM contacts WHERE id = 7")
        .await
        .expect("read");
    // before_release: the intent was committed in the audit database before the rows came.
    let recs = db.records().await;
    let intents = of(&recs, "statement_intent", "dpo-story");
    assert_eq!(intents.len(), 1, "{recs:?}");
    assert_eq!(intents[0]["user"], "secretary");
    assert!(recs.iter().all(|(replica, _)| replica == "solo"));

    let deadline = Instant::now() + Duration::from_secs(10);
    while of(&db.records().await, "statement_read", "dpo-story").is_empty() {
        assert!(Instant::now() < deadline, "the completion record arrives");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, text) = db.search(&["--subject", "7", "--format", "json"]);
    assert_eq!(code, 0, "{text}");
    let hits: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        hits.iter().any(|h| h["event"] == "statement_read"
            && h["user"] == "secretary"
            && h["application_name"] == "dpo-story"
            && h["match"] == "yes"),
        "{text}"
    );
    let (code, text) = db.search(&["--subject", "8", "--format", "json"]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("dpo-story"), "person 8 was not read: {text}");
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replica solo: OK"), "{text}");

    // The proxy's role can add records, and read only what continues its chain.
    let mut writer = db.cluster.superuser_config("audit");
    writer.user("pgvakt_audit_writer").password(WRITER_PASSWORD);
    let (w, conn) = writer.connect(tokio_postgres::NoTls).await.expect("writer");
    tokio::spawn(conn);
    for sql in [
        "UPDATE pgvakt_audit.records SET record = '{}'",
        "DELETE FROM pgvakt_audit.records",
        "TRUNCATE pgvakt_audit.records",
        "SELECT record FROM pgvakt_audit.records",
    ] {
        let e = w.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
    }
    w.simple_query("SELECT max(seq) FROM pgvakt_audit.records WHERE replica = 'solo'")
        .await
        .expect("the writer reads its chain's end");

    // An edited row is found, with its sequence number.
    let su = db.cluster.connect("audit").await.expect("superuser");
    let seq: i64 = su
        .query_one(
            "UPDATE pgvakt_audit.records SET record = replace(record, 'secretary', 'nobody') \
             WHERE seq = (SELECT min(seq) FROM pgvakt_audit.records \
                          WHERE record LIKE '%\"statement_read\"%') RETURNING seq",
            &[],
        )
        .await
        .expect("tamper")
        .get(0);
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("FAILED at seq {seq}")), "{text}");
}

fn process_yaml(env: &Env, dir: &Path, audit: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_one_table_and_verify_checks_each_chain() {
    let db = AuditDb::start().await;
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        ..Default::default()
    })
    .await;
    let (d1, d2, d3) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let yaml1 = process_yaml(&env, d1.path(), &db.yaml("r1"));
    let mut r1 = PgvaktProcess::start(d1.path(), &yaml1).await;
    let r2 = PgvaktProcess::start(d2.path(), &process_yaml(&env, d2.path(), &db.yaml("r2"))).await;
    for (proxy, app) in [(&r1, "via-r1"), (&r2, "via-r2")] {
        let c = connect(proxy.addr.port(), &env, "secretary", app).await;
        c.query("SELECT first_name FROM contacts WHERE id = $1", &[&3i64])
            .await
            .expect("read");
    }
    // A restarted replica continues its own chain from the table.
    r1.signal(Signal::SIGTERM);
    assert_eq!(r1.wait(Duration::from_secs(20)).await.code(), Some(0));
    let r1 = PgvaktProcess::start(d1.path(), &yaml1).await;
    let c = connect(r1.addr.port(), &env, "secretary", "via-r1-again").await;
    c.simple_query("SELECT email FROM contacts WHERE id = 3")
        .await
        .expect("read after restart");
    drop(c);

    // A third instance configured with r2's name cannot write into r2's chain: it starts
    // unready and refuses personal-data reads.
    let clash =
        PgvaktProcess::start(d3.path(), &process_yaml(&env, d3.path(), &db.yaml("r2"))).await;
    let ready = common::http_get(clash.metrics_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let c = connect(clash.addr.port(), &env, "secretary", "via-clash").await;
    let e = c
        .simple_query("SELECT email FROM contacts WHERE id = 3")
        .await
        .expect_err("no read without a record");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    drop(c);
    drop(clash);

    for proxy in [&r1, &r2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let recs = db.records().await;
            let done = ["via-r1", "via-r2", "via-r1-again"]
                .iter()
                .all(|app| !of(&recs, "statement_read", app).is_empty());
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "completion records: {recs:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready = common::http_get(proxy.metrics_addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    }
    let recs = db.records().await;
    let replica_of = |app: &str| -> Vec<&str> {
        recs.iter()
            .filter(|(_, r)| r["application_name"] == app)
            .map(|(replica, _)| replica.as_str())
            .collect()
    };
    assert!(replica_of("via-r1").iter().all(|r| *r == "r1"));
    assert!(replica_of("via-r1-again").iter().all(|r| *r == "r1"));
    assert!(replica_of("via-r2").iter().all(|r| *r == "r2"));
    assert!(replica_of("via-clash").is_empty(), "{recs:?}");

    // One place answers for the fleet: person 3 was read through both replicas.
    let (code, text) = db.search(&[
        "--subject",
        "3",
        "--event",
        "statement_read",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{text}");
    let apps: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|h| h["application_name"].as_str().map(str::to_owned))
        .collect();
    for app in ["via-r1", "via-r2", "via-r1-again"] {
        assert!(apps.iter().any(|a| a == app), "{app} missing: {text}");
    }
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("replica r1: OK")
            && text.contains("replica r2: OK")
            && text.contains("2 replicas"),
        "{text}"
    );

    // A record removed from the middle of one replica's chain is named.
    let su = db.cluster.connect("audit").await.expect("superuser");
    su.batch_execute("DELETE FROM pgvakt_audit.records WHERE replica = 'r2' AND seq = 2")
        .await
        .expect("remove");
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("replica r1: OK"), "{text}");
    assert!(text.contains("record 2 is missing"), "{text}");
}

/// Reads of contacts until `stop`, alternating the simple and the extended protocol; returns
/// (reads received, reads refused).
async fn read_until(client: tokio_postgres::Client, n: i64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = 1 + (i + n) % 50;
        let r = if i % 2 == 0 {
            client
                .simple_query(&format!(
                    "SELECT first_name, email FROM contacts WHERE id = {id}"
                ))
                .await
                .map(|_| ())
        } else {
            client
                .query(
                    "SELECT first_name, email FROM contacts WHERE id = $1",
                    &[&id],
                )
                .await
                .map(|_| ())
        };
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(sqlstate(&e), "42501", "only audit refusals: {e}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (ok, refused)
}

async fn wait_ready(env: &Env, want: bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = common::http_get(env.server().metrics_addr, "/readyz").await;
        if r.starts_with("HTTP/1.1 200") == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never became {want}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_database_restarted_under_load_blocks_reads_then_recovers_with_the_chain_intact()
{
    let mut db = AuditDb::start().await;
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(50),
        extra_yaml: db.yaml("loaded"),
        ..Default::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (n, user) in ["secretary", "admin", "secretary"].iter().enumerate() {
        let app = format!("load-{n}");
        let c = connect(env.proxy_port(), &env, user, &app).await;
        clients.push((app, tokio::spawn(read_until(c, n as i64, stop.clone()))));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The sink's backend is terminated: the writer reconnects and goes on.
    let su = db.cluster.connect("audit").await.expect("superuser");
    let killed: i64 = su
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'pgvakt-audit') t",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    drop(su);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The audit database goes down: not ready, personal-data reads refused, others go on.
    let mut cluster = db.cluster;
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_server().expect("stop the audit database");
        cluster
    })
    .await
    .expect("stop");
    wait_ready(&env, false, Duration::from_secs(10)).await;
    let probe = connect(env.proxy_port(), &env, "secretary", "probe").await;
    let e = probe
        .simple_query("SELECT email FROM contacts WHERE id = 1")
        .await
        .expect_err("no read without a record");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(common::message(&e).contains("audit trail"), "{e}");
    probe
        .simple_query("SELECT 1")
        .await
        .expect("no personal data");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // It comes back (same port): pgvakt recovers by itself.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server().expect("start the audit database");
        cluster
    })
    .await
    .expect("start");
    db.cluster = cluster;
    wait_ready(&env, true, Duration::from_secs(20)).await;
    probe
        .simple_query("SELECT email FROM contacts WHERE id = 1")
        .await
        .expect("reads resume");
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut received = HashMap::new();
    let mut refused = 0;
    for (app, task) in clients {
        let (ok, no) = task.await.expect("client");
        received.insert(app, ok);
        refused += no;
    }
    assert!(refused > 0, "the outage was felt: {received:?}");
    assert!(
        received.values().all(|n| *n > 10),
        "the load ran: {received:?}"
    );

    // Every read a client received has its intent in the table.
    let recs = db.records().await;
    for (app, n) in &received {
        let intents = of(&recs, "statement_intent", app).len() as u64;
        assert!(
            intents >= *n,
            "{app}: {intents} intents for {n} reads received"
        );
    }
    let metrics = env.metrics().await;
    assert!(
        common::metric(&metrics, "pgvakt_audit_write_failures_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "pgvakt_audit_statements_refused_total") >= 1.0,
        "{metrics}"
    );
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replica loaded: OK"), "{text}");
}
