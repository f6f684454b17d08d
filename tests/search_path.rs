//! pgvakt resolves names with the search_path PostgreSQL uses, through transactions: SET LOCAL
//! lasts until the transaction ends, a SET inside a transaction is undone by ROLLBACK and kept
//! by COMMIT, ROLLBACK TO a savepoint restores the path it was made with, RESET restores the
//! default.

use crate::common;

use common::Env;

async fn reads_contacts(c: &tokio_postgres::Client) -> bool {
    c.simple_query("SELECT first_name FROM contacts LIMIT 1")
        .await
        .is_ok()
}

#[tokio::test]
async fn search_path_follows_commit_rollback_and_set_local() {
    let env = Env::start_demo(10).await;
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

/// Which schema's `probe` table a name resolves to, as PostgreSQL's own search_path says, and
/// as pgvakt resolves it (its forwarded text names the schema, so the row count tells):
/// `public.probe` has one row, `alt.probe` two; None when neither is on the path.
/// None inside a failed block, where PostgreSQL answers nothing but ROLLBACK.
async fn probe(c: &tokio_postgres::Client) -> Option<(Option<&'static str>, Option<&'static str>)> {
    let shown = match c.simple_query("SHOW search_path").await {
        Ok(msgs) => msgs.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        }),
        Err(_) => None,
    }?;
    let postgres = shown
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .find_map(|s| match s {
            "alt" => Some("alt"),
            "public" => Some("public"),
            _ => None,
        });
    let pgvakt = match c.simple_query("SELECT count(*) FROM probe").await {
        Ok(msgs) => msgs.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => match r.get(0) {
                Some("1") => Some("public"),
                Some("2") => Some("alt"),
                _ => None,
            },
            _ => None,
        }),
        Err(_) => None,
    };
    Some((postgres, pgvakt))
}

#[tokio::test]
async fn one_text_with_its_own_block_and_savepoints_leaves_the_path_postgresql_has() {
    let env = Env::start_demo(5).await;
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "CREATE SCHEMA alt; CREATE TABLE public.probe (n int); CREATE TABLE alt.probe (n int);
             INSERT INTO public.probe VALUES (1); INSERT INTO alt.probe VALUES (1), (2);
             GRANT USAGE ON SCHEMA alt TO PUBLIC; GRANT SELECT ON public.probe, alt.probe TO PUBLIC",
        )
        .await
        .expect("probe tables");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while probe(&c).await.is_none_or(|p| p.1.is_none()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let mut failures = Vec::new();
    for script in [
        // The case this test is about: the block, its SET LOCAL and its savepoint in one text.
        &["BEGIN; SET LOCAL search_path = alt, public; SAVEPOINT a; SET LOCAL search_path = public; ROLLBACK TO a; COMMIT"][..],
        &["BEGIN; SET LOCAL search_path = alt, public; SAVEPOINT a; SET LOCAL search_path = public; ROLLBACK TO a"][..],
        &["BEGIN; SAVEPOINT a; SET search_path = alt, public; RELEASE a; COMMIT"][..],
        &["BEGIN; SAVEPOINT a; SET search_path = alt, public; ROLLBACK TO a; COMMIT"][..],
        &["BEGIN; SET search_path = alt, public; SAVEPOINT a; RESET search_path; ROLLBACK TO a; COMMIT"][..],
        &["BEGIN; SET search_path = alt, public; ROLLBACK"][..],
        &["BEGIN; SET search_path = alt, public; COMMIT AND CHAIN; SET LOCAL search_path = public; ROLLBACK"][..],
        &["START TRANSACTION; SET search_path = alt, public; END"][..],
        &["BEGIN; SET search_path = alt, public; ABORT"][..],
        // The block opened in one text and ended in the next.
        &["BEGIN; SET LOCAL search_path = alt, public; SAVEPOINT a", "ROLLBACK TO a", "COMMIT"][..],
        &["BEGIN; SET search_path = alt, public; SAVEPOINT a", "SELECT 1/0", "COMMIT"][..],
        &["BEGIN", "SET search_path = alt, public; SAVEPOINT a; RESET search_path", "ROLLBACK TO a; COMMIT"][..],
        // Outside a block SET LOCAL changes nothing; a plain SET stays.
        &["SET LOCAL search_path = alt, public"][..],
        &["SET search_path = alt, public"][..],
    ] {
        for text in script {
            let _ = c.simple_query(text).await;
            // Checked after each text: inside the block, and after it.
            let Some((postgres, pgvakt)) = probe(&c).await else {
                continue;
            };
            if postgres != pgvakt {
                failures.push(format!(
                    "after {text:?} of {script:?}: PostgreSQL resolves to {postgres:?}, pgvakt to {pgvakt:?}"
                ));
            }
        }
        let _ = c.simple_query("ROLLBACK").await;
        c.simple_query("RESET search_path").await.expect("reset");
        assert_eq!(probe(&c).await, Some((Some("public"), Some("public"))));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
