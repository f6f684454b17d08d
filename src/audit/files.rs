//! Where sealed lines go: the sinks (a directory of rotated JSON-lines files, or stdout), the
//! file naming that keeps the chain's order, and recovery of the chain's end at start-up.
//!
//! Files are named `audit-<first seq, 20 digits>-<UTC YYYYMMDDTHHMMSSZ>.jsonl`: sorting the names
//! sorts by sequence number even when the clock steps back, and the time tells an operator
//! which files a retention period covers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::chain::{open_line, LineError, MacBytes};
use super::record::compact_utc;

/// How much of the newest file recovery reads; a record with the full subject cap is well
/// under this.
const TAIL_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: the last complete line is not an audit record ({source}); the chain cannot be \
         continued from it (run `pgvakt audit verify` on the directory)",
        path.display()
    )]
    BadTail { path: PathBuf, source: LineError },
}

/// A destination for sealed lines.
pub trait Sink: Send {
    /// Append whole lines (the first has sequence number `first_seq`) and make them durable
    /// before returning. On error nothing of `bytes` may remain half-written where it can be
    /// taken for a record; the writer retries the same bytes.
    fn write_batch(&mut self, first_seq: u64, bytes: &[u8]) -> std::io::Result<()>;

    /// Where this writer's chain ended, for a sink that must be asked (a table shared by
    /// replicas): `(last seq, its MAC)`, `(0, GENESIS)` for none. The writer asks before its
    /// first batch and retries until it gets an answer. Sinks whose end is found at start-up
    /// answer `None`.
    fn chain_end(&mut self) -> std::io::Result<Option<(u64, MacBytes)>> {
        Ok(None)
    }
}

pub fn is_audit_file_name(name: &str) -> bool {
    name.starts_with("audit-") && name.ends_with(".jsonl")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecoverError + '_ {
    move |source| RecoverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Audit files in `dir`, sorted (chain order). A missing directory has none.
pub fn audit_files(dir: &Path) -> Result<Vec<PathBuf>, RecoverError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(is_audit_file_name) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Expand command-line inputs (files and directories) into files in chain order.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, RecoverError> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            files.extend(audit_files(p)?);
        } else {
            std::fs::metadata(p).map_err(io_err(p))?;
            files.push(p.clone());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then_with(|| a.cmp(b)));
    files.dedup();
    Ok(files)
}

/// `(seq, mac)` of the last complete record in `dir`, if any. A torn last line (the process was
/// killed mid-write) is skipped: the chain continues after the last complete record, in a new
/// file, and `verify` reports the torn line.
pub fn recover(dir: &Path) -> Result<Option<(u64, MacBytes)>, RecoverError> {
    for path in audit_files(dir)?.iter().rev() {
        let mut file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let start = len.saturating_sub(TAIL_BYTES);
        file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(io_err(path))?;
        let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let complete = &tail[..end];
        let line_start = complete
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if line_start == 0 && start > 0 {
            // The whole tail is one line longer than TAIL_BYTES: not something the writer makes.
            return Err(RecoverError::BadTail {
                path: path.clone(),
                source: LineError::Json("last line longer than the recovery window".into()),
            });
        }
        let line = String::from_utf8_lossy(&complete[line_start..]);
        let sealed = open_line(&line).map_err(|source| RecoverError::BadTail {
            path: path.clone(),
            source,
        })?;
        return Ok(Some((sealed.seq, sealed.mac)));
    }
    Ok(None)
}

struct Current {
    file: File,
    path: PathBuf,
    len: u64,
    opened: Instant,
    dev_ino: (u64, u64),
}

/// Rotated files in one directory. A new file is started at every start-up, at rotation, and
/// after a failure, so a file never continues after a torn or rolled-back write.
pub struct FileSink {
    dir: PathBuf,
    rotate_bytes: u64,
    rotate_after: Option<Duration>,
    current: Option<Current>,
}

