//! Byte fixtures through the request filter, and through both filters as a pair: a refusal
//! encoded on the way in comes back as that refusal on the way out.

use super::super::result_filter::{Output, ResultFilter, View};
use super::*;
use crate::protocol::message::decode_parse;
use crate::protocol::Frame;

const POLICY: Setup = Setup {
    restricted: true,
    role_restricted: Some(true),
    audited: true,
};

#[test]
fn every_frontend_message_has_a_route_and_nothing_else_is_accepted() {
    let open = Setup {
        restricted: false,
        role_restricted: None,
        audited: false,
    };
    assert_eq!(route(b'Q', POLICY), Route::Query);
    assert_eq!(route(b'P', POLICY), Route::Parse);
    assert_eq!(route(b'Q', open), Route::Unanalysed);
    assert_eq!(route(b'P', open), Route::Unanalysed);
    assert_eq!(route(b'X', POLICY), Route::Terminate);
    assert_eq!(route(b'S', POLICY), Route::Answered);
    for tag in [b'B', b'D', b'E', b'C'] {
        assert_eq!(route(tag, POLICY), Route::Followed);
        assert_eq!(route(tag, open), Route::Forward);
    }
    for tag in [b'H', b'd', b'c', b'f'] {
        assert_eq!(route(tag, POLICY), Route::Forward);
    }
    // Backend message types, start-up bytes and garbage end the session.
    for tag in [b'T', b'Z', b'R', b'p', 0, 0xff, b'q'] {
        assert_eq!(route(tag, POLICY), Route::Unexpected, "{}", tag as char);
    }
}

#[test]
fn function_call_runs_only_for_unrestricted_roles() {
    assert_eq!(route(b'F', POLICY), Route::RefusedFunctionCall);
    let before_role = Setup {
        role_restricted: None,
        ..POLICY
    };
    assert_eq!(route(b'F', before_role), Route::RefusedFunctionCall);
    let admin = Setup {
        role_restricted: Some(false),
        ..POLICY
    };
    assert_eq!(route(b'F', admin), Route::Answered);
}

#[test]
fn a_forwarded_statement_is_the_clients_own_bytes() {
    let refusals = Refusals::new();
    let q = encode_query("SELECT 1");
    assert_eq!(query_out(&q.raw, Verdict::Forward, &refusals), q.raw);
}

#[test]
fn a_refused_parse_keeps_name_and_parameter_types_and_its_error_returns_as_the_refusal() {
    let refusals = Refusals::new();
    let client = encode_parse(
        b"s1",
        "SELECT bank_account FROM contacts WHERE id = $1",
        &[23],
    );
    let parse = decode_parse(&client).expect("parse");
    let refusal = PgError::insufficient_privilege("pgvakt: contacts.bank_account is blocked");
    let sent = parse_out(
        &client.raw,
        &parse,
        Verdict::Refuse(refusal.clone()),
        &refusals,
    );
    let sent = Frame {
        tag: b'P',
        raw: sent,
    };
    let stand_in = decode_parse(&sent).expect("the stand-in is a Parse");
    assert_eq!(
        (stand_in.name, &stand_in.param_types[..]),
        (&b"s1"[..], &[23u32][..])
    );
    let text = String::from_utf8_lossy(stand_in.sql).into_owned();
    assert!(!text.contains("bank_account"), "{text}");

    // PostgreSQL fails on the marker's column; the result side puts the refusal back.
    let column = text.trim_start_matches("SELECT ").trim_matches('"');
    let upstream = PgError::error("42703", format!("column \"{column}\" does not exist"));
    let mut results = ResultFilter::new(true, true);
    let view = View {
        protected: None,
        refusals: &refusals,
        trail: None,
    };
    let step = results.step(&upstream.to_bytes(), view).expect("step");
    assert_eq!(step.output, Output::Replace(refusal.to_bytes().freeze()));
}

#[test]
fn a_refused_query_or_execute_carries_nothing_of_the_clients_text() {
    let refusals = Refusals::new();
    let q = encode_query("SELECT bank_account FROM contacts");
    let e = PgError::insufficient_privilege("refused");
    let sent = query_out(&q.raw, Verdict::Refuse(e.clone()), &refusals);
    assert!(!String::from_utf8_lossy(&sent).contains("bank_account"));
    let sent = Frame {
        tag: b'P',
        raw: refused_message(e, &refusals),
    };
    assert_eq!(decode_parse(&sent).expect("parse").name, REFUSED_EXECUTE);
}

#[test]
fn unanalysed_texts_are_read_without_trusting_the_frame() {
    let q = encode_query("SELECT 1");
    assert_eq!(unanalysed_text(b'Q', &q.raw), b"SELECT 1\0");
    let p = encode_parse(b"name", "SELECT 2", &[]);
    assert!(unanalysed_text(b'P', &p.raw).starts_with(b"SELECT 2\0"));
    for raw in [&b""[..], b"P", b"P\0\0\0\x04", b"P\0\0\0\x08abc"] {
        let _ = unanalysed_text(b'P', raw);
        let _ = unanalysed_text(b'Q', raw);
    }
    assert_eq!(unanalysed_text(b'P', b"P\0\0\0\x08abc"), b"");
}
