//! Row rules: each demo role reaches exactly the people its purposes, consents, restrictions
//! and retention allow, through every read shape, and nothing it can send tells a hidden
//! person apart from one who does not exist. Expected sets are computed here from the
//! upstream data with plain SQL per rule, independently of pgvakt's predicates.

use std::collections::BTreeSet;

use crate::common;

use common::answers::outcome;
use common::Env;
use tokio_postgres::{Client, SimpleQueryMessage};

type Ids = BTreeSet<i64>;

async fn ids(c: &Client, sql: &str) -> Ids {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// What the demo policy's rules mean, per rule, on the upstream data.
pub(crate) struct Upstream {
    all: Ids,
    consented: Ids,
    restricted: Ids,
    expired: Ids,
}

impl Upstream {
    pub(crate) async fn load(direct: &Client) -> Upstream {
        Upstream {
            all: ids(direct, "SELECT id FROM contacts").await,
            consented: ids(
                direct,
                "SELECT contact_id FROM consents WHERE purpose IN ('newsletter', 'marketing')
                   AND (withdrawn_at IS NULL OR withdrawn_at > now())",
            )
            .await,
            restricted: ids(
                direct,
                "SELECT contact_id FROM restrictions WHERE lifted_at IS NULL OR lifted_at > now()",
            )
            .await,
            expired: ids(
                direct,
                "SELECT id FROM contacts WHERE last_activity_at < now() - interval '10 years'",
            )
            .await,
        }
    }

    pub(crate) fn allowed(&self, role: &str) -> Ids {
        let base: Ids = match role {
            "marketing" => self.consented.clone(),
            _ => self.all.clone(),
        };
        base.into_iter()
            .filter(|id| role == "dpo" || role == "admin" || !self.restricted.contains(id))
            .filter(|id| !matches!(role, "sales" | "marketing") || !self.expired.contains(id))
            .collect()
    }
}

const ROLES: &[&str] = &["admin", "dpo", "secretary", "sales", "marketing"];

/// (read shape returning contact ids, the same question asked of the stored data directly).
const SHAPES: &[(&str, &str)] = &[
    ("SELECT id FROM contacts", "SELECT id FROM contacts"),
    (
        "SELECT DISTINCT contact_id FROM activities",
        "SELECT DISTINCT contact_id FROM activities",
    ),
    (
        "SELECT DISTINCT c.id FROM contacts c JOIN activities a ON a.contact_id = c.id",
        "SELECT DISTINCT contact_id FROM activities",
    ),
    (
        "SELECT a.contact_id FROM activities a LEFT JOIN contacts c ON c.id = a.contact_id GROUP BY a.contact_id",
        "SELECT DISTINCT contact_id FROM activities",
    ),
    (
        "SELECT id FROM contacts WHERE id IN (SELECT contact_id FROM consents)",
        "SELECT DISTINCT contact_id FROM consents",
    ),
    (
        "SELECT id FROM contacts c WHERE EXISTS (SELECT 1 FROM activities a WHERE a.contact_id = c.id)",
        "SELECT DISTINCT contact_id FROM activities",
    ),
    (
        "WITH x AS (SELECT id FROM contacts) SELECT id FROM x",
        "SELECT id FROM contacts",
    ),
    (
        "SELECT x.id FROM (VALUES (1)) v, LATERAL (SELECT id FROM contacts) x",
        "SELECT id FROM contacts",
    ),
    (
        "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) FROM contacts) w",
        "SELECT id FROM contacts",
    ),
    (
        "SELECT DISTINCT contact_id FROM consents",
        "SELECT DISTINCT contact_id FROM consents",
    ),
    ("SELECT id FROM contact_ids", "SELECT id FROM contacts"),
    (
        "SELECT id FROM contacts UNION SELECT contact_id FROM activities",
        "SELECT id FROM contacts",
    ),
    (
        "SELECT (SELECT max(c.id) FROM contacts c WHERE c.id = a.contact_id) FROM activities a",
        "SELECT DISTINCT contact_id FROM activities",
    ),
];

fn simple_ids(messages: &[SimpleQueryMessage]) -> Ids {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .collect()
}

async fn copy_ids(c: &Client, sql: &str) -> Ids {
    use futures_util::StreamExt;
    let stream = c
        .copy_out(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let mut stream = std::pin::pin!(stream);
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.expect("copy data"));
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

pub(crate) async fn demo() -> Env {
    Env::start_demo(400).await
}

#[tokio::test]
async fn every_role_reaches_exactly_the_people_its_rules_allow_through_every_read_shape() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute("CREATE VIEW contact_ids AS SELECT c.id FROM contacts c; GRANT SELECT ON contact_ids TO PUBLIC")
        .await
        .expect("view");
    let up = Upstream::load(&direct).await;
    // The demo data gives every rule someone to hide.
    assert!(!up.restricted.is_empty() && !up.expired.is_empty());
    assert!(up.consented.len() < up.all.len());
    let mut checked = 0;
    for role in ROLES {
        let allowed = up.allowed(role);
        let c = env.connect(role, role, "crm").await.expect("connect");
        for (shape, natural) in SHAPES {
            let want: Ids = ids(&direct, natural)
                .await
                .intersection(&allowed)
                .copied()
                .collect();
            let got = ids(&c, shape).await;
            assert_eq!(got, want, "{role}: {shape}");
            checked += 1;
        }
        // Aggregates count visible people only; a window sees only them too.
        let n: i64 = c
            .query_one("SELECT count(*) FROM contacts", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n as usize, allowed.len(), "{role}: count(*)");
        let w: i64 = c
            .query_one("SELECT count(*) OVER () FROM contacts LIMIT 1", &[])
            .await
            .expect("window")
            .get(0);
        assert_eq!(w as usize, allowed.len(), "{role}: window");
        // The simple protocol, a prepared statement with a parameter, a cursor and COPY.
        let simple = c
            .simple_query("SELECT id FROM contacts")
            .await
            .expect("simple");
        assert_eq!(simple_ids(&simple), allowed, "{role}: simple protocol");
        let all: Vec<i64> = up.all.iter().copied().collect();
        let got: Ids = c
            .query("SELECT id FROM contacts WHERE id = ANY($1)", &[&all])
            .await
            .expect("prepared")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, allowed, "{role}: prepared");
        let fetched = c
            .simple_query(
                "BEGIN; DECLARE cur CURSOR FOR SELECT id FROM contacts; FETCH ALL FROM cur; COMMIT",
            )
            .await
            .expect("cursor");
        assert_eq!(simple_ids(&fetched), allowed, "{role}: cursor");
        if *role == "marketing" {
            // Its statement classes are [read]: COPY is refused whatever it would show.
            let e = c.copy_out("COPY contacts (id) TO STDOUT").await.err();
            assert_eq!(e.as_ref().map(common::sqlstate).as_deref(), Some("42501"));
        } else {
            assert_eq!(
                copy_ids(&c, "COPY contacts (id) TO STDOUT").await,
                allowed,
                "{role}: COPY table"
            );
            assert_eq!(
                copy_ids(&c, "COPY (SELECT id FROM contacts) TO STDOUT").await,
                allowed,
                "{role}: COPY query"
            );
        }
        // RETURNING of an UPDATE reaches only visible rows (rolled back).
        if *role != "marketing" {
            let returned = c
                .simple_query("BEGIN; UPDATE contacts SET country = country RETURNING id; ROLLBACK")
                .await
                .unwrap_or_else(|e| panic!("{role}: update: {e}"));
            assert_eq!(simple_ids(&returned), allowed, "{role}: UPDATE RETURNING");
        }
        checked += 1;
    }
    assert_eq!(checked, ROLES.len() * (SHAPES.len() + 1));
    // The restricted people are visible to the DPO only (and admin), and the DPO's view is
    // the whole table.
    assert_eq!(up.allowed("dpo"), up.all);
}

