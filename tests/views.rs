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
    let audit = tempfile::tempdir().expect("tempdir").keep();
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(100),
        extra_yaml: common::audit_yaml(&audit),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    for stmt in VIEWS.split(';').filter(|s| !s.trim().is_empty()) {
        admin.simple_query(stmt).await.expect("view");
    }
    let secrets = Secrets::load(&direct).await;
    let want: i64 = direct
        .query_one("SELECT count(*) FROM contact_overview", &[])
        .await
        .expect("count")
        .get(0);
    let mut failures = Vec::new();
    for role in ["secretary", "sales", "marketing"] {
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
    assert_eq!(got, want, "the view read another schema's contacts");
}
