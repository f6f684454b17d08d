//! One person, one pseudonym: reading person 42 through `contacts` and through `activities`
//! (whose `contact_id` refers to the `contacts` subject type) records the same pseudonym, so
//! `audit search --subject 42` lists both sessions, and a count that may have included 42
//! appears in the "possible" section. Records carry the role's declared purpose and legal
//! basis.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::trail::all_records;
use crate::common::{self, Env, EnvOptions};

fn search(dir: &Path, key: &Path, args: &[&str]) -> (Vec<Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "search", "--key-file"])
        .arg(key)
        .args(args)
        .arg(dir)
        .output()
        .expect("search");
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (json, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn a_person_read_through_contacts_and_activities_has_one_pseudonym() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(60),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    let dir = keys.path().join("audit");
    let subject_key = keys.path().join("subject.key");
    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let sales = env.connect("sales", "sales", "crm").await.expect("sales");
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    // 42 through contacts; the key is added as a hidden column.
    secretary
        .simple_query("SELECT first_name, email FROM contacts WHERE id = 42")
        .await
        .expect("contacts read");
    // 42 through activities, by another user; activities of 43 by a third read.
    let rows = sales
        .query(
            "SELECT kind, body FROM activities WHERE contact_id = $1",
            &[&42i64],
        )
        .await
        .expect("activities read");
    assert!(!rows.is_empty(), "the demo has activities for contact 42");
    sales
        .simple_query("SELECT body FROM activities WHERE contact_id = 43")
        .await
        .expect("activities of 43");
    // A count may have included 42 without naming anyone.
    marketing
        .simple_query("SELECT count(email) FROM contacts")
        .await
        .expect("count");
    drop((secretary, sales, marketing));

    let mut recs = Vec::new();
    for _ in 0..100 {
        recs = all_records(&dir);
        if recs.iter().filter(|r| r["event"] == "disconnect").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reads: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "statement_read")
        .collect();
    let refs_of = |user: &str, table: &str| -> Vec<Value> {
        reads
            .iter()
            .filter(|r| {
                r["user"] == user
                    && r["tables"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t["table"] == table))
            })
            .map(|r| r["subjects"].clone())
            .collect()
    };
    let via_contacts = refs_of("secretary", "public.contacts");
    let via_activities = refs_of("sales", "public.activities");
    assert_eq!(via_contacts.len(), 1, "{reads:?}");
    assert_eq!(via_activities.len(), 2, "{reads:?}");
    // Both name the subject type contacts, and 42 has the same pseudonym in both.
    assert_eq!(via_contacts[0][0]["table"], "public.contacts");
    assert_eq!(via_activities[0][0]["table"], "public.contacts");
    assert_eq!(via_contacts[0][0]["refs"], via_activities[0][0]["refs"]);
    assert_ne!(via_activities[0][0]["refs"], via_activities[1][0]["refs"]);
    // Tables name their subject type, and records the role's purpose and legal basis.
    let activities_read = reads
        .iter()
        .find(|r| r["user"] == "sales")
        .expect("sales read");
    assert_eq!(activities_read["tables"][0]["subject"], "public.contacts");
    assert_eq!(activities_read["purpose"], "sales and invoicing");
    assert_eq!(activities_read["legal_basis"], "contract");
    let login = recs
        .iter()
        .find(|r| r["event"] == "login" && r["user"] == "marketing")
        .expect("login");
    assert_eq!(login["legal_basis"], "consent");

    // The DPO's question: who received 42's data, through either table.
    let (found, _) = search(&dir, &subject_key, &["--subject", "42", "--format", "json"]);
    let mut yes: Vec<String> = found
        .iter()
        .filter(|r| r["match"] == "yes" && r["event"] == "statement_read")
        .map(|r| r["user"].as_str().unwrap_or_default().to_owned())
        .collect();
    yes.sort();
    assert_eq!(yes, ["sales", "secretary"]);
    let possible: Vec<&Value> = found.iter().filter(|r| r["match"] == "possible").collect();
    assert_eq!(possible.len(), 1, "{possible:?}");
    assert_eq!(possible[0]["user"], "marketing");
    let (_, table) = search(
        &dir,
        &subject_key,
        &["--subject", "42", "--table", "contacts"],
    );
    assert!(
        table.contains("public.activities(") && table.contains("public.contacts("),
        "{table}"
    );
    assert!(table.contains("\npossible: 1 reads"), "{table}");
    let (found, _) = search(&dir, &subject_key, &["--subject", "43", "--format", "json"]);
    let yes: Vec<&Value> = found.iter().filter(|r| r["match"] == "yes").collect();
    assert_eq!(yes.len(), 1);
    assert_eq!(yes[0]["user"], "sales");
    assert!(common::schema::assert_audit_dir_valid(&dir) >= 10);
}
