//! pgvakt resolves names with the search_path PostgreSQL uses, through transactions: SET LOCAL
//! lasts until the transaction ends, a SET inside a transaction is undone by ROLLBACK and kept
//! by COMMIT, ROLLBACK TO a savepoint restores the path it was made with, RESET restores the
//! default.

use crate::common;

use common::{Env, EnvOptions};

async fn reads_contacts(c: &tokio_postgres::Client) -> bool {
    c.simple_query("SELECT first_name FROM contacts LIMIT 1")
        .await
        .is_ok()
}

#[tokio::test]
async fn search_path_follows_commit_rollback_and_set_local() {
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(10),
        ..Default::default()
    })
    .await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("connect");
    assert!(reads_contacts(&c).await, "the default path finds contacts");

    for script in [
        // SET LOCAL ends with the transaction.
        &["BEGIN", "SET LOCAL search_path = pg_catalog", "COMMIT"][..],
        &["BEGIN", "SET LOCAL search_path = pg_catalog", "ROLLBACK"][..],
        // A SET inside a transaction is undone by ROLLBACK.
        &["BEGIN", "SET search_path = pg_catalog", "ROLLBACK"][..],
        // ... and by a failed transaction's COMMIT.
        &[
            "BEGIN",
            "SET search_path = pg_catalog",
            "SELECT 1/0",
            "COMMIT",
        ][..],
        // One text: the block begins and ends within it.
        &["BEGIN; SET LOCAL search_path = pg_catalog; COMMIT"][..],
    ] {
        for stmt in script {
            let _ = c.simple_query(stmt).await;
        }
        assert!(
            reads_contacts(&c).await,
            "after {script:?} pgvakt must resolve names with the restored search_path"
        );
    }

    // Inside the transaction the new path applies; COMMIT keeps a plain SET.
    c.simple_query("BEGIN").await.expect("begin");
    c.simple_query("SET search_path = pg_catalog")
        .await
        .expect("set");
    assert!(!reads_contacts(&c).await, "pg_catalog has no contacts");
    let _ = c.simple_query("ROLLBACK").await;
    c.simple_query("BEGIN").await.expect("begin");
    c.simple_query("SET search_path = pg_catalog")
        .await
        .expect("set");
    c.simple_query("COMMIT").await.expect("commit");
    assert!(!reads_contacts(&c).await, "a committed SET stays");
    c.simple_query("RESET search_path").await.expect("reset");
    assert!(reads_contacts(&c).await, "RESET restores the default");

    // Savepoints: ROLLBACK TO restores the path the savepoint was made with, RELEASE keeps
    // the current one, and the transaction's end decides as before.
    for (script, inside, after) in [
        (
            &[
                "BEGIN",
                "SAVEPOINT a",
                "SET search_path = pg_catalog",
                "ROLLBACK TO SAVEPOINT a",
            ][..],
            true,
            true,
        ),
        (
            &[
                "BEGIN",
                "SET search_path = pg_catalog",
                "SAVEPOINT a",
                "RESET search_path",
                "ROLLBACK TO a",
            ][..],
            false,
            false,
        ),
        (
            &[
                "BEGIN",
                "SAVEPOINT a",
                "SET search_path = pg_catalog",
                "RELEASE SAVEPOINT a",
            ][..],
            false,
            false,
        ),
        (
            &[
                "BEGIN",
                "SAVEPOINT a",
                "SAVEPOINT b",
                "SET LOCAL search_path = pg_catalog",
                "RELEASE b",
                "ROLLBACK TO a",
            ][..],
            true,
            true,
        ),
    ] {
        // A failed read aborts the transaction, so the path inside is probed in one run and
        // the path after COMMIT in another.
        for stmt in script {
            c.simple_query(stmt).await.expect(stmt);
        }
        assert_eq!(
            reads_contacts(&c).await,
            inside,
            "inside the transaction after {script:?}"
        );
        let _ = c.simple_query("ROLLBACK").await;
        for stmt in script {
            c.simple_query(stmt).await.expect(stmt);
        }
        c.simple_query("COMMIT").await.expect("commit");
        assert_eq!(
            reads_contacts(&c).await,
            after,
            "after {script:?} and COMMIT"
        );
        c.simple_query("RESET search_path").await.expect("reset");
    }
}
