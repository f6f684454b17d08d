//! A restricted role cannot read a protected value by any statement it tries; what it may see
//! comes back exactly as PostgreSQL would return the masked table.

use crate::common;

use common::leaks::{self, check_messages, Expect, Secrets};
use common::{sqlstate, Env};
use tokio_postgres::{Client, SimpleQueryMessage};

use Expect::*;

/// Statements a secretary (bank_account masked, date_of_birth year only) might try.
const SECRETARY: &[(&str, Expect)] = &[
    ("SELECT bank_account FROM contacts", Runs),
    ("SELECT * FROM contacts", Runs),
    ("SELECT c.* FROM contacts c", Runs),
    ("SELECT c FROM contacts c", Runs),
    ("SELECT row_to_json(c) FROM contacts c", Runs),
    ("SELECT to_jsonb(c)::text FROM contacts AS c", Runs),
    ("SELECT c::text FROM contacts c", Runs),
    ("SELECT ROW(c.*)::text FROM contacts c", Runs),
    ("SELECT (c).bank_account FROM contacts c", Runs),
    ("SELECT json_agg(c) FROM contacts c", Runs),
    ("SELECT array_agg(bank_account) FROM contacts", Runs),
    ("SELECT string_agg(bank_account, ',') FROM contacts", Runs),
    ("SELECT upper(bank_account), lower(bank_account) FROM contacts", Runs),
    ("SELECT replace(bank_account, '.', '') FROM contacts", Runs),
    ("SELECT substr(bank_account, 1, 13) FROM contacts", Runs),
    ("SELECT bank_account::bytea FROM contacts", Runs),
    ("SELECT format('%s', bank_account) FROM contacts", Runs),
    ("SELECT format('%s', c) FROM contacts c", Runs),
    ("SELECT bank_account || '' FROM contacts", Runs),
    ("SELECT x.a FROM contacts AS x(a, b, c, d, e, f, g, h, i, j, k, l)", Runs),
    ("SELECT x FROM (SELECT bank_account AS x FROM contacts) s", Runs),
    ("WITH s AS (SELECT bank_account FROM contacts) SELECT * FROM s", Runs),
    ("WITH RECURSIVE r(a) AS (SELECT bank_account FROM contacts UNION SELECT a FROM r) SELECT * FROM r", Runs),
    ("SELECT first_name FROM contacts UNION ALL SELECT bank_account FROM contacts", Runs),
    ("SELECT bank_account FROM contacts EXCEPT SELECT '' ", Runs),
    ("SELECT l.b FROM companies co, LATERAL (SELECT bank_account AS b FROM contacts WHERE company_id = co.id) l", Runs),
    ("SELECT id FROM contacts WHERE bank_account LIKE '1%'", Runs),
    ("SELECT count(*) FROM contacts WHERE bank_account = (SELECT bank_account FROM contacts ORDER BY id LIMIT 1)", Runs),
    ("SELECT id FROM contacts ORDER BY bank_account LIMIT 3", Runs),
    ("SELECT bank_account, count(*) FROM contacts GROUP BY bank_account", Runs),
    ("SELECT first_value(bank_account) OVER (ORDER BY id) FROM contacts", Runs),
    ("SELECT max(bank_account), min(bank_account) FROM contacts", Runs),
    ("SELECT a.bank_account FROM contacts a JOIN contacts b USING (id)", Runs),
    ("SELECT * FROM contacts NATURAL JOIN contacts", NoLeak),
    ("SELECT public.contacts.bank_account FROM public.contacts", NoLeak),
    ("SELECT bank_account FROM public.contacts", Runs),
    ("SELECT \"bank_account\" FROM \"contacts\"", Runs),
    ("SELECT \"BANK_ACCOUNT\" FROM contacts", NoLeak),
    ("SELECT bAnK_aCcOuNt FROM CONTACTS", Runs),
    ("TABLE contacts", NoLeak),
    ("SELECT * FROM (TABLE contacts) t", NoLeak),
    ("SELECT bank_account::int FROM contacts", NoLeak),
    ("SELECT CAST(bank_account AS numeric) FROM contacts", NoLeak),
    ("SELECT 1/0 FROM contacts WHERE bank_account = 'x'", NoLeak),
    ("SELECT date_of_birth FROM contacts", Runs),
    ("SELECT EXISTS (SELECT 1 FROM contacts WHERE bank_account = '1234.56.78903')", Runs),
    ("SELECT id FROM contacts c WHERE EXISTS (SELECT 1 FROM contacts d WHERE d.bank_account = c.bank_account)", Runs),
    ("SELECT (SELECT bank_account FROM contacts d WHERE d.id = c.id) FROM contacts c", Runs),
    ("SELECT * FROM activities a JOIN contacts c ON c.id = a.contact_id LIMIT 5", Runs),
    ("SELECT query_to_xml('select bank_account from contacts', true, true, '')", Refused),
    ("SELECT table_to_xml('contacts', true, true, '')", Refused),
    ("SELECT cursor_to_xml('c', 10, true, true, '')", Refused),
    ("SELECT current_query()", Refused),
    ("SELECT * FROM pg_stats WHERE tablename = 'contacts'", Refused),
    ("SELECT * FROM pg_catalog.pg_stats", Refused),
    ("SELECT query FROM pg_stat_activity", Refused),
    ("SELECT * FROM pg_prepared_statements", NoLeak),
    ("SELECT statement FROM pg_prepared_statements", NoLeak),
    ("SELECT statement FROM pg_cursors", NoLeak),
    ("SELECT pg_cursors FROM pg_cursors", NoLeak),
    ("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = 'c'", Runs),
    ("SELECT pg_read_file('/etc/passwd')", Refused),
    ("SELECT lo_import('/etc/passwd')", Refused),
    ("SELECT ts_stat('select to_tsvector(bank_account) from contacts')", Refused),
    ("DO $$ BEGIN PERFORM 1; END $$", Refused),
    ("CREATE FUNCTION f() RETURNS text AS 'select bank_account from contacts' LANGUAGE sql", Refused),
    ("CREATE TEMP TABLE t AS SELECT bank_account FROM contacts", Refused),
    ("SELECT bank_account INTO TEMP t2 FROM contacts", Refused),
    ("CREATE VIEW v AS SELECT bank_account FROM contacts", Refused),
    ("COPY contacts TO STDOUT", Runs),
    ("COPY (SELECT bank_account FROM contacts) TO STDOUT", Runs),
    ("COPY contacts TO '/tmp/x'", Refused),
    ("COPY contacts FROM PROGRAM 'id'", Refused),
    ("SET ROLE admin", Refused),
    ("SET SESSION AUTHORIZATION admin", Refused),
    ("RESET ROLE", Refused),
    ("SELECT set_config('role', 'admin', false)", Refused),
    ("SET standard_conforming_strings = off", Refused),
    ("SET search_path = public", Runs),
    ("SET search_path = public, pg_catalog", Refused),
    ("SELECT U&\"\\0062ank_account\" FROM contacts", Refused),
    ("SELECT U&'\\0041' UESCAPE '!'", Refused),
    ("SELECT 'a'\n'b', bank_account FROM contacts", Refused),
    ("SELECT bank_account /* /* nested */ */ FROM contacts", Runs),
    ("SELECT $$x$$, bank_account FROM contacts", Runs),
    ("SELECT E'\\'', bank_account FROM contacts", Runs),
    ("SELECT 1; SELECT bank_account FROM contacts", Runs),
    ("SELECT 1; SELECT query_to_xml('select 1', true, true, '')", Refused),
    ("PREPARE p AS SELECT bank_account FROM contacts; EXECUTE p", Runs),
    ("BEGIN; DECLARE cur CURSOR FOR SELECT bank_account FROM contacts; FETCH 5 FROM cur; COMMIT", Runs),
    ("EXPLAIN SELECT bank_account FROM contacts WHERE bank_account = '1'", Refused),
    ("EXPLAIN (COSTS OFF) SELECT bank_account FROM contacts WHERE bank_account = '1'", Runs),
    ("EXPLAIN VERBOSE SELECT bank_account FROM contacts", Refused),
    ("UPDATE contacts SET notes = bank_account WHERE id = 1 RETURNING notes", Runs),
    ("UPDATE contacts SET bank_account = 'x' WHERE id = 1", Refused),
    ("UPDATE contacts SET phone = phone WHERE id = 1 RETURNING bank_account", Runs),
    ("UPDATE contacts SET phone = phone WHERE id = 1 RETURNING *", Refused),
    ("UPDATE contacts c SET phone = c.phone WHERE c.bank_account LIKE '1%' RETURNING c.bank_account", Runs),
    ("DELETE FROM contacts WHERE bank_account = 'nope' RETURNING bank_account", NoLeak),
    ("INSERT INTO activities (contact_id, kind, subject, body, happened_at) SELECT id, 'note', 'x', bank_account, now() FROM contacts WHERE id = 2 RETURNING body", Runs),
    ("INSERT INTO contacts (first_name, last_name, email, bank_account) VALUES ('a','b','c@d','1')", Refused),
    // The secretary has no `notify` capability.
    ("SELECT pg_notify('ch', (SELECT bank_account FROM contacts LIMIT 1))", Refused),
    ("LISTEN ch", Refused),
    ("NOTIFY ch, 'x'", Refused),
    ("UNLISTEN *", Runs),
    ("SELECT * FROM crm.public.contacts", Runs),
    ("SELECT * FROM nosuchtable", Refused),
    ("WITH contacts AS (SELECT 1) SELECT * FROM contacts", Refused),
    ("SELECT xmlagg(xmlelement(name x, bank_account))::text FROM contacts", NoLeak),
    ("SELECT jsonb_agg(jsonb_build_object('b', bank_account)) FROM contacts", Runs),
    ("SELECT hashtext(bank_account) FROM contacts", Runs),
    ("SELECT md5(bank_account) FROM contacts", Runs),
    ("SELECT * FROM contacts FOR UPDATE", NoLeak),
    // Derived stand-ins hold only the columns a statement names; every unnamed route stays wide.
    ("SELECT contacts FROM contacts", Runs),
    ("SELECT public.contacts FROM public.contacts", NoLeak),
    ("SELECT x FROM contacts x WHERE x.id = 1", Runs),
    ("SELECT (x).* FROM contacts x", NoLeak),
    ("SELECT to_json(x.*) FROM contacts x", Runs),
    ("SELECT count(*) FROM contacts", Runs),
    ("SELECT 1 FROM contacts c JOIN contacts d USING (bank_account)", Runs),
    ("SELECT * FROM (SELECT id FROM contacts) s NATURAL JOIN contacts", Runs),
    ("SELECT a FROM contacts AS t(a) WHERE t.a > 0", Runs),
    ("SELECT t.b FROM contacts AS t(a, b2, c3, d, e, f, g, h, i, j, k, b)", Runs),
    // Routes found in review: writes inside WITH, SQL run by a function, quoted setting names,
    // settings written through a catalog view, a search_path hidden behind constants.
    ("WITH w AS (INSERT INTO contacts (id, first_name, last_name) SELECT id, 'x', 'x' FROM contacts ON CONFLICT (id) DO UPDATE SET first_name = contacts.first_name RETURNING id, bank_account || '' AS b) SELECT * FROM w", Refused),
    ("WITH w AS (UPDATE contacts SET phone = phone WHERE id = 1 RETURNING bank_account) SELECT * FROM w", Refused),
    ("WITH w AS (DELETE FROM activities WHERE id = -1 RETURNING body) SELECT * FROM w", Refused),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, quote_literal(bank_account)::tsquery FROM public.contacts WHERE id = 1')", Refused),
    ("SET \"standard_conforming_strings\" = off", Refused),
    ("SET \"STANDARD_CONFORMING_STRINGS\" = off", NoLeak),
    ("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", Refused),
    ("SELECT set_config('standard_conforming_strings', 'off', false)", Refused),
    ("SELECT 1; SET search_path = 'public', 'pg_catalog'", Refused),
    ("SELECT j FROM (contacts c CROSS JOIN companies) AS j", NoLeak),
];

