//! Result metadata of masked columns: drivers read a column's table and number from
//! RowDescription (`getTableName`, nullability, ORM column mapping). Through pgvakt a masked
//! column must describe itself as PostgreSQL describes the stored column on a direct
//! connection, while the values stay masked and pgvakt's own check of PostgreSQL's origins
//! raises no anomaly.

use crate::common;

use common::Env;

const VIEW: &str = "CREATE VIEW contact_overview AS \
    SELECT c.id, c.first_name, c.bank_account, c.date_of_birth, co.name AS company \
    FROM contacts c JOIN companies co ON co.id = c.company_id";

/// Statements whose result columns are compared, through pgvakt and directly.
const CASES: &[&str] = &[
    "SELECT id, first_name, bank_account, date_of_birth FROM contacts",
    "SELECT * FROM contacts",
    "SELECT c.*, co.name FROM contacts c JOIN companies co ON co.id = c.company_id",
    "SELECT c.bank_account AS account, upper(c.first_name), (c.date_of_birth) FROM contacts c",
    "SELECT x.bank_account, x.id FROM (SELECT id, bank_account FROM contacts) x",
    "WITH x AS (SELECT date_of_birth, email FROM contacts) SELECT * FROM x",
    "SELECT bank_account FROM contacts UNION ALL SELECT bank_account FROM contacts",
    "SELECT * FROM contact_overview",
    "SELECT v.company, v.bank_account FROM contact_overview v",
    "SELECT phone, notes, email FROM contacts",
];

/// (name, type OID, table OID, column number) of each result column.
type Described = Vec<(String, u32, Option<u32>, Option<i16>)>;

async fn describe(c: &tokio_postgres::Client, sql: &str) -> Result<Described, String> {
    let stmt = c.prepare(sql).await.map_err(|e| common::message(&e))?;
    Ok(stmt
        .columns()
        .iter()
        .map(|col| {
            (
                col.name().to_owned(),
                col.type_().oid(),
                col.table_oid(),
                col.column_id(),
            )
        })
        .collect())
}

#[tokio::test]
async fn masked_columns_describe_their_stored_column() {
    let env = Env::start_audited_demo(20).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.simple_query(VIEW).await.expect("view");
    admin
        .simple_query("GRANT SELECT ON contact_overview TO PUBLIC")
        .await
        .expect("grant");
    let contacts_oid: u32 = direct
        .query_one("SELECT 'contacts'::regclass::oid", &[])
        .await
        .expect("oid")
        .get(0);
    let mut failures = Vec::new();
    let mut compared = 0;
    for role in ["secretary", "sales", "marketing"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        // The catalog is reloaded after the view's DDL.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        while describe(&c, "SELECT id FROM contact_overview")
            .await
            .is_err()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        for sql in CASES {
            let want = describe(&direct, sql).await.expect("direct");
            let got = match describe(&c, sql).await {
                Ok(g) => g,
                // Statements naming a column the role may not read at all are refused.
                Err(e) if role == "marketing" && e.contains("blocked") => continue,
                Err(e) => {
                    failures.push(format!("{role}: {sql}: {e}"));
                    continue;
                }
            };
            // A blocked column is not in what the role sees: every other column must be
            // described exactly as the stored one.
            let want: Described = want
                .into_iter()
                .filter(|w| role != "marketing" || got.iter().any(|g| g.0 == w.0))
                .collect();
            if got != want {
                failures.push(format!(
                    "{role}: {sql}\n  through pgvakt {got:?}\n  directly      {want:?}"
                ));
            }
            compared += 1;
        }
        // Values stay masked although the column describes the stored one.
        let row = c
            .query_one(
                "SELECT bank_account FROM contacts WHERE bank_account IS NOT NULL LIMIT 1",
                &[],
            )
            .await;
        if let Ok(row) = row {
            let stmt = c
                .prepare("SELECT bank_account FROM contacts")
                .await
                .expect("prepare");
            assert_eq!(stmt.columns()[0].table_oid(), Some(contacts_oid));
            let v: String = row.get(0);
            let stored: i64 = direct
                .query_one(
                    "SELECT count(*) FROM contacts WHERE bank_account = $1",
                    &[&v],
                )
                .await
                .expect("stored")
                .get(0);
            assert_eq!(stored, 0, "{role} read a stored bank account: {v}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 20, "only {compared} statements compared");
    let anomalies = common::metric(&env.metrics().await, "pgvakt_enforcement_anomalies_total");
    assert_eq!(
        anomalies, 0.0,
        "pgvakt's own origin check took the origins it put in for stored columns"
    );
}
