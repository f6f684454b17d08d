//! The pseudonym key never leaves pgvakt inside SQL text. A restricted role reads pseudonymised
//! columns through pgvakt from a PostgreSQL that logs every statement (`log_statement = all`);
//! neither `pg_stat_activity` (watched while and after the statements run) nor the server log
//! holds the key or its HMAC pads, yet the values are the keyed HMAC-SHA256 of the stored ones.
//! Without the installed function, or with another key in it, those statements are refused
//! with a hint to run `pgvakt install`, and a fresh install takes effect without a restart.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{message, sqlstate, Env, EnvOptions};
use pgvakt::policy::masks::PseudonymKey;
use tokio_postgres::Client;

/// The key, as the policy's key file holds it.
const KEY: &str = "the pseudonym key of these tests, long enough";

/// (id, email, company_id) of a contact, as stored or as masked.
type Row = (i64, Option<String>, Option<i64>);
type Read = Result<Vec<Row>, tokio_postgres::Error>;

const READ: &str = "SELECT id, email, company_id FROM contacts ORDER BY id LIMIT 25";

fn policy(key_file: &Path) -> String {
    format!(
        r#"schema: public
default_role: nobody
pseudonym:
  key_env: PGVAKT_TEST_PSEUDONYM_KEY_NEVER_SET
  key_file: {key_file}
inventory:
  tables:
    contacts:
      subject_key: id
      columns: {{id: none, company_id: none, first_name: identity, last_name: identity,
                 email: contact, phone: contact, street_address: contact, postal_code: contact,
                 city: contact, country: contact, date_of_birth: identity, bank_account: financial,
                 notes: free_text, created_at: none, last_activity_at: none}}
roles:
  nobody:
    default: block
  analyst:
    description: Counts and joins customers without seeing who they are.
    default: block
    columns:
      contacts.email: {{mask: pseudonym}}
      contacts.company_id: {{mask: pseudonym}}
      contacts.city: allow
  admin:
    unrestricted: true
grants:
  - {{user: admin, role: admin}}
  - {{user: sales, role: analyst}}
"#,
        key_file = serde_json::Value::String(key_file.display().to_string())
    )
}

/// Every form in which key material could show up in text: the key, the key in hex, the pads.
fn secrets() -> Vec<String> {
    let mut block = [0u8; 64];
    block[..KEY.len()].copy_from_slice(KEY.as_bytes());
    let mut out = vec![KEY.to_owned(), hex::encode(KEY)];
    for pad in [0x36u8, 0x5c] {
        let p = hex::encode(block.map(|b| b ^ pad));
        // Any stretch of a pad is as bad as the whole; the part covering the key bytes is
        // what differs from a constant pattern.
        out.push(p[..2 * KEY.len()].to_owned());
        out.push(p);
    }
    out
}

fn assert_no_secret(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for s in secrets() {
        assert!(
            !lower.contains(&s.to_lowercase()),
            "{what} holds key material ({} characters of it)",
            s.len()
        );
    }
}

/// (id, pseudonymised email, pseudonymised company_id) as pgvakt's key computes them from the
/// stored values.
async fn expected(direct: &Client, key: &PseudonymKey) -> Vec<Row> {
    direct
        .query(READ, &[])
        .await
        .expect("direct read")
        .iter()
        .map(|r| {
            let email: Option<String> = r.get(1);
            let company: Option<i64> = r.get(2);
            let company = company.map(|c| {
                let hex = key.hmac_hex(c.to_string().as_bytes());
                u64::from_str_radix(&hex[..16], 16).expect("hex") as i64
            });
            (r.get(0), email.map(|e| key.hmac_hex(e.as_bytes())), company)
        })
        .collect()
}

