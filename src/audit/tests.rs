//! The writer, the chain and `verify` together, over real files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::chain::{Chain, ChainKey};
use super::files::{audit_files, Sink};
use super::search::{search_files, Match, Query};
use super::subjects::SubjectKey;
use super::verify::{verify_files, Break, Report};
use super::*;
use crate::audit::settings::OnFull;

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

/// A sink that blocks in `write_batch` until opened, to fill the queue deterministically.
#[derive(Clone, Default)]
struct GateSink {
    state: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Default)]
struct Gate {
    open: bool,
    entered: bool,
    written: Vec<u8>,
}

impl GateSink {
    fn wait_entered(&self) {
        let (m, cv) = &*self.state;
        let g = m.lock().unwrap();
        let _g = cv
            .wait_timeout_while(g, Duration::from_secs(5), |s| !s.entered)
            .unwrap();
    }
    fn open(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }
    fn lines(&self) -> usize {
        self.state
            .0
            .lock()
            .unwrap()
            .written
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }
}

impl Sink for GateSink {
    fn write_batch(&mut self, _first_seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        g.entered = true;
        cv.notify_all();
        let mut g = cv.wait_while(g, |s| !s.open).unwrap();
        g.written.extend_from_slice(bytes);
        Ok(())
    }
}

fn gated(on_full: OnFull) -> (AuditHandle, GateSink, AuditMetrics) {
    let cfg = AuditConfig {
        queue_capacity: 2,
        on_full,
        block_timeout_ms: 100,
        ..AuditConfig::default()
    };
    let sink = GateSink::default();
    let metrics = AuditMetrics::default();
    let handle = Audit::start_with(
        &cfg,
        Box::new(sink.clone()),
        Chain::genesis(ChainKey::new(CHAIN_KEY)),
        SubjectKey::new(SUBJECT_KEY),
        &metrics,
    )
    .unwrap();
    (handle, sink, metrics)
}

#[tokio::test]
async fn a_full_queue_blocks_then_fails_in_block_mode() {
    let (audit, sink, metrics) = gated(OnFull::Block);
    audit.record(rec("1")).await.unwrap();
    sink.wait_entered();
    audit.record(rec("2")).await.unwrap();
    audit.record(rec("3")).await.unwrap();
    let started = Instant::now();
    let err = audit.record(rec("4")).await.unwrap_err();
    assert_eq!(err, AuditUnavailable::QueueFull { waited_ms: 100 });
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(err.to_string().starts_with("audit trail unavailable"));
    sink.open();
    audit.close().await;
    assert_eq!(sink.lines(), 3);
    // The refused record is not lost silently: the caller got an error and it is counted.
    assert_eq!(metrics.records_dropped.get(), 1);
    assert_eq!(metrics.records_written.get(), 3);
}

#[tokio::test]
async fn a_durable_record_returns_only_once_its_batch_is_written() {
    let (audit, sink, _metrics) = gated(OnFull::Drop);
    let waiting = tokio::spawn({
        let audit = audit.clone();
        async move { audit.record_durable(rec("intent")).await }
    });
    sink.wait_entered();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!waiting.is_finished(), "returned before the sink wrote it");
    sink.open();
    assert_eq!(waiting.await.unwrap(), Ok(()));
    assert_eq!(sink.lines(), 1);
    // A sink that does not finish in block_timeout_ms: the caller hears of it (even with
    // on_full: drop, a durable record is never dropped silently).
    let (audit, _closed_sink, _m) = gated(OnFull::Drop);
    let started = Instant::now();
    assert_eq!(
        audit.record_durable(rec("stuck")).await,
        Err(AuditUnavailable::QueueFull { waited_ms: 100 })
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_durable_record_fails_at_once_when_its_write_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.block_timeout_ms = 5_000;
    let log = tmp.path().join("log");
    let metrics = AuditMetrics::default();
    let audit = Audit::start(&cfg, &metrics).unwrap();
    audit.record_durable(rec("synced")).await.unwrap();
    assert_eq!(metrics.records_written.get(), 1, "written before returning");

    std::fs::remove_dir_all(&log).unwrap();
    std::fs::write(&log, "not a directory").unwrap();
    let started = Instant::now();
    assert_eq!(
        audit.record_durable(rec("not durable")).await,
        Err(AuditUnavailable::SinkFailing)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "told at the first failure"
    );
    assert_eq!(
        audit.record_durable(rec("while failing")).await,
        Err(AuditUnavailable::SinkFailing)
    );
    std::fs::remove_file(&log).unwrap();
    wait_for(|| audit.is_healthy());
    audit.record_durable(rec("after")).await.unwrap();
    audit.close().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_in_drop_mode() {
    let (audit, sink, metrics) = gated(OnFull::Drop);
    audit.record(rec("1")).await.unwrap();
    sink.wait_entered();
    audit.record(rec("2")).await.unwrap();
    audit.record(rec("3")).await.unwrap();
    let started = Instant::now();
    audit.record(rec("4")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "drop does not wait"
    );
    assert_eq!(metrics.records_dropped.get(), 1);
    sink.open();
    audit.close().await;
    assert_eq!(sink.lines(), 3);
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_failing_sink_refuses_records_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let log = tmp.path().join("log");
    let metrics = AuditMetrics::default();
    let audit = Audit::start(&cfg, &metrics).unwrap();
    audit.record(rec("before")).await.unwrap();
    wait_for(|| metrics.records_written.get() == 1);

    // The directory is replaced by a regular file: even root cannot create files in it.
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::write(&log, "not a directory").unwrap();
    audit.record(rec("queued while failing")).await.unwrap();
    wait_for(|| !audit.is_healthy());
    assert_eq!(
        audit.record(rec("refused")).await,
        Err(AuditUnavailable::SinkFailing)
    );
    assert!(metrics.write_failures.get() >= 1);

    std::fs::remove_file(&log).unwrap();
    wait_for(|| audit.is_healthy());
    audit.record(rec("after")).await.unwrap();
    audit.close().await;

    let (_, lines) = only_file(&log);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("queued while failing") && lines[1].contains("\"after\""));
    let report = verify_dir(&log, true);
    assert!(report.ok(), "{report}");
    assert_eq!((report.first_seq, report.last_seq), (Some(2), Some(3)));
}

