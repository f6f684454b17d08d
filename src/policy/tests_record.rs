//! `pgvakt policy record`: the Art. 30 record generated from the policy.

use super::tests::demo;

/// The Art. 30 record stays in step with the policy: every category the demo inventory uses,
/// every role, purpose and retention period is named, in both forms.
#[test]
fn the_record_of_processing_names_every_category_and_role_of_the_demo() {
    let p = demo();
    let md = super::record::markdown(&p);
    let html = super::record::html(&p);
    let mut categories = std::collections::BTreeSet::new();
    for t in &p.inventory.tables {
        for (_, c) in &t.columns {
            if c.category != super::inventory::NONE {
                categories.insert(c.category.clone());
            }
        }
    }
    assert!(categories.len() >= 4, "{categories:?}");
    for c in &categories {
        assert!(
            md.contains(&format!("| {c} |")),
            "category {c} missing:\n{md}"
        );
        assert!(
            html.contains(&format!("<td>{c}</td>")),
            "category {c} missing in HTML"
        );
    }
    for role in p.roles.keys() {
        assert!(
            md.contains(&format!("| {role} |")),
            "role {role} missing:\n{md}"
        );
        assert!(
            html.contains(&format!("<td>{role}</td>")),
            "role {role} missing in HTML"
        );
    }
    for purpose in p.purposes.keys() {
        assert!(
            md.contains(&format!("| {purpose} |")),
            "purpose {purpose} missing"
        );
    }
    assert!(
        md.contains("| public.contacts | 10 years after last_activity_at | anonymise |"),
        "{md}"
    );
    assert!(md.contains("user secretary"), "{md}");
    assert!(md.contains("TLS required"), "{md}");
}
