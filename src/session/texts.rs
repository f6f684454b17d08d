//! The text of a Query or Parse as the relay decides on it, when a policy is loaded.
//!
//! The analysis reads UTF-8. An unrestricted role's bytes are PostgreSQL's to read, as with a
//! direct connection: in any `client_encoding`, and even bytes PostgreSQL will reject with its
//! own error; they are forwarded as sent. A restricted role's text must be UTF-8 read in a
//! UTF8 session; otherwise it gets the error PostgreSQL gives for such text (22021 for an
//! invalid byte, 08P01 for a malformed message, 42501 in another encoding) and the session
//! goes on.

use std::borrow::Cow;

use crate::enforce::{SessionPolicy, Verdict};
use crate::protocol::message::{self, Parse, TextError};
use crate::protocol::{Frame, PgError};

/// What the relay does with a statement text.
pub struct Decided<'a> {
    pub verdict: Verdict,
    /// The text for audit records and metrics (with replacement characters where it is not
    /// UTF-8).
    pub text: Cow<'a, str>,
    /// The analysis could read the text as PostgreSQL will. A forwarded text it could not read
    /// is audited as unknown.
    pub readable: bool,
}

/// Decide on a simple-protocol Query.
pub fn query<'a>(policy: &mut SessionPolicy, client_utf8: bool, frame: &'a Frame) -> Decided<'a> {
    let raw = message::query_bytes(frame).unwrap_or_else(|_| up_to_nul(frame.body()));
    decide(policy, client_utf8, raw, message::decode_query(frame))
}

/// Decide on a Parse. A Parse that cannot be decoded comes with its statement name (if it can
/// be read) and no parameter types, for the refusal that stands in for it.
pub fn parse<'a>(
    policy: &mut SessionPolicy,
    client_utf8: bool,
    frame: &'a Frame,
) -> (Parse<'a>, Decided<'a>) {
    match message::decode_parse(frame) {
        Ok(p) => {
            let mut decided = decide(policy, client_utf8, p.sql, message::utf8_text(p.sql));
            if let Some(e) = declared_types_refusal(&decided.verdict, &p.param_types) {
                decided.verdict = Verdict::Refuse(e);
            }
            (p, decided)
        }
        Err(e) => {
            let p = Parse {
                name: message::parse_name(frame).unwrap_or_default(),
                sql: b"",
                param_types: Vec::new(),
            };
            (p, decide(policy, client_utf8, b"", Err(e)))
        }
    }
}

/// A Parse's declared parameter types choose the comparisons PostgreSQL makes with them. A
/// parameter repeated inside a row-ruled stand-in meets hidden rows there, so it may only have
/// a type that cannot make PostgreSQL convert a column's value in a way that fails (see
/// `pushdown_parameters::SAFE_DECLARED_TYPES`): an `oid` compared with a bigint key would fail on a
/// hidden row past 4294967295 and so tell it exists.
fn declared_types_refusal(verdict: &Verdict, oids: &[u32]) -> Option<PgError> {
    let Verdict::Rewrite(a) = verdict else {
        return None;
    };
    let (n, oid) = crate::analysis::unsafe_declared_parameter(&a.pushed_parameters, oids)?;
    Some(
        PgError::insufficient_privilege(format!(
            "pgvakt: parameter ${n} is declared with type OID {oid}; it is compared with a column of a table the role's row rules filter, where that type could convert the stored values"
        ))
        .with_hint("Leave the parameter's type to PostgreSQL, or declare the column's own type."),
    )
}

fn decide<'a>(
    policy: &mut SessionPolicy,
    client_utf8: bool,
    raw: &'a [u8],
    decoded: Result<&'a str, TextError>,
) -> Decided<'a> {
    if let (Ok(sql), true) = (decoded.as_ref(), client_utf8) {
        return Decided {
            verdict: policy.check(sql),
            text: Cow::Borrowed(sql),
            readable: true,
        };
    }
    // Pure ASCII reads the same in every client encoding PostgreSQL supports, which is enough
    // for the audit; a restricted role's rewritten text is not, so any other encoding is
    // refused for it.
    let (text, readable, refusal) = match decoded {
        Ok(sql) => (
            Cow::Borrowed(sql),
            sql.is_ascii(),
            PgError::insufficient_privilege(
                "pgvakt: client_encoding is not UTF8 in this session; restricted roles need UTF8",
            ),
        ),
        Err(e) => (String::from_utf8_lossy(raw), false, e.to_pg_error()),
    };
    let restricted = policy.role().is_none_or(|(_, restricted)| restricted);
    let verdict = if restricted {
        Verdict::Refuse(refusal)
    } else {
        // Unrestricted: `check` only notes schema changes. A role that became restricted
        // since `role()` gets the refusal.
        match policy.check(&text) {
            Verdict::Forward => Verdict::Forward,
            _ => Verdict::Refuse(refusal),
        }
    };
    Decided {
        verdict,
        text,
        readable,
    }
}

fn up_to_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}
