//! The audit trail the proxy writes for real sessions over a real PostgreSQL: what each event
//! holds, that `audit search --subject` finds exactly the sessions that read a subject, that
//! no literal reaches the log, and that a failing sink stops personal-data reads until it
//! recovers.

use crate::common;
use crate::common::trail::all_records as records;

use common::process::PgvaktProcess;
use nix::sys::signal::Signal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{sqlstate, Env, EnvOptions};
use serde_json::Value;

struct Audited {
    env: Env,
    _keys: tempfile::TempDir,
    dir: PathBuf,
    chain_key: PathBuf,
    subject_key: PathBuf,
}

async fn start() -> Audited {
    let keys = tempfile::tempdir().expect("tempdir");
    let chain_key = keys.path().join("chain.key");
    let subject_key = keys.path().join("subject.key");
    std::fs::write(&chain_key, "a chain key that is long enough for the test\n").expect("key");
    std::fs::write(
        &subject_key,
        "a subject key, different and long enough too\n",
    )
    .expect("key");
    let dir = keys.path().join("audit");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(80),
        extra_yaml: format!(
            "audit:\n  dir: {}\n  chain_key_file: {}\n  subject_key_file: {}\n  block_timeout_ms: 500\n",
            dir.display(),
            chain_key.display(),
            subject_key.display()
        ),
        ..Default::default()
    })
    .await;
    Audited {
        env,
        _keys: keys,
        dir,
        chain_key,
        subject_key,
    }
}

