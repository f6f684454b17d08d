//! Table inheritance: `FROM ONLY t`, `UPDATE ONLY t`, `DELETE FROM ONLY t` work for restricted
//! roles, and a read or write of a parent without ONLY, which reaches its children's rows
//! under the parent's rules, is allowed only while the policy covers every child as it covers
//! the parent. A child the inventory does not list is personal by default.

use crate::common;

use common::answers::rows_or_error;
use common::{Env, EnvOptions};

/// Stored values in the children that restricted roles must never receive.
const ARCHIVED_ACCOUNT: &str = "ARCHIVE-ACCOUNT-4711";
const SCRATCH_ACCOUNT: &str = "SCRATCH-ACCOUNT-0815";

const CHILDREN: &str = "
CREATE TABLE contacts_archive () INHERITS (contacts);
INSERT INTO contacts_archive (id, first_name, last_name, email, bank_account, date_of_birth)
  VALUES (900001, 'Archived', 'Person', 'archived@example.com', 'ARCHIVE-ACCOUNT-4711', '1961-07-14');
CREATE TABLE contacts_scratch (extra text) INHERITS (contacts);
INSERT INTO contacts_scratch (id, first_name, last_name, email, bank_account, extra)
  VALUES (900002, 'Scratch', 'Person', 'scratch@example.com', 'SCRATCH-ACCOUNT-0815', 'x');
CREATE VIEW contacts_own AS SELECT id, first_name, city, bank_account FROM ONLY contacts;
GRANT SELECT, UPDATE, DELETE ON contacts, contacts_archive, contacts_scratch, contacts_own TO PUBLIC;
";

/// The demo policy with `contacts_archive` listed and ruled as `contacts` is.
fn policy_with_archive() -> String {
    let policy = common::policy_files::demo_policy();
    let contacts = policy
        .find("    contacts:\n")
        .expect("contacts in the inventory");
    let end = contacts
        + policy[contacts..]
            .find("    activities:\n")
            .expect("activities after contacts");
    let entry = policy[contacts..end].replacen("    contacts:", "    contacts_archive:", 1);
    let mut out = String::new();
    out.push_str(&policy[..end]);
    out.push_str(&entry);
    out.push_str(&policy[end..]);
    out.replace(
        "      contacts.date_of_birth: {mask: date_year}",
        "      contacts.date_of_birth: {mask: date_year}\n      contacts_archive.date_of_birth: {mask: date_year}",
    )
}

fn leaks(rows: &[Vec<Option<String>>]) -> bool {
    rows.iter().flatten().flatten().any(|v| {
        v.contains(ARCHIVED_ACCOUNT) || v.contains(SCRATCH_ACCOUNT) || v.contains("1961-07-14")
    })
}

