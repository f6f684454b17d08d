//! `pgvakt audit search`: which records concern a data subject (and/or a user, a period, an
//! outcome). The subject's pseudonym is computed here from the raw id with the subject key, per
//! table named in each record, exactly as the proxy computed it.
//!
//! Search does not check the chain; `pgvakt audit verify` does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::Value;

use super::files::expand_inputs;
use super::keys::KeySource;
use super::record::{EventType, Outcome, Record};
use super::subjects::SubjectKey;
use crate::policy::grants::{parse_bound, parse_rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    Ok,
    Refused,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The matching records as JSON lines, each with an added "match" field.
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SearchArgs {
    /// Audit files, or directories whose audit-*.jsonl files are read.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The data subject's key value as text, e.g. the contact id `42`.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only subjects of this table (`contacts` or `schema.table`). Default: every table.
    #[arg(long)]
    pub table: Option<String>,
    /// Only records of this login user.
    #[arg(long)]
    pub user: Option<String>,
    /// From this time on (RFC 3339, or a date meaning its start, UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (RFC 3339, or a date meaning its end, UTC).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Event type, e.g. statement_read, refused, login_failed.
    #[arg(long)]
    pub event: Option<String>,
    /// Also list reads of the subject's table(s) whose subjects were not (all) recorded:
    /// aggregates and results past the subject cap. Shown as "possible" matches.
    #[arg(long)]
    pub include_unknown: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// File holding the subject key (audit.subject_key_file). Default: the variable in --key-env.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the subject key (audit.subject_key_env).
    #[arg(long, default_value = "PGVAKT_AUDIT_SUBJECT_KEY")]
    pub key_env: String,
}

/// How a record matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The subject's pseudonym is listed (or no subject was asked for).
    Yes,
    /// The record read the table but could not list every subject.
    Possible,
}

/// The filters, parsed.
pub struct Query {
    pub subject: Option<(SubjectKey, String)>,
    pub table: Option<String>,
    pub user: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub outcome: Option<Outcome>,
    pub event: Option<EventType>,
    pub include_unknown: bool,
}

fn table_matches(filter: Option<&str>, table: &str) -> bool {
    match filter {
        None => true,
        Some(f) if f.contains('.') => f == table,
        Some(f) => table.rsplit_once('.').map_or(table, |(_, t)| t) == f,
    }
}

impl Query {
    /// Whether `rec` matches; `refs` caches the subject's pseudonym per table.
    pub fn matches(&self, rec: &Record, refs: &mut HashMap<String, String>) -> Option<Match> {
        if self
            .user
            .as_ref()
            .is_some_and(|u| rec.user.as_ref() != Some(u))
            || self.outcome.is_some_and(|o| o != rec.outcome)
            || self.event.is_some_and(|e| e != rec.event)
        {
            return None;
        }
        if self.since.is_some() || self.until.is_some() {
            let t = parse_rfc3339(&rec.ts).ok()?;
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return None;
            }
        }
        let table = self.table.as_deref();
        let Some((key, id)) = &self.subject else {
            let any_table = table.is_none()
                || rec.tables.iter().any(|t| table_matches(table, &t.table))
                || rec.subjects.iter().any(|g| table_matches(table, &g.table));
            return any_table.then_some(Match::Yes);
        };
        for group in rec
            .subjects
            .iter()
            .filter(|g| table_matches(table, &g.table))
        {
            let r = refs
                .entry(group.table.clone())
                .or_insert_with(|| key.pseudonym(&group.table, id));
            if group.refs.iter().any(|x| x == r) {
                return Some(Match::Yes);
            }
        }
        let incomplete = rec.subjects_unknown || rec.subjects_truncated;
        let read_table = rec.tables.iter().any(|t| table_matches(table, &t.table));
        (self.include_unknown && incomplete && read_table).then_some(Match::Possible)
    }
}

fn parse_event(s: &str) -> Result<EventType, String> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        format!(
            "--event: unknown event type '{s}' (statement_intent, statement_read, \
             statement_write, refused, login, login_failed, disconnect, policy_reload, anomaly)"
        )
    })
}

