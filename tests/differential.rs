//! The analysis checked against what PostgreSQL itself reports. For each statement,
//! `EXPLAIN (VERBOSE)` of the client's text names every column each scan of a personal table
//! reads (its output and filter); the analysis (what `explain` and the audit records list) must
//! report each of those personal columns, so a record never leaves out data that was read. And
//! through the proxy, PostgreSQL's RowDescription origins must never show a protected column
//! for the role (the anomaly counter stays at zero).

use crate::common;

use std::collections::{BTreeSet, HashSet};

use common::Env;
use pgvakt::catalog::Catalog;
use pgvakt::policy::model::RoleRules;
use serde_json::Value;

const CORPUS: &[&str] = &[
    "SELECT first_name FROM contacts WHERE bank_account LIKE '1%'",
    "SELECT * FROM contacts WHERE id = 3",
    "SELECT c FROM contacts c WHERE c.id = 3",
    "SELECT row_to_json(c) FROM contacts c",
    "SELECT id FROM contacts ORDER BY date_of_birth",
    "SELECT count(*) FROM contacts WHERE email LIKE '%@gmail.com'",
    "SELECT city, count(*) FROM contacts GROUP BY city",
    "SELECT a.subject, c.phone FROM activities a JOIN contacts c ON c.id = a.contact_id",
    "SELECT x.b FROM (SELECT bank_account AS b FROM contacts) x",
    "WITH s AS (SELECT id, notes FROM contacts) SELECT notes FROM s WHERE id < 5",
    "SELECT first_name FROM contacts UNION SELECT subject FROM activities",
    "SELECT l.n FROM companies co, LATERAL (SELECT last_name AS n FROM contacts WHERE company_id = co.id) l",
    "SELECT t.a FROM contacts AS t(a, b, c) WHERE t.c = 'x'",
    "SELECT 1 FROM contacts c JOIN contacts d USING (email)",
    "SELECT * FROM contacts NATURAL JOIN (SELECT 1 AS id) z",
    "SELECT first_value(street_address) OVER (PARTITION BY city ORDER BY id) FROM contacts",
    "SELECT id FROM contacts c WHERE EXISTS (SELECT 1 FROM activities a WHERE a.contact_id = c.id AND a.body LIKE '%x%')",
    "SELECT upper(email) FROM contacts WHERE postal_code = '0150'",
    "SELECT jsonb_agg(c.*) FROM contacts c",
    "SELECT purpose, granted_by FROM consents",
];

/// The aliases scans of `table` go by.
fn aliases(plan: &Value, table: &str, out: &mut HashSet<String>) {
    if plan["Relation Name"] == table {
        out.insert(plan["Alias"].as_str().unwrap_or(table).to_owned());
    }
    for p in plan["Plans"].as_array().into_iter().flatten() {
        aliases(p, table, out);
    }
}

/// Expression texts of the plan that say what is used: outputs and conditions. A scan below
/// another node may output every column of its table (PostgreSQL's "physical target list", a
/// shortcut, not a use), so only the root's own output counts for scans.
fn expressions(plan: &Value, root: bool, out: &mut Vec<String>) {
    let is_scan = plan["Relation Name"].is_string();
    if root || !is_scan {
        for v in plan["Output"].as_array().into_iter().flatten() {
            if let Some(t) = v.as_str() {
                out.push(t.to_owned());
            }
        }
    }
    for k in [
        "Filter",
        "Index Cond",
        "Recheck Cond",
        "Join Filter",
        "Hash Cond",
        "Merge Cond",
        "One-Time Filter",
    ] {
        if let Some(f) = plan[k].as_str() {
            out.push(f.to_owned());
        }
    }
    for k in ["Sort Key", "Group Key"] {
        for v in plan[k].as_array().into_iter().flatten() {
            if let Some(t) = v.as_str() {
                out.push(t.to_owned());
            }
        }
    }
    for p in plan["Plans"].as_array().into_iter().flatten() {
        expressions(p, false, out);
    }
}

/// Whether `text` mentions `alias.column` as a whole reference.
fn mentions(text: &str, alias: &str, column: &str) -> bool {
    let needle = format!("{alias}.{column}");
    text.match_indices(&needle).any(|(i, _)| {
        let before = text[..i].chars().last();
        let after = text[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The personal columns of `table` the plan uses.
fn used(plan: &Value, table: &str, columns: &[String]) -> BTreeSet<String> {
    let mut names = HashSet::new();
    aliases(plan, table, &mut names);
    let mut texts = Vec::new();
    expressions(plan, true, &mut texts);
    let mut out = BTreeSet::new();
    for t in &texts {
        for a in &names {
            let whole = mentions(t, a, "*");
            for c in columns {
                if whole || mentions(t, a, c) {
                    out.insert(c.clone());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn analysis_reports_every_personal_column_postgresql_reads() {
    let env = Env::start_demo(50).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let catalog = Catalog::load(&direct, "crm").await.expect("catalog");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    let set = pgvakt::policy::load(&[policy]).expect("policy");
    let role = set.role("secretary").expect("secretary");
    let path = pgvakt::analysis::default_search_path();
    let mut failures = Vec::new();
    for sql in CORPUS {
        let e = pgvakt::explain::explain(&set, &catalog, &role, "secretary", &path, sql);
        assert!(e.refusal.is_none(), "{sql}: {:?}", e.refusal);
        let reported: HashSet<(String, String)> = e
            .reads
            .iter()
            .map(|c| (c.table.clone(), c.column.clone()))
            .collect();
        let text: String = direct
            .simple_query(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}"))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .expect("a plan");
        let plan: Value = serde_json::from_str(&text).expect("plan json");
        for rel in ["contacts", "activities", "consents"] {
            let Some(r) = catalog.relation("public", rel) else {
                continue;
            };
            let personal: Vec<String> = r
                .columns
                .iter()
                .filter(|c| role.column("public", rel, &c.name).category != "none")
                .map(|c| c.name.clone())
                .collect();
            for c in used(&plan[0]["Plan"], rel, &personal) {
                if !reported.contains(&(rel.to_owned(), c.clone())) {
                    failures.push(format!(
                        "{sql}: PostgreSQL reads {rel}.{c}, the analysis does not report it"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same corpus through the proxy: no protected column origin reaches the client.
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    for sql in CORPUS {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {}", common::message(&err)));
    }
    let anomalies = common::metric(&env.metrics().await, "pgvakt_enforcement_anomalies_total");
    assert_eq!(anomalies, 0.0);
}
