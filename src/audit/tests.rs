//! The writer, the chain and `verify` together, over real files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::chain::ChainKey;
use super::files::audit_files;
use super::search::{search_files, Match, Query};
use super::subjects::SubjectKey;
use super::verify::{verify_files, Break, Report};
use super::*;

pub(super) const CHAIN_KEY: &[u8] = b"chain key for the audit tests....";
pub(super) const SUBJECT_KEY: &[u8] = b"subject key for the audit tests..";

/// An audit configuration writing to `<tmp>/log`, with key files next to it.
pub(super) fn config(tmp: &Path) -> AuditConfig {
    std::fs::write(tmp.join("chain.key"), CHAIN_KEY).unwrap();
    std::fs::write(tmp.join("subject.key"), SUBJECT_KEY).unwrap();
    AuditConfig {
        dir: Some(tmp.join("log")),
        chain_key_file: Some(tmp.join("chain.key")),
        subject_key_file: Some(tmp.join("subject.key")),
        ..AuditConfig::default()
    }
}

pub(super) fn rec(user: &str) -> Record {
    let mut r = Record::new(EventType::StatementRead, Outcome::Ok);
    r.user = Some(user.into());
    r
}

pub(super) async fn write_records(cfg: &AuditConfig, users: &[&str]) -> AuditMetrics {
    let metrics = AuditMetrics::default();
    let audit = Audit::start(cfg, &metrics).unwrap();
    for u in users {
        audit.record(rec(u)).await.unwrap();
    }
    audit.close().await;
    metrics
}

pub(super) fn verify_dir(dir: &Path, partial: bool) -> Report {
    let files = audit_files(dir).unwrap();
    verify_files(files, &ChainKey::new(CHAIN_KEY), partial).unwrap()
}

/// The single audit file in `dir` and its lines.
pub(super) fn only_file(dir: &Path) -> (PathBuf, Vec<String>) {
    let files = audit_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines = text.lines().map(str::to_owned).collect();
    (files[0].clone(), lines)
}

pub(super) fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

pub(super) async fn five_record_log() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    write_records(&cfg, &["u1", "u2", "u3", "u4", "u5"]).await;
    let (path, lines) = only_file(&tmp.path().join("log"));
    (tmp, path, lines)
}

#[tokio::test]
async fn an_intact_log_verifies() {
    let (tmp, _, lines) = five_record_log().await;
    assert_eq!(lines.len(), 5);
    let report = verify_dir(&tmp.path().join("log"), false);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 5);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(5)));
    assert!(report.to_string().starts_with("OK: 5 records, seq 1..5"));
}

#[tokio::test]
async fn an_edited_record_breaks_at_its_seq() {
    let (tmp, path, mut lines) = five_record_log().await;
    assert!(lines[2].contains("\"user\":\"u3\""));
    lines[2] = lines[2].replace("\"user\":\"u3\"", "\"user\":\"ux\"");
    rewrite(&path, &lines);
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!((p.seq, p.kind), (3, Break::Edited), "{report}");
    assert_eq!(p.line, 3);
    assert_eq!(report.records, 2);
}

#[tokio::test]
async fn a_removed_record_breaks_at_its_seq() {
    let (tmp, path, mut lines) = five_record_log().await;
    lines.remove(2);
    rewrite(&path, &lines);
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!(
        (p.seq, p.kind),
        (3, Break::Missing { found: 4 }),
        "{report}"
    );
    assert!(report
        .to_string()
        .contains("FAILED at seq 3: record 3 is missing"));
}

#[tokio::test]
async fn swapped_records_break_at_the_first() {
    let (tmp, path, mut lines) = five_record_log().await;
    lines.swap(1, 2);
    rewrite(&path, &lines);
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!(
        (p.seq, p.kind),
        (2, Break::Reordered { found: 3 }),
        "{report}"
    );
}

#[tokio::test]
async fn a_duplicated_record_is_caught() {
    let (tmp, path, mut lines) = five_record_log().await;
    let copy = lines[1].clone();
    lines.insert(2, copy);
    rewrite(&path, &lines);
    let p = verify_dir(&tmp.path().join("log"), false).problem.unwrap();
    assert_eq!((p.seq, p.kind), (3, Break::Duplicate { found: 2 }));
}

#[tokio::test]
async fn a_torn_last_line_says_where_the_chain_ends() {
    let (tmp, path, lines) = five_record_log().await;
    let mut text = lines[..4].join("\n") + "\n";
    text.push_str(&lines[4][..lines[4].len() / 2]);
    std::fs::write(&path, text).unwrap();
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!((p.seq, p.kind), (5, Break::Torn), "{report}");
    assert!(
        report.to_string().contains("the chain ends at seq 4"),
        "{report}"
    );
    assert_eq!(report.records, 4);
}

#[tokio::test]
async fn a_log_starting_late_needs_partial() {
    let (tmp, path, lines) = five_record_log().await;
    rewrite(&path, &lines[2..]);
    let p = verify_dir(&tmp.path().join("log"), false).problem.unwrap();
    assert_eq!((p.seq, p.kind), (1, Break::StartsLate { found: 3 }));
    let report = verify_dir(&tmp.path().join("log"), true);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 3);
}

