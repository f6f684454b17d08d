//! `pgvakt audit search`: which records concern a data subject (and/or a user, a period, an
//! outcome, a column or category). The subject's pseudonym is computed here from the raw id
//! with the subject key, per subject type named in each record, exactly as the proxy computed
//! it.
//!
//! Two answers a DPO must be able to trust: records that list the subject (`yes`), and reads
//! whose subjects are not known (aggregates, COPY, statements that could not be analysed,
//! results past the subject cap), which may have included the subject (`possible`). A search
//! with the wrong subject key fails (exit 2) instead of finding nothing: every record names
//! the fingerprint of the key its pseudonyms were computed with.
//!
//! Search does not check the chain; `pgvakt audit verify` does.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::keys::KeySource;
use super::record::{EventType, Outcome, Record};
use super::subjects::SubjectKey;
use crate::policy::grants::{parse_bound, parse_rfc3339};

pub use super::search_view::{render_table, run};

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
    #[arg(required_unless_present = "from_db")]
    pub paths: Vec<PathBuf>,
    /// Or the audit table, which every replica of a fleet writes into.
    #[command(flatten)]
    pub db: super::table_read::DbArgs,
    /// The data subject's key value as text, e.g. the contact id `42`.
    #[arg(long)]
    pub subject: Option<String>,
    /// The subject type (the table that holds the subjects: `contacts` or `schema.table`).
    /// Tables whose key refers to it (`activities.contact_id` to `contacts`) share its
    /// pseudonyms. Without --subject: records that touched this table. Default: every one.
    #[arg(long)]
    pub table: Option<String>,
    /// Only records of this login user.
    #[arg(long)]
    pub user: Option<String>,
    /// From this time on: RFC 3339, a date (its start, UTC), or a time ago (`30m`, `1h`, `7d`,
    /// `2w`; `s`, `m`, `h`, `d`, `w`).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time: RFC 3339, a date (its end, UTC), or a time ago (`1h`).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Event type, e.g. statement_read, refused, login_failed, connection_refused, admin.
    #[arg(long)]
    pub event: Option<String>,
    /// Only records that list this column: `column`, `table.column` or `schema.table.column`.
    #[arg(long)]
    pub column: Option<String>,
    /// Only records that list a column of this category, e.g. `financial`.
    #[arg(long)]
    pub category: Option<String>,
    /// Accepted for compatibility: "possible" matches are always listed, in their own section.
    #[arg(long, hide = true)]
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
    /// The record read personal data of the subject's type but could not list every subject.
    Possible,
}

/// The filters, parsed.
#[derive(Default)]
pub struct Query {
    pub subject: Option<(SubjectKey, String)>,
    pub table: Option<String>,
    pub user: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub outcome: Option<Outcome>,
    pub event: Option<EventType>,
    /// (schema, table, column) suffix to match: `column`, `table.column`, `schema.table.column`.
    pub column: Option<String>,
    pub category: Option<String>,
}

/// Whether `table` (`schema.table`) is the one `filter` names (`table` or `schema.table`).
fn table_matches(filter: Option<&str>, table: &str) -> bool {
    match filter {
        None => true,
        Some(f) if f.contains('.') => f == table,
        Some(f) => table.rsplit_once('.').map_or(table, |(_, t)| t) == f,
    }
}

/// Whether `column` of `table` is the one `filter` names.
fn column_matches(filter: &str, table: &str, column: &str) -> bool {
    match filter.rsplit_once('.') {
        None => filter == column,
        Some((t, c)) => c == column && table_matches(Some(t), table),
    }
}

/// Statement records: the ones that can have read a subject's data.
fn is_statement(e: EventType) -> bool {
    matches!(e, EventType::StatementRead | EventType::StatementWrite)
}

impl Query {
    /// Whether `rec` matches; `refs` caches the subject's pseudonym per subject type.
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
        let columns = || {
            rec.tables
                .iter()
                .flat_map(|t| t.columns.iter().map(move |c| (t, c)))
        };
        if let Some(f) = &self.column {
            if !columns().any(|(t, c)| column_matches(f, &t.table, &c.column)) {
                return None;
            }
        }
        if let Some(cat) = &self.category {
            if !columns().any(|(_, c)| &c.category == cat) {
                return None;
            }
        }
        let table = self.table.as_deref();
        let Some((key, id)) = &self.subject else {
            let any_table = table.is_none()
                || rec.tables.iter().any(|t| {
                    table_matches(table, &t.table)
                        || t.subject
                            .as_deref()
                            .is_some_and(|s| table_matches(table, s))
                })
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
        self.possible(rec).then_some(Match::Possible)
    }

    /// A statement that may have returned the subject's rows without naming them: its
    /// subjects are unknown or truncated, and it touched a table of the subject's type (or
    /// could not be analysed at all, so no table is known).
    fn possible(&self, rec: &Record) -> bool {
        if !is_statement(rec.event) || !(rec.subjects_unknown || rec.subjects_truncated) {
            return false;
        }
        let table = self.table.as_deref();
        rec.tables.is_empty()
            || rec.tables.iter().any(|t| match &t.subject {
                Some(s) => table_matches(table, s),
                // Records from before subject types: the table itself is its subject type.
                None => table_matches(table, &t.table),
            })
    }
}

fn parse_event(s: &str) -> Result<EventType, String> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
        format!(
            "--event: unknown event type '{s}' (statement_intent, statement_read, \
             statement_write, refused, login, login_failed, connection_refused, disconnect, \
             policy_reload, anomaly, subject_export, subject_erase, retention_run, admin)"
        )
    })
}

