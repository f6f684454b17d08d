//! The statement relay: client → upstream with policy decisions, upstream → client with
//! refusals put back in place. Frames that need no change are copied as raw bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};

use super::refusals::Refusals;
use super::rowwatch::Protected;
use super::texts;
use super::trail::requests::FrontAudit;
use super::trail::AuditTrail;
use super::{SessionError, Started};
use crate::enforce::{CatalogRefresh, SessionPolicy, Verdict};
use crate::metrics::{Class, Decision, Direction, DirectionLabel};
use crate::protocol::message::encode_query;
use crate::protocol::{FrameReader, PgError};
use crate::proxy::{Phase, Proxy};
use crate::stream::BoxStream;

mod request_filter;
mod requests;
mod result_filter;
mod results;
use requests::frontend;
use results::backend;

/// Upstream messages can legitimately be large (big rows); PostgreSQL's own ceiling is 1 GiB.
const UPSTREAM_MAX_MESSAGE: usize = 1 << 30;
/// Read granularity; buffers grow only while a larger message is in flight.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer that grew beyond this is released once it drains, so idle sessions stay small.
const SHRINK_ABOVE: usize = 256 * 1024;

/// How the frontend side tells the backend side to finish.
enum Control {
    /// The client ended the session (Terminate or EOF).
    Close,
    /// Send this FATAL to the client, then close.
    Fatal(PgError),
}

/// State both directions consult.
struct Shared {
    refusals: Refusals,
    /// Start times of requests awaiting ReadyForQuery, for the latency histogram.
    inflight: Mutex<VecDeque<Instant>>,
    /// Transaction status of the last ReadyForQuery ('I', 'T', 'E').
    tx_status: AtomicU8,
    /// Transaction blocks ended so far, and whether the last one committed (search_path
    /// tracking follows COMMIT and ROLLBACK).
    tx_ended: std::sync::atomic::AtomicU64,
    tx_committed: AtomicBool,
    /// Statements go through the policy (a policy is loaded).
    restricted: bool,
    /// The session's role has restrictions (decides the standard_conforming_strings guard).
    role_restricted: bool,
    /// The session's client_encoding is UTF8, as PostgreSQL last reported it.
    client_utf8: AtomicBool,
    /// Origins of the columns the role may not see as stored, for the RowDescription watch.
    protected: ArcSwapOption<Protected>,
    /// The session's audit trail (result side), when audit records are written.
    trail: Option<Arc<Mutex<AuditTrail>>>,
    /// Set when schema-changing statements are in flight; the next idle ReadyForQuery (they
    /// have committed) triggers a catalog reload.
    ddl_in_flight: AtomicBool,
    catalog_refresh: CatalogRefresh,
    /// The session's entry in the registry the admin console lists: its state and statement
    /// count, and the signal that ends it.
    live: Arc<crate::registry::Live>,
}

impl Shared {
    /// A session's state as it starts: idle, nothing in flight, nothing refused yet.
    fn new(
        policy: &SessionPolicy,
        audit: Option<&FrontAudit>,
        client_utf8: bool,
        live: &Arc<crate::registry::Live>,
    ) -> Self {
        Shared {
            refusals: Refusals::new(),
            inflight: Mutex::new(VecDeque::new()),
            tx_status: AtomicU8::new(b'I'),
            tx_ended: std::sync::atomic::AtomicU64::new(0),
            tx_committed: AtomicBool::new(false),
            restricted: policy.is_restricted(),
            role_restricted: policy.role().is_some_and(|(_, r)| r),
            client_utf8: AtomicBool::new(client_utf8),
            protected: ArcSwapOption::empty(),
            trail: audit.map(|a| a.trail.clone()),
            ddl_in_flight: AtomicBool::new(false),
            catalog_refresh: policy.catalog_refresh(),
            live: live.clone(),
        }
    }

    fn tell_transactions(&self, policy: &mut SessionPolicy) {
        let ended = self.tx_ended.load(Ordering::SeqCst);
        let committed = self.tx_committed.load(Ordering::SeqCst);
        policy.transaction_state(self.tx_status.load(Ordering::SeqCst), ended, committed);
    }

    fn push_inflight(&self) {
        if let Ok(mut q) = self.inflight.lock() {
            // A client that pipelines without reading is bounded by PostgreSQL's own buffers;
            // the cap keeps a misbehaving one from growing this queue without limit.
            if q.len() < 65_536 {
                q.push_back(Instant::now());
            }
        }
    }

