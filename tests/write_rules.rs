//! What a role may write into columns it cannot read as stored: an ORM's new row (NULL into
//! masked columns, also as bound parameters) and form save (the masked value written back)
//! work and leave the stored values; any other value is refused with 42501 naming the column
//! and the write rule, and writes nothing; a write-only column (`writes: allow`) takes new
//! values while reads stay masked. Checked over the simple and the extended protocol against
//! a real PostgreSQL, with the stored values read directly.

use crate::common;

use common::{message, sqlstate, Env, EnvOptions};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// The demo policy, with sales allowed to set bank accounts it reads masked (a write-only
/// field) and the secretary refused any write of a birth date.
fn policy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = common::policy_files::demo_policy();
    let with_writes = demo
        .replace(
            "      financial: {mask: bank_account} # last 4 digits visible\n",
            "      financial: {mask: bank_account} # last 4 digits visible\n    writes:\n      columns:\n        contacts.bank_account: allow\n",
        )
        .replace(
            "      financial: {mask: redact}       # bank account masked entirely\n",
            "      financial: {mask: redact}       # bank account masked entirely\n    writes:\n      columns:\n        contacts.notes: refuse\n",
        );
    assert_ne!(
        demo, with_writes,
        "the demo policy changed: adjust this test"
    );
    std::fs::write(dir.path().join("crm.yaml"), with_writes).expect("policy");
    dir
}

async fn stored(direct: &Client, id: i64) -> (Option<String>, Option<String>, Option<String>) {
    let r = direct
        .query_one(
            "SELECT bank_account, date_of_birth::text, notes FROM contacts WHERE id = $1",
            &[&id],
        )
        .await
        .expect("stored row");
    (r.get(0), r.get(1), r.get(2))
}

