//! The path of a record from a session to the sink: a bounded queue, then one writer thread that
//! seals records into the chain, writes them in batches and syncs each batch.
//!
//! The writer is a plain thread, not a tokio task: it blocks in `write` and `fsync`, and must
//! keep draining during the runtime's own shutdown.
//!
//! Group commit: `record_durable` callers wait until their record is synced. Whatever the
//! sessions queue while one batch is written and synced goes into the next batch, so under load
//! many sessions share one fsync; a batch holding a durable record is not held back to gather.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::chain::Chain;
use super::files::Sink;
use super::metrics::AuditMetrics;
use super::record::Record;
use super::subjects::{SubjectKey, SubjectSet};
use crate::audit::settings::{Durability, OnFull};

/// Records per write and sync; bounds the work lost to a crash between write and sync.
const MAX_BATCH: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// At shutdown a sink that keeps failing is given this long before queued records are given up.
const CLOSE_RETRY: Duration = Duration::from_secs(5);

/// Why a record could not be accepted. The text is meant for the client's ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    #[error("audit trail unavailable: the audit queue stayed full for {waited_ms} ms")]
    QueueFull { waited_ms: u64 },
    /// The record was queued but its batch was not on disk in time (a slow disk, not a full
    /// queue): the operator's remedy differs, so the text does too.
    #[error(
        "audit trail unavailable: the record was not written and synced within {waited_ms} ms"
    )]
    NotSynced { waited_ms: u64 },
    #[error("audit trail unavailable: writing the audit log is failing; retrying")]
    SinkFailing,
    #[error("audit trail unavailable: the audit writer has stopped")]
    Closed,
}

/// Told to a `record_durable` caller once its batch is synced, or at its batch's first failure.
type Ack = oneshot::Sender<Result<(), AuditUnavailable>>;

enum Msg {
    Record(Box<Record>, Option<Ack>),
    Close(oneshot::Sender<()>),
}

pub(crate) struct Settings {
    pub on_full: OnFull,
    pub block_timeout: Duration,
    pub capacity: usize,
    pub max_subjects: usize,
    pub durability: Durability,
    /// The sink knows where the chain ended (`Sink::chain_end`); the writer asks it first.
    pub chain_from_sink: bool,
}

struct Shared {
    healthy: AtomicBool,
    closing: AtomicBool,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    on_full: OnFull,
    block_timeout: Duration,
    subject_key: SubjectKey,
    max_subjects: usize,
    durability: Durability,
    metrics: AuditMetrics,
    /// The writer thread, woken when a caller starts waiting for a sync: a batch that is
    /// gathering then goes at once instead of at its next check.
    writer: std::thread::Thread,
}

/// What sessions hold to record events. Cheap to clone; all clones feed one writer.
#[derive(Clone)]
pub struct AuditHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

/// A durable record queued by [`AuditHandle::submit_durable`], not yet known to be on disk.
pub struct Syncing {
    synced: oneshot::Receiver<Result<(), AuditUnavailable>>,
    deadline: tokio::time::Instant,
    handle: AuditHandle,
}

impl std::fmt::Debug for Syncing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncing").finish_non_exhaustive()
    }
}

impl Syncing {
    /// Until the record is synced (`Ok`) or cannot be within `block_timeout_ms` of its
    /// submission (`Err`: what it stands for must not be released).
    pub async fn wait(self) -> Result<(), AuditUnavailable> {
        match tokio::time::timeout_at(self.deadline, self.synced).await {
            Ok(r) => r.unwrap_or(Err(AuditUnavailable::Closed)),
            Err(_) => Err(self.handle.late()),
        }
    }
}

impl AuditHandle {
    /// Queue `rec`. With `on_full: block` this waits for queue space up to `block_timeout_ms`
    /// and fails at once while the sink is failing: a caller that gets `Err` must not let
    /// personal data through unrecorded. With `on_full: drop` a full queue drops the record
    /// (counted) and returns `Ok`; only a stopped writer is an error.
    ///
    /// A record that is not accepted is counted in `pgvakt_audit_records_dropped_total`.
    pub async fn record(&self, rec: Record) -> Result<(), AuditUnavailable> {
        let result = self.enqueue(rec).await;
        if result.is_err() {
            self.inner.metrics.records_dropped.inc();
        }
        result
    }

