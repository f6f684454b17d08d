//! Lexical agreement: PostgreSQL's scanner and sqlparser's tokenizer must cut the forwarded
//! text into the same tokens, or the statement is refused. A rendering holds no comments, so
//! any comment PostgreSQL sees is something sqlparser read as code, or the reverse.

use pg_query::protobuf::{ScanToken, Token as PgToken};
use sqlparser::tokenizer::{Location, Token, Tokenizer, Whitespace};

/// PostgreSQL's scanner over `sql`: every token, comments included. pg_query hands a text
/// without tokens (empty, or only spaces) back as a null pointer that it then reads as a slice:
/// undefined behaviour, which debug builds turn into an abort of the whole process. A `;` on a
/// line of its own after the text always scans as a token of its own (a `--` comment ends at the
/// newline; an unterminated quote or comment is an error either way), so it is appended and
/// dropped again.
pub fn pg_tokens(sql: &str) -> Result<Vec<ScanToken>, pg_query::Error> {
    let mut tokens = pg_query::scan_tokens(&format!("{sql}\n;"))?;
    tokens.retain(|t| usize::try_from(t.start).is_ok_and(|start| start < sql.len()));
    Ok(tokens)
}

/// PostgreSQL's tokens of `sql`, checked against sqlparser's.
pub fn agree(sql: &str) -> Result<Vec<ScanToken>, String> {
    let pg = scan(sql)?;
    let ours = Tokenizer::new(&super::super::dialect(), sql)
        .tokenize_with_location()
        .map_err(|e| format!("sqlparser cannot tokenize it ({e})"))?;
    let offsets = Offsets::new(sql);
    let mut mine = Vec::with_capacity(ours.len());
    for t in &ours {
        match &t.token {
            Token::EOF => {}
            Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab) => {}
            Token::Whitespace(_) => return Err("sqlparser reads a comment in it".into()),
            tok => mine.push((
                offsets.byte(t.span.start),
                offsets.byte(t.span.end),
                is_string(tok),
            )),
        }
    }
    if mine.len() != pg.len() {
        return Err(format!(
            "PostgreSQL reads {} tokens where sqlparser reads {}",
            pg.len(),
            mine.len()
        ));
    }
    for (p, (start, end, string)) in pg.iter().zip(&mine) {
        let (ps, pe) = (p.start as usize, p.end as usize);
        if Some(ps) != *start || Some(pe) != *end {
            return Err(format!(
                "PostgreSQL and sqlparser cut it differently near byte {}",
                ps.min(start.unwrap_or(ps))
            ));
        }
        if is_pg_string(p.token) != *string {
            return Err(format!(
                "PostgreSQL and sqlparser disagree whether {:?} is a string",
                sql.get(ps..pe).unwrap_or("")
            ));
        }
    }
    Ok(pg)
}

/// PostgreSQL's scan, with the tokens a rendering never holds refused: comments, and numbers
/// in forms newer servers read as one token and PostgreSQL 15 reads otherwise (`0x1F`, `1_000`).
pub fn scan(sql: &str) -> Result<Vec<ScanToken>, String> {
    let pg = pg_tokens(sql).map_err(|e| format!("PostgreSQL cannot scan it ({e})"))?;
    for t in &pg {
        let text = sql.get(t.start as usize..t.end as usize).unwrap_or("");
        if t.token == PgToken::SqlComment as i32 || t.token == PgToken::CComment as i32 {
            return Err("PostgreSQL reads a comment in it".into());
        }
        if (t.token == PgToken::Iconst as i32 || t.token == PgToken::Fconst as i32)
            && !text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return Err(format!(
                "the number {text} is read differently by PostgreSQL versions"
            ));
        }
    }
    Ok(pg)
}

fn is_pg_string(token: i32) -> bool {
    [
        PgToken::Sconst,
        PgToken::Usconst,
        PgToken::Bconst,
        PgToken::Xconst,
    ]
    .iter()
    .any(|t| *t as i32 == token)
}

fn is_string(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DoubleQuotedString(_)
    )
}

/// Byte offsets for sqlparser's (line, column) locations, both counted from 1 in characters.
struct Offsets {
    /// Byte offset of every character, and the text's length at the end.
    chars: Vec<usize>,
    /// Index in `chars` of every line's first character.
    lines: Vec<usize>,
}

