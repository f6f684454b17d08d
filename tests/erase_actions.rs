//! `subject erase` with the `pseudonym` action and `rows: delete`, against the demo CRM in
//! PostgreSQL: the column gets the person's keyed pseudonym (HMAC-SHA256 under the policy's
//! pseudonym key, tagged per column), not the old value; the same pseudonym on every run, so a
//! second run changes nothing; another person gets another one. A table declared `rows: delete`
//! loses the person's rows and no one else's. Without the key, or on a column that is not text,
//! the erasure stops before changing anything.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::common;

use common::cli::pgvakt;
use common::{Env, EnvOptions};

const KEY: &str = "the erasure pseudonym key of these tests";

/// The demo policy with the pseudonym key in `key` (none when `None`) and `erase` columns of
/// contacts replaced by `contacts_erase`; activities' subjects also get a pseudonym.
fn policy(dir: &Path, name: &str, key: Option<&Path>, contacts_erase: &str) -> PathBuf {
    let text = common::policy_files::demo_policy();
    let key_lines =
        "pseudonym:\n  key_env: PGVAKT_PSEUDONYM_KEY\n  key_file: /etc/pgvakt/pseudonym.key\n";
    let contacts =
        "        columns: {date_of_birth: \"null\", bank_account: \"null\", notes: \"null\"}\n";
    let activities = "        columns: {body: \"null\"}\n";
    let consents = "        withdrawn_at: none\n";
    for part in [key_lines, contacts, activities, consents] {
        assert!(
            text.contains(part),
            "the demo policy changed; update this test: {part}"
        );
    }
    let changed = text
        .replacen(
            key_lines,
            &key.map_or(String::new(), |k| {
                format!("pseudonym:\n  key_file: {}\n", k.display())
            }),
            1,
        )
        .replacen(contacts, &format!("        columns: {contacts_erase}\n"), 1)
        .replacen(
            activities,
            "        columns: {body: \"null\", subject: pseudonym}\n",
            1,
        )
        .replacen(
            consents,
            "        withdrawn_at: none\n      erase:\n        rows: delete\n",
            1,
        );
    let p = dir.join(name);
    std::fs::write(&p, changed).expect("policy");
    p
}

/// What the erasure should write: `erased-` and 16 hex digits of the person's HMAC, then 8 of
/// the column's tag (computed here from the documented formula, not by pgvakt).
fn expected(subject_type: &str, id: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).expect("key");
    mac.update(format!("{subject_type}\0{id}").as_bytes());
    let hex = hex::encode(mac.finalize().into_bytes());
    format!("erased-{}", &hex[..16])
}

