//! `pgvakt policy test`: YAML test cases (role + SQL → expected decision) and a runner.
//!
//! The runner takes the analyser as a closure so these cases run against whatever decides
//! statements, without this module depending on it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

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
    #[serde(default)]
    pub schema: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// Policy role (not user) the statement runs as.
    pub role: String,
    pub sql: String,
    pub expect: Decision,
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
    /// Exact SQL forwarded upstream (after rewriting), when the case pins it.
    #[serde(default)]
    pub sql_out: Option<String>,
}

/// What the analyser decided for one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub decision: Decision,
    pub masked: Vec<String>,
    pub blocked: Vec<String>,
    pub kept: Vec<String>,
    pub sql_out: Option<String>,
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

/// Runs every case through `decide(role, sql)`.
pub fn run<F>(file: &str, tests: &TestFile, decide: F) -> TestReport
where
    F: Fn(&str, &str) -> TestOutcome,
{
    let mut report = TestReport::default();
    for case in &tests.cases {
        let c = &case.value;
        let got = decide(&c.role, &c.sql);
        let mut problems = Vec::new();
        if got.decision != c.expect {
            problems.push(format!("expected {:?}, got {:?}", c.expect, got.decision));
        }
        let have = |list: &[String]| list.iter().cloned().collect::<BTreeSet<_>>();
        let missing = |want: &[String], got: &[String], what: &str, problems: &mut Vec<String>| {
            let got = have(got);
            for w in want.iter().filter(|w| !got.contains(*w)) {
                problems.push(format!("expected {w} to be {what}"));
            }
        };
        missing(&c.masked, &got.masked, "masked", &mut problems);
        missing(&c.blocked, &got.blocked, "blocked", &mut problems);
        missing(&c.kept, &got.kept, "kept", &mut problems);
        if let Some(want) = &c.sql_out {
            if got.sql_out.as_deref() != Some(want.as_str()) {
                problems.push(format!("expected SQL {want:?}, got {:?}", got.sql_out));
            }
        }
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
