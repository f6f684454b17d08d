//! Attacks on the conditions and pages pgvakt repeats inside a row-ruled stand-in
//! (`row_pushdown`, `row_page`): what they compute must fail nowhere the client's statement
//! over the visible people would not. Each compares a hidden person with one who does not
//! exist, or the answer through pgvakt with the same statement over the visible people.

use crate::common;

use common::{Env, EnvOptions};
use tokio_postgres::Client;

async fn demo() -> Env {
    Env::start_with(EnvOptions {
        demo_contacts: Some(400),
        ..Default::default()
    })
    .await
}

async fn ids(c: &Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A hidden person and an id nobody has, for `role`.
async fn hidden_and_absent(direct: &Client, role: &str) -> (i64, i64) {
    let visible = ids(direct, &common::rows::visible_ids(role)).await;
    let all = ids(direct, "SELECT id FROM contacts ORDER BY id").await;
    let hidden = all
        .iter()
        .copied()
        .find(|i| !visible.contains(i))
        .expect("someone hidden");
    (hidden, all.last().copied().unwrap_or(0) + 1000)
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
        for (n, (sql, edge)) in [
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id > $2 + 1",
                i32::MAX,
            ),
            (
                "SELECT c.id FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = $1 AND a.id > $2 - 1",
                i32::MIN,
            ),
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id = (ARRAY[$2 + 1, 5])[1]",
                i32::MAX,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let prepared = simple(&c, &format!("PREPARE probe{n} AS {sql}")).await;
            assert!(!prepared.starts_with("error"), "{role}: {sql}: {prepared}");
            let run = |id: i64| format!("EXECUTE probe{n}({id}, {edge})");
            let h = simple(&c, &run(hidden)).await;
            let a = simple(&c, &run(absent)).await;
            assert_eq!(h, a, "{role}: {sql} tells person {hidden} from nobody");
        }
    }
}
