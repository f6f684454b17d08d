//! Anonymised copies for development: `pg_dump` through pgvakt as a masking role produces a dump
//! that restores into an empty database and holds exactly what the role reads — no real bank
//! account or birth date anywhere in the file. The catalog reads and settings pg_dump and psql's
//! `\d` commands need work for restricted roles; what they could abuse stays refused.

use std::path::Path;
use std::process::Command;

use crate::common;

use common::{sqlstate, Env, EnvOptions};

/// PostgreSQL 15's pg_dump, as the issue that asked for this names it; else the one on PATH.
fn pg_dump() -> String {
    let v15 = "/usr/lib/postgresql/15/bin/pg_dump";
    if Path::new(v15).exists() {
        v15.to_owned()
    } else {
        "pg_dump".to_owned()
    }
}

fn through_pgvakt(env: &Env, user: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={user} dbname=crm sslmode=verify-full sslrootcert={}",
        env.proxy_port(),
        env.certs.ca_cert.display()
    )
}

/// Run a client binary; (success, stdout, stderr).
async fn run(bin: String, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&bin)
            .env("PGCLIENTENCODING", "UTF8")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {bin}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("client task")
}

/// Every column of `table` as text, ordered by its key, as `client` reads it.
async fn rows_as_text(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[&str],
) -> Vec<Vec<Option<String>>> {
    let list: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!("SELECT {} FROM public.{table} ORDER BY id", list.join(", "));
    client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::message(&e)))
        .iter()
        .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
        .collect()
}