/// An error text with the id it names replaced (row outcomes are compared as they are).
fn in_errors(outcome: &str, id: i64) -> String {
    if !outcome.starts_with("error") {
        return outcome.to_owned();
    }
    // The id as a number of its own, not as digits of another (SQLSTATE 42501, say).
    let id = id.to_string();
    let mut out = String::new();
    let mut rest = outcome;
    while let Some(at) = rest.find(&id) {
        let before = rest[..at].chars().last();
        let after = rest[at + id.len()..].chars().next();
        let alone = !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..at]);
        out.push_str(if alone { "N" } else { &id });
        rest = &rest[at + id.len()..];
    }
    out.push_str(rest);
    out
}

/// Probes a client might use to learn whether person `{}` exists.
const PROBES: &[&str] = &[
    "SELECT count(*) FROM contacts WHERE id = {}",
    "SELECT EXISTS (SELECT 1 FROM contacts WHERE id = {})",
    "SELECT count(*) FROM activities WHERE contact_id = {}",
    "SELECT count(*) FROM consents WHERE contact_id = {}",
    "SELECT count(*) FROM contacts WHERE 1 / (id - {}) IS NOT NULL",
    "SELECT count(1 / (id - {})) FROM contacts",
    "SELECT count(*) FROM contacts WHERE CAST(CASE WHEN id = {} THEN 'x' ELSE '1' END AS integer) = 1",
    "SELECT count(*) FROM activities a JOIN contacts c ON c.id = a.contact_id WHERE 1 / (c.id - {}) IS NOT NULL",
    "SELECT id FROM contacts ORDER BY id = {} DESC, id LIMIT 0",
    "BEGIN; UPDATE contacts SET country = country WHERE id = {}; ROLLBACK",
    "BEGIN; UPDATE contacts SET country = country WHERE 1 / (id - {}) IS NULL; ROLLBACK",
    "BEGIN; UPDATE contacts SET notes = CAST(CASE WHEN id = {} THEN 'x' ELSE '1' END AS integer)::text WHERE id > 0; ROLLBACK",
    "BEGIN; INSERT INTO contacts (id, first_name, last_name) VALUES ({}, 'A', 'B'); ROLLBACK",
    "BEGIN; INSERT INTO contacts (id, first_name, last_name) VALUES ({}, 'A', 'B') ON CONFLICT DO NOTHING; ROLLBACK",
    "BEGIN; INSERT INTO contacts (first_name, last_name) VALUES ('A', 'B') ON CONFLICT (id) DO UPDATE SET notes = 'x' WHERE contacts.id = {}; ROLLBACK",
    "BEGIN; INSERT INTO activities (contact_id, kind, subject) VALUES ({}, 'call', 'x'); ROLLBACK",
    "BEGIN; UPDATE activities SET contact_id = {} WHERE id = (SELECT min(id) FROM activities); ROLLBACK",
    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT * FROM contacts WHERE id = {}",
    "COPY (SELECT id FROM contacts WHERE id = {}) TO STDOUT",
    // Through views: the rows are the table's, and so are the rules.
    "SELECT count(*) FROM contact_names WHERE id = {}",
    "BEGIN; UPDATE contact_names SET city = city WHERE id = {}; ROLLBACK",
    "BEGIN; UPDATE contact_towns SET town = town WHERE person = {} RETURNING person; ROLLBACK",
    "BEGIN; UPDATE contact_names SET city = city WHERE 1 / (id - {}) IS NULL; ROLLBACK",
    "BEGIN; DELETE FROM contact_names WHERE id = {}; ROLLBACK",
    "BEGIN; UPDATE contact_nokey SET city = city WHERE first_name = '{}'; ROLLBACK",
    "BEGIN; INSERT INTO activity_log (contact_id, kind, subject) VALUES ({}, 'call', 'x'); ROLLBACK",
    "BEGIN; UPDATE activity_log SET contact_id = {} WHERE id = (SELECT min(id) FROM activity_log); ROLLBACK",
];