    async fn enqueue(&self, rec: Record) -> Result<(), AuditUnavailable> {
        let inner = &*self.inner;
        let msg = Msg::Record(Box::new(rec), None);
        let result = match inner.on_full {
            OnFull::Drop => match inner.tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    inner.metrics.records_dropped.inc();
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditUnavailable::Closed),
            },
            OnFull::Block => {
                if !inner.shared.healthy.load(Ordering::Acquire) {
                    return Err(AuditUnavailable::SinkFailing);
                }
                match tokio::time::timeout(inner.block_timeout, inner.tx.send(msg)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(AuditUnavailable::Closed),
                    Err(_) => Err(AuditUnavailable::QueueFull {
                        waited_ms: inner.block_timeout.as_millis() as u64,
                    }),
                }
            }
        };
        let depth = queued(&inner.tx);
        if depth as usize > inner.tx.max_capacity() / 2 {
            inner.writer.unpark();
        }
        inner.metrics.queue_depth.set(depth);
        result
    }

    /// Queue `rec` and wait until it is written and synced (with other sessions' records: one
    /// fsync per batch). Whatever `on_full` says, this waits for queue space, and fails at once
    /// while the sink is failing, or after `block_timeout_ms` in all. `Err`: the record may
    /// not be durable, and what it stands for must not happen. Failures are counted in
    /// `pgvakt_audit_statements_refused_total` by `refused`, which the caller calls when it
    /// refuses.
    pub async fn record_durable(&self, rec: Record) -> Result<(), AuditUnavailable> {
        self.submit_durable(rec).await?.wait().await
    }

    /// Queue `rec` for a sync and return at once: what it stands for may be prepared while
    /// the record goes to disk, but nothing of it may reach anyone before [`Syncing::wait`]
    /// returns `Ok`. The `block_timeout_ms` of `record_durable` counts from here.
    pub async fn submit_durable(&self, rec: Record) -> Result<Syncing, AuditUnavailable> {
        let inner = &*self.inner;
        if !inner.shared.healthy.load(Ordering::Acquire) {
            return Err(AuditUnavailable::SinkFailing);
        }
        let deadline = tokio::time::Instant::now() + inner.block_timeout;
        let (ack, synced) = oneshot::channel();
        let msg = Msg::Record(Box::new(rec), Some(ack));
        match tokio::time::timeout_at(deadline, inner.tx.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(AuditUnavailable::Closed),
            Err(_) => return Err(self.late()),
        }
        inner.writer.unpark();
        inner.metrics.queue_depth.set(queued(&inner.tx));
        Ok(Syncing {
            synced,
            deadline,
            handle: self.clone(),
        })
    }

    /// Why a durable record missed its deadline.
    fn late(&self) -> AuditUnavailable {
        let inner = &*self.inner;
        if !inner.shared.healthy.load(Ordering::Acquire) {
            AuditUnavailable::SinkFailing
        } else {
            AuditUnavailable::NotSynced {
                waited_ms: inner.block_timeout.as_millis() as u64,
            }
        }
    }

    /// Count a statement refused because its record could not be made durable first.
    pub fn refused_unrecorded(&self) {
        self.inner.metrics.statements_refused.inc();
    }

    /// When records of personal-data statements must be durable (`audit.durability`).
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// False while the sink is failing (for `/readyz`, and for callers that want to refuse a
    /// personal-data read before running it rather than after).
    pub fn is_healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::Acquire)
    }

    /// The pseudonym of the subject whose key column in `table` (`schema.table`) has the text
    /// value `key`.
    pub fn subject_ref(&self, table: &str, key: &str) -> String {
        self.inner.subject_key.pseudonym(table, key)
    }

    /// A collector for one statement's subjects, capped at `audit.max_subjects`.
    pub fn subjects(&self) -> SubjectSet {
        SubjectSet::new(self.inner.subject_key.clone(), self.inner.max_subjects)
    }

    /// Stop accepting records, write and sync everything already queued (by any clone), then
    /// return. If the sink keeps failing, queued records are given up after a few seconds
    /// (counted as dropped and logged).
    pub async fn close(self) {
        let inner = &*self.inner;
        inner.shared.closing.store(true, Ordering::Release);
        let (ack, done) = oneshot::channel();
        if inner.tx.send(Msg::Close(ack)).await.is_ok() {
            inner.writer.unpark();
            let _ = done.await;
        }
    }
}

