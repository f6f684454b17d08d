//! Statement shapes: the same query with different constants (`WHERE id = 42`, `... = 43`) is
//! analysed once. A shape is the client's text with each plain string and number constant
//! replaced by a numbered marker; the analysis of the shape is reused and the constants are
//! put back, token for token, into its rendering.
//!
//! This is sound because the decision never depends on a constant's value (the one function
//! whose argument matters, `set_config`, keeps a statement out of shapes), and fail-safe: any
//! text the scan is unsure about (prefixed or dollar-quoted strings, unusual numbers, markers
//! already present) is analysed as it is, and a rendering in which a marker does not appear
//! exactly once is not used.

/// Markers are `$9000000` + index (`$9500000` + index for whole numbers, see [`Marker`]):
/// parameters PostgreSQL would reject (it allows at most 65535), of one width so no marker is
/// the prefix of another.
pub(crate) const MARKER_BASE: usize = 9_000_000;
/// A copy of literal i (a condition the row rules' stand-in repeats, `row_pushdown`) is
/// `$8000000` + i: it may appear anywhere and any number of times.
pub(crate) const COPY_BASE: usize = 8_000_000;
const MAX_LITERALS: usize = 99_999;
/// Markers (and copies) of whole numbers of up to 18 digits, always an integer type to
/// PostgreSQL, sit this far above the others: a shape's analysis may then treat them as
/// integers, as it treats the client's own text (`$1 + 9` repeated in a stand-in,
/// `row_pushdown`), and a shape holds whole numbers or it does not.
const WHOLE: usize = 500_000;

/// What a `$n` in a shape or its rendering stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The literal's position in [`Shape::literals`].
    pub index: usize,
    /// A copy (may appear anywhere, any number of times) rather than the literal's own place.
    pub copy: bool,
    /// The literal is a whole number.
    pub whole: bool,
}

impl Marker {
    /// The marker `$n` is, None for a parameter or anything else.
    pub(crate) fn of(n: usize) -> Option<Marker> {
        let (base, copy) = if n >= MARKER_BASE {
            (MARKER_BASE, false)
        } else if n >= COPY_BASE {
            (COPY_BASE, true)
        } else {
            return None;
        };
        let offset = n - base;
        let whole = offset >= WHOLE;
        let index = if whole { offset - WHOLE } else { offset };
        (index < MAX_LITERALS).then_some(Marker { index, copy, whole })
    }

    /// The text of this marker as a copy.
    pub(crate) fn copy_text(self) -> String {
        format!(
            "${}",
            COPY_BASE + self.index + if self.whole { WHOLE } else { 0 }
        )
    }
}

/// A statement's shape and the constants taken out of it, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    pub text: String,
    pub literals: Vec<String>,
}

fn marker(i: usize, whole: bool) -> String {
    format!("${}", MARKER_BASE + i + if whole { WHOLE } else { 0 })
}

