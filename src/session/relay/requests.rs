//! The request side's pump: frames from the client to PostgreSQL. `request_filter` says which
//! path each message takes and what PostgreSQL receives for it; here the policy decides on
//! statement texts, the audit trail admits them (it may wait for a durable record), and what is
//! decided is written in batches, one flush per batch read.

use super::request_filter::{
    function_call_refusal, parse_out, query_out, refused_message, route, unanalysed_text, Route,
    Setup,
};
use super::*;
use crate::protocol::Frame;

/// Whether the session goes on after a frame.
enum Flow {
    Continue,
    /// The client sent Terminate: what is batched goes out, then the session ends.
    Terminate,
}

/// What the request side works with for one session.
struct RequestSide<'a> {
    policy: &'a mut SessionPolicy,
    audit: &'a mut Option<FrontAudit>,
    proxy: &'a Proxy,
    shared: &'a Shared,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn frontend(
    client_rd: &mut ReadHalf<BoxStream>,
    buf: &mut BytesMut,
    upstream_wr: &mut WriteHalf<BoxStream>,
    policy: &mut SessionPolicy,
    audit: &mut Option<FrontAudit>,
    proxy: &Proxy,
    shared: &Shared,
    mut done: watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let reader = FrameReader::new(proxy.config.limits.max_message_bytes);
    let idle_timeout = Duration::from_millis(proxy.config.limits.idle_timeout_ms);
    let bytes_in = proxy
        .metrics
        .bytes
        .get_or_create(&DirectionLabel {
            direction: Direction::ClientToUpstream,
        })
        .clone();
    let mut side = RequestSide {
        policy,
        audit,
        proxy,
        shared,
    };
    let mut out = BytesMut::new();
    loop {
        while let Some(frame) = reader.next(buf)? {
            if let Some(a) = side.audit.as_ref().filter(|a| a.is_full()) {
                // Every request must be matched to its answers: forward what was read and
                // read no more until PostgreSQL has answered some.
                upstream_wr.write_all(&out).await?;
                upstream_wr.flush().await?;
                bytes_in.inc_by(out.len() as u64);
                out.clear();
                tokio::select! {
                    _ = a.room() => {}
                    _ = done.changed() => return Ok(()),
                }
            }
            if let Flow::Terminate = side.frame(&frame, &mut out).await? {
                upstream_wr.write_all(&out).await?;
                upstream_wr.flush().await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            upstream_wr.write_all(&out).await?;
            upstream_wr.flush().await?;
            bytes_in.inc_by(out.len() as u64);
            out.clear();
            if out.capacity() > SHRINK_ABOVE {
                out = BytesMut::new();
            }
        }
        make_room(buf);
        let idle = !idle_timeout.is_zero() && shared.tx_status.load(Ordering::Relaxed) == b'I';
        tokio::select! {
            r = client_rd.read_buf(buf) => {
                if r? == 0 {
                    return Err(SessionError::Closed);
                }
            }
            _ = sleep_if(idle, idle_timeout) => {
                return Err(SessionError::Client(PgError::fatal(
                    "57P05",
                    "pgvakt: terminating connection due to idle-session timeout",
                )));
            }
            _ = done.changed() => return Ok(()),
        }
    }
}

