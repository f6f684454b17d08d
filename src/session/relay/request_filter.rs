//! What the request side does with each frame from the client, decided without awaiting: which
//! path a message takes, and the bytes PostgreSQL receives for a statement once the policy (and
//! the audit trail, which may wait for a durable record) has ruled on it. The pump
//! (`relay.rs`) reads, asks, records and writes.

use bytes::Bytes;

use super::super::refusals::Refusals;
use crate::enforce::Verdict;
use crate::protocol::message::{encode_parse, encode_query, Parse};
use crate::protocol::PgError;

/// Name of the statement a refused Execute or Describe is replaced with; its Parse fails in
/// parse analysis, before PostgreSQL would store (or find a clash with) the name.
pub(crate) const REFUSED_EXECUTE: &[u8] = b"pgvakt-refused-execute";

/// The path one client message takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Terminate: forwarded, then the session ends.
    Terminate,
    /// A simple Query the policy decides on.
    Query,
    /// A Parse the policy decides on.
    Parse,
    /// A Query or Parse relayed without a policy (counted only).
    Unanalysed,
    /// FunctionCall from a role it is not allowed to (it runs any function by OID, past every
    /// analysis).
    RefusedFunctionCall,
    /// Sync, or a FunctionCall that may run: a request PostgreSQL answers with ReadyForQuery.
    Answered,
    /// Bind, Describe, Execute or Close, which the audit trail follows.
    Followed,
    /// Everything else the protocol allows after start-up: forwarded as is.
    Forward,
    /// Not a frontend message: the session ends with a protocol error.
    Unexpected,
}

/// How the session is set up, as far as routing is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    /// A policy is loaded: statements are analysed.
    pub restricted: bool,
    /// The role has restrictions; None before a role is known.
    pub role_restricted: Option<bool>,
    /// An audit trail follows the extended protocol.
    pub audited: bool,
}

pub(crate) fn route(tag: u8, setup: Setup) -> Route {
    match tag {
        b'X' => Route::Terminate,
        b'Q' if setup.restricted => Route::Query,
        b'P' if setup.restricted => Route::Parse,
        b'Q' | b'P' => Route::Unanalysed,
        // Unrestricted roles relay it (libpq's large-object functions use it).
        b'F' if setup.restricted && setup.role_restricted.is_none_or(|r| r) => {
            Route::RefusedFunctionCall
        }
        b'S' | b'F' => Route::Answered,
        b'B' | b'D' | b'E' | b'C' if setup.audited => Route::Followed,
        b'B' | b'D' | b'E' | b'C' | b'H' | b'd' | b'c' | b'f' => Route::Forward,
        _ => Route::Unexpected,
    }
}

/// The error a refused FunctionCall gets.
pub(crate) fn function_call_refusal() -> PgError {
    PgError::insufficient_privilege(
        "pgvakt: the FunctionCall protocol message is not allowed for this role",
    )
    .with_hint("Call the function in a SQL statement instead.")
}

/// The Query PostgreSQL receives for a decided one: the client's own bytes when forwarded,
/// else the rewritten text, or a marker that fails where the statement would have run.
pub(crate) fn query_out(raw: &Bytes, verdict: Verdict, refusals: &Refusals) -> Bytes {
    match verdict {
        Verdict::Forward => raw.clone(),
        Verdict::Rewrite(a) => encode_query(a.sql()).raw,
        Verdict::Refuse(e) => encode_query(&refusals.marker(e)).raw,
    }
}

/// The Parse PostgreSQL receives for a decided one; name and parameter types are the client's.
pub(crate) fn parse_out(
    raw: &Bytes,
    parse: &Parse<'_>,
    verdict: Verdict,
    refusals: &Refusals,
) -> Bytes {
    match verdict {
        Verdict::Forward => raw.clone(),
        Verdict::Rewrite(a) => encode_parse(parse.name, a.sql(), &parse.param_types).raw,
        Verdict::Refuse(e) => encode_parse(parse.name, &refusals.marker(e), &parse.param_types).raw,
    }
}

/// What stands in for an extended-protocol message the audit trail refused: a Parse that
/// fails, so PostgreSQL skips to Sync and the refusal takes its error's place.
pub(crate) fn refused_message(e: PgError, refusals: &Refusals) -> Bytes {
    encode_parse(REFUSED_EXECUTE, &refusals.marker(e), &[]).raw
}

/// The text of a Query or Parse relayed without a policy, for the statement counter.
pub(crate) fn unanalysed_text(tag: u8, raw: &[u8]) -> &[u8] {
    let body = raw.get(5..).unwrap_or_default();
    if tag == b'Q' {
        return body;
    }
    // A Parse's query text follows the statement name.
    body.iter()
        .position(|&b| b == 0)
        .and_then(|i| body.get(i + 1..))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "request_filter_tests.rs"]
mod tests;
