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

use super::chain::{open_line, ChainKey, MacBytes, SealedLine, GENESIS};
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

/// What one record hands to the next while the chain is walked.
struct Walk<'k> {
    key: &'k ChainKey,
    partial: bool,
    report: Report,
    /// The sequence number the next record must carry; none before the first record.
    expected: Option<u64>,
    prev: MacBytes,
    /// A line that ended without a newline: a recovered crash if a record follows it, a
    /// truncated log if nothing does, so it is only judged once the next line is known.
    torn: Option<(usize, usize)>,
    unfingerprinted: u64,
}

/// A problem found at `line`, named by file and line number so it can be looked at.
fn at(lines: &Lines, line: &Line, seq: u64, kind: Break) -> Problem {
    Problem {
        seq,
        file: Some(lines.files[line.file].clone()),
        line: line.no,
        kind,
    }
}

/// Verify `files` (already in chain order) with `key`.
pub fn verify_files(
    files: Vec<PathBuf>,
    key: &ChainKey,
    partial: bool,
) -> Result<Report, VerifyError> {
    let mut walk = Walk {
        key,
        partial,
        report: Report {
            files: files.len(),
            ..Report::default()
        },
        expected: None,
        prev: GENESIS,
        torn: None,
        unfingerprinted: 0,
    };
    let mut lines = Lines {
        files,
        next_file: 0,
        reader: None,
    };
    while let Some(line) = lines.next()? {
        if !line.complete {
            walk.torn = Some((line.file, line.no));
            continue;
        }
        walk.note_recovered_tear(&lines, &line);
        if let Some(problem) = walk.record(&mut lines, &line)? {
            walk.report.problem = Some(problem);
            return Ok(walk.report);
        }
    }
    Ok(walk.finish(&lines))
}

impl Walk<'_> {
    /// A torn line followed by a complete record: the writer was killed mid-write and the chain
    /// went on, so the operator is told but the log is not failed.
    fn note_recovered_tear(&mut self, lines: &Lines, line: &Line) {
        if let Some((file, no)) = self.torn.take() {
            self.report.notes.push(format!(
                "{}:{no} is a torn record (the writer stopped mid-write); the chain continues in {}",
                lines.files[file].display(),
                lines.files[line.file].display()
            ));
        }
    }

    /// Checks one complete line and moves the chain past it; the problem where it breaks.
    fn record(&mut self, lines: &mut Lines, line: &Line) -> Result<Option<Problem>, VerifyError> {
        let exp = self.expected.unwrap_or(1);
        let sealed = match std::str::from_utf8(&line.bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| open_line(t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(reason) => return Ok(Some(at(lines, line, exp, Break::Unreadable { reason }))),
        };
        if let Some(kind) = self.other_key(lines, &sealed)? {
            return Ok(Some(at(lines, line, sealed.seq, kind)));
        }
        if sealed.key_id.is_none() {
            self.unfingerprinted += 1;
        }
        if let Some(problem) = self.link(lines, line, &sealed, exp)? {
            return Ok(Some(problem));
        }
        self.report.first_seq.get_or_insert(sealed.seq);
        self.report.last_seq = Some(sealed.seq);
        self.report.records += 1;
        self.prev = sealed.mac;
        self.expected = Some(sealed.seq + 1);
        Ok(None)
    }

    /// A record naming another key's fingerprint. Told apart before any MAC is checked, since
    /// a wrong key makes every MAC fail and would otherwise read as an edit of the first record.
    fn other_key(
        &self,
        lines: &mut Lines,
        sealed: &SealedLine,
    ) -> Result<Option<Break>, VerifyError> {
        let Some(found) = sealed.key_id.as_deref().filter(|k| *k != self.key.id()) else {
            return Ok(None);
        };
        Ok(Some(if self.report.records > 0 {
            Break::KeyChanged {
                found: found.to_owned(),
            }
        } else if lines.has_key_id_later(self.key.id())? {
            // Later records were sealed with this key: this one's fingerprint was edited.
            Break::Edited
        } else {
            Break::WrongKey {
                found: found.to_owned(),
                given: self.key.id().to_owned(),
            }
        }))
    }

    /// Whether the record carries the expected sequence number and chains from the previous
    /// record's MAC; a log cut by retention may start later only when `--partial` allows it.
    fn link(
        &mut self,
        lines: &mut Lines,
        line: &Line,
        sealed: &SealedLine,
        exp: u64,
    ) -> Result<Option<Problem>, VerifyError> {
        if self.expected.is_none() && sealed.seq != 1 {
            if !self.partial {
                let found = sealed.seq;
                return Ok(Some(at(lines, line, 1, Break::StartsLate { found })));
            }
            self.report.notes.push(format!(
                "the log starts at seq {}; that record's link to earlier ones is not checked",
                sealed.seq
            ));
        } else if sealed.seq == exp {
            if !sealed.chains_from(self.key, &self.prev) {
                if sealed.key_id.is_none() && self.report.records == 0 {
                    self.report.notes.push(format!(
                        "record {exp} carries no key fingerprint (written before pgvakt recorded \
                         one): with these records a wrong key looks the same as an edit"
                    ));
                }
                return Ok(Some(at(lines, line, exp, Break::Edited)));
            }
        } else {
            let kind = misplaced(lines, sealed.seq, exp)?;
            return Ok(Some(at(lines, line, exp, kind)));
        }
        Ok(None)
    }

    /// After the last line: a torn line nothing followed means the log was cut; no records at
    /// all is a failure too, since an empty log vouches for nothing.
    fn finish(mut self, lines: &Lines) -> Report {
        if self.unfingerprinted > 0 {
            self.report.notes.push(format!(
                "{} records carry no key fingerprint (written before pgvakt recorded one)",
                self.unfingerprinted
            ));
        }
        if let Some((file, no)) = self.torn {
            self.report.problem = Some(Problem {
                seq: self.expected.unwrap_or(1),
                file: Some(lines.files[file].clone()),
                line: no,
                kind: Break::Torn,
            });
        } else if self.report.records == 0 {
            self.report.problem = Some(Problem {
                seq: 1,
                file: None,
                line: 0,
                kind: Break::Empty,
            });
        }
        self.report
    }
}

/// Why record `found` stands where `exp` belongs: an earlier number is a duplicate, and a later
/// one means `exp` was either moved further on or removed, which only the rest of the log tells.
fn misplaced(lines: &mut Lines, found: u64, exp: u64) -> Result<Break, VerifyError> {
    Ok(if found < exp {
        Break::Duplicate { found }
    } else if lines.has_seq_later(exp)? {
        Break::Reordered { found }
    } else {
        Break::Missing { found }
    })
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
