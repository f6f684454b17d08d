//! Row-ruled reads a CRM makes all day (a contact's activities, a company's contacts, a sorted
//! page of a name search) use PostgreSQL's indexes through the fenced stand-ins, and answer
//! exactly what the same statement answers directly over the visible people.

use std::collections::BTreeSet;

use crate::row_rules::demo;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};

type Ids = BTreeSet<i64>;

/// The people `role` sees, per the demo policy's rules, computed from the stored data.
async fn visible(direct: &Client, role: &str) -> Vec<i64> {
    crate::row_rules::Upstream::load(direct)
        .await
        .allowed(role)
        .into_iter()
        .collect()
}

/// Rows as text, in order, so results of any column types compare.
async fn rows(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<String> {
    let stmt = c
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.query(&stmt, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<_, Option<i64>>(i)
                        .map(|v| format!("{v:?}"))
                        .or_else(|_| r.try_get::<_, Option<String>>(i).map(|v| format!("{v:?}")))
                        .unwrap_or_else(|_| "?".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// (statement through pgvakt, the same statement over the visible people with `$v` the
/// array of their ids, parameters). Orders are total so the rows compare in order.
fn cases() -> Vec<(&'static str, &'static str, Vec<i64>)> {
    vec![
        (
            "SELECT c.first_name, a.id, a.kind FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = $1 ORDER BY a.happened_at DESC, a.id LIMIT 10",
            "SELECT c.first_name, a.id, a.kind FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = $1 AND c.id = ANY($2) ORDER BY a.happened_at DESC, a.id LIMIT 10",
            vec![3],
        ),
        (
            "SELECT a.id, c.last_name FROM activities a LEFT JOIN contacts c ON c.id = a.contact_id WHERE a.contact_id BETWEEN $1 AND $1 + 9 ORDER BY a.id",
            "SELECT a.id, c.last_name FROM activities a LEFT JOIN contacts c ON c.id = a.contact_id WHERE a.contact_id BETWEEN $1 AND $1 + 9 AND a.contact_id = ANY($2) ORDER BY a.id",
            vec![20],
        ),
        (
            "SELECT co.id, count(c.id) AS n, max(c.last_name) FROM companies co LEFT JOIN contacts c ON c.company_id = co.id WHERE co.id BETWEEN $1 AND $1 + 9 GROUP BY co.id ORDER BY co.id",
            "SELECT co.id, count(c.id) AS n, max(c.last_name) FROM companies co LEFT JOIN contacts c ON c.company_id = co.id AND c.id = ANY($2) WHERE co.id BETWEEN $1 AND $1 + 9 GROUP BY co.id ORDER BY co.id",
            vec![1],
        ),
        (
            "SELECT id, first_name FROM contacts WHERE last_name = (SELECT last_name FROM contacts WHERE id = $1) ORDER BY first_name, id LIMIT 5",
            "SELECT id, first_name FROM contacts WHERE last_name = (SELECT last_name FROM contacts WHERE id = $1 AND id = ANY($2)) AND id = ANY($2) ORDER BY first_name, id LIMIT 5",
            vec![5],
        ),
        (
            "SELECT id, first_name FROM contacts WHERE last_name = (ARRAY['Hansen', 'Olsen', 'Berg'])[$1] ORDER BY first_name DESC NULLS LAST, id LIMIT 4 OFFSET $2",
            "SELECT id, first_name FROM contacts WHERE last_name = (ARRAY['Hansen', 'Olsen', 'Berg'])[$1] AND id = ANY($3) ORDER BY first_name DESC NULLS LAST, id LIMIT 4 OFFSET $2",
            vec![1, 2],
        ),
        (
            "SELECT id FROM contacts WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 7",
            "SELECT id FROM contacts WHERE id >= $1 AND id < $2 AND id = ANY($3) ORDER BY id LIMIT 7",
            vec![10, 60],
        ),
        (
            // Parameters computed with a literal, as pgbench numbers `:id` and `:id + 9`.
            "SELECT id FROM contacts WHERE id > $2 - 20 AND id <= $1 + 5 ORDER BY id",
            "SELECT id FROM contacts WHERE id > $2 - 20 AND id <= $1 + 5 AND id = ANY($3) ORDER BY id",
            vec![3, 25],
        ),
        (
            "SELECT id FROM contacts WHERE id IN ($1, $2, 7, 8) ORDER BY id",
            "SELECT id FROM contacts WHERE id IN ($1, $2, 7, 8) AND id = ANY($3) ORDER BY id",
            vec![1, 2],
        ),
        (
            // An output column named like a table column: ORDER BY means the output column.
            "SELECT last_name AS first_name, id FROM contacts WHERE id > $1 ORDER BY first_name, id LIMIT 6",
            "SELECT last_name AS first_name, id FROM contacts WHERE id > $1 AND id = ANY($2) ORDER BY first_name, id LIMIT 6",
            vec![0],
        ),
        (
            // A condition that is not repeated: the page must not be either.
            "SELECT id FROM contacts WHERE id > $1 AND first_name LIKE 'A%' ORDER BY id LIMIT 3",
            "SELECT id FROM contacts WHERE id > $1 AND first_name LIKE 'A%' AND id = ANY($2) ORDER BY id LIMIT 3",
            vec![0],
        ),
        (
            // Aggregates and set-returning functions count rows after the page.
            "SELECT count(*), generate_series(1, 2) FROM contacts WHERE id > $1 LIMIT 3",
            "SELECT count(*), generate_series(1, 2) FROM contacts WHERE id > $1 AND id = ANY($2) LIMIT 3",
            vec![0],
        ),
        (
            "SELECT c.id, a.id FROM contacts c, activities a WHERE a.contact_id = c.id AND a.contact_id = $1 ORDER BY a.id",
            "SELECT c.id, a.id FROM contacts c, activities a WHERE a.contact_id = c.id AND a.contact_id = $1 AND c.id = ANY($2) ORDER BY a.id",
            vec![4],
        ),
    ]
}

#[tokio::test]
async fn pushed_down_reads_answer_what_the_statement_answers_over_the_visible_people() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let all: Vec<i64> = direct
        .query("SELECT id FROM contacts ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for role in ["secretary", "sales", "marketing"] {
        let ids = visible(&direct, role).await;
        let c = env.connect(role, role, "crm").await.expect("connect");
        let hidden: Vec<i64> = all.iter().filter(|i| !ids.contains(i)).copied().collect();
        assert!(!hidden.is_empty(), "{role} hides someone");
        for (through, over, params) in cases() {
            // Start at visible and at hidden people as well as at the given values.
            let starts = [params[0], ids[7], hidden[0], hidden[hidden.len() / 2]];
            for first in starts {
                let mut p: Vec<i64> = params.clone();
                p[0] = first;
                if through.contains("ARRAY['Hansen'") {
                    p[0] = first.rem_euclid(3) + 1;
                }
                // Each value as the type PostgreSQL gives the parameter (integer for an array
                // subscript or `$1 + 5`).
                let types = direct
                    .prepare(over)
                    .await
                    .expect("prepare")
                    .params()
                    .to_vec();
                let narrow: Vec<i32> = p.iter().map(|v| i32::try_from(*v).unwrap_or(0)).collect();
                let with: Vec<&(dyn ToSql + Sync)> = p
                    .iter()
                    .zip(&narrow)
                    .zip(&types)
                    .map(|((wide, narrow), ty)| {
                        if *ty == tokio_postgres::types::Type::INT4 {
                            narrow as &(dyn ToSql + Sync)
                        } else {
                            wide as &(dyn ToSql + Sync)
                        }
                    })
                    .collect();
                let mut want_params = with.clone();
                want_params.push(&ids);
                let got = rows(&c, through, &with).await;
                let want = rows(&direct, over, &want_params).await;
                assert_eq!(got, want, "{role}: {through} with {p:?}");
            }
        }
    }
}

fn plan(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements of the CRM benchmark read a handful of rows, as they do directly.
#[tokio::test]
async fn a_contacts_activities_a_companys_contacts_and_a_name_page_read_few_rows() {
    let env = demo().await;
    for role in ["secretary", "sales", "marketing"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        c.batch_execute("SET enable_seqscan = off")
            .await
            .expect("planner setting");
        for (sql, index) in [
            (
                "SELECT c.first_name, a.kind FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = 3 ORDER BY a.happened_at DESC LIMIT 10",
                "activities_contact_id_idx",
            ),
            (
                "SELECT co.id, count(c.id) FROM companies co LEFT JOIN contacts c ON c.company_id = co.id WHERE co.id BETWEEN 1 AND 1 + 9 GROUP BY co.id",
                "contacts_company_id_idx",
            ),
            (
                "SELECT id, first_name FROM contacts WHERE last_name = (ARRAY['Hansen', 'Olsen'])[1] ORDER BY first_name LIMIT 3",
                "contacts_name_idx",
            ),
            (
                "SELECT id, first_name FROM contacts WHERE email = (SELECT email FROM contacts WHERE id = 5)",
                "contacts_email_idx",
            ),
        ] {
            let explain = format!("EXPLAIN (COSTS OFF) {sql}");
            let text = plan(&c.simple_query(&explain).await.expect("explain"));
            assert!(text.contains(index), "{role}: {sql}\n{text}");
            assert!(!text.contains("Seq Scan"), "{role}: {sql}\n{text}");
            if sql.contains("LIMIT 3") {
                // The page is read inside the stand-in: a Limit under the outer one.
                assert!(text.matches("Limit").count() >= 2, "{role}: {sql}\n{text}");
            }
            eprintln!("{role}: {sql}\n{text}");
        }
        // A new activity's contact is looked up by its key, not found among all visible
        // contacts (which the fence would otherwise read for every row written). Marketing
        // only reads.
        let explain = "EXPLAIN (COSTS OFF) INSERT INTO activities (contact_id, kind, subject, body) VALUES (3, 'call', 'Follow-up', 'x')";
        let text = match c.simple_query(explain).await {
            Ok(rows) => plan(&rows),
            Err(e) if role == "marketing" && crate::common::sqlstate(&e) == "42501" => {
                String::new()
            }
            Err(e) => panic!("{role}: {explain}: {e}"),
        };
        assert!(
            role == "marketing" || text.contains("Index Cond: (id = '3'::bigint)"),
            "{role}: {explain}\n{text}"
        );
        // The same with parameters under a generic plan, as a driver's prepared statements:
        // the constants computed from them are checked once, and the index is still used.
        c.batch_execute(
            "SET plan_cache_mode = force_generic_plan; \
             PREPARE listing AS SELECT co.id, count(c.id) FROM companies co \
             LEFT JOIN contacts c ON c.company_id = co.id WHERE co.id BETWEEN $1 AND $2 + 9 \
             GROUP BY co.id; \
             PREPARE names AS SELECT id, first_name FROM contacts \
             WHERE last_name = (ARRAY['Hansen', 'Olsen'])[$1] ORDER BY first_name LIMIT 3",
        )
        .await
        .expect("prepare");
        for (run, index) in [
            ("EXECUTE listing(1, 1)", "contacts_company_id_idx"),
            ("EXECUTE names(1)", "contacts_name_idx"),
        ] {
            let explain = format!("EXPLAIN (COSTS OFF) {run}");
            let text = plan(&c.simple_query(&explain).await.expect("explain"));
            assert!(text.contains(index), "{role}: {run}\n{text}");
            assert!(text.contains("One-Time Filter"), "{role}: {run}\n{text}");
            assert!(!text.contains("Seq Scan"), "{role}: {run}\n{text}");
        }
    }
}

/// A client's condition that fails on a particular row still never runs on a hidden one, with
/// the conditions it states repeated inside the stand-ins.
#[tokio::test]
async fn repeated_conditions_leave_the_clients_own_to_visible_rows() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let ids = visible(&direct, "marketing").await;
    let all: Ids = direct
        .query("SELECT id FROM contacts", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let hidden = all
        .iter()
        .find(|i| !ids.contains(i))
        .copied()
        .expect("hidden");
    let absent = all.iter().max().copied().unwrap_or(0) + 1000;
    let c = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    let probes = [
        "SELECT c.id FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE a.contact_id = {} AND 1 / (c.id - {}) > 0",
        "SELECT id FROM contacts WHERE id BETWEEN {} AND {} AND 1 / (id - {}) > 0 ORDER BY last_name LIMIT 1",
        "SELECT co.id FROM companies co JOIN contacts c ON c.company_id = co.id WHERE c.id IN ({}, {}) AND 1 / (c.id - {}) > 0",
    ];
    for p in probes {
        let answer = |id: i64| p.replace("{}", &id.to_string());
        let h = c.simple_query(&answer(hidden)).await.map(|m| plan(&m));
        let a = c.simple_query(&answer(absent)).await.map(|m| plan(&m));
        assert!(h.is_ok() && a.is_ok(), "{p}: {h:?} / {a:?}");
        assert_eq!(h.ok(), a.ok(), "{p}");
    }
}

/// A parameter the statement uses more than once keeps the type the client's statement gives
/// it: a copy inside the stand-in, which PostgreSQL reads first, would type it by the column.
#[tokio::test]
async fn parameters_keep_the_types_the_clients_statement_gives_them() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    for sql in [
        "SELECT $1::integer AS page, id FROM contacts WHERE id > $1 ORDER BY id LIMIT 3",
        "SELECT $1::integer AS n, id FROM contacts WHERE id > 0 ORDER BY id LIMIT $1",
        "SELECT d.x, c.id FROM contacts c, (SELECT $1::numeric AS x) d WHERE c.id = $1",
        // Used once: repeated inside, typed alike.
        "SELECT id FROM contacts WHERE id = $1",
        "SELECT id FROM contacts WHERE id <= $1 + 5 AND company_id BETWEEN $2 AND $3 + 9",
        "SELECT id FROM contacts WHERE last_name = (ARRAY['Hansen', 'Olsen'])[$1]",
    ] {
        let want = direct.prepare(sql).await.expect("direct prepare");
        let got = c
            .prepare(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(got.params(), want.params(), "{sql}");
    }
}
