//! The real `pgvakt` binary started with `run --config`, for what only a process shows: signals,
//! exit codes, logs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub struct PgvaktProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub config: PathBuf,
    /// JSON log lines after the "listening" line.
    pub logs: mpsc::UnboundedReceiver<serde_json::Value>,
    /// Lines on stderr that are not JSON log lines: a panic's message, for one.
    pub other_output: Arc<Mutex<Vec<String>>>,
}

/// A configuration for a proxy in front of `upstream_port` with ports chosen by the OS.
pub fn config(upstream_port: u16, cert: &Path, key: &Path, grace_ms: u64) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {upstream_port}\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  shutdown_grace_ms: {grace_ms}\nlog:\n  level: info\n  format: json\n",
        cert.display(),
        key.display()
    )
}

impl PgvaktProcess {
    /// Write `yaml` into `dir`, start the binary and wait until it listens.
    pub async fn start(dir: &Path, yaml: &str) -> PgvaktProcess {
        let config = dir.join("pgvakt.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pgvakt");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, mut logs) = mpsc::unbounded_channel();
        let other_output = Arc::new(Mutex::new(Vec::new()));
        let other = other_output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => {
                        eprintln!("pgvakt: {line}");
                        if let Ok(mut o) = other.lock() {
                            o.push(line);
                        }
                    }
                }
            }
        });
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = logs.recv().await.expect("pgvakt exited before listening");
                if line["fields"]["message"] == "pgvakt listening" {
                    return line;
                }
            }
        })
        .await
        .expect("pgvakt did not start listening");
        let addr = |k: &str| {
            listening["fields"][k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} address in {listening}"))
        };
        PgvaktProcess {
            addr: addr("listen"),
            metrics_addr: addr("metrics"),
            child,
            config,
            logs,
            other_output,
        }
    }

    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("pgvakt running");
        kill(Pid::from_raw(pid as i32), signal).expect("send signal");
    }

    /// Wait for a log line whose message is `message`.
    pub async fn log_line(&mut self, message: &str) -> serde_json::Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.logs.recv().await.expect("log stream ended");
                if line["fields"]["message"] == message {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {message:?}"))
    }

    /// `VmRSS` and `VmHWM` (peak) of the process in bytes, from /proc.
    pub fn memory(&self) -> Option<(u64, u64)> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let kb = l.strip_prefix(name)?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok().map(|k| k * 1024)
            })
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("pgvakt did not exit in time")
            .expect("wait for pgvakt")
    }
}