fn log_text(dir: &Path) -> String {
    records(dir)
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records are written by a background writer: wait until `pred` holds for the log.
async fn wait_log(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let r = records(dir);
        if pred(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; log:\n{}", log_text(dir));
}

fn pgvakt(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(args)
        .output()
        .expect("run pgvakt")
}

/// `pgvakt audit verify` accepts the log in `dir`.
fn assert_chain_verifies(key: &Path, dir: &Path) {
    let verify = pgvakt(&[
        "audit",
        "verify",
        "--key-file",
        key.to_str().expect("path"),
        dir.to_str().expect("path"),
    ]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Session ids of the `audit search --subject` matches.
fn sessions_reading(a: &Audited, subject: &str) -> Vec<(String, String)> {
    let out = pgvakt(&[
        "audit",
        "search",
        "--subject",
        subject,
        "--format",
        "json",
        "--key-file",
        a.subject_key.to_str().expect("path"),
        a.dir.to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|r| r["match"] == "yes")
        .map(|r| {
            (
                r["user"].as_str().unwrap_or_default().to_owned(),
                r["session_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

fn session_of(records: &[Value], user: &str) -> String {
    records
        .iter()
        .find(|r| r["event"] == "login" && r["user"] == user)
        .and_then(|r| r["session_id"].as_str())
        .expect("login record")
        .to_owned()
}

#[tokio::test]
async fn reads_are_recorded_with_their_subjects_and_found_by_search() {
    let a = start().await;
    let mut cfg = a.env.pg_config("secretary", "secretary", "crm");
    cfg.application_name("crm-web");
    let (secretary, conn) = cfg.connect(a.env.tls()).await.expect("secretary");
    tokio::spawn(conn);

    // Simple protocol, subject key in the output.
    secretary
        .simple_query("SELECT * FROM contacts WHERE id = 42")
        .await
        .expect("simple read");
    // The key is not in the output: pgvakt adds it as a hidden column the client never sees,
    // over the simple protocol and the extended one with binary results.
    let msgs = secretary
        .simple_query("SELECT first_name, bank_account FROM contacts WHERE id = 42")
        .await
        .expect("simple read without the key");
    let width = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.len()),
            _ => None,
        })
        .expect("a row");
    assert_eq!(width, 2, "the client sees exactly the columns it asked for");
    let stmt = secretary
        .prepare("SELECT first_name, bank_account FROM contacts WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(stmt.columns().len(), 2, "Describe shows no hidden column");
    let row = secretary
        .query_one(&stmt, &[&42i64])
        .await
        .expect("extended read");
    assert_eq!(
        row.len(),
        2,
        "the client sees exactly the columns it asked for"
    );
    assert_eq!(row.get::<_, String>(1), "***");
    // Two subject tables in one result.
    secretary
        .simple_query(
            "SELECT c.id, a.contact_id, a.subject FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = 43",
        )
        .await
        .expect("join");
    // An aggregate: the subjects cannot be named.
    secretary
        .simple_query("SELECT count(*) FROM contacts WHERE email LIKE '%@secret-domain.example'")
        .await
        .expect("aggregate");
    let err = secretary
        .simple_query("SELECT pg_read_file('/etc/shadow-literal')")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err), "42501");

    let admin = a.env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .simple_query("SELECT id, email FROM contacts WHERE id = 42")
        .await
        .expect("admin read");
    let marketing = a
        .env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    marketing
        .simple_query("SELECT email FROM contacts WHERE id = 7")
        .await
        .expect("marketing read");
    drop(secretary);

    let log = wait_log(&a.dir, "the secretary's disconnect", |r| {
        r.iter()
            .any(|x| x["event"] == "disconnect" && x["user"] == "secretary")
    })
    .await;
    let s_sec = session_of(&log, "secretary");
    let s_admin = session_of(&log, "admin");

    let login = log
        .iter()
        .find(|r| r["event"] == "login" && r["user"] == "secretary")
        .expect("login");
    assert_eq!(login["role"], "secretary");
    assert_eq!(login["application_name"], "crm-web");
    assert_eq!(login["database"], "crm");
    assert_eq!(login["outcome"], "ok");
    assert!(login["tls_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("TLS")));
    assert!(login["client_addr"]
        .as_str()
        .is_some_and(|v| v.starts_with("127.0.0.1:")));

    let reads: Vec<&Value> = log
        .iter()
        .filter(|r| r["event"] == "statement_read" && r["session_id"] == s_sec.as_str())
        .collect();
    let star = reads
        .iter()
        .find(|r| r["statement"]["normalized"] == "SELECT * FROM contacts WHERE id = ?")
        .expect("the SELECT * record");
    assert_eq!(star["rows"], 1);
    assert_eq!(star["subject_count"], 1);
    let contacts = star["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "public.contacts"))
        .expect("contacts read");
    let bank = contacts["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["column"] == "bank_account"))
        .expect("bank_account listed");
    assert_eq!(bank["action"], "masked");
    assert_eq!(bank["category"], "financial");
    let join = reads
        .iter()
        .find(|r| {
            r["statement"]["normalized"]
                .as_str()
                .is_some_and(|n| n.contains("JOIN"))
        })
        .expect("join record");
    let groups: Vec<&str> = join["subjects"]
        .as_array()
        .expect("subjects")
        .iter()
        .filter_map(|g| g["table"].as_str())
        .collect();
    // activities.contact_id refers to the contacts subject type: one group, one pseudonym.
    assert_eq!(groups, ["public.contacts"]);
    let agg = reads
        .iter()
        .find(|r| {
            r["statement"]["normalized"]
                .as_str()
                .is_some_and(|n| n.contains("count("))
        })
        .expect("aggregate record");
    assert_eq!(agg["subjects_unknown"], true, "{agg}");
    let refused = log
        .iter()
        .find(|r| r["event"] == "refused" && r["session_id"] == s_sec.as_str())
        .expect("refusal record");
    assert_eq!(refused["sqlstate"], "42501");
    assert_eq!(refused["outcome"], "refused");

    // Literals never reach the log.
    let text = log_text(&a.dir);
    assert!(!text.contains("secret-domain"), "a literal was logged");
    assert!(!text.contains("shadow-literal"), "a literal was logged");

    // Who read subject 42: the secretary (simple and extended reads) and admin; not marketing,
    // who read 7. Subject 43 only through the join.
    assert_eq!(
        sessions_reading(&a, "42"),
        vec![
            ("admin".to_owned(), s_admin.clone()),
            ("secretary".to_owned(), s_sec.clone())
        ]
    );
    assert_eq!(
        sessions_reading(&a, "43"),
        vec![("secretary".to_owned(), s_sec.clone())]
    );
    let extended_hits = {
        let out = pgvakt(&[
            "audit",
            "search",
            "--subject",
            "42",
            "--user",
            "secretary",
            "--format",
            "json",
            "--key-file",
            a.subject_key.to_str().expect("path"),
            a.dir.to_str().expect("path"),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"match\":\"yes\""))
            .count()
    };
    assert_eq!(
        extended_hits, 3,
        "the SELECT *, the simple read without the key and the extended read of 42"
    );

    assert_chain_verifies(&a.chain_key, &a.dir);
}

#[tokio::test]
async fn a_failing_sink_stops_personal_data_reads_until_it_recovers() {
    let a = start().await;
    let c = a
        .env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    c.simple_query("SELECT first_name FROM contacts WHERE id = 1")
        .await
        .expect("read while the sink works");

    // The directory becomes a regular file: writes fail, for root too.
    let moved = a.dir.with_extension("moved");
    std::fs::rename(&a.dir, &moved).expect("move audit dir");
    std::fs::write(&a.dir, "not a directory").expect("block the path");

    let mut refused = None;
    for _ in 0..100 {
        match c
            .simple_query("SELECT first_name FROM contacts WHERE id = 2")
            .await
        {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("personal-data reads stop while the audit sink fails");
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        common::message(&e).contains("audit trail cannot be written"),
        "{e}"
    );
    // Statements without personal data go on, and the session stays usable.
    c.simple_query("SELECT 1")
        .await
        .expect("non-personal statement");
    assert!(common::http_get(a.env.server().metrics_addr, "/readyz")
        .await
        .contains("503"));

    // The sink recovers: reads resume.
    std::fs::remove_file(&a.dir).expect("unblock");
    std::fs::rename(&moved, &a.dir).expect("restore audit dir");
    let mut resumed = false;
    for _ in 0..100 {
        if c.simple_query("SELECT first_name FROM contacts WHERE id = 3")
            .await
            .is_ok()
        {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "reads resume once records can be written again");
    wait_log(&a.dir, "the read after recovery", |r| {
        r.iter()
            .filter(|x| x["event"] == "statement_read" && x["user"] == "secretary")
            .count()
            >= 2
    })
    .await;
    assert_chain_verifies(&a.chain_key, &a.dir);
}

#[tokio::test]
async fn sigterm_under_load_loses_no_audit_record() {
    let env = Env::start_demo(50).await;
    let audit = tempfile::tempdir().expect("tempdir");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: admin\n  service_password_file: {}\n  service_database: crm\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  shutdown_grace_ms: 800\npolicy:\n  paths: [{}]\n  watch_interval_ms: 0\nlog:\n  level: info\n  format: json\n{}",
        env.cluster.port(),
        env.dir.path().join("service-password").display(),
        env.certs.server_cert.display(),
        env.certs.server_key.display(),
        policy.display(),
        common::audit_yaml(audit.path()),
    );
    let mut proxy = PgvaktProcess::start(audit.path(), &yaml).await;
    let mut clients = Vec::new();
    for n in 0..4i64 {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(proxy.addr.port())
            .user("secretary")
            .password("secretary")
            .dbname("crm")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, conn) = cfg.connect(env.tls()).await.expect("secretary");
        tokio::spawn(conn);
        clients.push(tokio::spawn(async move {
            let mut ok = 0u64;
            loop {
                let sql = format!(
                    "SELECT first_name FROM contacts WHERE id = {}",
                    1 + (ok as i64 + n) % 50
                );
                match client.simple_query(&sql).await {
                    Ok(_) => ok += 1,
                    Err(_) => return ok,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.signal(Signal::SIGTERM);
    let mut completed = 0;
    for c in clients {
        completed += c.await.expect("client task");
    }
    let exit = proxy.wait(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(completed > 20, "the load ran: {completed} reads");

    let dir = audit.path().join("audit");
    let reads = records(&dir)
        .iter()
        .filter(|r| r["event"] == "statement_read" && r["user"] == "secretary")
        .count() as u64;
    // Every read a client saw complete was recorded; at most the one in flight per client when
    // the sessions were ended may be recorded without the client seeing it.
    assert!(
        reads >= completed && reads <= completed + 4,
        "{reads} records for {completed} completed reads"
    );
    assert_chain_verifies(&audit.path().join("chain.key"), &dir);
}

/// An unrestricted role's statement that names no personal table but calls a function that can
/// read one (`query_to_xml` over a name built at run time) is recorded as a possible
/// personal-data read, never left out.
#[tokio::test]
async fn unrestricted_reads_through_functions_are_recorded_as_possible() {
    let a = start().await;
    let admin = a.env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .simple_query(
            "SELECT query_to_xml('SELECT bank_account FROM con' || 'tacts LIMIT 2', true, false, '')",
        )
        .await
        .expect("admin runs it");
    let log = wait_log(&a.dir, "a record of the query_to_xml read", |r| {
        r.iter().any(|e| {
            e["user"] == "admin"
                && e["event"] == "statement_read"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not analysed"))
        })
    })
    .await;
    assert!(!log.is_empty());
}
