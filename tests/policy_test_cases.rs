//! `pgvakt policy test` as a security team uses it in CI, offline against the committed schema
//! snapshot: a directory of test files, cases by login user (grants to groups, grants with a
//! period), expected SQLSTATE and message, and failures that say what actually happened.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;
use crate::common::cli::{in_repo, text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pgvakt(args: &[&str]) -> Output {
    in_repo(args).output().expect("run pgvakt")
}

/// The demo policy with a grant to a PostgreSQL group and a grant for the first half of 2026.
fn policy(dir: &Path) -> PathBuf {
    let demo = common::policy_files::demo_policy();
    assert!(demo
        .trim_end()
        .ends_with("{user: marketing, role: marketing}"));
    let extra = "  - {group: sales_team, role: sales, reason: team membership}\n  \
                 - {user: temp, role: secretary, valid_from: 2026-01-01, valid_until: 2026-06-30, reason: leave cover}\n";
    let p = dir.join("crm.yaml");
    std::fs::write(&p, format!("{}\n{extra}", demo.trim_end())).unwrap();
    p
}

const PASSING: &str = r#"policy: [../policy/crm.yaml]
schema: SNAPSHOT   # the older name of `snapshot:`
cases:
  - name: "a member of sales_team gets sales"
    user: carl
    groups: [sales_team]
    expect_role: sales
    sql: SELECT bank_account FROM contacts
    expect: rewrite
    masked: [contacts.bank_account]
  - name: "temp is a secretary in March"
    user: temp
    at: 2026-03-01
    expect_role: secretary
    sql: SELECT 1
    expect: allow
  - name: "temp is a secretary to the end of the grant's last day"
    user: temp
    at: "2026-06-30T23:59:59Z"
    expect_role: secretary
    sql: SELECT 1
    expect: allow
  - name: "temp falls back to nobody in July"
    user: temp
    at: 2026-07-01
    expect_role: nobody
    sql: SELECT email FROM contacts
    expect: refuse
    sqlstate: "42501"
  - name: "marketing may not read bank accounts"
    role: marketing
    sql: SELECT bank_account FROM contacts
    expect: refuse
    sqlstate: "42501"
    message: bank_account
    blocked: [contacts.bank_account]
"#;

const FAILING: &str = r#"policy: [../policy/crm.yaml]
snapshot: SNAPSHOT
cases:
  - name: "wrongly expects marketing to read bank accounts"
    role: marketing
    sql: SELECT first_name, bank_account FROM contacts
    expect: allow
  - name: "wrongly expects the secretary to see bank accounts"
    role: secretary
    sql: SELECT bank_account FROM contacts
    expect: allow
  - name: "wrong SQLSTATE"
    role: marketing
    sql: SELECT bank_account FROM contacts
    expect: refuse
    sqlstate: "54001"
    message: date_of_birth
  - name: "a typo in the role"
    role: secretry
    sql: SELECT 1
    expect: allow
  - name: "carl without his groups"
    user: carl
    expect_role: sales
    sql: SELECT first_name FROM contacts
    expect: allow
  - name: "role and user"
    role: sales
    user: carl
    sql: SELECT 1
    expect: allow
  - name: "expects sales to read ids unchanged"
    role: sales
    sql: SELECT id FROM contacts
    expect: allow
"#;

#[test]
fn directories_users_sqlstates_and_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    policy(&dir.path().join("policy"));
    let cases = dir.path().join("cases");
    std::fs::create_dir(&cases).unwrap();
    let snapshot = root().join("policies/schema/crm-snapshot.json");
    let snapshot = snapshot.to_str().unwrap();
    std::fs::write(cases.join("a.yaml"), PASSING.replace("SNAPSHOT", snapshot)).unwrap();
    std::fs::write(cases.join("b.yml"), FAILING.replace("SNAPSHOT", snapshot)).unwrap();
    std::fs::write(cases.join("README.md"), "not a test file").unwrap();
    let a = cases.join("a.yaml");

    let one = pgvakt(&["policy", "test", a.to_str().unwrap()]);
    assert!(one.status.success(), "{}", text(&one));
    assert!(
        text(&one).ends_with("5 passed, 0 failed\n"),
        "{}",
        text(&one)
    );

    let all = pgvakt(&["policy", "test", cases.to_str().unwrap()]);
    let t = text(&all);
    assert_eq!(all.status.code(), Some(1), "{t}");
    assert!(t.ends_with("5 passed, 7 failed\n"), "{t}");
    let b = cases.join("b.yml").display().to_string();
    for line in [
        // What the proxy would have done, not only that it differs.
        format!("{b}:4: FAIL wrongly expects marketing to read bank accounts: expected allow, got refuse"),
        format!("{b}:4: FAIL wrongly expects marketing to read bank accounts: got refuse as role marketing; blocked: contacts.bank_account; refused with 42501: "),
        format!("{b}:8: FAIL wrongly expects the secretary to see bank accounts: got rewrite as role secretary; masked: contacts.bank_account"),
        format!("{b}:12: FAIL wrong SQLSTATE: expected SQLSTATE 54001, got 42501"),
        format!("{b}:12: FAIL wrong SQLSTATE: expected a message containing \"date_of_birth\""),
        format!("{b}:18: FAIL a typo in the role: unknown role \"secretry\"; the policy defines: "),
        format!("{b}:22: FAIL carl without his groups: expected role sales, got nobody"),
        format!("{b}:22: FAIL carl without his groups: got refuse as role nobody (via default_role"),
        format!("{b}:27: FAIL role and user: give either role: or user:"),
        // Nothing masked: the rewrite is the row rules', and the case says which.
        format!("{b}:32: FAIL expects sales to read ids unchanged: got rewrite as role sales; a rewrite only for row rules: public.contacts (retention: public.contacts.last_activity_at within 10 years"),
    ] {
        assert!(t.lines().any(|l| l.starts_with(&line)), "no line {line:?} in\n{t}");
    }
    // The refusal text the client would get is shown in full.
    assert!(t.contains("bank_account"), "{t}");

    // The snapshot option is --snapshot; --schema is still accepted but not shown.
    let old = pgvakt(&["policy", "test", a.to_str().unwrap(), "--schema", snapshot]);
    assert!(old.status.success(), "{}", text(&old));
    let help = text(&pgvakt(&["policy", "test", "--help"]));
    assert!(help.contains("--snapshot"), "{help}");
    assert!(!help.contains("--schema"), "{help}");
}
