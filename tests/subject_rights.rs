//! The DPO's commands against the demo CRM, through pgvakt as `dpo`: `subject export` gives
//! every row of the person in every inventory table (checked against an independent query of
//! PostgreSQL: every table, every row, nothing of anyone else) and who received it from the
//! audit trail; `subject erase` leaves no personal value while non-personal columns and
//! references stay, is idempotent, and is recorded without the erased values.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common;

use common::{Env, EnvOptions};

/// Inventory tables whose subject is a contact, with their subject key.
const TABLES: &[(&str, &str)] = &[
    ("contacts", "id"),
    ("activities", "contact_id"),
    ("consents", "contact_id"),
    ("restrictions", "contact_id"),
];

async fn pgvakt(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
            .args(&args)
            .output()
            .expect("run pgvakt");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("task")
}

fn dpo_through_pgvakt(env: &Env) -> String {
    format!(
        "host=127.0.0.1 port={} user=dpo password=dpo dbname=crm sslmode=require",
        env.proxy_port()
    )
}

fn policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/crm.yaml")
        .display()
        .to_string()
}

/// The subject's rows of every table, straight from PostgreSQL, as JSON objects.
async fn direct_rows(client: &tokio_postgres::Client, id: i64) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for (table, key) in TABLES {
        let rows = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM {table} t WHERE {key} = $1"),
                &[&id],
            )
            .await
            .expect("direct rows");
        let set = rows
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(&r.get::<_, String>(0)).expect("json");
                v.to_string()
            })
            .collect();
        out.push((format!("public.{table}"), set));
    }
    out
}

