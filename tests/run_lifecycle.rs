//! `pgvakt run` as a service manager starts it: with PostgreSQL down at start it keeps running
//! (no crash loop), `/readyz` says what it waits for, and it becomes ready when PostgreSQL
//! answers; its text log, written to a pipe, has no terminal colour codes.

use crate::common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http_get;
use pgvakt::cluster::{Cluster, ClusterOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn wait_for_body(addr: SocketAddr, path: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = http_get(addr, path).await;
        if got.contains(want) {
            return got;
        }
        assert!(Instant::now() < deadline, "{path} still answers {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_a_down_upstream_and_logs_plain_text() {
    let mut cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .unwrap();
    cluster.stop_server().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = pgvakt::certs::generate(dir.path(), "client").unwrap();
    let pw = dir.path().join("service-password");
    std::fs::write(&pw, format!("{}\n", cluster.password())).unwrap();
    let config = dir.path().join("pgvakt.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: {}\n  service_password_file: {}\n\
             tls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlog:\n  level: info\n  format: text\n\
             policy:\n  paths: [{}/policies/crm.yaml]\n",
            cluster.port(),
            cluster.superuser(),
            pw.display(),
            certs.server_cert.display(),
            certs.server_key.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = r.next_line().await {
            seen.lock().unwrap().push(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics: SocketAddr = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let i = l.find(" metrics=")?;
            l[i + 9..].split_whitespace().next()?.parse().ok()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "pgvakt exited with PostgreSQL down: {:?}",
            lines.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "no plain `metrics=ADDR` field in the log: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let answer = wait_for_body(metrics, "/readyz", "503").await;
    assert!(answer.contains("upstream unreachable"), "{answer}");
    assert!(answer.contains("service connection down"), "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "pgvakt gave up");

    cluster.start_server().unwrap();
    wait_for_body(metrics, "/readyz", "200 OK").await;

    let log = lines.lock().unwrap().join("\n");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log:\n{log}"
    );
    child.start_kill().unwrap();
}
