//! Red-team attacks on the row-rule pushdown (conditions, pages), on prepared statements,
//! portals and cursors after a change of policy, role or groups. Each test asserts what a
//! user relies on; one that fails is a leak or a wrong answer.

use std::path::{Path, PathBuf};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::policy_files::{demo_policy_copy, DemoPolicyCopy};
use crate::common::rows::hidden_and_absent;
use crate::common::{self, Env, EnvOptions};

/// Rows of a simple-protocol statement as text, or its error.
async fn rows(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    text_rows(c.simple_query(sql).await)
}

fn text_rows(
    r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>,
) -> Result<Vec<Vec<Option<String>>>, String> {
    match r {
        Ok(m) => Ok(common::answers::text_rows(&m)),
        Err(e) => Err(format!(
            "error {} {}",
            common::sqlstate(&e),
            common::message(&e)
        )),
    }
}

/// The tables as `marketing` may see them: only visible people, only the columns it reads
/// as stored. A statement run after this prefix directly answers "as if the tables held only
/// the visible rows".
fn visible_prefix(role: &str) -> String {
    format!(
        "WITH contacts AS MATERIALIZED (SELECT c.id, c.company_id, c.first_name, c.last_name, \
         c.email, c.created_at, c.last_activity_at FROM public.contacts c WHERE {}), \
         activities AS MATERIALIZED (SELECT a.id, a.contact_id, a.kind, a.happened_at \
         FROM public.activities a WHERE a.contact_id IN (SELECT id FROM contacts)) ",
        common::rows::visible(role)
    )
}

