//! Purposes and row rules: validation with locations, and the predicates tables get.

use super::model::RoleRules;
use super::tests::{compiled, demo, problems};

fn filter(p: &super::PolicySet, role: &str, table: &str) -> Option<String> {
    p.roles[role]
        .row_filter("public", table, "r")
        .map(|f| f.sql)
}

#[test]
fn the_demo_roles_see_only_the_people_their_rules_allow() {
    let p = demo();
    let m = filter(&p, "marketing", "contacts").expect("marketing has row rules");
    assert!(
        m.contains("FROM \"public\".\"consents\" AS \"pgvakt_consent\"")
            && m.contains("\"pgvakt_consent\".\"purpose\" IN ('newsletter', 'marketing')")
            && m.contains("\"pgvakt_consent\".\"withdrawn_at\" IS NULL OR \"pgvakt_consent\".\"withdrawn_at\" > pg_catalog.statement_timestamp()"),
        "{m}"
    );
    assert!(
        m.contains(
            "NOT EXISTS (SELECT 1 FROM \"public\".\"restrictions\" AS \"pgvakt_restriction\""
        ),
        "{m}"
    );
    assert!(
        m.contains("\"r\".\"last_activity_at\" IS NULL OR NOT (\"r\".\"last_activity_at\" < pg_catalog.statement_timestamp() - CAST('10 years' AS pg_catalog.interval))"),
        "{m}"
    );
    // Activities and consents follow their contact.
    for table in ["activities", "consents", "restrictions"] {
        let a = filter(&p, "marketing", table).expect(table);
        assert!(
            a.starts_with("EXISTS (SELECT 1 FROM \"public\".\"contacts\" AS \"pgvakt_subject\" WHERE \"pgvakt_subject\".\"id\" = \"r\".\"contact_id\" AND "),
            "{table}: {a}"
        );
        assert!(a.contains("pgvakt_consent"), "{a}");
    }
    // Secretary: restriction only; sales: restriction and retention, no consent.
    let s = filter(&p, "secretary", "contacts").expect("restricted people are hidden");
    assert!(
        s.contains("pgvakt_restriction")
            && !s.contains("pgvakt_consent")
            && !s.contains("last_activity_at"),
        "{s}"
    );
    let s = filter(&p, "sales", "contacts").expect("sales");
    assert!(
        s.contains("pgvakt_restriction")
            && s.contains("last_activity_at")
            && !s.contains("pgvakt_consent"),
        "{s}"
    );
    // The default role too: privacy by default.
    assert!(filter(&p, "nobody", "contacts").is_some());
    // The DPO sees restricted people; admin is unrestricted; companies are no one's subjects.
    assert_eq!(filter(&p, "dpo", "contacts"), None);
    assert_eq!(filter(&p, "dpo", "activities"), None);
    assert_eq!(filter(&p, "admin", "contacts"), None);
    assert_eq!(filter(&p, "marketing", "companies"), None);
    assert_eq!(
        p.roles["marketing"].purposes,
        vec!["newsletter", "marketing"]
    );
    assert!(p.purposes["newsletter"].legal_bases == vec!["consent"]);
}

const BASE: &str = "default_role: nobody
purposes:
  newsletter: {legal_basis: [consent]}
  support: {legal_basis: [contract, legitimate_interests]}
inventory:
  tables:
    people:
      subject_key: id
      columns: {id: none, email: contact, seen_at: none, region: none, blocked: none}
      retention: {column: seen_at, keep: 2y}
    agreements:
      subject_key: person_id
      subject: people
      columns: {id: none, person_id: none, topic: none, revoked_at: none}
";

fn with(inventory_extra: &str, roles: &str) -> String {
    format!("{BASE}{inventory_extra}roles:\n  nobody: {{default: block}}\n{roles}")
}

const CONSENTS: &str =
    "  consents: {table: agreements, subject_key: person_id, purpose: topic, withdrawn: revoked_at}\n";