#[tokio::test]
async fn pseudonyms_are_keyed_and_stable_and_deleted_rows_only_the_persons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("pseudonym.key");
    std::fs::write(&key, format!("{KEY}\n")).expect("key file");
    let with_key = policy(
        dir.path(),
        "crm.yaml",
        Some(&key),
        "{date_of_birth: \"null\", bank_account: \"null\", notes: \"null\", email: pseudonym, last_name: pseudonym}",
    );
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(40),
        policy_file: Some(with_key.clone()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    // Straight to PostgreSQL: only the command's own records tell of the erasure.
    let config = common::trail::dpo_config(dir.path(), &common::audit_yaml(dir.path()));
    let own_dir = dir.path().join("audit").join("dpo");
    let upstream = format!(
        "{} sslmode=disable",
        env.cluster.dsn("postgres", "postgres", "crm")
    );
    // Two people with an e-mail address, an activity and a consent.
    let ids: Vec<i64> = direct
        .query(
            "SELECT id FROM contacts c WHERE email IS NOT NULL
               AND EXISTS (SELECT 1 FROM activities a WHERE a.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM consents s WHERE s.contact_id = c.id)
             ORDER BY id LIMIT 2",
            &[],
        )
        .await
        .expect("subjects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2);
    let state = |id: i64| {
        let direct = &direct;
        async move {
            let c = direct
                .query_one(
                    "SELECT email, last_name, first_name FROM contacts WHERE id = $1",
                    &[&id],
                )
                .await
                .expect("contact");
            let subjects: Vec<Option<String>> = direct
                .query(
                    "SELECT subject FROM activities WHERE contact_id = $1 ORDER BY id",
                    &[&id],
                )
                .await
                .expect("activities")
                .iter()
                .map(|r| r.get(0))
                .collect();
            (
                c.get::<_, Option<String>>(0),
                c.get::<_, Option<String>>(1),
                c.get::<_, Option<String>>(2),
                subjects,
            )
        }
    };
    let erase = |policy: &Path, id: i64, dry: bool| {
        let mut a = vec![
            "subject".to_owned(),
            "erase".into(),
            id.to_string(),
            "--upstream".into(),
            upstream.clone(),
            "--policy".into(),
            policy.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        if dry {
            a.push("--dry-run".into());
        }
        pgvakt(a)
    };
    let consents = |id: i64| {
        let direct = &direct;
        async move {
            direct
                .query_one(
                    "SELECT count(*) FROM consents WHERE contact_id = $1",
                    &[&id],
                )
                .await
                .expect("consents")
                .get::<_, i64>(0)
        }
    };
    let (email_before, last_before, _, _) = state(ids[0]).await;
    let other_before = state(ids[1]).await;
    let (consents_before, other_consents) = (consents(ids[0]).await, consents(ids[1]).await);
    assert!(consents_before > 0 && other_consents > 0);

    // Fail closed before any change: no key, or a pseudonym on a date column.
    let no_key = policy(dir.path(), "no-key.yaml", None, "{email: pseudonym}");
    let on_date = policy(
        dir.path(),
        "on-date.yaml",
        Some(&key),
        "{date_of_birth: pseudonym}",
    );
    for (p, says) in [
        (&no_key, "needs the policy's pseudonym key"),
        (&on_date, "text columns only"),
    ] {
        let (code, out) = erase(p, ids[0], false).await;
        assert!(code == 2 && out.contains(says), "{}: {out}", p.display());
        assert_eq!(state(ids[0]).await.0, email_before, "nothing changed");
    }

    let (code, out) = erase(&with_key, ids[0], false).await;
    assert!(
        code == 0 && out.contains("email: pseudonym (1 rows changed)"),
        "{out}"
    );
    let (email, last, first, subjects) = state(ids[0]).await;
    let person = expected("public.contacts", ids[0]);
    let email = email.expect("email kept as a pseudonym");
    let last = last.expect("last name kept as a pseudonym");
    assert!(
        email.starts_with(&format!("{person}-")),
        "{email} is not {person}-…"
    );
    assert!(last.starts_with(&format!("{person}-")), "{last}");
    assert_eq!(email.len(), person.len() + 9, "{email}");
    assert_ne!(email, last, "each column has its own tag");
    assert_ne!(Some(email.clone()), email_before);
    assert_ne!(Some(last.clone()), last_before);
    assert_eq!(first.as_deref(), Some("***"), "not named: redacted");
    assert!(!subjects.is_empty());
    for s in &subjects {
        let s = s.as_deref().expect("activity subject kept as a pseudonym");
        assert!(s.starts_with(&format!("{person}-")) && s != email, "{s}");
    }
    assert_eq!(state(ids[1]).await, other_before, "no one else is touched");
    assert!(
        out.contains(&format!("public.consents: {consents_before} rows deleted")),
        "{out}"
    );
    assert_eq!(consents(ids[0]).await, 0, "rows: delete");
    assert_eq!(
        consents(ids[1]).await,
        other_consents,
        "only the person's rows"
    );

    // Stable: a second run and a dry run find nothing to change, and the values stay.
    let after = state(ids[0]).await;
    let (code, out) = erase(&with_key, ids[0], false).await;
    assert!(code == 0 && out.contains("nothing to erase"), "{out}");
    let (code, out) = erase(&with_key, ids[0], true).await;
    assert!(code == 0 && out.contains("nothing to erase"), "{out}");
    assert_eq!(state(ids[0]).await, after);

    // Another person, another pseudonym.
    let (code, out) = erase(&with_key, ids[1], false).await;
    assert_eq!(code, 0, "{out}");
    let second = state(ids[1]).await.0.expect("email");
    assert!(
        second.starts_with(&expected("public.contacts", ids[1])),
        "{second}"
    );
    assert_ne!(second, email);

    // Recorded by the command: two refusals to start, then the erasures, each with the
    // database user, counts and the action per column, and no value.
    let records = common::trail::all_records(&own_dir);
    let outcomes: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().expect("outcome"),
                r["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes[..3],
        [
            ("error", "failed: plan"),
            ("error", "failed: plan"),
            ("ok", "")
        ],
        "{records:?}"
    );
    let first = &records[2];
    assert_eq!(first["event"], "subject_erase");
    assert_eq!(first["user"], "postgres");
    let email_count = first["table_counts"][0]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["column"] == "email")
        .cloned()
        .expect("email");
    assert_eq!(email_count["erase"], "pseudonym");
    assert_eq!(email_count["changed"], 1);
    let deleted = first["table_counts"]
        .as_array()
        .expect("table_counts")
        .iter()
        .find(|t| t["table"] == "public.consents")
        .cloned()
        .expect("consents counted");
    assert_eq!(
        (&deleted["rows"], &deleted["deleted"]),
        (&consents_before.into(), &true.into())
    );
    let text = records.iter().map(|r| r.to_string()).collect::<String>();
    for v in [email_before.as_deref(), last_before.as_deref()]
        .into_iter()
        .flatten()
    {
        assert!(!text.contains(v), "{v} in the records");
    }
    assert!(common::schema::assert_audit_dir_valid(&own_dir) >= 5);
    let (intact, report) = common::trail::verify(&dir.path().join("chain.key"), &own_dir);
    assert!(intact, "{report}");
}
