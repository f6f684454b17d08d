//! A reload that changes the rules of a role a session keeps: statements prepared, portals
//! bound and cursors declared before it follow the policy in force, as they do when a grant
//! ends (`grant_expiry`). What PostgreSQL would now receive differently is refused (42501,
//! prepare it again); what is decided the same runs on.

use crate::common::answers::{first_value, simple_first_value};
use crate::common::policy_files::{demo_policy_copy, DemoPolicyCopy};
use crate::common::{self, Env, EnvOptions};

const EMAIL: &str = "SELECT email FROM contacts ORDER BY id LIMIT 1";
const PHONE: &str = "SELECT phone FROM contacts ORDER BY id LIMIT 1";
const NAME: &str = "SELECT last_name FROM contacts ORDER BY id LIMIT 1";

/// The demo policy with the secretary's e-mail blocked and phone masked.
fn tightened(original: &str) -> String {
    let line = "      contacts.date_of_birth: {mask: date_year}   # birth year only\n";
    assert_eq!(original.matches(line).count(), 1, "the secretary's columns");
    original.replace(
        line,
        &format!("{line}      contacts.email: block\n      contacts.phone: {{mask: redact}}\n"),
    )
}

/// Refused because the policy changed since the name was defined (not for another reason).
fn assert_refused_as_stale<T: std::fmt::Debug>(what: &str, r: Result<T, tokio_postgres::Error>) {
    let e = r.expect_err(what);
    assert_eq!(common::sqlstate(&e), "42501", "{what}: {e}");
    let msg = common::message(&e);
    assert!(
        msg.contains("before the policy or the schema changed") && msg.contains("prepared again"),
        "{what}: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_portals_and_cursors_from_before_a_reload_follow_the_new_policy() {
    let DemoPolicyCopy {
        dir,
        file,
        original,
    } = demo_policy_copy();
    // With an audit trail: refusals pass through the trail's request matching too.
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(file.clone()),
        extra_yaml: common::audit_yaml(dir.path()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let stored = |sql: &'static str| {
        let direct = &direct;
        async move {
            let row = direct.query_one(sql, &[]).await.expect("stored value");
            Some(row.get::<_, String>(0))
        }
    };
    let (email, phone, name) = (stored(EMAIL).await, stored(PHONE).await, stored(NAME).await);

    // Under the first policy the secretary reads all three, through every kind of name.
    let a = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let by_email = a.prepare(EMAIL).await.expect("prepare");
    let by_phone = a.prepare(PHONE).await.expect("prepare");
    let by_name = a.prepare(NAME).await.expect("prepare");
    assert_eq!(
        first_value(a.query(&by_email, &[]).await),
        Ok(email.clone())
    );
    assert_eq!(
        first_value(a.query(&by_phone, &[]).await),
        Ok(phone.clone())
    );
    a.batch_execute(&format!(
        "PREPARE p_email AS {EMAIL}; PREPARE p_name AS {NAME}"
    ))
    .await
    .expect("PREPARE");
    a.batch_execute(&format!("PREPARE p_name_alone AS {NAME}"))
        .await
        .expect("PREPARE");
    // Statements that run other names: what they run is decided apart from their own text.
    let via_execute = a.prepare("EXECUTE p_email").await.expect("prepare");
    a.batch_execute(&format!(
        "BEGIN; DECLARE held CURSOR WITH HOLD FOR {EMAIL}; COMMIT"
    ))
    .await
    .expect("DECLARE WITH HOLD");
    a.batch_execute(&format!(
        "BEGIN; DECLARE held_name CURSOR WITH HOLD FOR {NAME}; COMMIT"
    ))
    .await
    .expect("DECLARE WITH HOLD");
    let via_fetch = a.prepare("FETCH NEXT FROM held").await.expect("prepare");
    let mut b = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let (b_email, b_name) = (
        b.prepare(EMAIL).await.unwrap(),
        b.prepare(NAME).await.unwrap(),
    );
    let portal_tx = b.transaction().await.expect("BEGIN");
    let email_portal = portal_tx.bind(&b_email, &[]).await.expect("bind");
    let name_portal = portal_tx.bind(&b_name, &[]).await.expect("bind");
    let mut c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let cursor_tx = c.transaction().await.expect("BEGIN");
    cursor_tx
        .batch_execute(&format!("DECLARE open_cursor CURSOR FOR {EMAIL}"))
        .await
        .expect("DECLARE");

    std::fs::write(&file, tightened(&original)).expect("policy");
    let version = env.server().proxy.enforcer.reload_policy();
    assert!(matches!(version, Some(Ok(_))), "{version:?}");

    // What would now be refused or masked is refused, whichever way it was defined.
    let e = a.query(&by_email, &[]).await.unwrap_err();
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
    assert!(detail.contains("email"), "the cause is named: {detail}");
    assert_refused_as_stale("Execute", a.query(&by_email, &[]).await);
    let e = a.query(&by_phone, &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
    assert!(detail.contains("rewritten differently"), "{detail}");
    assert_refused_as_stale("EXECUTE", a.simple_query("EXECUTE p_email").await);
    // Defined in the same text as one that reads e-mail: that text is what is decided again.
    assert_refused_as_stale("EXECUTE", a.simple_query("EXECUTE p_name").await);
    let fetched = a.simple_query("FETCH NEXT FROM held").await;
    assert_refused_as_stale("FETCH from a cursor WITH HOLD", fetched);
    assert_refused_as_stale("Execute of EXECUTE", a.query(&via_execute, &[]).await);
    assert_refused_as_stale("Execute of FETCH", a.query(&via_fetch, &[]).await);
    // What the new policy decides the same runs on.
    assert_eq!(first_value(a.query(&by_name, &[]).await), Ok(name.clone()));
    assert_eq!(first_value(a.query(&by_name, &[]).await), Ok(name.clone()));
    let alone = a.simple_query("EXECUTE p_name_alone").await;
    assert_eq!(simple_first_value(alone), Ok(name.clone()));
    let held = a.simple_query("FETCH NEXT FROM held_name").await;
    assert_eq!(simple_first_value(held), Ok(name.clone()));
    assert_eq!(
        first_value(portal_tx.query_portal(&name_portal, 1).await),
        Ok(name.clone())
    );
    let executed = portal_tx.query_portal(&email_portal, 1).await;
    assert_refused_as_stale("Execute of a portal", executed);
    let fetched = cursor_tx.simple_query("FETCH 1 FROM open_cursor").await;
    assert_refused_as_stale("FETCH from an open cursor", fetched);

    // Prepared again, each follows the new policy: e-mail refused, phone masked.
    let e = a.prepare(EMAIL).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    let again = a.prepare(PHONE).await.expect("prepare again");
    let masked = first_value(a.query(&again, &[]).await).expect("masked phone");
    assert!(masked.is_some() && masked != phone, "{masked:?}");
    a.simple_query("SELECT count(*) FROM companies")
        .await
        .expect("the session goes on");
}

/// A relation replaced under the same name by one that shows a column the role may not see as
/// stored (companies, not personal data, becomes a view over the contacts' bank accounts):
/// PostgreSQL plans a statement prepared before again under the name, so pgvakt decides it
/// again once it has read the new catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_a_relation_is_replaced_follow_the_new_one() {
    let env = Env::start_demo(20).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let read = "SELECT name FROM companies ORDER BY id LIMIT 1";
    let accounts: Vec<String> = direct
        .query(
            "SELECT bank_account FROM contacts WHERE bank_account IS NOT NULL",
            &[],
        )
        .await
        .expect("stored")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let s = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let prepared = s.prepare(read).await.expect("prepare");
    let company = first_value(s.query(&prepared, &[]).await).expect("a company name");
    assert!(company.is_some());

    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "ALTER TABLE companies RENAME TO companies_before; \
             CREATE VIEW companies AS SELECT id, bank_account AS name FROM contacts; \
             GRANT SELECT ON companies TO PUBLIC",
        )
        .await
        .expect("companies replaced");
    // pgvakt has read the new catalog once the same text, sent afresh, is decided for the view
    // (its bank accounts masked): neither the old company nor a stored account.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let fresh = simple_first_value(s.simple_query(read).await);
        match fresh {
            Ok(Some(v)) if !accounts.contains(&v) && Some(&v) != company.as_ref() => break,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no catalog reload: {fresh:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let got = first_value(s.query(&prepared, &[]).await);
    if let Ok(Some(v)) = &got {
        assert!(
            !accounts.contains(v),
            "a stored bank account through the old statement"
        );
    }
    assert_refused_as_stale("Execute", s.query(&prepared, &[]).await);
}
