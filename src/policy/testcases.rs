//! `pgvakt policy test`: YAML test cases (role or user + SQL → expected decision) and a runner.
//!
//! The runner takes the analyser as a closure so these cases run against whatever decides
//! statements, without this module depending on it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A test file: `cases: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Policy files or directories the cases are written for, relative to the test file.
    #[serde(default)]
    pub policy: Vec<String>,
    /// Schema snapshot (`pgvakt policy snapshot`) to analyse against, relative to the test file.
    /// `schema:` is accepted as its older name (a policy's `schema:` is a database schema).
    #[serde(default, alias = "schema")]
    pub snapshot: Option<String>,
    pub cases: Vec<Spanned<TestCase>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded unchanged.
    Allow,
    /// Forwarded after masking.
    Rewrite,
    /// Refused with an error.
    Refuse,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Rewrite => "rewrite",
            Decision::Refuse => "refuse",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Policy role the statement runs as; or give `user`.
    #[serde(default)]
    pub role: Option<String>,
    /// Login user, its role resolved from the grants as at login.
    #[serde(default)]
    pub user: Option<String>,
    /// With `user`: its PostgreSQL groups (default: none offline, looked up with --upstream).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// With `user`: when the login happens, for `valid_from`/`valid_until` (RFC 3339 or
    /// YYYY-MM-DD; default now).
    #[serde(default)]
    pub at: Option<String>,
    /// With `user`: the policy role it must resolve to.
    #[serde(default)]
    pub expect_role: Option<String>,
    pub sql: String,
    pub expect: Decision,
    /// SQLSTATE of the refusal, e.g. "42501".
    #[serde(default)]
    pub sqlstate: Option<String>,
    /// Text the refusal's message must contain, e.g. "bank_account".
    #[serde(default)]
    pub message: Option<String>,
    /// Columns (`table.column`) that must be masked; others may be too unless listed exactly.
    #[serde(default)]
    pub masked: Vec<String>,
    /// Columns whose reference must cause the refusal.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Written columns whose stored value must stay unless NULL goes into a new row (write
    /// rule `keep`: the forwarded statement guards the value).
    #[serde(default)]
    pub kept: Vec<String>,
    /// Tables (`table` or `schema.table`) whose row rules must apply to the statement.
    #[serde(default)]
    pub rows: Vec<String>,
    /// Exact SQL forwarded upstream (after rewriting), when the case pins it.
    #[serde(default)]
    pub sql_out: Option<String>,
}

impl TestCase {
    /// What the case says it runs as, or why it cannot run.
    pub fn subject(&self) -> Result<Subject<'_>, String> {
        match (&self.role, &self.user) {
            (Some(r), None) => {
                if self.groups.is_some() || self.at.is_some() || self.expect_role.is_some() {
                    return Err("groups, at and expect_role go with user:, not role:".into());
                }
                Ok(Subject::Role(r))
            }
            (None, Some(u)) => {
                let at = match &self.at {
                    Some(t) => {
                        Some(super::grants::parse_bound(t, false).map_err(|e| format!("at: {e}"))?)
                    }
                    None => None,
                };
                Ok(Subject::User {
                    name: u,
                    groups: self.groups.as_deref(),
                    at,
                })
            }
            _ => Err("give either role: or user:".into()),
        }
    }
}

/// Who a case's statement runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Role(&'a str),
    User {
        name: &'a str,
        /// Given in the case (None: none offline, looked up when live).
        groups: Option<&'a [String]>,
        /// Unix seconds of the login (None: now).
        at: Option<i64>,
    },
}

/// What the analyser decided for one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The policy role it ran as, and how a user got it.
    pub role: String,
    pub via: Option<String>,
    pub decision: Decision,
    pub masked: Vec<String>,
    pub blocked: Vec<String>,
    pub kept: Vec<String>,
    /// `schema.table` of the tables whose row rules the statement was given, with those rules.
    pub rows: Vec<(String, Vec<String>)>,
    pub sql_out: Option<String>,
    /// SQLSTATE and message of the refusal.
    pub error: Option<(String, String)>,
}

impl TestOutcome {
    /// One line on what happened, for a failed case.
    fn summary(&self) -> String {
        let mut s = format!("got {} as role {}", self.decision.as_str(), self.role);
        if let Some(via) = &self.via {
            s.push_str(&format!(" (via {via})"));
        }
        for (what, list) in [
            ("masked", &self.masked),
            ("blocked", &self.blocked),
            ("kept", &self.kept),
        ] {
            if !list.is_empty() {
                s.push_str(&format!("; {what}: {}", list.join(", ")));
            }
        }
        if !self.rows.is_empty() {
            // A rewrite with nothing masked or kept is the row rules' alone: say so, since
            // `expect: allow` is the usual mistake then.
            let only = self.decision == Decision::Rewrite
                && self.masked.is_empty()
                && self.kept.is_empty();
            let tables: Vec<String> = self
                .rows
                .iter()
                .map(|(t, rules)| format!("{t} ({})", rules.join("; ")))
                .collect();
            let what = if only {
                "a rewrite only for row rules"
            } else {
                "row rules"
            };
            s.push_str(&format!("; {what}: {}", tables.join(", ")));
        }
        if let Some((code, msg)) = &self.error {
            s.push_str(&format!("; refused with {code}: {msg}"));
        }
        s
    }
}