#[test]
fn an_unwritable_directory_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    std::fs::write(tmp.path().join("file"), "").unwrap();
    cfg.dir = Some(tmp.path().join("file").join("log"));
    let err = Audit::start(&cfg, &AuditMetrics::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("audit.dir: cannot create"),
        "{err}"
    );
}

#[tokio::test]
async fn close_drains_everything_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let metrics = AuditMetrics::default();
    let audit = Audit::start(&cfg, &metrics).unwrap();
    let clones: Vec<AuditHandle> = (0..4).map(|_| audit.clone()).collect();
    for (i, h) in clones.iter().enumerate() {
        for j in 0..250 {
            h.record(rec(&format!("{i}-{j}"))).await.unwrap();
        }
    }
    audit.close().await;
    assert_eq!(metrics.records_written.get(), 1000);
    assert_eq!(
        clones[0].record(rec("late")).await,
        Err(AuditUnavailable::Closed)
    );
    let report = verify_dir(&tmp.path().join("log"), false);
    assert_eq!((report.records, report.problem), (1000, None));
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
}

/// A sink that knows where the chain ended (as the table sink does), unreachable at first.
#[derive(Clone, Default)]
struct ResumingSink {
    unreachable_for: Arc<Mutex<u32>>,
    written: Arc<Mutex<Vec<u8>>>,
}

const RESUME_MAC: chain::MacBytes = [7; chain::MAC_LEN];

impl Sink for ResumingSink {
    fn write_batch(&mut self, _first_seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.written.lock().unwrap().extend_from_slice(bytes);
        Ok(())
    }

    fn chain_end(&mut self) -> std::io::Result<Option<(u64, chain::MacBytes)>> {
        let mut left = self.unreachable_for.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(std::io::Error::other("unreachable"));
        }
        Ok(Some((41, RESUME_MAC)))
    }
}

#[tokio::test]
async fn a_sink_that_knows_the_chain_end_is_asked_first_and_nothing_is_sealed_before() {
    let sink = ResumingSink::default();
    *sink.unreachable_for.lock().unwrap() = 2;
    let cfg = AuditConfig {
        sink: AuditSink::Postgres,
        block_timeout_ms: 100,
        ..AuditConfig::default()
    };
    let metrics = AuditMetrics::default();
    let audit = Audit::start_with(
        &cfg,
        Box::new(sink.clone()),
        Chain::genesis(ChainKey::new(CHAIN_KEY)),
        SubjectKey::new(SUBJECT_KEY),
        &metrics,
    )
    .unwrap();
    // The first answer failed: not ready, and no intent can be made durable.
    assert!(!audit.is_healthy());
    assert_eq!(
        audit.record_durable(rec("early")).await,
        Err(AuditUnavailable::SinkFailing)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit.is_healthy() {
        assert!(Instant::now() < deadline, "the writer keeps asking");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    audit.record_durable(rec("after")).await.unwrap();
    audit.close().await;
    let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 1, "{written}");
    let sealed = chain::open_line(lines[0]).unwrap();
    assert_eq!(sealed.seq, 42, "continues after the sink's last record");
    assert!(sealed.chains_from(&ChainKey::new(CHAIN_KEY), &RESUME_MAC));
    assert!(metrics.write_failures.get() >= 2);
}
