//! Subject types: a table's `subject` names the inventory table that holds the subjects its
//! `subject_key` identifies (`activities.contact_id` refers to `contacts`), so that the same
//! person gets the same pseudonym in every table. Checked once every file's tables are known.

use super::diag::{Diagnostics, Pos};
use super::inventory::{is_pattern, Inventory};
use super::validate::qualify;

/// One `inventory.tables.*.subject` as written.
pub(crate) struct SubjectRef {
    /// Index of the referring entry in `Inventory::tables`.
    pub entry: usize,
    pub name: String,
    /// The referring file's default schema.
    pub schema: String,
    pub pos: Pos,
    pub path: String,
    /// The referring table has a `subject_key` (without one, `subject` means nothing).
    pub has_key: bool,
}

/// Resolve each reference to an exact inventory table that has a subject key and is a subject
/// type of its own (no chains: `a → b → c` would hide which table holds the subjects).
pub(crate) fn resolve(inv: &mut Inventory, refs: Vec<SubjectRef>, diags: &mut Diagnostics) {
    // Tables whose subjects are another table's (a table naming itself is its own type).
    let referring: Vec<usize> = refs
        .iter()
        .filter(|r| {
            let own = inv.tables.get(r.entry);
            let q = qualify(&r.name, 2, &r.schema);
            match (own, q) {
                (Some(t), Some(q)) => (t.schema.as_str(), t.table.as_str()) != (&q[0], &q[1]),
                _ => true,
            }
        })
        .map(|r| r.entry)
        .collect();
    for r in refs {
        if !r.has_key {
            diags.error(
                &r.pos,
                &r.path,
                "subject needs a subject_key: the column that refers to the subject",
            );
            continue;
        }
        let Some(q) = qualify(&r.name, 2, &r.schema) else {
            diags.error(&r.pos, &r.path, "expected table or schema.table");
            continue;
        };
        let (schema, table) = (q[0].clone(), q[1].clone());
        let target = inv.tables.iter().enumerate().find(|(_, t)| {
            t.schema == schema
                && t.table == table
                && !is_pattern(&t.schema)
                && !is_pattern(&t.table)
        });
        let problem = match target {
            None => Some(format!(
                "unknown subject type '{}': not a table of the inventory (a subject type is \
                 the inventory table that holds the subjects, with its own subject_key)",
                r.name
            )),
            Some((_, t)) if t.subject_key.is_none() => Some(format!(
                "subject type '{}' has no subject_key: it must say which column identifies \
                 its subjects",
                r.name
            )),
            Some((i, _)) if i != r.entry && referring.contains(&i) => Some(format!(
                "subject type '{}' refers to another subject type itself; name the table \
                 that holds the subjects",
                r.name
            )),
            Some(_) => None,
        };
        if let Some(message) = problem {
            let known = inv
                .tables
                .iter()
                .filter(|t| t.subject_key.is_some() && !is_pattern(&t.table))
                .map(|t| t.table.as_str())
                .collect::<Vec<_>>();
            diags.unknown(&r.pos, &r.path, message, &r.name, known);
            continue;
        }
        if let Some(e) = inv.tables.get_mut(r.entry) {
            // A table naming itself is its own subject type, as without `subject`.
            if (e.schema.as_str(), e.table.as_str()) != (schema.as_str(), table.as_str()) {
                e.subject = Some((schema, table));
            }
        }
    }
}