/// Whether PostgreSQL reads `literal` as an integer constant, whatever its digits.
fn is_whole(literal: &str) -> bool {
    !literal.is_empty() && literal.len() <= 18 && literal.bytes().all(|b| b.is_ascii_digit())
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// The shape of `sql`, or None when it should be analysed as it is.
pub fn shape(sql: &str) -> Option<Shape> {
    if !may_have_shape(sql) {
        return None;
    }
    let b = sql.as_bytes();
    let mut text = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'-' | b'/' if super::lexer::comment_end(b, i).is_some() => {
                match super::lexer::comment_end(b, i) {
                    Some((end, true)) => i = end,
                    _ => return None,
                }
            }
            b'"' => i = quoted_name_end(b, i)?,
            b'\'' => {
                let end = plain_string_end(b, i)?;
                push(sql, i, end, &mut copied, &mut text, &mut literals)?;
                i = end;
            }
            b'$' => {
                // Parameters ($1) pass; dollar-quoted strings are analysed as they are.
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                i += 1 + digits;
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                if i > 0 && (ident_char(b[i - 1]) || b[i - 1] == b'.') {
                    // Part of a name (t1) or a qualified reference.
                    i += 1;
                    continue;
                }
                let end = plain_number_end(sql, i)?;
                push(sql, i, end, &mut copied, &mut text, &mut literals)?;
                i = end;
            }
            b';' => {
                // Several statements: a later one (SET search_path = 'x') may depend on its
                // constants' values, so the text is analysed as it is.
                if !sql[i + 1..].trim().is_empty() {
                    return None;
                }
                i += 1;
            }
            b'\\' => {
                // Never part of a plain constant with standard strings; a reader that thinks
                // otherwise would split constants differently.
                return None;
            }
            c if ident_char(c) => {
                // Skip a whole word so digits inside it are not read as numbers.
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if literals.is_empty() {
        return None;
    }
    text.push_str(&sql[copied..]);
    Some(Shape { text, literals })
}

/// Statements whose constants may be taken out: plain reads and writes, without pgvakt's own
/// markers in the text and without settings a constant could change.
fn may_have_shape(sql: &str) -> bool {
    let Some(first) = super::lexer::first_word(sql) else {
        return false;
    };
    matches!(
        first.as_str(),
        "select" | "insert" | "update" | "delete" | "with" | "values"
    ) && !sql.contains("$9")
        && !has_copy_marker(sql)
        && !sql.to_ascii_lowercase().contains("set_config")
}

/// Where the quoted name that starts at `start` ends (`""` stands for a quote inside it);
/// None when it does not.
fn quoted_name_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return None,
            Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
            Some(b'"') => return Some(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// Where the plain string constant that starts at `start` ends; None when it is not one that
/// every reader splits alike: prefixed (E'', B'', X'', N'', U&''), holding a backslash,
/// continued on the next line, or not ended.
fn plain_string_end(b: &[u8], start: usize) -> Option<usize> {
    if start > 0 && (ident_char(b[start - 1]) || b[start - 1] == b'&') {
        return None;
    }
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return None,
            // A backslash means nothing in a standard string, but a reader with other
            // settings would end the string elsewhere: not a shape.
            Some(b'\\') => return None,
            Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => {
                i += 1;
                break;
            }
            Some(_) => i += 1,
        }
    }
    // A constant continued on the next line is one string to PostgreSQL.
    let rest = &b[i..];
    let ws = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
    if rest.get(ws) == Some(&b'\'') {
        return None;
    }
    Some(i)
}

/// Where the number that starts at `start` ends; None when it is not a plain decimal number to
/// every reader (`1e`, `1_000`, `0x1F`, `1abc`, `1.2.3`).
fn plain_number_end(sql: &str, start: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut i = start;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            // `1e` is a number and a name to PostgreSQL.
            return None;
        }
        i += exp;
    }
    if i < b.len() && ident_char(b[i]) {
        return None;
    }
    if sql[start..i].matches('.').count() > 1 {
        return None;
    }
    Some(i)
}

fn push(
    sql: &str,
    start: usize,
    end: usize,
    copied: &mut usize,
    text: &mut String,
    literals: &mut Vec<String>,
) -> Option<()> {
    if literals.len() >= MAX_LITERALS {
        return None;
    }
    text.push_str(&sql[*copied..start]);
    text.push(' ');
    let literal = &sql[start..end];
    text.push_str(&marker(literals.len(), is_whole(literal)));
    text.push(' ');
    literals.push(literal.to_owned());
    *copied = end;
    Some(())
}

