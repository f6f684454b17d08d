//! CRM reporting lives on views: a view over protected tables is read by restricted roles "as
//! if the tables held masked values" (its query inlined over masked stand-ins), for every role,
//! with no protected value in any byte returned.

use crate::common;

use common::leaks::{run_case, run_extended, Expect, Secrets};
use common::{Env, EnvOptions};
use Expect::*;

const VIEWS: &str = "
CREATE VIEW contact_overview AS
  SELECT c.id, c.first_name, c.last_name, c.bank_account, c.date_of_birth, co.name AS company
  FROM contacts c JOIN companies co ON co.id = c.company_id;
CREATE VIEW company_report AS
  SELECT company, count(*) AS contacts, max(date_of_birth) AS youngest
  FROM contact_overview GROUP BY company;
CREATE VIEW barrier_view WITH (security_barrier) AS SELECT id, bank_account FROM contacts;
GRANT SELECT ON contact_overview, company_report, barrier_view TO PUBLIC;
";

const CASES: &[(&str, Expect)] = &[
    (
        "SELECT id, first_name, company FROM contact_overview ORDER BY id",
        Runs,
    ),
    (
        "SELECT company, contacts FROM company_report ORDER BY company",
        Runs,
    ),
    (
        "SELECT count(*) FROM contact_overview WHERE company IS NOT NULL",
        Runs,
    ),
    ("SELECT * FROM contact_overview", NoLeak),
    ("SELECT bank_account FROM contact_overview", NoLeak),
    ("SELECT v FROM contact_overview v", NoLeak),
    ("SELECT row_to_json(v) FROM contact_overview v", NoLeak),
    ("SELECT * FROM company_report", NoLeak),
    (
        "SELECT id FROM contact_overview WHERE bank_account LIKE '1%'",
        NoLeak,
    ),
    ("SELECT * FROM barrier_view", Refused),
];