/// Statements marketing (bank_account and date_of_birth blocked) might try.
const MARKETING: &[(&str, Expect)] = &[
    ("SELECT first_name, last_name, email FROM contacts", Runs),
    ("SELECT bank_account FROM contacts", Refused),
    ("SELECT c.bank_account FROM contacts c", Refused),
    ("SELECT * FROM contacts", Runs),
    ("SELECT row_to_json(c) FROM contacts c", Runs),
    (
        "SELECT id FROM contacts WHERE bank_account LIKE '1%'",
        Refused,
    ),
    ("SELECT id FROM contacts ORDER BY date_of_birth", Refused),
    (
        "SELECT count(*) FROM contacts GROUP BY date_of_birth",
        Refused,
    ),
    (
        "SELECT x FROM (SELECT bank_account AS x FROM contacts) s",
        Refused,
    ),
    ("SELECT (c).bank_account FROM contacts c", NoLeak),
    (
        "SELECT c.x FROM contacts AS c(a,b,c,d,e,f,g,h,i,j,k,x)",
        NoLeak,
    ),
    ("UPDATE contacts SET email = email WHERE id = 1", Refused),
    ("COPY contacts TO STDOUT", Refused),
    ("COPY contacts (bank_account) TO STDOUT", Refused),
];

async fn run_case(
    c: &Client,
    secrets: &Secrets,
    role: &str,
    sql: &str,
    expect: Expect,
) -> Result<(), String> {
    if sql.starts_with("COPY") && sql.contains("TO STDOUT") {
        return copy_case(c, secrets, role, sql, expect).await;
    }
    leaks::run_case(c, secrets, role, sql, expect).await
}