/// Views written through by the probes: plain, renamed through another view, without the
/// table's key, and over the table whose rows refer to the subject.
const PROBE_VIEWS: &str = "
CREATE VIEW contact_names AS SELECT id, first_name, last_name, city FROM contacts;
CREATE VIEW contact_towns AS SELECT id AS person, city AS town FROM contact_names;
CREATE VIEW contact_nokey AS SELECT first_name, city FROM contacts;
CREATE VIEW activity_log AS SELECT id, contact_id, kind, subject FROM activities;
GRANT ALL ON contact_names, contact_towns, contact_nokey, activity_log TO PUBLIC;
";

#[tokio::test]
async fn a_hidden_person_cannot_be_told_apart_from_one_who_does_not_exist() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let up = Upstream::load(&direct).await;
    let missing = up.all.iter().max().copied().unwrap_or(0) + 1000;
    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin.batch_execute(PROBE_VIEWS).await.expect("views");
    let mut compared = 0;
    for role in ["secretary", "sales", "marketing"] {
        let allowed = up.allowed(role);
        let hidden: Vec<i64> = up.all.difference(&allowed).copied().take(3).collect();
        assert!(!hidden.is_empty(), "{role} hides someone");
        let c = env.connect(role, role, "crm").await.expect("connect");
        common::catalog::until_known(&c, "SELECT 1 FROM activity_log LIMIT 0").await;
        let nokey = outcome(&c, "UPDATE contact_nokey SET city = city WHERE false").await;
        assert!(
            nokey.starts_with("error 42501") && nokey.contains("primary key"),
            "{role} writes through a view without the table's key: {nokey}"
        );
        for probe in PROBES {
            let want = outcome(&c, &probe.replace("{}", &missing.to_string())).await;
            let want = in_errors(&want, missing);
            for h in &hidden {
                let got = outcome(&c, &probe.replace("{}", &h.to_string())).await;
                let got = in_errors(&got, *h);
                assert_eq!(got, want, "{role}, hidden {h}: {probe}");
                compared += 1;
            }
        }
        // And a visible person is found, so the probes are not blind.
        let v = allowed.iter().next().copied().expect("someone visible");
        let found = outcome(&c, &PROBES[0].replace("{}", &v.to_string())).await;
        assert!(found.contains("row Some(\"1\"); done 1"), "{role}: {found}");
        for write in [
            "BEGIN; UPDATE contact_names SET city = city WHERE id = {}; ROLLBACK",
            "BEGIN; UPDATE contact_towns SET town = town WHERE person = {}; ROLLBACK",
        ] {
            let done = outcome(&c, &write.replace("{}", &v.to_string())).await;
            if role == "marketing" {
                // It may not write at all.
                assert!(done.starts_with("error 42501"), "{done}");
                continue;
            }
            assert!(
                done.contains("done 1"),
                "{role} writes a visible person through a view: {done}"
            );
        }
    }
    assert!(compared >= 3 * PROBES.len());
}

