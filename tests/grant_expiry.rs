//! Grants that end on time: a session whose grant's `valid_until` passes falls back to the
//! default role from its next statement, with no reload; the expiry gauge, `policy grants
//! --expiring` and `policy check` show the grant before and after.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgvakt::policy::expiry::rfc3339;

use crate::common::answers::{first_value, simple_first_value};
use crate::common::{self, Env, EnvOptions};

/// The demo policy with one more grant: `temp` gets `admin` until `until` (Unix seconds).
fn policy_with_temporary_grant(dir: &Path, until: i64) -> PathBuf {
    let mut text = common::policy_files::demo_policy();
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
    env.setup_crm(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO temp",
        "grant",
    )
    .await;
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

/// After the grant ends, what was read through a name defined before: refused (42501) or not
/// the stored value. Never the value itself.
fn assert_not_read(what: &str, got: &Result<Option<String>, String>, stored: &str) {
    match got {
        Err(code) => assert_eq!(code, "42501", "{what}: refused with the policy's SQLSTATE"),
        Ok(v) => assert_ne!(
            v.as_deref(),
            Some(stored),
            "{what} read the stored value after the grant ended"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_and_cursors_opened_before_the_grant_ends_follow_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let until = now() + 12;
    let policy = policy_with_temporary_grant(dir.path(), until);
    // With an audit trail: the refusals below pass through the trail's request matching too.
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy),
        extra_yaml: common::audit_yaml(dir.path()),
        ..Default::default()
    })
    .await;
    env.create_user("temp", "temp", false).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO temp")
        .await
        .expect("grant");
    let read = "SELECT bank_account FROM contacts ORDER BY id LIMIT 1";
    let stored: String = direct.query_one(read, &[]).await.expect("stored").get(0);

    // While the grant holds: a protocol-level prepared statement, an SQL PREPARE, a cursor
    // WITH HOLD, and, in open transactions, a protocol portal and a cursor.
    let a = env.connect("temp", "temp", "crm").await.expect("login");
    let prepared = a.prepare(read).await.expect("prepare");
    assert_eq!(
        first_value(a.query(&prepared, &[]).await),
        Ok(Some(stored.clone()))
    );
    a.batch_execute(&format!("PREPARE p AS {read}"))
        .await
        .expect("PREPARE");
    a.batch_execute(&format!(
        "BEGIN; DECLARE held CURSOR WITH HOLD FOR {read}; COMMIT"
    ))
    .await
    .expect("DECLARE WITH HOLD");
    let mut b = env.connect("temp", "temp", "crm").await.expect("login");
    let b_statement = b.prepare(read).await.expect("prepare");
    let portal_tx = b.transaction().await.expect("BEGIN");
    let portal = portal_tx.bind(&b_statement, &[]).await.expect("bind");
    let mut c = env.connect("temp", "temp", "crm").await.expect("login");
    let cursor_tx = c.transaction().await.expect("BEGIN");
    cursor_tx
        .batch_execute(&format!("DECLARE open_cursor CURSOR FOR {read}"))
        .await
        .expect("DECLARE");
    assert!(now() < until, "the set-up took too long");

    let wait = (until - now() + 1).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let after = [
        (
            "Execute of a statement prepared before",
            first_value(a.query(&prepared, &[]).await),
        ),
        (
            "EXECUTE of a statement prepared before",
            simple_first_value(a.simple_query("EXECUTE p").await),
        ),
        (
            "FETCH from a cursor WITH HOLD declared before",
            simple_first_value(a.simple_query("FETCH NEXT FROM held").await),
        ),
        (
            "Execute of a portal bound before",
            first_value(portal_tx.query_portal(&portal, 1).await),
        ),
        (
            "FETCH from a cursor declared before",
            simple_first_value(cursor_tx.simple_query("FETCH 1 FROM open_cursor").await),
        ),
    ];
    for (what, got) in &after {
        assert_not_read(what, got, &stored);
    }
    let e = a.query(&prepared, &[]).await.unwrap_err();
    assert!(
        common::message(&e)
            .contains("was defined before this session's policy role changed to nobody"),
        "{e}"
    );
    // The sessions go on as the default role, and what they prepare now runs.
    let fresh = a
        .prepare("SELECT count(*)::text FROM companies")
        .await
        .expect("prepare after the change");
    assert!(first_value(a.query(&fresh, &[]).await).is_ok());
    let e = a.simple_query(read).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    a.simple_query("SELECT count(*) FROM companies")
        .await
        .expect("the session goes on");
}