async fn copy_case(
    c: &Client,
    secrets: &Secrets,
    role: &str,
    sql: &str,
    expect: Expect,
) -> Result<(), String> {
    use futures_util::TryStreamExt;
    let result = match c.copy_out(sql).await {
        Result::Ok(stream) => stream.try_collect::<Vec<bytes::Bytes>>().await,
        Err(e) => Err(e),
    };
    match result {
        Result::Ok(chunks) => {
            let text = String::from_utf8_lossy(&chunks.concat()).into_owned();
            if let Some(leak) = secrets.leaks(&text) {
                return Err(format!("{role}: LEAK of {leak} by {sql:?}"));
            }
            if expect == Refused {
                return Err(format!("{role}: expected refusal, but {sql:?} ran"));
            }
            if text.is_empty() {
                return Err(format!("{role}: {sql:?} returned nothing"));
            }
            Result::Ok(())
        }
        Err(e) => {
            if expect == Runs {
                return Err(format!(
                    "{role}: expected {sql:?} to run, got {}",
                    common::message(&e)
                ));
            }
            Result::Ok(())
        }
    }
}

/// The demo with the audit trail on: the hidden subject-key columns plain SELECTs then carry
/// must change nothing the client sees.
async fn demo_env() -> Env {
    Env::start_audited_demo(200).await
}