/// `--since` / `--until`: RFC 3339, a date, `now`, or a time ago such as `1h` or `7d`.
pub fn parse_time(s: &str, end_of_day: bool, now: i64) -> Result<i64, String> {
    let t = s.trim();
    if t == "now" {
        // Timestamps are compared in whole seconds and `--until` is exclusive: as an upper
        // bound, `now` includes the current second.
        return Ok(now + i64::from(end_of_day));
    }
    let unit = match t.chars().last() {
        Some('s') => Some(1),
        Some('m') => Some(60),
        Some('h') => Some(3_600),
        Some('d') => Some(86_400),
        Some('w') => Some(7 * 86_400),
        _ => None,
    };
    let digits = &t[..t.len().saturating_sub(1)];
    match unit {
        Some(unit) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let n: i64 = digits
                .parse()
                .map_err(|_| format!("'{s}': too large a time ago"))?;
            n.checked_mul(unit)
                .and_then(|ago| now.checked_sub(ago))
                .ok_or_else(|| format!("'{s}': too large a time ago"))
        }
        _ => parse_bound(t, end_of_day)
            .map_err(|e| format!("{e}, nor a time ago such as 30m, 1h, 7d or 2w")),
    }
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn query(args: &SearchArgs) -> Result<Query, String> {
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
    let now = now_unix();
    let time = |v: &Option<String>, end: bool, flag: &str| {
        v.as_deref()
            .map(|s| parse_time(s, end, now).map_err(|e| format!("{flag}: {e}")))
            .transpose()
    };
    Ok(Query {
        subject,
        table: args.table.clone(),
        user: args.user.clone(),
        since: time(&args.since, false, "--since")?,
        until: time(&args.until, true, "--until")?,
        outcome: args.outcome.map(|o| match o {
            OutcomeArg::Ok => Outcome::Ok,
            OutcomeArg::Refused => Outcome::Refused,
            OutcomeArg::Error => Outcome::Error,
        }),
        event: args.event.as_deref().map(parse_event).transpose()?,
        column: args.column.clone(),
        category: args.category.clone(),
    })
}

/// A matching record and the line it was read from.
#[derive(Debug, Clone)]
pub struct Hit {
    pub matched: Match,
    pub record: Record,
    pub line: String,
}

/// What a search found, and what it learnt about the files on the way.
#[derive(Debug, Default)]
pub struct Found {
    pub hits: Vec<Hit>,
    /// Lines that are not records at all.
    pub skipped: u64,
    /// Subject key fingerprints other than the query's → (records, first file naming it).
    pub other_keys: BTreeMap<String, (u64, PathBuf)>,
    /// Records without a subject key fingerprint (written before pgvakt recorded one).
    pub unfingerprinted: u64,
    /// Records written with the query's subject key.
    pub own_key: u64,
}

/// Matching records. With a subject, records naming another subject key's fingerprint are
/// counted in `other_keys`: their pseudonyms cannot be compared with this key's.
pub fn search_files(files: &[PathBuf], q: &Query) -> Result<Found, String> {
    let mut found = Found::default();
    let mut refs = HashMap::new();
    let own = q.subject.as_ref().map(|(k, _)| k.id().to_owned());
    for path in files {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let text = String::from_utf8_lossy(&line);
            let Ok(rec) = serde_json::from_str::<Record>(&text) else {
                found.skipped += 1;
                continue;
            };
            match (&rec.subject_key_id, &own) {
                (None, _) => found.unfingerprinted += 1,
                (Some(theirs), Some(own)) if theirs != own => {
                    let e = found
                        .other_keys
                        .entry(theirs.clone())
                        .or_insert_with(|| (0, path.clone()));
                    e.0 += 1;
                    continue;
                }
                (Some(_), Some(_)) => found.own_key += 1,
                _ => {}
            }
            if let Some(matched) = q.matches(&rec, &mut refs) {
                found.hits.push(Hit {
                    matched,
                    record: rec,
                    line: text.into_owned(),
                });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times() {
        let now = 1_700_000_000;
        assert_eq!(parse_time("1h", false, now), Ok(now - 3_600));
        assert_eq!(parse_time("7d", false, now), Ok(now - 7 * 86_400));
        assert_eq!(parse_time("30m", true, now), Ok(now - 1_800));
        assert_eq!(parse_time("2w", false, now), Ok(now - 14 * 86_400));
        assert_eq!(parse_time("now", false, now), Ok(now));
        assert_eq!(parse_time("now", true, now), Ok(now + 1));
        assert_eq!(parse_time("2024-01-02", false, now), Ok(1_704_153_600));
        assert_eq!(parse_time("2024-01-02", true, now), Ok(1_704_240_000));
        for bad in [
            "h",
            "1y",
            "-1h",
            "1.5h",
            "99999999999999999999d",
            "yesterday",
        ] {
            assert!(parse_time(bad, false, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn column_filters_take_one_two_or_three_parts() {
        assert!(column_matches("email", "public.contacts", "email"));
        assert!(column_matches("contacts.email", "public.contacts", "email"));
        assert!(column_matches(
            "public.contacts.email",
            "public.contacts",
            "email"
        ));
        assert!(!column_matches(
            "companies.email",
            "public.contacts",
            "email"
        ));
        assert!(!column_matches("phone", "public.contacts", "email"));
    }
}
