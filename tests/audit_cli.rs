//! `pgvakt audit verify` and `pgvakt audit search` run as a DPO would run them, on a log the
//! proxy's audit API wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgvakt::audit::{Access, Audit, AuditMetrics, EventType, Outcome, Record, TableAccess};
use pgvakt::config::AuditConfig;

const CHAIN_KEY: &str = "an audit chain key of forty bytes, or so";
const SUBJECT_KEY: &str = "an audit subject key, also long enough...";

struct Log {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    chain_key: PathBuf,
    subject_key: PathBuf,
}

/// Three sessions: secretary reads contacts 42 and 7, sales reads 7, marketing counts contacts
/// (subjects unknown); one refused statement.
async fn write_log() -> Log {
    let tmp = tempfile::tempdir().unwrap();
    let chain_key = tmp.path().join("chain.key");
    let subject_key = tmp.path().join("subject.key");
    std::fs::write(&chain_key, format!("{CHAIN_KEY}\n")).unwrap();
    std::fs::write(&subject_key, format!("{SUBJECT_KEY}\n")).unwrap();
    let dir = tmp.path().join("audit");
    let cfg = AuditConfig {
        dir: Some(dir.clone()),
        chain_key_file: Some(chain_key.clone()),
        subject_key_file: Some(subject_key.clone()),
        ..AuditConfig::default()
    };
    let audit = Audit::start(&cfg, &AuditMetrics::default()).unwrap();
    let read = |user: &str, session: &str| {
        let mut r = Record::new(EventType::StatementRead, Outcome::Ok);
        r.user = Some(user.into());
        r.role = Some(user.into());
        r.session_id = Some(session.into());
        r.client_addr = Some("10.0.0.5:50123".into());
        r.application_name = Some("crm-web".into());
        r.purpose = Some("customer-service".into());
        r.tables.push(TableAccess {
            table: "public.contacts".into(),
            access: Access::Read,
            columns: vec![],
        });
        r
    };
    for (user, session, ids) in [
        ("secretary", "s-1", &["42", "7"][..]),
        ("sales", "s-2", &["7"][..]),
    ] {
        let mut r = read(user, session);
        let mut subjects = audit.subjects();
        for id in ids {
            subjects.add("public.contacts", id);
        }
        subjects.finish(&mut r);
        audit.record(r).await.unwrap();
    }
    let mut r = read("marketing", "s-3");
    let mut subjects = audit.subjects();
    subjects.mark_unknown();
    subjects.finish(&mut r);
    audit.record(r).await.unwrap();
    let mut refused = Record::new(EventType::Refused, Outcome::Refused);
    refused.user = Some("marketing".into());
    refused.sqlstate = Some("42501".into());
    audit.record(refused).await.unwrap();
    audit.close().await;
    Log {
        _tmp: tmp,
        dir,
        chain_key,
        subject_key,
    }
}

fn pgvakt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(args)
        .env_remove("PGVAKT_AUDIT_CHAIN_KEY")
        .env_remove("PGVAKT_AUDIT_SUBJECT_KEY")
        .output()
        .expect("run pgvakt")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn verify_passes_on_an_intact_log_and_fails_on_a_tampered_one() {
    let log = write_log().await;
    let ok = pgvakt(&[
        "audit",
        "verify",
        "--key-file",
        s(&log.chain_key),
        s(&log.dir),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout(&ok).starts_with("OK: 4 records, seq 1..4, 1 files"),
        "{ok:?}"
    );

    // The same key from the environment, the file named directly.
    let file = std::fs::read_dir(&log.dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let by_env = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "verify", s(&file)])
        .env("PGVAKT_AUDIT_CHAIN_KEY", CHAIN_KEY)
        .output()
        .unwrap();
    assert_eq!(by_env.status.code(), Some(0), "{by_env:?}");

    let wrong = pgvakt(&[
        "audit",
        "verify",
        "--key-file",
        s(&log.subject_key),
        s(&log.dir),
    ]);
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(stdout(&wrong).contains("FAILED at seq 1: record 1 does not match its MAC"));

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("\"user\":\"sales\"", "\"user\":\"admin\"", 1),
    )
    .unwrap();
    let edited = pgvakt(&[
        "audit",
        "verify",
        "--key-file",
        s(&log.chain_key),
        s(&log.dir),
    ]);
    assert_eq!(edited.status.code(), Some(1), "{edited:?}");
    let out = stdout(&edited);
    assert!(
        out.contains("FAILED at seq 2: record 2 does not match its MAC (edited)"),
        "{out}"
    );
    assert!(out.contains("verified before it: 1 records"), "{out}");
}

#[tokio::test]
async fn verify_without_a_key_cannot_check() {
    let log = write_log().await;
    let out = pgvakt(&["audit", "verify", s(&log.dir)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PGVAKT_AUDIT_CHAIN_KEY is not set"), "{err}");
}

#[tokio::test]
async fn search_by_subject_finds_exactly_the_sessions_that_read_it() {
    let log = write_log().await;
    let key = s(&log.subject_key);
    let dir = s(&log.dir);
    let out = pgvakt(&["audit", "search", "--subject", "42", "--key-file", key, dir]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("time") && rows[0].contains("application"),
        "{text}"
    );
    assert_eq!(rows.len(), 3, "header, one match, count: {text}");
    assert!(
        rows[1].contains("secretary") && rows[1].contains("s-1"),
        "{text}"
    );
    assert!(
        rows[1].contains("crm-web") && rows[1].contains("customer-service"),
        "{text}"
    );
    assert_eq!(rows[2], "(1 records)");

    let out = pgvakt(&[
        "audit",
        "search",
        "--subject",
        "7",
        "--table",
        "contacts",
        "--format",
        "json",
        "--key-file",
        key,
        dir,
    ]);
    let users: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["match"], "yes");
            v["user"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(users, ["secretary", "sales"]);

    let out = pgvakt(&[
        "audit",
        "search",
        "--subject",
        "7",
        "--table",
        "companies",
        "--key-file",
        key,
        dir,
    ]);
    assert_eq!(stdout(&out), "no matching records\n");

    let out = pgvakt(&[
        "audit",
        "search",
        "--subject",
        "42",
        "--include-unknown",
        "--key-file",
        key,
        dir,
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("marketing") && text.contains("possible"),
        "{text}"
    );

    let out = pgvakt(&["audit", "search", "--outcome", "refused", dir]);
    let text = stdout(&out);
    assert!(
        text.contains("refused") && text.contains("(1 records)"),
        "{text}"
    );

    let out = pgvakt(&["audit", "search", "--event", "nonsense", dir]);
    assert_eq!(out.status.code(), Some(2));
    let out = pgvakt(&["audit", "search", "--since", "2999-01-01", dir]);
    assert_eq!(stdout(&out), "no matching records\n");
}
