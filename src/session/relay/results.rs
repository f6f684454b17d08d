//! The result side's pump: frames from PostgreSQL to the client, forwarded as runs of raw
//! bytes; `result_filter` decides which must change (refusal swaps, protected columns NULLed,
//! integrity details withheld) and which audit records they complete. Writes that stall end the
//! session.

use super::super::trail::requests::unavailable;
use super::result_filter::{Output, Ready, ResultFilter, Step, View};
use super::*;
use crate::audit::{Record, Syncing};

pub(super) async fn backend(
    upstream_rd: &mut ReadHalf<BoxStream>,
    buf: &mut BytesMut,
    client_wr: &mut WriteHalf<BoxStream>,
    proxy: &Proxy,
    shared: &Shared,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), SessionError> {
    let reader = FrameReader::new(UPSTREAM_MAX_MESSAGE);
    let mut phase = proxy.phase.subscribe();
    let mut ended = shared.live.ended();
    let mut filter = ResultFilter::new(shared.restricted, shared.role_restricted);
    let bytes_out = client_output(proxy);
    loop {
        forward_frames(
            &reader,
            buf,
            client_wr,
            &mut filter,
            proxy,
            shared,
            &bytes_out,
        )
        .await?;
        stalled(bytes_out.1, client_wr.flush()).await?;
        make_room(buf);
        tokio::select! {
            r = upstream_rd.read_buf(buf) => {
                if r? == 0 {
                    return Err(SessionError::Closed);
                }
            }
            c = control.recv() => {
                if let Some(Control::Fatal(e)) = c {
                    client_wr.write_all(&e.to_bytes()).await?;
                    client_wr.flush().await?;
                }
                return Ok(());
            }
            _ = async { phase.wait_for(|p| *p == Phase::Terminating).await.map(|_| ()) } => {
                client_wr.write_all(&PgError::admin_shutdown().to_bytes()).await?;
                client_wr.flush().await?;
                return Ok(());
            }
            why = crate::registry::wait_ended(&mut ended) => {
                client_wr.write_all(&why.error().to_bytes()).await?;
                client_wr.flush().await?;
                return Ok(());
            }
        }
    }
}

/// What is written to the client is counted, and may stall only so long: the counter and
/// limits.client_write_timeout_ms.
fn client_output(proxy: &Proxy) -> (prometheus_client::metrics::counter::Counter, Duration) {
    (
        proxy
            .metrics
            .bytes
            .get_or_create(&DirectionLabel {
                direction: Direction::UpstreamToClient,
            })
            .clone(),
        Duration::from_millis(proxy.config.limits.client_write_timeout_ms),
    )
}

/// Write every complete frame in `buf` to the client, as the filter decides, and drop them
/// from `buf`; an incomplete last frame stays for the next read.
async fn forward_frames(
    reader: &FrameReader,
    buf: &mut BytesMut,
    client_wr: &mut WriteHalf<BoxStream>,
    filter: &mut ResultFilter,
    proxy: &Proxy,
    shared: &Shared,
    bytes_out: &(prometheus_client::metrics::counter::Counter, Duration),
) -> Result<(), SessionError> {
    // Forward the longest run of complete frames straight from the buffer; only frames that
    // must change are written one by one.
    let mut pos = 0;
    while let Some(len) = reader
        .peek_len(&buf[pos..])
        .map_err(SessionError::UpstreamFrame)?
    {
        if buf.len() - pos < len {
            break;
        }
        let step = match filter_frame(filter, &buf[pos..pos + len], shared)? {
            Filtered::Step(step) => step,
            Filtered::Held(syncing) => {
                // Everything before this frame answered earlier requests.
                write_out(client_wr, &buf[..pos], bytes_out).await?;
                buf.advance(pos);
                pos = 0;
                if let Err(e) = syncing.wait().await {
                    withheld(filter, shared, &e)?;
                }
                continue;
            }
        };
        apply(
            step.records,
            step.anomaly,
            step.ready,
            step.client_utf8,
            proxy,
            shared,
        )
        .await;
        match step.output {
            Output::Keep => pos += len,
            Output::Replace(r) => {
                write_out(client_wr, &buf[..pos], bytes_out).await?;
                buf.advance(pos + len);
                pos = 0;
                write_out(client_wr, &r, bytes_out).await?;
            }
            Output::Fatal(e) => {
                write_out(client_wr, &buf[..pos], bytes_out).await?;
                return Err(SessionError::Client(e));
            }
        }
    }
    if pos > 0 {
        write_out(client_wr, &buf[..pos], bytes_out).await?;
        buf.advance(pos);
    }
    Ok(())
}

/// A frame's fate: the filter's step, or first a wait for the intent record of the statement
/// it answers.
enum Filtered {
    Step(Step),
    Held(Syncing),
}

