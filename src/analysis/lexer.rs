//! A small scan of the raw SQL text for constructs the parser reads differently from
//! PostgreSQL, before anything is parsed.

/// Why the text cannot be analysed faithfully, if it cannot.
pub fn unfaithful(sql: &str) -> Option<&'static str> {
    let b = sql.as_bytes();
    let mut i = 0;
    let word_start = |i: usize| {
        i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$')
    };
    while i < b.len() {
        match b[i] {
            b'-' | b'/' if comment_end(b, i).is_some() => {
                i = comment_end(b, i).map_or(i + 1, |(end, _)| end);
                continue;
            }
            b'\'' => {
                let escapes =
                    i > 0 && (b[i - 1] == b'e' || b[i - 1] == b'E') && (i < 2 || word_start(i - 1));
                i = string_end(b, i + 1, escapes);
                if continued_across_lines(b, i) {
                    return Some("string constants continued across lines");
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'$' if word_start(i) => {
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| p + i + 1);
                if let Some(e) = tag_end {
                    if b[e] == b'$' && !b[i + 1..e].first().is_some_and(|c| c.is_ascii_digit()) {
                        match dollar_end(b, i, e) {
                            Some(end) => i = end,
                            None => return Some("an unterminated dollar-quoted string"),
                        }
                        continue;
                    }
                }
            }
            b'u' | b'U' if word_start(i) => {
                if b.get(i + 1) == Some(&b'&') && matches!(b.get(i + 2), Some(b'\'') | Some(b'"')) {
                    return Some("Unicode-escaped identifiers or strings (U&)");
                }
                if b.len() >= i + 7 && b[i..i + 7].eq_ignore_ascii_case(b"uescape") {
                    return Some("UESCAPE");
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Where a quoted string whose body starts at `i` closes (the index of its closing quote, or
/// the end of the text); `escapes` for an E'' string, where a backslash escapes a quote.
fn string_end(b: &[u8], mut i: usize, escapes: bool) -> usize {
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            break;
        }
        i += 1;
    }
    i
}

/// Whether the string closing at `close` continues: PostgreSQL joins string constants
/// separated by whitespace that holds a newline.
fn continued_across_lines(b: &[u8], close: usize) -> bool {
    let mut j = close + 1;
    let mut newline = false;
    while j < b.len() && b[j].is_ascii_whitespace() {
        newline |= b[j] == b'\n' || b[j] == b'\r';
        j += 1;
    }
    newline && b.get(j) == Some(&b'\'')
}

/// The end of a dollar-quoted string whose tag runs from `start` to `tag_end` (both `$`), or
/// None when it is never closed.
fn dollar_end(b: &[u8], start: usize, tag_end: usize) -> Option<usize> {
    let tag = &b[start..=tag_end];
    let body = tag_end + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::unfaithful;

    #[test]
    fn finds_unicode_escapes_outside_strings_only() {
        assert!(unfaithful(r#"SELECT U&"\0062ank_account" FROM contacts"#).is_some());
        assert!(unfaithful("SELECT u&'\\0041'").is_some());
        assert!(unfaithful("SELECT 'U&\"x\"' AS a").is_none());
        assert!(unfaithful("SELECT 1 -- U&\"x\"\n").is_none());
        assert!(unfaithful("SELECT /* /* U&\"x\" */ */ 1").is_none());
        assert!(unfaithful("SELECT $q$ U&\"x\" $q$").is_none());
        assert!(unfaithful("SELECT 'a' UESCAPE '!'").is_some());
        assert!(unfaithful("SELECT menu&1 FROM t").is_none());
    }

    #[test]
    fn finds_continued_strings_and_unterminated_dollar_quotes() {
        assert!(unfaithful("SELECT 'a'\n'b'").is_some());
        assert!(unfaithful("SELECT 'a' 'b'").is_none());
        assert!(unfaithful("SELECT $a$ never closed").is_some());
        assert!(unfaithful("SELECT E'it\\'s' AS x").is_none());
    }
}

/// Where a comment starting at `i` ends (the `\n` of a line comment, or past the `*/` that
/// closes a nested block comment), and whether it was closed; None if none starts there.
pub fn comment_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    match (b.get(i), b.get(i + 1)) {
        (Some(b'-'), Some(b'-')) => {
            let end = b[i..]
                .iter()
                .position(|c| *c == b'\n')
                .map_or(b.len(), |p| i + p);
            Some((end, true))
        }
        (Some(b'/'), Some(b'*')) => {
            let mut depth = 1;
            let mut j = i + 2;
            while j < b.len() && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            Some((j, depth == 0))
        }
        _ => None,
    }
}

/// The first keyword of the text, lower-cased, past whitespace and comments (for messages).
pub fn first_word(sql: &str) -> Option<String> {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if rest.starts_with("/*") {
            let mut depth = 0usize;
            let mut end = rest.len();
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                match &bytes[i..i + 2] {
                    b"/*" => {
                        depth += 1;
                        i += 2;
                    }
                    b"*/" => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            rest = rest.get(end..).unwrap_or("");
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    (!word.is_empty()).then(|| word.to_ascii_lowercase())
}

#[cfg(test)]
mod first_word_tests {
    use super::first_word;

    #[test]
    fn skips_comments_and_space() {
        assert_eq!(
            first_word("  /* a /* b */ */ -- x\n DO $$ $$").as_deref(),
            Some("do")
        );
        assert_eq!(first_word("select 1").as_deref(), Some("select"));
        assert_eq!(first_word("/* unterminated"), None);
        assert_eq!(first_word(""), None);
    }
}
