//! Subject types (one person, one pseudonym across tables) and roles' declared purpose and
//! GDPR Art. 6(1) legal basis.

use super::tests::{compiled, demo, problems};

#[test]
fn the_demo_declares_one_subject_type_for_contacts_activities_and_consents() {
    let p = demo();
    for table in ["contacts", "activities", "consents"] {
        let t = p.table("public", table).expect(table);
        assert_eq!(
            t.subject_type.as_deref(),
            Some("public.contacts"),
            "{table}"
        );
    }
    assert_eq!(
        p.table("public", "activities").and_then(|t| t.subject_key),
        Some("contact_id".into())
    );
    assert_eq!(
        p.table("public", "companies").and_then(|t| t.subject_type),
        None
    );
}

const TABLES: &str = "default_role: nobody\ninventory:\n  tables:\n    contacts:\n      subject_key: id\n      columns: {id: none, email: contact}\n    notes:\n      subject_key: contact_id\n";

#[test]
fn an_unknown_or_keyless_subject_type_is_an_error() {
    let roles = "roles:\n  nobody: {default: block}\n";
    let got = problems(&format!(
        "{TABLES}      subject: contacs\n      columns: {{contact_id: none, body: free_text}}\n{roles}"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("inventory.tables.notes.subject")
            && got[0].contains("unknown subject type 'contacs'")
            && got[0].contains("contacts"),
        "{got:?}"
    );
    // A subject type must identify its subjects itself.
    let got = problems(&format!(
        "{TABLES}      subject: companies\n      columns: {{contact_id: none}}\n    companies:\n      personal: false\n      columns: {{id: none}}\n{roles}"
    ));
    assert!(
        got.iter().any(|g| g.contains("has no subject_key")),
        "{got:?}"
    );
    // `subject` without a key of its own means nothing.
    let got = problems(&format!(
        "default_role: nobody\ninventory:\n  tables:\n    contacts:\n      subject_key: id\n      columns: {{id: none}}\n    notes:\n      subject: contacts\n      columns: {{body: free_text}}\n{roles}"
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("subject needs a subject_key")),
        "{got:?}"
    );
    // Chains hide which table holds the subjects.
    let got = problems(&format!(
        "{TABLES}      subject: contacts\n      columns: {{contact_id: none}}\n    replies:\n      subject_key: note_id\n      subject: notes\n      columns: {{note_id: none}}\n{roles}"
    ));
    assert!(
        got.iter()
            .any(|g| g.contains("refers to another subject type")),
        "{got:?}"
    );
    // The valid form compiles, and a table naming itself is its own type.
    let p = compiled(&format!(
        "{TABLES}      subject: public.contacts\n      columns: {{contact_id: none}}\n{roles}"
    ));
    assert_eq!(
        p.table("public", "notes").and_then(|t| t.subject_type),
        Some("public.contacts".into())
    );
}

#[test]
fn purpose_and_legal_basis_go_together_and_the_basis_is_one_of_article_6() {
    let base = "default_role: nobody\nroles:\n  nobody: {default: block}\n";
    let p = compiled(&format!(
        "{base}  clerk:\n    purpose: customer service\n    legal_basis: contract\n"
    ));
    assert_eq!(
        p.roles["clerk"].purpose,
        Some(("customer service".into(), "contract".into()))
    );
    assert_eq!(p.roles["nobody"].purpose, None);
    let got = problems(&format!(
        "{base}  clerk:\n    purpose: customer service\n    legal_basis: legitimate_interest\n"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("roles.clerk.legal_basis")
            && got[0].contains("not a lawful basis of GDPR Art. 6(1)")
            && got[0].contains("legitimate_interests"),
        "{got:?}"
    );
    let got = problems(&format!("{base}  clerk:\n    purpose: customer service\n"));
    assert!(
        got[0].contains("roles.clerk.purpose") && got[0].contains("needs its legal_basis"),
        "{got:?}"
    );
    let got = problems(&format!("{base}  clerk:\n    legal_basis: consent\n"));
    assert!(got[0].contains("needs the purpose"), "{got:?}");
    // Unrestricted roles may declare a purpose: it is not a rule.
    let p = compiled(&format!(
        "{base}  admin:\n    unrestricted: true\n    purpose: operations\n    legal_basis: legitimate_interests\n"
    ));
    assert!(p.roles["admin"].purpose.is_some());
    let demo = demo();
    assert_eq!(
        demo.roles["marketing"]
            .purpose
            .as_ref()
            .map(|(_, b)| b.as_str()),
        Some("consent")
    );
}