impl Offsets {
    fn new(sql: &str) -> Self {
        let mut chars = Vec::with_capacity(sql.len() + 1);
        let mut lines = vec![0];
        for (i, (b, c)) in sql.char_indices().enumerate() {
            chars.push(b);
            if c == '\n' {
                lines.push(i + 1);
            }
        }
        chars.push(sql.len());
        Offsets { chars, lines }
    }

    fn byte(&self, l: Location) -> Option<usize> {
        let line = usize::try_from(l.line).ok()?.checked_sub(1)?;
        let col = usize::try_from(l.column).ok()?.checked_sub(1)?;
        self.chars.get(self.lines.get(line)? + col).copied()
    }
}

/// Whether `filled` is `shape` with each literal marker (`$9000000` + index) replaced by one
/// token that is exactly that literal, as PostgreSQL's scanner reads both.
pub fn same_but_literals(shape: &str, filled: &str, literals: &[String]) -> Result<(), String> {
    let a = scan(shape)?;
    let b = scan(filled)?;
    if a.len() != b.len() {
        return Err("the constants change how PostgreSQL cuts the statement".into());
    }
    for (s, f) in a.iter().zip(&b) {
        let st = shape.get(s.start as usize..s.end as usize).unwrap_or("");
        let ft = filled.get(f.start as usize..f.end as usize).unwrap_or("");
        let marker = (s.token == PgToken::Param as i32)
            .then(|| st.strip_prefix('$')?.parse::<usize>().ok())
            .flatten()
            // A literal's marker, or a copy of it (a row rules' stand-in repeats it).
            .and_then(super::super::literals::Marker::of)
            .map(|m| m.index);
        match marker {
            Some(i) => {
                let literal_kind = [PgToken::Sconst, PgToken::Iconst, PgToken::Fconst]
                    .iter()
                    .any(|k| *k as i32 == f.token);
                if !literal_kind || literals.get(i).map(String::as_str) != Some(ft) {
                    return Err("a constant is not read as one literal".into());
                }
            }
            None if s.token != f.token || st != ft => {
                return Err("the constants change how PostgreSQL reads the statement".into())
            }
            None => {}
        }
    }
    Ok(())
}

/// Tokens one operator chain may hold before a statement counts as too complex. A chain
/// (`1+1+...`, `a AND b AND ...`, `x::t::t...`, UNION ALL after UNION ALL) parses into a tree
/// as deep as it is long, and every later step walks that depth; lists (`IN (...)`, `VALUES`,
/// select lists) are cut by commas and parentheses and may be as long as they like.
pub const MAX_CHAIN: usize = 10_000;

/// The longest run of tokens between commas, parentheses, brackets and semicolons, found by
/// PostgreSQL's scanner without parsing. None when the text does not scan.
pub fn longest_chain(sql: &str) -> Option<usize> {
    let tokens = pg_tokens(sql).ok()?;
    let cuts = [b',', b'(', b')', b'[', b']', b';'].map(i32::from);
    let (mut run, mut longest) = (0usize, 0usize);
    for t in &tokens {
        if cuts.contains(&t.token) {
            run = 0;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    Some(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_without_tokens_scan_to_nothing_instead_of_aborting() {
        for sql in ["", " ", "\n\t ", ";"] {
            let tokens = pg_tokens(sql).expect("scans");
            assert_eq!(tokens.len(), usize::from(sql == ";"), "{sql:?}");
        }
        assert!(!super::super::calls_unlisted_function(""));
        assert_eq!(longest_chain(" "), Some(0));
        // pg_query's parser takes the same texts (an empty query is a valid one).
        for sql in ["", "  ", "-- only a comment"] {
            let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).expect("parses");
            assert!(parsed.protobuf.stmts.is_empty(), "{sql:?}");
        }
    }

    #[test]
    fn the_appended_token_changes_nothing_before_it() {
        let sql = "SELECT a -- note";
        let tokens = pg_tokens(sql).expect("scans");
        let texts: Vec<&str> = tokens
            .iter()
            .map(|t| &sql[t.start as usize..t.end as usize])
            .collect();
        assert_eq!(texts, ["SELECT", "a", "-- note"]);
        for open in ["SELECT 'a", "SELECT /* a", "SELECT $$a", "SELECT \"a"] {
            assert!(pg_tokens(open).is_err(), "{open:?} is unterminated");
        }
    }
}
