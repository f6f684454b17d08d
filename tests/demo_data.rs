//! The demo CRM installed into a real PostgreSQL: the schema contract, the data's qualities and
//! what each staff role may do.

use std::collections::HashSet;
use std::time::Duration;

use pgvakt::cluster::{Cluster, ClusterOptions};
use pgvakt::demo::{self, is_valid_norwegian_account};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const CONTACTS: usize = 500;

async fn cluster_with_demo(contacts: usize) -> (Cluster, demo::DemoSummary) {
    let cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .unwrap();
    let summary = demo::install(&cluster.superuser_config("postgres"), contacts)
        .await
        .unwrap();
    (cluster, summary)
}

/// Logs in over TCP with the role's demo password (SCRAM, as for any host connection).
async fn login(cluster: &Cluster, role: &str) -> Client {
    let config: tokio_postgres::Config = cluster.dsn(role, role, "crm").parse().unwrap();
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn schema_matches_the_contract() {
    let (cluster, summary) = cluster_with_demo(CONTACTS).await;
    assert_eq!(summary.rows.contacts, CONTACTS as u64);
    assert_eq!(summary.rows.companies, (CONTACTS / 20) as u64);
    let db = cluster.connect("crm").await.unwrap();

    let expected: &[(&str, &[(&str, &str)])] = &[
        (
            "companies",
            &[
                ("id", "bigint"),
                ("name", "text"),
                ("org_number", "character varying"),
                ("industry", "text"),
                ("city", "text"),
                ("website", "text"),
                ("created_at", "timestamp with time zone"),
            ],
        ),
        (
            "contacts",
            &[
                ("id", "bigint"),
                ("company_id", "bigint"),
                ("first_name", "text"),
                ("last_name", "text"),
                ("email", "text"),
                ("phone", "text"),
                ("street_address", "text"),
                ("postal_code", "text"),
                ("city", "text"),
                ("country", "text"),
                ("date_of_birth", "date"),
                ("bank_account", "text"),
                ("notes", "text"),
                ("created_at", "timestamp with time zone"),
                ("last_activity_at", "timestamp with time zone"),
            ],
        ),
        (
            "activities",
            &[
                ("id", "bigint"),
                ("contact_id", "bigint"),
                ("kind", "text"),
                ("subject", "text"),
                ("body", "text"),
                ("happened_at", "timestamp with time zone"),
            ],
        ),
        (
            "consents",
            &[
                ("id", "bigint"),
                ("contact_id", "bigint"),
                ("purpose", "text"),
                ("legal_basis", "text"),
                ("source", "text"),
                ("granted_at", "timestamp with time zone"),
                ("granted_by", "text"),
                ("withdrawn_at", "timestamp with time zone"),
            ],
        ),
        (
            "restrictions",
            &[
                ("id", "bigint"),
                ("contact_id", "bigint"),
                ("reason", "text"),
                ("requested_at", "timestamp with time zone"),
                ("lifted_at", "timestamp with time zone"),
            ],
        ),
    ];
    let tables: Vec<String> = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "activities",
            "companies",
            "consents",
            "contacts",
            "restrictions"
        ]
    );
    for (table, columns) in expected {
        let actual: Vec<(String, String)> = db
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expected: Vec<(String, String)> = columns
            .iter()
            .map(|(c, t)| (c.to_string(), t.to_string()))
            .collect();
        assert_eq!(actual, expected, "columns of {table}");
        let listed = demo::TABLES.iter().find(|(t, _)| t == table).unwrap().1;
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        assert_eq!(listed, names.as_slice(), "demo::TABLES for {table}");
    }

    let indexes: HashSet<String> = db
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for wanted in [
        "contacts USING btree (last_name, first_name)",
        "contacts USING btree (email)",
        "contacts USING btree (company_id)",
        "activities USING btree (contact_id)",
        "consents USING btree (contact_id)",
        "restrictions USING btree (contact_id)",
    ] {
        assert!(
            indexes.iter().any(|i| i.ends_with(wanted)),
            "missing {wanted}"
        );
    }
    let foreign_keys = db
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(foreign_keys, 4);

    let owners: Vec<String> = db
        .query(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'
             UNION SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'crm'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, ["admin"]);
}

