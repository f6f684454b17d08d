//! The writer's queue and its sinks: blocking and dropping when full, durable records, a
//! failing sink refusing and recovering, draining on close, and a sink that knows where its
//! chain ended.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::files::Sink;
use super::tests::*;
use super::*;
use crate::audit::settings::OnFull;

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
        Err(AuditUnavailable::NotSynced { waited_ms: 100 })
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_submitted_durable_record_is_queued_at_once_and_its_wait_ends_at_the_sync() {
    let (audit, sink, _metrics) = gated(OnFull::Drop);
    let started = Instant::now();
    let syncing = audit.submit_durable(rec("intent")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "the submission does not wait for the sync"
    );
    sink.wait_entered();
    let waiting = tokio::spawn(syncing.wait());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!waiting.is_finished(), "the wait ended before the write");
    sink.open();
    assert_eq!(waiting.await.unwrap(), Ok(()));
    assert_eq!(sink.lines(), 1);
    // The deadline counts from the submission: a wait begun late ends at the same time.
    let (audit, _stuck_sink, _m) = gated(OnFull::Drop);
    let started = Instant::now();
    let syncing = audit.submit_durable(rec("stuck")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        syncing.wait().await,
        Err(AuditUnavailable::NotSynced { waited_ms: 100 })
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(150),
        "{waited:?}"
    );
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
