//! Reads are recorded when they are executed, under what the name executed was defined to read:
//! `EXECUTE` of a prepared statement, `FETCH`/`MOVE` of a cursor (held or not), a protocol
//! Execute of a SQL cursor's portal, each part of a portal read with a row limit, COPY, and the
//! columns a write returns. Statement and portal names follow PostgreSQL: a Parse or `PREPARE`
//! that failed never created its name. Where the text names no personal data, the result's
//! column origins still get the read recorded.

use crate::common;
use crate::common::trail::all_records as records;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use common::raw::{self, Raw};
use common::{Env, EnvOptions};
use serde_json::Value;

struct Audited {
    env: Env,
    keys: tempfile::TempDir,
}

impl Audited {
    fn dir(&self) -> PathBuf {
        self.keys.path().join("audit")
    }
}

async fn start() -> Audited {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(80),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    // Row rules (which hide restricted people from every role but dpo) are row_rules.rs's
    // subject; here every person is one the roles may process.
    env.setup_crm("DELETE FROM restrictions", "no restrictions")
        .await;
    Audited { env, keys }
}

/// Completion records (reads and writes) of `user`, once `n` of them are written.
async fn completions(a: &Audited, user: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r: Vec<Value> = records(&a.dir())
            .into_iter()
            .filter(|r| {
                r["user"] == user
                    && (r["event"] == "statement_read" || r["event"] == "statement_write")
            })
            .collect();
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} completion records of {user}:\n{:#?}",
        records(&a.dir())
    );
}