/// The next message, waited for without registering as the channel's receiver: a record that
/// only needs writing (a completion record, a login) does not wake the writer, which is a
/// thread wake-up per statement saved; it is picked up at the next wake-up, at most `GATHER`
/// later. Whoever needs the writer sooner unparks it: a caller waiting for a sync, `close`,
/// and a queue filling up (see `enqueue`). Also returns when the writer began to wait for it:
/// the batch's gathering counts from there, so a record queued just after the writer parked is
/// written within one `GATHER` plus a sync, not two.
fn next(rx: &mut mpsc::Receiver<Msg>) -> Option<(Msg, Instant)> {
    let since = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some((m, since)),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => std::thread::park_timeout(GATHER),
        }
    }
}

fn queued<T>(tx: &mpsc::Sender<T>) -> i64 {
    (tx.max_capacity() - tx.capacity()) as i64
}

pub(crate) fn spawn(
    sink: Box<dyn Sink>,
    chain: Chain,
    settings: Settings,
    subject_key: SubjectKey,
    metrics: AuditMetrics,
) -> std::io::Result<AuditHandle> {
    let (tx, rx) = mpsc::channel(settings.capacity.max(1));
    let shared = Arc::new(Shared {
        healthy: AtomicBool::new(true),
        closing: AtomicBool::new(false),
    });
    let mut writer = Writer {
        subject_key_id: subject_key.id().to_owned(),
        sink,
        chain,
        shared: shared.clone(),
        metrics: metrics.clone(),
    };
    // The first answer about the chain's end decides whether the proxy starts ready; later
    // ones come in the background.
    let (first_answer, answered) = std::sync::mpsc::channel::<()>();
    let resume = settings.chain_from_sink.then_some(first_answer);
    let thread = std::thread::Builder::new()
        .name("pgvakt-audit".into())
        .spawn(move || writer.run(rx, resume))?;
    let _ = answered.recv();
    Ok(AuditHandle {
        inner: Arc::new(Inner {
            tx,
            shared,
            on_full: settings.on_full,
            block_timeout: settings.block_timeout,
            subject_key,
            max_subjects: settings.max_subjects,
            durability: settings.durability,
            metrics,
            writer: thread.thread().clone(),
        }),
    })
}

/// How long the writer lets records gather after the first of a batch arrives, unless a caller
/// waits for the batch to be synced (it wakes the writer: `record_durable`, `close`).
const GATHER: Duration = Duration::from_millis(10);