/// The filter's decision on one frame. The protected columns and the audit trail are held
/// only for the step, never across an await.
fn filter_frame(
    filter: &mut ResultFilter,
    frame: &[u8],
    shared: &Shared,
) -> Result<Filtered, SessionError> {
    let protected = shared.protected.load();
    let mut trail = shared.trail.as_deref().map(lock);
    if let Some(syncing) = trail.as_deref_mut().and_then(AuditTrail::take_hold) {
        return Ok(Filtered::Held(syncing));
    }
    let view = View {
        protected: protected.as_ref().map(|p| p.as_ref()),
        refusals: &shared.refusals,
        trail: trail.as_deref_mut(),
    };
    filter
        .step(frame, view)
        .map(Filtered::Step)
        .map_err(SessionError::Upstream)
}

/// The intent record of the statement now answered could not be made durable: its answers
/// never reach the client. A statement that ran alone is answered with the audit refusal
/// instead and the session goes on; otherwise the session ends, since an error in place of
/// one answer would leave client and server disagreeing about what else ran.
fn withheld(
    filter: &mut ResultFilter,
    shared: &Shared,
    e: &crate::audit::AuditUnavailable,
) -> Result<(), SessionError> {
    let Some(t) = &shared.trail else {
        return Ok(());
    };
    let mut trail = lock(t);
    trail.handle().refused_unrecorded();
    tracing::error!(error = %e, "intent record not durable; results withheld");
    if trail.withhold() {
        filter.withhold(unavailable());
        return Ok(());
    }
    Err(SessionError::Client(PgError::fatal(
        "42501",
        format!("pgvakt: personal data cannot be read or written now: the audit trail cannot be written ({e}); the results were withheld and the session ended"),
    )))
}

/// What a frame asked for besides its bytes: audit records first (a read is recorded before
/// the client receives it), then the state the request side consults.
async fn apply(
    records: Vec<Record>,
    anomaly: Option<Vec<String>>,
    ready: Option<Ready>,
    client_utf8: Option<bool>,
    proxy: &Proxy,
    shared: &Shared,
) {
    if !records.is_empty() {
        if let Some(t) = &shared.trail {
            let w = lock(t).writer();
            w.write_all(records).await;
        }
    }
    if let Some(columns) = anomaly {
        proxy.metrics.enforcement_anomalies.inc();
        tracing::error!(
            ?columns,
            "enforcement anomaly: protected columns in a result for a restricted role; their values are replaced with NULL"
        );
        if let Some(t) = &shared.trail {
            let w = lock(t).writer();
            w.anomaly(&columns).await;
        }
    }
    if let Some(utf8) = client_utf8 {
        shared.client_utf8.store(utf8, Ordering::Relaxed);
    }
    if let Some(ready) = ready {
        shared.tx_status.store(ready.status, Ordering::SeqCst);
        if let Some(committed) = ready.ended {
            shared.tx_committed.store(committed, Ordering::SeqCst);
            shared.tx_ended.fetch_add(1, Ordering::SeqCst);
        }
        if ready.status == b'I' && shared.ddl_in_flight.swap(false, Ordering::Relaxed) {
            shared.catalog_refresh.request();
        }
        if let Some(t) = shared.pop_inflight() {
            proxy
                .metrics
                .statement_seconds
                .observe(t.elapsed().as_secs_f64());
        }
        if shared.inflight.lock().is_ok_and(|q| q.is_empty()) {
            shared
                .live
                .set_state(crate::registry::State::from_ready(ready.status));
        }
    }
}

pub(super) fn lock(t: &Mutex<AuditTrail>) -> std::sync::MutexGuard<'_, AuditTrail> {
    match t.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub(super) async fn write_out(
    client_wr: &mut WriteHalf<BoxStream>,
    bytes: &[u8],
    counter: &(prometheus_client::metrics::counter::Counter, Duration),
) -> Result<(), SessionError> {
    let (counter, stall) = counter;
    if !bytes.is_empty() {
        stalled(*stall, client_wr.write_all(bytes)).await?;
        counter.inc_by(bytes.len() as u64);
    }
    Ok(())
}

/// A write to the client that makes no progress for `stall` ends the session: a client that
/// stops reading its results would otherwise hold its session and backend for good.
async fn stalled<F: std::future::Future<Output = std::io::Result<()>>>(
    stall: Duration,
    write: F,
) -> Result<(), SessionError> {
    if stall.is_zero() {
        return Ok(write.await?);
    }
    match tokio::time::timeout(stall, write).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SessionError::Protocol(format!(
            "the client read nothing for {} ms; session ended",
            stall.as_millis()
        ))),
    }
}
