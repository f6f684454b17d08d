//! Attacks on the conditions and pages pgvakt repeats inside a row-ruled stand-in
//! (`row_pushdown`, `row_page`): what they compute must fail nowhere the client's statement
//! over the visible people would not. Each compares a hidden person with one who does not
//! exist, or the answer through pgvakt with the same statement over the visible people.

use crate::common;

use common::rows::{hidden_and_absent, ids};
use common::{Env, EnvOptions};
use tokio_postgres::Client;

async fn demo() -> Env {
    Env::start_with(EnvOptions {
        demo_contacts: Some(400),
        ..Default::default()
    })
    .await
}

/// What a client learns from one simple-protocol statement: its first column, or its error.
async fn simple(c: &Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(m) => m
            .iter()
            .filter_map(|x| match x {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => format!("error {} {}", common::sqlstate(&e), common::message(&e)),
    }
}

/// `$2 + 1` overflows whatever row it meets. Repeated next to the rules' predicate, under a
/// generic plan (which does not fold parameters), it would run on the hidden person that
/// `id = $1` finds, and fail only when that person exists.
#[tokio::test]
async fn a_constant_that_overflows_does_not_tell_a_hidden_person_from_nobody() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    for role in ["secretary", "sales", "marketing"] {
        let (hidden, absent) = hidden_and_absent(&direct, role).await;
        let c = env.connect(role, role, "crm").await.expect("connect");
        let set = simple(&c, "SET plan_cache_mode = force_generic_plan").await;
        assert!(!set.starts_with("error"), "{role}: {set}");
        for (n, (sql, types, edge)) in [
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id > $2 + 1",
                "",
                i64::from(i32::MAX),
            ),
            (
                "SELECT c.id FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = $1 AND a.id > $2 - 1",
                "",
                i64::from(i32::MIN),
            ),
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id = (ARRAY[$2 + 1, 5])[1]",
                "",
                i64::from(i32::MAX),
            ),
            (
                // More than one row: the sub-query fails before any row is read, or never.
                "SELECT id FROM contacts WHERE id = $1 AND email = (SELECT email FROM contacts WHERE id > $2)",
                "",
                0,
            ),
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id <= 1 - $2",
                "",
                i64::from(i32::MIN),
            ),
            (
                // A bigint index is coerced to integer: out of range it fails.
                "SELECT id FROM contacts WHERE id = $1 AND last_name = (ARRAY['Hansen', 'Olsen'])[$2]",
                "(bigint, bigint)",
                i64::MAX,
            ),
            (
                "SELECT id FROM contacts c WHERE c.id = $1 AND c.company_id BETWEEN 0 AND $2 + 1",
                "(bigint, integer)",
                i64::from(i32::MAX),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let prepared = simple(&c, &format!("PREPARE probe{n}{types} AS {sql}")).await;
            assert!(!prepared.starts_with("error"), "{role}: {sql}: {prepared}");
            let run = |id: i64| format!("EXECUTE probe{n}({id}, {edge})");
            let h = simple(&c, &run(hidden)).await;
            let a = simple(&c, &run(absent)).await;
            assert_eq!(h, a, "{role}: {sql} tells person {hidden} from nobody");
        }
    }
}
/// LIMIT and OFFSET that PostgreSQL accepts are accepted through pgvakt: a page repeated in
/// the stand-in counts LIMIT + OFFSET rows, which must not overflow where the client's
/// clauses do not.
#[tokio::test]
async fn a_page_with_the_largest_limit_and_an_offset_answers_as_postgresql_does() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let visible = ids(&direct, &common::rows::visible_ids("sales")).await;
    let c = env.connect("sales", "sales", "crm").await.expect("connect");
    for (sql, limit, offset) in [
        (
            "SELECT id FROM contacts WHERE id > $1 ORDER BY id LIMIT $2 OFFSET $3",
            i64::MAX,
            1i64,
        ),
        (
            "SELECT id FROM contacts WHERE id > $1 ORDER BY id LIMIT $2 OFFSET $3",
            5,
            i64::MAX,
        ),
    ] {
        let got = c
            .query(sql, &[&0i64, &limit, &offset])
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
            .map_err(|e| common::message(&e));
        let want: Vec<i64> = visible
            .iter()
            .copied()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        assert_eq!(got, Ok(want), "{sql} LIMIT {limit} OFFSET {offset}");
    }
    // A page with an offset is still read inside the stand-in: a Limit under the outer one.
    let plan = simple(
        &c,
        "EXPLAIN (COSTS OFF) SELECT id FROM contacts WHERE id > 0 ORDER BY id LIMIT 5 OFFSET 2",
    )
    .await;
    assert!(plan.matches("Limit").count() >= 2, "{plan}");
}