/// Statements whose answer through pgvakt must equal the same statement over the visible
/// rows only (row page and condition pushdown: output names, aggregates, windows, joins).
const SAME_AS_VISIBLE: &[&str] = &[
    // An output column named like a table column without an alias (PostgreSQL names a cast
    // after its column): ORDER BY then sorts by the output column, not the stored one, and
    // the stand-in must not sort and cut by the stored one.
    "SELECT id::text FROM contacts ORDER BY id LIMIT 3",
    "SELECT c.id::text FROM contacts c WHERE c.id > 0 ORDER BY id LIMIT 4 OFFSET 1",
    "SELECT CAST(id AS text) FROM contacts WHERE id < 100000 ORDER BY id DESC LIMIT 3",
    "SELECT (id)::text FROM contacts ORDER BY id LIMIT 3",
    "SELECT c.id::text, c.id FROM contacts c ORDER BY c.id LIMIT 3",
    // More than MAX_CONDITIONS (16) conditions: only 16 are repeated inside, so the page
    // must not be (its LIMIT would count rows the 17th drops).
    "SELECT id FROM contacts WHERE id > 0 AND id > 1 AND id > 2 AND id > 3 AND id > 4 AND id > 5 AND id > 6 AND id > 7 AND id > 8 AND id > 9 AND id > 10 AND id > 11 AND id > 12 AND id > 13 AND id > 14 AND id > 15 AND last_name >= 'S' ORDER BY id LIMIT 3",
    "SELECT last_name COLLATE \"C\" FROM contacts ORDER BY last_name LIMIT 5",
    // An aggregate of the outer query inside a sub-query.
    "SELECT (SELECT count(c.id)) FROM contacts c LIMIT 1",
    "SELECT id, count(*) OVER () FROM contacts ORDER BY id LIMIT 2",
    "SELECT DISTINCT ON (company_id) company_id, id FROM contacts ORDER BY company_id, id LIMIT 3",
    "SELECT company_id AS id FROM contacts ORDER BY id LIMIT 3",
    "SELECT id FROM contacts ORDER BY company_id NULLS FIRST, id LIMIT 5",
    "SELECT id FROM contacts WHERE id > 3 ORDER BY id LIMIT '2'",
    "SELECT id, email FROM contacts ORDER BY email LIMIT 3",
    "SELECT id FROM contacts WHERE last_name >= 'M' ORDER BY last_name, id LIMIT 3",
    "SELECT id FROM contacts WHERE id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) ORDER BY id DESC LIMIT 2",
    "SELECT id FROM contacts ORDER BY company_id FETCH FIRST 1 ROWS WITH TIES",
    // Joins.
    "SELECT c.id, a.id FROM contacts c LEFT JOIN activities a ON a.contact_id = c.id AND a.id > 100 WHERE c.id < 60 ORDER BY 1, 2",
    "SELECT co.id, c.id FROM contacts c RIGHT JOIN companies co ON co.id = c.company_id WHERE co.id <= 3 ORDER BY 1, 2",
    "SELECT c.id, a.id FROM contacts c FULL JOIN activities a ON a.contact_id = c.id AND c.id = 7 WHERE c.id < 20 ORDER BY 1, 2",
    "SELECT c.id, a.id FROM activities a RIGHT JOIN contacts c ON a.contact_id = c.id WHERE c.id < 30 ORDER BY 1, 2",
    "SELECT c.id, x.id FROM contacts c, LATERAL (SELECT a.id FROM activities a WHERE a.contact_id = c.id ORDER BY a.id LIMIT 1) x WHERE c.id < 80 ORDER BY 1",
    "SELECT c.id, x.id FROM contacts c LEFT JOIN LATERAL (SELECT a.id FROM activities a WHERE a.contact_id = c.id ORDER BY a.id DESC LIMIT 1) x ON true WHERE c.id < 40 ORDER BY 1",
    "SELECT c.id FROM contacts c JOIN contacts d ON d.id = c.id WHERE d.id BETWEEN 5 AND 40 ORDER BY 1",
    "SELECT c.id, d.id FROM contacts c LEFT JOIN contacts d ON d.id = c.id + 1 WHERE c.id < 30 ORDER BY 1",
    "SELECT c.id FROM contacts c WHERE c.id = (SELECT max(a.contact_id) FROM activities a WHERE a.contact_id < 100)",
    "SELECT a.id FROM activities a JOIN contacts c ON c.id = a.contact_id WHERE c.id < 50 ORDER BY a.id LIMIT 5",
    "SELECT c.id FROM contacts c WHERE EXISTS (SELECT 1 FROM activities a WHERE a.contact_id = c.id AND a.id > 50) ORDER BY c.id LIMIT 4",
    // Set operations, CTEs, windows.
    "(SELECT id FROM contacts WHERE id < 50 ORDER BY id LIMIT 2) UNION ALL (SELECT id FROM contacts WHERE id > 50 ORDER BY id DESC LIMIT 2) ORDER BY 1",
    "SELECT id FROM contacts WHERE id < 40 UNION SELECT contact_id FROM activities WHERE contact_id < 40 ORDER BY 1 LIMIT 6",
    "SELECT id, row_number() OVER (ORDER BY id) FROM contacts WHERE id > 10 ORDER BY id LIMIT 3",
    "SELECT x.id FROM (SELECT id FROM contacts ORDER BY id LIMIT 5) x ORDER BY 1",
    "SELECT count(*) FROM (SELECT id FROM contacts WHERE id > 5 ORDER BY id LIMIT 7 OFFSET 2) x",
];

async fn compare(env: &Env, statements: &[&str]) -> Vec<String> {
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut wrong = Vec::new();
    for role in ["marketing", "sales"] {
        let c = env.connect(role, role, "crm").await.expect("login");
        let prefix = visible_prefix(role);
        for sql in statements {
            let want = rows(&direct, &format!("{prefix}{sql}")).await;
            let got = rows(&c, sql).await;
            if got != want {
                wrong.push(format!(
                    "{role}: {sql}\n  pgvakt: {got:?}\n  want:   {want:?}"
                ));
            }
        }
    }
    wrong
}

/// What marketing gets through pgvakt equals the statement over the visible rows only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_down_pages_and_conditions_answer_as_over_the_visible_rows() {
    let env = Env::start_demo(400).await;
    let wrong = compare(&env, SAME_AS_VISIBLE).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Errors and answers do not tell a hidden person from nobody, under generic and custom
