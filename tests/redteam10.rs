//! Red-team 10: attacks on statement shapes (whole-number markers) and on the row rules'
//! write guards (the column naming a subject, `activities.contact_id`). Each write attack
//! compares a hidden person with one who does not exist: a role with row rules must not be
//! able to tell them apart, nor write a row that names a person it does not see.

use tokio_postgres::Client;

use crate::common::answers::outcome;
use crate::common::rows::{hidden_and_absent, ids, visible_ids};
use crate::common::Env;

/// What one write tells the client, inside a transaction that is rolled back.
async fn written(c: &Client, sql: &str) -> String {
    c.batch_execute("BEGIN").await.expect("begin");
    // `outcome` rolls back after the statement.
    outcome(c, sql).await
}

/// A person `role` sees.
async fn a_visible_person(direct: &Client, role: &str) -> i64 {
    ids(direct, &format!("{} ORDER BY c.id", visible_ids(role)))
        .await
        .first()
        .copied()
        .expect("someone visible")
}

/// `SET (contact_id) = ...` is an assignment of one column written as a list. The row rules'
/// guard looked for the column among plain assignments only, so the value went to PostgreSQL
/// unchecked: a hidden person's id was written (an activity filed under a restricted person),
/// and an id nobody has failed on the foreign key, which told the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_column_list_assignment_does_not_skip_the_subject_guard() {
    let env = Env::start_demo(120).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut told = Vec::new();
    for role in ["secretary", "sales"] {
        let (hidden, absent) = hidden_and_absent(&direct, role).await;
        let c = env.connect(role, role, "crm").await.expect("login");
        for sql in [
            "UPDATE activities SET (contact_id) = (SELECT {ID}) WHERE id = (SELECT min(id) FROM activities)",
            "UPDATE activities SET (contact_id) = ROW({ID}) WHERE id = (SELECT min(id) FROM activities)",
            "UPDATE activities AS a SET (contact_id) = (SELECT {ID}::bigint) WHERE a.id = (SELECT min(id) FROM activities)",
        ] {
            let h = written(&c, &sql.replace("{ID}", &hidden.to_string())).await;
            let a = written(&c, &sql.replace("{ID}", &absent.to_string())).await;
            if h != a || !h.starts_with("error") {
                told.push(format!("{role}: {sql}\n  hidden: {h}\n  nobody: {a}"));
            }
        }
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}

/// `INSERT ... SELECT *, x` or `SELECT t.*, x`: the wildcard stands for several columns, so
/// the guard, put on the SELECT list's item at the position of `contact_id` in the column
/// list, guarded another column's value, and `contact_id` came from the wildcard unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_in_an_insert_select_does_not_move_the_subject_guard() {
    let env = Env::start_demo(120).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut told = Vec::new();
    for role in ["secretary", "sales"] {
        let (hidden, absent) = hidden_and_absent(&direct, role).await;
        let visible = a_visible_person(&direct, role).await;
        let c = env.connect(role, role, "crm").await.expect("login");
        for sql in [
            "INSERT INTO activities (kind, contact_id, subject, body) SELECT *, {SEEN} FROM (VALUES ('call', {ID}, 'rt10')) AS t(k, c, s)",
            "INSERT INTO activities (kind, contact_id, subject, body) SELECT t.*, {SEEN} FROM (VALUES ('call', {ID}, 'rt10')) AS t(k, c, s)",
            "INSERT INTO activities (kind, contact_id, subject, body) SELECT t.*, {SEEN} FROM (SELECT 'call' AS k, {ID} AS c, 'rt10' AS s) AS t",
            "INSERT INTO activities (kind, contact_id, subject, body) SELECT (t.*), {SEEN} FROM (VALUES ('call', {ID}, 'rt10')) AS t(k, c, s)",
        ] {
            let sql = sql.replace("{SEEN}", &visible.to_string());
            let h = written(&c, &sql.replace("{ID}", &hidden.to_string())).await;
            let a = written(&c, &sql.replace("{ID}", &absent.to_string())).await;
            if h != a || !h.starts_with("error") {
                told.push(format!("{role}: {sql}\n  hidden: {h}\n  nobody: {a}"));
            }
        }
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}

/// The same for a write rule: the secretary reads bank accounts masked, and may put only NULL
/// or DEFAULT into a new row's. `(t.*)` is one expression to sqlparser and, its parentheses
/// dropped by PostgreSQL's parser, `t.*`: three columns. The guard went on the NULL at
/// bank_account's position in the list, and bank_account took t's third column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parenthesised_wildcard_does_not_move_a_write_rule_guard() {
    let env = Env::start_demo(40).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let sql = "INSERT INTO contacts (first_name, last_name, bank_account, notes, city) \
               SELECT (t.*), 'n', NULL FROM (VALUES ('Rt', 'Ten', 'NO93 8601 1117 947')) AS t(a, b, c)";
    let answer = outcome(&c, sql).await;
    let stored = ids(
        &direct,
        "SELECT count(*) FROM contacts WHERE bank_account = 'NO93 8601 1117 947'",
    )
    .await;
    assert!(
        answer.starts_with("error 42501") && stored == [0],
        "{sql}\n  answer: {answer}\n  stored with that bank account: {stored:?}"
    );
}

/// `ORDER BY 2` names an output position. With the audit trail on, a plain SELECT gets the
/// subject key as a hidden trailing column, which is left out where ORDER BY names a position,
/// since the added column would give the position a meaning. Through a statement's shape the
/// number is a marker (`$9500000`), which the check did not see as a number: the key was
/// added, and PostgreSQL sorted by it instead of answering, as it does for the role's own
/// columns, that position 2 is not in the select list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_by_position_in_a_shape_does_not_sort_by_the_hidden_subject_key() {
    let env = Env::start_audited_demo(40).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    let mut told = Vec::new();
    for sql in [
        "SELECT first_name FROM contacts ORDER BY 2 LIMIT 3",
        "SELECT first_name FROM contacts WHERE id > 0 ORDER BY (2) DESC",
        "SELECT a.subject FROM activities a ORDER BY 2 LIMIT 3",
    ] {
        let through = outcome(&c, sql).await;
        let own = outcome(&direct, sql).await;
        if through != own {
            told.push(format!("{sql}\n  pgvakt: {through}\n  PostgreSQL: {own}"));
        }
    }
    assert!(told.is_empty(), "{}", told.join("\n"));
}