    fn pop_inflight(&self) -> Option<Instant> {
        self.inflight.lock().ok()?.pop_front()
    }

    fn set_protected(&self, policy: &SessionPolicy) {
        let current = self.protected.load();
        let same = match (current.as_ref(), policy.protected.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.protected.store(policy.protected.clone());
        }
    }
}

pub async fn run(
    s: &mut Started,
    proxy: &Proxy,
    live: &Arc<crate::registry::Live>,
) -> Result<(), SessionError> {
    let Started {
        client_rd,
        client_wr,
        client_buf,
        upstream_rd,
        upstream_wr,
        upstream_buf,
        policy,
        audit,
        client_utf8,
        ..
    } = s;
    let shared = Shared::new(policy, audit.as_ref(), *client_utf8, live);
    let (control_tx, control_rx) = mpsc::channel::<Control>(1);
    let (done_tx, done_rx) = watch::channel(false);
    let front = async {
        let r = frontend(
            client_rd,
            client_buf,
            upstream_wr,
            policy,
            audit,
            proxy,
            &shared,
            done_rx,
        )
        .await;
        let control = match r.as_ref().err().and_then(|e| e.client_error()) {
            Some(pg) => Control::Fatal(pg),
            None => Control::Close,
        };
        let _ = control_tx.send(control).await;
        r
    };
    let back = async {
        let r = backend(
            upstream_rd,
            upstream_buf,
            client_wr,
            proxy,
            &shared,
            control_rx,
        )
        .await;
        let _ = done_tx.send(true);
        r
    };
    let (front, back) = both_sides(front, back).await;
    let _ = tokio::time::timeout(SIDE_GRACE, upstream_wr.shutdown()).await;
    if let Err(e) = &front {
        // Its FATAL, if any, has been delivered by the backend side.
        if !matches!(e, SessionError::Closed) {
            tracing::info!(error = %e, "client side ended with error");
        }
    }
    back
}

/// Both sides' results, the client side's and the result side's.
///
/// When the result side ends (client gone, upstream closed), the client side may be stuck
/// writing to an upstream that no longer reads: it gets a moment, then is dropped, so the
/// session and its backend end instead of waiting for each other for good.
async fn both_sides(
    front: impl std::future::Future<Output = Result<(), SessionError>>,
    back: impl std::future::Future<Output = Result<(), SessionError>>,
) -> (Result<(), SessionError>, Result<(), SessionError>) {
    tokio::pin!(front, back);
    tokio::select! {
        f = &mut front => (f, back.await),
        b = &mut back => {
            let f = tokio::time::timeout(SIDE_GRACE, &mut front)
                .await
                .unwrap_or(Err(SessionError::Closed));
            (f, b)
        }
    }
}

/// How long one side of a session may take to finish after the other has ended.
const SIDE_GRACE: Duration = Duration::from_secs(1);

fn note_ddl(policy: &mut SessionPolicy, shared: &Shared) {
    if policy.take_ddl_sent() {
        shared.ddl_in_flight.store(true, Ordering::Relaxed);
    }
}

async fn sleep_if(enabled: bool, d: Duration) {
    if enabled {
        tokio::time::sleep(d).await
    } else {
        std::future::pending::<()>().await
    }
}

fn count(proxy: &Proxy, policy: &SessionPolicy, v: &Verdict, sql: &str) {
    // The role is looked up only for what is counted by role: refusals and personal reads.
    let role = || policy.role().map_or_else(String::new, |(r, _)| r);
    match v {
        Verdict::Refuse(e) => {
            let role = role();
            proxy.metrics.refusal(&role, e.code);
            if let Some(category) = &e.blocked_category {
                proxy.metrics.blocked_read(&role, category);
            }
        }
        Verdict::Rewrite(a) if !a.columns.is_empty() => {
            proxy.metrics.personal_reads(&role(), &a.columns)
        }
        _ => {}
    }
    let d = match v {
        Verdict::Forward => Decision::Passthrough,
        // As `policy explain` reports it: rewritten when a column read is masked.
        Verdict::Rewrite(a) if a.masks_anything() => Decision::Rewritten,
        Verdict::Rewrite(_) => Decision::Allowed,
        Verdict::Refuse(_) => Decision::Refused,
    };
    proxy.metrics.statement(d, Class::of_sql(sql.as_bytes()));
}

/// Keep at least a chunk of spare capacity, and give back memory a large message left behind.
fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::with_capacity(READ_CHUNK);
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}
