//! The `notify` capability decides: notifications carry data between sessions past the analysis
//! of results, so a restricted role without the capability cannot LISTEN or NOTIFY, while one
//! with it can, and notifications reach it through pgvakt.

use crate::common;

use std::time::Duration;

use common::{sqlstate, Env, EnvOptions};
use futures_util::StreamExt;

/// Two restricted roles that differ only in `notify`.
const POLICY: &str = "
default_role: nobody
inventory:
  tables:
    companies: {personal: false}
    contacts:
      subject_key: id
      columns: {id: none, first_name: identity, bank_account: financial}
    activities: {subject_key: contact_id}
    consents: {subject_key: contact_id}
roles:
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

async fn start() -> (Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("notify.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy),
        ..Default::default()
    })
    .await;
    (env, dir)
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
    let (listener, mut conn) = env
        .pg_config("sales", "sales", "crm")
        .connect(env.tls())
        .await
        .expect("sales");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
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