#[tokio::test]
async fn views_over_protected_tables_show_masked_values_to_every_role() {
    let env = Env::start_audited_demo(100).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    for stmt in VIEWS.split(';').filter(|s| !s.trim().is_empty()) {
        admin.simple_query(stmt).await.expect("view");
    }
    let secrets = Secrets::load(&direct).await;
    let mut failures = Vec::new();
    for role in ["secretary", "sales", "marketing"] {
        // The view has the rows of the people the role sees (its row rules).
        let want: i64 = direct
            .query_one(
                &format!(
                    "SELECT count(*) FROM contact_overview WHERE id IN ({})",
                    common::rows::visible_ids(role)
                ),
                &[],
            )
            .await
            .expect("count")
            .get(0);
        let c = env.connect(role, role, "crm").await.expect("connect");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let got: i64 = loop {
            match c
                .query_one("SELECT count(*) FROM contact_overview", &[])
                .await
            {
                Ok(r) => break r.get(0),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => panic!("{role}: {}", common::message(&e)),
            }
        };
        assert_eq!(got, want, "{role}: the view has its rows");
        // Each view's creation reloads pgvakt's catalog on its own: wait for the last one.
        loop {
            match c.simple_query("SELECT 1 FROM barrier_view LIMIT 0").await {
                Err(e)
                    if common::message(&e).contains("not in pgvakt's catalog")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                _ => break,
            }
        }
        for (sql, expect) in CASES {
            if let Err(f) = run_case(&c, &secrets, role, sql, *expect).await {
                failures.push(f);
            }
        }
        failures.extend(run_extended(&env, &secrets, role, CASES).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The view reads the tables it was defined over, whatever the session's search_path finds
    // first under the same names.
    admin
        .simple_query("CREATE SCHEMA s1")
        .await
        .expect("schema");
    admin
        .simple_query("CREATE TABLE s1.contacts (LIKE public.contacts)")
        .await
        .expect("shadow table");
    admin
        .simple_query("GRANT USAGE ON SCHEMA s1 TO PUBLIC")
        .await
        .expect("grant");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("connect");
    c.simple_query("SET search_path = s1, public")
        .await
        .expect("set");
    let got: i64 = c
        .query_one("SELECT count(*) FROM contact_overview", &[])
        .await
        .expect("view through a shadowing search_path")
        .get(0);
    let want: i64 = direct
        .query_one(
            &format!(
                "SELECT count(*) FROM contact_overview WHERE id IN ({})",
                common::rows::visible_ids("secretary")
            ),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(got, want, "the view read another schema's contacts");
}

const WRITE_VIEWS: &str = "
CREATE VIEW contact_edit AS
  SELECT id, first_name, last_name, city, bank_account, date_of_birth FROM contacts;
CREATE VIEW contact_edit_renamed AS
  SELECT id AS contact, city AS town, bank_account AS account FROM contact_edit;
CREATE VIEW contact_calc AS SELECT id, upper(bank_account) AS account, city FROM contacts;
CREATE VIEW contact_filtered AS SELECT id, city FROM contacts WHERE bank_account LIKE '1%';
CREATE VIEW contact_barrier WITH (security_barrier = on) AS SELECT id, city, bank_account FROM contacts;
CREATE VIEW contact_join AS
  SELECT c.id, c.city, co.name FROM contacts c JOIN companies co ON co.id = c.company_id;
CREATE VIEW contact_trigger AS SELECT id, city FROM contacts;
CREATE FUNCTION contact_trigger_write() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN UPDATE contacts SET bank_account = NEW.city WHERE id = NEW.id; RETURN NEW; END $$;
CREATE TRIGGER contact_trigger_write INSTEAD OF UPDATE ON contact_trigger
  FOR EACH ROW EXECUTE FUNCTION contact_trigger_write();
CREATE MATERIALIZED VIEW contact_mat AS SELECT id, bank_account, date_of_birth FROM contacts;
CREATE VIEW contact_constant AS SELECT 1 AS x;
GRANT ALL ON contact_edit, contact_edit_renamed, contact_calc, contact_filtered, contact_barrier,
  contact_join, contact_trigger, contact_mat, contact_constant, contacts TO PUBLIC;
";

/// The write-through views listed as holding no personal data: a view's own entry must not
/// decide what is written into the table under it.
const WRITE_VIEWS_POLICY: &str = "inventory:\n  tables:\n    contact_edit: {personal: false}\n    contact_edit_renamed: {personal: false}\n    contact_calc: {personal: false}\n    contact_filtered: {personal: false}\n    contact_barrier: {personal: false}\n    contact_join: {personal: false}\n    contact_trigger: {personal: false}\n    contact_constant: {personal: false}\n";

#[tokio::test]
async fn writes_through_views_follow_the_base_tables_rules() {
    let policy = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml"),
        policy.path().join("crm.yaml"),
    )
    .expect("policy");
    std::fs::write(policy.path().join("views.yaml"), WRITE_VIEWS_POLICY).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(40),
        policy_file: Some(policy.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(WRITE_VIEWS).await.expect("views");
    let secrets = Secrets::load(&direct).await;
    let stored = |id: i64| {
        let direct = &direct;
        async move {
            direct
                .query_one(
                    "SELECT city, bank_account FROM contacts WHERE id = $1",
                    &[&id],
                )
                .await
                .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1)))
                .expect("stored row")
        }
    };
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    common::catalog::until_known(&c, "SELECT 1 FROM contact_mat LIMIT 0").await;
    let before = stored(1).await;

    // What the secretary may write on contacts it may write through a view of them.
    c.simple_query("UPDATE contact_edit SET city = 'Lund' WHERE id = 1")
        .await
        .expect("allowed column through a view");
    c.simple_query("UPDATE contact_edit_renamed SET town = 'Ystad' WHERE contact = 2")
        .await
        .expect("allowed column through a view of a view");
    c.simple_query(
        "INSERT INTO contact_edit (first_name, last_name, city, bank_account) VALUES ('Ny', 'Kund', 'Lund', NULL)",
    )
    .await
    .expect("a new row with NULL in the masked column");
    // Writing back the masked value it read leaves the stored value.
    c.simple_query(
        "UPDATE contact_edit SET bank_account = bank_account, city = 'Malmö' WHERE id = 1",
    )
    .await
    .expect("masked value written back");
    let after = stored(1).await;
    assert_eq!(after.0.as_deref(), Some("Malmö"));
    assert_eq!(after.1, before.1, "the stored bank account was overwritten");
    assert_eq!(stored(2).await.0.as_deref(), Some("Ystad"));

    // A filter on a masked column sees masked values: it reaches no row.
    let n = c
        .execute(
            "UPDATE contact_edit SET city = city WHERE bank_account LIKE '1%'",
            &[],
        )
        .await
        .expect("filtered update");
    assert_eq!(n, 0, "the filter read stored bank accounts");

    let cases: &[(&str, Expect)] = &[
        ("UPDATE contact_edit SET bank_account = 'SE00' WHERE id = 3", Refused),
        ("UPDATE contact_edit_renamed SET account = 'SE00' WHERE contact = 3", Refused),
        ("INSERT INTO contact_edit (first_name, last_name, bank_account) VALUES ('a', 'b', 'SE00')", Refused),
        ("UPDATE contact_calc SET city = 'x' WHERE account LIKE '1%'", Refused),
        ("UPDATE contact_filtered SET city = city", Refused),
        ("UPDATE contact_barrier SET bank_account = 'SE00' WHERE id = 3", Refused),
        ("SELECT * FROM contact_barrier", Refused),
        ("UPDATE contact_join SET city = 'x' WHERE id = 3", Refused),
        ("UPDATE contact_trigger SET city = 'SE00' WHERE id = 3", Refused),
        ("UPDATE contact_edit SET city = 'x' WHERE id = 3 RETURNING bank_account", NoLeak),
        ("SELECT * FROM contact_mat", NoLeak),
        ("SELECT bank_account, date_of_birth FROM contact_mat WHERE id = 3", NoLeak),
        ("DELETE FROM contact_edit WHERE bank_account LIKE '1%' RETURNING *", NoLeak),
    ];
    let mut failures = Vec::new();
    for (sql, expect) in cases {
        if let Err(f) = run_case(&c, &secrets, "secretary", sql, *expect).await {
            failures.push(f);
        }
    }
    // Each refusal says why.
    for (sql, why) in [
        (
            "UPDATE contact_edit SET bank_account = 'SE00' WHERE id = 3",
            "bank_account",
        ),
        (
            "UPDATE contact_calc SET city = 'x' WHERE account LIKE '1%'",
            "computes column account",
        ),
        (
            "UPDATE contact_filtered SET city = city",
            "WHERE clause reads protected column",
        ),
        (
            "UPDATE contact_join SET city = 'x' WHERE id = 3",
            "columns of one table",
        ),
        (
            "UPDATE contact_trigger SET city = 'SE00' WHERE id = 3",
            "INSTEAD OF",
        ),
        // A view over no table at all: refused like any other, and the session goes on.
        (
            "INSERT INTO contact_constant VALUES (1)",
            "columns of one table",
        ),
        ("UPDATE contact_constant SET x = 2", "columns of one table"),
    ] {
        match c.simple_query(sql).await {
            Err(e) if common::message(&e).contains(why) => {}
            Err(e) => failures.push(format!(
                "{sql}: refused without saying {why:?}: {}",
                common::message(&e)
            )),
            Ok(_) => failures.push(format!("{sql}: ran")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(stored(3).await.1, {
        let r = direct
            .query_one("SELECT bank_account FROM contacts WHERE id = 3", &[])
            .await
            .expect("row 3");
        r.get::<_, Option<String>>(0)
    });
    let untouched: i64 = direct
        .query_one(
            "SELECT count(*) FROM contacts WHERE bank_account = 'SE00' OR bank_account = 'x'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(untouched, 0, "a refused write reached the table");
}
