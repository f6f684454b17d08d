//! Privacy by default: relations the inventory does not list are personal and unclassified
//! unless the policy says otherwise.

use super::compile::compile_sources;
use super::model::RoleRules;
use super::source::parse;
use super::tests::{action_name, compiled, demo, problems, BASE};
use super::*;

#[test]
fn unlisted_relations_are_personal_and_unclassified_by_default() {
    let p = demo();
    // `CREATE TABLE contacts_backup AS SELECT * FROM contacts`: nobody listed it.
    let col = |role: &str, c: &str| p.roles[role].column("public", "contacts_backup", c);
    let d = col("marketing", "bank_account");
    assert_eq!(action_name(&d.action), "mask:redact", "marketing's default");
    assert_eq!(d.category, "unclassified");
    assert!(
        d.rule
            .starts_with("roles.marketing.default (built-in default: mask redact)")
            && d.rule
                .ends_with("; public.contacts_backup is not in the data inventory"),
        "{}",
        d.rule
    );
    assert_eq!(action_name(&col("nobody", "first_name").action), "block");
    assert_eq!(
        action_name(&col("secretary", "notes").action),
        "mask:redact"
    );
    assert_eq!(action_name(&col("dpo", "bank_account").action), "allow");
    // Unrestricted roles read it unmasked, but it is personal data, so their reads are audited.
    let admin = col("admin", "bank_account");
    assert_eq!(action_name(&admin.action), "allow");
    assert_eq!(admin.category, "unclassified");
    // Patterns across tables still classify what they match.
    assert_eq!(col("nobody", "email").category, "contact");
    // Other schemas, views and materialized views are relations like any other.
    let d = p.roles["sales"].column("reporting", "contact_summary", "total");
    assert_eq!(
        (action_name(&d.action), d.category.as_str()),
        ("mask:redact".into(), "unclassified")
    );
}

#[test]
fn personal_false_and_none_keep_relations_open() {
    let p = demo();
    // `companies` is `personal: false`: even a column added later (website) is not personal.
    for c in ["name", "website", "added_later"] {
        let d = p.roles["nobody"].column("public", "companies", c);
        assert_eq!(action_name(&d.action), "allow", "{c}");
        assert_eq!(d.category, "none", "{c}");
        let why = if c == "name" {
            "inventory.tables.companies.columns.name ("
        } else {
            "(personal: false)"
        };
        assert!(d.rule.contains(why), "{}", d.rule);
    }
    // A column classified `none` in a personal table.
    let d = p.roles["nobody"].column("public", "contacts", "id");
    assert_eq!(
        (action_name(&d.action), d.category.as_str()),
        ("allow".into(), "none")
    );
    // A table pattern with `personal: false`.
    let p = compiled(&BASE.replace(
        "    contacts:\n",
        "    \"lookup_*\": {personal: false}\n    contacts:\n",
    ));
    let d = p.roles["nobody"].column("public", "lookup_countries", "name");
    assert_eq!(
        (action_name(&d.action), d.category.as_str()),
        ("allow".into(), "none")
    );
    let d = p.roles["nobody"].column("public", "countries", "name");
    assert_eq!(action_name(&d.action), "block");
}

#[test]
fn system_schemas_are_never_personal() {
    let p = demo();
    for (schema, table, column) in [
        ("pg_catalog", "pg_class", "relname"),
        ("pg_catalog", "pg_roles", "rolname"),
        ("information_schema", "columns", "column_name"),
        ("pg_toast", "pg_toast_16384", "chunk_data"),
    ] {
        let d = p.roles["nobody"].column(schema, table, column);
        assert_eq!(action_name(&d.action), "allow", "{schema}.{table}");
        assert_eq!(d.category, "none", "{schema}.{table}");
        assert!(d.rule.starts_with("system schema"), "{}", d.rule);
        assert!(p.inventory.classify(schema, table, column).is_none());
    }
    // A schema that merely looks like one is not exempt.
    let d = p.roles["nobody"].column("pg_catalog2", "t", "c");
    assert_eq!(action_name(&d.action), "block");
    // An inventory entry there would do nothing, so it is an error.
    let got = problems(&BASE.replace(
        "    contacts:\n",
        "    pg_catalog.pg_authid:\n      personal: false\n    contacts:\n",
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("p.yaml:4:5: error: inventory.tables.pg_catalog.pg_authid: schema 'pg_catalog' holds PostgreSQL's catalogs, which are not personal data"),
        "{got:?}"
    );
}

#[test]
fn unlisted_relations_setting_relaxes_deliberately_and_strictly() {
    let base = compiled(BASE);
    assert_eq!(
        base.inventory.unlisted,
        inventory::UnlistedRelations::Personal
    );
    let d = base.roles["nobody"].column("public", "orders", "total");
    assert_eq!(
        (action_name(&d.action), d.category.as_str()),
        ("block".into(), "unclassified")
    );
    let explicit = compiled(&format!("unlisted_relations: personal\n{BASE}"));
    assert_eq!(
        action_name(
            &explicit.roles["nobody"]
                .column("public", "orders", "total")
                .action
        ),
        "block"
    );

    let relaxed = compiled(&format!("unlisted_relations: not_personal\n{BASE}"));
    let d = relaxed.roles["nobody"].column("public", "orders", "total");
    assert_eq!(
        (action_name(&d.action), d.category.as_str()),
        ("allow".into(), "none")
    );
    assert_eq!(
        d.rule,
        "public.orders is not in the data inventory and unlisted_relations (p.yaml:1:21) is not_personal"
    );
    // Listed tables are unchanged.
    let d = relaxed.roles["nobody"].column("public", "contacts", "email");
    assert_eq!(action_name(&d.action), "block");
    assert_eq!(
        action_name(
            &relaxed.roles["nobody"]
                .column("public", "contacts", "unlisted")
                .action
        ),
        "block"
    );
    // The relaxation is never silent.
    assert!(
        relaxed
            .warnings
            .items
            .iter()
            .any(|w| w.path == "unlisted_relations"
                && w.message.contains("every role reads them unmasked")),
        "{}",
        relaxed.warnings
    );

    let got = problems(&format!("unlisted_relations: public\n{BASE}"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("p.yaml:1:21: error: unlisted_relations: unknown variant `public`, expected one of personal, not_personal"),
        "{got:?}"
    );
    let mut d = Diagnostics::default();
    let a = parse(
        "a.yaml",
        format!("unlisted_relations: not_personal\n{BASE}"),
        &mut d,
    );
    let b = parse(
        "b.yaml",
        "unlisted_relations: personal\n".to_owned(),
        &mut d,
    );
    let errors: Vec<String> = compile_sources(&[a, b], &|_| None, d)
        .err()
        .map(|e| e.diagnostics.items)
        .unwrap_or_default()
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        vec!["b.yaml:1:21: error: unlisted_relations: duplicate definition, first defined at a.yaml:1:21"]
    );
}
