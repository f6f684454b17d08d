//! `pgvakt audit verify` and `pgvakt audit search` run as a DPO would run them, on a log the
//! proxy's audit API wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgvakt::audit::{
    Access, Action, Audit, AuditMetrics, ColumnAccess, EventType, Outcome, Record, TableAccess,
};
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
            columns: vec![
                ColumnAccess {
                    column: "email".into(),
                    category: "contact".into(),
                    action: Action::Allowed,
                },
                ColumnAccess {
                    column: "bank_account".into(),
                    category: "financial".into(),
                    action: Action::Masked,
                },
            ],
            subject: Some("public.contacts".into()),
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
    assert_eq!(crate::common::schema::assert_audit_dir_valid(&dir), 4);
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
    // The wrong key is not tampering: the records name the key they were sealed with.
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    let out = stdout(&wrong);
    assert!(
        out.contains("these records were not written with this key"),
        "{out}"
    );
    assert!(!out.contains("FAILED") && !out.contains("edited"), "{out}");

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
    // Header, one match, count; then the "possible" section: marketing's count of contacts
    // may have included 42.
    assert_eq!(rows[2], "(1 records)", "{text}");
    assert!(rows[4].starts_with("possible: 1 reads"), "{text}");
    assert!(
        rows[6].contains("marketing") && rows[6].ends_with("possible"),
        "{text}"
    );
    assert_eq!(rows.len(), 7, "{text}");
    assert!(
        rows[1].contains("secretary") && rows[1].contains("s-1"),
        "{text}"
    );
    assert!(
        rows[1].contains("crm-web") && rows[1].contains("customer-service"),
        "{text}"
    );

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
    let mut users = Vec::new();
    let mut possible = Vec::new();
    for l in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let user = v["user"].as_str().unwrap().to_owned();
        match v["match"].as_str() {
            Some("yes") => users.push(user),
            Some("possible") => possible.push(user),
            other => panic!("match {other:?}"),
        }
    }
    assert_eq!(possible, ["marketing"]);
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

#[tokio::test]
async fn search_with_the_wrong_subject_key_fails_instead_of_finding_nothing() {
    let log = write_log().await;
    let dir = s(&log.dir);
    // The chain key is a key of the right length, but not the one the pseudonyms were made with.
    let out = pgvakt(&[
        "audit",
        "search",
        "--subject",
        "42",
        "--key-file",
        s(&log.chain_key),
        dir,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "these records were not written with this key: 4 records name another subject key"
        ),
        "{err}"
    );
    assert_eq!(stdout(&out), "", "nothing is listed");
}

#[tokio::test]
async fn search_by_relative_time_column_and_category() {
    let log = write_log().await;
    let dir = s(&log.dir);
    let count = |args: &[&str]| -> String {
        let mut all = vec!["audit", "search"];
        all.extend_from_slice(args);
        all.push(dir);
        let out = pgvakt(&all);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        stdout(&out).lines().last().unwrap_or_default().to_owned()
    };
    assert_eq!(count(&["--since", "1h"]), "(4 records)");
    assert_eq!(count(&["--since", "7d", "--until", "now"]), "(4 records)");
    assert_eq!(count(&["--until", "1h"]), "no matching records");
    // The reads list contacts.email (contact) and contacts.bank_account (financial, masked).
    assert_eq!(count(&["--column", "contacts.email"]), "(3 records)");
    assert_eq!(
        count(&["--column", "public.contacts.bank_account"]),
        "(3 records)"
    );
    assert_eq!(
        count(&["--column", "companies.email"]),
        "no matching records"
    );
    assert_eq!(count(&["--category", "financial"]), "(3 records)");
    assert_eq!(count(&["--category", "special"]), "no matching records");
    let out = pgvakt(&["audit", "search", "--user", "sales", dir]);
    let text = stdout(&out);
    assert!(
        text.contains("public.contacts(email,bank_account:masked)"),
        "columns in the table view: {text}"
    );
    let out = pgvakt(&["audit", "search", "--since", "yesterday", dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}
