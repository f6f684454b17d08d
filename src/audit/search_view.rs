//! What `pgvakt audit search` prints: the table a DPO reads (matches, then the "possible"
//! section), or JSON lines; and its exit status.

use std::fmt::Write as _;

use serde_json::Value;

use super::files::expand_inputs;
use super::record::{Action, Record};
use super::search::{query, search_files, Format, Found, Hit, Match, SearchArgs};

const HEADER: [&str; 13] = [
    "time",
    "event",
    "outcome",
    "user",
    "role",
    "session",
    "client",
    "application",
    "command",
    "columns",
    "rows",
    "purpose",
    "match",
];

/// `public.contacts(first_name,email,bank_account:masked)`; actions other than `allowed`
/// are named, writes are marked `write:`.
fn columns_cell(r: &Record) -> String {
    let parts: Vec<String> = r
        .tables
        .iter()
        .map(|t| {
            let write = if t.access == super::record::Access::Write {
                "write:"
            } else {
                ""
            };
            if t.columns.is_empty() {
                return format!("{write}{}", t.table);
            }
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| match c.action {
                    Action::Allowed => c.column.clone(),
                    Action::Masked => format!("{}:masked", c.column),
                    Action::Blocked => format!("{}:blocked", c.column),
                })
                .collect();
            format!("{write}{}({})", t.table, cols.join(","))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn row(hit: &Hit) -> [String; 13] {
    let r = &hit.record;
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
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
        columns_cell(r),
        r.rows.map_or_else(|| "-".into(), |n| n.to_string()),
        opt(&r.purpose),
        match hit.matched {
            Match::Yes => "yes".into(),
            Match::Possible => "possible".into(),
        },
    ]
}

/// The human table: one row per record.
pub fn render_table(found: &[Hit]) -> String {
    let rows: Vec<[String; 13]> = found.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
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
    line(&mut HEADER.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Records with another subject key's fingerprint make the answer wrong, not empty: refuse,
/// unless some records were written with this key (the key was rotated: those are searched,
/// and `rotated` says which were not).
fn wrong_key(found: &Found, own: &str) -> Option<String> {
    if found.own_key > 0 {
        return None;
    }
    let (fp, (n, file)) = found.other_keys.iter().next()?;
    let total: u64 = found.other_keys.values().map(|(n, _)| n).sum();
    let more = if found.other_keys.len() > 1 {
        format!(" (and {} more fingerprints)", found.other_keys.len() - 1)
    } else {
        String::new()
    };
    Some(format!(
        "these records were not written with this key: {total} records name another subject \
         key ({n} name fingerprint {fp}, first in {}{more}); this key's fingerprint is {own}. \
         Their pseudonyms cannot be compared with this key's, so nothing is listed: search \
         them with the key they were written with",
        file.display()
    ))
}

/// The command: prints matches; exit status 0 (also when nothing matched), 2 on errors and
/// when the records were written with another subject key.
pub fn run(args: &SearchArgs) -> i32 {
    let result = query(args).and_then(|q| {
        let (_copy, files) = match &args.db.from_db {
            Some(_) => {
                let (dir, files) =
                    super::table_read::export_for_search(&args.db, q.since, q.until)?;
                (Some(dir), files)
            }
            None => (None, expand_inputs(&args.paths).map_err(|e| e.to_string())?),
        };
        let own = q.subject.as_ref().map(|(k, _)| k.id().to_owned());
        search_files(&files, &q).map(|f| (f, own))
    });
    let (found, own) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgvakt audit search: {e}");
            return 2;
        }
    };
    if let Some(own) = &own {
        if let Some(msg) = wrong_key(&found, own) {
            eprintln!("pgvakt audit search: {msg}");
            return 2;
        }
        for (fp, (n, file)) in &found.other_keys {
            eprintln!(
                "note: {n} records (first in {}) were written with another subject key \
                 (fingerprint {fp}; the key was rotated): they were not searched, search \
                 them with the key they were written with",
                file.display()
            );
        }
        if found.unfingerprinted > 0 {
            eprintln!(
                "note: {} records carry no subject key fingerprint (written before pgvakt \
                 recorded one): whether this key is the one they were written with cannot be \
                 checked; with a wrong key their subjects are not found",
                found.unfingerprinted
            );
        }
    }
    if found.skipped > 0 {
        eprintln!(
            "warning: {} lines are not audit records and were skipped; run `pgvakt audit verify`",
            found.skipped
        );
    }
    match args.format {
        Format::Json => {
            for hit in &found.hits {
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
        Format::Table => print!("{}", table_report(&found.hits, args.subject.as_deref())),
    }
    0
}

/// Matches, then (for a subject search) the reads that may have included the subject.
fn table_report(hits: &[Hit], subject: Option<&str>) -> String {
    let (yes, possible): (Vec<Hit>, Vec<Hit>) =
        hits.iter().cloned().partition(|h| h.matched == Match::Yes);
    let mut out = String::new();
    if yes.is_empty() {
        out.push_str("no matching records\n");
    } else {
        out.push_str(&render_table(&yes));
        let _ = writeln!(out, "({} records)", yes.len());
    }
    if let (false, Some(id)) = (possible.is_empty(), subject) {
        let _ = writeln!(
            out,
            "\npossible: {} reads whose subjects are not known (aggregates, COPY, statements \
             not analysed, results past the subject cap) may have included subject {id}:",
            possible.len()
        );
        out.push_str(&render_table(&possible));
    }
    out
}
