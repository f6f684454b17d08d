//! What PostgreSQL's own clients rely on keeps working for an unrestricted role (`admin`) under
//! the demo policy, as on a direct connection, while a restricted role (`secretary`) gets the
//! answers PostgreSQL would give where its text cannot be analysed, and keeps its session:
//! the real backend process id (pg_stat_activity, pg_terminate_backend, the sender of a
//! notification) with cancel keys that still only the session itself holds; any
//! client_encoding; invalid bytes and malformed texts answered with PostgreSQL's errors;
//! FunctionCall (libpq's large objects) relayed.

use crate::common;

use std::time::Duration;

use common::raw::{msg, query, sync, Msg, Raw};
use common::{client_tls, Env};
use tokio::io::AsyncWriteExt;

async fn crm() -> Env {
    let env = Env::start_audited_demo(20).await;
    env.trust_user("admin").await;
    env.trust_user("secretary").await;
    env
}

async fn raw(env: &Env, user: &str) -> (Raw, i32, Vec<u8>) {
    Raw::connect_keyed(
        env.proxy_port(),
        client_tls(&env.certs.ca_cert),
        user,
        "crm",
    )
    .await
}

/// The first column of the first DataRow, as bytes.
fn first_value(msgs: &[Msg]) -> Option<Vec<u8>> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let len = i32::from_be_bytes(row.body.get(2..6)?.try_into().ok()?);
    Some(row.body.get(6..6 + usize::try_from(len).ok()?)?.to_vec())
}

/// SQLSTATE and message of the first ErrorResponse.
fn error(msgs: &[Msg]) -> Option<(String, String)> {
    let e = msgs.iter().find(|m| m.tag == b'E')?;
    Some((e.field(b'C')?, e.field(b'M')?))
}

/// The session answers a plain query after whatever came before.
async fn still_works(r: &mut Raw) {
    r.send(&query("SELECT 41 + 1")).await.unwrap();
    let msgs = r.until_ready().await;
    assert_eq!(first_value(&msgs).as_deref(), Some(&b"42"[..]), "{msgs:?}");
}

/// A CancelRequest on a plaintext connection, as libpq sends it.
async fn cancel(port: u16, pid: i32, secret: &[u8]) {
    let mut packet = Vec::new();
    packet.extend_from_slice(&((12 + secret.len()) as u32).to_be_bytes());
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(secret);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(&packet).await.unwrap();
    let _ = tcp.shutdown().await;
}

async fn state_of(c: &tokio_postgres::Client, pid: i32) -> Option<String> {
    c.query_opt("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn clients_see_postgresql_s_process_id_and_cancel_keys_stay_private() {
    let env = crm().await;
    let admin = env.connect("admin", "admin", "crm").await.unwrap();
    let (mut a, a_pid, a_secret) = raw(&env, "admin").await;
    let (mut b, b_pid, b_secret) = raw(&env, "secretary").await;

    // The process id a client sees is the backend's own, for both roles.
    a.send(&query("SELECT pg_backend_pid()")).await.unwrap();
    let seen = first_value(&a.until_ready().await).unwrap();
    assert_eq!(String::from_utf8(seen).unwrap(), a_pid.to_string());
    b.send(&query("SELECT pg_backend_pid()")).await.unwrap();
    let seen = first_value(&b.until_ready().await).unwrap();
    assert_eq!(String::from_utf8(seen).unwrap(), b_pid.to_string());
    let who: String = admin
        .query_one(
            "SELECT usename::text FROM pg_stat_activity WHERE pid = $1",
            &[&a_pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "admin");

    // The secret is the proxy's, not the backend's, and a key must match whole.
    a.send(&query("SELECT pg_sleep(30)")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&admin, a_pid).await.as_deref(), Some("active"));
    let mut wrong = a_secret.clone();
    wrong[0] ^= 0x40;
    cancel(env.proxy_port(), a_pid, &wrong).await;
    // Another session's secret with this session's process id, and the other way round.
    cancel(env.proxy_port(), a_pid, &b_secret).await;
    cancel(env.proxy_port(), b_pid, &a_secret).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        state_of(&admin, a_pid).await.as_deref(),
        Some("active"),
        "a guessed key cancelled the query"
    );
    cancel(env.proxy_port(), a_pid, &a_secret).await;
    let msgs = tokio::time::timeout(Duration::from_secs(10), a.until_ready())
        .await
        .expect("cancelled in time");
    assert_eq!(error(&msgs).map(|e| e.0).as_deref(), Some("57014"));
    still_works(&mut a).await;
    still_works(&mut b).await;

    // pg_terminate_backend with the process id the client was given ends that session.
    let done: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&a_pid])
        .await
        .unwrap()
        .get(0);
    assert!(done);
    let msgs = tokio::time::timeout(Duration::from_secs(10), a.until_ready())
        .await
        .expect("terminated in time");
    assert_eq!(error(&msgs).map(|e| e.0).as_deref(), Some("57P01"));
    assert!(a.recv().await.is_none(), "session must be closed");
    still_works(&mut b).await;
}

