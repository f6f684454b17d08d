//! `pgvakt audit logins`: the login history from the audit trail, as a table — successful
//! logins, failed ones, and connections refused before login (no TLS, locked out, ...).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::files::expand_inputs;
use super::record::{EventType, Record};
use super::search::{now_unix, parse_time, search_files, Query};

#[derive(clap::Args, Debug, Clone)]
pub struct LoginsArgs {
    /// Audit files, or directories whose audit-*.jsonl files are read.
    #[arg(required_unless_present = "from_db")]
    pub paths: Vec<PathBuf>,
    /// Or the audit table, which every replica of a fleet writes into.
    #[command(flatten)]
    pub db: super::table_read::DbArgs,
    /// Only this login user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only failed logins and refused connections.
    #[arg(long)]
    pub failed: bool,
    /// From this time on: RFC 3339, a date, or a time ago (`30m`, `1h`, `7d`, `2w`).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time: RFC 3339, a date (its end), or a time ago.
    #[arg(long)]
    pub until: Option<String>,
}

const HEADER: [&str; 6] = ["time", "user", "client", "tls", "outcome", "reason"];

/// One login attempt as the table shows it; None for records that are not about logins.
pub fn row(r: &Record) -> Option<[String; 6]> {
    let outcome = match r.event {
        EventType::Login => "ok",
        EventType::LoginFailed => "failed",
        EventType::ConnectionRefused => "refused",
        _ => return None,
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut reason = opt(&r.message);
    if let Some(n) = r.suppressed {
        let _ = write!(reason, " (stands for {n} more)");
    }
    if let (Some(code), EventType::LoginFailed) = (&r.sqlstate, r.event) {
        let _ = write!(reason, " [{code}]");
    }
    Some([
        r.ts.clone(),
        opt(&r.user),
        opt(&r.client_addr),
        opt(&r.tls_version),
        outcome.to_owned(),
        reason,
    ])
}

/// The rows as an aligned table with its header.
pub fn render(rows: &[[String; 6]]) -> String {
    let mut widths = HEADER.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut l = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

fn history(args: &LoginsArgs) -> Result<String, String> {
    let now = now_unix();
    let time = |v: &Option<String>, end: bool, flag: &str| {
        v.as_deref()
            .map(|s| parse_time(s, end, now).map_err(|e| format!("{flag}: {e}")))
            .transpose()
    };
    let q = Query {
        user: args.user.clone(),
        since: time(&args.since, false, "--since")?,
        until: time(&args.until, true, "--until")?,
        ..Query::default()
    };
    let (_copy, files) = match &args.db.from_db {
        Some(_) => {
            let (dir, files) = super::table_read::export_for_search(&args.db, q.since, q.until)?;
            (Some(dir), files)
        }
        None => (None, expand_inputs(&args.paths).map_err(|e| e.to_string())?),
    };
    let found = search_files(&files, &q)?;
    let rows: Vec<[String; 6]> = found
        .hits
        .iter()
        .filter(|h| !(args.failed && h.record.event == EventType::Login))
        .filter_map(|h| row(&h.record))
        .collect();
    let mut out = if rows.is_empty() {
        "no logins recorded\n".to_owned()
    } else {
        render(&rows)
    };
    let failed = rows.iter().filter(|r| r[4] != "ok").count();
    let _ = writeln!(out, "({} attempts, {failed} failed or refused)", rows.len());
    if found.skipped > 0 {
        let _ = writeln!(
            out,
            "warning: {} lines are not audit records and were skipped; run `pgvakt audit verify`",
            found.skipped
        );
    }
    Ok(out)
}

/// The command: prints the table; exit status 0, 2 when the records cannot be read.
pub fn run(args: &LoginsArgs) -> i32 {
    match history(args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("pgvakt audit logins: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Outcome;

    #[test]
    fn rows_name_outcome_and_reason() {
        let mut ok = Record::new(EventType::Login, Outcome::Ok);
        ok.user = Some("alice".into());
        ok.tls_version = Some("TLSv1.3".into());
        let r = row(&ok).expect("a login");
        assert_eq!(&r[1..5], ["alice", "-", "TLSv1.3", "ok"]);
        let mut failed = Record::new(EventType::LoginFailed, Outcome::Error);
        failed.message = Some("authentication: password authentication failed".into());
        failed.sqlstate = Some("28P01".into());
        let r = row(&failed).expect("a failed login");
        assert_eq!(r[4], "failed");
        assert_eq!(
            r[5],
            "authentication: password authentication failed [28P01]"
        );
        let mut refused = Record::new(EventType::ConnectionRefused, Outcome::Refused);
        refused.message = Some("locked_out: x".into());
        refused.suppressed = Some(4);
        assert_eq!(
            row(&refused).expect("refused")[5],
            "locked_out: x (stands for 4 more)"
        );
        assert!(row(&Record::new(EventType::StatementRead, Outcome::Ok)).is_none());
        let table = render(&[row(&ok).expect("row")]);
        assert!(table.starts_with("time"), "{table}");
        assert_eq!(table.lines().count(), 2);
    }
}
