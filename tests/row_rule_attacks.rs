//! Attacks on row rules through what PostgreSQL does around a statement rather than in it:
//! the clock the rules compare against, unique indexes that read expressions and predicates,
//! and foreign keys whose checks and actions reach rows at the other end. Each compares a
//! hidden person with one who does not exist, or checks that hidden rows stay unchanged.

use crate::common;

use common::answers::outcome;
use common::catalog::until_known;
use common::{Env, EnvOptions};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn first_id(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn a_transaction_begun_before_a_withdrawal_does_not_keep_the_person_visible() {
    let env = Env::start_demo(80).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let person = first_id(
        &direct,
        &format!(
            "{} ORDER BY c.id LIMIT 1",
            common::rows::visible_ids("marketing")
        ),
    )
    .await;
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    let probe = format!("SELECT count(*), max(email) FROM contacts WHERE id = {person}");
    marketing.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(
        outcome_in(&marketing, &probe).await,
        "1",
        "visible before the withdrawal"
    );
    // A snapshot another session exports before the withdrawal.
    let exporter = env.cluster.connect("crm").await.expect("exporter");
    exporter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .expect("begin");
    let snapshot: String = exporter
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .expect("export")
        .get(0);
    // Withdrawn, and the person's data changed afterwards, while marketing's transaction
    // (and its now()) is still the one begun before.
    direct
        .batch_execute(&format!(
            "UPDATE consents SET withdrawn_at = now() WHERE contact_id = {person} AND purpose IN ('newsletter', 'marketing');
             UPDATE contacts SET email = 'after.withdrawal@example.org' WHERE id = {person}"
        ))
        .await
        .expect("withdraw");
    assert_eq!(
        outcome_in(&marketing, &probe).await,
        "0",
        "the next statement in the same transaction no longer sees the person"
    );
    marketing.batch_execute("ROLLBACK").await.expect("rollback");
    // Nor does the snapshot taken before: importing it is refused.
    let imported = outcome(
        &marketing,
        &format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'; {probe}"
        ),
    )
    .await;
    assert!(imported.starts_with("error 42501"), "{imported}");
    let _ = exporter.batch_execute("ROLLBACK").await;
    // The same for a retention period that ends while a transaction is open: the rules read
    // the statement's clock.
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    let aging = first_id(
        &direct,
        &format!(
            "{} ORDER BY c.id LIMIT 1",
            common::rows::visible_ids("sales")
        ),
    )
    .await;
    let probe = format!("SELECT count(*) FROM contacts WHERE id = {aging}");
    sales.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(outcome_in(&sales, &probe).await, "1");
    direct
        .batch_execute(&format!(
            "UPDATE contacts SET last_activity_at = clock_timestamp() - interval '10 years' + interval '1 second' WHERE id = {aging}"
        ))
        .await
        .expect("age");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(outcome_in(&sales, &probe).await, "0", "past retention now");
    sales.batch_execute("ROLLBACK").await.expect("rollback");
}

/// The first column of the first row, inside an open transaction (not rolled back).
async fn outcome_in(c: &Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(msgs) => msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default(),
        Err(e) => format!("error {}", common::message(&e)),
    }
}

/// Unique indexes over an expression and with a predicate, made by the database owner.
const INDEXES: &str = "
CREATE UNIQUE INDEX contacts_email_lower ON contacts (lower(email));
CREATE UNIQUE INDEX contacts_phone_norway ON contacts (phone) WHERE country = 'NO';
";

