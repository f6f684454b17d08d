//! What the result side of a session needs to know about columns by their origin (table OID,
//! attribute number), which is what PostgreSQL's RowDescription reports: which ones the role
//! may not see as stored, and which ones identify data subjects. Computed once per (role,
//! policy version) and catalog.

use std::collections::{HashMap, HashSet};

use crate::analysis::{ColumnUse, UseAction};
use crate::catalog::{Catalog, RelKind};
use crate::policy::model::{ColumnAction, RoleRules};
use crate::policy::PolicySet;

/// (table OID, attribute number) of columns the session's role may not see as stored.
pub type Protected = HashSet<(u32, i16)>;

pub fn protected_origins(catalog: &Catalog, rules: &dyn RoleRules) -> Protected {
    let mut out = Protected::new();
    // Sequences are counters: never personal data, whatever the inventory's default says.
    for rel in catalog.relations().filter(|r| r.kind != RelKind::Sequence) {
        for c in &rel.columns {
            if rules.column(&rel.schema, &rel.name, &c.name).action != ColumnAction::Allow {
                out.insert((rel.oid, c.attnum));
            }
        }
    }
    out
}

/// Facts audit records need, per policy version and catalog.
#[derive(Debug, Default)]
pub struct AuditFacts {
    /// Subject-key column origins → the subject type they identify (`schema.table` of the
    /// table holding the subjects: `public.contacts` for `activities.contact_id` too).
    pub subject_keys: HashMap<(u32, i16), String>,
    /// Personal-data column origins → the column, as a record of a read found by a result's
    /// origins lists it (the value arrived as stored).
    pub personal_columns: HashMap<(u32, i16), ColumnUse>,
    /// `schema.table` → its subject type, for relations with a subject key.
    pub subject_types: HashMap<String, String>,
    /// Lower-cased names of relations that hold personal data, and of every view (a view may
    /// read them): a statement naming none of them reads no personal data.
    pub personal_names: Vec<String>,
}

impl AuditFacts {
    pub fn compute(catalog: &Catalog, set: &PolicySet) -> AuditFacts {
        let mut facts = AuditFacts::default();
        let rules = set.default_role.as_ref();
        for rel in catalog.relations() {
            let inv = set.table(&rel.schema, &rel.name);
            if let Some((key, subject_type)) =
                inv.and_then(|t| Some((t.subject_key?, t.subject_type?)))
            {
                if let Some(c) = rel.columns.iter().find(|c| c.name == key) {
                    facts
                        .subject_keys
                        .insert((rel.oid, c.attnum), subject_type.clone());
                }
                facts
                    .subject_types
                    .insert(format!("{}.{}", rel.schema, rel.name), subject_type);
            }
            let mut personal = false;
            for c in &rel.columns {
                let category = rules.column(&rel.schema, &rel.name, &c.name).category;
                if rel.kind == RelKind::Sequence || category == crate::policy::inventory::NONE {
                    continue;
                }
                personal = true;
                facts.personal_columns.insert(
                    (rel.oid, c.attnum),
                    ColumnUse {
                        schema: rel.schema.clone(),
                        table: rel.name.clone(),
                        column: c.name.clone(),
                        category: category.to_string(),
                        action: UseAction::Allowed,
                        rule: "result origin".into(),
                    },
                );
            }
            let view = matches!(rel.kind, RelKind::View | RelKind::MaterializedView)
                && rel.schema != "pg_catalog"
                && rel.schema != "information_schema";
            if personal || view {
                facts.personal_names.push(rel.name.to_lowercase());
            }
        }
        facts.personal_names.sort();
        facts.personal_names.dedup();
        facts
    }

    /// Whether `sql` may read personal data: it names a personal relation or a view, or it
    /// cannot be scanned faithfully.
    pub fn may_touch(&self, sql: &str) -> bool {
        let lower = sql.to_lowercase();
        crate::analysis::is_unfaithful(sql)
            || self
                .personal_names
                .iter()
                .any(|n| lower.contains(n.as_str()))
            || crate::analysis::authority::calls_unlisted_function(sql)
    }
}
