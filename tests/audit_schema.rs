//! The published audit record schema (`deploy/audit-record.schema.json`) says exactly what
//! pgvakt writes: it lists every field a record can have, the checker the suite validates
//! every session's records with rejects what the schema forbids, and the README's audit
//! section documents every field the schema lists.

use std::collections::BTreeSet;

use pgvakt::audit::{
    Access, Action, ColumnAccess, EventType, Outcome, Record, Statement, StatementClass,
    SubjectGroup, TableAccess,
};
use serde_json::Value;

use crate::common::schema::audit_record_schema;

/// A record with every field filled in, as the writer would seal it.
fn full_record() -> Value {
    let mut r = Record::new(EventType::StatementRead, Outcome::Error);
    r.seq = 7;
    r.duration_ms = Some(3);
    r.sqlstate = Some("42501".into());
    r.user = Some("secretary".into());
    r.role = Some("secretary".into());
    r.session_id = Some("12".into());
    r.client_addr = Some("10.0.0.5:50123".into());
    r.application_name = Some("crm-web".into());
    r.tls_version = Some("TLSv1_3".into());
    r.database = Some("crm".into());
    r.purpose = Some("customer service".into());
    r.legal_basis = Some("contract".into());
    r.purposes = vec!["customer_service".into()];
    r.statement = Some(Statement {
        class: StatementClass::Read,
        command: "SELECT".into(),
        fingerprint: "0123456789abcdef".into(),
        normalized: "SELECT email FROM contacts WHERE id = ?".into(),
    });
    r.tables.push(TableAccess {
        table: "public.activities".into(),
        access: Access::Read,
        columns: vec![ColumnAccess {
            column: "body".into(),
            category: "free_text".into(),
            action: Action::Masked,
        }],
        subject: Some("public.contacts".into()),
    });
    r.rows = Some(1);
    r.subject_count = Some(1);
    r.subjects.push(SubjectGroup {
        table: "public.contacts".into(),
        refs: vec!["0123456789abcdef0123456789abcdef".into()],
    });
    r.subjects_truncated = true;
    r.subjects_unknown = true;
    r.policy_version = Some("d122e64037dc".into());
    r.intent = Some("ab".repeat(16));
    r.message = Some("why".into());
    r.suppressed = Some(4);
    r.operator = Some("dpo-alice".into());
    r.table_counts.push(pgvakt::audit::record::TableCount {
        table: "public.contacts".into(),
        rows: 1,
        deleted: true,
        columns: vec![pgvakt::audit::record::ColumnCount {
            column: "email".into(),
            erase: "pseudonym".into(),
            changed: 1,
        }],
    });
    r.dry_run = true;
    r.chain_key_id = Some("0123456789abcdef".into());
    r.subject_key_id = Some("fedcba9876543210".into());
    let mut v = serde_json::to_value(&r).expect("record");
    v["mac"] = Value::String("0a".repeat(32));
    v
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every property name the schema lists, nested ones included.
fn schema_fields(v: &Value, out: &mut BTreeSet<String>) {
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            out.insert(k.clone());
            schema_fields(sub, out);
        }
    }
    if let Some(items) = v.get("items") {
        schema_fields(items, out);
    }
}

#[test]
fn the_schema_lists_exactly_the_fields_a_record_has() {
    let schema = audit_record_schema();
    let full = full_record();
    let listed = keys(&schema.root()["properties"]);
    assert_eq!(
        keys(&full),
        listed,
        "Record's fields and the schema's properties"
    );
    assert_eq!(schema.errors(&full), Vec::<String>::new());
    let props = &schema.root()["properties"];
    assert_eq!(
        keys(&full["statement"]),
        keys(&props["statement"]["properties"])
    );
    assert_eq!(
        keys(&full["tables"][0]),
        keys(&props["tables"]["items"]["properties"])
    );
    assert_eq!(
        keys(&full["tables"][0]["columns"][0]),
        keys(&props["tables"]["items"]["properties"]["columns"]["items"]["properties"])
    );
    assert_eq!(
        keys(&full["subjects"][0]),
        keys(&props["subjects"]["items"]["properties"])
    );
    // Every event type the code knows is in the schema's enum.
    let events: Vec<&str> = props["event"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for e in [
        EventType::StatementIntent,
        EventType::StatementRead,
        EventType::StatementWrite,
        EventType::Refused,
        EventType::Login,
        EventType::LoginFailed,
        EventType::Disconnect,
        EventType::PolicyReload,
        EventType::Anomaly,
        EventType::ConnectionRefused,
        EventType::Admin,
    ] {
        assert!(events.contains(&e.as_str()), "{}", e.as_str());
    }
}

#[test]
fn the_checker_rejects_what_the_schema_forbids() {
    let schema = audit_record_schema();
    let bad = |edit: &dyn Fn(&mut Value)| {
        let mut v = full_record();
        edit(&mut v);
        schema.errors(&v)
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "unknown field",
            Box::new(|v| v["raw_sql"] = "SELECT 1".into()),
        ),
        ("wrong type", Box::new(|v| v["seq"] = "7".into())),
        ("unknown event", Box::new(|v| v["event"] = "peek".into())),
        (
            "missing mac",
            Box::new(|v| {
                v.as_object_mut().map(|o| o.remove("mac"));
            }),
        ),
        (
            "short pseudonym",
            Box::new(|v| v["subjects"][0]["refs"][0] = "abc".into()),
        ),
        (
            "upper-case hex",
            Box::new(|v| v["event_id"] = "AB".repeat(16).into()),
        ),
        ("bad time", Box::new(|v| v["ts"] = "yesterday".into())),
        (
            "bad basis",
            Box::new(|v| v["legal_basis"] = "because".into()),
        ),
        (
            "nested unknown",
            Box::new(|v| v["tables"][0]["columns"][0]["value"] = "x".into()),
        ),
        (
            "false flag",
            Box::new(|v| v["subjects_unknown"] = false.into()),
        ),
        ("zero suppressed", Box::new(|v| v["suppressed"] = 0.into())),
    ];
    for (what, edit) in cases {
        assert!(!bad(&*edit).is_empty(), "{what} passed the checker");
    }
}

#[test]
fn the_readme_documents_every_field_the_schema_lists() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find("## Audit trail").expect("audit section");
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    let section = &readme[start..end];
    let mut fields = BTreeSet::new();
    schema_fields(audit_record_schema().root(), &mut fields);
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !section.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's audit section does not document {missing:?}"
    );
}
