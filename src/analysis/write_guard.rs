//! Writes into columns a role cannot read as stored, decided by PostgreSQL inside the statement.
//!
//! A role whose write rule for a masked or blocked column is `keep` may:
//! - put NULL or DEFAULT into that column of a new row (ORMs list every column when they create
//!   a row); a value that is only known when the statement runs (a parameter, an expression) is
//!   wrapped so that PostgreSQL lets NULL through and fails on anything else;
//! - write back, in an UPDATE, exactly the value it reads for that row (an ORM's form save
//!   writes every loaded column): the stored value stays. The value is replaced by
//!   `CASE WHEN CAST((v) AS type) IS NOT DISTINCT FROM <mask of col> THEN col ELSE <fail> END`,
//!   so the comparison and the write happen in one row operation and cannot be raced.
//!
//! What this reveals: whether `v` equals the masked value of each row the UPDATE reaches, which
//! the role can read anyway; the rows are those its WHERE selects, where protected columns of
//! the written table are themselves masked. Blocked columns have no value the role reads, so an
//! UPDATE may not set them at all. The stored value never leaves PostgreSQL: the failure is a
//! cast of a constant marker, whose error the relay replaces by the refusal it stands for
//! ([`refusal_in`]), and the guard's parts enter the statement as stand-ins after PostgreSQL's
//! parser has checked the rest.
//!
//! The failing branch must not be folded when PostgreSQL plans the statement (a constant
//! `CAST('x' AS integer)` would fail at planning, whichever branch runs): `concat` is stable,
//! so the cast is evaluated only in the row that reaches it.

use std::sync::{Arc, LazyLock};

use rand::Rng;
use sqlparser::ast::Expr;

use super::authority::GuardPlaces;
use super::{parse_expr, stand_in};
use crate::analysis::Refusal;
use crate::protocol::PgError;

static NONCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "pgvakt-write-refused-{:032x}-",
        rand::thread_rng().gen::<u128>()
    )
});

/// The parts of a guard, each a checked stand-in put in place after the parser's check.
pub struct Guard {
    pub expr: Expr,
    pub stand_ins: Vec<(String, Arc<str>)>,
    /// Where PostgreSQL's parse-tree check must find each part.
    pub places: GuardPlaces,
}

fn name(placeholder: &str) -> String {
    placeholder.trim_matches('"').to_owned()
}

fn part(sql: &str, stand_ins: &mut Vec<(String, Arc<str>)>) -> Result<String, String> {
    let checked = stand_in::check_expr(sql)?;
    let placeholder = stand_in::placeholder();
    stand_ins.push((placeholder.clone(), checked));
    Ok(placeholder)
}

/// An expression of type `ty` that makes PostgreSQL fail with `refusal`, when evaluated.
fn failure(refusal: &Refusal, ty: &str) -> String {
    let refusal = refusal.to_pg_error();
    let mut text = refusal.message;
    if let Some(d) = &refusal.detail {
        text.push('\u{0}');
        text.push_str(d);
    }
    format!(
        "CAST(CAST(CAST(pg_catalog.concat('{}{}') AS integer) AS text) AS {ty})",
        *NONCE,
        hex::encode(text)
    )
}

/// [`failure`], for other guards of the analysis.
pub(super) fn failure_sql(refusal: &Refusal, ty: &str) -> String {
    failure(refusal, ty)
}

/// `value`, for a new row: NULL passes, anything else fails with `refusal`.
pub fn insert(value: &Expr, column: &str, ty: &str, refusal: &Refusal) -> Result<Guard, String> {
    let mut stand_ins = Vec::new();
    let fail = part(&failure(refusal, ty), &mut stand_ins)?;
    let sql = format!("CASE WHEN CAST(({value}) AS {ty}) IS NULL THEN NULL ELSE {fail} END");
    let expr = parse_expr(&sql).map_err(|e| e.to_string())?;
    let places = GuardPlaces {
        column: column.to_owned(),
        mask: None,
        stored: None,
        fail: name(&fail),
    };
    Ok(Guard {
        expr,
        stand_ins,
        places,
    })
}

/// `value`, for an existing row: the masked value the role reads (`mask`) keeps the stored
/// value (`column`), anything else fails with `refusal`.
pub fn update(
    value: &Expr,
    (column, column_sql): (&str, &str),
    ty: &str,
    mask: &str,
    refusal: &Refusal,
) -> Result<Guard, String> {
    let mut stand_ins = Vec::new();
    let masked = part(mask, &mut stand_ins)?;
    let stored = part(column_sql, &mut stand_ins)?;
    let fail = part(&failure(refusal, ty), &mut stand_ins)?;
    let sql = format!(
        "CASE WHEN CAST(({value}) AS {ty}) IS NOT DISTINCT FROM {masked} THEN {stored} ELSE {fail} END"
    );
    let expr = parse_expr(&sql).map_err(|e| e.to_string())?;
    let places = GuardPlaces {
        column: column.to_owned(),
        mask: Some(name(&masked)),
        stored: Some(name(&stored)),
        fail: name(&fail),
    };
    Ok(Guard {
        expr,
        stand_ins,
        places,
    })
}

/// The refusal a guard's failure stands for, if PostgreSQL's error `message` is one.
pub fn refusal_in(message: &str) -> Option<PgError> {
    let start = message.find(NONCE.as_str())? + NONCE.len();
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let bytes = hex::decode(digits).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(2, '\u{0}');
    let mut err = PgError::insufficient_privilege(parts.next()?.to_owned());
    if let Some(d) = parts.next() {
        err = err.with_detail(d.to_owned());
    }
    Some(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reads_back_as_its_refusal_and_nothing_else_does() {
        let refusal = Refusal {
            role: "r".into(),
            policy_version: "1".into(),
            reason: Box::new(crate::analysis::Reason::Policy {
                message: "no 'quote' \"here\"".into(),
                hint: None,
            }),
        };
        let sql = failure(&refusal, "date");
        let refusal = refusal.to_pg_error();
        let literal = sql.split('\'').nth(1).expect("a literal");
        let message = format!("invalid input syntax for type integer: \"{literal}\"");
        let back = refusal_in(&message).expect("resolved");
        assert_eq!(back.message, refusal.message);
        assert_eq!(back.detail, refusal.detail);
        assert_eq!(back.code, "42501");
        assert!(refusal_in(
            "invalid input syntax for type integer: \"pgvakt-write-refused-00-41\""
        )
        .is_none());
    }

    #[test]
    fn guards_read_back_as_one_expression() {
        let v = parse_expr("$1").unwrap();
        let refusal = Refusal {
            role: "r".into(),
            policy_version: "1".into(),
            reason: Box::new(crate::analysis::Reason::Policy {
                message: "x".into(),
                hint: None,
            }),
        };
        let g = update(
            &v,
            ("bank_account", "\"contacts\".\"bank_account\""),
            "text",
            "'***'",
            &refusal,
        )
        .unwrap();
        assert_eq!(g.stand_ins.len(), 3);
        let text = g.expr.to_string();
        assert!(
            text.starts_with("CASE WHEN CAST(($1) AS TEXT) IS NOT DISTINCT FROM"),
            "{text}"
        );
        let g = insert(&v, "date_of_birth", "date", &refusal).unwrap();
        assert_eq!(g.stand_ins.len(), 1);
        assert!(g.expr.to_string().contains("IS NULL THEN NULL ELSE"));
    }
}