fn query(args: &SearchArgs) -> Result<Query, String> {
    let subject = match &args.subject {
        Some(id) => {
            let source = KeySource {
                env_field: "--key-env",
                file_field: "--key-file",
                env: &args.key_env,
                file: args.key_file.as_deref(),
            };
            let key = source.load().map_err(|e| e.to_string())?;
            Some((SubjectKey::new(&key), id.clone()))
        }
        None => None,
    };
    Ok(Query {
        subject,
        table: args.table.clone(),
        user: args.user.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| parse_bound(s, false).map_err(|e| format!("--since: {e}")))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|s| parse_bound(s, true).map_err(|e| format!("--until: {e}")))
            .transpose()?,
        outcome: args.outcome.map(|o| match o {
            OutcomeArg::Ok => Outcome::Ok,
            OutcomeArg::Refused => Outcome::Refused,
            OutcomeArg::Error => Outcome::Error,
        }),
        event: args.event.as_deref().map(parse_event).transpose()?,
        include_unknown: args.include_unknown,
    })
}

/// A matching record and the line it was read from.
#[derive(Debug, Clone)]
pub struct Hit {
    pub matched: Match,
    pub record: Record,
    pub line: String,
}

/// Matching records, and how many lines were not records at all.
pub fn search_files(files: &[PathBuf], q: &Query) -> Result<(Vec<Hit>, u64), String> {
    let mut found = Vec::new();
    let mut skipped = 0u64;
    let mut refs = HashMap::new();
    for path in files {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&line);
            let Ok(rec) = serde_json::from_str::<Record>(&text) else {
                skipped += 1;
                continue;
            };
            if let Some(matched) = q.matches(&rec, &mut refs) {
                found.push(Hit {
                    matched,
                    record: rec,
                    line: text.into_owned(),
                });
            }
        }
    }
    Ok((found, skipped))
}

/// The human table: one row per record.
pub fn render_table(found: &[Hit]) -> String {
    let header = [
        "time",
        "event",
        "outcome",
        "user",
        "role",
        "session",
        "client",
        "application",
        "command",
        "tables",
        "purpose",
        "match",
    ];
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 12]> = found
        .iter()
        .map(
            |Hit {
                 matched, record: r, ..
             }| {
                let tables: Vec<&str> = r.tables.iter().map(|t| t.table.as_str()).collect();
                [
                    r.ts.clone(),
                    r.event.as_str().to_owned(),
                    format!("{:?}", r.outcome).to_lowercase(),
                    opt(&r.user),
                    opt(&r.role),
                    opt(&r.session_id),
                    opt(&r.client_addr),
                    opt(&r.application_name),
                    r.statement
                        .as_ref()
                        .map_or_else(|| "-".into(), |s| s.command.clone()),
                    if tables.is_empty() {
                        "-".into()
                    } else {
                        tables.join(",")
                    },
                    opt(&r.purpose),
                    match matched {
                        Match::Yes => "yes".into(),
                        Match::Possible => "possible".into(),
                    },
                ]
            },
        )
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The command: prints matches; exit status 0 (also when nothing matched), 2 on errors.
pub fn run(args: &SearchArgs) -> i32 {
    let result = query(args).and_then(|q| {
        let files = expand_inputs(&args.paths).map_err(|e| e.to_string())?;
        search_files(&files, &q)
    });
    let (found, skipped) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgvakt audit search: {e}");
            return 2;
        }
    };
    if skipped > 0 {
        eprintln!(
            "warning: {skipped} lines are not audit records and were skipped; run `pgvakt audit verify`"
        );
    }
    match args.format {
        Format::Json => {
            for hit in &found {
                let mut v: Value = serde_json::from_str(&hit.line).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut v {
                    let m = if hit.matched == Match::Yes {
                        "yes"
                    } else {
                        "possible"
                    };
                    map.insert("match".into(), Value::String(m.into()));
                }
                println!("{v}");
            }
        }
        Format::Table if found.is_empty() => println!("no matching records"),
        Format::Table => {
            print!("{}", render_table(&found));
            println!("({} records)", found.len());
        }
    }
    0
}
