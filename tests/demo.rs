//! `pgvakt demo` started in-process, driven with the real PostgreSQL clients a user would run:
//! psql for a query, pgbench for load, and a plaintext psql that must be turned away.

use std::process::Output;
use std::time::Duration;

use pgvakt::demo::run::{self as demo, DemoHandle, DemoOptions};
use tokio::process::Command;

const CONTACTS: usize = 300;
const PSQL: &str = "/usr/bin/psql";
const PGBENCH: &str = "/usr/bin/pgbench";

async fn start_demo() -> DemoHandle {
    demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        contacts: CONTACTS,
        ..Default::default()
    })
    .await
    .expect("start the demo")
}

/// Runs a client binary with no inherited libpq settings, so only the connection string counts.
async fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSERVICE",
        "PGCHANNELBINDING",
    ] {
        cmd.env_remove(var);
    }
    // No ~/.psqlrc or ~/.pgpass from whoever runs the tests.
    cmd.env("PSQLRC", "/dev/null")
        .env("PGPASSFILE", "/dev/null");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} timed out"))
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_psql_and_pgbench_over_tls_and_refuses_plaintext() {
    let demo = start_demo().await;
    let shown = demo.instructions();
    assert!(
        shown.contains(&format!(
            "psql \"host=127.0.0.1 port={} user=secretary password=secretary dbname=crm sslmode=require\"",
            demo.addr.port()
        )),
        "{shown}"
    );
    assert!(
        shown.lines().any(|l| l
            == format!(
                "upstream: postgresql://admin:admin@127.0.0.1:{}/crm",
                demo.upstream_port
            )),
        "{shown}"
    );
    assert!(demo.config_path.is_file());
    assert!(
        shown
            .contains("policies/crm.yaml (to try changes, start the demo with --policy on a copy)"),
        "{shown}"
    );

    // The secretary counts the contacts through the proxy with TLS.
    let out = run(
        PSQL,
        &[
            &demo.dsn("secretary", "require"),
            "-XAtc",
            "SELECT count(*) FROM contacts",
        ],
    )
    .await;
    assert!(out.status.success(), "psql failed: {}", text(&out.stderr));
    // Everyone but the restricted people the demo data holds (Art. 18): they are hidden from
    // the secretary. Counted in PostgreSQL itself from what the rule means.
    let upstream = format!(
        "postgresql://admin:admin@127.0.0.1:{}/crm",
        demo.upstream_port
    );
    let want = run(
        PSQL,
        &[
            &upstream,
            "-XAtc",
            &format!(
                "SELECT count(*) FROM contacts c WHERE {}",
                crate::common::rows::visible("secretary")
            ),
        ],
    )
    .await;
    let want = text(&want.stdout).trim().to_owned();
    assert!(
        want.parse::<usize>().is_ok_and(|n| n > 0 && n < CONTACTS),
        "the demo holds restricted people: {want}"
    );
    assert_eq!(text(&out.stdout).trim(), want);

    // A short select-only load with several clients.
    let script = demo.dir().join("select.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 300)\nSELECT id, first_name, email FROM contacts WHERE id = :id;\n",
    )
    .unwrap();
    let out = run(
        PGBENCH,
        &[
            "-n",
            "-f",
            script.to_str().unwrap(),
            "-T",
            "3",
            "-c",
            "4",
            "-j",
            "2",
            &demo.dsn("admin", "require"),
        ],
    )
    .await;
    let report = text(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {}\n{report}",
        text(&out.stderr)
    );
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );

    // Without TLS the proxy answers with PostgreSQL's own error and psql shows it.
    let out = run(
        PSQL,
        &[&demo.dsn("secretary", "disable"), "-XAtc", "SELECT 1"],
    )
    .await;
    assert!(!out.status.success(), "plaintext login was accepted");
    assert!(
        text(&out.stderr).contains("requires TLS"),
        "{}",
        text(&out.stderr)
    );

    demo.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_in_a_chosen_directory_keeps_it_after_shutdown() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let demo = demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        contacts: 20,
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await
    .expect("start the demo");
    assert!(dir.join("postgres").join("data").is_dir());
    demo.shutdown().await.expect("shutdown");
    assert!(dir.join("pgvakt.yaml").is_file());
    assert!(dir.join("server.pem").is_file());
    assert!(dir.join("postgres").join("data").is_dir());
    assert!(!dir
        .join("postgres")
        .join("data")
        .join("postmaster.pid")
        .exists());
}

/// `pgvakt demo --policy FILE`: a policy tried without editing the repository's file, changed
/// while the demo runs, and a schema change made as the superuser the demo names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_enforces_and_reloads_a_policy_file_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("try.yaml");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    let original = std::fs::read_to_string(&repo).unwrap();
    std::fs::write(&policy, &original).unwrap();
    let demo = demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        contacts: 20,
        policy: Some(policy.clone()),
        ..Default::default()
    })
    .await
    .expect("start the demo");
    let shown = demo.instructions();
    let policy = std::fs::canonicalize(&policy).unwrap();
    assert!(
        shown.contains(&format!("policy: {} (edit it", policy.display())),
        "{shown}"
    );
    let superuser = format!(
        "  psql \"host=127.0.0.1 port={} user=postgres password=postgres dbname=crm\"",
        demo.upstream_port
    );
    assert!(shown.lines().any(|l| l == superuser), "{shown}");

    let bank_account = |dsn: String| async move {
        let out = run(
            PSQL,
            &[
                &dsn,
                "-XAtc",
                "SELECT bank_account FROM contacts ORDER BY id LIMIT 1",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let stored = bank_account(demo.dsn("admin", "require")).await;
    let masked = bank_account(demo.dsn("secretary", "require")).await;
    assert_ne!(masked, stored, "the secretary's bank accounts are masked");

    // The secretary may now see bank accounts: the demo reloads the file by itself.
    let changed = original.replacen(
        "financial: {mask: redact}       # bank account masked entirely",
        "financial: allow",
        1,
    );
    assert_ne!(changed, original);
    std::fs::write(&policy, changed).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bank_account(demo.dsn("secretary", "require")).await != stored {
        assert!(
            std::time::Instant::now() < deadline,
            "the changed policy was never applied"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&repo).unwrap(),
        original,
        "the repository's policy is untouched"
    );

    // The superuser line reaches PostgreSQL directly and may change the schema.
    let dsn = superuser
        .trim()
        .trim_start_matches("psql ")
        .trim_matches('"');
    let out = run(
        PSQL,
        &[
            dsn,
            "-XAtc",
            "CREATE TABLE notes (id int); SELECT current_user",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("postgres\n"),
        "{}",
        text(&out.stdout)
    );

    demo.shutdown().await.expect("shutdown");
}