/// plans, with pushed conditions and pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_conditions_do_not_tell_a_hidden_person_from_nobody() {
    let env = Env::start_demo(400).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut told = Vec::new();
    for role in ["marketing", "sales"] {
        let (hidden, absent) = hidden_and_absent(&direct, role).await;
        for mode in ["force_generic_plan", "force_custom_plan"] {
            let c = env.connect(role, role, "crm").await.expect("login");
            rows(&c, &format!("SET plan_cache_mode = {mode}"))
                .await
                .expect("set");
            let probes = [
                "SELECT id FROM contacts WHERE id = {P} AND company_id < 9223372036854775807 + 1",
                "SELECT id FROM contacts WHERE id = {P} AND id > -2147483648 - 1",
                "SELECT id FROM contacts WHERE id = {P} ORDER BY id LIMIT 9223372036854775807 OFFSET 9223372036854775807",
                "SELECT id FROM contacts WHERE id = {P} ORDER BY id LIMIT -1",
                "SELECT id FROM contacts WHERE id = {P} ORDER BY id OFFSET -1 LIMIT 1",
                "SELECT id FROM contacts WHERE id = {P} AND created_at > '294277-01-01'",
                "SELECT id FROM contacts WHERE id = {P} AND created_at > '2020-01-01' - 1",
                "SELECT id FROM contacts WHERE id = {P} AND last_activity_at < '5874897-12-31' - 0",
                "SELECT id FROM contacts WHERE id = {P} AND company_id = (ARRAY[1, 2])[3000000000]",
                "SELECT id FROM contacts WHERE id = {P} AND email > '\u{00e9}'",
                "SELECT c.id FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = {P} AND a.happened_at > '2020-01-01' - 1",
                "SELECT c.id FROM contacts c LEFT JOIN activities a ON a.contact_id = c.id WHERE c.id = {P} AND a.id IN (1, '2', 9999999999)",
            ];
            for (n, probe) in probes.iter().enumerate() {
                // Simple protocol with the id as a literal, and PREPARE/EXECUTE with it as a
                // parameter used once.
                let lit = |id: i64| probe.replace("{P}", &id.to_string());
                let h = rows(&c, &lit(hidden)).await;
                let a = rows(&c, &lit(absent)).await;
                if h != a {
                    told.push(format!("{role} {mode}: {}\n  {h:?}\n  {a:?}", lit(hidden)));
                }
                let prep = rows(
                    &c,
                    &format!("PREPARE rt{n}(int) AS {}", probe.replace("{P}", "$1")),
                )
                .await;
                if prep.is_ok() {
                    let h = rows(&c, &format!("EXECUTE rt{n}({hidden})")).await;
                    let a = rows(&c, &format!("EXECUTE rt{n}({absent})")).await;
                    if h != a {
                        told.push(format!("{role} {mode} PREPARE: {probe}\n  {h:?}\n  {a:?}"));
                    }
                    let _ = rows(&c, &format!("DEALLOCATE rt{n}")).await;
                }
            }
        }
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}

/// The demo policy with one more grant line.
fn policy_with(dir: &Path, name: &str, default_role: &str, extra_grants: &str) -> PathBuf {
    let text = common::policy_files::demo_policy();
    assert!(text.contains("default_role: nobody\n"));
    let mut text = text.replace(
        "default_role: nobody\n",
        &format!("default_role: {default_role}\n"),
    );
    text.push_str(extra_grants);
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write policy");
    path
}

const RESTRICTED_COUNT: &str = "SELECT count(*) FROM contacts c WHERE EXISTS (SELECT 1 FROM restrictions r WHERE r.contact_id = c.id AND (r.lifted_at IS NULL OR r.lifted_at > now()))";

async fn count(c: &Client, sql: &str) -> Result<i64, String> {
    match c.query_one(sql, &[]).await {
        Ok(r) => Ok(r.get(0)),
        Err(e) => Err(common::sqlstate(&e)),
    }
}

