//! The transparent relay: what a client of PostgreSQL relies on keeps working through pgvakt.

use crate::common;

use std::time::{Duration, Instant};

use common::{metric, sqlstate, Env};
use futures_util::{SinkExt, TryStreamExt};

#[tokio::test]
async fn simple_and_extended_queries_pass_through() {
    let env = Env::start().await;
    env.create_user("alice", "alice-pw", false).await;
    let c = env
        .connect("alice", "alice-pw", "postgres")
        .await
        .expect("connect via TLS");

    let rows = c
        .simple_query("SELECT 1 AS one; SELECT 'two'::text AS two")
        .await
        .unwrap();
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec!["1", "two"]);

    let stmt = c.prepare("SELECT $1::int + 1, current_user").await.unwrap();
    let row = c.query_one(&stmt, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "alice");

    // Many prepared executions pipelined before their results are read.
    let params: Vec<i32> = (0..50).collect();
    let args: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        params.iter().map(|i| [i as _]).collect();
    let futures: Vec<_> = args.iter().map(|a| c.query_one(&stmt, a)).collect();
    let results = futures_util::future::try_join_all(futures).await.unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get::<_, i32>(0), i as i32 + 1);
    }

    // An error mid-pipeline is reported and the session recovers.
    let err = c.query_one("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );

    // Transactions and binary results of several types.
    c.batch_execute("BEGIN; CREATE TEMP TABLE t(a int, b text, c numeric, d date); INSERT INTO t VALUES (1,'x',1.5,'2020-01-02'); COMMIT").await.unwrap();
    let row = c.query_one("SELECT a, b, d FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), "x");
}

#[tokio::test]
async fn copy_in_and_out() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let c = env.connect("alice", "pw", "postgres").await.unwrap();
    c.batch_execute("CREATE TEMP TABLE items(id int, name text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY items FROM STDIN").await.unwrap();
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\titem {i}\n"));
    }
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 5000);
    let stream = c.copy_out("COPY items TO STDOUT").await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), data);
}

#[tokio::test]
async fn cancel_really_cancels() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let c = env.connect("alice", "pw", "postgres").await.unwrap();
    let token = c.cancel_token();
    let tls = env.tls();
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tls).await
    });
    let err = c.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.await.unwrap().unwrap();
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn notifications_are_delivered() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let (listener, conn) = env
        .pg_config("alice", "pw", "postgres")
        .connect(env.tls())
        .await
        .unwrap();
    let mut rx = common::notifications::notifications(conn, |n| {
        (n.channel().to_owned(), n.payload().to_owned())
    });
    listener.batch_execute("LISTEN crm_events").await.unwrap();
    let sender = env.connect("alice", "pw", "postgres").await.unwrap();
    sender
        .batch_execute("NOTIFY crm_events, 'contact 42 updated'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("crm_events".into(), "contact 42 updated".into()));
}

#[tokio::test]
async fn wrong_password_gets_the_upstream_error() {
    let env = Env::start().await;
    env.create_user("alice", "right", false).await;
    let err = env.connect("alice", "wrong", "postgres").await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01", "{err}");
}

#[tokio::test]
async fn plaintext_is_refused_before_reaching_postgres() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let before = env
        .direct()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    let mut cfg = env.pg_config("alice", "pw", "postgres");
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = match cfg.connect(tokio_postgres::NoTls).await {
        Ok(_) => panic!("plaintext login must fail"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert!(common::message(&err).contains("requires TLS"), "{err:?}");
    assert_eq!(before, 0);
    let m = env.metrics().await;
    assert_eq!(
        metric(
            &m,
            "pgvakt_client_connections_refused_total{reason=\"tls_required\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn upstream_down_gives_a_clear_error_and_recovers() {
    let mut env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    env.cluster.stop_server().unwrap();
    let err = env.connect("alice", "pw", "postgres").await.unwrap_err();
    assert_eq!(sqlstate(&err), "08006", "{err}");
    assert!(
        common::message(&err).contains("cannot connect to upstream PostgreSQL"),
        "{err:?}"
    );
    env.cluster.start_server().unwrap();
    let c = env.connect("alice", "pw", "postgres").await.unwrap();
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}