async fn read(sales: &Client) -> Read {
    Ok(sales
        .query(READ, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Statement texts PostgreSQL shows for every session now.
async fn activity(direct: &Client) -> Vec<String> {
    direct
        .query(
            "SELECT coalesce(query, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Runs the read as `sales` until `done` accepts the outcome (pgvakt re-reads its catalog after
/// a refusal or an unrestricted role's DDL, so a change upstream takes a moment to show).
async fn read_until(sales: &Client, what: &str, done: impl Fn(&Read) -> bool) -> Read {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = read(sales).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what}: still {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn refused_with(r: &Read, why: &str) -> bool {
    match r {
        Err(e) => {
            let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
            sqlstate(e) == "55000" && message(e).contains(why) && hint.contains("pgvakt install")
        }
        Ok(_) => false,
    }
}

#[tokio::test]
async fn pseudonym_key_stays_out_of_sql_text_and_logs() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("pseudonym.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    let policy_file = keys.path().join("policy.yaml");
    std::fs::write(&policy_file, policy(&key_file)).expect("policy file");
    // The fixture runs `pgvakt install` as the service user (admin, the owner of crm), as an
    // operator does before starting pgvakt; the server logs that too.
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(40),
        policy_file: Some(policy_file),
        pg_settings: vec![
            ("log_statement".into(), "all".into()),
            ("log_min_error_statement".into(), "error".into()),
        ],
        ..Default::default()
    })
    .await;
    let key = PseudonymKey::new(KEY.as_bytes());
    let direct = env.cluster.connect("crm").await.expect("direct");
    let want = expected(&direct, &key).await;
    assert!(want.iter().any(|(_, e, c)| e.is_some() && c.is_some()));

    // Masked reads: the keyed HMAC-SHA256 of the stored values, in the columns' own types.
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    assert_eq!(read(&sales).await.expect("masked read"), want);
    let one = want
        .iter()
        .find(|(_, e, _)| e.is_some())
        .expect("an e-mail");
    let by_pseudonym = sales
        .query(
            "SELECT id FROM contacts WHERE email = $1",
            &[&one.1.clone().expect("pseudonym")],
        )
        .await
        .expect("filter on the pseudonym");
    assert_eq!(by_pseudonym.len(), 1);
    assert_eq!(by_pseudonym[0].get::<_, i64>(0), one.0);
    let updated = sales
        .execute(
            "UPDATE contacts SET city = city WHERE email = $1",
            &[&one.1.clone().expect("pseudonym")],
        )
        .await
        .expect("a write filtering on the pseudonym");
    assert_eq!(updated, 1);

    // While a masked statement runs (it waits for a lock the superuser holds), and after it:
    // the query text names the function only.
    let locker = env.cluster.connect("crm").await.expect("locker");
    locker
        .batch_execute("BEGIN; LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let waiting = {
        let sales = env.connect("sales", "sales", "crm").await.expect("sales");
        tokio::spawn(async move {
            let r = sales
                .simple_query("SELECT email FROM contacts WHERE id = 1")
                .await;
            (sales, r)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = loop {
        let seen: Vec<String> = direct
            .query(
                "SELECT query FROM pg_stat_activity WHERE usename = 'sales' AND state = 'active'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(q) = seen.into_iter().find(|q| q.contains("pgvakt.pseudonym(")) {
            break q;
        }
        if waiting.is_finished() || Instant::now() > deadline {
            panic!(
                "the masked statement never showed as running: {:?}",
                waiting.await.map(|(_, r)| r)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    locker.batch_execute("COMMIT").await.expect("unlock");
    let (waited, r) = waiting.await.expect("join");
    r.expect("masked read after the lock");
    assert!(running.contains("pgvakt.pseudonym("), "{running}");
    assert_no_secret("pg_stat_activity.query of a running statement", &running);
    let after = activity(&direct).await;
    assert!(
        after.iter().any(|q| q.contains("pgvakt.pseudonym(")),
        "{after:?}"
    );
    for q in &after {
        assert_no_secret("pg_stat_activity.query after the statements", q);
    }
    drop(waited);

    // Calling the function on guesses would re-identify pseudonyms: only pgvakt's masks may.
    for guess in [
        "SELECT pgvakt.pseudonym('anna.berg@example.com')",
        "SELECT pseudonym('anna.berg@example.com')",
    ] {
        let e = sales.simple_query(guess).await.expect_err(guess);
        assert_eq!(sqlstate(&e), "42501", "{guess}: {e}");
    }

    // A plan shows the call, not its body: a restricted role's own EXPLAIN of a filter on the
    // masked column (which printed the pads while they were constants in the SQL)...
    let own_plan: Vec<String> = sales
        .simple_query(
            "EXPLAIN (COSTS OFF) SELECT id FROM contacts WHERE email = 'x' OR company_id = 7",
        )
        .await
        .expect("explain through pgvakt")
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(
        own_plan.iter().any(|l| l.contains("pseudonym")),
        "{own_plan:?}"
    );
    assert_no_secret("EXPLAIN through pgvakt", &own_plan.join("\n"));
    // ... and the superuser's verbose plan.
    let plan: Vec<String> = direct
        .query(
            "EXPLAIN (VERBOSE) SELECT pgvakt.pseudonym(email) FROM contacts",
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("pseudonym")), "{plan:?}");
    assert_no_secret("EXPLAIN (VERBOSE)", &plan.join("\n"));

    // Install again with the same key: idempotent, nothing changes.
    let mut owner_cfg = env.cluster.superuser_config("crm");
    owner_cfg.user("admin").password("admin");
    let mut owner = pgvakt::install::connect(&owner_cfg, None)
        .await
        .expect("owner");
    let again = pgvakt::install::install(&mut owner, &key)
        .await
        .expect("install again");
    assert_eq!(again.previous_key_id.as_deref(), Some(key.fingerprint()));
    assert_eq!(again.owner, "admin");
    assert_eq!(read(&sales).await.expect("read after reinstall"), want);

    // Without the function the statement is refused, with the way out in the hint. The DDL
    // goes through pgvakt so that it re-reads the catalog once it completes.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute("DROP FUNCTION pgvakt.pseudonym(text)")
        .await
        .expect("drop the function");
    read_until(&sales, "after the function was dropped", |r| {
        refused_with(r, "does not exist")
    })
    .await
    .expect_err("refused");

    // Another key upstream than the policy's: refused too (pseudonyms would change meaning).
    let other = PseudonymKey::new(b"another pseudonym key, also long enough");
    pgvakt::install::install(&mut owner, &other)
        .await
        .expect("install another key");
    read_until(&sales, "with another key installed", |r| {
        refused_with(r, "different key")
    })
    .await
    .expect_err("refused");

    // Installing the policy's key again (a rotation back) works without restarting pgvakt.
    let back = pgvakt::install::install(&mut owner, &key)
        .await
        .expect("install the key again");
    assert_eq!(back.previous_key_id.as_deref(), Some(other.fingerprint()));
    let got = read_until(&sales, "after installing the key again", |r| r.is_ok())
        .await
        .expect("read");
    assert_eq!(got, want);

    // The key table is the owner's alone.
    let sales_direct = {
        let mut c = env.cluster.superuser_config("crm");
        c.user("sales").password("sales");
        let (client, conn) = c
            .connect(tokio_postgres::NoTls)
            .await
            .expect("sales direct");
        tokio::spawn(conn);
        client
    };
    let denied = sales_direct
        .query("SELECT ipad FROM pgvakt.pseudonym_key", &[])
        .await
        .expect_err("key table readable");
    assert_eq!(sqlstate(&denied), "42501");

    // And nothing PostgreSQL logged, install included, holds key material.
    let log = std::fs::read_to_string(env.cluster.log_file()).expect("server log");
    assert!(
        log.contains("pgvakt.pseudonym("),
        "log_statement did not log the reads"
    );
    assert!(
        log.contains("COPY pgvakt.pseudonym_key"),
        "the install was not logged"
    );
    assert_no_secret("the server log", &log);
}
