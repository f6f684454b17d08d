//! Semantic checks of a role's write rules (`roles.<role>.writes`), kept apart from its read
//! rules: what a role may write into a column is not what it may read of it.

use std::collections::BTreeSet;

use super::diag::{Diagnostics, Pos};
use super::inventory::NONE;
use super::model::WriteAction;
use super::source::{WriteSpec, WritesSpec};
use super::validate::{check_category, origin, sorted, Checked, CheckedRole};

fn write_action(w: WriteSpec) -> WriteAction {
    match w {
        WriteSpec::Allow => WriteAction::Allow,
        WriteSpec::Keep => WriteAction::Keep,
        WriteSpec::Refuse => WriteAction::Refuse,
    }
}

/// Checks `roles.<role>.writes` (at `path`) and records its rules in `role`.
pub(crate) fn writes(
    spec: &WritesSpec,
    (file, schema, path): (&str, &str, &str),
    categories: &BTreeSet<String>,
    c: &Checked,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    for (cat, w) in sorted(&spec.categories) {
        let cpos = Pos::new(file, &cat.referenced);
        let cpath = format!("{path}.writes.categories.{}", cat.value);
        if !check_category(&cat.value, categories, &cpos, &cpath, diags) {
            continue;
        }
        if cat.value == NONE {
            diags.error(
                &cpos,
                &cpath,
                "category 'none' is not personal data; name the columns to restrict their writes",
            );
            continue;
        }
        role.write_categories.insert(
            cat.value.clone(),
            (write_action(w.value), origin(&cpath, &cpos)),
        );
    }
    let mut seen = BTreeSet::new();
    for (col, w) in sorted(&spec.columns) {
        let cpos = Pos::new(file, &col.referenced);
        let cpath = format!("{path}.writes.columns.{}", col.value);
        let Some(key) =
            super::validate_roles::known_column(c, &col.value, schema, &cpos, &cpath, diags)
        else {
            continue;
        };
        if !seen.insert(key.clone()) {
            diags.error(&cpos, &cpath, "duplicate write rule for the same column");
            continue;
        }
        role.write_columns
            .push((key, (write_action(w.value), origin(&cpath, &cpos))));
    }
}
