//! `pgvakt policy check` catches mistakes before end users meet them: masks that cannot apply
//! to their columns (offline for built-in masks, by PostgreSQL for every mask against a live
//! database), findings at the policy line they concern, `--strict`, an offline `--snapshot`
//! mode, and a detector that looks at values (IBANs, identity numbers, Art. 9 words).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::{in_repo, text};
use common::Env;

fn pgvakt(args: &[&str]) -> Output {
    in_repo(args)
        .env_remove("PGSSLMODE")
        .output()
        .expect("run pgvakt")
}

/// The demo policy with `edits` applied (each must change it), written to `dir`; the file
/// and its text.
fn policy_with(dir: &Path, edits: &[(&str, &str)]) -> (PathBuf, String) {
    let mut policy = common::policy_files::demo_policy();
    for (from, to) in edits {
        let next = policy.replacen(from, to, 1);
        assert_ne!(next, policy, "the demo policy no longer has {from:?}");
        policy = next;
    }
    let file = dir.join("crm.yaml");
    std::fs::write(&file, &policy).unwrap();
    (file, policy)
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

const SALES_BIRTH: &str = "      contacts.date_of_birth: {mask: date_year}\n\n  marketing:";

#[test]
fn offline_check_finds_built_in_masks_on_the_wrong_type_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let (file, policy) = policy_with(
        dir.path(),
        &[
            (
                SALES_BIRTH,
                "      contacts.date_of_birth: {mask: email}\n\n  marketing:",
            ),
            (
                "        postal_code: contact",
                "        postal_cod: contact",
            ),
        ],
    );
    let out = pgvakt(&[
        "policy",
        "check",
        file.to_str().unwrap(),
        "--snapshot",
        "policies/schema/crm-snapshot.json",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let mask_line = line_of(&policy, "{mask: email}");
    assert!(
        t.contains(&format!("crm.yaml:{mask_line}:"))
            && t.contains(
                "mask 'email' cannot apply to public.contacts(date_of_birth) of type date"
            ),
        "{t}"
    );
    let typo_line = line_of(&policy, "postal_cod:");
    assert!(
        t.contains(&format!("crm.yaml:{typo_line}:")) && t.contains("did you mean 'postal_code'"),
        "a column typo caught without a database, at its line: {t}"
    );
    assert!(!t.contains(":0:0: error"), "{t}");
}

#[test]
fn strict_fails_on_warnings() {
    // The demo policy's only warning: the pseudonym key file of a production install.
    let plain = pgvakt(&["policy", "check", "policies/crm.yaml"]);
    assert!(plain.status.success(), "{}", text(&plain));
    assert!(text(&plain).contains("1 warning(s)"), "{}", text(&plain));
    let strict = pgvakt(&["policy", "check", "policies/crm.yaml", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    assert!(text(&strict).contains("--strict"), "{}", text(&strict));
}

#[tokio::test]
async fn live_check_has_postgresql_prepare_every_mask_and_reads_values() {
    let env = Env::start_demo(30).await;
    let direct = env.cluster.connect("crm").await.unwrap();
    direct
        .batch_execute(
            "CREATE TABLE payouts (id int, ref text, national text, remark text); \
             INSERT INTO payouts VALUES (1, 'NO93 8601 1117 947', '01019012345', 'diagnosis: diabetes, on sick leave')",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, policy) = policy_with(
        dir.path(),
        &[
            (
                "roles:\n",
                "masks:\n  first4: {sql: \"left({col}, 4)\"}\n\nroles:\n",
            ),
            (SALES_BIRTH, "      contacts.date_of_birth: {mask: first4}\n\n  marketing:"),
            (
                "    restrictions:\n      subject_key",
                "    payouts:\n      personal: false\n      columns: {id: none, ref: none, national: none, remark: none}\n    restrictions:\n      subject_key",
            ),
        ],
    );
    let dsn = env
        .cluster
        .dsn(env.cluster.superuser(), env.cluster.password(), "crm");
    let out = pgvakt(&[
        "policy",
        "check",
        file.to_str().unwrap(),
        "--upstream",
        &dsn,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = line_of(&policy, "{mask: first4}");
    assert!(
        t.contains(&format!("crm.yaml:{line}:"))
            && t.contains(
                "mask 'first4' cannot apply to public.contacts(date_of_birth) of type date"
            )
            && t.contains(
                "PostgreSQL: function left(date, integer) does not exist (SQLSTATE 42883)"
            ),
        "{t}"
    );
    // The same custom mask offline renders (its type is PostgreSQL's to check): no error.
    let offline = pgvakt(&[
        "policy",
        "check",
        file.to_str().unwrap(),
        "--snapshot",
        "policies/schema/crm-snapshot.json",
    ]);
    assert!(!text(&offline).contains("first4"), "{}", text(&offline));

    // Values: an IBAN and an identity number in columns called harmless names, and Art. 9
    // words in free text classified as not personal.
    for (column, why) in [
        ("public.payouts.ref", "IBANs"),
        ("public.payouts.national", "national identity numbers"),
    ] {
        assert!(
            t.lines()
                .any(|l| l.contains(column) && l.contains(why) && l.contains("warning")),
            "{column}: {t}"
        );
    }
    assert!(
        t.lines().any(|l| l.contains("public.payouts.remark")
            && l.contains("special-category")
            && l.contains("'diagnos")),
        "{t}"
    );
    // Every finding is at a line of the file.
    assert!(!t.contains(":0:0:"), "{t}");
}