#[tokio::test]
async fn a_notification_names_the_sender_s_real_process_id() {
    let env = crm().await;
    let (client, conn) = env
        .pg_config("admin", "admin", "crm")
        .connect(env.tls())
        .await
        .unwrap();
    let mut rx =
        common::notifications::notifications(conn, |n| (n.process_id(), n.payload().to_owned()));
    client.batch_execute("LISTEN own_events").await.unwrap();
    client
        .batch_execute("NOTIFY own_events, 'mine'")
        .await
        .unwrap();
    let own: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (pid, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((pid, payload.as_str()), (own, "mine"));
}

#[tokio::test]
async fn unrestricted_roles_may_use_any_client_encoding() {
    let env = crm().await;
    let (mut a, _, _) = raw(&env, "admin").await;
    // The byte each encoding writes for a character, and that character in UTF-8.
    for (encoding, byte, utf8) in [
        ("latin9", 0xa4u8, "e282ac"), // €
        ("LATIN1", 0xe9, "c3a9"),     // é
        ("WIN1252", 0x80, "e282ac"),  // €
    ] {
        a.send(&query(&format!("SET client_encoding TO {encoding}")))
            .await
            .unwrap();
        let msgs = a.until_ready().await;
        assert!(error(&msgs).is_none(), "{msgs:?}");
        let mut sql = b"SELECT pg_catalog.encode(pg_catalog.convert_to('caf".to_vec();
        sql.push(byte);
        sql.extend_from_slice(b"', 'UTF8'), 'hex')\0");
        a.send(&msg(b'Q', &sql)).await.unwrap();
        let msgs = a.until_ready().await;
        assert!(error(&msgs).is_none(), "{encoding}: {:?}", error(&msgs));
        let hex = String::from_utf8(first_value(&msgs).unwrap()).unwrap();
        assert_eq!(hex, format!("636166{utf8}"), "{encoding}");
        // Results come back in the session's encoding, byte for byte.
        let mut sql = b"SELECT '".to_vec();
        sql.push(byte);
        sql.extend_from_slice(b"'::text\0");
        a.send(&msg(b'Q', &sql)).await.unwrap();
        assert_eq!(first_value(&a.until_ready().await), Some(vec![byte]));
    }
    still_works(&mut a).await;
    // The extended protocol too (the session is in WIN1252, where 0xe9 is é as well).
    let parse = msg(b'P', b"\0SELECT '\xe9'::text\0\0\0");
    let bind = common::raw::bind("", 0);
    let execute = common::raw::execute();
    a.send(&[parse, bind, execute, sync()].concat())
        .await
        .unwrap();
    let msgs = a.until_ready().await;
    assert!(error(&msgs).is_none(), "{:?}", error(&msgs));
    assert_eq!(first_value(&msgs), Some(vec![0xe9]));
}

/// Texts PostgreSQL refuses to read get its own error in both roles, and both sessions go on.
#[tokio::test]
async fn unreadable_texts_get_postgresql_s_errors_and_the_session_goes_on() {
    let env = crm().await;
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"SELECT '\xff'\0",
            "22021",
            "invalid byte sequence for encoding \"UTF8\": 0xff",
        ),
        (
            b"SELECT '\xc3\x28'\0",
            "22021",
            "invalid byte sequence for encoding \"UTF8\": 0xc3 0x28",
        ),
        (b"SELECT 1\0SELECT 2\0", "08P01", "invalid message format"),
        (b"SELECT 1", "08P01", "invalid string in message"),
    ];
    for user in ["admin", "secretary"] {
        let (mut r, _, _) = raw(&env, user).await;
        for (body, code, message) in cases {
            r.send(&msg(b'Q', body)).await.unwrap();
            let msgs = r.until_ready().await;
            assert_eq!(
                error(&msgs),
                Some((code.to_owned(), message.to_owned())),
                "{user}: {body:?}"
            );
            assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{user}: {body:?}");
            still_works(&mut r).await;
        }
        // Parse, in the extended protocol: the error, then nothing until Sync.
        let parse = msg(b'P', b"\0SELECT '\xff'\0\0\0");
        let bind = common::raw::bind("", 0);
        let execute = common::raw::execute();
        r.send(&[parse, bind, execute, sync()].concat())
            .await
            .unwrap();
        let msgs = r.until_ready().await;
        assert_eq!(
            msgs.iter().map(|m| m.tag).collect::<Vec<_>>(),
            vec![b'E', b'Z'],
            "{user}"
        );
        assert_eq!(error(&msgs).unwrap().0, "22021", "{user}");
        still_works(&mut r).await;
    }
}

