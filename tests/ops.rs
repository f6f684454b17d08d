//! Operations: what the metrics endpoint reports after known traffic, readiness following the
//! upstream, and the process life cycle (SIGTERM drains then ends sessions, SIGHUP renews the
//! certificate).

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{self, PgvaktProcess};
use common::raw::{query, Raw};
use common::{http_get, metric, sqlstate, Env};
use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn statements(decision: &str, class: &str) -> String {
    format!("pgvakt_statements_total{{decision=\"{decision}\",class=\"{class}\"}}")
}

const ACCEPTED: &str = "pgvakt_client_connections_accepted_total";
const CURRENT: &str = "pgvakt_client_connections";
const TLS_REQUIRED: &str = "pgvakt_client_connections_refused_total{reason=\"tls_required\"}";
const BYTES_IN: &str = "pgvakt_relayed_bytes_total{direction=\"client_to_upstream\"}";
const BYTES_OUT: &str = "pgvakt_relayed_bytes_total{direction=\"upstream_to_client\"}";

#[tokio::test]
async fn metrics_count_connections_statements_refusals_and_bytes() {
    let env = Env::start_demo(20).await;
    let before = env.metrics().await;
    assert_eq!(metric(&before, ACCEPTED), 0.0, "{before}");
    assert!(
        metric(&before, "pgvakt_policy_loaded_timestamp_seconds") > 1.6e9,
        "the loaded policy's time is exported: {before}"
    );

    // The administrator is unrestricted: statements pass through unparsed.
    let admin = env.connect("admin", "admin", "crm").await.unwrap();
    admin
        .simple_query("SELECT count(*) FROM contacts")
        .await
        .unwrap();
    admin.simple_query("BEGIN; COMMIT").await.unwrap();

    // The secretary is restricted: statements reading nothing masked are allowed, reading the
    // masked bank account is rewritten, DDL is refused.
    let secretary = env.connect("secretary", "secretary", "crm").await.unwrap();
    secretary.simple_query("SELECT 1").await.unwrap();
    for _ in 0..2 {
        secretary
            .simple_query("SELECT bank_account FROM contacts")
            .await
            .unwrap();
    }
    let err = secretary
        .simple_query("CREATE TABLE notes (t text)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // Prepared through the extended protocol: counted once, at Parse; names are not masked.
    secretary
        .query("SELECT first_name FROM contacts WHERE id = $1", &[&1i64])
        .await
        .unwrap();

    // A client that does not ask for TLS is turned away and counted.
    let mut plain = env.pg_config("admin", "admin", "crm");
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let Err(err) = plain.connect(tokio_postgres::NoTls).await else {
        panic!("a plaintext login must fail");
    };
    assert_eq!(sqlstate(&err), "28000", "{err}");

    let m = env.metrics().await;
    assert_eq!(metric(&m, ACCEPTED), 3.0, "{m}");
    assert_eq!(metric(&m, &format!("{CURRENT} ")), 2.0, "{m}");
    assert_eq!(metric(&m, TLS_REQUIRED), 1.0, "{m}");
    assert_eq!(
        metric(&m, "pgvakt_tls_handshakes_total{outcome=\"ok\"}"),
        2.0,
        "{m}"
    );
    for (decision, class, n) in [
        // The simple-protocol "BEGIN; COMMIT" is one Query message.
        ("passthrough", "read", 1.0),
        ("passthrough", "utility", 1.0),
        ("allowed", "read", 2.0),
        ("rewritten", "read", 2.0),
        ("refused", "ddl", 1.0),
    ] {
        assert_eq!(
            metric(&m, &statements(decision, class)),
            n,
            "{decision} {class}: {m}"
        );
    }
    let total: f64 = m
        .lines()
        .filter(|l| l.starts_with("pgvakt_statements_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 7.0, "no other statement was counted: {m}");
    assert!(metric(&m, BYTES_IN) > 0.0, "{m}");
    assert!(metric(&m, BYTES_OUT) > 0.0, "{m}");
    // The repeated statement was analysed once.
    assert_eq!(metric(&m, "pgvakt_analysis_cache_hits_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "pgvakt_analysis_cache_misses_total"), 4.0, "{m}");
    // The statement with a constant is kept under its shape and under its exact text.
    assert_eq!(metric(&m, "pgvakt_analysis_cache_entries"), 5.0, "{m}");
    assert!(
        metric(&m, "pgvakt_statement_duration_seconds_count") >= 7.0,
        "{m}"
    );

    // A reload (SIGHUP or a changed file) is counted and renews the policy's load time.
    let loaded = metric(&m, "pgvakt_policy_loaded_timestamp_seconds");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        env.server().proxy.enforcer.reload_policy(),
        Some(Ok(_))
    ));
    let reloaded = env.metrics().await;
    assert_eq!(
        metric(&reloaded, "pgvakt_policy_reloads_total{outcome=\"ok\"}"),
        1.0,
        "{reloaded}"
    );
    assert!(metric(&reloaded, "pgvakt_policy_loaded_timestamp_seconds") > loaded);

    // Relayed bytes keep growing with traffic; closed sessions leave the gauge.
    admin
        .simple_query("SELECT repeat('x', 100000)")
        .await
        .unwrap();
    drop(admin);
    drop(secretary);
    let after = env
        .metrics_when("the session's end", |m| {
            metric(m, &format!("{CURRENT} ")) == 0.0
        })
        .await;
    assert!(
        metric(&after, BYTES_OUT) >= metric(&m, BYTES_OUT) + 100_000.0,
        "{after}"
    );
}

/// Status line of a GET on the metrics listener.
async fn status(addr: SocketAddr, path: &str) -> String {
    http_get(addr, path)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn wait_for_status(addr: SocketAddr, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = status(addr, path).await;
        if got.contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still says {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_upstream() {
    let mut env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let addr = env.server().metrics_addr;
    assert!(status(addr, "/readyz").await.contains("200"));

    env.cluster.stop_server().unwrap();
    wait_for_status(addr, "/readyz", "503").await;
    // It says why, and a query string (some probes add one) changes nothing.
    let answer = http_get(addr, "/readyz?verbose=1").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("not ready: upstream unreachable\n"),
        "{answer}"
    );
    // Liveness is about the process, which is fine.
    assert!(status(addr, "/healthz").await.contains("200"));

    env.cluster.start_server().unwrap();
    wait_for_status(addr, "/readyz?x=1", "200").await;
    let c = env.connect("alice", "pw", "postgres").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_ends_open_transactions_with_57p01_and_exits_0() {
    let env = Env::start().await;
    env.trust_user("alice").await;
    env.create_user("alice", "pw", false).await;
    let grace = Duration::from_millis(1500);
    let yaml = process::config(
        env.cluster.port(),
        &env.certs.server_cert,
        &env.certs.server_key,
        grace.as_millis() as u64,
    );
    let mut proxy = PgvaktProcess::start(env.dir.path(), &yaml).await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut session = Raw::connect(proxy.addr.port(), tls, "alice").await;
    session.send(&query("BEGIN")).await.unwrap();
    let ready = session.until_ready().await;
    assert_eq!(ready.last().map(|m| m.body.as_slice()), Some(&b"T"[..]));

    proxy.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    proxy.log_line("shutting down").await;
    // The listener closes as soon as the accept loop sees the phase change.
    let deadline = Instant::now() + Duration::from_millis(500);
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a draining proxy accepts no new connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(status(proxy.metrics_addr, "/readyz").await.contains("503"));

    // Within the grace period the open transaction keeps working.
    session.send(&query("SELECT 1")).await.unwrap();
    let answer = session.until_ready().await;
    assert!(answer.iter().any(|m| m.tag == b'D'), "{answer:?}");

    // Then the session is ended the way PostgreSQL ends it on shutdown.
    let fatal = tokio::time::timeout(grace * 4, session.recv())
        .await
        .expect("session ended in time")
        .expect("an ErrorResponse before the end");
    assert_eq!(fatal.tag, b'E', "{fatal:?}");
    assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(fatal.field(b'C').as_deref(), Some("57P01"));
    assert!(
        signalled.elapsed() >= grace,
        "ended before the grace period"
    );
    assert!(session.recv().await.is_none(), "the connection is closed");

    let exit = proxy.wait(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The open transaction's backend ends with the proxy's side of it.
    let direct = env.direct().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} upstream sessions left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leaf certificate a TLS handshake with the proxy presents.
async fn presented_certificate(addr: SocketAddr, cas: &[&Path]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_presents_a_renewed_certificate_while_sessions_continue() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let live = env.dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("server.pem"), live.join("server.key"));
    std::fs::copy(&env.certs.server_cert, &cert).unwrap();
    std::fs::copy(&env.certs.server_key, &key).unwrap();
    let yaml = process::config(env.cluster.port(), &cert, &key, 1000);
    let mut proxy = PgvaktProcess::start(env.dir.path(), &yaml).await;
    let old_ca = env.certs.ca_cert.as_path();
    assert_eq!(
        presented_certificate(proxy.addr, &[old_ca]).await,
        pem_cert(&env.certs.server_cert)
    );
    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(proxy.addr.port())
        .user("alice")
        .password("pw")
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (session, conn) = pg.connect(env.tls()).await.unwrap();
    tokio::spawn(conn);
    session.batch_execute("BEGIN").await.unwrap();

    // A renewed certificate from another CA, installed the way cert managers do: replace files.
    let renewed_dir = env.dir.path().join("renewed");
    std::fs::create_dir(&renewed_dir).unwrap();
    let renewed = pgvakt::certs::generate(&renewed_dir, "client").unwrap();
    std::fs::copy(&renewed.server_cert, &cert).unwrap();
    std::fs::copy(&renewed.server_key, &key).unwrap();
    proxy.signal(Signal::SIGHUP);
    proxy.log_line("TLS certificates reloaded").await;

    let both = [old_ca, renewed.ca_cert.as_path()];
    assert_eq!(
        presented_certificate(proxy.addr, &both).await,
        pem_cert(&renewed.server_cert),
        "the next handshake presents the renewed certificate"
    );
    let n: i32 = session
        .query_one("SELECT 41 + 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 42, "the session opened before the reload keeps working");
    session.batch_execute("COMMIT").await.unwrap();

    // A broken file on the next reload keeps the renewed certificate in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    proxy.signal(Signal::SIGHUP);
    proxy
        .log_line("TLS reload failed; keeping the previous certificates")
        .await;
    assert_eq!(
        presented_certificate(proxy.addr, &both).await,
        pem_cert(&renewed.server_cert)
    );
    let exit = {
        proxy.signal(Signal::SIGTERM);
        proxy.wait(Duration::from_secs(10)).await
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
