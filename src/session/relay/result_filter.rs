//! What the result side does with each frame from PostgreSQL, decided without awaiting or
//! locking: the pump (`results.rs`) reads, asks this filter, then writes what it says. So
//! refusal swaps, NULLing of protected columns, withheld error details and transaction
//! tracking can be checked with byte fixtures alone.

use bytes::Bytes;

use super::super::refusals::Refusals;
use super::super::rowwatch::{self, Protected};
use super::super::trail::AuditTrail;
use crate::audit::Record;
use crate::protocol::message;
use crate::protocol::{Frame, PgError};

/// What reaches the client in place of the frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Output {
    /// The frame as PostgreSQL sent it.
    Keep,
    /// These bytes instead.
    Replace(Bytes),
    /// Not this frame: this FATAL, then the session ends.
    Fatal(PgError),
}

/// A ReadyForQuery: the transaction state it reports and what ended with it.
#[derive(Debug, PartialEq)]
pub(crate) struct Ready {
    /// 'I', 'T' or 'E'.
    pub status: u8,
    /// A transaction block ended here; true when it committed.
    pub ended: Option<bool>,
}

/// One frame's outcome, with what the pump must do besides writing it (in this order: audit
/// records before the frame reaches the client).
#[derive(Debug)]
pub(crate) struct Step {
    pub output: Output,
    /// Audit records completed by this frame.
    pub records: Vec<Record>,
    /// Protected columns found in a result the analysis should have masked.
    pub anomaly: Option<Vec<String>>,
    pub ready: Option<Ready>,
    /// The session's client_encoding changed; true when it is UTF8.
    pub client_utf8: Option<bool>,
}

impl Step {
    fn keep() -> Step {
        Step {
            output: Output::Keep,
            records: Vec::new(),
            anomaly: None,
            ready: None,
            client_utf8: None,
        }
    }
}

/// What the filter reads from the rest of the session for one frame.
pub(crate) struct View<'a> {
    /// Origins of the columns the role may not see as stored.
    pub protected: Option<&'a Protected>,
    pub refusals: &'a Refusals,
    pub trail: Option<&'a mut AuditTrail>,
}

/// The result side's own state.
pub(crate) struct ResultFilter {
    /// Statements go through the policy.
    restricted: bool,
    /// The session's role has restrictions.
    role_restricted: bool,
    /// Columns of the current result whose values are replaced (see rowwatch).
    nulling: Option<Vec<usize>>,
    /// The last command completed was a ROLLBACK.
    rolled_back: bool,
    /// Transaction status of the last ReadyForQuery.
    tx_status: u8,
    /// The answers now arriving are withheld (`withhold`); the ReadyForQuery that ends them
    /// goes to the client behind this error.
    withholding: Option<PgError>,
}

impl ResultFilter {
    pub fn new(restricted: bool, role_restricted: bool) -> ResultFilter {
        ResultFilter {
            restricted,
            role_restricted,
            nulling: None,
            rolled_back: false,
            tx_status: b'I',
            withholding: None,
        }
    }

    /// The client gets `error` instead of every answer up to the next ReadyForQuery (a
    /// statement whose intent record could not be made durable, which ran alone).
    pub fn withhold(&mut self, error: PgError) {
        self.withholding = Some(error);
    }

    /// Decide one complete frame (tag, length and body). Err: PostgreSQL sent something
    /// malformed that had to be decoded.
    pub fn step(&mut self, frame: &[u8], view: View<'_>) -> Result<Step, String> {
        let mut step = self.decide(frame, view)?;
        let Some(error) = &self.withholding else {
            return Ok(step);
        };
        // The frame still went through the trail and the transaction tracking above. Another
        // session's notification is not part of the answers (a withheld read calls no volatile
        // function, so it sends none of its own).
        match step.output {
            Output::Fatal(_) => {}
            _ if frame.first() == Some(&b'A') => {}
            _ if frame.first() == Some(&b'Z') => {
                let mut out = error.to_bytes();
                out.extend_from_slice(frame);
                step.output = Output::Replace(out.freeze());
                self.withholding = None;
            }
            _ => step.output = Output::Replace(Bytes::new()),
        }
        Ok(step)
    }

