//! The result side of a session: frames from PostgreSQL to the client, forwarded as runs of
//! raw bytes, with the few that must change (refusal swaps, protected columns NULLed, integrity
//! details withheld) rewritten, audit records gathered, and writes that stall ended.

use super::*;

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
    // Columns of the current result whose values are replaced (see rowwatch).
    let mut nulling: Option<Vec<usize>> = None;
    // The last command completed was a ROLLBACK.
    let mut rolled_back = false;
    // What is written to the client is counted, and may stall only so long.
    let bytes_out = (
        proxy
            .metrics
            .bytes
            .get_or_create(&DirectionLabel {
                direction: Direction::UpstreamToClient,
            })
            .clone(),
        Duration::from_millis(proxy.config.limits.client_write_timeout_ms),
    );
    loop {
        // Forward the longest run of complete frames straight from the buffer; only frames that
        // must change are handled one by one.
        let mut pos = 0;
        while let Some(len) = reader
            .peek_len(&buf[pos..])
            .map_err(|e| SessionError::Upstream(format!("upstream sent an invalid message: {e}")))?
        {
            if buf.len() - pos < len {
                break;
            }
            let tag = buf[pos];
            // The client's version of this message, when it differs from upstream's.
            let mut replaced: Option<bytes::Bytes> = None;
            if let Some(t) = &shared.trail {
                let records = {
                    let mut trail = lock(t);
                    if trail.wants(tag) {
                        let (done, r) = trail.on_frame(tag, &buf[pos..pos + len]);
                        replaced = r;
                        (!done.is_empty()).then(|| (done, trail.writer()))
                    } else {
                        None
                    }
                };
                if let Some((records, w)) = records {
                    w.write_all(records).await;
                }
            }
            if shared.role_restricted && (tag == b'E' || tag == b'N') {
                if let Some(r) = rowwatch::withhold_row_detail(&buf[pos..pos + len]) {
                    replaced = Some(r);
                }
            }
            match tag {
                b'T' if shared.role_restricted => {
                    nulling = None;
                    if let Some(protected) = shared.protected.load().as_ref() {
                        let flagged = rowwatch::flagged_columns(&buf[pos..pos + len], protected)
                            .unwrap_or_default();
                        if !flagged.is_empty() {
                            proxy.metrics.enforcement_anomalies.inc();
                            tracing::error!(
                                columns = ?flagged.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
                                "enforcement anomaly: protected columns in a result for a restricted role; their values are replaced with NULL"
                            );
                            if let Some(t) = &shared.trail {
                                let names: Vec<String> =
                                    flagged.iter().map(|(_, n)| n.clone()).collect();
                                let w = lock(t).writer();
                                w.anomaly(&names).await;
                            }
                            nulling = Some(flagged.into_iter().map(|(i, _)| i).collect());
                        }
                    }
                }
                b'D' if nulling.is_some() => {
                    let cols = nulling.as_deref().unwrap_or_default();
                    let row = replaced.as_deref().unwrap_or(&buf[pos..pos + len]);
                    replaced = Some(rowwatch::null_columns(row, cols).ok_or_else(|| {
                        SessionError::Upstream("upstream sent an invalid DataRow".into())
                    })?);
                }
                b'C' => {
                    // The last command before the block ends decides (ROLLBACK TO SAVEPOINT
                    // answers ROLLBACK too, but a COMMIT follows it).
                    rolled_back = buf
                        .get(pos + 5..pos + len)
                        .is_some_and(|t| t.starts_with(b"ROLLBACK"));
                }
                b'Z' => {
                    if let Some(&status) = buf.get(pos + 5) {
                        let before = shared.tx_status.swap(status, Ordering::SeqCst);
                        if status == b'I' && before != b'I' {
                            // A transaction block ended: committed unless it failed or a
                            // ROLLBACK (also PostgreSQL's answer to COMMIT of a failed one) ended it.
                            shared
                                .tx_committed
                                .store(before == b'T' && !rolled_back, Ordering::SeqCst);
                            shared.tx_ended.fetch_add(1, Ordering::SeqCst);
                        }

                        if status == b'I' && shared.ddl_in_flight.swap(false, Ordering::Relaxed) {
                            shared.catalog_refresh.request();
                        }
                    }
                    if let Some(t) = shared.pop_inflight() {
                        proxy
                            .metrics
                            .statement_seconds
                            .observe(t.elapsed().as_secs_f64());
                    }
                }
                b'S' => {
                    let frame = Frame {
                        tag,
                        raw: bytes::Bytes::copy_from_slice(&buf[pos..pos + len]),
                    };
                    if let Ok((name, value)) = message::decode_parameter_status(&frame) {
                        let bad = match name.as_str() {
                            "client_encoding" => {
                                let utf8 = value == "UTF8";
                                shared.client_utf8.store(utf8, Ordering::Relaxed);
                                !utf8
                            }
                            "standard_conforming_strings" => value != "on",
                            _ => false,
                        };
                        if bad && shared.role_restricted {
                            // Analysis assumes standard string syntax and reads UTF-8; reading
                            // text another way would let PostgreSQL execute something else than
                            // was analysed.
                            write_out(client_wr, &buf[..pos], &bytes_out).await?;
                            return Err(SessionError::Client(PgError::fatal(
                                "42501",
                                format!("pgvakt: {name} cannot be {value} for this role: restricted roles need standard_conforming_strings on and UTF8"),
                            )));
                        }
                    }
                }
                b'E' if shared.restricted => {
                    let frame = Frame {
                        tag,
                        raw: bytes::Bytes::copy_from_slice(&buf[pos..pos + len]),
                    };
                    let refusal = message::decode_fields(&frame).ok().and_then(|fields| {
                        fields
                            .iter()
                            .find(|(c, _)| *c == b'M')
                            .and_then(|(_, m)| shared.refusals.resolve(m))
                    });
                    if let Some(err) = refusal {
                        write_out(client_wr, &buf[..pos], &bytes_out).await?;
                        buf.advance(pos + len);
                        pos = 0;
                        client_wr.write_all(&err.to_bytes()).await?;
                        continue;
                    }
                }
                _ => {}
            }
            if let Some(r) = replaced {
                write_out(client_wr, &buf[..pos], &bytes_out).await?;
                buf.advance(pos + len);
                pos = 0;
                write_out(client_wr, &r, &bytes_out).await?;
                continue;
            }
            pos += len;
        }
        if pos > 0 {
            write_out(client_wr, &buf[..pos], &bytes_out).await?;
            buf.advance(pos);
        }
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