#[tokio::test]
async fn data_is_realistic_and_bank_accounts_are_valid_and_distinct() {
    let (cluster, summary) = cluster_with_demo(CONTACTS).await;
    let db = cluster.connect("crm").await.unwrap();

    let accounts: Vec<String> = db
        .query("SELECT bank_account FROM contacts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(accounts.len(), CONTACTS);
    for account in &accounts {
        assert!(is_valid_norwegian_account(account), "{account}");
        assert_eq!(
            account.len(),
            13,
            "{account} is not formatted 1234.56.78903"
        );
    }
    assert_eq!(accounts.iter().collect::<HashSet<_>>().len(), CONTACTS);

    let row = db
        .query_one(
            "SELECT count(DISTINCT email), count(*) FILTER (WHERE phone !~ '^\\+47 9\\d\\d \\d\\d \\d\\d\\d$'),
                    min(date_of_birth)::text, max(date_of_birth)::text,
                    count(*) FILTER (WHERE country NOT IN ('NO', 'SE', 'DK')),
                    count(*) FILTER (WHERE country = 'NO')
             FROM contacts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), CONTACTS as i64, "emails are unique");
    assert_eq!(row.get::<_, i64>(1), 0, "phones look Norwegian");
    assert!(row.get::<_, String>(2).as_str() >= "1940-01-01");
    assert!(row.get::<_, String>(3).as_str() <= "2005-12-31");
    assert_eq!(row.get::<_, i64>(4), 0);
    assert!(row.get::<_, i64>(5) > CONTACTS as i64 * 3 / 4);

    let activities = summary.rows.activities as f64 / CONTACTS as f64;
    assert!(
        (2.5..3.5).contains(&activities),
        "{activities} activities per contact"
    );
    let kinds = db
        .query_one("SELECT count(DISTINCT kind) FROM activities", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(kinds, 4);
    let consents = db
        .query_one(
            "SELECT count(DISTINCT purpose), count(*) FILTER (WHERE withdrawn_at IS NOT NULL),
                    count(DISTINCT legal_basis)
             FROM consents",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(consents.get::<_, i64>(0), 3);
    assert!(consents.get::<_, i64>(1) > 0, "some consents are withdrawn");
    assert!(consents.get::<_, i64>(2) >= 3);
    // A few people asked for restriction of processing (some lifted again), and a few have
    // been inactive past the demo policy's retention period: the row rules have people to hide.
    let rows = db
        .query_one(
            "SELECT (SELECT count(DISTINCT contact_id) FROM restrictions WHERE lifted_at IS NULL),
                    (SELECT count(*) FROM restrictions WHERE lifted_at IS NOT NULL),
                    (SELECT count(*) FROM contacts WHERE last_activity_at < now() - interval '10 years')",
            &[],
        )
        .await
        .unwrap();
    let (restricted, lifted, expired) = (
        rows.get::<_, i64>(0),
        rows.get::<_, i64>(1),
        rows.get::<_, i64>(2),
    );
    assert!(
        (1..=CONTACTS as i64 / 20).contains(&restricted),
        "{restricted} restricted"
    );
    assert!(lifted >= 1, "no lifted restriction");
    assert!(
        (1..=CONTACTS as i64 / 5).contains(&expired),
        "{expired} past retention"
    );
    assert_eq!(summary.rows.restrictions as i64, restricted + lifted);
    let health_notes = db
        .query_one(
            "SELECT count(*) FROM contacts WHERE notes ~ '(Sykmeldt|diabetes|kreft|Gravid)'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(health_notes > 0, "free text holds health data");
}

#[tokio::test]
async fn staff_roles_log_in_with_scram_and_have_their_privileges() {
    let (cluster, _) = cluster_with_demo(CONTACTS).await;
    let su = cluster.connect("crm").await.unwrap();
    let row = su
        .query_one(
            "SELECT bool_and(rolpassword LIKE 'SCRAM-SHA-256$%'), bool_or(rolsuper)
             FROM pg_authid WHERE rolname IN ('admin', 'secretary', 'sales', 'marketing', 'dpo')",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "passwords are SCRAM verifiers");
    assert!(!row.get::<_, bool>(1), "no demo role is a superuser");
    let staff: Vec<String> = su
        .query(
            "SELECT m.rolname::text FROM pg_auth_members a
             JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
             WHERE g.rolname = 'crm_staff' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(staff, ["marketing", "sales", "secretary"]);

    let secretary = login(&cluster, "secretary").await;
    let who = secretary
        .query_one("SELECT current_user::text, count(*) FROM contacts", &[])
        .await
        .unwrap();
    assert_eq!(who.get::<_, String>(0), "secretary");
    assert_eq!(who.get::<_, i64>(1), CONTACTS as i64);
    secretary
        .execute(
            "INSERT INTO contacts (first_name, last_name) VALUES ('Ny', 'Kunde')",
            &[],
        )
        .await
        .unwrap();
    let denied = secretary
        .execute("DELETE FROM contacts WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    let marketing = login(&cluster, "marketing").await;
    marketing
        .query_one("SELECT count(*) FROM consents", &[])
        .await
        .unwrap();
    let denied = marketing
        .execute(
            "INSERT INTO contacts (first_name, last_name) VALUES ('Spam', 'Mottaker')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    let sales = login(&cluster, "sales").await;
    sales
        .execute(
            "INSERT INTO companies (name, org_number) VALUES ('Ny Kunde AS', '999999999')",
            &[],
        )
        .await
        .unwrap();

    // Erasure: the DPO's DELETE cascades to the contact's activities and consents.
    let dpo = login(&cluster, "dpo").await;
    assert_eq!(
        dpo.execute("DELETE FROM contacts WHERE id = 2", &[])
            .await
            .unwrap(),
        1
    );
    let left = su
        .query_one(
            "SELECT (SELECT count(*) FROM activities WHERE contact_id = 2)
                  + (SELECT count(*) FROM consents WHERE contact_id = 2)",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0);

    let wrong: tokio_postgres::Config = cluster.dsn("sales", "wrong", "crm").parse().unwrap();
    assert!(wrong.connect(NoTls).await.is_err());
}

async fn fingerprint(cluster: &Cluster) -> Vec<String> {
    let db = cluster.connect("crm").await.unwrap();
    let mut prints = Vec::new();
    for table in ["companies", "contacts", "activities", "consents"] {
        let sql = format!("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t");
        prints.push(db.query_one(&sql, &[]).await.unwrap().get(0));
    }
    prints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_gives_identical_data_in_another_cluster() {
    let (first, _) = cluster_with_demo(CONTACTS).await;
    let (second, _) = cluster_with_demo(CONTACTS).await;
    assert_eq!(fingerprint(&first).await, fingerprint(&second).await);

    // Reinstalling into the same cluster replaces the database and gives the same data again.
    let before = fingerprint(&first).await;
    demo::install(&first.superuser_config("postgres"), CONTACTS)
        .await
        .unwrap();
    assert_eq!(fingerprint(&first).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_size_installs_quickly() {
    let (_cluster, summary) = cluster_with_demo(demo::DEFAULT_CONTACTS).await;
    println!("installed {:?} in {:?}", summary.rows, summary.elapsed);
    assert_eq!(summary.rows.contacts, 10_000);
    assert!(
        summary.elapsed < Duration::from_secs(10),
        "{:?}",
        summary.elapsed
    );
}

/// Benchmark-sized data set; run with `cargo test --release --test demo_data -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads a million contacts (about a minute)"]
async fn a_million_contacts_stream_in() {
    let opts = ClusterOptions {
        settings: vec![
            ("shared_buffers".into(), "256MB".into()),
            ("max_wal_size".into(), "4GB".into()),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_async(opts).await.unwrap();
    let summary = demo::install(&cluster.superuser_config("postgres"), 1_000_000)
        .await
        .unwrap();
    println!("installed {:?} in {:?}", summary.rows, summary.elapsed);
    assert_eq!(summary.rows.contacts, 1_000_000);
}
