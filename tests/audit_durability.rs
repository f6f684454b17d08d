//! No personal data leaves without a durable record (`audit.durability: before_release`): a
//! statement that may read personal data is forwarded only after its intent record is synced,
//! so a pgvakt killed with SIGKILL under load leaves a record of every read its clients
//! received, and `audit verify` still vouches for the chain. A sink that cannot write stops
//! such statements, in both protocols, and the refusals are counted.

use crate::common;
use crate::common::trail::{records, verify};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::audit_db::connect;
use common::process::PgvaktProcess;
use common::reads::read_contact;
use common::{sqlstate, Env, EnvOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The binary's configuration in front of the demo with an audit directory under `audit`, and
/// `extra` after the audit section.
fn process_yaml(env: &Env, audit: &Path, extra: &str) -> String {
    let audit = format!("{}{extra}", common::audit_yaml(audit));
    common::audit_db::process_yaml(env, env.dir.path(), &audit)
}

/// Reads of contacts, alternating the simple and the extended protocol, until the connection
/// fails or `max` reads; returns how many the client received complete.
async fn read_until_killed(client: tokio_postgres::Client, n: i64, max: u64) -> u64 {
    let mut ok = 0u64;
    while ok < max {
        let id = 1 + (ok as i64 + n) % 50;
        let r = read_contact(&client, id, ok % 2 == 0).await;
        match r {
            Ok(()) => ok += 1,
            Err(_) => return ok,
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_leaves_a_record_of_every_read_received() {
    let env = Env::start_demo(50).await;
    let audit = tempfile::tempdir().expect("tempdir");
    let yaml = process_yaml(&env, audit.path(), "");
    let proxy = PgvaktProcess::start(audit.path(), &yaml).await;

    let users = ["secretary", "admin", "secretary", "admin"];
    let mut clients = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let app = format!("durability-{n}");
        let client = connect(proxy.addr.port(), &env, user, &app).await;
        clients.push((
            app,
            tokio::spawn(read_until_killed(client, n as i64, 200_000)),
        ));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.signal(Signal::SIGKILL);
    let mut received: HashMap<String, u64> = HashMap::new();
    for (app, task) in clients {
        let n = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("clients end once pgvakt is gone")
            .expect("client task");
        received.insert(app, n);
    }
    let total: u64 = received.values().sum();
    assert!(total > 40, "the load ran: {received:?}");

    let dir = audit.path().join("audit");
    let (recs, torn) = records(&dir);
    assert!(
        torn <= 1,
        "at most the line being written when killed is torn"
    );
    let intents: HashSet<&str> = recs
        .iter()
        .filter(|r| r["event"] == "statement_intent")
        .filter_map(|r| r["event_id"].as_str())
        .collect();
    for (app, n) in &received {
        let of_app = |event: &str| {
            recs.iter()
                .filter(|r| r["event"] == event && r["application_name"] == app.as_str())
                .count() as u64
        };
        let (intent, read) = (of_app("statement_intent"), of_app("statement_read"));
        // Each read is preceded by its own synced intent; at most the one in flight when the
        // proxy died has an intent the client never saw answered.
        assert!(
            intent >= *n && intent <= *n + 1,
            "{app}: {intent} intents for {n} reads received ({read} completion records)"
        );
        assert!(
            read <= intent,
            "{app}: {read} completions, {intent} intents"
        );
    }
    // Every completion record names an intent that is in the log.
    for r in recs.iter().filter(|r| r["event"] == "statement_read") {
        let id = r["intent"]
            .as_str()
            .unwrap_or_else(|| panic!("no intent: {r}"));
        assert!(intents.contains(id), "unknown intent {id} in {r}");
    }
    // Intents name what the statement reads: the secretary's the columns and categories, the
    // unrestricted admin's a possible personal-data read.
    let secretary = recs
        .iter()
        .find(|r| r["event"] == "statement_intent" && r["user"] == "secretary")
        .expect("a secretary intent");
    assert_eq!(
        secretary["tables"][0]["table"], "public.contacts",
        "{secretary}"
    );
    assert!(
        secretary["statement"]["fingerprint"].is_string(),
        "{secretary}"
    );
    assert!(secretary.get("rows").is_none(), "{secretary}");
    let admin = recs
        .iter()
        .find(|r| r["event"] == "statement_intent" && r["user"] == "admin")
        .expect("an admin intent");
    assert!(admin["session_id"].is_string(), "{admin}");

    // The chain verifies as far as it goes; a torn last line is reported as such.
    let key = audit.path().join("chain.key");
    let (ok, text) = verify(&key, &dir);
    if torn == 0 {
        assert!(ok, "{text}");
    } else {
        assert!(!ok && text.contains("incomplete record"), "{text}");
    }
    // A restart continues the chain after the last complete record; then the whole log
    // verifies, the torn line noted.
    let mut again = PgvaktProcess::start(audit.path(), &yaml).await;
    let c = connect(again.addr.port(), &env, "secretary", "after-restart").await;
    c.simple_query("SELECT first_name FROM contacts WHERE id = 1")
        .await
        .expect("read after restart");
    drop(c);
    again.signal(Signal::SIGTERM);
    let exit = again.wait(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let (ok, text) = verify(&key, &dir);
    assert!(ok, "{text}");
    if torn > 0 {
        assert!(text.contains("note:"), "{text}");
    }
}

#[tokio::test]
async fn a_sink_that_cannot_write_stops_personal_data_statements_and_counts_them() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    let dir = keys.path().join("audit");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    c.simple_query("SELECT first_name FROM contacts WHERE id = 1")
        .await
        .expect("read while the sink works");

    // The directory becomes a regular file: writes fail, for root too.
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).expect("move audit dir");
    std::fs::write(&dir, "not a directory").expect("block the path");

    // The very first read after the sink broke gets no rows: a read is forwarded while its
    // intent syncs, so when the sync fails its answers are withheld and the session ends
    // (or it is refused before it is sent, once the writer knows the sink is failing).
    let e = c
        .simple_query("SELECT first_name FROM contacts WHERE id = 2")
        .await
        .expect_err("no read without a durable record");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(
        common::message(&e).contains("audit trail cannot be written"),
        "{e}"
    );
    let c = if c.is_closed() {
        env.connect("secretary", "secretary", "crm")
            .await
            .expect("reconnect")
    } else {
        c
    };
    // The extended protocol too (refused at Parse or at Execute), with the same error.
    let e = c
        .query("SELECT email FROM contacts WHERE id = $1", &[&3i64])
        .await
        .expect_err("no extended-protocol read without a record");
    assert_eq!(sqlstate(&e), "42501", "{e}");
    assert!(
        common::message(&e).contains("audit trail cannot be written"),
        "{e}"
    );
    // Statements without personal data go on.
    c.simple_query("SELECT 1").await.expect("non-personal");
    let metrics = env.metrics().await;
    let refused = common::metric(&metrics, "pgvakt_audit_statements_refused_total");
    assert!(refused >= 2.0, "{refused} refusals counted:\n{metrics}");

    // Recovery: reads resume, and every one of them is recorded.
    std::fs::remove_file(&dir).expect("unblock");
    std::fs::rename(&moved, &dir).expect("restore audit dir");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if c.simple_query("SELECT first_name FROM contacts WHERE id = 4")
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "reads resume after recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.query("SELECT email FROM contacts WHERE id = $1", &[&5i64])
        .await
        .expect("extended read after recovery");
    let (recs, _) = records(&dir);
    let intents = recs
        .iter()
        .filter(|r| r["event"] == "statement_intent" && r["user"] == "secretary")
        .count();
    assert!(intents >= 3, "{intents} intents: {recs:?}");
}

#[tokio::test]
async fn a_portal_read_in_parts_has_one_intent_synced_before_its_first_rows() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(30),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    let dir = keys.path().join("audit");
    let mut c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let tx = c.transaction().await.expect("begin");
    let stmt = tx
        .prepare("SELECT id, first_name FROM contacts WHERE id <= $1 ORDER BY id")
        .await
        .expect("prepare");
    let portal = tx.bind(&stmt, &[&25i64]).await.expect("bind");
    let mut rows = 0;
    for _ in 0..3 {
        let part = tx.query_portal(&portal, 10).await.expect("portal part");
        // Before the client sees rows, their intent is in the file.
        let (recs, _) = records(&dir);
        assert!(
            recs.iter()
                .any(|r| r["event"] == "statement_intent" && r["user"] == "secretary"),
            "no intent before the rows"
        );
        rows += part.len();
    }
    assert_eq!(rows, 25);
    tx.commit().await.expect("commit");

    let deadline = Instant::now() + Duration::from_secs(10);
    let recs = loop {
        let (recs, _) = records(&dir);
        let reads = recs
            .iter()
            .filter(|r| r["event"] == "statement_read" && r["user"] == "secretary")
            .count();
        if reads >= 3 {
            break recs;
        }
        assert!(Instant::now() < deadline, "completion records: {recs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let intents: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "statement_intent" && r["user"] == "secretary")
        .collect();
    assert_eq!(intents.len(), 1, "one intent per Bind: {intents:?}");
    let id = intents[0]["event_id"].as_str().expect("event id");
    let parts: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "statement_read" && r["user"] == "secretary")
        .collect();
    assert!(parts.iter().all(|r| r["intent"] == id), "{parts:?}");
}
