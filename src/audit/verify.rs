//! `pgvakt audit verify`: recompute the chain over files in order and report the first
//! sequence number where it breaks, and why.
//!
//! A torn last line (the writer was killed mid-write) followed by a file whose first record
//! continues the chain from the last complete record is a recovered crash and only noted; a
//! torn line at the very end means the log is truncated and fails. Removing whole records from
//! the end cannot be seen from the files alone: compare the last sequence number with
//! `pgvakt_audit_records_written_total` or an external copy.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use super::chain::{open_line, ChainKey, MacBytes, GENESIS};
use super::files::{expand_inputs, RecoverError};
use super::keys::{KeyError, KeySource};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Input(#[from] RecoverError),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(#[from] KeyError),
}

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Audit files, or directories whose audit-*.jsonl files are read; checked in name order.
    #[arg(required_unless_present = "from_db")]
    pub paths: Vec<PathBuf>,
    /// Or every replica's chain in the audit table.
    #[command(flatten)]
    pub db: super::table_read::DbArgs,
    /// File holding the chain key (audit.chain_key_file). Default: the variable in --key-env.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the chain key (audit.chain_key_env).
    #[arg(long, default_value = "PGVAKT_AUDIT_CHAIN_KEY")]
    pub key_env: String,
    /// Accept a log that starts after seq 1 (older files removed by retention); the first
    /// record's own link is then unchecked.
    #[arg(long)]
    pub partial: bool,
}

/// Why the chain broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The record is there but its MAC does not match: its content was changed.
    Edited,
    /// The next record found carries a later sequence number and this one is nowhere after it.
    Missing { found: u64 },
    /// A later record stands here; this one appears further on.
    Reordered { found: u64 },
    /// A record with an earlier sequence number stands here.
    Duplicate { found: u64 },
    /// The line is not an audit record.
    Unreadable { reason: String },
    /// The log ends in the middle of a record.
    Torn,
    /// The first record is not seq 1 (and `--partial` was not given).
    StartsLate { found: u64 },
    /// No records at all.
    Empty,
    /// The first record names another chain key's fingerprint, and no later record names
    /// this key's: the records were not written with this key (exit status 2).
    WrongKey { found: String, given: String },
    /// After records that verified with this key, one names another key's fingerprint: the
    /// key was changed here, or the record was altered.
    KeyChanged { found: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// First sequence number that cannot be vouched for.
    pub seq: u64,
    pub file: Option<PathBuf>,
    pub line: usize,
    pub kind: Break,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: usize,
    /// Records whose chain link was checked and holds.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub notes: Vec<String>,
    pub problem: Option<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }

    /// 0 intact, 1 broken, 2 not written with this key (nothing was checked).
    pub fn exit_code(&self) -> i32 {
        match self.problem.as_ref().map(|p| &p.kind) {
            None => 0,
            Some(Break::WrongKey { .. }) => 2,
            Some(_) => 1,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..{b}"),
            _ => "no records".into(),
        };
        let Some(p) = &self.problem else {
            return writeln!(
                f,
                "OK: {} records, {range}, {} files",
                self.records, self.files
            );
        };
        let why = match &p.kind {
            Break::Edited => format!("record {} does not match its MAC (edited)", p.seq),
            Break::Missing { found } => format!(
                "record {} is missing (removed): the next record is {found}",
                p.seq
            ),
            Break::Reordered { found } => format!(
                "records are out of order (reordered): {found} stands where {} belongs",
                p.seq
            ),
            Break::Duplicate { found } => format!(
                "record {found} appears again where {} belongs (duplicated or reordered)",
                p.seq
            ),
            Break::Unreadable { reason } => {
                format!("line is not an audit record (edited or corrupted): {reason}")
            }
            Break::Torn => format!(
                "the log ends with an incomplete record (truncated or torn); the chain ends at seq {}",
                p.seq.saturating_sub(1)
            ),
            Break::StartsLate { found } => format!(
                "the log starts at seq {found}, not 1 (earlier records missing; --partial accepts this)"
            ),
            Break::Empty => "no audit records found".into(),
            Break::WrongKey { found, given } => {
                let place = match &p.file {
                    Some(file) => format!(" [{}:{}]", file.display(), p.line),
                    None => String::new(),
                };
                writeln!(
                    f,
                    "WRONG KEY: these records were not written with this key: they name chain \
                     key fingerprint {found}, the key given has {given}{place}"
                )?;
                return writeln!(f, "nothing was verified; run again with the key they name");
            }
            Break::KeyChanged { found } => format!(
                "record {} names another chain key (fingerprint {found}): the key was changed \
                 here, or the record was altered; verify from here on with that key and --partial",
                p.seq
            ),
        };
        let place = match &p.file {
            Some(file) => format!(" [{}:{}]", file.display(), p.line),
            None => String::new(),
        };
        writeln!(f, "FAILED at seq {}: {why}{place}", p.seq)?;
        writeln!(f, "verified before it: {} records, {range}", self.records)
    }
}