#[tokio::test]
async fn a_consent_withdrawn_or_a_restriction_made_upstream_applies_from_the_next_statement() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let up = Upstream::load(&direct).await;
    let person = *up
        .allowed("marketing")
        .iter()
        .next()
        .expect("a consented person");
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    let prepared = marketing
        .prepare("SELECT count(*) FROM contacts WHERE id = $1")
        .await
        .expect("prepare");
    let n: i64 = marketing
        .query_one(&prepared, &[&person])
        .await
        .expect("q")
        .get(0);
    assert_eq!(n, 1, "before withdrawal");
    direct
        .execute(
            "UPDATE consents SET withdrawn_at = now() WHERE contact_id = $1 AND purpose IN ('newsletter', 'marketing')",
            &[&person],
        )
        .await
        .expect("withdraw");
    // The same prepared statement and a new one both stop seeing the person.
    let n: i64 = marketing
        .query_one(&prepared, &[&person])
        .await
        .expect("q")
        .get(0);
    assert_eq!(n, 0, "prepared statement after withdrawal");
    let n: i64 = marketing
        .query_one(
            &format!("SELECT count(*) FROM activities WHERE contact_id = {person}"),
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert_eq!(n, 0, "activities after withdrawal");
    // A restriction recorded upstream hides the person from sales at once; lifting it shows
    // them again.
    let q = format!("SELECT count(*) FROM contacts WHERE id = {person}");
    let before: i64 = sales.query_one(&q, &[]).await.expect("q").get(0);
    direct
        .execute(
            "INSERT INTO restrictions (contact_id, reason) VALUES ($1, 'contests accuracy')",
            &[&person],
        )
        .await
        .expect("restrict");
    let during: i64 = sales.query_one(&q, &[]).await.expect("q").get(0);
    direct
        .execute(
            "UPDATE restrictions SET lifted_at = now() WHERE contact_id = $1",
            &[&person],
        )
        .await
        .expect("lift");
    let after: i64 = sales.query_one(&q, &[]).await.expect("q").get(0);
    // Marketing's people are within retention, so sales sees them unless restricted.
    assert_eq!((before, during, after), (1, 0, 1));
    let dpo = env.connect("dpo", "dpo", "crm").await.expect("dpo");
    let n: i64 = dpo.query_one(&q, &[]).await.expect("q").get(0);
    assert_eq!(n, 1, "the DPO sees everyone");
}

