//! `MOVE`: repositioning a cursor, analysed as the FETCH it mirrors; and FETCH or MOVE without
//! FROM/IN before the cursor name, which PostgreSQL allows and the parser does not.

use sqlparser::ast::Statement;
use sqlparser::parser::Parser;

use super::{dialect, Analysed, Ctx};
use crate::analysis::{Refusal, Why};
use crate::policy::model::StatementClass;

/// `MOVE` has FETCH's grammar but the parser does not know it: psycopg's scrollable cursors and
/// pgjdbc's `setFetchDirection` send it. It returns no rows, only repositions a cursor whose
/// query was analysed at DECLARE; it is checked as the FETCH it mirrors.
pub(super) fn move_as_fetch(sql: &str) -> Option<String> {
    let t = sql.trim_start();
    let word = t.get(..4)?;
    let next = t.as_bytes().get(4).copied();
    let is_word_end = next.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$'));
    (word.eq_ignore_ascii_case("move") && is_word_end).then(|| format!("FETCH{}", &t[4..]))
}

/// A FETCH written as PostgreSQL allows and the parser does not: without FROM/IN before the
/// cursor (`FETCH 2 held`) or without a direction (`FETCH held`, `FETCH FROM held`, which mean
/// NEXT); the same FETCH as the parser reads it, or None for any other text. Only tried after
/// the text as written failed to parse; the rendering of what it parses to is what is
/// forwarded and checked by PostgreSQL's parser, so a wrong guess is an error, never a leak.
pub(super) fn with_from(sql: &str) -> Option<String> {
    let t = sql.trim().trim_end_matches(';').trim_end();
    if super::lexer::first_word(t).as_deref() != Some("fetch") {
        return None;
    }
    let (head, cursor) = t.rsplit_once(char::is_whitespace)?;
    let words: Vec<&str> = head.split_whitespace().collect();
    match words.as_slice() {
        [_fetch] => Some(format!("FETCH NEXT FROM {cursor}")),
        [_fetch, from] if from.eq_ignore_ascii_case("from") || from.eq_ignore_ascii_case("in") => {
            Some(format!("FETCH NEXT FROM {cursor}"))
        }
        [.., last] if last.eq_ignore_ascii_case("from") || last.eq_ignore_ascii_case("in") => None,
        _ => Some(format!("{head} FROM {cursor}")),
    }
}

pub(super) fn analyse_move(fetch: &str, ctx: &Ctx) -> Result<Analysed, Refusal> {
    // PostgreSQL lets FROM/IN be left out (asyncpg does); the parser needs it. Whatever is
    // guessed here is checked by rendering, so a wrong guess is an error, never a leak.
    let stmts = Parser::parse_sql(&dialect(), fetch)
        .or_else(|e| match with_from(fetch) {
            Some(t) => Parser::parse_sql(&dialect(), &t).map_err(|_| e),
            None => Err(e),
        })
        .map_err(|e| ctx.unsupported(&format!("this MOVE statement ({e})")))?;
    let [stmt @ Statement::Fetch { .. }] = stmts.as_slice() else {
        return Err(ctx.unsupported("a MOVE statement combined with other statements"));
    };
    if !ctx.rules.allows_class(StatementClass::Utility) {
        return Err(ctx.not_allowed("Utility statements", Why::Plain));
    }
    let rendered = stmt.to_string();
    let tail = rendered
        .strip_prefix("FETCH")
        .ok_or_else(|| ctx.unsupported("a MOVE statement that does not render back"))?;
    let mut out = Analysed {
        original: fetch.to_owned(),
        command: "MOVE".into(),
        ..Default::default()
    };
    out.classes.push(StatementClass::Utility);
    out.sql = format!("MOVE{tail}");
    out.verify_with_postgres(&out.sql, ctx)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::move_as_fetch;

    #[test]
    fn move_is_read_as_fetch_only_when_it_is_the_keyword() {
        assert_eq!(
            move_as_fetch("  MOVE 20 FROM \"c\"").as_deref(),
            Some("FETCH 20 FROM \"c\"")
        );
        assert_eq!(
            move_as_fetch("move\tforward 10 c").as_deref(),
            Some("FETCH\tforward 10 c")
        );
        assert_eq!(move_as_fetch("MOVEMENT"), None);
        assert_eq!(move_as_fetch("SELECT 1; MOVE 1 c"), None);
        assert_eq!(move_as_fetch("mov"), None);
    }

    #[test]
    fn a_fetch_without_from_or_direction_is_read_as_postgresql_reads_it() {
        use super::with_from;
        assert_eq!(
            with_from("FETCH held").as_deref(),
            Some("FETCH NEXT FROM held")
        );
        assert_eq!(
            with_from("fetch in held").as_deref(),
            Some("FETCH NEXT FROM held")
        );
        assert_eq!(
            with_from(" fetch 2 held ;").as_deref(),
            Some("fetch 2 FROM held")
        );
        assert_eq!(with_from("FETCH 2 FROM held"), None);
        assert_eq!(with_from("SELECT held"), None);
        assert_eq!(with_from("FETCH"), None);
    }
}