struct Line {
    file: usize,
    no: usize,
    bytes: Vec<u8>,
    complete: bool,
}

/// Every line of every file, in order, with whether it ended in a newline.
struct Lines {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<(usize, BufReader<File>, usize)>,
}

impl Lines {
    fn next(&mut self) -> Result<Option<Line>, VerifyError> {
        loop {
            if let Some((file, reader, no)) = self.reader.as_mut() {
                let mut bytes = Vec::new();
                let n =
                    reader
                        .read_until(b'\n', &mut bytes)
                        .map_err(|source| VerifyError::Read {
                            path: self.files[*file].clone(),
                            source,
                        })?;
                if n > 0 {
                    *no += 1;
                    let complete = bytes.last() == Some(&b'\n');
                    if complete {
                        bytes.pop();
                    }
                    return Ok(Some(Line {
                        file: *file,
                        no: *no,
                        bytes,
                        complete,
                    }));
                }
                self.reader = None;
            }
            let Some(path) = self.files.get(self.next_file) else {
                return Ok(None);
            };
            let f = File::open(path).map_err(|source| VerifyError::Read {
                path: path.clone(),
                source,
            })?;
            self.reader = Some((self.next_file, BufReader::new(f), 0));
            self.next_file += 1;
        }
    }

    /// Whether a later record names the key fingerprint `id`.
    fn has_key_id_later(&mut self, id: &str) -> Result<bool, VerifyError> {
        while let Some(line) = self.next()? {
            let found = std::str::from_utf8(&line.bytes)
                .ok()
                .and_then(|t| open_line(t).ok())
                .is_some_and(|s| s.key_id.as_deref() == Some(id));
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a complete record with `seq` comes later (to tell "reordered" from "missing").
    fn has_seq_later(&mut self, seq: u64) -> Result<bool, VerifyError> {
        while let Some(line) = self.next()? {
            let found = std::str::from_utf8(&line.bytes)
                .ok()
                .and_then(|t| open_line(t).ok())
                .is_some_and(|s| s.seq == seq);
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Verify `files` (already in chain order) with `key`.
pub fn verify_files(
    files: Vec<PathBuf>,
    key: &ChainKey,
    partial: bool,
) -> Result<Report, VerifyError> {
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    let mut lines = Lines {
        files,
        next_file: 0,
        reader: None,
    };
    let mut expected: Option<u64> = None;
    let mut prev: MacBytes = GENESIS;
    let mut torn: Option<(usize, usize)> = None;
    let mut unfingerprinted = 0u64;
    while let Some(line) = lines.next()? {
        let path = lines.files[line.file].clone();
        let problem = |seq, kind| Problem {
            seq,
            file: Some(path.clone()),
            line: line.no,
            kind,
        };
        let exp = expected.unwrap_or(1);
        if !line.complete {
            torn = Some((line.file, line.no));
            continue;
        }
        if let Some((file, no)) = torn.take() {
            report.notes.push(format!(
                "{}:{no} is a torn record (the writer stopped mid-write); the chain continues in {}",
                lines.files[file].display(),
                lines.files[line.file].display()
            ));
        }
        let sealed = match std::str::from_utf8(&line.bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| open_line(t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(reason) => {
                report.problem = Some(problem(exp, Break::Unreadable { reason }));
                return Ok(report);
            }
        };
        if let Some(found) = sealed.key_id.as_deref().filter(|k| *k != key.id()) {
            let kind = if report.records > 0 {
                Break::KeyChanged {
                    found: found.to_owned(),
                }
            } else if lines.has_key_id_later(key.id())? {
                // Later records were sealed with this key: this one's fingerprint was edited.
                Break::Edited
            } else {
                Break::WrongKey {
                    found: found.to_owned(),
                    given: key.id().to_owned(),
                }
            };
            report.problem = Some(problem(sealed.seq, kind));
            return Ok(report);
        }
        if sealed.key_id.is_none() {
            unfingerprinted += 1;
        }
        if expected.is_none() && sealed.seq != 1 {
            if !partial {
                let found = sealed.seq;
                report.problem = Some(problem(1, Break::StartsLate { found }));
                return Ok(report);
            }
            report.notes.push(format!(
                "the log starts at seq {}; that record's link to earlier ones is not checked",
                sealed.seq
            ));
        } else if sealed.seq == exp {
            if !sealed.chains_from(key, &prev) {
                if sealed.key_id.is_none() && report.records == 0 {
                    report.notes.push(format!(
                        "record {exp} carries no key fingerprint (written before pgvakt recorded \
                         one): with these records a wrong key looks the same as an edit"
                    ));
                }
                report.problem = Some(problem(exp, Break::Edited));
                return Ok(report);
            }
        } else {
            let found = sealed.seq;
            let p = problem(exp, Break::Edited);
            let kind = if found < exp {
                Break::Duplicate { found }
            } else if lines.has_seq_later(exp)? {
                Break::Reordered { found }
            } else {
                Break::Missing { found }
            };
            report.problem = Some(Problem { kind, ..p });
            return Ok(report);
        }
        report.first_seq.get_or_insert(sealed.seq);
        report.last_seq = Some(sealed.seq);
        report.records += 1;
        prev = sealed.mac;
        expected = Some(sealed.seq + 1);
    }
    if unfingerprinted > 0 {
        report.notes.push(format!(
            "{unfingerprinted} records carry no key fingerprint (written before pgvakt recorded one)"
        ));
    }
    if let Some((file, no)) = torn {
        report.problem = Some(Problem {
            seq: expected.unwrap_or(1),
            file: Some(lines.files[file].clone()),
            line: no,
            kind: Break::Torn,
        });
    } else if report.records == 0 {
        report.problem = Some(Problem {
            seq: 1,
            file: None,
            line: 0,
            kind: Break::Empty,
        });
    }
    Ok(report)
}

/// The command: prints the report; exit status 0 intact, 1 broken, 2 could not check (no
/// key, unreadable files, or records written with another key).
pub fn run(args: &VerifyArgs) -> i32 {
    let source = KeySource {
        env_field: "--key-env",
        file_field: "--key-file",
        env: &args.key_env,
        file: args.key_file.as_deref(),
    };
    if args.db.from_db.is_some() {
        let checked = source.load().map_err(|e| e.to_string()).and_then(|key| {
            super::table_read::verify_table(&args.db, &ChainKey::new(&key), args.partial)
        });
        return match checked {
            Ok(reports) => super::table_read::print_verdicts(&args.db.db_table, &reports),
            Err(e) => {
                eprintln!("pgvakt audit verify: {e}");
                2
            }
        };
    }
    let result = source.load().map_err(VerifyError::from).and_then(|key| {
        let files = expand_inputs(&args.paths)?;
        verify_files(files, &ChainKey::new(&key), args.partial)
    });
    match result {
        Ok(report) => {
            print!("{report}");
            report.exit_code()
        }
        Err(e) => {
            eprintln!("pgvakt audit verify: {e}");
            2
        }
    }
}