/// A user whose role comes from a PostgreSQL group, removed from that group while logged in:
/// a new login gets the default role at once; the open session must not keep the group's
/// role (here dpo, who sees people under restriction of processing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_does_not_keep_the_role_of_a_group_it_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_with(
        dir.path(),
        "groups.yaml",
        "nobody",
        "  - {group: dpo_team, role: dpo}\n",
    );
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(200),
        policy_file: Some(policy),
        ..Default::default()
    })
    .await;
    env.create_user("alice", "alice", false).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute(
            "CREATE ROLE dpo_team; GRANT dpo_team TO alice; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO alice",
        )
        .await
        .expect("group");
    let restricted = count(&direct, RESTRICTED_COUNT).await.expect("count");
    assert!(restricted > 0, "the demo has people under restriction");
    let s = env.connect("alice", "alice", "crm").await.expect("login");
    let prepared = s.prepare(RESTRICTED_COUNT).await.expect("prepare as dpo");
    assert_eq!(count(&s, RESTRICTED_COUNT).await, Ok(restricted), "as dpo");

    direct
        .batch_execute("REVOKE dpo_team FROM alice")
        .await
        .expect("revoke");
    let fresh = env.connect("alice", "alice", "crm").await.expect("login");
    let now = count(&fresh, RESTRICTED_COUNT).await;
    assert_ne!(now, Ok(restricted), "a new login is no longer dpo");
    // The open session follows within the groups' freshness (2 s), as PostgreSQL's own
    // privileges follow at once.
    let mut kept = count(&s, RESTRICTED_COUNT).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kept == Ok(restricted) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        kept = count(&s, RESTRICTED_COUNT).await;
    }
    assert_ne!(
        kept,
        Ok(restricted),
        "the open session still reads people under restriction as dpo after 10 s"
    );
    let executed = s
        .query_one(&prepared, &[])
        .await
        .map(|r| r.get::<_, i64>(0));
    assert!(
        executed.is_err() || executed.as_ref().ok() != Some(&restricted),
        "a statement prepared as dpo: {executed:?}"
    );
}

/// The demo policy with the secretary's e-mail blocked.
fn tightened(original: &str) -> String {
    let line = "      contacts.date_of_birth: {mask: date_year}   # birth year only\n";
    assert_eq!(original.matches(line).count(), 1, "the secretary's columns");
    original.replace(line, &format!("{line}      contacts.email: block\n"))
}

/// The demo (20 people) enforcing a copy of the demo policy that the test rewrites, and every
/// stored e-mail address (what the secretary reads until `tightened` blocks it).
async fn demo_on_a_policy_copy() -> (DemoPolicyCopy, Env, Vec<String>) {
    let policy = demo_policy_copy();
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy.file.clone()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let emails: Vec<String> = direct
        .query("SELECT email FROM contacts WHERE email IS NOT NULL", &[])
        .await
        .expect("emails")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (policy, env, emails)
}

