//! The PostgreSQL-table audit sink: a fleet of pgvakt instances (replicas) writes one table,
//! each with its own HMAC chain, and `audit search`/`audit verify --from-db` answer from it.

use crate::common;

use std::time::{Duration, Instant};

use common::audit_db::{connect, of, process_yaml, AuditDb, WRITER_PASSWORD};
use common::process::PgvaktProcess;
use common::{sqlstate, Env, EnvOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

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
    // The sink's idle connection is cut (an idle timeout, a failover): the next read is not
    // refused for that, its intent goes over a new connection.
    let cut = db.terminate_writer().await;
    assert_eq!(cut, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.simple_query("SELECT first_name FROM contacts WHERE id = 9")
        .await
        .expect("read after the sink's connection was cut");
    assert_eq!(
        of(&db.records().await, "statement_intent", "dpo-story").len(),
        2
    );

    assert!(db.assert_records_valid().await > 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_one_table_and_verify_checks_each_chain() {
    let db = AuditDb::start().await;
    let env = Env::start_demo(20).await;
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
    assert!(db.assert_records_valid().await > 0);
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

/// Reads until the connection fails; how many the client received complete.
async fn read_until_gone(client: tokio_postgres::Client, n: i64) -> u64 {
    let mut ok = 0u64;
    loop {
        let id = 1 + (ok as i64 + n) % 20;
        let r = if ok % 2 == 0 {
            client
                .simple_query(&format!("SELECT email FROM contacts WHERE id = {id}"))
                .await
                .map(|_| ())
        } else {
            client
                .query("SELECT email FROM contacts WHERE id = $1", &[&id])
                .await
                .map(|_| ())
        };
        if r.is_err() {
            return ok;
        }
        ok += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_has_every_read_in_the_table_and_continues_its_chain() {
    let db = AuditDb::start().await;
    let env = Env::start_demo(20).await;
    let dir = tempfile::tempdir().expect("dir");
    let yaml = process_yaml(&env, dir.path(), &db.yaml("killed"));
    let proxy = PgvaktProcess::start(dir.path(), &yaml).await;
    let mut clients = Vec::new();
    for (n, user) in ["secretary", "admin", "secretary"].iter().enumerate() {
        let app = format!("killed-{n}");
        let c = connect(proxy.addr.port(), &env, user, &app).await;
        clients.push((app, tokio::spawn(read_until_gone(c, n as i64))));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.signal(Signal::SIGKILL);
    let mut received = Vec::new();
    for (app, task) in clients {
        let n = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("clients end once pgvakt is gone")
            .expect("client task");
        received.push((app, n));
    }
    let recs = db.records().await;
    for (app, n) in &received {
        let intents = of(&recs, "statement_intent", app).len() as u64;
        // At most the statement in flight when pgvakt died has an intent without an answer.
        assert!(
            intents >= *n && intents <= *n + 1,
            "{app}: {intents} intents for {n} reads received"
        );
    }
    assert!(
        received.iter().map(|(_, n)| n).sum::<u64>() > 20,
        "the load ran: {received:?}"
    );

    // Started again, the replica continues its chain after the last committed record.
    let mut again = PgvaktProcess::start(dir.path(), &yaml).await;
    let c = connect(again.addr.port(), &env, "secretary", "after-kill").await;
    c.simple_query("SELECT email FROM contacts WHERE id = 1")
        .await
        .expect("read after restart");
    drop(c);
    again.signal(Signal::SIGTERM);
    assert_eq!(again.wait(Duration::from_secs(20)).await.code(), Some(0));
    assert_eq!(
        of(&db.records().await, "statement_intent", "after-kill").len(),
        1
    );
    assert!(db.assert_records_valid().await > 0);
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replica killed: OK"), "{text}");
}