#[tokio::test]
async fn unique_indexes_over_expressions_and_predicates_do_not_tell_hidden_values() {
    let env = Env::start_demo(120).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // A person hidden from both roles (restricted), and two they see, in Sweden; the first
    // shares the hidden person's phone number, which only Norwegian numbers must not do.
    let hidden = first_id(
        &direct,
        &format!(
            "SELECT c.id FROM contacts c WHERE NOT ({}) ORDER BY c.id LIMIT 1",
            common::rows::visible("secretary")
        ),
    )
    .await;
    let seen = |n: usize| {
        format!(
            "{} ORDER BY c.id OFFSET {n} LIMIT 1",
            common::rows::visible_ids("sales")
        )
    };
    let (twin, other) = (
        first_id(&direct, &seen(0)).await,
        first_id(&direct, &seen(1)).await,
    );
    direct
        .batch_execute(&format!(
            "UPDATE contacts SET email = 'hidden.person@example.org', phone = '+47 999 99 999', country = 'NO' WHERE id = {hidden};
             UPDATE contacts SET phone = '+47 999 99 999', country = 'SE' WHERE id = {twin};
             UPDATE contacts SET phone = '+00 000', country = 'SE' WHERE id = {other};"
        ))
        .await
        .expect("people");
    // Through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(INDEXES).await.expect("indexes");
    for role in ["secretary", "sales"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        // The catalog reload after the DDL has brought the indexes in once an e-mail
        // address can no longer be set at all.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let set_email = format!(
            "BEGIN; UPDATE contacts SET email = 'x@example.org' WHERE id = {other}; ROLLBACK"
        );
        while !outcome(&c, &set_email).await.starts_with("error 42501")
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let pairs = [
            // The hidden person's address in other letters, and one nobody has.
            (
                format!("BEGIN; UPDATE contacts SET email = 'HIDDEN.PERSON@EXAMPLE.ORG' WHERE id = {other}; ROLLBACK"),
                format!("BEGIN; UPDATE contacts SET email = 'NOBODY.AT.ALL@EXAMPLE.ORG' WHERE id = {other}; ROLLBACK"),
            ),
            (
                "BEGIN; INSERT INTO contacts (first_name, last_name, email) VALUES ('A', 'B', 'HIDDEN.PERSON@EXAMPLE.ORG'); ROLLBACK".to_owned(),
                "BEGIN; INSERT INTO contacts (first_name, last_name, email) VALUES ('A', 'B', 'NOBODY.AT.ALL@EXAMPLE.ORG'); ROLLBACK".to_owned(),
            ),
            // Moving a visible person into the partial index's rows, beside the hidden one.
            (
                format!("BEGIN; UPDATE contacts SET country = 'NO' WHERE id = {twin}; ROLLBACK"),
                format!("BEGIN; UPDATE contacts SET country = 'NO' WHERE id = {other}; ROLLBACK"),
            ),
        ];
        for (probe, control) in &pairs {
            let got = outcome(&c, probe).await;
            let want = outcome(&c, control).await;
            assert_eq!(
                got.replace("HIDDEN.PERSON", "X"),
                want.replace("NOBODY.AT.ALL", "X"),
                "{role}: {probe}"
            );
            assert!(got.starts_with("error 42501"), "{role}: {probe}: {got}");
        }
        // Columns no unique index reads are written as before.
        let city = outcome(
            &c,
            &format!("BEGIN; UPDATE contacts SET city = 'Bergen' WHERE id = {other}; ROLLBACK"),
        )
        .await;
        assert_eq!(city, "done 0; done 1; done 0", "{role}");
    }
}

/// The demo policy with a table of orders that refer to contacts through a foreign key but
/// are not declared as the contacts' rows (no subject key).
fn policy_with_orders() -> String {
    let policy = common::policy_files::demo_policy();
    let at = policy
        .find("    contacts:\n")
        .expect("contacts in the inventory");
    let orders = "    orders:\n      personal: false\n      columns: {id: none, contact_id: none, amount: none}\n";
    format!("{}{orders}{}", &policy[..at], &policy[at..])
}

const ORDERS: &str = "
CREATE TABLE orders (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    contact_id bigint REFERENCES contacts (id),
    amount integer
);
GRANT SELECT, INSERT, UPDATE ON orders TO secretary, sales;
GRANT USAGE ON SEQUENCE orders_id_seq TO secretary, sales;
GRANT DELETE ON companies TO sales;
CREATE VIEW active_companies AS
    SELECT * FROM companies c WHERE EXISTS (SELECT 1 FROM contacts k WHERE k.company_id = c.id);