#[tokio::test]
async fn masked_pg_dump_restores_and_holds_only_masked_values() {
    let env = Env::start_demo(150).await;
    // A DBA's copy the inventory does not list: personal by default, so masked in the dump too.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "CREATE TABLE contacts_copy AS SELECT id, first_name, bank_account, date_of_birth FROM contacts;
             GRANT SELECT ON contacts_copy TO secretary, sales",
        )
        .await
        .expect("unlisted copy");
    let direct = env.cluster.connect("crm").await.expect("direct");
    let real_accounts: Vec<String> = direct
        .query(
            "SELECT bank_account FROM contacts WHERE bank_account IS NOT NULL",
            &[],
        )
        .await
        .expect("accounts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    // date_year keeps the year and shows 1 January: a real birthday on 1 January is what the
    // role may see, so only the others are real dates that must not appear.
    let real_births: Vec<String> = direct
        .query(
            "SELECT date_of_birth::text FROM contacts WHERE date_of_birth IS NOT NULL
             AND (extract(month FROM date_of_birth), extract(day FROM date_of_birth)) <> (1, 1)",
            &[],
        )
        .await
        .expect("births")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(real_accounts.len() > 100 && real_births.len() > 100);

    for role in ["secretary", "sales"] {
        let file = env.dir.path().join(format!("{role}.sql"));
        let (ok, _, err) = run(
            pg_dump(),
            vec![
                "--no-owner".into(),
                "--no-privileges".into(),
                "--exclude-schema=pgvakt".into(),
                "-f".into(),
                file.display().to_string(),
                through_pgvakt(&env, role),
            ],
        )
        .await;
        assert!(ok, "pg_dump as {role} through pgvakt: {err}");
        let dump = std::fs::read_to_string(&file).expect("dump file");
        assert!(
            dump.contains("COPY public.contacts ("),
            "{role}: no contacts data"
        );
        for a in &real_accounts {
            assert!(
                !dump.contains(a.as_str()),
                "{role}: bank account {a} in the dump"
            );
        }
        for b in &real_births {
            assert!(
                !dump.contains(b.as_str()),
                "{role}: birth date {b} in the dump"
            );
        }

        // Restored into an empty database, it holds what the role reads through pgvakt.
        let db = format!("copy_{role}");
        direct
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("empty database");
        let restore_dsn = env.cluster.dsn("postgres", "postgres", &db);
        let (ok, _, err) = run(
            "psql".into(),
            vec![
                "-X".into(),
                "-q".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-f".into(),
                file.display().to_string(),
                restore_dsn,
            ],
        )
        .await;
        assert!(ok, "restore of {role}'s dump: {err}");
        let mut cfg = env.cluster.superuser_config(&db);
        cfg.dbname(&db);
        let (copy, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("copy db");
        tokio::spawn(conn);
        let through = env.connect(role, role, "crm").await.expect(role);
        let mut tables: Vec<(&str, &[&str])> = pgvakt::demo::schema::TABLES.to_vec();
        tables.push((
            "contacts_copy",
            &["id", "first_name", "bank_account", "date_of_birth"],
        ));
        for (table, columns) in tables {
            let restored = rows_as_text(&copy, table, columns).await;
            let seen = rows_as_text(&through, table, columns).await;
            assert!(!seen.is_empty(), "{role} reads no {table}");
            for (i, column) in columns.iter().enumerate() {
                let a: Vec<_> = restored.iter().map(|r| &r[i]).collect();
                let b: Vec<_> = seen.iter().map(|r| &r[i]).collect();
                assert_eq!(
                    a, b,
                    "{role}: {table}.{column} restored differs from its reads"
                );
            }
        }
    }
}

#[tokio::test]
async fn dump_tools_work_without_opening_anything_else() {
    let env = Env::start_demo(30).await;
    // psql's \d family as a masking role.
    let mut args = vec!["-X".to_owned(), "-v".into(), "ON_ERROR_STOP=1".into()];
    for c in [
        "\\d",
        "\\dt+",
        "\\d+ contacts",
        "\\di",
        "\\ds",
        "\\dv",
        "\\dn+",
        "\\du",
        "\\l",
        "\\dp",
        "\\dx",
        "\\dT",
        "\\df",
        "\\do",
        "\\dd",
        "\\dconfig",
        "\\des",
        "\\deu",
        "\\dRp",
        "\\dX",
    ] {
        args.push("-c".into());
        args.push(c.into());
    }
    args.push(through_pgvakt(&env, "secretary"));
    let (ok, out, err) = run("psql".into(), args).await;
    assert!(ok, "psql \\d commands as secretary: {err}");
    assert!(
        out.contains("bank_account"),
        "\\d+ contacts lists the columns"
    );

    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    // The settings pg_dump makes are followed: with an empty search_path, names need their
    // schema, and protected tables stay masked.
    secretary
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .expect("empty search_path");
    let e = secretary
        .simple_query("SELECT bank_account FROM contacts")
        .await
        .expect_err("contacts is not on an empty search_path");
    assert!(matches!(sqlstate(&e).as_str(), "42501" | "42P01"), "{e:?}");
    let row = secretary
        .query_one("SELECT bank_account FROM public.contacts WHERE id = 1", &[])
        .await
        .expect("qualified read");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("***"));
    secretary
        .batch_execute("SELECT set_config('search_path', 'public', false)")
        .await
        .expect("search_path back");
    secretary
        .batch_execute(
            "BEGIN; LOCK TABLE public.contacts IN ACCESS SHARE MODE; COMMIT;
             SELECT set_config(name, 'view', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'",
        )
        .await
        .expect("pg_dump's lock and setting");

    // What stays refused: set_config of search_path anywhere but alone, of protected settings
    // through the pg_settings form, other lock modes, statistics, large objects.
    for sql in [
        "SELECT set_config('search_path', 'pg_temp, public', false) FROM public.contacts",
        "SELECT 1, set_config('search_path', 'public', false)",
        "SELECT set_config('search_path', 'x', false) WHERE false",
        "SELECT set_config('search_path', 'public, pg_catalog', false)",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'standard_conforming_strings'",
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name LIKE 'search%'",
        "LOCK TABLE public.contacts",
        "LOCK TABLE public.contacts IN EXCLUSIVE MODE",
        "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'contacts'",
        "SELECT lo_get(1)",
        "COPY (SELECT bank_account FROM public.contacts) TO '/tmp/x'",
    ] {
        let e = secretary.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", common::message(&e));
    }
    // A role that blocks a column gets no dump of its table: refused, not emptied.
    let (ok, out, err) = run(
        pg_dump(),
        vec![
            "--exclude-schema=pgvakt".into(),
            through_pgvakt(&env, "marketing"),
        ],
    )
    .await;
    assert!(!ok && err.contains("pgvakt"), "marketing: {err}");
    assert!(!out.contains("COPY public.contacts"), "no contacts data");
}

/// Every row of `table` (`ONLY` when `only`) as sorted text rows, as `client` reads it: masked
/// columns can repeat, so rows are compared as a sorted list rather than by a key.
async fn sorted_rows(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &str,
    only: bool,
) -> Vec<String> {
    let sql = format!(
        "SELECT concat_ws('|', {columns}) FROM {}public.{table}",
        if only { "ONLY " } else { "" }
    );
    let mut rows: Vec<String> = client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::message(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

/// The demo policy with a partitioned table whose partition key is not personal (a masked key
/// would send every restored row to one partition).
fn policy_with_events(dir: &Path) -> std::path::PathBuf {
    let text = common::policy_files::demo_policy();
    let mut events = String::new();
    for t in ["events", "events_2020", "events_2021"] {
        events.push_str(&format!(
            "    {t}:\n      columns: {{at: none, what: free_text}}\n"
        ));
    }
    let changed = text.replacen("  tables:\n", &format!("  tables:\n{events}"), 1);
    assert_ne!(changed, text, "the demo policy changed; update this test");
    let p = dir.join("crm.yaml");
    std::fs::write(&p, changed).expect("policy");
    p
}

#[tokio::test]
async fn a_dumped_parent_holds_its_own_rows_not_its_childrens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy_with_events(dir.path())),
        ..Default::default()
    })
    .await;
    // A parent with an inheritance child, both unlisted (personal by default, masked for the
    // secretary), and a partitioned table; made through pgvakt, which then re-reads its
    // catalog.
    let direct = env.cluster.connect("crm").await.expect("direct");
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "CREATE TABLE notes (contact_id bigint, body text);
             CREATE TABLE notes_archived (archived_on date) INHERITS (notes);
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g;
             INSERT INTO notes_archived SELECT g, 'old note ' || g, '2020-01-01'
               FROM generate_series(6, 9) g;
             CREATE TABLE events (at date, what text) PARTITION BY RANGE (at);
             CREATE TABLE events_2020 PARTITION OF events FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
             CREATE TABLE events_2021 PARTITION OF events FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
             INSERT INTO events SELECT date '2020-03-01' + g * 40, 'event ' || g FROM generate_series(0, 12) g;
             GRANT SELECT ON notes, notes_archived, events, events_2020, events_2021 TO secretary",
        )
        .await
        .expect("inheritance and partitions");

    let file = env.dir.path().join("hierarchy.sql");
    let (ok, _, err) = run(
        pg_dump(),
        vec![
            "--no-owner".into(),
            "--no-privileges".into(),
            "--exclude-schema=pgvakt".into(),
            "-f".into(),
            file.display().to_string(),
            through_pgvakt(&env, "secretary"),
        ],
    )
    .await;
    assert!(ok, "pg_dump of the hierarchies through pgvakt: {err}");
    let dump = std::fs::read_to_string(&file).expect("dump file");
    assert!(!dump.contains("note 1\t"), "note bodies are masked: {dump}");

    direct
        .batch_execute("CREATE DATABASE copy_hierarchy")
        .await
        .expect("empty database");
    let (ok, _, err) = run(
        "psql".into(),
        vec![
            "-X".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-f".into(),
            file.display().to_string(),
            env.cluster.dsn("postgres", "postgres", "copy_hierarchy"),
        ],
    )
    .await;
    assert!(ok, "restore: {err}");
    let mut cfg = env.cluster.superuser_config("copy_hierarchy");
    cfg.dbname("copy_hierarchy");
    let (copy, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("copy db");
    tokio::spawn(conn);
    let through = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    // Row by row, each table on its own and each hierarchy as a whole: the parent's own rows
    // once, the child's in the child only.
    let (notes, events) = ("contact_id, body", "at, what");
    for (table, columns, only, expected) in [
        ("notes", notes, true, 5),
        ("notes_archived", "contact_id, body, archived_on", false, 4),
        ("notes", notes, false, 9),
        ("events_2020", events, false, 8),
        ("events_2021", events, false, 5),
        ("events", events, false, 13),
    ] {
        let restored = sorted_rows(&copy, table, columns, only).await;
        let seen = sorted_rows(&through, table, columns, only).await;
        assert_eq!(seen.len(), expected, "{table} as the secretary reads it");
        assert_eq!(restored, seen, "{table} (ONLY: {only}) restored");
    }
}