/// After a reload, every way of reading an old scrollable cursor or prepared statement is
/// refused, and nothing a restricted role can send reads it as decided before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_scroll_cursors_and_statements_are_refused_every_way_after_a_reload() {
    let (policy, env, emails) = demo_on_a_policy_copy().await;
    let a = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    a.batch_execute(
        "BEGIN; DECLARE sc SCROLL CURSOR WITH HOLD FOR SELECT email FROM contacts ORDER BY id; COMMIT; \
         PREPARE pe AS SELECT email FROM contacts ORDER BY id",
    )
    .await
    .expect("define");
    let parsed_fetch = a
        .prepare("FETCH ABSOLUTE 2 FROM sc")
        .await
        .expect("prepare");
    std::fs::write(&policy.file, tightened(&policy.original)).expect("policy");
    let version = env.server().proxy.enforcer.reload_policy();
    assert!(matches!(version, Some(Ok(_))), "{version:?}");

    let mut leaked = Vec::new();
    for sql in [
        "FETCH ABSOLUTE 3 FROM sc",
        "FETCH BACKWARD 2 FROM sc",
        "FETCH PRIOR FROM sc",
        "FETCH RELATIVE 1 IN sc",
        "FETCH LAST FROM sc",
        "FETCH FIRST sc",
        "FETCH ALL sc",
        "MOVE ABSOLUTE 0 IN sc; FETCH 2 FROM sc",
        "FETCH sc",
        "fetch forward all from \"sc\"",
        "EXECUTE pe",
        "execute PE",
        "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE pe",
        "BEGIN; EXECUTE pe; COMMIT",
        "SELECT 1; FETCH 1 FROM sc",
    ] {
        let r = rows(&a, sql).await;
        let _ = a.simple_query("ROLLBACK").await;
        if let Ok(rs) = &r {
            for row in rs {
                for v in row.iter().flatten() {
                    if emails.iter().any(|e| v.contains(e.as_str())) {
                        leaked.push(format!("{sql}: {v}"));
                    }
                }
            }
        }
    }
    let r = a.query(&parsed_fetch, &[]).await;
    if let Ok(rs) = &r {
        for row in rs {
            let v: Option<String> = row.get(0);
            if v.is_some_and(|v| emails.contains(&v)) {
                leaked.push("Execute of a Parse of FETCH ABSOLUTE".to_owned());
            }
        }
    }
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// A protocol portal bound before a reload, read after it by its name with SQL `FETCH` (the
/// name from `pg_cursors`, which restricted roles may read), or read on with Execute after a
/// first part was read before the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_portals_from_before_a_reload_are_not_read_by_name_or_in_parts() {
    let (policy, env, emails) = demo_on_a_policy_copy().await;
    let mut a = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let st = a
        .prepare("SELECT email FROM contacts ORDER BY id")
        .await
        .expect("prepare");
    let tx = a.transaction().await.expect("BEGIN");
    let by_name = tx.bind(&st, &[]).await.expect("bind");
    let in_parts = tx.bind(&st, &[]).await.expect("bind");
    let first = tx.query_portal(&in_parts, 1).await.expect("first part");
    assert_eq!(first.len(), 1);
    let names: Vec<String> = tx
        .simple_query("SELECT name FROM pg_cursors ORDER BY name")
        .await
        .expect("pg_cursors")
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(names.len(), 2, "both portals are listed: {names:?}");

    std::fs::write(&policy.file, tightened(&policy.original)).expect("policy");
    let version = env.server().proxy.enforcer.reload_policy();
    assert!(matches!(version, Some(Ok(_))), "{version:?}");

    let mut leaked = Vec::new();
    for name in &names {
        for sql in [
            format!("FETCH ALL FROM \"{name}\""),
            format!("FETCH NEXT FROM \"{name}\""),
        ] {
            if let Ok(rs) = text_rows(tx.simple_query(&sql).await) {
                for v in rs.iter().flatten().flatten() {
                    if emails.contains(v) {
                        leaked.push(format!("{sql}: {v}"));
                    }
                }
            }
        }
    }
    if let Ok(rs) = tx.query_portal(&in_parts, 5).await {
        for r in rs {
            if r.get::<_, Option<String>>(0)
                .is_some_and(|v| emails.contains(&v))
            {
                leaked.push("Execute of a portal read in part before the reload".to_owned());
            }
        }
    }
    if let Ok(rs) = tx.query_portal(&by_name, 5).await {
        if !rs.is_empty() {
            leaked.push("Execute of a portal bound before the reload".to_owned());
        }
    }
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// Writes that name a person by a parameter under a generic plan: a hidden person and nobody
/// fail alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_guards_under_a_generic_plan_do_not_tell_a_hidden_person_from_nobody() {
    let env = Env::start_demo(200).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut told = Vec::new();
    for role in ["secretary", "sales"] {
        let (hidden, absent) = hidden_and_absent(&direct, role).await;
        let c = env.connect(role, role, "crm").await.expect("login");
        rows(&c, "SET plan_cache_mode = force_generic_plan")
            .await
            .expect("set");
        for (n, sql) in [
            "INSERT INTO activities (contact_id, kind, subject, happened_at) VALUES ($1, 'call', 'x', now())",
            "UPDATE activities SET contact_id = $1 WHERE id = (SELECT min(id) FROM activities)",
            "UPDATE contacts SET city = 'Oslo' WHERE id = $1",
            "DELETE FROM activities WHERE contact_id = $1 AND id < 0",
            "SELECT count(*) FROM activities WHERE contact_id = $1",
        ]
        .iter()
        .enumerate()
        {
            let prep = rows(&c, &format!("PREPARE w{n}(bigint) AS {sql}")).await;
            let run = |id: i64| {
                let c = &c;
                async move {
                    let r = rows(c, &format!("BEGIN; EXECUTE w{n}({id})")).await;
                    let _ = c.simple_query("ROLLBACK").await;
                    r
                }
            };
            if prep.is_ok() {
                let (h, a) = (run(hidden).await, run(absent).await);
                if h != a {
                    told.push(format!("{role}: {sql}\n  {h:?}\n  {a:?}"));
                }
            }
            let lit = |id: i64| format!("BEGIN; {}", sql.replace("$1", &id.to_string()));
            let h = rows(&c, &lit(hidden)).await;
            let _ = c.simple_query("ROLLBACK").await;
            let a = rows(&c, &lit(absent)).await;
            let _ = c.simple_query("ROLLBACK").await;
            if h != a {
                told.push(format!("{role} (literal): {sql}\n  {h:?}\n  {a:?}"));
            }
        }
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}