impl RequestSide<'_> {
    /// Append what PostgreSQL receives for one client frame to `out`.
    async fn frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<Flow, SessionError> {
        let (shared, proxy) = (self.shared, self.proxy);
        // The role this frame runs as follows the user's groups as they are now.
        let fresh = match frame.tag {
            b'P' | b'B' | b'E' | b'Q' => self.policy.refresh_groups().await,
            _ => Ok(()),
        };
        let setup = Setup {
            restricted: shared.restricted,
            role_restricted: self.policy.role().map(|(_, r)| r),
            audited: self.audit.is_some(),
        };
        if matches!(frame.tag, b'Q' | b'E' | b'F') {
            shared.live.statement();
        }
        if matches!(frame.tag, b'P' | b'B' | b'E' | b'S' | b'Q') {
            if let Err(e) = fresh.and_then(|()| self.policy.protocol(frame)) {
                self.refuse_protocol(frame, e, out);
                return Ok(Flow::Continue);
            }
        }
        match route(frame.tag, setup) {
            Route::Terminate => {
                out.extend_from_slice(&frame.raw);
                return Ok(Flow::Terminate);
            }
            Route::Query | Route::Parse => {
                if frame.tag == b'Q' {
                    shared.push_inflight();
                }
                let bytes = self.statement(frame).await;
                out.extend_from_slice(&bytes);
            }
            Route::Unanalysed => self.unanalysed(frame, out),
            Route::RefusedFunctionCall => self.refuse_function_call(out),
            Route::Answered => self.answered(frame, out),
            Route::Followed => {
                let replaced = match self.audit.as_mut() {
                    Some(a) => follow(a, frame, self.policy, proxy, shared).await,
                    None => None,
                };
                out.extend_from_slice(replaced.as_ref().unwrap_or(&frame.raw))
            }
            Route::Forward => out.extend_from_slice(&frame.raw),
            Route::Unexpected => {
                let tag = frame.tag;
                return Err(SessionError::Protocol(format!(
                    "unexpected message type {:?} ({tag})",
                    tag as char
                )));
            }
        }
        Ok(Flow::Continue)
    }

    /// A Parse, Bind, Execute, Sync or Query the policy refused as a protocol message.
    fn refuse_protocol(&mut self, frame: &Frame, e: PgError, out: &mut BytesMut) {
        // As the audit trail refuses an Execute: it follows the request, and the client
        // gets the refusal in the Execute's place.
        if let Some(a) = self.audit.as_mut() {
            a.refuse_execute(frame);
        }
        self.proxy
            .metrics
            .statement(Decision::Refused, Class::Unknown);
        out.extend_from_slice(&refused_message(e, &self.shared.refusals));
    }

    /// A frame the policy need not analyse, forwarded unchanged and counted as passed through.
    fn unanalysed(&mut self, frame: &Frame, out: &mut BytesMut) {
        if frame.tag == b'Q' {
            self.shared.push_inflight();
            if let Some(a) = self.audit.as_mut() {
                a.other();
            }
        }
        let sql = unanalysed_text(frame.tag, &frame.raw);
        self.proxy
            .metrics
            .statement(Decision::Passthrough, Class::of_sql(sql));
        out.extend_from_slice(&frame.raw);
    }

    /// A FunctionCall of a restricted session: PostgreSQL receives a query that answers with
    /// the refusal, so the client still gets one response in its place.
    fn refuse_function_call(&mut self, out: &mut BytesMut) {
        let (shared, proxy) = (self.shared, self.proxy);
        shared.push_inflight();
        proxy.metrics.statement(Decision::Refused, Class::Unknown);
        let refusal = function_call_refusal();
        let role = self.policy.role().map_or_else(String::new, |(r, _)| r);
        proxy.metrics.refusal(&role, refusal.code);
        if let Some(a) = self.audit.as_mut() {
            a.other();
        }
        let marker = shared.refusals.marker(refusal);
        out.extend_from_slice(&encode_query(&marker).raw);
    }

    /// A frame PostgreSQL answers with a ReadyForQuery (Sync, FunctionCall): forwarded, and
    /// awaited for the latency histogram and the audit trail.
    fn answered(&mut self, frame: &Frame, out: &mut BytesMut) {
        self.shared.push_inflight();
        if let Some(a) = self.audit.as_mut() {
            if frame.tag == b'S' {
                a.sync();
            } else {
                a.other();
            }
        }
        out.extend_from_slice(&frame.raw);
    }

    /// A Query or Parse: the policy decides, the audit trail admits (or turns the decision
    /// into a refusal), and the bytes PostgreSQL receives follow from the verdict.
    async fn statement(&mut self, frame: &Frame) -> bytes::Bytes {
        let (shared, policy) = (self.shared, &mut *self.policy);
        shared.tell_transactions(policy);
        let utf8 = shared.client_utf8.load(Ordering::Relaxed);
        let (parse, decided) = if frame.tag == b'P' {
            let (parse, decided) = texts::parse(policy, utf8, frame);
            (Some(parse), decided)
        } else {
            (None, texts::query(policy, utf8, frame))
        };
        let (mut verdict, sql) = (decided.verdict, decided.text);
        shared.set_protected(policy);
        note_ddl(policy, shared);
        if let Some(a) = self.audit.as_mut() {
            let admitted = match &parse {
                Some(p) => {
                    a.parse(policy, p.name, &verdict, &sql, decided.readable)
                        .await
                }
                None => a.query(policy, &verdict, &sql, decided.readable).await,
            };
            if let Err(e) = admitted {
                verdict = Verdict::Refuse(e);
            }
        }
        count(self.proxy, policy, &verdict, &sql);
        self.proxy.metrics.statement_purposes(&policy.purposes());
        match &parse {
            Some(p) => parse_out(&frame.raw, p, verdict, &shared.refusals),
            None => query_out(&frame.raw, verdict, &shared.refusals),
        }
    }
}

/// Bind, Describe, Execute or Close as the audit trail follows them: the message PostgreSQL
/// receives instead, when it differs (a Bind padded for hidden columns, or a failing Parse in
/// place of a Describe or Execute the trail refused).
async fn follow(
    a: &mut FrontAudit,
    frame: &Frame,
    policy: &SessionPolicy,
    proxy: &Proxy,
    shared: &Shared,
) -> Option<bytes::Bytes> {
    let refused = match frame.tag {
        b'B' => return a.bind(frame).map(|f| f.raw),
        b'D' => a.describe(frame).err(),
        b'E' => match a.execute(frame).await {
            Ok(replaced) => return replaced.map(|f| f.raw),
            Err(e) => Some(e),
        },
        _ => {
            a.close(frame);
            None
        }
    };
    refused.map(|e| {
        proxy.metrics.statement(Decision::Refused, Class::Unknown);
        let role = policy.role().map_or_else(String::new, |(r, _)| r);
        proxy.metrics.refusal(&role, e.code);
        refused_message(e, &shared.refusals)
    })
}