#[test]
fn purposes_are_declared_and_their_legal_bases_checked() {
    let got = problems(&with(
        "",
        "  mailer:\n    purposes: [newsleter, support]\n    legal_basis: consent\n",
    ));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(
            "p.yaml:18:16: error: roles.mailer.purposes[0]: unknown purpose 'newsleter'"
        ) && got[0].contains("did you mean 'newsletter'"),
        "{got:?}"
    );
    assert!(
        got[1].contains("roles.mailer.purposes[1]: purpose 'support' allows legal basis contract, legitimate_interests, not the role's 'consent'"),
        "{got:?}"
    );
    let got = problems(&with("", "  mailer:\n    purposes: [newsletter]\n"));
    assert!(
        got.iter().any(|g| g.contains("needs its legal_basis")),
        "{got:?}"
    );
    let got = problems("purposes:\n  x: {legal_basis: []}\n  \"a b\": {legal_basis: [consent]}\n  y: {legal_basis: [consnt]}\n");
    assert!(
        got.iter()
            .any(|g| g.contains("purposes.x.legal_basis: a purpose needs at least one")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.contains("purposes.a b: a purpose name is")),
        "{got:?}"
    );
    assert!(
        got.iter().any(
            |g| g.contains("purposes.y.legal_basis[0]") && g.contains("did you mean 'consent'")
        ),
        "{got:?}"
    );
    // Declared purposes stand in for the free-text purpose in audit records.
    let p = compiled(&with(
        CONSENTS,
        "  mailer:\n    purposes: [newsletter]\n    legal_basis: consent\n",
    ));
    assert_eq!(
        p.roles["mailer"].purpose,
        Some(("newsletter".into(), "consent".into()))
    );
}

#[test]
fn consent_rules_need_a_declaration_and_purposes() {
    let got = problems(&with("", "  mailer:\n    rows: {consent: true}\n"));
    assert!(got.iter().any(|g| g.contains("roles.mailer.rows.consent: consent rules need inventory.consents")), "{got:?}");
    assert!(
        got.iter()
            .any(|g| g.contains("consent rules need the role's purposes")),
        "{got:?}"
    );
    let got = problems(&with(
        "  consents: {table: agreement, subject_key: person_id, purpose: topc}\n",
        "",
    ));
    assert!(
        got.iter().any(|g| g
            .contains("inventory.consents.table: 'agreement' is not a table of the inventory")
            && g.contains("did you mean 'agreements'")),
        "{got:?}"
    );
    let got = problems(&with(
        "  consents: {table: agreements, subject_key: id, purpose: topc}\n",
        "",
    ));
    assert!(
        got.iter().any(
            |g| g.contains("inventory.consents.purpose: 'topc' is not a column")
                && g.contains("did you mean 'topic'")
        ),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.contains(
            "inventory.consents.subject_key: public.agreements must be listed with subject_key: id"
        )),
        "{got:?}"
    );
    let p = compiled(&with(CONSENTS, "  mailer:\n    purposes: [newsletter]\n    legal_basis: consent\n    rows: {consent: true}\n"));
    let f = p.roles["mailer"]
        .row_filter("public", "agreements", "a")
        .map(|f| f.sql)
        .unwrap_or_default();
    assert!(
        f.contains("\"pgvakt_consent\".\"topic\" IN ('newsletter')")
            && f.contains("\"revoked_at\" > pg_catalog.statement_timestamp()"),
        "{f}"
    );
}

#[test]
fn restrictions_are_a_table_or_a_flag_and_hide_by_default() {
    let got = problems(&with(
        "  restrictions: {table: agreements, subject_key: person_id, column: people.blocked}\n",
        "",
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("inventory.restrictions: expected either table and subject_key")),
        "{got:?}"
    );
    let got = problems(&with("  restrictions: {column: agreements.topic}\n", ""));
    assert!(
        got.iter()
            .any(|g| g
                .contains("the flag must be a column of an inventory table that holds subjects")),
        "{got:?}"
    );
    let p = compiled(&with(
        "  restrictions: {column: people.blocked}\n",
        "  clerk: {categories: {contact: allow}}\n  officer:\n    see_restricted: true\n",
    ));
    assert_eq!(
        p.roles["clerk"]
            .row_filter("public", "people", "x")
            .map(|f| f.sql),
        Some("\"x\".\"blocked\" IS NOT TRUE".into())
    );
    assert_eq!(p.roles["officer"].row_filter("public", "people", "x"), None);
    let got = problems(&with(
        "",
        "  admin:\n    unrestricted: true\n    see_restricted: false\n",
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("an unrestricted role cannot also have rules")),
        "{got:?}"
    );
}

