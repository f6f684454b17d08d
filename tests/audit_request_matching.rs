//! Every answer is matched to the request it answers, with what that request really runs: a
//! prepared statement or cursor redefined where pgvakt's view of the session's names cannot
//! follow in time (inside one Query text, `DEALLOCATE p; PREPARE p AS ...; EXECUTE p`, or after
//! `ROLLBACK TO SAVEPOINT` took back a cursor PostgreSQL then lets a pipelined `DECLARE` reuse),
//! and a client that pipelines more requests than the trail follows at once. Each read must be
//! recorded with what it reads, and the result's hidden subject keys must never reach the
//! client.

use crate::common;
use crate::common::trail::all_records as records;

use std::path::Path;
use std::time::Duration;

use common::raw::{self, Raw};
use common::{Env, EnvOptions};
use serde_json::Value;

async fn start() -> (Env, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(40),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    (env, keys)
}

/// Completion records of `user` whose tables name `column`, once the session's disconnect
/// record is written (so every record of the session is on disk).
async fn reads_naming(dir: &Path, user: &str, column: &str) -> Vec<Value> {
    for _ in 0..100 {
        let all = records(dir);
        let ended = all
            .iter()
            .any(|r| r["user"] == user && r["event"] == "disconnect");
        if ended {
            return all
                .into_iter()
                .filter(|r| r["user"] == user && r["event"] == "statement_read")
                .filter(|r| {
                    r["tables"].as_array().is_some_and(|ts| {
                        ts.iter().any(|t| {
                            t["columns"]
                                .as_array()
                                .is_some_and(|cs| cs.iter().any(|c| c["column"] == column))
                        })
                    })
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no disconnect record of {user}: {:#?}", records(dir));
}

/// Names of the fields of every RowDescription in `msgs`.
fn field_names(msgs: &[raw::Msg]) -> Vec<String> {
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| m.tag == b'T') {
        let n = u16::from_be_bytes([m.body[0], m.body[1]]) as usize;
        let mut i = 2;
        for _ in 0..n {
            let end = i + m.body[i..].iter().position(|&b| b == 0).expect("name");
            out.push(String::from_utf8_lossy(&m.body[i..end]).into_owned());
            i = end + 1 + 18;
        }
    }
    out
}

fn data_rows(msgs: &[raw::Msg]) -> usize {
    msgs.iter().filter(|m| m.tag == b'D').count()
}

fn errors(msgs: &[raw::Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.field(b'M'))
        .collect()
}

/// Send `sqls` as Query messages in one write; the answers up to each ReadyForQuery.
async fn pipelined(c: &mut Raw, sqls: &[&str]) -> Vec<raw::Msg> {
    let bytes: Vec<u8> = sqls.iter().flat_map(|s| raw::query(s)).collect();
    c.send(&bytes).await.expect("send");
    let mut out = Vec::new();
    for _ in sqls {
        out.extend(c.until_ready().await);
    }
    out
}

#[tokio::test]
async fn a_name_redefined_in_the_text_that_runs_it_is_recorded_as_redefined() {
    let (env, keys) = start().await;
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    let m = pipelined(
        &mut c,
        &[
            "PREPARE p AS SELECT 1 AS one",
            "DEALLOCATE p; PREPARE p AS SELECT email FROM contacts WHERE id = 3; EXECUTE p",
            "BEGIN",
            "DECLARE c CURSOR FOR SELECT 1 AS one",
            "CLOSE c; DECLARE c CURSOR FOR SELECT phone FROM contacts WHERE id = 4; FETCH ALL FROM c",
            "COMMIT",
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    assert_eq!(field_names(&m), ["email", "phone"]);
    assert_eq!(data_rows(&m), 2);
    drop(c);
    let dir = keys.path().join("audit");
    let emails = reads_naming(&dir, "secretary", "email").await;
    assert_eq!(emails.len(), 1, "the EXECUTE read email: {emails:#?}");
    let phones = reads_naming(&dir, "secretary", "phone").await;
    assert_eq!(phones.len(), 1, "the FETCH read phone: {phones:#?}");
}

#[tokio::test]
async fn a_cursor_a_savepoint_took_back_is_not_what_a_pipelined_fetch_reads() {
    let (env, keys) = start().await;
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    let took_back = [
        "BEGIN",
        "SAVEPOINT s",
        "DECLARE c CURSOR FOR SELECT 1 AS one",
        "ROLLBACK TO SAVEPOINT s",
    ];
    let m = pipelined(&mut c, &took_back).await;
    assert_eq!(errors(&m), Vec::<String>::new());
    // PostgreSQL dropped c with the savepoint, so this DECLARE succeeds; the FETCH sent right
    // after it would read the new cursor while pgvakt still sees the old one.
    let m = pipelined(
        &mut c,
        &[
            "DECLARE c CURSOR FOR SELECT email FROM contacts WHERE id = 5",
            "FETCH ALL FROM c",
            "ROLLBACK",
        ],
    )
    .await;
    let refused = errors(&m);
    assert!(
        refused.len() == 1 && refused[0].contains("cursor \"c\" is being defined again"),
        "{refused:?}"
    );
    assert_eq!(data_rows(&m), 0);
    assert!(field_names(&m).is_empty(), "{:?}", field_names(&m));
    // Once the DECLARE is answered the name is followed again.
    let m = pipelined(&mut c, &took_back).await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let m = pipelined(
        &mut c,
        &["DECLARE c CURSOR FOR SELECT email FROM contacts WHERE id = 5"],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let m = pipelined(&mut c, &["FETCH ALL FROM c", "COMMIT"]).await;
    assert_eq!(errors(&m), Vec::<String>::new());
    assert_eq!(data_rows(&m), 1);
    assert_eq!(
        field_names(&m),
        ["email"],
        "the hidden subject key never reaches the client"
    );
    drop(c);
    let dir = keys.path().join("audit");
    let emails = reads_naming(&dir, "secretary", "email").await;
    assert_eq!(emails.len(), 1, "the FETCH read email: {emails:#?}");
    assert_eq!(emails[0]["statement"]["command"], "FETCH", "{}", emails[0]);
    assert_eq!(emails[0]["subject_count"], 1, "{}", emails[0]);
}

#[tokio::test]
async fn a_client_that_pipelines_past_the_trails_queue_gets_no_hidden_key() {
    let (env, keys) = start().await;
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let c = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    let (mut rd, mut wr) = tokio::io::split(c.stream);
    let syncs = 80_000;
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut bytes = raw::query("SELECT pg_sleep(2)");
        bytes.extend(raw::query("SELECT email FROM contacts WHERE id = 6"));
        for _ in 0..syncs {
            bytes.extend(raw::sync());
        }
        wr.write_all(&bytes).await.expect("send");
        wr.flush().await.expect("flush");
        wr
    });
    let mut msgs = Vec::new();
    let mut ready = 0;
    while ready < syncs + 2 {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 5];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        rd.read_exact(&mut body).await.expect("body");
        if head[0] == b'Z' {
            ready += 1;
        } else {
            msgs.push(raw::Msg { tag: head[0], body });
        }
    }
    drop(writer.await.expect("writer"));
    assert_eq!(errors(&msgs), Vec::<String>::new());
    assert_eq!(field_names(&msgs), ["pg_sleep", "email"]);
    let dir = keys.path().join("audit");
    drop(rd);
    let emails = reads_naming(&dir, "secretary", "email").await;
    assert_eq!(emails.len(), 1, "the SELECT read email: {emails:#?}");
}

#[tokio::test]
async fn explain_analyze_of_a_prepared_write_is_recorded_as_the_write() {
    let (env, keys) = start().await;
    // dpo: roles with row rules may not run EXPLAIN ANALYZE (its row counts would tell how
    // many rows they hide).
    env.trust_user("dpo").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "dpo", "crm").await;
    let m = pipelined(
        &mut c,
        &[
            "PREPARE w AS UPDATE contacts SET notes = 'explained' WHERE id = 7",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE w",
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    assert_eq!(field_names(&m), ["QUERY PLAN"], "the plan is the result");
    assert!(data_rows(&m) >= 1);
    drop(c);
    let dir = keys.path().join("audit");
    for _ in 0..100 {
        if records(&dir)
            .iter()
            .any(|r| r["user"] == "dpo" && r["event"] == "disconnect")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes: Vec<Value> = records(&dir)
        .into_iter()
        .filter(|r| r["user"] == "dpo" && r["event"] == "statement_write")
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "EXPLAIN ANALYZE ran the UPDATE: {writes:#?}"
    );
    assert_eq!(
        writes[0]["statement"]["command"], "EXPLAIN",
        "{}",
        writes[0]
    );
    let written = writes[0]["tables"].to_string();
    assert!(written.contains("\"notes\""), "{written}");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    let row = admin
        .query_one("SELECT notes FROM contacts WHERE id = 7", &[])
        .await
        .expect("notes");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("explained")
    );
    // A role with row rules is refused, and says why.
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut s = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    let m = pipelined(
        &mut s,
        &[
            "PREPARE w AS UPDATE contacts SET notes = 'explained' WHERE id = 7",
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE w",
        ],
    )
    .await;
    let refused = errors(&m);
    assert!(
        refused.len() == 1 && refused[0].contains("EXPLAIN ANALYZE is not allowed"),
        "{refused:?}"
    );
}

/// A Describe of a portal whose redefinition PostgreSQL has not answered yet would show the
/// new cursor's columns, hidden subject key included, while pgvakt still sees the old one: it
/// is refused like a FETCH of that portal.
#[tokio::test]
async fn a_portal_in_doubt_is_not_described() {
    let (env, _keys) = start().await;
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    let took_back = [
        "BEGIN",
        "SAVEPOINT s",
        "DECLARE c CURSOR FOR SELECT 1 AS one",
        "ROLLBACK TO SAVEPOINT s",
    ];
    let m = pipelined(&mut c, &took_back).await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let mut bytes = raw::query("DECLARE c CURSOR FOR SELECT email FROM contacts WHERE id = 5");
    bytes.extend(raw::describe(b'P', "c"));
    bytes.extend(raw::sync());
    c.send(&bytes).await.expect("send");
    let mut m = c.until_ready().await;
    m.extend(c.until_ready().await);
    let refused = errors(&m);
    assert!(
        refused.len() == 1 && refused[0].contains("cursor \"c\" is being defined again"),
        "{refused:?}"
    );
    assert!(field_names(&m).is_empty(), "{:?}", field_names(&m));
    // The session goes on, and an answered DECLARE is described as the client sees it.
    let m = pipelined(
        &mut c,
        &[
            "ROLLBACK",
            "BEGIN",
            "DECLARE c CURSOR FOR SELECT email FROM contacts WHERE id = 5",
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let mut bytes = raw::describe(b'P', "c");
    bytes.extend(raw::sync());
    c.send(&bytes).await.expect("send");
    let m = c.until_ready().await;
    assert_eq!(errors(&m), Vec::<String>::new());
    assert_eq!(field_names(&m), ["email"]);
}
