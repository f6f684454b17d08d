//! The command-line tools' `--upstream` connections: TLS as the connection string's `sslmode`
//! asks (against a PostgreSQL that accepts TLS connections only, as managed databases do), and
//! errors that name the cause: wrong password, nothing listening at host:port, TLS.

use std::process::Output;

use pgvakt::cluster::{Cluster, ClusterOptions, ServerTls};

use crate::common::cli::text;

fn snapshot(dsn: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["policy", "snapshot", "--upstream", dsn])
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .output()
        .expect("run pgvakt")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn upstream_connections_use_tls_as_sslmode_asks_and_say_why_they_fail() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pgvakt::certs::generate(dir.path(), "client").unwrap();
    let cluster = Cluster::start_async(ClusterOptions {
        tls: Some(ServerTls {
            cert_pem: certs.server_cert.clone(),
            key_pem: certs.server_key.clone(),
        }),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    // TLS connections only over TCP, as a managed database requires.
    let hba = cluster.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let su = cluster.connect("postgres").await;
    // The superuser connection of the harness may itself be TCP without TLS; reload through
    // pg_ctl's signal instead when it cannot connect any more.
    if let Ok(c) = su {
        c.simple_query("SELECT pg_reload_conf()").await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let base = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=postgres",
        cluster.port(),
        cluster.superuser(),
        cluster.password()
    );

    let plain = snapshot(&format!("{base} sslmode=disable"));
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    assert!(
        text(&plain).contains("no pg_hba.conf entry") && text(&plain).contains("28000"),
        "the server's reason, not \"db error\": {}",
        text(&plain)
    );

    for mode in [
        "sslmode=require".to_owned(),
        format!(
            "sslmode=verify-full sslrootcert={}",
            certs.ca_cert.display()
        ),
    ] {
        let out = snapshot(&format!("{base} {mode}"));
        assert!(out.status.success(), "{mode}: {}", text(&out));
        assert!(
            text(&out).contains("\"relations\""),
            "{mode}: {}",
            text(&out)
        );
    }
    let url = format!(
        "postgresql://{}:{}@127.0.0.1:{}/postgres?sslmode=require",
        cluster.superuser(),
        cluster.password(),
        cluster.port()
    );
    assert!(snapshot(&url).status.success());

    // A CA that did not sign the server's certificate: the TLS failure says so.
    let other = tempfile::tempdir().unwrap();
    let other_ca = pgvakt::certs::generate(other.path(), "client")
        .unwrap()
        .ca_cert;
    let wrong_ca = snapshot(&format!(
        "{base} sslmode=verify-full sslrootcert={}",
        other_ca.display()
    ));
    assert_eq!(wrong_ca.status.code(), Some(2));
    let t = text(&wrong_ca).to_lowercase();
    assert!(t.contains("tls") && t.contains("certificate"), "{t}");

    let wrong_pw = snapshot(&format!(
        "host=127.0.0.1 port={} user={} password=wrong dbname=postgres sslmode=require",
        cluster.port(),
        cluster.superuser()
    ));
    assert_eq!(wrong_pw.status.code(), Some(2));
    assert!(
        text(&wrong_pw).contains("password authentication failed")
            && text(&wrong_pw).contains("28P01"),
        "{}",
        text(&wrong_pw)
    );

    let port = free_port();
    let refused = snapshot(&format!(
        "host=127.0.0.1 port={port} user=x dbname=x sslmode=disable"
    ));
    assert_eq!(refused.status.code(), Some(2));
    let t = text(&refused);
    assert!(
        t.contains(&format!("127.0.0.1:{port}")) && t.to_lowercase().contains("connection refused"),
        "{t}"
    );

    let no_ca = snapshot(&format!(
        "{base} sslmode=verify-full sslrootcert=/nonexistent/ca.pem"
    ));
    assert_eq!(no_ca.status.code(), Some(2));
    assert!(
        text(&no_ca).contains("/nonexistent/ca.pem"),
        "{}",
        text(&no_ca)
    );
}

/// Every command that connects says why it could not: the IO error behind tokio-postgres's
/// "error connecting to server", the reason a connection string does not parse.
#[test]
fn every_tool_names_the_cause_of_a_failed_connection() {
    let port = free_port();
    let down = format!("host=127.0.0.1 port={port} user=x dbname=x sslmode=disable");
    let bad = "host=127.0.0.1 port=notaport";
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env_remove("PGSSLMODE")
            .output()
            .expect("run pgvakt");
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    for (dsn, cause) in [
        (down.as_str(), "Connection refused"),
        (bad, "invalid value for option `port`"),
    ] {
        for args in [
            vec!["policy", "snapshot", "--upstream", dsn],
            vec!["install", "--upstream", dsn],
            vec![
                "subject",
                "export",
                "42",
                "--no-audit-record",
                "--upstream",
                dsn,
            ],
            vec![
                "subject",
                "erase",
                "42",
                "--no-audit-record",
                "--upstream",
                dsn,
            ],
            vec!["retention", "run", "--no-audit-record", "--upstream", dsn],
            vec!["audit", "search", "--db-tls", "disable", "--from-db", dsn],
            vec!["audit", "logins", "--db-tls", "disable", "--from-db", dsn],
            vec![
                "audit",
                "install-table",
                "--db-tls",
                "disable",
                "--from-db",
                dsn,
                "--writer",
                "w",
            ],
        ] {
            let t = run(&args);
            assert!(t.contains(cause), "{args:?}: {t}");
        }
    }
}