/// The rendering of a shape's analysis with the constants put back; None if a marker does not
/// occur exactly once as a whole token.
pub fn fill(rendered: &str, literals: &[String]) -> Option<String> {
    let mut out = String::with_capacity(rendered.len() + 16 * literals.len());
    let mut rest = rendered;
    let mut expected = 0;
    while let Some(pos) = next_marker(rest) {
        let digits: String = rest[pos + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let m = Marker::of(digits.parse().ok()?)?;
        let literal = literals.get(m.index)?;
        // The class is part of the shape: a rendering that changed it is not used.
        if m.whole != is_whole(literal) {
            return None;
        }
        if !m.copy {
            if m.index != expected {
                return None;
            }
            expected += 1;
        }
        out.push_str(&rest[..pos]);
        out.push_str(literal);
        rest = &rest[pos + 1 + digits.len()..];
    }
    if expected != literals.len() {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// `text` with each literal marker turned into the copy marker of the same literal, for a
/// text repeated elsewhere in the statement (the markers themselves are filled once each).
pub fn as_copies(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = next_marker(rest) {
        let digits = rest[pos + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let number = rest[pos + 1..pos + 1 + digits].parse::<usize>().ok();
        out.push_str(&rest[..pos]);
        match number.and_then(Marker::of).filter(|m| !m.copy) {
            Some(m) => out.push_str(&m.copy_text()),
            None => out.push_str(&rest[pos..pos + 1 + digits]),
        }
        rest = &rest[pos + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// Where the next marker or copy marker starts: `$9...`, or `$8` with seven digits (a
/// client's `$8` parameter is not one).
fn next_marker(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(1)).find(|&i| {
        b[i] == b'$' && (b[i + 1] == b'9' || (b[i + 1] == b'8' && is_copy_marker_at(b, i)))
    })
}

fn is_copy_marker_at(b: &[u8], i: usize) -> bool {
    let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    digits == 7
}

/// A client's text that already holds something a copy marker would be mistaken for.
fn has_copy_marker(sql: &str) -> bool {
    let b = sql.as_bytes();
    (0..b.len().saturating_sub(1))
        .any(|i| b[i] == b'$' && b[i + 1] == b'8' && is_copy_marker_at(b, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_turn_markers_into_copy_markers_and_leave_the_rest() {
        assert_eq!(
            as_copies("id = $9000002 AND x = $8000001 AND y = $9 AND z = $12"),
            "id = $8000002 AND x = $8000001 AND y = $9 AND z = $12"
        );
    }

    #[test]
    fn constants_become_markers_and_come_back() {
        let s = shape("SELECT a, 't1' FROM t1 WHERE id = 42 AND x > 1.5e3 AND name = 'O''Brien'")
            .expect("shape");
        assert_eq!(
            s.text,
            "SELECT a,  $9000000  FROM t1 WHERE id =  $9500001  AND x >  $9000002  AND name =  $9000003 "
        );
        assert_eq!(s.literals, ["'t1'", "42", "1.5e3", "'O''Brien'"]);
        let rendered =
            "SELECT a, $9000000 FROM t1 WHERE id = $9500001 AND x > $9000002 AND name = $9000003";
        assert_eq!(
            fill(rendered, &s.literals).as_deref(),
            Some("SELECT a, 't1' FROM t1 WHERE id = 42 AND x > 1.5e3 AND name = 'O''Brien'")
        );
    }

    #[test]
    fn unsure_text_is_analysed_as_it_is() {
        for sql in [
            "SELECT E'\\'' FROM t",
            "SELECT $$x$$",
            "SELECT 'a'\n'b'",
            "SELECT set_config('search_path', 'x', false)",
            "SET search_path = 'x'",
            "SELECT 1_000",
            "SELECT 0x1F",
            "SELECT $9000000",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "SELECT U&'\\0041'",
            "SELECT b'101'",
            "SELECT 1.2.3",
            "SELECT 1e FROM t",
            "SELECT 1e+ FROM t",
            "SELECT 1; SET search_path = 'x'",
            "SELECT 'a\\' FROM t",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
        assert_eq!(shape("SELECT a FROM t WHERE b = $1"), None, "no constants");
    }

    #[test]
    fn names_comments_and_quoted_identifiers_keep_their_digits() {
        let s =
            shape("SELECT \"col 1\", t2.c3 -- 5\n FROM t2 /* 6 */ WHERE c3 = 7").expect("shape");
        assert_eq!(s.literals, ["7"]);
        assert!(s.text.contains("\"col 1\", t2.c3 -- 5\n FROM t2 /* 6 */"));
    }

    #[test]
    fn copies_of_a_literal_are_filled_anywhere_and_parameters_stay() {
        let literals = ["42".to_owned(), "'x'".to_owned()];
        assert_eq!(
            fill("SELECT a FROM (SELECT a FROM t WHERE id = $8500000) s WHERE id = $9500000 AND b = $8 AND c = $9000001", &literals).as_deref(),
            Some("SELECT a FROM (SELECT a FROM t WHERE id = 42) s WHERE id = 42 AND b = $8 AND c = 'x'")
        );
        assert_eq!(fill("SELECT $8000002, $9500000, $9000001", &literals), None);
        // A marker whose class is not its literal's: the rendering is not used.
        assert_eq!(fill("SELECT $9000000, $9000001", &literals), None);
        assert_eq!(fill("SELECT $9500000, $9500001", &literals), None);
        assert_eq!(fill("SELECT $8000000, $9500000, $9000001", &literals), None);
        assert!(shape("SELECT a FROM t WHERE id = $8000000 AND b = 1").is_none());
        assert!(shape("SELECT a FROM t WHERE id = $8 AND b = 1").is_some());
    }

    #[test]
    fn renderings_with_missing_duplicated_or_reordered_markers_are_not_used() {
        let lits = vec!["1".to_owned(), "2".to_owned()];
        assert_eq!(fill("a $9500000 b", &lits), None);
        assert_eq!(fill("a $9500001 b $9500000", &lits), None);
        assert_eq!(fill("a $9500000 b $9500000", &lits), None);
        assert_eq!(
            fill("a $9500000 b $9500001", &lits).as_deref(),
            Some("a 1 b 2")
        );
    }
}