#[tokio::test]
async fn only_and_inheritance_children_follow_the_policy() {
    let policy = tempfile::tempdir().expect("tempdir");
    std::fs::write(policy.path().join("crm.yaml"), policy_with_archive()).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(30),
        policy_file: Some(policy.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(CHILDREN).await.expect("children");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    // The catalog is reloaded after the DDL pgvakt relayed.
    common::catalog::until_known(&c, "SELECT count(*) FROM contacts_scratch").await;

    // ONLY reads the parent's own rows, masked as always.
    let only = rows_or_error(
        &c,
        "SELECT id, first_name, bank_account FROM ONLY contacts ORDER BY id",
    )
    .await
    .expect("FROM ONLY");
    let want: i64 = direct
        .query_one("SELECT count(*) FROM ONLY contacts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(only.len() as i64, want);
    assert!(only
        .iter()
        .all(|r| r[2].as_deref().is_none_or(|v| v == "***")));
    let joined = rows_or_error(
        &c,
        "SELECT count(*) FROM ONLY public.contacts c JOIN ONLY companies co ON co.id = c.company_id",
    )
    .await
    .expect("JOIN ONLY");
    assert!(!joined.is_empty());

    // A view over ONLY contacts reads and writes the parent's own rows.
    let own = rows_or_error(&c, "SELECT id, bank_account FROM contacts_own ORDER BY id")
        .await
        .expect("view over ONLY");
    assert_eq!(own.len() as i64, want);
    assert!(own
        .iter()
        .all(|r| r[1].as_deref().is_none_or(|v| v == "***")));
    rows_or_error(&c, "UPDATE contacts_own SET city = 'Kiruna' WHERE id = 3")
        .await
        .expect("write through a view over ONLY");
    let e = rows_or_error(
        &c,
        "UPDATE contacts_own SET bank_account = 'X' WHERE id = 3",
    )
    .await
    .expect_err("a masked column through the view");
    assert!(e.starts_with("42501"), "{e}");

    // The unlisted child makes the parent readable only with ONLY; the message says why.
    for sql in [
        "SELECT first_name FROM contacts",
        "SELECT count(*) FROM contacts",
        "UPDATE contacts SET city = 'Lund' WHERE id = 1",
        "DELETE FROM contacts WHERE id = -1",
        "SELECT * FROM ONLY (contacts)",
    ] {
        let e = rows_or_error(&c, sql).await.expect_err(sql);
        assert!(e.starts_with("42501"), "{sql}: {e}");
        if !sql.contains('(') {
            assert!(
                e.contains("contacts_scratch") && e.contains("ONLY"),
                "{sql}: {e}"
            );
        }
    }
    // The unlisted child itself is personal by default: masked for the secretary.
    let scratch = rows_or_error(&c, "SELECT first_name, bank_account FROM contacts_scratch")
        .await
        .expect("unlisted child");
    assert_eq!(scratch.len(), 1);
    assert!(!leaks(&scratch), "{scratch:?}");
    assert_ne!(scratch[0][0].as_deref(), Some("Scratch"));

    // Writes with ONLY change the parent's rows only.
    rows_or_error(&c, "UPDATE ONLY contacts SET city = 'Lund' WHERE id = 1")
        .await
        .expect("UPDATE ONLY");
    rows_or_error(
        &c,
        "UPDATE ONLY contacts c SET city = 'Malmö' WHERE c.id = 2",
    )
    .await
    .expect("UPDATE ONLY with an alias");
    rows_or_error(&c, "DELETE FROM ONLY contacts WHERE id = -1")
        .await
        .expect("DELETE FROM ONLY");
    let city: Option<String> = direct
        .query_one("SELECT city FROM contacts WHERE id = 1", &[])
        .await
        .expect("city")
        .get(0);
    assert_eq!(city.as_deref(), Some("Lund"));

    // Once the only uncovered child is gone, the parent reads its listed child's rows with
    // the child's (equal) rules.
    admin
        .batch_execute("DROP TABLE contacts_scratch")
        .await
        .expect("drop");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let all = loop {
        match rows_or_error(
            &c,
            "SELECT id, first_name, bank_account, date_of_birth FROM contacts",
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Err(e) => panic!("parent with a covered child: {e}"),
        }
    };
    let archived = all
        .iter()
        .find(|r| r[0].as_deref() == Some("900001"))
        .expect("the archived row through its parent");
    assert_eq!(archived[1].as_deref(), Some("Archived"));
    assert_eq!(archived[2].as_deref(), Some("***"));
    assert_eq!(archived[3].as_deref(), Some("1961-01-01"));
    assert!(!leaks(&all));
    for sql in [
        "SELECT * FROM contacts WHERE bank_account LIKE 'ARCHIVE%'",
        "SELECT * FROM contacts_archive",
        "SELECT * FROM contacts * WHERE id = 900001",
    ] {
        let r = rows_or_error(&c, sql).await.expect(sql);
        assert!(!leaks(&r), "{sql}: {r:?}");
    }
}

/// Refusals of statements with ONLY name the relation as the client wrote it. pgvakt's
/// internal names carry a per-process secret so that client text cannot name them; no message
/// may show one.
#[tokio::test]
async fn refusals_with_only_show_no_internal_names() {
    let env = Env::start_demo(5).await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    for (sql, names) in [
        ("SELECT * FROM ONLY no_such_table", "ONLY no_such_table"),
        (
            "SELECT * FROM ONLY pg_catalog.no_such",
            "ONLY pg_catalog.no_such",
        ),
        ("UPDATE ONLY no_such_table SET a = 1", "ONLY no_such_table"),
        ("DELETE FROM ONLY no_such_table", "ONLY no_such_table"),
        (
            "LOCK TABLE ONLY no_such_table IN ACCESS SHARE MODE",
            "ONLY no_such_table",
        ),
        ("TRUNCATE ONLY contacts", "ONLY contacts"),
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "42501", "{sql}: {db:?}");
        let text = format!(
            "{} {} {}",
            db.message(),
            db.detail().unwrap_or_default(),
            db.hint().unwrap_or_default()
        );
        assert!(text.contains(names), "{sql}: {text}");
        assert!(
            !text.contains("pgvakt_only_") && !text.contains("pgvakt_stand_in_"),
            "{sql}: {text}"
        );
    }
}
