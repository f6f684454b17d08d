//! The service connection survives an upstream restart: a user whose policy role comes from a
//! PostgreSQL group keeps that role afterwards, is refused (never given the wider default role)
//! while the groups cannot be looked up, and readiness says so.

use crate::common;

use std::time::{Duration, Instant};

use common::policy_files::{demo_with_policy, NAMES_AND_ACCOUNTS};
use common::{sqlstate, Env};

/// The roles and grants of `policy`.
const ROLES: &str = "roles:
  open:
    description: Everyone without a grant; sees masked values.
    default: {mask: redact}
  strict:
    description: Members of strict_group; bank accounts blocked.
    categories: {identity: allow, financial: block}
grants:
  - {group: strict_group, role: strict}
";

/// The default role reads (masked) bank accounts; members of `strict_group` may not read them
/// at all, so falling back to the default would widen their access.
fn policy() -> String {
    format!("\ndefault_role: open\n{NAMES_AND_ACCOUNTS}{ROLES}")
}

async fn readyz(env: &Env) -> String {
    common::http_get(env.server().metrics_addr, "/readyz").await
}

async fn wait_ready(env: &Env, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = readyz(env).await;
        if got.contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz still says {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// As sales (a strict_group member): the bank account is refused, or the login is.
async fn sales_never_reads_bank_accounts(env: &Env) -> bool {
    match env.connect("sales", "sales", "crm").await {
        Ok(c) => {
            let e = c
                .simple_query("SELECT bank_account FROM contacts LIMIT 1")
                .await
                .expect_err("strict_group must not read bank accounts");
            assert_eq!(sqlstate(&e), "42501", "{}", common::message(&e));
            true
        }
        Err(e) => {
            let text = common::message(&e);
            assert!(
                text.contains("cannot be looked up")
                    || !sqlstate(&e).is_empty()
                    || text.contains("connection"),
                "unexpected login failure: {text}"
            );
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_grants_survive_an_upstream_restart_and_fail_closed_meanwhile() {
    let (mut env, _policy) = demo_with_policy(20, "groups.yaml", &policy()).await;
    env.setup_crm(
        "CREATE ROLE strict_group NOLOGIN; GRANT strict_group TO sales",
        "group",
    )
    .await;
    assert!(
        sales_never_reads_bank_accounts(&env).await,
        "sales logs in before the restart"
    );
    let open = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    open.simple_query("SELECT bank_account FROM contacts LIMIT 1")
        .await
        .expect("the default role reads masked bank accounts");

    env.cluster.stop_server().expect("stop");
    wait_ready(&env, "503").await;
    // While PostgreSQL is down nobody logs in; the point is what happens as it comes back.
    env.cluster.start_server().expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logged_in = false;
    while Instant::now() < deadline {
        if sales_never_reads_bank_accounts(&env).await {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged_in, "sales could not log in again after the restart");
    wait_ready(&env, "200").await;
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("pgvakt_role_lookup_failures_total"),
        "the failure counter is exported"
    );
}
