//! GROUP BY a primary key licenses the table's other columns (PostgreSQL's functional
//! dependency) for restricted roles too, although pgvakt reads the table through a masked
//! stand-in that has no key: results equal PostgreSQL's over the stored table with the role's
//! masks applied, in queries and in views.

use crate::common;

use common::answers::rows_or_error;
use common::Env;

/// (through pgvakt as the secretary, the same directly with the secretary's masks written
/// out: bank account redacted, birth date as its year's first day).
const CASES: &[(&str, &str)] = &[
    (
        "SELECT c.id, c.first_name, c.bank_account, count(a.id) FROM contacts c \
         LEFT JOIN activities a ON a.contact_id = c.id GROUP BY c.id ORDER BY c.id",
        "SELECT c.id, c.first_name, CASE WHEN c.bank_account IS NULL THEN NULL ELSE '***' END, \
         count(a.id) FROM contacts c LEFT JOIN activities a ON a.contact_id = c.id \
         GROUP BY c.id ORDER BY c.id",
    ),
    (
        "SELECT id, last_name, date_of_birth FROM contacts GROUP BY id ORDER BY 3, 1",
        "SELECT id, last_name, date_trunc('year', date_of_birth)::date FROM contacts \
         GROUP BY id ORDER BY 3, 1",
    ),
    (
        "SELECT co.name, c.first_name, count(*) FROM contacts c \
         JOIN companies co ON co.id = c.company_id GROUP BY c.id, co.id \
         HAVING c.bank_account = '***' ORDER BY c.id",
        "SELECT co.name, c.first_name, count(*) FROM contacts c \
         JOIN companies co ON co.id = c.company_id GROUP BY c.id, co.id \
         HAVING c.bank_account IS NOT NULL ORDER BY c.id",
    ),
    (
        "SELECT first_name, n FROM contact_activity ORDER BY id",
        "SELECT first_name, n FROM contact_activity ORDER BY id",
    ),
    (
        "SELECT bank_account, count(*) FROM contact_activity GROUP BY 1",
        "SELECT CASE WHEN bank_account IS NULL THEN NULL ELSE '***' END, count(*) \
         FROM contact_activity GROUP BY 1",
    ),
];

const VIEW: &str = "CREATE VIEW contact_activity AS \
    SELECT c.id, c.first_name, c.bank_account, count(a.id) AS n FROM contacts c \
    LEFT JOIN activities a ON a.contact_id = c.id GROUP BY c.id";

#[tokio::test]
async fn grouping_by_a_primary_key_licenses_the_other_columns() {
    let env = Env::start_demo(60).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // This test compares grouping with the stored rows; row rules (which hide restricted people
    // from secretary) are tests/row_rules.rs's subject: nobody is restricted here.
    direct
        .batch_execute("DELETE FROM restrictions")
        .await
        .expect("no restrictions");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(VIEW).await.expect("view");
    admin
        .batch_execute("GRANT SELECT ON contact_activity TO PUBLIC")
        .await
        .expect("grant");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    common::catalog::until_known(&c, "SELECT id FROM contact_activity").await;
    let mut failures = Vec::new();
    for (through, masked) in CASES {
        let want = rows_or_error(&direct, masked).await.expect(masked);
        assert!(!want.is_empty(), "{masked} returned nothing");
        match rows_or_error(&c, through).await {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{through}: {} rows differ from {} (first {:?} vs {:?})",
                got.len(),
                want.len(),
                got.first(),
                want.first()
            )),
            Err(e) => failures.push(format!("{through}: {e}")),
        }
    }
    // Grouping sets are left to PostgreSQL, which does not use functional dependencies there
    // either: its own grouping error.
    let e = rows_or_error(
        &c,
        "SELECT c.id, c.first_name FROM contacts c GROUP BY ROLLUP (c.id)",
    )
    .await
    .expect_err("grouping sets");
    assert!(e.starts_with("42803"), "{e}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
