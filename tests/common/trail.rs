//! Reading an audit directory back as a test sees it: the records, and `pgvakt audit verify`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every record in `dir`, in chain order, where each line must be a whole record (no crash
/// happened while it was written).
pub fn all_records(dir: &Path) -> Vec<Value> {
    let (records, torn) = records(dir);
    assert_eq!(torn, 0, "a torn record in {}", dir.display());
    records
}

/// Complete records in `dir`, in chain order; torn last lines of files (a SIGKILL mid-write)
/// are counted apart.
pub fn records(dir: &Path) -> (Vec<Value>, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut torn = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let complete = text.ends_with('\n') || text.is_empty();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str::<Value>(l) {
                Ok(v) => out.push(v),
                Err(_) if i + 1 == lines.len() && !complete => torn += 1,
                Err(e) => panic!("{}:{}: not a record: {e}", f.display(), i + 1),
            }
        }
    }
    (out, torn)
}

/// `pgvakt audit verify --key-file KEY DIR`: whether it passed, and what it printed.
pub fn verify(key: &Path, dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "verify", "--key-file"])
        .arg(key)
        .arg(dir)
        .output()
        .expect("run pgvakt audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A pgvakt configuration file for the DPO commands' `--config`, with `audit_yaml` (see
/// `common::audit_yaml`) as its audit section. The rest names files that do not exist: the
/// commands read only the audit section.
pub fn dpo_config(dir: &Path, audit_yaml: &str) -> PathBuf {
    let path = dir.join("pgvakt-dpo.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:6432\nupstream:\n  host: 127.0.0.1\n  port: 5432\ntls:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n{audit_yaml}"
        ),
    )
    .expect("write the DPO commands' configuration");
    path
}