/// Test files of `paths`: files as given, directories as their `*.yaml`/`*.yml` files
/// (sorted, not recursive).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let entries = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.is_file()
                    && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        if found.is_empty() {
            return Err(format!(
                "{}: no *.yaml test files in the directory",
                p.display()
            ));
        }
        found.sort();
        out.extend(found);
    }
    if out.is_empty() {
        return Err("no test files given".into());
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: error: {message}")]
    Parse {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
}

pub fn parse_test_file(path: &Path) -> Result<TestFile, TestFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TestFileError::Read {
        file: file.clone(),
        source,
    })?;
    parse_tests(&file, &text)
}

pub fn parse_tests(file: &str, text: &str) -> Result<TestFile, TestFileError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        TestFileError::Parse {
            file: file.into(),
            line,
            column,
            message: super::diag::yaml_message(&e, false),
        }
    })
}

/// One failed case, with where it is.
#[derive(Debug)]
pub struct Failure {
    pub file: String,
    pub line: u64,
    pub name: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: usize,
    pub failures: Vec<Failure>,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for fl in &self.failures {
            for p in &fl.problems {
                writeln!(f, "{}:{}: FAIL {}: {p}", fl.file, fl.line, fl.name)?;
            }
        }
        writeln!(f, "{} passed, {} failed", self.passed, self.failures.len())
    }
}

/// Runs every case through `decide`.
pub fn run<F>(file: &str, tests: &TestFile, decide: F) -> TestReport
where
    F: Fn(&TestCase, Subject<'_>) -> Result<TestOutcome, String>,
{
    let mut report = TestReport::default();
    for case in &tests.cases {
        let c = &case.value;
        let problems = match c.subject() {
            Ok(subject) => match decide(c, subject) {
                Ok(got) => compare(c, &got),
                Err(e) => vec![e],
            },
            Err(e) => vec![e],
        };
        if problems.is_empty() {
            report.passed += 1;
        } else {
            report.failures.push(Failure {
                file: file.into(),
                line: case.referenced.line(),
                name: c.name.clone(),
                problems,
            });
        }
    }
    report
}

/// What differs between a case and what happened; with a last line on what happened.
fn compare(c: &TestCase, got: &TestOutcome) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(want) = &c.expect_role {
        if *want != got.role {
            problems.push(format!("expected role {want}, got {}", got.role));
        }
    }
    if got.decision != c.expect {
        problems.push(format!(
            "expected {}, got {}",
            c.expect.as_str(),
            got.decision.as_str()
        ));
    }
    let code = got.error.as_ref().map(|(c, _)| c.as_str());
    let message = got.error.as_ref().map(|(_, m)| m.as_str());
    if let Some(want) = &c.sqlstate {
        if code != Some(want.as_str()) {
            problems.push(format!(
                "expected SQLSTATE {want}, got {}",
                code.unwrap_or("none")
            ));
        }
    }
    if let Some(want) = &c.message {
        if !message.is_some_and(|m| m.contains(want.as_str())) {
            problems.push(format!("expected a message containing {want:?}"));
        }
    }
    let have = |list: &[String]| list.iter().cloned().collect::<BTreeSet<_>>();
    for (want, got_list, what) in [
        (&c.masked, &got.masked, "masked"),
        (&c.blocked, &got.blocked, "blocked"),
        (&c.kept, &got.kept, "kept"),
    ] {
        let got_set = have(got_list);
        for w in want.iter().filter(|w| !got_set.contains(*w)) {
            problems.push(format!("expected {w} to be {what}"));
        }
    }
    for w in &c.rows {
        let hit = got
            .rows
            .iter()
            .any(|(t, _)| t == w || t.rsplit_once('.').is_some_and(|(_, n)| n == w));
        if !hit {
            problems.push(format!("expected the row rules of {w} to apply"));
        }
    }
    if let Some(want) = &c.sql_out {
        if got.sql_out.as_deref() != Some(want.as_str()) {
            problems.push(format!("expected SQL {want:?}, got {:?}", got.sql_out));
        }
    }
    if !problems.is_empty() {
        problems.push(got.summary());
    }
    problems
}