/// Event ids of the records `audit search --subject` finds for `subject` (sure matches, not the
/// possible reads whose subjects are unknown).
fn found_for_subject(a: &Audited, subject: &str) -> HashSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "search", "--subject", subject, "--format", "json"])
        .arg("--key-file")
        .arg(a.keys.path().join("subject.key"))
        .arg(a.dir())
        .output()
        .expect("run pgvakt audit search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|r| r["match"] == "yes")
        .filter_map(|r| r["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// (table, access, sorted columns) of a record.
fn tables(r: &Value) -> Vec<(String, String, Vec<String>)> {
    r["tables"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut cols: Vec<String> = t["columns"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .filter_map(|c| c["column"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    cols.sort();
                    (
                        t["table"].as_str().unwrap_or_default().to_owned(),
                        t["access"].as_str().unwrap_or_default().to_owned(),
                        cols,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_of(table: &str, cols: &[&str]) -> (String, String, Vec<String>) {
    (
        table.to_owned(),
        "read".to_owned(),
        cols.iter().map(|c| (*c).to_owned()).collect(),
    )
}

/// The record's exact identity, shape and subjects: one subject, `subject`, found by search.
fn assert_read(a: &Audited, r: &Value, user: &str, command: &str, rows: u64, subject: &str) {
    assert_eq!(r["event"], "statement_read", "{r}");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["user"], user, "{r}");
    assert_eq!(r["role"], user, "{r}");
    assert_eq!(r["statement"]["command"], command, "{r}");
    assert_eq!(r["rows"], rows, "{r}");
    assert_eq!(r["subject_count"], 1, "{r}");
    assert!(r.get("subjects_unknown").is_none_or(|u| u == false), "{r}");
    let id = r["event_id"].as_str().expect("event id");
    assert!(
        found_for_subject(a, subject).contains(id),
        "search --subject {subject} does not find {r}"
    );
}

#[tokio::test]
async fn prepared_statements_and_cursors_are_recorded_when_executed() {
    let a = start().await;
    let c = a
        .env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let run = |sql: &'static str| {
        let c = &c;
        async move { c.simple_query(sql).await.map(|_| ()) }
    };
    run("PREPARE p AS SELECT first_name, email FROM contacts WHERE id = $1")
        .await
        .expect("prepare");
    run("EXECUTE p(42)").await.expect("execute");
    // A PREPARE that PostgreSQL refuses never creates its name; one that finds the name taken
    // leaves the first definition in place.
    run("PREPARE q AS SELECT email FROM contacts WHERE id = 'not a number'")
        .await
        .expect_err("PostgreSQL refuses it");
    run("PREPARE q AS SELECT phone FROM contacts WHERE id = 43")
        .await
        .expect("prepare q");
    run("PREPARE q AS SELECT 1").await.expect_err("q exists");
    run("EXECUTE q").await.expect("execute q");
    // A cursor: FETCH returns rows, MOVE skips them.
    run("BEGIN").await.expect("begin");
    run("DECLARE c CURSOR FOR SELECT last_name FROM contacts WHERE id IN (44, 45) ORDER BY id")
        .await
        .expect("declare");
    run("FETCH 1 FROM c").await.expect("fetch");
    run("MOVE 1 IN c").await.expect("move");
    run("COMMIT").await.expect("commit");
    // A held cursor outlives its transaction.
    run("DECLARE h CURSOR WITH HOLD FOR SELECT street_address FROM contacts WHERE id = 46")
        .await
        .expect("declare with hold");
    run("FETCH ALL FROM h").await.expect("fetch held");
    run("CLOSE h").await.expect("close");
    // After DEALLOCATE the name can hold something else; executing that reads nothing personal.
    run("DEALLOCATE p").await.expect("deallocate");
    run("PREPARE p AS SELECT 1 AS one")
        .await
        .expect("prepare again");
    run("EXECUTE p").await.expect("execute again");
    // COPY of personal data is a read with its rows counted.
    let copied = c
        .copy_out("COPY (SELECT email FROM contacts WHERE id <= 5) TO STDOUT")
        .await
        .expect("copy");
    let copied: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(copied)
        .await
        .expect("copy data");
    assert!(!copied.is_empty());
    drop(c);

    let recs = completions(&a, "secretary", 6).await;
    let commands: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["statement"]["command"].as_str())
        .collect();
    assert_eq!(
        commands,
        ["EXECUTE", "EXECUTE", "FETCH", "MOVE", "FETCH", "COPY"],
        "one record per execution, none for PREPARE, DECLARE or what reads nothing personal: {recs:#?}"
    );
    assert_read(&a, &recs[0], "secretary", "EXECUTE", 1, "42");
    // Its intent was synced before the EXECUTE was forwarded, naming what it reads.
    let intent = recs[0]["intent"].as_str().expect("an intent");
    let all = records(&a.dir());
    let intent = all
        .iter()
        .find(|r| r["event_id"] == intent)
        .expect("the intent record");
    assert_eq!(intent["event"], "statement_intent");
    assert_eq!(intent["statement"]["command"], "EXECUTE");
    assert_eq!(tables(intent), tables(&recs[0]));
    assert_eq!(
        tables(&recs[0]),
        [read_of("public.contacts", &["email", "first_name"])]
    );
    assert_read(&a, &recs[1], "secretary", "EXECUTE", 1, "43");
    assert_eq!(tables(&recs[1]), [read_of("public.contacts", &["phone"])]);
    assert_read(&a, &recs[2], "secretary", "FETCH", 1, "44");
    assert_eq!(
        tables(&recs[2]),
        [read_of("public.contacts", &["last_name"])]
    );
    assert_eq!(recs[3]["rows"], 0, "MOVE returns no rows: {}", recs[3]);
    assert!(recs[3].get("subjects_unknown").is_none(), "{}", recs[3]);
    assert_eq!(
        tables(&recs[3]),
        [read_of("public.contacts", &["last_name"])]
    );
    assert_read(&a, &recs[4], "secretary", "FETCH", 1, "46");
    assert_eq!(
        tables(&recs[4]),
        [read_of("public.contacts", &["street_address"])]
    );
    assert_eq!(recs[5]["rows"], 5, "{}", recs[5]);
    assert_eq!(recs[5]["subjects_unknown"], true, "{}", recs[5]);
    assert_eq!(tables(&recs[5]), [read_of("public.contacts", &["email"])]);
    // The definitions themselves read nothing.
    assert!(
        !found_for_subject(&a, "45").iter().any(|_| true),
        "the row MOVE skipped was never returned"
    );
}

/// Execute `portal` for at most `rows` rows.
fn execute(portal: &str, rows: i32) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&rows.to_be_bytes());
    raw::msg(b'E', &b)
}

/// Bind `stmt` to `portal`, no parameters, text results.
fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    raw::msg(b'B', &b)
}

/// Send `msgs` at once; the answers up to the ReadyForQuery of each Query and Sync.
async fn exchange(c: &mut Raw, msgs: &[Vec<u8>]) -> Vec<raw::Msg> {
    c.send(&msgs.concat()).await.expect("send");
    let mut out = Vec::new();
    for _ in msgs.iter().filter(|m| m[0] == b'Q' || m[0] == b'S') {
        out.extend(c.until_ready().await);
    }
    out
}

fn errors(msgs: &[raw::Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.field(b'C'))
        .collect()
}

#[tokio::test]
async fn protocol_names_follow_postgresql_and_portal_parts_are_each_recorded() {
    let a = start().await;
    a.env.trust_user("secretary").await;
    a.env.trust_user("admin").await;
    let tls = common::client_tls(&a.env.certs.ca_cert);
    let mut c = Raw::connect_db(a.env.proxy_port(), tls.clone(), "secretary", "crm").await;

    // Refused by policy: the name is never created.
    let m = exchange(
        &mut c,
        &[
            raw::parse("s", "SELECT pg_read_file('/etc/hostname')"),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), ["42501"]);
    let m = exchange(
        &mut c,
        &[
            raw::parse("s", "SELECT email FROM contacts WHERE id = 47"),
            bind("", "s"),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());

    // Unnamed statements pipelined as drivers batch them: each Parse replaces the last.
    let m = exchange(
        &mut c,
        &[
            raw::parse("", "SELECT id, last_name FROM contacts WHERE id = 56"),
            bind("", ""),
            raw::execute(),
            raw::parse("", "SELECT id, phone FROM contacts WHERE id = 57"),
            bind("", ""),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());

    // A portal read in parts: one record per part, its rows counted.
    let m = exchange(
        &mut c,
        &[
            raw::query("BEGIN"),
            raw::parse(
                "u",
                "SELECT id, first_name FROM contacts WHERE id <= 25 ORDER BY id",
            ),
            raw::describe(b'S', "u"),
            bind("pt", "u"),
            execute("pt", 10),
            execute("pt", 10),
            execute("pt", 10),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    assert_eq!(
        m.iter().filter(|m| m.tag == b's').count(),
        2,
        "two parts suspended: {:?}",
        m.iter().map(|m| m.tag as char).collect::<String>()
    );
    // A SQL cursor read by a protocol Execute of its portal.
    let m = exchange(
        &mut c,
        &[
            raw::query("DECLARE sc CURSOR FOR SELECT date_of_birth FROM contacts WHERE id IN (48, 49) ORDER BY id"),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let m = exchange(
        &mut c,
        &[raw::describe(b'P', "sc"), execute("sc", 1), raw::sync()],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let row = m.iter().find(|m| m.tag == b'D').expect("a row");
    assert_eq!(
        &row.body[..2],
        &1i16.to_be_bytes(),
        "one column, no hidden key"
    );
    // FETCH sent as a prepared statement, as drivers with server-side cursors do.
    let m = exchange(
        &mut c,
        &[
            raw::parse("", "FETCH 1 FROM sc"),
            bind("", ""),
            raw::describe(b'P', ""),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let fields = m.iter().find(|m| m.tag == b'T').expect("a row description");
    assert_eq!(
        &fields.body[..2],
        &1i16.to_be_bytes(),
        "no hidden key shown"
    );
    exchange(&mut c, &[raw::query("COMMIT")]).await;
    // Close, then the name holds something that reads nothing personal.
    let m = exchange(
        &mut c,
        &[
            raw::close(b'S', "s"),
            raw::parse("s", "SELECT 1"),
            bind("", "s"),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());

    // An unrestricted role: PostgreSQL refuses the first Parse of "t", so the second is the
    // statement its Execute runs.
    let mut admin = Raw::connect_db(a.env.proxy_port(), tls, "admin", "crm").await;
    let m = exchange(&mut admin, &[raw::parse("t", "SELEC email"), raw::sync()]).await;
    assert_eq!(errors(&m), ["42601"]);
    let m = exchange(
        &mut admin,
        &[
            raw::parse("t", "SELECT id, email FROM contacts WHERE id = 50"),
            raw::describe(b'S', "t"),
            bind("", "t"),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());

    let recs = completions(&a, "secretary", 8).await;
    assert_eq!(recs.len(), 8, "{recs:#?}");
    assert_read(&a, &recs[0], "secretary", "SELECT", 1, "47");
    assert_eq!(tables(&recs[0]), [read_of("public.contacts", &["email"])]);
    let batch: Vec<(String, String, Vec<String>)> = recs[1..3].iter().flat_map(tables).collect();
    assert_eq!(
        batch,
        [
            read_of("public.contacts", &["last_name"]),
            read_of("public.contacts", &["phone"])
        ]
    );
    let recs = recs[2..].to_vec();
    let parts: Vec<u64> = recs[1..4]
        .iter()
        .map(|r| r["rows"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(parts, [10, 10, 5], "{recs:#?}");
    for r in &recs[1..4] {
        assert_eq!(tables(r), [read_of("public.contacts", &["first_name"])]);
        assert_eq!(r["subject_count"], r["rows"], "{r}");
    }
    assert!(found_for_subject(&a, "21").contains(recs[3]["event_id"].as_str().expect("id")));
    assert_read(&a, &recs[4], "secretary", "DECLARE", 1, "48");
    assert_eq!(
        tables(&recs[4]),
        [read_of("public.contacts", &["date_of_birth"])]
    );
    assert_read(&a, &recs[5], "secretary", "FETCH", 1, "49");
    assert_eq!(tables(&recs[5]), tables(&recs[4]));
    let admin_recs = completions(&a, "admin", 1).await;
    assert_eq!(admin_recs.len(), 1, "{admin_recs:#?}");
    assert_read(&a, &admin_recs[0], "admin", "SELECT", 1, "50");
    assert_eq!(
        tables(&admin_recs[0]),
        [read_of("public.contacts", &["email"])]
    );
}

#[tokio::test]
async fn writes_record_the_columns_they_return_and_the_subjects_they_touch() {
    let a = start().await;
    let c = a
        .env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    c.simple_query(
        "UPDATE contacts SET phone = '+46 70 000 0001' WHERE id = 51 RETURNING first_name, email",
    )
    .await
    .expect("update returning");
    let msgs = c
        .simple_query("UPDATE contacts SET phone = '+46 70 000 0002' WHERE id = 52")
        .await
        .expect("update");
    // The hidden key is a result the client did not ask for: it sees none.
    assert!(
        matches!(
            msgs.as_slice(),
            [tokio_postgres::SimpleQueryMessage::CommandComplete(1)]
        ),
        "{msgs:?}"
    );
    let stmt = c
        .prepare("UPDATE contacts SET phone = $1 WHERE id = $2")
        .await
        .expect("prepare");
    assert!(stmt.columns().is_empty(), "Describe answers NoData");
    let n = c
        .execute(&stmt, &[&"+46 70 000 0003", &53i64])
        .await
        .expect("extended update");
    assert_eq!(n, 1);
    let recs = completions(&a, "secretary", 3).await;
    let (ret, plain) = (&recs[0], &recs[1]);
    for r in [ret, plain] {
        assert_eq!(r["event"], "statement_write", "{r}");
        assert_eq!(r["rows"], 1, "{r}");
        assert_eq!(r["subject_count"], 1, "{r}");
    }
    let write = (
        "public.contacts".to_owned(),
        "write".to_owned(),
        vec!["phone".to_owned()],
    );
    assert_eq!(
        tables(ret),
        [
            read_of("public.contacts", &["email", "first_name"]),
            write.clone()
        ]
    );
    assert_eq!(tables(plain), [write]);
    let id = |r: &Value| r["event_id"].as_str().expect("id").to_owned();
    assert!(found_for_subject(&a, "51").contains(&id(ret)), "{ret}");
    assert!(found_for_subject(&a, "52").contains(&id(plain)), "{plain}");
    assert_eq!(tables(&recs[2]), tables(plain));
    assert!(
        found_for_subject(&a, "53").contains(&id(&recs[2])),
        "{}",
        recs[2]
    );
}

#[tokio::test]
async fn unrestricted_reads_are_recorded_by_result_origins_where_the_text_shows_nothing() {
    let a = start().await;
    let crm = a.env.cluster.connect("crm").await.expect("direct crm");
    crm.batch_execute(
        "CREATE FUNCTION open_people() RETURNS refcursor LANGUAGE plpgsql AS $$ \
         DECLARE c refcursor := 'people'; \
         BEGIN OPEN c FOR SELECT id, email FROM contacts WHERE id IN (53, 54) ORDER BY id; RETURN c; END $$; \
         GRANT EXECUTE ON FUNCTION open_people() TO PUBLIC",
    )
    .await
    .expect("function");

    let admin = a.env.connect("admin", "admin", "crm").await.expect("admin");
    admin.simple_query("BEGIN").await.expect("begin");
    admin
        .simple_query("SELECT open_people()")
        .await
        .expect("open");
    admin
        .simple_query("FETCH ALL FROM people")
        .await
        .expect("fetch from a cursor pgvakt never saw declared");
    admin.simple_query("COMMIT").await.expect("commit");
    // A table renamed behind pgvakt's back: the text names no relation pgvakt knows, the
    // result's origins are still the personal columns.
    crm.batch_execute("ALTER TABLE contacts RENAME TO people_renamed")
        .await
        .expect("rename");
    admin
        .simple_query("SELECT id, email FROM people_renamed WHERE id = 55")
        .await
        .expect("read renamed");

    let recs = completions(&a, "admin", 3).await;
    let fetch = recs
        .iter()
        .find(|r| r["statement"]["command"] == "FETCH")
        .expect("the FETCH record");
    assert_eq!(tables(fetch), [read_of("public.contacts", &["email"])]);
    assert_eq!(fetch["rows"], 2, "{fetch}");
    assert_eq!(fetch["subject_count"], 2, "{fetch}");
    let id = |r: &Value| r["event_id"].as_str().expect("id").to_owned();
    assert!(found_for_subject(&a, "53").contains(&id(fetch)));
    let renamed = recs
        .iter()
        .find(|r| {
            r["statement"]["normalized"]
                .as_str()
                .is_some_and(|n| n.contains("people_renamed"))
        })
        .expect("the read of the renamed table");
    assert_eq!(tables(renamed), [read_of("public.contacts", &["email"])]);
    assert!(
        found_for_subject(&a, "55").contains(&id(renamed)),
        "{renamed}"
    );
}

/// Rows of an Execute whose statement was never described still name their subjects, under
/// the subject type the table's key refers to (an activity's subject is its contact).
#[tokio::test]
async fn hidden_keys_without_a_describe_name_the_subject_type() {
    let a = start().await;
    a.env.trust_user("secretary").await;
    let crm = a.env.cluster.connect("crm").await.expect("direct crm");
    let contact: i64 = crm
        .query_one("SELECT min(contact_id) FROM activities", &[])
        .await
        .expect("an activity")
        .get(0);
    let tls = common::client_tls(&a.env.certs.ca_cert);
    let mut c = Raw::connect_db(a.env.proxy_port(), tls, "secretary", "crm").await;
    let m = exchange(
        &mut c,
        &[
            raw::parse(
                "",
                &format!("SELECT subject FROM activities WHERE contact_id = {contact} LIMIT 1"),
            ),
            bind("", ""),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(errors(&m), Vec::<String>::new());
    let row = m.iter().find(|m| m.tag == b'D').expect("a row");
    assert_eq!(&row.body[..2], &1i16.to_be_bytes(), "no hidden key shown");
    // A write run with a row limit completes as the write alone would: no rows, no suspension.
    let m = exchange(
        &mut c,
        &[
            raw::parse(
                "w",
                "UPDATE contacts SET phone = '+46 70 000 0009' WHERE id = 60",
            ),
            bind("", "w"),
            execute("", 1),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(
        m.iter().map(|m| m.tag as char).collect::<String>(),
        "12CZ",
        "ParseComplete, BindComplete, CommandComplete"
    );
    let recs = completions(&a, "secretary", 2).await;
    assert_eq!(recs[1]["event"], "statement_write", "{}", recs[1]);
    assert_eq!(recs[1]["rows"], 1, "{}", recs[1]);
    assert!(found_for_subject(&a, "60").contains(recs[1]["event_id"].as_str().expect("id")));
    assert_read(&a, &recs[0], "secretary", "SELECT", 1, &contact.to_string());
    assert_eq!(
        tables(&recs[0]),
        [read_of("public.activities", &["subject"])]
    );
    assert_eq!(
        recs[0]["subjects"][0]["table"], "public.contacts",
        "one pseudonym per person: {}",
        recs[0]
    );
}