impl FileSink {
    /// `rotate_bytes` / `rotate_after` of 0 / `None` never rotate on that ground.
    pub fn new(dir: PathBuf, rotate_bytes: u64, rotate_after: Option<Duration>) -> FileSink {
        FileSink {
            dir,
            rotate_bytes,
            rotate_after,
            current: None,
        }
    }

    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    fn needs_new(&self, c: &Current, incoming: usize) -> bool {
        let by_size =
            self.rotate_bytes > 0 && c.len > 0 && c.len + incoming as u64 > self.rotate_bytes;
        let by_time = self.rotate_after.is_some_and(|d| c.opened.elapsed() >= d);
        // A file removed or replaced behind our back (retention gone wrong, an operator) would
        // swallow records into an unlinked inode; start a new one instead.
        let moved = std::fs::metadata(&c.path)
            .map(|m| (m.dev(), m.ino()) != c.dev_ino)
            .unwrap_or(true);
        by_size || by_time || moved
    }

    fn open(&self, first_seq: u64) -> std::io::Result<Current> {
        std::fs::create_dir_all(&self.dir)?;
        let stem = format!("audit-{first_seq:020}-{}", compact_utc(SystemTime::now()));
        let mut path = self.dir.join(format!("{stem}.jsonl"));
        let mut n = 0;
        let file = loop {
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => break f,
                // An earlier attempt for the same batch created the file, then failed.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::fs::metadata(&path)
                        .map(|m| m.len() == 0)
                        .unwrap_or(false)
                    {
                        break OpenOptions::new().append(true).open(&path)?;
                    }
                    n += 1;
                    path = self.dir.join(format!("{stem}-{n}.jsonl"));
                }
                Err(e) => return Err(e),
            }
        };
        // The new directory entry must survive a crash as well as the data in it.
        File::open(&self.dir)?.sync_all()?;
        let meta = file.metadata()?;
        Ok(Current {
            file,
            path,
            len: 0,
            opened: Instant::now(),
            dev_ino: (meta.dev(), meta.ino()),
        })
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, first_seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        if self
            .current
            .as_ref()
            .is_none_or(|c| self.needs_new(c, bytes.len()))
        {
            self.current = None;
            self.current = Some(self.open(first_seq)?);
        }
        let Some(c) = self.current.as_mut() else {
            return Err(std::io::Error::other("no open audit file"));
        };
        match c.file.write_all(bytes).and_then(|()| c.file.sync_data()) {
            Ok(()) => {
                c.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Roll back a partial write so the retry (in a new file) is not preceded by a
                // fragment; if even that fails, verify reports the fragment.
                let _ = c.file.set_len(c.len);
                self.current = None;
                Err(e)
            }
        }
    }
}

/// Lines to standard output, for a log collector. The collector owns durability and rotation;
/// the chain starts at seq 1 at every start because stdout cannot be read back.
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn write_batch(&mut self, _first_seq: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_path_buf(), 10, None);
        sink.write_batch(9, b"{\"seq\":9}\n").unwrap();
        sink.write_batch(10, b"{\"seq\":10}\n").unwrap();
        let files = audit_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2, "rotated by size");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names[0].starts_with("audit-00000000000000000009-"),
            "{names:?}"
        );
        assert!(
            names[1].starts_with("audit-00000000000000000010-"),
            "{names:?}"
        );
    }

    #[test]
    fn a_replaced_file_is_not_written_through_its_old_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_path_buf(), 0, None);
        sink.write_batch(1, b"a\n").unwrap();
        let first = sink.current_path().unwrap().to_path_buf();
        std::fs::remove_file(&first).unwrap();
        sink.write_batch(2, b"b\n").unwrap();
        let now = audit_files(dir.path()).unwrap();
        assert_eq!(now.len(), 1);
        assert_ne!(now[0], first);
        assert_eq!(std::fs::read(&now[0]).unwrap(), b"b\n");
    }
}