/// Median times of `a` and `b` over runs that alternate them (so a busy moment slows both),
/// and their first values.
async fn timed_pair(
    c: &Client,
    a: &str,
    b: &str,
) -> ((u128, Option<String>), (u128, Option<String>)) {
    let (mut ta, mut tb, mut fa, mut fb) = (Vec::new(), Vec::new(), None, None);
    for _ in 0..15 {
        for (sql, times, first) in [(a, &mut ta, &mut fa), (b, &mut tb, &mut fb)] {
            let t = std::time::Instant::now();
            let r = rows(c, sql).await.expect("statement");
            times.push(t.elapsed().as_micros());
            *first = r.first().and_then(|row| row[0].clone());
        }
    }
    ta.sort_unstable();
    tb.sort_unstable();
    ((ta[ta.len() / 2], fa), (tb[tb.len() / 2], fb))
}

/// With `row_pushdown: true` a range condition repeated inside the stand-in makes PostgreSQL
/// read, and evaluate the rules' predicate on, every row of the range, hidden ones included,
/// so how long a count of a range takes tells how many hidden people are in it: the policy
/// accepts that channel for speed. Without it (the default), every statement reads every row
/// the rules let through: a range of 5000 people who withdrew their consent and a range of
/// nobody take the same time as marketing (both count 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_row_pushdown_how_long_a_range_takes_does_not_count_hidden_people() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = common::policy_files::demo_policy();
    let opened = "    row_pushdown: true\n";
    assert!(original.contains(opened), "the demo opens row_pushdown");
    let strict = dir.path().join("crm-strict.yaml");
    std::fs::write(&strict, original.replace(opened, "")).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20000),
        policy_file: Some(strict),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute(
            "UPDATE consents SET withdrawn_at = now() - interval '1 day' \
             WHERE contact_id BETWEEN 1 AND 5000; ANALYZE",
        )
        .await
        .expect("withdraw");
    let c = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("login");
    let hidden = "SELECT count(*) FROM contacts WHERE id BETWEEN 1 AND 5000";
    let nobody = "SELECT count(*) FROM contacts WHERE id BETWEEN 100001 AND 105000";
    let _ = timed_pair(&c, hidden, nobody).await;
    let ((h, hn), (a, an)) = timed_pair(&c, hidden, nobody).await;
    assert_eq!(hn, an, "both ranges hold nobody marketing sees");
    assert!(
        h < 2 * a.max(1) && a < 2 * h.max(1),
        "5000 hidden people take {h} us, nobody {a} us"
    );
}
