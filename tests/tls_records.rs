//! Large results reach a non-blocking libpq client whole: psycopg's Python implementation waits
//! on the socket between reads, so a TLS record larger than the room libpq keeps for one read
//! would leave plaintext buffered inside OpenSSL with no socket event to announce it, and the
//! result would never end. pgvakt writes TLS records no larger than PostgreSQL's own (8 KiB).

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_end_for_a_nonblocking_libpq_client() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-clients/bin/python");
    assert!(
        python.exists(),
        "the client drivers are missing: run scripts/clients-deps.sh (scripts/test.sh does)"
    );
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    let dsn = format!(
        "host=127.0.0.1 port={} user=alice password=pw dbname=postgres sslmode=require",
        env.proxy_port()
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/large_results.py");
    let child = tokio::process::Command::new(python)
        .arg(script)
        .arg(&dsn)
        .arg("40")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python");
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("a result never ended: the client still waits after 180 s")
        .expect("python ran");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