GRANT SELECT, UPDATE ON active_companies TO sales;
";

#[tokio::test]
async fn foreign_keys_do_not_tell_or_change_rows_the_row_rules_hide() {
    let policy = tempfile::tempdir().expect("tempdir");
    std::fs::write(policy.path().join("crm.yaml"), policy_with_orders()).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(120),
        policy_file: Some(policy.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(ORDERS).await.expect("orders");
    let hidden = first_id(
        &direct,
        &format!(
            "SELECT c.id FROM contacts c WHERE NOT ({}) ORDER BY c.id LIMIT 1",
            common::rows::visible("sales")
        ),
    )
    .await;
    let missing = first_id(&direct, "SELECT max(id) + 1000 FROM contacts").await;
    // A company only the hidden person works for, and one nobody works for.
    direct
        .batch_execute(&format!(
            "INSERT INTO companies (id, name, org_number) VALUES (9001, 'Hidden AS', '900100100'), (9002, 'Empty AS', '900200200');
             UPDATE contacts SET company_id = 9001 WHERE id = {hidden};"
        ))
        .await
        .expect("companies");
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    until_known(&sales, "SELECT 1 FROM orders LIMIT 0").await;
    // The referenced key of a row that hidden rows refer to: changing or deleting it would
    // fail (NO ACTION) or change the hidden rows (SET NULL), telling who works there.
    for probe in [
        "BEGIN; UPDATE companies SET id = id + 100000 WHERE id = {}; ROLLBACK",
        "BEGIN; DELETE FROM companies WHERE id = {}; ROLLBACK",
        // A view whose WHERE reads contacts: PostgreSQL judges the rows an UPDATE through it
        // reaches by all contacts, so its row count would tell who works where.
        "BEGIN; UPDATE active_companies SET name = name WHERE id = {}; ROLLBACK",
    ] {
        let got = outcome(&sales, &probe.replace("{}", "9001")).await;
        let want = outcome(&sales, &probe.replace("{}", "9002")).await;
        assert_eq!(got, want, "sales: {probe}");
        assert!(got.starts_with("error 42501"), "sales: {probe}: {got}");
    }
    let kept: Option<i64> = direct
        .query_one(
            &format!("SELECT company_id FROM contacts WHERE id = {hidden}"),
            &[],
        )
        .await
        .expect("hidden row")
        .get(0);
    assert_eq!(kept, Some(9001), "the hidden row is unchanged");
    // Other columns of the referenced table are written as before.
    let renamed = outcome(
        &sales,
        "BEGIN; UPDATE companies SET name = 'Renamed AS' WHERE id = 9001; ROLLBACK",
    )
    .await;
    assert_eq!(renamed, "done 0; done 1; done 0");
    // A referencing column the inventory does not declare as the subject's: its key check
    // would find the hidden person, and not the missing one.
    for role in ["sales", "secretary"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        until_known(&c, "SELECT 1 FROM orders LIMIT 0").await;
        for probe in [
            "BEGIN; INSERT INTO orders (contact_id, amount) VALUES ({}, 1); ROLLBACK",
            "BEGIN; INSERT INTO orders (amount) VALUES (1); UPDATE orders SET contact_id = {}; ROLLBACK",
        ] {
            let got = outcome(&c, &probe.replace("{}", &hidden.to_string())).await;
            let want = outcome(&c, &probe.replace("{}", &missing.to_string())).await;
            assert_eq!(
                got.replace(&hidden.to_string(), "N"),
                want.replace(&missing.to_string(), "N"),
                "{role}: {probe}"
            );
            assert!(got.starts_with("error 42501"), "{role}: {probe}: {got}");
        }
        let plain = outcome(
            &c,
            "BEGIN; INSERT INTO orders (amount) VALUES (7) RETURNING amount; ROLLBACK",
        )
        .await;
        assert!(plain.contains("row Some(\"7\")"), "{role}: {plain}");
    }
}
