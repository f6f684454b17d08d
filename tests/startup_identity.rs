//! The user and database a session runs as are the ones pgvakt enforces and audits. A startup
//! packet PostgreSQL could read as another user or database (a key given twice, in any case) is
//! refused before anything reaches PostgreSQL; after login, PostgreSQL's own account of whom and
//! where it logged in must match, or the session ends before its first ReadyForQuery.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::raw::{query, Msg, Raw};
use common::{client_tls, Env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TLS through SSLRequest, then a startup packet whose parameter list is exactly `params`
/// (key, value, key, value, ... without the final terminator).
async fn send_startup(port: u16, tls: Arc<rustls::ClientConfig>, params: &[u8]) -> Raw {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("ssl request");
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.expect("ssl answer");
    assert_eq!(answer[0], b'S');
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("tls");
    let mut raw = Raw { stream };
    let mut body = vec![0, 3, 0, 0];
    body.extend_from_slice(params);
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    raw.send(&packet).await.expect("startup");
    raw
}

/// A startup parameter as raw key and value bytes.
type Param<'a> = (&'a [u8], &'a [u8]);

/// `key\0value\0` for each pair.
fn pairs(params: &[Param]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in params {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Everything the proxy sends until it closes the connection, or up to and including a
/// ReadyForQuery. A proxy that neither answers nor closes fails the test.
async fn until_closed_or_ready(raw: &mut Raw) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), raw.recv())
            .await
            .expect("the proxy neither answered nor closed the connection");
        let Some(m) = next else {
            return out;
        };
        let ready = m.tag == b'Z';
        out.push(m);
        if ready {
            return out;
        }
    }
}