#[tokio::test]
async fn restricted_roles_never_see_a_bank_account() {
    let env = demo_env().await;
    let direct = env.cluster.connect("crm").await.unwrap();
    let secrets = Secrets::bank_accounts(&direct).await;
    assert!(secrets.len() >= 400);
    let mut failures = Vec::new();
    for (role, cases) in [("secretary", SECRETARY), ("marketing", MARKETING)] {
        let c = env.connect(role, role, "crm").await.unwrap();
        for (sql, expect) in cases {
            if let Result::Err(f) = run_case(&c, &secrets, role, sql, *expect).await {
                failures.push(f);
            }
        }
        // The session survived every refusal.
        assert_eq!(
            c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
            1
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        SECRETARY.len() + MARKETING.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn extended_protocol_and_prepared_statements_never_leak() {
    use common::raw::{self, Raw};
    let env = demo_env().await;
    let direct = env.cluster.connect("crm").await.unwrap();
    let secrets = Secrets::bank_accounts(&direct).await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (role, cases) in [("secretary", SECRETARY), ("marketing", MARKETING)] {
        env.trust_user(role).await;
        let mut c = Raw::connect_db(env.proxy_port(), tls.clone(), role, "crm").await;
        // One statement per Parse: the extended protocol does not take several.
        for (n, (sql, expect)) in cases
            .iter()
            .filter(|(s, _)| !s.starts_with("COPY") && !s.contains(';'))
            .enumerate()
        {
            // Unnamed statement, text results, portal described.
            let mut batch = raw::parse("", sql);
            batch.extend(raw::bind("", 0));
            batch.extend(raw::describe(b'P', ""));
            batch.extend(raw::execute());
            batch.extend(raw::sync());
            c.send(&batch).await.unwrap();
            let msgs = c.until_ready().await;
            if let Err(f) =
                check_messages(&msgs, &secrets, &format!("{role} unnamed {sql:?}"), *expect)
            {
                failures.push(f);
            }
            // Named statement described first, then executed with binary results.
            {
                let name = format!("s{n}");
                let mut prep = raw::parse(&name, sql);
                prep.extend(raw::describe(b'S', &name));
                prep.extend(raw::sync());
                c.send(&prep).await.unwrap();
                let mut msgs = c.until_ready().await;
                let prepared = !msgs.iter().any(|m| m.tag == b'E');
                if prepared {
                    let mut run = raw::bind(&name, 1);
                    run.extend(raw::execute());
                    run.extend(raw::close(b'S', &name));
                    run.extend(raw::sync());
                    c.send(&run).await.unwrap();
                    msgs.extend(c.until_ready().await);
                }
                if let Err(f) = check_messages(
                    &msgs,
                    &secrets,
                    &format!("{role} prepared binary {sql:?}"),
                    *expect,
                ) {
                    failures.push(f);
                }
            }
            checked += 1;
        }
        // The session survived every refusal.
        c.send(&raw::query("SELECT 1")).await.unwrap();
        let msgs = c.until_ready().await;
        assert!(
            msgs.iter().any(|m| m.tag == b'D'),
            "{role}: session unusable"
        );
    }
    assert!(checked > 100, "{checked}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let anomalies = common::metric(&env.metrics().await, "pgvakt_enforcement_anomalies_total");
    assert_eq!(anomalies, 0.0, "the analysis let protected columns through");
}

#[tokio::test]
async fn masked_values_keep_types_in_text_and_binary() {
    let env = demo_env().await;
    let direct = env.cluster.connect("crm").await.unwrap();
    let secrets = Secrets::bank_accounts(&direct).await;
    let c = env.connect("secretary", "secretary", "crm").await.unwrap();
    // Extended protocol, binary results: types as in the table.
    let row = c
        .query_one(
            "SELECT id, first_name, bank_account FROM contacts WHERE id = $1",
            &[&7i64],
        )
        .await
        .unwrap();
    let acct: String = row.get(2);
    assert!(secrets.leaks(&acct).is_none(), "{acct}");
    let first: String = row.get(1);
    let direct_first: String = direct
        .query_one("SELECT first_name FROM contacts WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, direct_first, "allowed columns are unchanged");
    // Birth date shows the year only and stays a date.
    let years = c
        .simple_query("SELECT count(*) FROM contacts WHERE date_of_birth <> make_date(extract(year FROM date_of_birth)::int, 1, 1)")
        .await
        .unwrap();
    let n = years.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(n.as_deref(), Some("0"));
    // Sales sees the last four digits.
    let s = env.connect("sales", "sales", "crm").await.unwrap();
    let masked: String = s
        .query_one("SELECT bank_account FROM contacts WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    let real: String = direct
        .query_one("SELECT bank_account FROM contacts WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        masked.ends_with(&real[real.len() - 4..]),
        "{masked} vs {real}"
    );
    assert_ne!(masked, real);
    // A refused prepared statement fails at prepare time and the session recovers.
    let m = env.connect("marketing", "marketing", "crm").await.unwrap();
    let err = m
        .prepare("SELECT bank_account FROM contacts")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        common::message(&err).contains("contacts.bank_account is blocked for role marketing"),
        "{}",
        common::message(&err)
    );
    // The people marketing may process for its purposes (consent, no restriction, within
    // retention).
    let want: i64 = direct
        .query_one(
            &format!(
                "SELECT count(*) FROM ({}) v",
                common::rows::visible_ids("marketing")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(want > 0 && want < 200, "{want}");
    assert_eq!(
        m.query_one("SELECT count(*) FROM contacts", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        want
    );
}

#[tokio::test]
async fn unrestricted_and_dpo_see_what_postgres_returns() {
    let env = demo_env().await;
    let direct = env.cluster.connect("crm").await.unwrap();
    let q = "SELECT id, bank_account, date_of_birth::text FROM contacts ORDER BY id";
    let want: Vec<(i64, String, String)> = direct
        .query(q, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for user in ["admin", "dpo"] {
        let c = env.connect(user, user, "crm").await.unwrap();
        let got: Vec<(i64, String, String)> = c
            .query(q, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(got, want, "{user}");
    }
    // An unknown user gets the default role, which sees no personal data.
    env.direct().await.batch_execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger'; GRANT CONNECT ON DATABASE crm TO stranger").await.unwrap();
    direct
        .batch_execute("GRANT SELECT ON contacts TO stranger")
        .await
        .unwrap();
    let s = env.connect("stranger", "stranger", "crm").await.unwrap();
    let err = s
        .query("SELECT email FROM contacts", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", common::message(&err));
}

#[tokio::test]
async fn startup_settings_that_change_how_statements_are_read_are_refused() {
    let env = demo_env().await;
    for options in [
        "-c standard_conforming_strings=off",
        "-c standard-conforming-strings=off",
        "--standard-conforming-strings=off",
        "-c search_path=evil",
    ] {
        let mut cfg = env.pg_config("secretary", "secretary", "crm");
        cfg.options(options);
        let Err(e) = cfg.connect(env.tls()).await else {
            panic!("{options}: a restricted role must not start with it");
        };
        assert_eq!(sqlstate(&e), "42501", "{options}: {e}");
    }
    // A setting given as its own startup parameter (asyncpg's server_settings do this).
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let refused = common::raw::Raw::try_connect_with(
        env.proxy_port(),
        tls,
        &[
            ("user", "secretary"),
            ("database", "crm"),
            ("standard_conforming_strings", "off"),
        ],
    )
    .await;
    assert_eq!(
        refused.as_deref(),
        Some("42501"),
        "startup parameter standard_conforming_strings"
    );
    // Unrestricted roles keep their freedom.
    let mut cfg = env.pg_config("admin", "admin", "crm");
    cfg.options("-c standard_conforming_strings=off");
    let (admin, conn) = cfg.connect(env.tls()).await.expect("admin may");
    tokio::spawn(conn);
    admin
        .simple_query("SELECT 1")
        .await
        .expect("admin session works");
}

/// FETCH and MOVE as PostgreSQL allows them without FROM/IN or a direction (`FETCH held`,
/// `FETCH 2 held`, `FETCH IN held`): run through pgvakt like their long forms, rows in order
/// and masked.
#[tokio::test]
async fn fetch_without_from_or_direction_runs_masked() {
    let env = demo_env().await;
    let direct = env.cluster.connect("crm").await.unwrap();
    let secrets = Secrets::bank_accounts(&direct).await;
    let c = env.connect("secretary", "secretary", "crm").await.unwrap();
    c.batch_execute(
        "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT id, bank_account FROM contacts ORDER BY id; COMMIT",
    )
    .await
    .expect("declare");
    let mut ids = Vec::new();
    for sql in [
        "FETCH held",
        "FETCH 2 held",
        "fetch in held",
        "MOVE held",
        "FETCH NEXT held",
    ] {
        let messages = c
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for m in &messages {
            if let SimpleQueryMessage::Row(r) = m {
                ids.push(r.get(0).unwrap_or_default().parse::<i64>().unwrap_or(-1));
                let shown = r.get(1).unwrap_or_default();
                assert!(secrets.leaks(shown).is_none(), "{sql} showed {shown}");
            }
        }
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 6]);
    c.simple_query("CLOSE held").await.expect("close");
}
