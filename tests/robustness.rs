//! Bad input from one peer ends only that peer's session.

use crate::common;

use common::raw::{msg, query, Raw};
use common::{client_tls, Env};

#[tokio::test]
async fn oversize_and_garbage_messages_close_only_their_session() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    env.create_user("mallory", "x", false).await;
    env.trust_user("mallory").await;
    let good = env.connect("alice", "pw", "postgres").await.unwrap();
    good.batch_execute("BEGIN; CREATE TEMP TABLE keep(a int); INSERT INTO keep VALUES (1)")
        .await
        .unwrap();

    // A length far above the configured limit: refused before the body is read.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "mallory").await;
    raw.send(&[b'Q', 0x40, 0, 0, 0]).await.unwrap();
    let m = raw.recv().await.expect("an error before close");
    assert_eq!(m.tag, b'E');
    assert_eq!(m.field(b'C').as_deref(), Some("08P01"));
    assert!(
        m.field(b'M').unwrap().contains("over the limit"),
        "{:?}",
        m.field(b'M')
    );
    assert!(raw.recv().await.is_none(), "session must be closed");

    // An impossible length.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "mallory").await;
    raw.send(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    assert_eq!(
        raw.recv().await.unwrap().field(b'C').as_deref(),
        Some("08P01")
    );

    // A message type no frontend sends.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "mallory").await;
    raw.send(&msg(b'Z', b"I")).await.unwrap();
    let m = raw.recv().await.unwrap();
    assert_eq!(m.field(b'C').as_deref(), Some("08P01"));

    // A query that is not NUL-terminated still reaches PostgreSQL's own checks or ours, but
    // never crashes anything.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "mallory").await;
    raw.send(&msg(b'Q', b"SELECT 1")).await.unwrap();
    let _ = raw.until_ready().await;

    // A well-behaved raw session still works.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "mallory").await;
    raw.send(&query("SELECT 1")).await.unwrap();
    let msgs = raw.until_ready().await;
    assert!(msgs.iter().any(|m| m.tag == b'D'));

    // The other session, mid-transaction, never noticed.
    let n: i64 = good
        .query_one("SELECT count(*) FROM keep", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    good.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn garbage_startup_gets_protocol_violation() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start().await;
    for packet in [
        vec![0, 0, 0, 8, 0, 2, 0, 0],                 // protocol 2
        vec![0x7f, 0, 0, 0, 0, 3, 0, 0],              // absurd length
        vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, 0, 0], // no user
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.proxy_port()))
            .await
            .unwrap();
        tcp.write_all(&packet).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_to_end(&mut reply),
        )
        .await;
        assert_eq!(reply.first(), Some(&b'E'), "{packet:?} → {reply:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("08P01"), "{text}");
    }
    let m = env.metrics().await;
    assert!(
        m.contains("pgvakt_client_connections_accepted_total 3"),
        "{m}"
    );
}

/// Statements whose ASTs are as deep as they are long, and multi-statement texts with many
/// masked tables, from an unrestricted and a restricted role: each gets an answer, the proxy
/// stays up, and another session is served meanwhile.
#[tokio::test]
async fn deep_and_long_statements_do_not_crash_or_stall_the_proxy() {
    let env = Env::start_audited_demo(50).await;
    let chain = |sep: &str, n: usize| vec!["1"; n].join(sep);
    let texts = [
        format!("SELECT {}", chain("+", 40_000)),
        format!("SELECT 1 WHERE {}", vec!["1 = 1"; 20_000].join(" AND ")),
        format!("SELECT {}", vec!["'a'"; 30_000].join(" || ")),
        vec!["SELECT 1"; 8_000].join(" UNION ALL "),
        "SELECT first_name, bank_account FROM contacts WHERE id = 1;".repeat(8_000),
        "SELECT 1;".repeat(50_000),
        format!(
            "WITH {} SELECT 1",
            (0..20_000)
                .map(|i| format!("a{i} AS (SELECT 1)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    for role in ["admin", "secretary"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        let other = env.connect("sales", "sales", "crm").await.expect("connect");
        for sql in &texts {
            let started = std::time::Instant::now();
            // Refused or answered: either way an answer, well within the session's life.
            let r = tokio::time::timeout(std::time::Duration::from_secs(120), c.simple_query(sql))
                .await;
            assert!(
                r.is_ok(),
                "{role}: no answer to a {}-byte statement",
                sql.len()
            );
            let served = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                other.query_one("SELECT count(*) FROM contacts", &[]),
            )
            .await;
            assert!(
                matches!(served, Ok(Ok(_))),
                "{role}: another session was not served after a {}-byte statement ({:?})",
                sql.len(),
                started.elapsed()
            );
        }
        assert_eq!(
            c.query_one("SELECT 1", &[])
                .await
                .expect("alive")
                .get::<_, i32>(0),
            1,
            "{role}: the session survives"
        );
    }
}

/// Backends of `user` PostgreSQL still has, polled until `want` or the deadline.
async fn backends_until(env: &Env, user: &str, want: i64, within: std::time::Duration) -> i64 {
    let direct = env.direct().await;
    let deadline = std::time::Instant::now() + within;
    loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&user],
            )
            .await
            .expect("count backends")
            .get(0);
        if n == want || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Fill every buffer between PostgreSQL and a client that never reads: queries with large
/// results, until sending blocks (bounded in count and time).
async fn flood_without_reading(raw: &mut Raw) {
    let q = query("SELECT repeat('x', 200000) FROM generate_series(1, 20)");
    for _ in 0..2_000 {
        let sent = tokio::time::timeout(std::time::Duration::from_millis(500), raw.send(&q)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_leave_no_session_or_backend_behind() {
    let env = Env::start_with(common::EnvOptions {
        limits_yaml: "  client_write_timeout_ms: 3000\n".into(),
        ..Default::default()
    })
    .await;
    env.create_user("flood", "x", false).await;
    env.trust_user("flood").await;

    // Sends queries without reading, then leaves.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "flood").await;
    flood_without_reading(&mut raw).await;
    assert_eq!(
        backends_until(&env, "flood", 1, std::time::Duration::from_secs(5)).await,
        1
    );
    drop(raw);
    let left = backends_until(&env, "flood", 0, std::time::Duration::from_secs(20)).await;
    assert_eq!(left, 0, "the backend of a client that left is still there");

    // Sends queries without reading and stays: ended once it has read nothing for a while.
    let mut raw = Raw::connect(env.proxy_port(), client_tls(&env.certs.ca_cert), "flood").await;
    flood_without_reading(&mut raw).await;
    let left = backends_until(&env, "flood", 0, std::time::Duration::from_secs(30)).await;
    assert_eq!(
        left, 0,
        "the backend of a client that stopped reading is still there"
    );
    drop(raw);

    // Everyone else is served throughout.
    env.create_user("alice", "pw", false).await;
    let c = env
        .connect("alice", "pw", "postgres")
        .await
        .expect("connect");
    c.simple_query("SELECT 1").await.expect("served");
}
