//! The `pgvakt` binary run as a command-line tool (`policy`, `subject`, `retention`, ...), and
//! what it printed.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Everything a command printed: stdout, then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `pgvakt ARGS` to run in the repository, where paths such as `policies/crm.yaml` resolve.
pub fn in_repo(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgvakt"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// `pgvakt ARGS` on a blocking thread (the runtime keeps serving the proxy under test meanwhile):
/// its exit code (-1 when killed by a signal) and everything it printed.
pub async fn pgvakt(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
            .args(&args)
            .output()
            .expect("run pgvakt");
        (out.status.code().unwrap_or(-1), text(&out))
    })
    .await
    .expect("task")
}
