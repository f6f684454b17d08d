//! Privacy by default for what the policy does not list: a DBA copies `contacts` into a table the
//! inventory has never heard of, and the copy is still personal data. Marketing gets masked
//! values, the DPO (who may read `unclassified` data) gets the real ones and is audited, and
//! `policy check --upstream` names the table until someone lists it.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, EnvOptions};
use tokio_postgres::Client;

/// Every value of every row `sql` returns, in text format.
async fn values(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| common::message(&e))?;
    Ok(common::answers::text_rows(&msgs))
}

/// pgvakt refreshes its catalog after DDL has committed; wait until `client` may use the table.
async fn wait_for_catalog(client: &Client, table: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match values(client, &format!("SELECT count(*) FROM {table}")).await {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "pgvakt's catalog never learnt of {table}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every audit record in `dir`, as JSON text lines.
fn audit_lines(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[tokio::test]
async fn a_copy_of_contacts_made_by_a_dba_stays_protected() {
    let audit = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(60),
        extra_yaml: common::audit_yaml(audit.path()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut accounts = HashSet::new();
    for r in direct
        .query("SELECT bank_account FROM contacts", &[])
        .await
        .expect("accounts")
    {
        let a: String = r.get(0);
        accounts.insert(a.replace('.', ""));
        accounts.insert(a);
    }
    assert!(accounts.len() > 50);

    // The DBA's backup, made through pgvakt as the unrestricted admin.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "CREATE TABLE contacts_backup AS SELECT * FROM contacts;
             GRANT SELECT ON contacts_backup TO marketing, dpo;",
        )
        .await
        .expect("backup table");

    // Marketing has no rule for `unclassified`: its default (mask redact) applies to every
    // column of the copy, bank accounts included.
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    wait_for_catalog(&marketing, "contacts_backup").await;
    for sql in [
        "SELECT bank_account FROM contacts_backup",
        "SELECT * FROM contacts_backup",
        "SELECT c FROM contacts_backup c",
        "SELECT id FROM contacts_backup WHERE bank_account = (SELECT bank_account FROM contacts_backup ORDER BY id LIMIT 1)",
    ] {
        let rows = values(&marketing, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for v in rows.iter().flatten().flatten() {
            assert!(
                !accounts.iter().any(|a| v.contains(a.as_str())),
                "{sql}: marketing read a bank account: {v}"
            );
        }
        if sql.starts_with("SELECT id") {
            // The filter saw the masked value, which every row shares.
            assert_eq!(rows.len(), 60, "{sql}");
        }
    }
    // The original table's rules still hold for the original.
    let err = marketing
        .simple_query("SELECT bank_account FROM contacts")
        .await
        .expect_err("blocked on contacts");
    assert_eq!(common::sqlstate(&err), "42501");

    // The DPO allows `unclassified`: the copy reads exactly as stored, and the read is audited
    // as personal data.
    let dpo = env.connect("dpo", "dpo", "crm").await.expect("dpo");
    let q = "SELECT id, bank_account FROM contacts_backup ORDER BY id";
    let want = values(&direct, q).await.expect("direct");
    assert_eq!(values(&dpo, q).await.expect("dpo"), want);
    let dir = audit.path().join("audit");
    let mut recorded = false;
    for _ in 0..100 {
        recorded = audit_lines(&dir).iter().any(|l| {
            l.contains("\"event\":\"statement_read\"")
                && l.contains("\"user\":\"dpo\"")
                && l.contains("\"table\":\"public.contacts_backup\"")
                && l.contains("\"category\":\"unclassified\"")
        });
        if recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recorded,
        "no audit record of the DPO's read:\n{}",
        audit_lines(&dir).join("\n")
    );

    // The policy check names the table the inventory does not list.
    let dsn = env
        .cluster
        .dsn(env.cluster.superuser(), env.cluster.password(), "crm");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["policy", "check", "policies/crm.yaml", "--upstream", &dsn])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run pgvakt policy check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: public.contacts_backup: table is not in the data inventory"),
        "{text}"
    );
}
