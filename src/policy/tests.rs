//! Tests of the whole load pipeline: the demo policy and validation messages.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use super::compile::compile_sources;
use super::model::{Capability, ColumnAction, ColumnType, RoleRules, StatementClass};
use super::source::parse;
use super::*;

const KEY: &str = "0123456789abcdef0123456789abcdef";

pub(super) fn demo() -> PolicySet {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.yaml"));
    load_with_env(&[path], &|k| {
        (k == "PGVAKT_PSEUDONYM_KEY").then(|| KEY.to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Loads YAML text as file `p.yaml`, returning the rendered problems.
pub(super) fn problems(yaml: &str) -> Vec<String> {
    let mut d = Diagnostics::default();
    let f = parse("p.yaml", yaml.to_owned(), &mut d);
    match compile_sources(&[f], &|_| None, d) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .diagnostics
            .items
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

pub(super) const BASE: &str = "default_role: nobody\ninventory:\n  tables:\n    contacts:\n      subject_key: id\n      columns: {id: none, email: contact, bank_account: financial}\nroles:\n  nobody: {default: block}\n";

pub(super) fn action_name(a: &ColumnAction) -> String {
    match a {
        ColumnAction::Allow => "allow".into(),
        ColumnAction::Block => "block".into(),
        ColumnAction::Mask(m) => format!("mask:{}", m.name),
    }
}

#[test]
fn demo_policy_loads_and_decides() {
    let p = demo();
    assert_eq!(p.version.len(), 12);
    let d =
        |role: &str, t: &str, c: &str| action_name(&p.roles[role].column("public", t, c).action);
    assert_eq!(d("secretary", "contacts", "email"), "allow");
    assert_eq!(d("secretary", "contacts", "bank_account"), "mask:redact");
    assert_eq!(
        d("secretary", "contacts", "date_of_birth"),
        "mask:date_year"
    );
    assert_eq!(d("sales", "contacts", "bank_account"), "mask:bank_account");
    assert_eq!(d("marketing", "contacts", "email"), "allow");
    assert_eq!(d("marketing", "contacts", "phone"), "mask:redact");
    assert_eq!(d("marketing", "contacts", "bank_account"), "block");
    assert_eq!(d("marketing", "contacts", "date_of_birth"), "block");
    assert_eq!(d("dpo", "contacts", "bank_account"), "allow");
    assert_eq!(d("nobody", "contacts", "email"), "block");
    assert_eq!(d("nobody", "contacts", "id"), "allow");
    assert_eq!(d("nobody", "companies", "name"), "allow");
    // A table added later is caught by the `*.email` pattern.
    assert_eq!(d("nobody", "newsletter", "email"), "block");
    assert_eq!(d("secretary", "contacts", "unlisted_column"), "mask:redact");
    assert!(p.roles["admin"].is_unrestricted());
    assert!(!p.roles["marketing"].allows_class(StatementClass::Write));
    assert!(p.roles["secretary"].allows_class(StatementClass::Utility));
    assert!(!p.roles["secretary"].allows(Capability::Notify));
    assert!(p.roles["admin"].allows(Capability::Notify));
    let rule = p.roles["secretary"]
        .column("public", "contacts", "bank_account")
        .rule;
    assert!(
        rule.starts_with("roles.secretary.categories.financial ("),
        "{rule}"
    );
    assert_eq!(
        p.table("public", "activities").and_then(|t| t.subject_key),
        Some("contact_id".into())
    );
}

#[test]
fn resolve_grants_groups_and_expiry() {
    let p = demo();
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    assert_eq!(p.resolve("sales", &[], now).role.name, "sales");
    let r = p.resolve("mallory", &[], now);
    assert_eq!(r.role.name, "nobody");
    assert!(r.via.contains("no grant"), "{}", r.via);

    let yaml = format!("{BASE}  reader: {{categories: {{contact: allow}}}}\n  writer: {{categories: {{contact: allow}}}}\ngrants:\n  - {{user: ann, role: reader, valid_until: 2025-01-31}}\n  - {{group: staff, role: reader}}\n  - {{group: ops, role: writer, valid_from: \"2025-01-01T00:00:00Z\"}}\n");
    let mut d = Diagnostics::default();
    let f = parse("p.yaml", yaml, &mut d);
    let p = compile_sources(&[f], &|_| None, d).unwrap_or_else(|e| panic!("{e}"));
    let jan = UNIX_EPOCH + Duration::from_secs(1_737_000_000); // 2025-01-16
    let mar = UNIX_EPOCH + Duration::from_secs(1_741_000_000); // 2025-03-03
    assert_eq!(p.resolve("ann", &[], jan).role.name, "reader");
    let expired = p.resolve("ann", &[], mar);
    assert_eq!(expired.role.name, "nobody");
    assert!(expired.via.contains("not valid now"), "{}", expired.via);
    assert_eq!(p.resolve("bob", &["staff".into()], mar).role.name, "reader");
    let both = p.resolve("bob", &["staff".into(), "ops".into()], mar);
    assert_eq!(both.role.name, "nobody");
    assert!(both.via.contains("conflict"), "{}", both.via);
}

#[test]
fn unknown_key_has_location_path_and_suggestion() {
    let got = problems(&format!(
        "{BASE}  sales:\n    categoris: {{contact: allow}}\n"
    ));
    assert_eq!(got, vec!["p.yaml:10:5: error: roles.sales.categoris: unknown field `categoris`, expected one of description, purpose, legal_basis, unrestricted, default, categories, columns, statements, capabilities, writes, purposes, rows, see_restricted, row_pushdown, limits (did you mean 'categories'?)"]);
}

#[test]
fn all_semantic_problems_are_reported_at_once() {
    let yaml = format!(
        "{BASE}  sales:\n    categories:\n      contct: allow\n      financial: {{mask: bank_acount}}\n    columns:\n      contacs.email: allow\n      contacts.emial: allow\ngrants:\n  - {{user: bob, role: sals}}\n"
    );
    let got = problems(&yaml);
    assert_eq!(
        got,
        vec![
            "p.yaml:11:7: error: roles.sales.categories.contct: unknown category 'contct' (did you mean 'contact'?)",
            "p.yaml:12:25: error: roles.sales.categories.financial.mask: unknown mask method 'bank_acount' (did you mean 'bank_account'?)",
            "p.yaml:14:7: error: roles.sales.columns.contacs.email: unknown table 'public.contacs' (not in the inventory) (did you mean 'contacts'?)",
            "p.yaml:15:7: error: roles.sales.columns.contacts.emial: unknown column 'emial' of table 'public.contacts' (did you mean 'email'?)",
            "p.yaml:17:23: error: grants[0].role: unknown role 'sals' (did you mean 'sales'?)",
        ]
    );
}

#[test]
fn bad_custom_templates_are_rejected() {
    for (sql, msg) in [
        ("left(x, 2)", "template must contain the {col} placeholder"),
        (
            "{col}; DROP TABLE contacts",
            "template must not contain ';'",
        ),
        (
            "(SELECT max(email) FROM contacts) || {col}",
            "template must not contain sub-queries",
        ),
        (
            "{col} || bank_account",
            "template may only read {col}, not 'bank_account'",
        ),
        ("left({col}, ", "template is not a SQL expression"),
    ] {
        let got = problems(&format!("{BASE}masks:\n  m:\n    sql: \"{sql}\"\n"));
        assert_eq!(got.len(), 1, "{sql}: {got:?}");
        assert!(
            got[0].starts_with(&format!("p.yaml:11:10: error: masks.m.sql: {msg}")),
            "{sql}: {got:?}"
        );
    }
    assert!(problems(&format!(
        "{BASE}masks:\n  m:\n    sql: \"left({{col}}, 2) || '***'\"\n"
    ))
    .is_empty());
}

#[test]
fn duplicates_and_pattern_conflicts() {
    let got = problems(&format!(
        "{BASE}  a:\n    columns:\n      contacts.email: allow\n      public.contacts.email: block\n      \"*.e*\": allow\n      \"*.*l\": block\n"
    ));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("p.yaml:12:7: error: roles.a.columns.public.contacts.email: duplicate rule for the same column, first at p.yaml:11:7"), "{got:?}");
    assert!(got[1].starts_with("p.yaml:14:7: error: roles.a.columns.*.*l: pattern conflicts with the rule at p.yaml:13:7"), "{got:?}");

    let got = problems(&format!("{BASE}  nobody: {{default: block}}\n"));
    assert!(got[0].contains("duplicate"), "{got:?}");

    let got = problems("default_role: nobody\nroles: {nobody: {default: block}}\ninventory:\n  columns:\n    \"*.mail*\": contact\n    \"*.*box\": none\n");
    assert_eq!(got, vec!["p.yaml:6:5: error: inventory.columns.*.*box: pattern conflicts with 'public.*.mail*' at p.yaml:5:5: a column could match both with different categories"]);
}

#[test]
fn default_role_must_not_open_personal_data() {
    let got = problems(&BASE.replace(
        "nobody: {default: block}",
        "nobody: {categories: {contact: allow}}",
    ));
    assert_eq!(got, vec!["p.yaml:1:15: error: default_role: role 'nobody' allows personal data, but the default role must not (privacy by default)"]);
}

#[test]
fn duplicates_across_files_are_errors() {
    let mut d = Diagnostics::default();
    let a = parse("a.yaml", BASE.to_owned(), &mut d);
    let b = parse(
        "b.yaml",
        "roles:\n  nobody: {default: block}\n".to_owned(),
        &mut d,
    );
    let err = compile_sources(&[a, b], &|_| None, d)
        .err()
        .map(|e| e.diagnostics.items[0].to_string());
    assert_eq!(
        err.as_deref(),
        Some("b.yaml:2:3: error: roles.nobody: duplicate definition, first defined at a.yaml:8:3")
    );
}

#[test]
fn pseudonym_without_key_is_unavailable_not_defaulted() {
    let yaml = BASE.replace(
        "nobody: {default: block}",
        "nobody: {default: {mask: pseudonym}}",
    );
    let mut d = Diagnostics::default();
    let f = parse("p.yaml", yaml, &mut d);
    let p = compile_sources(&[f], &|_| None, d).unwrap_or_else(|e| panic!("{e}"));
    assert!(p
        .warnings
        .items
        .iter()
        .any(|w| w.message.contains("no pseudonym key")));
    let ColumnAction::Mask(m) = p.roles["nobody"]
        .column("public", "contacts", "email")
        .action
    else {
        panic!()
    };
    let ty = ColumnType {
        sql_name: "text".into(),
        category: 'S',
    };
    assert!(m.render("email", &ty).is_err());
}

#[test]
fn json_schema_is_valid_json_and_lists_every_top_level_key() {
    let text = include_str!("../../policies/schema/pgvakt-policy.schema.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let props = v["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let mut want: Vec<String> = source::TOP_LEVEL_KEYS
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
    let mut got = props.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // And the loader really accepts each of them (an unknown one would be refused).
    for key in source::TOP_LEVEL_KEYS {
        let mut d = Diagnostics::default();
        parse("k.yaml", format!("{key}: null\n"), &mut d);
        assert!(
            !d.items.iter().any(|i| i.message.contains("unknown field")),
            "{key}: {d}"
        );
    }
}

#[test]
fn demo_test_cases_parse_and_run() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/tests/crm.yaml"
    ));
    let tests = testcases::parse_test_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(tests.cases.len() >= 25);
    let p = demo();
    for c in &tests.cases {
        if let Some(role) = &c.value.role {
            assert!(p.roles.contains_key(role), "{role}");
        }
    }
    // A stand-in analyser that refuses everything: only the refuse cases pass.
    let report = testcases::run("crm.yaml", &tests, |_, _| {
        Ok(testcases::TestOutcome {
            role: "stand_in".into(),
            via: None,
            decision: testcases::Decision::Refuse,
            masked: vec![],
            blocked: vec![
                "contacts.bank_account".into(),
                "contacts.date_of_birth".into(),
                "contacts.email".into(),
            ],
            kept: vec![],
            rows: vec![],
            sql_out: None,
            error: Some(("42501".into(), "pgvakt: refused".into())),
        })
    });
    let refusals = tests
        .cases
        .iter()
        .filter(|c| {
            let c = &c.value;
            c.expect == testcases::Decision::Refuse
                && c.expect_role.is_none()
                && c.sqlstate.as_deref().is_none_or(|s| s == "42501")
                && c.message.is_none()
        })
        .count();
    assert_eq!(report.passed, refusals, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("FAIL secretary reads names and contact data: expected rewrite, got refuse"),
        "{text}"
    );
    // Each failure ends with what happened.
    assert!(
        text.contains("FAIL secretary reads names and contact data: got refuse as role stand_in; blocked: contacts.bank_account, contacts.date_of_birth, contacts.email; refused with 42501: pgvakt: refused"),
        "{text}"
    );
}

#[test]
fn check_reports_and_compares_with_live_schema() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.yaml"));
    let report = check::check(std::slice::from_ref(&path));
    assert!(report.ok(), "{report}");
    let p = demo();
    let cols = |v: &[&str]| {
        v.iter()
            .map(|c| ((*c).to_owned(), "text".to_owned()))
            .collect::<Vec<_>>()
    };
    let table = |name: &str, columns: Vec<(String, String)>| check::LiveTable {
        schema: "public".into(),
        name: name.into(),
        kind: "table".into(),
        columns,
    };
    let live = vec![
        table(
            "contacts",
            cols(&[
                "id",
                "first_name",
                "last_name",
                "email",
                "phone",
                "street_address",
                "postal_code",
                "city",
                "country",
                "date_of_birth",
                "bank_account",
                "notes",
                "created_at",
                "last_activity_at",
                "company_id",
            ]),
        ),
        table(
            "activities",
            cols(&["id", "contact_id", "kind", "subject", "body", "happened_at"]),
        ),
        table(
            "consents",
            cols(&[
                "id",
                "contact_id",
                "purpose",
                "legal_basis",
                "source",
                "granted_at",
                "granted_by",
                "withdrawn_at",
            ]),
        ),
        table(
            "companies",
            cols(&["id", "name", "org_number", "industry", "city", "created_at"]),
        ),
        table(
            "restrictions",
            cols(&["id", "contact_id", "reason", "requested_at", "lifted_at"]),
        ),
        table("invoices", cols(&["id", "iban", "amount"])),
    ];
    let d = check::check_against_schema(&p, &live, &[]);
    let lines: Vec<String> = d.items.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    // A table the inventory does not list is personal by default, which the check calls out.
    assert!(
        lines[0].contains("error: public.invoices: table is not in the data inventory: it is treated as personal data of category 'unclassified'"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("warning: public.invoices.iban: column (text) is not classified as personal data but its name looks personal"),
        "{lines:?}"
    );
    // Relations outside the policy's schemas and system relations are not listed.
    let mut other = live.clone();
    other.push(check::LiveTable {
        schema: "staging".into(),
        ..table("imports", cols(&["id"]))
    });
    other.push(check::LiveTable {
        schema: "pg_catalog".into(),
        kind: "view".into(),
        ..table("pg_roles", cols(&["rolname"]))
    });
    assert_eq!(check::check_against_schema(&p, &other, &[]).items.len(), 2);
    let mut live = live;
    live[0].columns.retain(|(c, _)| c != "notes");
    let d = check::check_against_schema(&p, &live, &[]);
    assert!(
        d.items.iter().any(|i| i.severity == Severity::Error
            && i.message == "column 'notes' does not exist in public.contacts"),
        "{d}"
    );
}

#[test]
fn store_keeps_old_policy_on_bad_reload() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, BASE).unwrap_or_else(|e| panic!("{e}"));
    let store = store::PolicyStore::open(vec![file.clone()]).unwrap_or_else(|e| panic!("{e}"));
    let v1 = store.current().version.clone();
    std::fs::write(&file, format!("{BASE}  x: {{default: allow}}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = store
        .reload(std::slice::from_ref(&file))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("roles.x.default: the default must be a mask or 'block'"),
        "{err}"
    );
    assert_eq!(store.current().version, v1);
    std::fs::write(&file, format!("{BASE}  x: {{default: block}}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let v2 = store.reload(&[file]).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(v1, v2);
    assert_eq!(store.current().version, v2);
}

/// Loads YAML text as file `p.yaml` and panics on errors.
pub(super) fn compiled(yaml: &str) -> PolicySet {
    let mut d = Diagnostics::default();
    let f = parse("p.yaml", yaml.to_owned(), &mut d);
    compile_sources(&[f], &|_| None, d).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn removed_capabilities_and_the_ddl_class_are_errors_that_say_why() {
    let got = problems(&format!(
        "{BASE}  clerk:\n    statements: [read, ddl]\n    capabilities: [notify, procedural_code, sql_prepare]\n"
    ));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with("p.yaml:10:24: error: roles.clerk.statements[1]: statement class 'ddl' was removed: restricted roles can never run DDL, because pgvakt cannot analyse"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("p.yaml:11:28: error: roles.clerk.capabilities[1]: capability 'procedural_code' was removed: restricted roles can never run DO blocks or CREATE FUNCTION/PROCEDURE, because pgvakt cannot analyse procedural code"),
        "{got:?}"
    );
    assert!(
        got[2].starts_with("p.yaml:11:45: error: roles.clerk.capabilities[2]: capability 'sql_prepare' was removed: PREPARE, EXECUTE and DECLARE are always allowed and analysed like the statement they wrap"),
        "{got:?}"
    );
    // An unknown name is still refused by the file's shape, listing what exists.
    let got = problems(&format!(
        "{BASE}  clerk: {{capabilities: [notifications]}}\n"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("unknown variant `notifications`"),
        "{got:?}"
    );

    let p = compiled(&format!(
        "{BASE}  clerk:\n    statements: [read]\n    capabilities: [notify, statistics_views, temp_objects, server_files]\n"
    ));
    let clerk = &p.roles["clerk"];
    for c in [
        Capability::Notify,
        Capability::StatisticsViews,
        Capability::TempObjects,
        Capability::ServerFiles,
    ] {
        assert!(clerk.allows(c), "{c:?}");
        assert!(!p.roles["nobody"].allows(c), "{c:?}");
    }
    assert!(clerk.allows_class(StatementClass::Read));
    assert!(!clerk.allows_class(StatementClass::Write));
    // Without `statements`, every class is allowed.
    for c in [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Copy,
        StatementClass::Utility,
    ] {
        assert!(p.roles["nobody"].allows_class(c), "{c:?}");
    }
}
