//! The login history: `pgvakt audit logins` lists successful, failed and refused logins from the
//! audit trail as a table (time, user, client, TLS, outcome, reason), filtered by user, failure
//! and time; `pgvakt_failed_logins_total` counts failures by reason.

use std::path::Path;
use std::time::Duration;

use crate::common::{self, Env, EnvOptions};

fn logins(audit: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "logins"])
        .arg(audit)
        .args(args)
        .output()
        .expect("run pgvakt audit logins");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The data rows of a table for `user`.
fn rows_of<'a>(table: &'a str, user: &str) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(user))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_failures_and_refusals_are_listed_per_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: format!(
            "lockout:\n  user: {{max_failures: 2, window_ms: 60000, lock_ms: 60000}}\n{}",
            common::audit_yaml(dir.path())
        ),
        ..Default::default()
    })
    .await;
    env.create_user("alice", "right", false).await;
    let port = env.proxy_port();
    let ok = env
        .connect_port(port, "alice", "right", "crm")
        .await
        .expect("login");
    drop(ok);
    for _ in 0..2 {
        let e = env
            .connect_port(port, "alice", "wrong", "crm")
            .await
            .unwrap_err();
        assert_eq!(common::sqlstate(&e), "28P01");
    }
    let e = env
        .connect_port(port, "alice", "right", "crm")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "28000", "locked");
    let _ = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");

    let audit = dir.path().join("audit");
    let mut table = String::new();
    for _ in 0..50 {
        table = logins(&audit, &["--user", "alice"]);
        if rows_of(&table, "alice").len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(table.starts_with("time"), "{table}");
    for col in ["user", "client", "tls", "outcome", "reason"] {
        assert!(
            table.lines().next().is_some_and(|h| h.contains(col)),
            "{table}"
        );
    }
    // The second failure within a minute is counted into a later summary record (the rate
    // limit of pre-login records), not listed on its own.
    let alice = rows_of(&table, "alice");
    assert_eq!(alice.len(), 3, "{table}");
    assert!(
        alice[0].contains(" ok") && alice[0].contains("TLSv1_3"),
        "{table}"
    );
    assert!(alice[1].contains("failed"), "{table}");
    assert!(
        alice[1].contains("password authentication failed") && alice[1].contains("[28P01]"),
        "{table}"
    );
    assert!(
        alice[2].contains("refused") && alice[2].contains("locked_out"),
        "{table}"
    );
    assert!(
        rows_of(&table, "secretary").is_empty(),
        "--user filters: {table}"
    );

    let failed = logins(&audit, &["--failed"]);
    assert_eq!(rows_of(&failed, "alice").len(), 2, "{failed}");
    assert!(rows_of(&failed, "secretary").is_empty(), "{failed}");
    let all = logins(&audit, &["--since", "1h"]);
    assert_eq!(rows_of(&all, "secretary").len(), 1, "{all}");
    let none = logins(&audit, &["--until", "2000-01-01"]);
    assert!(none.starts_with("no logins recorded"), "{none}");

    let m = env.metrics().await;
    assert_eq!(
        common::metric(
            &m,
            "pgvakt_failed_logins_total{reason=\"invalid_password\"}"
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        common::metric(
            &m,
            "pgvakt_failed_logins_total{reason=\"invalid_authorization\"}"
        ),
        0.0
    );
}
