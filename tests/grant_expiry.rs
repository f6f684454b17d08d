//! Grants that end on time: a session whose grant's `valid_until` passes falls back to the
//! default role from its next statement, with no reload; the expiry gauge, `policy grants
//! --expiring` and `policy check` show the grant before and after.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgvakt::policy::expiry::rfc3339;

use crate::common::{self, Env, EnvOptions};

/// The demo policy with one more grant: `temp` gets `admin` until `until` (Unix seconds).
fn policy_with_temporary_grant(dir: &Path, until: i64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("policies/crm.yaml")).expect("crm.yaml");
    assert!(
        text.trim_end().ends_with("role: marketing}"),
        "grants end the file"
    );
    text.push_str(&format!(
        "  - {{user: temp, role: admin, valid_until: \"{}\", reason: \"TICKET-7 incident\"}}\n",
        rfc3339(until)
    ));
    let path = dir.join("crm-temporary.yaml");
    std::fs::write(&path, text).expect("write policy");
    path
}

fn pgvakt(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(args)
        .output()
        .expect("run pgvakt");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_falls_back_to_the_default_role_when_its_grant_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let until = now() + 15;
    let policy = policy_with_temporary_grant(dir.path(), until);
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy.clone()),
        ..Default::default()
    })
    .await;
    env.create_user("temp", "temp", false).await;
    env.cluster
        .connect("crm")
        .await
        .expect("direct")
        .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO temp")
        .await
        .expect("grant");
    let session = env.connect("temp", "temp", "crm").await.expect("login");
    let read = "SELECT bank_account FROM contacts ORDER BY id LIMIT 1";
    assert!(now() < until, "the environment took too long to start");
    let rows = session.simple_query(read).await.expect("admin reads");
    assert!(!rows.is_empty());

    // While valid: the gauge and the listing show when the grant ends.
    let m = env.metrics().await;
    let series = "pgvakt_grant_expiry_timestamp_seconds{grant=\"grants[5]\",role=\"admin\"}";
    assert_eq!(common::metric(&m, series), until as f64, "{m}");
    let policy_arg = policy.to_str().expect("utf-8 path");
    let (ok, listed) = pgvakt(&[
        "policy",
        "grants",
        "--policy",
        policy_arg,
        "--expiring",
        "1d",
    ]);
    assert!(ok, "{listed}");
    let temp = listed
        .lines()
        .find(|l| l.starts_with("user:temp"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        temp.contains("admin") && temp.contains(&rfc3339(until)),
        "{listed}"
    );
    assert!(
        temp.contains("expires in") && temp.contains("TICKET-7 incident"),
        "{listed}"
    );
    assert!(
        !listed.contains("user:secretary"),
        "--expiring lists only ending grants: {listed}"
    );
    let (ok, checked) = pgvakt(&["policy", "check", policy_arg]);
    assert!(ok, "{checked}");
    assert!(
        checked.contains("grants[5]") && checked.contains("expires at"),
        "{checked}"
    );

    // The grant ends: the same session's next statements run as the default role, which sees
    // no personal data, over the simple and the extended protocol alike.
    let wait = (until - now() + 1).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let e = session.simple_query(read).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    assert!(common::message(&e).contains("bank_account"), "{e}");
    let e = session.query(read, &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    let rows = session
        .simple_query("SELECT count(*) FROM companies")
        .await
        .expect("the session goes on");
    assert!(!rows.is_empty());

    let (_, checked) = pgvakt(&["policy", "check", policy_arg]);
    assert!(checked.contains("expired at"), "{checked}");
    let (_, listed) = pgvakt(&["policy", "grants", "--policy", policy_arg]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("user:temp") && l.contains("expired")),
        "{listed}"
    );
}
