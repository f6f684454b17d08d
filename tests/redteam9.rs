//! Red-team 9: attacks on the conditions pgvakt repeats inside row-ruled stand-ins
//! (`row_pushdown`). Each compares a hidden person with one who does not exist: a role with
//! row rules must not be able to tell them apart by an error or an answer.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::{self, Env, EnvOptions};

/// Rows of a simple-protocol statement as text, or its error.
async fn simple(c: &Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(m) => m
            .iter()
            .filter_map(|x| match x {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => format!("error {} {}", common::sqlstate(&e), common::message(&e)),
    }
}

/// The first column of an extended-protocol statement with declared parameter types, or
/// its error.
async fn typed(c: &Client, sql: &str, types: &[Type], params: &[&(dyn ToSql + Sync)]) -> String {
    let statement = match c.prepare_typed(sql, types).await {
        Ok(s) => s,
        Err(e) => return format!("prepare error {}", common::message(&e)),
    };
    match c.query(&statement, params).await {
        Ok(rows) => rows
            .iter()
            .map(|r| r.get::<_, i64>(0).to_string())
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => format!("error {} {}", common::sqlstate(&e), common::message(&e)),
    }
}

/// A parameter whose type the client declares chooses the comparison PostgreSQL runs: a
/// bigint column compared with an `oid` (or `regclass`, ...) parameter is converted to oid on
/// every row the comparison meets, and the conversion fails for values past 4294967295.
/// Repeated inside the stand-in, next to the rules' predicate, it meets the hidden rows: a
/// hidden person whose company has a large id answered with an error, nobody with no rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_parameter_type_does_not_convert_hidden_rows() {
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(200),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut told = Vec::new();
    for role in ["secretary", "sales", "marketing"] {
        let (hidden, absent) = common::rows::hidden_and_absent(&direct, role).await;
        // A company with a large key (bigint identities pass 2^32 in big systems), and a hidden
        // person working there.
        direct
            .batch_execute(&format!(
                "INSERT INTO companies (id, name, org_number) VALUES (5000000000, 'Big', '999999999') \
                 ON CONFLICT DO NOTHING; \
                 UPDATE contacts SET company_id = 5000000000 WHERE id = {hidden}"
            ))
            .await
            .expect("set up");
        let c = env.connect(role, role, "crm").await.expect("connect");
        let set = simple(&c, "SET plan_cache_mode = force_generic_plan").await;
        assert!(!set.starts_with("error"), "{role}: {set}");
        for (n, (sql, types)) in [
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id >= $2",
                "(bigint, oid)",
            ),
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id = $2",
                "(bigint, regclass)",
            ),
            (
                "SELECT id FROM contacts WHERE id = $1 AND company_id IN ($2, 7)",
                "(bigint, oid)",
            ),
            (
                "SELECT c.id FROM contacts c JOIN companies co ON co.id = c.company_id WHERE c.id = $1 AND co.id < $2",
                "(bigint, oid)",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let prepared = simple(&c, &format!("PREPARE rt9_{n}{types} AS {sql}")).await;
            assert!(!prepared.starts_with("error"), "{role}: {sql}: {prepared}");
            let run = |id: i64| format!("EXECUTE rt9_{n}({id}, 1)");
            let h = simple(&c, &run(hidden)).await;
            let a = simple(&c, &run(absent)).await;
            if h != a {
                told.push(format!("{role} PREPARE{types} {sql}: hidden {h:?}, nobody {a:?}"));
            }
        }
        // The same through the extended protocol, the types in Parse.
        let sql = "SELECT id FROM contacts WHERE id = $1 AND company_id > $2";
        let h = typed(&c, sql, &[Type::INT8, Type::OID], &[&hidden, &1u32]).await;
        let a = typed(&c, sql, &[Type::INT8, Type::OID], &[&absent, &1u32]).await;
        if h != a {
            told.push(format!(
                "{role} Parse(int8, oid) {sql}: hidden {h:?}, nobody {a:?}"
            ));
        }
        direct
            .batch_execute(&format!(
                "UPDATE contacts SET company_id = NULL WHERE id = {hidden}"
            ))
            .await
            .expect("undo");
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}