#[tokio::test]
async fn rotation_keeps_the_chain_across_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.rotate_bytes = 600;
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let metrics = AuditMetrics::default();
    let audit = Audit::start(&cfg, &metrics).unwrap();
    for u in &users {
        // One at a time, so batches are single records and rotation happens between them.
        audit.record(rec(u)).await.unwrap();
        wait_for(|| {
            metrics.records_written.get() as usize == users.iter().position(|x| x == u).unwrap() + 1
        });
    }
    audit.close().await;
    let files = audit_files(&tmp.path().join("log")).unwrap();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 600, "{f:?}");
    }
    let report = verify_dir(&tmp.path().join("log"), false);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 20);
    assert_eq!(report.files, files.len());
    // Removing a middle file is a gap in the chain.
    std::fs::remove_file(&files[1]).unwrap();
    let p = verify_dir(&tmp.path().join("log"), false).problem.unwrap();
    assert!(matches!(p.kind, Break::Missing { .. }), "{p:?}");
}

#[tokio::test]
async fn a_restarted_writer_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    write_records(&cfg, &["a", "b", "c"]).await;
    write_records(&cfg, &["d", "e"]).await;
    let log = tmp.path().join("log");
    assert_eq!(audit_files(&log).unwrap().len(), 2);
    let report = verify_dir(&log, false);
    assert!(report.ok(), "{report}");
    assert_eq!((report.records, report.last_seq), (5, Some(5)));
}

#[tokio::test]
async fn after_a_torn_write_the_chain_continues_after_the_last_complete_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    write_records(&cfg, &["a", "b", "c"]).await;
    let log = tmp.path().join("log");
    let (first, _) = only_file(&log);
    // What kill -9 in the middle of a write leaves behind.
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("{\"event\":\"statement_read\",\"seq\":4,\"us");
    std::fs::write(&first, text).unwrap();

    let alone = verify_files(vec![first.clone()], &ChainKey::new(CHAIN_KEY), false).unwrap();
    assert_eq!(
        alone.problem.map(|p| (p.seq, p.kind)),
        Some((4, Break::Torn))
    );

    write_records(&cfg, &["d"]).await;
    let report = verify_dir(&log, false);
    assert!(report.ok(), "{report}");
    assert_eq!((report.records, report.last_seq), (4, Some(4)));
    assert!(
        report.notes.iter().any(|n| n.contains("torn record")),
        "{report}"
    );
}

#[tokio::test]
async fn search_finds_the_records_that_listed_a_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let metrics = AuditMetrics::default();
    let audit = Audit::start(&cfg, &metrics).unwrap();
    for (user, ids) in [
        ("alice", &["41", "42"][..]),
        ("bob", &["43"][..]),
        ("carol", &["42"][..]),
    ] {
        let mut r = rec(user);
        let mut s = audit.subjects();
        for id in ids {
            s.add("public.contacts", id);
        }
        s.finish(&mut r);
        audit.record(r).await.unwrap();
    }
    let mut agg = rec("dave");
    agg.tables.push(TableAccess {
        table: "public.contacts".into(),
        access: Access::Read,
        columns: vec![],
        subject: None,
    });
    let mut s = audit.subjects();
    s.mark_unknown();
    s.finish(&mut agg);
    audit.record(agg).await.unwrap();
    assert_eq!(
        audit.subject_ref("public.contacts", "42"),
        SubjectKey::new(SUBJECT_KEY).pseudonym("public.contacts", "42")
    );
    audit.close().await;

    let files = audit_files(&tmp.path().join("log")).unwrap();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        !text.contains("\"42\""),
        "raw subject ids never reach the log"
    );
    let mut q = Query {
        subject: Some((SubjectKey::new(SUBJECT_KEY), "42".into())),
        table: Some("contacts".into()),
        user: None,
        since: None,
        until: None,
        ..Query::default()
    };
    let users = |found: Vec<super::search::Hit>| -> Vec<(String, Match)> {
        found
            .into_iter()
            .map(|h| (h.record.user.unwrap_or_default(), h.matched))
            .collect()
    };
    let found = search_files(&files, &q).unwrap();
    assert_eq!(found.skipped, 0);
    assert!(found.other_keys.is_empty());
    assert_eq!(found.own_key, 4);
    assert_eq!(
        users(
            found
                .hits
                .into_iter()
                .filter(|h| h.matched == Match::Yes)
                .collect()
        ),
        [
            ("alice".to_owned(), Match::Yes),
            ("carol".to_owned(), Match::Yes)
        ]
    );
    q.user = Some("dave".into());
    let found = search_files(&files, &q).unwrap();
    assert_eq!(users(found.hits), [("dave".to_owned(), Match::Possible)]);
    q.table = Some("public.companies".into());
    assert!(search_files(&files, &q).unwrap().hits.is_empty());
    // Another subject key: nothing is compared, every record is counted as foreign.
    q.table = None;
    q.user = None;
    q.subject = Some((
        SubjectKey::new(b"a different subject key, 32 bytes"),
        "42".into(),
    ));
    let found = search_files(&files, &q).unwrap();
    assert!(found.hits.is_empty());
    assert_eq!(found.other_keys.values().map(|(n, _)| n).sum::<u64>(), 4);
    assert_eq!(
        found.own_key, 0,
        "so the search refuses instead of finding nothing"
    );
}

pub(super) fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}