/// The message as it was on the wire: tag, length, body.
fn wire(m: &Msg) -> Vec<u8> {
    let mut out = vec![m.tag];
    out.extend_from_slice(&((m.body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&m.body);
    out
}

/// The exact ErrorResponse pgvakt sends for a FATAL error.
fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// The lines PostgreSQL logged since the marker line was written.
fn log_since(env: &Env, marker: &str) -> Vec<String> {
    let log = std::fs::read_to_string(env.cluster.log_file()).expect("server log");
    let start = log.find(marker).expect("marker in the server log");
    log[start..].lines().skip(1).map(str::to_owned).collect()
}

#[tokio::test]
async fn repeated_startup_keys_are_refused_before_postgres_sees_them() {
    let env = Env::start().await;
    env.create_user("admin", "admin", true).await;
    env.create_user("marketing", "marketing", false).await;
    let direct = env.direct().await;
    // Every connection PostgreSQL receives is logged from here on.
    for sql in [
        "ALTER SYSTEM SET log_connections = on",
        "SELECT pg_reload_conf()",
    ] {
        direct.batch_execute(sql).await.unwrap();
    }
    let marker = "startup_identity: refused startups begin";
    direct
        .batch_execute(&format!("DO $$ BEGIN RAISE LOG '{marker}'; END $$"))
        .await
        .unwrap();

    let repeated: &[(&[Param], &str, &str)] = &[
        (
            &[(b"user", b"admin"), (b"user", b"marketing")],
            "user",
            "user",
        ),
        (
            &[(b"user", b"marketing"), (b"user", b"admin")],
            "user",
            "user",
        ),
        (
            &[
                (b"user", b"marketing"),
                (b"database", b"postgres"),
                (b"database", b"template1"),
            ],
            "database",
            "database",
        ),
        (
            &[
                (b"database", b"template1"),
                (b"user", b"marketing"),
                (b"database", b"postgres"),
            ],
            "database",
            "database",
        ),
        (
            &[(b"User", b"admin"), (b"user", b"marketing")],
            "User",
            "user",
        ),
        (
            &[(b"user", b"marketing"), (b"USER", b"admin")],
            "user",
            "USER",
        ),
        (
            &[
                (b"user", b"marketing"),
                (b"database", b"postgres"),
                (b"DataBase", b"template1"),
            ],
            "database",
            "DataBase",
        ),
        (
            &[
                (b"user", b"marketing"),
                (b"application_name", b"a"),
                (b"Application_Name", b"b"),
            ],
            "application_name",
            "Application_Name",
        ),
    ];
    for (params, first, second) in repeated {
        let mut raw = send_startup(
            env.proxy_port(),
            client_tls(&env.certs.ca_cert),
            &pairs(params),
        )
        .await;
        let got = until_closed_or_ready(&mut raw).await;
        assert_eq!(
            got.len(),
            1,
            "{params:?}: one error, then close; got {}",
            tags(&got)
        );
        let expected = fatal(
            "08P01",
            &format!(
                "pgvakt: startup parameter \"{second}\" repeats \"{first}\"; each parameter may be given once"
            ),
        );
        assert_eq!(
            wire(&got[0]),
            expected,
            "{params:?}: {:?}",
            got[0].field(b'M')
        );
    }

    // Bytes that are not UTF-8, and an empty key carrying a value, are refused the same way.
    let not_utf8 = pairs(&[(b"user", b"marketing"), (b"appl\xffication_name", b"x")]);
    let empty_key = [&pairs(&[(b"user", b"marketing")])[..], b"\0admin\0"].concat();
    for (params, message) in [
        (not_utf8, "pgvakt: startup parameters are not valid UTF-8"),
        (empty_key, "pgvakt: invalid startup packet layout"),
    ] {
        let mut raw = send_startup(env.proxy_port(), client_tls(&env.certs.ca_cert), &params).await;
        let got = until_closed_or_ready(&mut raw).await;
        assert_eq!(got.len(), 1, "{message}: got {}", tags(&got));
        assert_eq!(wire(&got[0]), fatal("08P01", message));
    }

    // PostgreSQL never received a connection for any of them.
    direct
        .batch_execute("DO $$ BEGIN RAISE LOG 'startup_identity: refused startups end'; END $$")
        .await
        .unwrap();
    // pgvakt's readiness probe opens bare TCP connections, which PostgreSQL logs as received
    // and then forgets silently (nothing was sent). A startup that reached PostgreSQL leaves
    // more lines from the same backend (authentication, errors).
    let window: Vec<String> = log_since(&env, marker)
        .into_iter()
        .take_while(|l| !l.contains("refused startups end"))
        .collect();
    let pid = |l: &str| {
        l.split_once(" [")
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(p, _)| p.to_owned())
    };
    let received: Vec<&String> = window
        .iter()
        .filter(|l| l.contains("connection received"))
        .filter(|l| {
            let p = pid(l);
            p.is_none()
                || window
                    .iter()
                    .any(|o| !o.contains("connection received") && pid(o) == p)
        })
        .collect();
    assert!(received.is_empty(), "{received:#?}");

    // The same users log in normally with one key each.
    let c = env
        .connect("marketing", "marketing", "postgres")
        .await
        .unwrap();
    let row = c
        .query_one("SELECT session_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "marketing");
    assert_eq!(row.get::<_, String>(1), "postgres");
}

#[tokio::test]
async fn postgres_logging_in_someone_else_ends_the_session() {
    let env = Env::start().await;
    let direct = env.direct().await;
    // PostgreSQL cuts user and database names to 63 bytes; pgvakt reads the whole name.
    let user = format!("u{}", "x".repeat(62));
    let db = format!("d{}", "y".repeat(62));
    for sql in [
        format!("CREATE ROLE {user} LOGIN"),
        "CREATE ROLE prober LOGIN".to_owned(),
        format!("CREATE DATABASE {db}"),
        "CREATE DATABASE prober".to_owned(),
    ] {
        direct.batch_execute(&sql).await.unwrap();
    }
    env.trust_user(&user).await;
    env.trust_user("prober").await;
    let long_user = format!("{user}_as_someone_else");
    let long_db = format!("{db}_elsewhere");

    for (params, message) in [
        (
            pairs(&[(b"user", long_user.as_bytes()), (b"database", b"postgres")]),
            format!("PostgreSQL logged in user \"{user}\", but the startup named \"{long_user}\""),
        ),
        (
            pairs(&[(b"user", b"prober"), (b"database", long_db.as_bytes())]),
            format!(
                "PostgreSQL connected to a different database than the startup named (\"{long_db}\")"
            ),
        ),
    ] {
        let mut raw = send_startup(env.proxy_port(), client_tls(&env.certs.ca_cert), &params).await;
        let got = until_closed_or_ready(&mut raw).await;
        let sequence = tags(&got);
        assert!(
            sequence.starts_with('R') && sequence.ends_with('E') && !sequence.contains('Z'),
            "{message}: login then FATAL, never ReadyForQuery; got {sequence}"
        );
        assert_eq!(
            got.last().map(wire),
            Some(fatal(
                "28000",
                &format!("pgvakt: the session's identity could not be confirmed: {message}")
            )),
            "{:?}",
            got.last().and_then(|m| m.field(b'M'))
        );
        assert!(raw.recv().await.is_none(), "{message}: the session is closed");
    }

    // The upstream sessions were closed too.
    let mut left = -1;
    for _ in 0..50 {
        left = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename IN ($1, 'prober')",
                &[&user],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "upstream sessions still open");

    // An empty database means the user's own, for PostgreSQL and pgvakt alike; the identity
    // probe's answer never reaches the client.
    let mut raw = send_startup(
        env.proxy_port(),
        client_tls(&env.certs.ca_cert),
        &pairs(&[(b"user", b"prober"), (b"database", b"")]),
    )
    .await;
    let login = until_closed_or_ready(&mut raw).await;
    let sequence = tags(&login);
    assert!(
        sequence.starts_with('R') && sequence.ends_with("KZ") && !sequence.contains('E'),
        "{sequence}"
    );
    assert_eq!(wire(login.last().unwrap()), b"Z\0\0\0\x05I");
    raw.send(&query("SELECT current_database()")).await.unwrap();
    let answer = raw.until_ready().await;
    assert_eq!(tags(&answer), "TDCZ");
    assert_eq!(&answer[1].body[..], b"\0\x01\0\0\0\x06prober");
}

#[tokio::test]
async fn ordinary_logins_still_work() {
    let env = Env::start_demo(20).await;
    for user in ["admin", "marketing"] {
        let c = env.connect(user, user, "crm").await.expect(user);
        let row = c
            .query_one("SELECT session_user::text, current_database()::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(row.get::<_, String>(1), "crm");
    }

    // psql, as people use it.
    let dsn = format!(
        "host=127.0.0.1 port={} user=marketing password=marketing dbname=crm sslmode=verify-ca sslrootcert={}",
        env.proxy_port(),
        env.certs.ca_cert.display()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .env("PGCLIENTENCODING", "UTF8")
            .args([
                "-X",
                "-At",
                &dsn,
                "-c",
                "SELECT session_user, current_database()",
            ])
            .output()
            .expect("run psql")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "marketing|crm\n");

    // A raw client sees the login as PostgreSQL sends it: AuthenticationOk, ParameterStatus,
    // BackendKeyData, ReadyForQuery, and then only the answers to its own queries.
    env.trust_user("marketing").await;
    let mut raw = send_startup(
        env.proxy_port(),
        client_tls(&env.certs.ca_cert),
        &pairs(&[(b"user", b"marketing"), (b"database", b"crm")]),
    )
    .await;
    let login = until_closed_or_ready(&mut raw).await;
    assert_eq!(wire(&login[0]), b"R\0\0\0\x08\0\0\0\0");
    let sequence = tags(&login);
    assert!(sequence[1..].trim_start_matches('S') == "KZ", "{sequence}");
    assert!(login
        .iter()
        .any(|m| m.tag == b'S' && m.body.starts_with(b"session_authorization\0marketing\0")));
    raw.send(&query("SELECT 1")).await.unwrap();
    assert_eq!(tags(&raw.until_ready().await), "TDCZ");
}
