//! The normalised form of a statement for audit records: every literal and parameter becomes
//! `?`, so records group executions of one statement and never hold the values a user typed
//! (which may themselves be personal data: `WHERE email = 'x@y'`).

use std::ops::ControlFlow;

use sha2::{Digest, Sha256};
use sqlparser::ast::{Expr, Value, VisitMut, VisitorMut};
use sqlparser::parser::Parser;

use super::dialect;

struct Literals;

impl VisitorMut for Literals {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = e {
            if !matches!(v.value, Value::Null | Value::Boolean(_)) {
                v.value = Value::Placeholder("?".into());
            }
        }
        ControlFlow::Continue(())
    }
}

/// (fingerprint, normalised text). Text that does not parse is reduced to its first word:
/// without a parse the literals cannot be told apart from the rest.
pub fn normalize(sql: &str) -> (String, String) {
    if sql.len() > super::MAX_ANALYSED_BYTES {
        return summary(sql, "too long to parse");
    }
    if super::authority::too_complex(sql).is_some() {
        return summary(sql, "too complex to parse");
    }
    super::on_a_fitting_stack(sql.len(), || normalize_parsed(sql))
}

fn summary(sql: &str, why: &str) -> (String, String) {
    let text = format!(
        "{} ({why})",
        super::lexer::first_word(sql)
            .unwrap_or_default()
            .to_ascii_uppercase()
    );
    let digest = Sha256::digest(text.as_bytes());
    (hex::encode(&digest[..8]), text)
}

fn normalize_parsed(sql: &str) -> (String, String) {
    let text = match Parser::parse_sql(&dialect(), sql) {
        Ok(mut stmts) => {
            let _ = stmts.visit(&mut Literals);
            stmts
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        }
        Err(_) => format!(
            "{} (not parsed)",
            super::lexer::first_word(sql)
                .unwrap_or_default()
                .to_ascii_uppercase()
        ),
    };
    let digest = Sha256::digest(text.as_bytes());
    (hex::encode(&digest[..8]), text)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn literals_never_survive_and_shapes_share_a_fingerprint() {
        let (f1, t1) =
            normalize("SELECT * FROM contacts WHERE email = 'anna@example.com' AND id = 42");
        let (f2, _) = normalize("select * from contacts where email = 'bo@example.com' and id = 7");
        assert!(!t1.contains("anna") && !t1.contains("42"), "{t1}");
        assert_eq!(t1, "SELECT * FROM contacts WHERE email = ? AND id = ?");
        assert_eq!(f1, f2);
        let (_, t) = normalize("SELECT $$secret$$, E'x', 1.5, $1");
        assert!(!t.contains("secret") && !t.contains("1.5"), "{t}");
        assert_eq!(normalize("DO $$ secret $$").1, "DO (not parsed)");
    }
}
