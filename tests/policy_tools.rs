//! The security team's policy tools against a real PostgreSQL with the demo CRM: the committed
//! schema snapshot matches the demo schema, `policy test` and `policy check --upstream` pass,
//! `explain` shows what the proxy does, and policy reloads reach live sessions.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::cli::text;
use common::{metric, Env, EnvOptions};
use pgvakt::policy::testcases::{parse_test_file, Decision};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn pgvakt(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(args)
        .current_dir(root())
        .output()
        .await
        .expect("run pgvakt")
}

fn upstream(env: &Env) -> String {
    env.cluster
        .dsn(env.cluster.superuser(), env.cluster.password(), "crm")
}

async fn demo() -> Env {
    Env::start_demo(60).await
}

#[tokio::test]
async fn snapshot_test_suite_and_live_check_agree_with_the_demo_database() {
    let env = demo().await;
    let dsn = upstream(&env);

    let snap = pgvakt(&["policy", "snapshot", "--upstream", &dsn]).await;
    assert!(snap.status.success(), "{}", text(&snap));
    let committed = std::fs::read_to_string(root().join("policies/schema/crm-snapshot.json"))
        .expect("committed snapshot");
    assert_eq!(
        String::from_utf8_lossy(&snap.stdout),
        committed,
        "policies/schema/crm-snapshot.json is out of date: regenerate it with `pgvakt policy snapshot`"
    );

    let offline = pgvakt(&["policy", "test", "policies/tests/crm.yaml"]).await;
    assert!(offline.status.success(), "{}", text(&offline));
    let cases = parse_test_file(&root().join("policies/tests/crm.yaml"))
        .expect("test file")
        .cases
        .len();
    assert!(
        text(&offline).contains(&format!("{cases} passed, 0 failed")),
        "{}",
        text(&offline)
    );

    let live = pgvakt(&[
        "policy",
        "test",
        "policies/tests/crm.yaml",
        "--upstream",
        &dsn,
    ])
    .await;
    assert!(live.status.success(), "{}", text(&live));

    let check = pgvakt(&["policy", "check", "policies/crm.yaml", "--upstream", &dsn]).await;
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains(": ok"), "{}", text(&check));
}

#[tokio::test]
async fn live_check_reports_inventory_names_missing_upstream_and_unclassified_personal_columns() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute("CREATE TABLE leads (id int, mobile_phone text); INSERT INTO leads VALUES (1, '+46 70 123 45 67')")
        .await
        .expect("extra table");
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("crm.yaml");
    let text_in = common::policy_files::demo_policy();
    std::fs::write(
        &broken,
        text_in.replacen("bank_account:", "bank_acount:", 1),
    )
    .expect("write");
    let out = pgvakt(&[
        "policy",
        "check",
        broken.to_str().expect("utf-8 path"),
        "--upstream",
        &upstream(&env),
    ])
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("'bank_acount' does not exist"), "{t}");
    assert!(t.contains("did you mean 'bank_account'"), "{t}");
    assert!(t.contains("public.leads.mobile_phone"), "{t}");

    // A row predicate the loader accepts but PostgreSQL cannot plan (text compared with a
    // number) is an error of the live check, and the demo's own row rules all plan.
    std::fs::write(
        &broken,
        text_in.replacen(
            "      consent: true\n",
            "      consent: true\n      where: {contacts: \"city > 5\"}\n",
            1,
        ),
    )
    .expect("write");
    let out = pgvakt(&[
        "policy",
        "check",
        broken.to_str().expect("utf-8 path"),
        "--upstream",
        &upstream(&env),
    ])
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("roles.marketing.rows: PostgreSQL rejects the row rules of public.contacts")
            && t.contains("operator does not exist: text > integer"),
        "{t}"
    );
    let out = pgvakt(&[
        "policy",
        "check",
        "policies/crm.yaml",
        "--upstream",
        &upstream(&env),
    ])
    .await;
    let t = text(&out);
    assert!(!t.contains("rejects the row rules"), "{t}");
}