async fn export(env: &Env, trail: &Path, id: i64, name: &str) -> Value {
    let file = env.dir.path().join(format!("{name}.zip"));
    let (ok, out, err) = pgvakt(vec![
        "subject".into(),
        "export".into(),
        id.to_string(),
        "--upstream".into(),
        dpo_through_pgvakt(env),
        "--policy".into(),
        policy(),
        "--audit".into(),
        trail.join("audit").display().to_string(),
        "--key-file".into(),
        trail.join("subject.key").display().to_string(),
        "--out".into(),
        file.display().to_string(),
        "--config".into(),
        trail.join("pgvakt-dpo.yaml").display().to_string(),
    ])
    .await;
    assert!(ok, "export: {out}{err}");
    let unzip = |member: String| {
        let out = Command::new("unzip")
            .args(["-p", &file.display().to_string(), &member])
            .output()
            .expect("unzip");
        assert!(out.status.success(), "unzip {member}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let json: Value = serde_json::from_str(&unzip(format!("subject-{id}.json"))).expect("json");
    let html = unzip(format!("subject-{id}.html"));
    assert!(
        html.starts_with("<!DOCTYPE html>") && !html.contains("<script"),
        "{html}"
    );
    json
}

fn exported(json: &Value) -> Vec<(String, BTreeSet<String>)> {
    json["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            let rows = t["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(Value::to_string)
                .collect();
            (t["table"].as_str().expect("name").to_owned(), rows)
        })
        .collect()
}

#[tokio::test]
async fn export_and_erase_a_subject_as_the_inventory_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = common::audit_yaml(dir.path());
    let config = common::trail::dpo_config(dir.path(), &audit);
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(80),
        extra_yaml: audit,
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let id: i64 = direct
        .query_one(
            "SELECT contact_id FROM activities GROUP BY 1 HAVING count(*) >= 2
             INTERSECT SELECT contact_id FROM consents ORDER BY 1 LIMIT 1",
            &[],
        )
        .await
        .expect("a subject with activities and consents")
        .get(0);
    // Two recipients: the secretary reads the person, marketing reads their name.
    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    secretary
        .query(
            "SELECT first_name, bank_account FROM contacts WHERE id = $1",
            &[&id],
        )
        .await
        .expect("secretary reads");
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    marketing
        .query(
            "SELECT first_name, email FROM contacts WHERE id = $1",
            &[&id],
        )
        .await
        .expect("marketing reads");

    let before = direct_rows(&direct, id).await;
    let json = export(&env, dir.path(), id, "before").await;
    assert_eq!(exported(&json), before, "export equals PostgreSQL's rows");
    assert!(before.iter().filter(|(_, r)| !r.is_empty()).count() >= 3);
    for t in json["tables"].as_array().expect("tables") {
        let key = t["subject_key"].as_str().expect("key");
        for r in t["rows"].as_array().expect("rows") {
            assert_eq!(r[key].as_i64(), Some(id), "only the subject's rows");
        }
    }
    let users: BTreeSet<&str> = json["recipients"]["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .filter(|r| r["reads"].as_u64() > Some(0))
        .map(|r| r["user"].as_str().expect("user"))
        .collect();
    assert!(
        users.contains("secretary") && users.contains("marketing"),
        "{users:?}"
    );

    // The personal values the erasure must remove (categories other than none).
    let personal: Vec<String> = direct
        .query(
            "SELECT v FROM (SELECT unnest(ARRAY[first_name, last_name, email, phone,
                street_address, bank_account, notes, date_of_birth::text]) AS v
              FROM contacts WHERE id = $1
              UNION ALL SELECT unnest(ARRAY[subject, body]) FROM activities WHERE contact_id = $1
              UNION ALL SELECT granted_by FROM consents WHERE contact_id = $1) x
             WHERE v IS NOT NULL AND length(v) >= 4",
            &[&id],
        )
        .await
        .expect("personal values")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(personal.len() >= 6, "{personal:?}");
    let other_before = direct_rows(&direct, id + 1).await;

    let erase = |dry: bool| {
        let mut a = vec![
            "subject".to_owned(),
            "erase".into(),
            id.to_string(),
            "--upstream".into(),
            dpo_through_pgvakt(&env),
            "--policy".into(),
            policy(),
            "--config".into(),
            config.display().to_string(),
        ];
        if dry {
            a.push("--dry-run".into());
        }
        pgvakt(a)
    };
    let (ok, out, err) = erase(true).await;
    assert!(
        ok && out.contains("would change") && out.contains("dry run"),
        "{out}{err}"
    );
    assert_eq!(
        direct_rows(&direct, id).await,
        before,
        "a dry run changes nothing"
    );

    let (ok, out, err) = erase(false).await;
    assert!(
        ok && out.contains("no personal value remains"),
        "{out}{err}"
    );
    let after = export(&env, dir.path(), id, "after").await;
    // Every personal column holds NULL or the redacted value, none of the old values.
    for t in after["tables"].as_array().expect("tables") {
        for c in t["columns"].as_array().expect("columns") {
            if c["category"] == "none" {
                continue;
            }
            let name = c["name"].as_str().expect("column");
            for r in t["rows"].as_array().expect("rows") {
                let v = &r[name];
                assert!(
                    v.is_null() || *v == "***" || *v == "1970-01-01",
                    "{}.{name} holds {v} after the erasure",
                    t["table"]
                );
                assert!(!personal.iter().any(|p| *v == p.as_str()), "{v} survived");
            }
        }
    }
    // Non-personal columns and the rows themselves stay: same row counts, same keys and times.
    for ((table, rows_before), (_, rows_after)) in
        before.iter().zip(direct_rows(&direct, id).await.iter())
    {
        assert_eq!(rows_before.len(), rows_after.len(), "{table}: rows kept");
    }
    let kept: i64 = direct
        .query_one(
            "SELECT count(*) FROM contacts WHERE id = $1 AND country IS NOT NULL
             AND date_of_birth IS NULL AND bank_account IS NULL AND first_name = '***'",
            &[&id],
        )
        .await
        .expect("declared actions")
        .get(0);
    assert_eq!(kept, 1, "null where declared, redact by default");
    let orphans: i64 = direct
        .query_one(
            "SELECT count(*) FROM activities a LEFT JOIN contacts c ON c.id = a.contact_id WHERE c.id IS NULL",
            &[],
        )
        .await
        .expect("orphans")
        .get(0);
    assert_eq!(orphans, 0);
    assert_eq!(
        direct_rows(&direct, id + 1).await,
        other_before,
        "no one else is touched"
    );

    let (ok, out, err) = erase(false).await;
    assert!(
        ok && out.contains("nothing to erase"),
        "idempotent: {out}{err}"
    );

    // Recorded by pgvakt under the person's pseudonym, without the values.
    let records = common::trail::all_records(&dir.path().join("audit"));
    let by = |app: &str, event: &str| {
        records
            .iter()
            .any(|r| r["application_name"] == app && r["event"] == event && r["user"] == "dpo")
    };
    assert!(by("pgvakt subject export", "statement_read"));
    assert!(by("pgvakt subject erase", "statement_write"));
    let trail = records.iter().map(Value::to_string).collect::<String>();
    // Values that identify the person (names and activity subjects can be common words that
    // role names or statement text contain).
    let distinctive: Vec<String> = direct_rows_values(&before);
    assert!(distinctive.len() >= 3, "{distinctive:?}");
    for v in &distinctive {
        assert!(!trail.contains(v.as_str()), "{v} in the audit trail");
    }
    let (ok, out, _) = pgvakt(vec![
        "audit".into(),
        "search".into(),
        "--subject".into(),
        id.to_string(),
        "--user".into(),
        "dpo".into(),
        "--key-file".into(),
        dir.path().join("subject.key").display().to_string(),
        dir.path().join("audit").display().to_string(),
    ])
    .await;
    assert!(ok && out.contains("write:public.contacts"), "{out}");

    // The commands' own records, in their own chain: who, which person, counts, no values.
    let own_dir = dir.path().join("audit").join("dpo");
    let own = common::trail::all_records(&own_dir);
    assert!(common::schema::assert_audit_dir_valid(&own_dir) >= 5);
    let (intact, report) = common::trail::verify(&dir.path().join("chain.key"), &own_dir);
    assert!(intact, "the commands' chain verifies: {report}");
    let (intact, report) =
        common::trail::verify(&dir.path().join("chain.key"), &dir.path().join("audit"));
    assert!(intact, "pgvakt's own chain is not touched: {report}");
    let text = own.iter().map(Value::to_string).collect::<String>();
    for v in &distinctive {
        assert!(!text.contains(v.as_str()), "{v} in the commands' records");
    }
    // The person's pseudonym is the one pgvakt's statement records name.
    let person = records
        .iter()
        .find(|r| r["application_name"] == "pgvakt subject export" && r["subjects"].is_array())
        .map(|r| r["subjects"][0]["refs"][0].clone())
        .expect("pgvakt's record of the export's reads");
    let of = |event: &str| -> Vec<&Value> { own.iter().filter(|r| r["event"] == event).collect() };
    let exports = of("subject_export");
    let erasures = of("subject_erase");
    assert_eq!((exports.len(), erasures.len()), (2, 3), "{text}");
    for r in exports.iter().chain(erasures.iter()) {
        assert_eq!(r["outcome"], "ok");
        assert_eq!(r["user"], "dpo", "the connection's user");
        assert_eq!(r["database"], "crm");
        assert_eq!(r["subjects"][0]["table"], "public.contacts");
        assert_eq!(r["subjects"][0]["refs"][0], person, "{r}");
    }
    let rows_of = |r: &Value, table: &str| {
        r["table_counts"]
            .as_array()
            .expect("table_counts")
            .iter()
            .find(|t| t["table"] == table)
            .map(|t| t["rows"].as_u64().expect("rows"))
    };
    for (table, rows) in &before {
        assert_eq!(
            rows_of(exports[0], table),
            Some(rows.len() as u64),
            "exported rows of {table}"
        );
    }
    let (dry, done, again) = (erasures[0], erasures[1], erasures[2]);
    assert_eq!(dry["dry_run"], true);
    assert!(done.get("dry_run").is_none() && again.get("dry_run").is_none());
    let bank = |r: &Value| {
        r["table_counts"][0]["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["column"] == "bank_account")
            .cloned()
            .expect("bank_account erased")
    };
    assert_eq!(bank(dry)["erase"], "null");
    assert_eq!(bank(dry)["changed"], 1, "would change");
    assert_eq!(bank(done)["changed"], 1, "changed");
    assert_eq!(bank(again)["changed"], 0, "nothing left to change");
    assert_eq!(again["rows"], 0);
    let (ok, out, _) = pgvakt(vec![
        "audit".into(),
        "search".into(),
        "--subject".into(),
        id.to_string(),
        "--event".into(),
        "subject_erase".into(),
        "--format".into(),
        "json".into(),
        "--key-file".into(),
        dir.path().join("subject.key").display().to_string(),
        own_dir.display().to_string(),
    ])
    .await;
    assert!(ok && out.matches("subject_erase").count() == 3, "{out}");
}

/// The subject's e-mail, phone, street address, bank account and birth date as they were.
fn direct_rows_values(before: &[(String, BTreeSet<String>)]) -> Vec<String> {
    let contacts = &before[0].1;
    let mut out = Vec::new();
    for row in contacts {
        let v: Value = serde_json::from_str(row).expect("json");
        for c in [
            "email",
            "phone",
            "street_address",
            "bank_account",
            "date_of_birth",
        ] {
            if let Some(s) = v[c].as_str() {
                out.push(s.to_owned());
            }
        }
    }
    out
}