/// A lookup by key of a table with row rules reads one row by its index, not every visible
/// row: the client's `column = constant` conditions on columns read as stored are repeated
/// inside the fenced stand-in with pg_catalog's leakproof equality.
#[tokio::test]
async fn lookups_by_key_use_the_index_and_keep_their_answers() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let up = Upstream::load(&direct).await;
    for role in ["secretary", "sales", "marketing"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        c.batch_execute("SET enable_seqscan = off")
            .await
            .expect("planner setting");
        for sql in [
            "EXPLAIN (COSTS OFF) SELECT first_name FROM contacts WHERE id = 7",
            "EXPLAIN (COSTS OFF) SELECT c.first_name FROM contacts c WHERE 7 = c.id AND c.first_name IS NOT NULL",
        ] {
            let plan: Vec<String> = c
                .simple_query(sql)
                .await
                .expect("explain")
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            assert!(
                plan.iter().any(|l| l.contains("Index") && l.contains("contacts")),
                "{role}: {sql}\n{}",
                plan.join("\n")
            );
        }
        // Literal, repeated literal (the same statement shape twice) and parameter forms
        // answer exactly the visible people.
        let allowed = up.allowed(role);
        let hidden: Vec<i64> = up.all.difference(&allowed).copied().take(5).collect();
        assert!(!hidden.is_empty(), "{role} hides someone");
        for id in up.all.iter().take(20).chain(hidden.iter()) {
            let want = usize::from(allowed.contains(id));
            for sql in [
                format!("SELECT id FROM contacts WHERE id = {id}"),
                format!("SELECT id FROM contacts WHERE id = {id} AND id = {id}"),
            ] {
                let got = c.simple_query(&sql).await.expect("lookup");
                let rows = got
                    .iter()
                    .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                    .count();
                assert_eq!(rows, want, "{role}: {sql}");
            }
            let rows = c
                .query("SELECT id FROM contacts WHERE id = $1", &[id])
                .await
                .expect("prepared lookup");
            assert_eq!(rows.len(), want, "{role}: id {id} as a parameter");
        }
    }
}

/// Drivers that leave parameter types to the server (pgbench, most ORMs over the extended
/// protocol) can log an activity for a person the role sees: the guard on the subject column
/// gives the parameter the column's type.
#[tokio::test]
async fn an_untyped_parameter_names_a_subject_as_the_column_types_it() {
    let env = demo().await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let up = Upstream::load(&direct).await;
    let c = env.connect("sales", "sales", "crm").await.expect("sales");
    let allowed = up.allowed("sales");
    let visible = allowed.iter().next().copied().expect("someone visible");
    let hidden = up
        .all
        .difference(&allowed)
        .next()
        .copied()
        .expect("someone hidden");
    // Parse without parameter types: PostgreSQL infers them from the statement.
    let stmt = c
        .prepare("INSERT INTO activities (contact_id, kind, subject) VALUES ($1, 'call', 'x')")
        .await
        .expect("prepare with an untyped parameter");
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT8]);
    let n = c.execute(&stmt, &[&visible]).await.expect("visible person");
    assert_eq!(n, 1);
    let e = c
        .execute(&stmt, &[&hidden])
        .await
        .expect_err("a hidden person is refused");
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
}