fn refused(r: Result<u64, tokio_postgres::Error>, column: &str, what: &str) {
    match r {
        Ok(n) => panic!("{what}: wrote {n} rows, expected a refusal naming {column}"),
        Err(e) => {
            assert_eq!(sqlstate(&e), "42501", "{what}: {}", message(&e));
            let m = message(&e);
            assert!(
                m.contains(column) && m.contains("write rule"),
                "{what}: the refusal names neither column nor rule: {m}"
            );
            assert!(
                !m.contains("pgvakt-write-refused"),
                "{what}: the guard's marker reached the client: {m}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_columns_keep_their_stored_values_unless_the_policy_allows_writing() {
    let policy = policy();
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(50),
        policy_file: Some(policy.path().join("crm.yaml")),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let id: i64 = direct
        .query_one(
            "SELECT id FROM contacts WHERE bank_account IS NOT NULL AND date_of_birth IS NOT NULL ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("a contact")
        .get(0);
    let before = stored(&direct, id).await;
    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");

    // A form save: every loaded column written back, as read.
    let row = secretary
        .query_one(
            "SELECT first_name, bank_account, date_of_birth::text FROM contacts WHERE id = $1",
            &[&id],
        )
        .await
        .expect("read");
    let (first, masked_bank, masked_birth): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(masked_bank, "***");
    let save = format!(
        "UPDATE contacts SET first_name = '{first}', bank_account = '{masked_bank}', date_of_birth = '{masked_birth}'::date WHERE id = {id}"
    );
    assert_eq!(
        secretary
            .execute(save.as_str(), &[])
            .await
            .expect("form save (simple)"),
        1
    );
    let save = secretary
        .prepare_typed(
            "UPDATE contacts SET first_name = $1, bank_account = $2, date_of_birth = $3 WHERE id = $4",
            &[Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        )
        .await
        .expect("prepare a form save");
    let n = secretary
        .execute(&save, &[&first, &masked_bank, &masked_birth, &id])
        .await
        .expect("form save (extended)");
    assert_eq!(n, 1);
    assert_eq!(
        stored(&direct, id).await,
        before,
        "a form save changed stored values"
    );

    // Any other value is refused, the true stored value included (it would tell the role
    // that it guessed right), and nothing is written.
    let real = before.0.clone().expect("bank account");
    for value in [real.as_str(), "NO 1234 56 78901", ""] {
        refused(
            secretary
                .execute(
                    "UPDATE contacts SET bank_account = $1 WHERE id = $2",
                    &[&value, &id],
                )
                .await,
            "contacts.bank_account",
            "a new bank account",
        );
    }
    refused(
        secretary
            .execute(
                format!("UPDATE contacts SET bank_account = NULL WHERE id = {id}").as_str(),
                &[],
            )
            .await,
        "contacts.bank_account",
        "NULL over a stored bank account",
    );
    refused(
        secretary
            .execute(
                format!("UPDATE contacts SET date_of_birth = '1901-02-03' WHERE id = {id}")
                    .as_str(),
                &[],
            )
            .await,
        "contacts.date_of_birth",
        "a new birth date",
    );
    refused(
        secretary
            .execute(
                format!("UPDATE contacts SET notes = 'x' WHERE id = {id}").as_str(),
                &[],
            )
            .await,
        "contacts.notes",
        "a column the write rules refuse",
    );
    assert_eq!(
        stored(&direct, id).await,
        before,
        "a refused write changed stored values"
    );
    // The session goes on.
    secretary
        .simple_query("SELECT 1")
        .await
        .expect("after refusals");

    // A new row: NULL and DEFAULT pass, as literals and as bound parameters (typed and not).
    let insert = "INSERT INTO contacts (first_name, last_name, bank_account, date_of_birth) VALUES ($1, $2, $3, $4)";
    let none: Option<String> = None;
    let no_date: Option<String> = None;
    let typed = secretary
        .prepare_typed(insert, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT])
        .await
        .expect("prepare with text types");
    secretary
        .execute(&typed, &[&"Kari", &"Nordmann", &none, &no_date])
        .await
        .expect("a new contact with NULL parameters");
    let untyped = secretary
        .prepare_typed(insert, &[Type::TEXT, Type::TEXT, Type::UNKNOWN, Type::TEXT])
        .await
        .expect("prepare with unknown types");
    secretary
        .execute(&untyped, &[&"Kari", &"Untyped", &none, &none])
        .await
        .expect("a new contact with NULL parameters of unknown type");
    secretary
        .simple_query("INSERT INTO contacts (first_name, last_name, bank_account, date_of_birth) VALUES ('Ola', 'Literal', NULL, DEFAULT)")
        .await
        .expect("a new contact with NULL and DEFAULT");
    refused(
        secretary
            .execute(&typed, &[&"Per", &"Guess", &Some("NO 1"), &no_date])
            .await,
        "contacts.bank_account",
        "a new row's bank account",
    );
    // Prepared and executed often enough for PostgreSQL to use a generic plan.
    let stmt = secretary
        .prepare_typed(insert, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT])
        .await
        .expect("prepare");
    for i in 0..8 {
        secretary
            .execute(&stmt, &[&format!("Gen{i}"), &"Plan", &none, &no_date])
            .await
            .expect("generic plan with NULL");
    }
    refused(
        secretary
            .execute(&stmt, &[&"Gen", &"Refused", &Some("NO 2"), &no_date])
            .await,
        "contacts.bank_account",
        "a generic plan's bank account",
    );
    let created: i64 = direct
        .query_one(
            "SELECT count(*) FROM contacts WHERE last_name IN ('Nordmann', 'Untyped', 'Literal', 'Plan') AND bank_account IS NULL AND date_of_birth IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(created, 11);
    let guessed: i64 = direct
        .query_one(
            "SELECT count(*) FROM contacts WHERE last_name IN ('Guess', 'Refused')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(guessed, 0, "a refused new row was written");

    // Sales may set a bank account it reads masked (a write-only field).
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    sales
        .execute(
            "UPDATE contacts SET bank_account = $1 WHERE id = $2",
            &[&"NO 9999 88 77665", &id],
        )
        .await
        .expect("a write-only column");
    assert_eq!(
        stored(&direct, id).await.0.as_deref(),
        Some("NO 9999 88 77665")
    );
    let read: String = sales
        .query_one("SELECT bank_account FROM contacts WHERE id = $1", &[&id])
        .await
        .expect("read back")
        .get(0);
    assert!(
        !read.contains("9999") && read.ends_with("7665"),
        "sales reads the bank account masked: {read}"
    );
}