#[test]
fn retention_periods_and_where_predicates_are_checked_where_written() {
    let got = problems(&with("", "").replace("column: seen_at", "column: seen"));
    assert!(
        got.iter().any(|g| g
            .contains("inventory.tables.people.retention.column: 'seen' is not a column")
            && g.contains("did you mean 'seen_at'")),
        "{got:?}"
    );
    let got = problems(&with("", "").replace("keep: 2y", "keep: 2 years"));
    assert!(
        got.iter().any(|g| g.starts_with(
            "p.yaml:10:42: error: inventory.tables.people.retention.keep: '2 years': a period is"
        )),
        "{got:?}"
    );
    let got = problems(&with("", "  clerk:\n    rows:\n      where:\n        people: \"id IN (SELECT person_id FROM agreements)\"\n        peple: \"true\"\n        agreements: \"topc = 'x'\"\n"));
    assert!(
        got.iter().any(|g| g.contains(
            "p.yaml:20:17: error: roles.clerk.rows.where.people: sub-queries are not allowed"
        )),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g
                .contains("roles.clerk.rows.where.peple: 'peple' is not a table of the inventory")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.contains(
            "roles.clerk.rows.where.agreements: 'topc' is not a column of public.agreements"
        ) && g.contains("did you mean 'topic'")),
        "{got:?}"
    );
    let got = problems(&with(
        "",
        "  clerk:\n    rows: {retention: true, where: {people: \"random() < 0.5\"}}\n",
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("function random is not allowed")),
        "{got:?}"
    );
    let p = compiled(&with(
        "",
        "  clerk:\n    rows: {retention: true, where: {people: \"region = 'north'\"}}\n",
    ));
    let f = p.roles["clerk"]
        .row_filter("public", "agreements", "a")
        .map(|f| f.sql)
        .unwrap_or_default();
    assert!(
        f.contains("\"pgvakt_subject\".\"seen_at\" IS NULL OR NOT (\"pgvakt_subject\".\"seen_at\" < pg_catalog.statement_timestamp() - CAST('2 years' AS pg_catalog.interval))")
            && f.contains("(\"pgvakt_subject\".\"region\" = 'north')"),
        "{f}"
    );
    let got = problems(
        &with("", "  clerk:\n    rows: {retention: true}\n")
            .replace("      retention: {column: seen_at, keep: 2y}\n", ""),
    );
    assert!(
        got.iter()
            .any(|g| g.contains("no inventory table declares a retention period")),
        "{got:?}"
    );
}

#[test]
fn statistics_views_are_refused_to_roles_whose_rules_hide_people() {
    let restricted = "  restrictions: {column: people.blocked}\n";
    let hiding = [
        (
            restricted,
            "  clerk:\n    capabilities: [statistics_views]\n",
        ),
        (
            "",
            "  clerk:\n    capabilities: [statistics_views]\n    rows: {retention: true}\n",
        ),
    ];
    for (inventory, roles) in hiding {
        let got = problems(&with(inventory, roles));
        assert!(
            got.iter().any(|g| g.contains("roles.clerk.capabilities")
                && g.contains("cannot be given to a role with row rules")),
            "{roles}: {got:?}"
        );
    }
    // A role that sees everyone may read them.
    let p = compiled(&with(
        restricted,
        "  clerk:\n    capabilities: [statistics_views]\n    see_restricted: true\n",
    ));
    assert!(p.roles["clerk"].allows(crate::policy::model::Capability::StatisticsViews));
}