#[tokio::test]
async fn explain_shows_masking_and_refusal_and_agrees_with_the_proxy() {
    let env = demo().await;
    let out = pgvakt(&[
        "policy",
        "explain",
        "--role",
        "secretary",
        "--schema",
        "policies/schema/crm-snapshot.json",
        "SELECT first_name, bank_account FROM contacts WHERE id = 42",
    ])
    .await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.starts_with("decision: rewrite"), "{t}");
    assert!(
        t.contains("public.contacts.bank_account  category=financial  action=masked  rule: roles.secretary.categories.financial"),
        "{t}"
    );
    assert!(t.contains("forwarded SQL:"), "{t}");

    let out = pgvakt(&[
        "policy",
        "explain",
        "--user",
        "marketing",
        "--upstream",
        &upstream(&env),
        "SELECT bank_account FROM contacts",
    ])
    .await;
    let t = text(&out);
    assert!(t.starts_with("decision: refuse"), "{t}");
    assert!(
        t.contains("column contacts.bank_account is blocked for role marketing"),
        "{t}"
    );

    // Every case of the demo suite: the proxy refuses exactly what explain refuses.
    let tests = parse_test_file(&root().join("policies/tests/crm.yaml")).expect("tests");
    for case in &tests.cases {
        let c = &case.value;
        // Each demo login user has its role's name (and password); others cannot log in.
        let Some(login) = c.user.as_ref().or(c.role.as_ref()) else {
            continue;
        };
        if !pgvakt::demo::LOGIN_ROLES.contains(&login.as_str()) {
            continue;
        }
        let client = env.connect(login, login, "crm").await.expect("connect");
        client.batch_execute("BEGIN").await.expect("begin");
        let r = client.batch_execute(&c.sql).await;
        let _ = client.batch_execute("ROLLBACK").await;
        match (c.expect, r) {
            (Decision::Refuse, Err(e)) => {
                let want = c.sqlstate.as_deref().unwrap_or("42501");
                assert_eq!(common::sqlstate(&e), want, "{}: {e}", c.name);
                if let Some(part) = &c.message {
                    assert!(
                        common::message(&e).contains(part.as_str()),
                        "{}: {e}",
                        c.name
                    );
                }
            }
            (Decision::Refuse, Ok(())) => {
                panic!("{}: the proxy ran a statement explain refuses", c.name)
            }
            (_, Err(e)) => panic!("{}: the proxy refused what explain allows: {e}", c.name),
            (_, Ok(())) => {}
        }
    }
}

async fn bank_account(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT bank_account FROM contacts WHERE id = 1", &[])
        .await?;
    Ok(row.get(0))
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn policy_changes_reach_live_sessions_and_invalid_ones_keep_the_old_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("crm.yaml");
    let original = common::policy_files::demo_policy();
    std::fs::write(&policy, &original).expect("copy policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy.clone()),
        policy_watch_ms: 100,
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let real: String = direct
        .query_one("SELECT bank_account FROM contacts WHERE id = 1", &[])
        .await
        .expect("direct read")
        .get(0);
    let session = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    assert_eq!(bank_account(&session).await.expect("masked read"), "***");

    // A valid change: the secretary may now see bank accounts, from the next statement on.
    let opened = original.replacen(
        "financial: {mask: redact}       # bank account masked entirely",
        "financial: allow",
        1,
    );
    assert_ne!(
        opened, original,
        "the demo policy's secretary rule changed; update this test"
    );
    write_later(&policy, &opened);
    wait_for("the valid policy to be loaded", async || {
        bank_account(&session).await.ok().as_deref() == Some(real.as_str())
    })
    .await;
    assert_eq!(
        metric(
            &env.metrics().await,
            "pgvakt_policy_reloads_total{outcome=\"ok\"}"
        ),
        1.0
    );

    // An invalid change is rejected: the session keeps the last valid policy.
    write_later(
        &policy,
        &opened.replacen("secretary:", "secretary:\n    bogus_key: 1", 1),
    );
    wait_for("the invalid policy to be rejected", async || {
        metric(
            &env.metrics().await,
            "pgvakt_policy_reloads_total{outcome=\"failed\"}",
        ) == 1.0
    })
    .await;
    assert_eq!(bank_account(&session).await.expect("read"), real);
    let fresh = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("new session");
    assert_eq!(bank_account(&fresh).await.expect("read"), real);

    // Back to the original through an explicit reload (what SIGHUP runs).
    std::fs::write(&policy, &original).expect("restore");
    let version = env.server().proxy.enforcer.reload_policy();
    assert!(matches!(version, Some(Ok(_))), "{version:?}");
    assert_eq!(bank_account(&session).await.expect("read"), "***");
}

/// File watching compares modification times; make sure the new content gets a new one.
fn write_later(path: &Path, content: &str) {
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path, content).expect("write policy");
}
