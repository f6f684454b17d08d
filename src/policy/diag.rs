//! Policy problems: each with file, line, column, field path and an optional suggestion.

use std::fmt;

use serde_saphyr::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Field path inside the file, e.g. `roles.secretary.categories.finance`.
    pub path: String,
    pub message: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {level}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean '{s}'?)")?;
        }
        Ok(())
    }
}

/// Where a problem is: file plus position; `Location::UNKNOWN`-like zeros are kept as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn new(file: &str, loc: &Location) -> Self {
        Pos {
            file: file.to_owned(),
            line: loc.line(),
            column: loc.column(),
        }
    }

    pub fn file_only(file: &str) -> Self {
        Pos {
            file: file.to_owned(),
            line: 0,
            column: 0,
        }
    }
}

impl Pos {
    /// The position in a rule's origin text, `path (file:line:column)` as validation writes it
    /// (only the first rule of a `a; b` chain counts); None when it names no position.
    pub fn of_rule(rule: &str) -> Option<(String, Pos)> {
        let first = rule.split("; ").next().unwrap_or(rule);
        let (path, rest) = first.rsplit_once(" (")?;
        let inner = rest.strip_suffix(')')?;
        let mut parts = inner.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?.to_owned();
        Some((path.to_owned(), Pos { file, line, column }))
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Collects every problem instead of stopping at the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, pos: &Pos, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, pos, path.into(), message.into(), None);
    }

    pub fn warning(&mut self, pos: &Pos, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, pos, path.into(), message.into(), None);
    }

    /// An error about an unknown name, with the closest known name as suggestion.
    pub fn unknown<'a>(
        &mut self,
        pos: &Pos,
        path: impl Into<String>,
        message: impl Into<String>,
        name: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) {
        let suggestion = suggest(name, known);
        self.push(
            Severity::Error,
            pos,
            path.into(),
            message.into(),
            suggestion,
        );
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: &Pos,
        path: String,
        message: String,
        suggestion: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            file: pos.file.clone(),
            line: pos.line,
            column: pos.column,
            path,
            message,
            suggestion,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Sorted by file and position so reports read top to bottom.
    pub fn sorted(mut self) -> Self {
        self.items.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
        });
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A YAML parser error as pgvakt's users should read it: the parser's messages for developers
/// give advice about its own API ("set DuplicateKeyPolicy in Options"); those are replaced by
/// its user-facing wording. `snippet` keeps the offending lines in the text.
pub fn yaml_message(e: &serde_saphyr::Error, snippet: bool) -> String {
    let e = if snippet { e } else { e.without_snippet() };
    let text = e.to_string();
    if text.contains(" in Options") || text.contains("Options::") {
        e.render_with_formatter(&serde_saphyr::UserMessageFormatter)
    } else {
        text
    }
}

/// The closest known name, if it is close enough to be a plausible typo.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    known
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_owned())
}

/// A policy that failed to load; the old policy (if any) stays in force.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy has {} error(s):\n{}", .diagnostics.items.iter().filter(|d| d.severity == Severity::Error).count(), .diagnostics)]
pub struct PolicyErrors {
    pub diagnostics: Diagnostics,
}

#[cfg(test)]
mod tests {
    #[test]
    fn rule_origins_give_their_position() {
        let (path, pos) =
            super::Pos::of_rule("roles.sales.categories.financial (policies/crm.yaml:99:7); x")
                .unwrap();
        assert_eq!(path, "roles.sales.categories.financial");
        assert_eq!(
            (pos.file.as_str(), pos.line, pos.column),
            ("policies/crm.yaml", 99, 7)
        );
        assert!(super::Pos::of_rule("built-in deny_all").is_none());
    }

    #[test]
    fn yaml_errors_carry_no_parser_api_advice() {
        let mut diags = super::Diagnostics::default();
        let _ = super::super::source::parse("p.yaml", "schema: a\nschema: b\n".into(), &mut diags);
        let text = diags.to_string();
        assert!(!text.contains("Options"), "{text}");
        assert!(
            text.contains("duplicate") && text.contains("schema"),
            "{text}"
        );
    }
}