struct Writer {
    /// Fingerprint of the subject key, stamped on every record.
    subject_key_id: String,
    sink: Box<dyn Sink>,
    chain: Chain,
    shared: Arc<Shared>,
    metrics: AuditMetrics,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Msg>, resume: Option<std::sync::mpsc::Sender<()>>) {
        if let Some(answered) = resume {
            if !self.resume_chain(answered) {
                self.abandon(rx);
                return;
            }
        }
        let mut acks = Vec::new();
        while let Some((first, since)) = next(&mut rx) {
            // Let a batch gather: one wake-up and one fsync per few milliseconds instead of
            // per record keeps the writer from competing with sessions for the CPU. Records
            // only queued delay the file, never a statement; as soon as a caller waits for the
            // sync (an intent record), the batch goes.
            let mut waiting = matches!(first, Msg::Record(_, Some(_)) | Msg::Close(_));
            let mut msgs = vec![first];
            let gather_until = since + GATHER;
            while msgs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        waiting |= matches!(m, Msg::Record(_, Some(_)) | Msg::Close(_));
                        msgs.push(m);
                    }
                    Err(_) if !waiting && Instant::now() < gather_until => {
                        std::thread::park_timeout(
                            gather_until.saturating_duration_since(Instant::now()),
                        )
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.set(rx.len() as i64);
            let mut lines = String::new();
            let first_seq = self.chain.next_seq;
            let mut count = 0u64;
            let mut synced = Vec::new();
            for msg in msgs {
                match msg {
                    Msg::Record(mut rec, ack) => {
                        rec.subject_key_id = Some(self.subject_key_id.clone());
                        match self.chain.seal(&mut rec) {
                            Ok(line) => {
                                lines.push_str(&line);
                                count += 1;
                                synced.extend(ack);
                            }
                            Err(e) => {
                                self.metrics.records_dropped.inc();
                                tracing::error!(error = %e, "audit record could not be serialised; dropped");
                                if let Some(ack) = ack {
                                    let _ = ack.send(Err(AuditUnavailable::SinkFailing));
                                }
                            }
                        }
                    }
                    Msg::Close(ack) => {
                        // No new records from here on; those already queued are still written
                        // because the loop runs until the channel is empty.
                        rx.close();
                        acks.push(ack);
                    }
                }
            }
            if count > 0 {
                self.write(first_seq, lines.as_bytes(), count, synced);
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }

    /// Ask the sink where the chain ended, retrying until it answers (unhealthy meanwhile:
    /// nothing can be sealed before the chain's end is known). False if it never answered
    /// before shutdown.
    fn resume_chain(&mut self, answered: std::sync::mpsc::Sender<()>) -> bool {
        let mut answered = Some(answered);
        let mut backoff = Duration::from_millis(50);
        let mut give_up_at: Option<Instant> = None;
        loop {
            match self.sink.chain_end() {
                Ok(end) => {
                    if let Some((seq, mac)) = end {
                        self.chain.next_seq = seq.saturating_add(1);
                        self.chain.prev = mac;
                    }
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(audit.seq = self.chain.next_seq, "audit sink recovered");
                    }
                    return true;
                }
                Err(e) => {
                    self.metrics.write_failures.inc();
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(error = %e, "audit sink unreachable: cannot continue the chain; retrying");
                    }
                    drop(answered.take());
                    if self.shared.closing.load(Ordering::Acquire)
                        && Instant::now()
                            >= *give_up_at.get_or_insert_with(|| Instant::now() + CLOSE_RETRY)
                    {
                        return false;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Shutdown without a sink: count and refuse what is queued, then let `close` return.
    fn abandon(&mut self, mut rx: mpsc::Receiver<Msg>) {
        rx.close();
        let mut lost = 0u64;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Record(_, ack) => {
                    lost += 1;
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(AuditUnavailable::SinkFailing));
                    }
                }
                Msg::Close(ack) => {
                    let _ = ack.send(());
                }
            }
        }
        self.metrics.records_dropped.inc_by(lost);
        tracing::error!(
            audit.records = lost,
            "audit sink never answered before shutdown; records lost"
        );
    }

    /// Write one batch, retrying until it succeeds; the chain has already advanced past these
    /// records, so the same bytes must land. Callers waiting for the sync hear at once if the
    /// first attempt fails (their statements are refused); their records may still land on a
    /// retry, followed by nothing, as a statement that was refused.
    fn write(&mut self, first_seq: u64, bytes: &[u8], count: u64, mut synced: Vec<Ack>) {
        let mut backoff = Duration::from_millis(50);
        let mut give_up_at: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.sink.write_batch(first_seq, bytes) {
                Ok(()) => {
                    self.metrics
                        .write_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.records_written.inc_by(count);
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(audit.seq = first_seq, "audit sink recovered");
                    }
                    for ack in synced {
                        let _ = ack.send(Ok(()));
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.write_failures.inc();
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(error = %e, audit.seq = first_seq, "audit sink failing; retrying");
                    }
                    for ack in synced.drain(..) {
                        let _ = ack.send(Err(AuditUnavailable::SinkFailing));
                    }
                    if self.shared.closing.load(Ordering::Acquire) {
                        let deadline =
                            *give_up_at.get_or_insert_with(|| Instant::now() + CLOSE_RETRY);
                        if Instant::now() >= deadline {
                            self.metrics.records_dropped.inc_by(count);
                            tracing::error!(
                                error = %e,
                                audit.first_seq = first_seq,
                                audit.records = count,
                                "audit sink still failing at shutdown; records lost"
                            );
                            return;
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