    fn decide(&mut self, frame: &[u8], view: View<'_>) -> Result<Step, String> {
        let Some(&tag) = frame.first() else {
            return Ok(Step::keep());
        };
        let mut step = Step::keep();
        let mut replaced: Option<Bytes> = None;
        if let Some(trail) = view.trail {
            if trail.wants(tag) {
                let (done, r) = trail.on_frame(tag, frame);
                step.records = done;
                replaced = r;
            }
        }
        if self.role_restricted && (tag == b'E' || tag == b'N') {
            if let Some(r) = rowwatch::withhold_row_detail(frame) {
                replaced = Some(r);
            }
        }
        match tag {
            b'T' if self.role_restricted => {
                self.nulling = None;
                if let Some(protected) = view.protected {
                    let flagged = rowwatch::flagged_columns(frame, protected).unwrap_or_default();
                    if !flagged.is_empty() {
                        step.anomaly = Some(flagged.iter().map(|(_, n)| n.clone()).collect());
                        self.nulling = Some(flagged.into_iter().map(|(i, _)| i).collect());
                    }
                }
            }
            b'D' => {
                if let Some(cols) = self.nulling.as_deref() {
                    let row = replaced.as_deref().unwrap_or(frame);
                    let nulled = rowwatch::null_columns(row, cols)
                        .ok_or_else(|| "upstream sent an invalid DataRow".to_owned())?;
                    replaced = Some(nulled);
                }
            }
            // The last command before the block ends decides (ROLLBACK TO SAVEPOINT answers
            // ROLLBACK too, but a COMMIT follows it).
            b'C' => self.rolled_back = frame.get(5..).is_some_and(|t| t.starts_with(b"ROLLBACK")),
            b'Z' => step.ready = Some(self.ready(frame)),
            b'S' => {
                if let Some(fatal) = self.parameter_status(frame, &mut step) {
                    step.output = Output::Fatal(fatal);
                    return Ok(step);
                }
            }
            b'E' if self.restricted => {
                if let Some(err) = refusal_of(frame, view.refusals) {
                    step.output = Output::Replace(err.to_bytes().freeze());
                    return Ok(step);
                }
            }
            _ => {}
        }
        if let Some(r) = replaced {
            step.output = Output::Replace(r);
        }
        Ok(step)
    }

    fn ready(&mut self, frame: &[u8]) -> Ready {
        let status = frame.get(5).copied().unwrap_or(self.tx_status);
        let before = std::mem::replace(&mut self.tx_status, status);
        // A transaction block ended: committed unless it failed or a ROLLBACK (also
        // PostgreSQL's answer to COMMIT of a failed one) ended it.
        let ended =
            (status == b'I' && before != b'I').then_some(before == b'T' && !self.rolled_back);
        Ready { status, ended }
    }

    /// A FATAL when a setting changed to something analysis cannot follow for this role.
    fn parameter_status(&self, frame: &[u8], step: &mut Step) -> Option<PgError> {
        let frame = Frame {
            tag: b'S',
            raw: Bytes::copy_from_slice(frame),
        };
        let (name, value) = message::decode_parameter_status(&frame).ok()?;
        let bad = match name.as_str() {
            "client_encoding" => {
                let utf8 = value == "UTF8";
                step.client_utf8 = Some(utf8);
                !utf8
            }
            "standard_conforming_strings" => value != "on",
            _ => false,
        };
        // Analysis assumes standard string syntax and reads UTF-8; reading text another way
        // would let PostgreSQL execute something else than was analysed.
        (bad && self.role_restricted).then(|| {
            PgError::fatal(
                "42501",
                format!("pgvakt: {name} cannot be {value} for this role: restricted roles need standard_conforming_strings on and UTF8"),
            )
        })
    }
}

/// The refusal an upstream error stands for, when it came from a refusal marker or a write
/// guard.
fn refusal_of(frame: &[u8], refusals: &Refusals) -> Option<PgError> {
    let frame = Frame {
        tag: b'E',
        raw: Bytes::copy_from_slice(frame),
    };
    let fields = message::decode_fields(&frame).ok()?;
    let (_, text) = fields.iter().find(|(c, _)| *c == b'M')?;
    refusals.resolve(text)
}

#[cfg(test)]
#[path = "result_filter_tests.rs"]
mod tests;
