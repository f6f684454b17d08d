//! The `notify` capability decides: notifications carry data between sessions past the analysis
//! of results, so a restricted role without the capability cannot LISTEN or NOTIFY, while one
//! with it can, and notifications reach it through pgvakt.

use crate::common;

use std::time::Duration;

use common::policy_files::{demo_with_policy, NAMES_AND_ACCOUNTS};
use common::{sqlstate, Env};

/// The roles and grants of `policy`.
const ROLES: &str = "roles:
  nobody: {default: block}
  quiet:
    description: Reads names; no notifications.
    categories: {identity: allow}
  announcer:
    description: Reads names and may use LISTEN/NOTIFY.
    categories: {identity: allow}
    capabilities: [notify]
grants:
  - {user: secretary, role: quiet}
  - {user: sales, role: announcer}
";

/// Two restricted roles that differ only in `notify`.
fn policy() -> String {
    format!("\ndefault_role: nobody\n{NAMES_AND_ACCOUNTS}{ROLES}")
}

async fn start() -> (Env, tempfile::TempDir) {
    demo_with_policy(20, "notify.yaml", &policy()).await
}

#[tokio::test]
async fn listen_and_notify_need_the_notify_capability() {
    let (env, _dir) = start().await;

    // Without the capability: refused over both protocols; UNLISTEN (pools send it) still runs.
    let quiet = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    for sql in [
        "LISTEN crm_events",
        "NOTIFY crm_events, 'contact 42 updated'",
    ] {
        let err = quiet.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        assert!(
            common::message(&err)
                .contains("without the notify capability is not allowed for role quiet"),
            "{sql}: {}",
            common::message(&err)
        );
        let err = quiet.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql} (extended): {err}");
    }
    // UNLISTEN moves no data and asyncpg's pool sends it on every release: always allowed.
    quiet.simple_query("UNLISTEN *").await.expect("UNLISTEN");
    quiet
        .execute("UNLISTEN crm_events", &[])
        .await
        .expect("UNLISTEN (extended)");
    assert_eq!(
        quiet
            .query_one("SELECT first_name FROM contacts WHERE id = 1", &[])
            .await
            .expect("the session is still usable")
            .len(),
        1
    );

    // With the capability: LISTEN works and the notification arrives through pgvakt.
    let (listener, conn) = env
        .pg_config("sales", "sales", "crm")
        .connect(env.tls())
        .await
        .expect("sales");
    let mut rx = common::notifications::notifications(conn, |n| {
        (n.channel().to_owned(), n.payload().to_owned())
    });
    listener
        .batch_execute("LISTEN crm_events")
        .await
        .expect("LISTEN with notify");
    let sender = env.connect("sales", "sales", "crm").await.expect("sales");
    sender
        .batch_execute("NOTIFY crm_events, 'contact 42 updated'")
        .await
        .expect("NOTIFY with notify");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(got, ("crm_events".into(), "contact 42 updated".into()));
    listener
        .batch_execute("UNLISTEN *")
        .await
        .expect("UNLISTEN");
}
