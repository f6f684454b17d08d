//! The way into the admin console, attacked: a user `admin.users` does not name (here
//! `secretary`, whose password is valid) tries to reach database `pgvakt` through startup
//! parameters PostgreSQL or a driver might read differently: other spellings of the database,
//! of the user and of the keys, `options`, `replication`, and a plaintext startup. None gets the
//! console; each is refused before a password is asked for, or goes to PostgreSQL as an
//! ordinary login that PostgreSQL refuses.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::raw::Raw;
use crate::common::{self, Env, EnvOptions};

const ADMIN: &str = "admin:\n  users: [ops]\n";

/// The SQLSTATE and message of a login through tokio-postgres, or "ok".
async fn login(env: &Env, config: tokio_postgres::Config) -> (String, String) {
    match config.connect(env.tls()).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let db = client
                .query_one("SELECT current_database()", &[])
                .await
                .map(|r| r.get::<_, String>(0));
            ("ok".into(), format!("{db:?}"))
        }
        Err(e) => (common::sqlstate(&e), common::message(&e)),
    }
}

/// The first answer to a startup with exactly `params` sent after TLS: an ErrorResponse's
/// SQLSTATE, or "auth" when a password is asked for.
async fn first_answer(env: &Env, params: &[(&str, &str)]) -> String {
    let tls = common::client_tls(&env.certs.ca_cert);
    let answer = Raw::first_answer(env.proxy_port(), tls, params);
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_startup_parameter_trick_opens_the_console_to_other_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: format!("{ADMIN}{}", common::audit_yaml(dir.path())),
        ..Default::default()
    })
    .await;
    env.create_user("ops", "ops-secret", false).await;
    let not_allowed = "may not use the admin console";
    let mut console_refusals = 0.0;

    // Other spellings of the database are ordinary databases, which do not exist.
    for db in ["PGVAKT", "Pgvakt", "pgvakt ", "\"pgvakt\""] {
        let (code, message) = login(&env, env.pg_config("secretary", "secretary", db)).await;
        assert_eq!(code, "3D000", "{db:?}: {message}");
    }
    // Other spellings of a console user are other users, refused before any password.
    for user in ["OPS", "Ops", "\"ops\"", "ops ", " ops"] {
        let (code, message) = login(&env, env.pg_config(user, "ops-secret", "pgvakt")).await;
        assert_eq!(code, "28000", "{user:?}: {message}");
        assert!(message.contains(not_allowed), "{user:?}: {message}");
        console_refusals += 1.0;
    }
    // Without a database the user's name is the database, as in PostgreSQL.
    let answer = first_answer(&env, &[("user", "pgvakt")]).await;
    assert_eq!(answer, "28000");
    console_refusals += 1.0;
    // options cannot name the database; a replication connection to it is still the console.
    let mut with_options = env.pg_config("secretary", "secretary", "crm");
    with_options.options("-c database=pgvakt");
    let (code, message) = login(&env, with_options).await;
    assert_ne!(code, "ok", "{message}");
    for replication in ["database", "true", "on"] {
        let params = [
            ("user", "secretary"),
            ("database", "pgvakt"),
            ("replication", replication),
        ];
        assert_eq!(first_answer(&env, &params).await, "28000", "{replication}");
        console_refusals += 1.0;
    }
    // Two keys PostgreSQL could read as one: refused whichever comes first.
    for params in [
        [
            ("user", "secretary"),
            ("database", "crm"),
            ("Database", "pgvakt"),
        ],
        [
            ("user", "secretary"),
            ("database", "pgvakt"),
            ("DATABASE", "crm"),
        ],
        [
            ("user", "ops"),
            ("USER", "secretary"),
            ("database", "pgvakt"),
        ],
        [
            ("user", "secretary"),
            ("User", "ops"),
            ("database", "pgvakt"),
        ],
    ] {
        assert_eq!(first_answer(&env, &params).await, "08P01", "{params:?}");
    }
    // A key only PostgreSQL's settings would read (not `database`) leaves the database to be
    // the user's name.
    let params = [("user", "secretary"), ("Database", "pgvakt")];
    assert_eq!(first_answer(&env, &params).await, "auth");

    // A console user's plaintext startup is refused before its password is asked for.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.proxy_port()))
        .await
        .expect("tcp");
    let mut body = vec![0, 3, 0, 0];
    for s in ["user", "ops", "database", "pgvakt", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    tcp.write_all(&packet).await.expect("startup");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("requires TLS"),
        "{answer:?}"
    );

    // The console user itself gets in, once, with its password.
    let (code, message) = login(&env, env.pg_config("ops", "ops-secret", "pgvakt")).await;
    assert_eq!(code, "ok", "{message}");
    let m = env.metrics().await;
    let refused = "pgvakt_client_connections_refused_total{reason=\"console_not_allowed\"}";
    assert_eq!(common::metric(&m, refused), console_refusals, "{m}");
    // PostgreSQL was never asked about a database called pgvakt.
    let log = std::fs::read_to_string(env.cluster.log_file()).expect("server log");
    assert!(!log.contains("database \"pgvakt\""), "{log}");
}
