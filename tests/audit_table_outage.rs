//! The table sink's durability promise when the audit database fails: a personal-data read is
//! forwarded only after its intent is committed there, reads are refused while it is down or
//! cannot be authenticated, and the chain continues intact when it returns.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::audit_db::{connect, of, process_yaml, AuditDb};
use common::process::PgvaktProcess;
use common::reads::read_contact;
use common::{sqlstate, Env, EnvOptions};

/// Reads of contacts until `stop`, alternating the simple and the extended protocol; returns
/// (reads received, reads refused).
async fn read_until(client: tokio_postgres::Client, n: i64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = 1 + (i + n) % 50;
        let r = read_contact(&client, id, i % 2 == 0).await;
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
    let killed = db.terminate_writer().await;
    assert_eq!(killed, 1);
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
    assert!(db.assert_records_valid().await > 0);
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replica loaded: OK"), "{text}");
}

#[tokio::test]
async fn the_audit_database_is_reached_over_verified_tls_and_an_unknown_server_is_refused() {
    let pems = tempfile::tempdir().expect("tempdir");
    let certs = pgvakt::certs::generate(pems.path(), "client").expect("certs");
    let db = AuditDb::start_with(Some(&certs)).await;
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(10),
        extra_yaml: db.yaml("tls"),
        ..Default::default()
    })
    .await;
    let c = connect(env.proxy_port(), &env, "secretary", "over-tls").await;
    c.simple_query("SELECT first_name FROM contacts WHERE id = 2")
        .await
        .expect("read");
    let su = db.cluster.connect("audit").await.expect("superuser");
    let ssl: bool = su
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'pgvakt-audit'",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the sink's connection is encrypted");
    assert_eq!(
        of(&db.records().await, "statement_intent", "over-tls").len(),
        1
    );
    assert!(db.assert_records_valid().await > 0);
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");

    // A server whose certificate the configured CA did not sign gets no records: the proxy
    // starts, is not ready, and refuses personal-data reads.
    let other = tempfile::tempdir().expect("tempdir");
    let other_ca = pgvakt::certs::generate(other.path(), "client")
        .expect("certs")
        .ca_cert;
    let yaml = db.yaml("tls-wrong-ca").replace(
        &certs.ca_cert.display().to_string(),
        &other_ca.display().to_string(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = PgvaktProcess::start(dir.path(), &process_yaml(&env, dir.path(), &yaml)).await;
    let ready = common::http_get(proxy.metrics_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let c = connect(proxy.addr.port(), &env, "secretary", "wrong-ca").await;
    let e = c
        .simple_query("SELECT first_name FROM contacts WHERE id = 2")
        .await
        .expect_err("no read without a record");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(of(&db.records().await, "login", "wrong-ca").is_empty());
}