/// A restricted role's session cannot leave UTF8: PostgreSQL would read a statement in another
/// encoding differently from the analysis.
#[tokio::test]
async fn restricted_roles_stay_in_utf8() {
    let env = crm().await;
    let (mut r, _, _) = raw(&env, "secretary").await;
    r.send(&query("SET client_encoding TO latin9"))
        .await
        .unwrap();
    let msgs = r.until_ready().await;
    assert_eq!(error(&msgs).map(|e| e.0).as_deref(), Some("42501"));
    still_works(&mut r).await;
    let code = Raw::try_connect_with(
        env.proxy_port(),
        client_tls(&env.certs.ca_cert),
        &[
            ("user", "secretary"),
            ("database", "crm"),
            ("client_encoding", "LATIN9"),
        ],
    )
    .await;
    assert!(
        code.is_some(),
        "a LATIN9 login as secretary must be refused"
    );
}

/// FunctionCall of `lo_creat(mode)` by OID, argument and result in binary.
fn lo_creat_call(oid: u32) -> Vec<u8> {
    const INV_READ_WRITE: i32 = 0x20000 | 0x40000;
    let mut b = Vec::new();
    b.extend_from_slice(&oid.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes()); // one argument format: binary
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes()); // one argument
    b.extend_from_slice(&4i32.to_be_bytes());
    b.extend_from_slice(&INV_READ_WRITE.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes()); // result in binary
    msg(b'F', &b)
}

#[tokio::test]
async fn function_call_is_relayed_for_unrestricted_roles_only() {
    let env = crm().await;
    let admin = env.connect("admin", "admin", "crm").await.unwrap();
    let oid: u32 = admin
        .query_one(
            "SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'lo_creat'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let (mut a, _, _) = raw(&env, "admin").await;
    a.send(&lo_creat_call(oid)).await.unwrap();
    let msgs = a.until_ready().await;
    assert_eq!(
        msgs.iter().map(|m| m.tag).collect::<Vec<_>>(),
        vec![b'V', b'Z'],
        "{:?}",
        error(&msgs)
    );
    let v = &msgs[0].body;
    assert_eq!(i32::from_be_bytes(v[..4].try_into().unwrap()), 4);
    let lo = u32::from_be_bytes(v[4..8].try_into().unwrap());
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1",
            &[&lo],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the large object exists");
    still_works(&mut a).await;

    let (mut s, _, _) = raw(&env, "secretary").await;
    s.send(&lo_creat_call(oid)).await.unwrap();
    let msgs = s.until_ready().await;
    assert_eq!(error(&msgs).map(|e| e.0).as_deref(), Some("42501"));
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'));
    still_works(&mut s).await;
}
