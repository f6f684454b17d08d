//! Erasure by anonymisation, as the inventory declares it per table
//! (`inventory.tables.<t>.erase`): what `pgvakt subject erase` and `pgvakt retention run` do to
//! each column of a subject's rows, and whether the rows stay (anonymised in place, so
//! references and counts stay intact) or go.
//!
//! Defaults by category, so a table without `erase` is still erased completely: columns of
//! category `none` are kept (keys, timestamps, kinds: what statistics and referential integrity
//! need), every personal category (unclassified included) is `redact`ed, which keeps the
//! column's type and satisfies NOT NULL. The subject key itself is always kept: it is what ties
//! the anonymised rows together, and without the other columns it identifies no one.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::diag::{Diagnostics, Pos};
use super::inventory::{Classified, NONE};
use super::source::EraseSpec;
use super::validate::origin;

/// What erasure writes into a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseAction {
    /// Left as it is (not personal, or declared harmless).
    Keep,
    /// NULL.
    Null,
    /// The `redact` mask's value for the column's type (`***`, 0, 1970-01-01).
    Redact,
    /// A keyed pseudonym of the subject, table and column (not of the old value, which is
    /// gone): the same on every run, so erasure is idempotent, and distinct per subject.
    Pseudonym,
}

impl EraseAction {
    pub fn parse(s: &str) -> Option<EraseAction> {
        Some(match s {
            "keep" => EraseAction::Keep,
            "null" => EraseAction::Null,
            "redact" => EraseAction::Redact,
            "pseudonym" => EraseAction::Pseudonym,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EraseAction::Keep => "keep",
            EraseAction::Null => "null",
            EraseAction::Redact => "redact",
            EraseAction::Pseudonym => "pseudonym",
        }
    }

    /// The default for a column of `category`.
    pub fn default_for(category: &str) -> EraseAction {
        if category == NONE {
            EraseAction::Keep
        } else {
            EraseAction::Redact
        }
    }
}

/// What becomes of a subject's rows of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowsAction {
    /// Anonymised in place (the default).
    #[default]
    Keep,
    /// Deleted.
    Delete,
}

/// A table's `erase` declaration, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erase {
    /// Column → action and the rule that declared it.
    pub columns: BTreeMap<String, (EraseAction, String)>,
    pub rows: RowsAction,
    pub rule: String,
}

/// The action for `column` (of `category`) and where it comes from.
pub fn column_action(
    erase: Option<&Erase>,
    subject_key: Option<&str>,
    column: &str,
    category: &str,
) -> (EraseAction, String) {
    if subject_key == Some(column) {
        return (EraseAction::Keep, "the subject key is kept".to_owned());
    }
    match erase.and_then(|e| e.columns.get(column)) {
        Some((a, rule)) => (*a, rule.clone()),
        None => (
            EraseAction::default_for(category),
            format!("default for category {category}"),
        ),
    }
}

/// Check a table's `erase` against its classified columns; errors carry file:line:column.
pub(crate) fn validate(
    e: &Spanned<EraseSpec>,
    file: &str,
    path: &str,
    columns: &[(String, Classified, Pos)],
    subject_key: Option<&str>,
    diags: &mut Diagnostics,
) -> Option<Erase> {
    let epath = format!("{path}.erase");
    let mut out = Erase {
        rule: origin(&epath, &Pos::new(file, &e.referenced)),
        ..Default::default()
    };
    let mut ok = true;
    let mut names: Vec<_> = e.value.columns.iter().collect();
    names.sort_by(|a, b| a.0.value.cmp(&b.0.value));
    for (col, action) in names {
        let cpath = format!("{epath}.columns.{}", col.value);
        // The inventory need not list every column (the others are `unclassified`), so a name
        // it does not list is a warning; erasing a column the database lacks fails at run time.
        let known = columns.is_empty() || columns.iter().any(|(n, _, _)| *n == col.value);
        if !known {
            let hint = super::diag::suggest(&col.value, columns.iter().map(|(n, _, _)| n.as_str()))
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            diags.warning(
                &Pos::new(file, &col.referenced),
                cpath.clone(),
                format!(
                    "'{}' is not a classified column of this table{hint}",
                    col.value
                ),
            );
        }
        let Some(a) = EraseAction::parse(&action.value) else {
            diags.error(
                &Pos::new(file, &action.referenced),
                cpath,
                format!(
                    "'{}': an erase action is one of null, redact, pseudonym, keep",
                    action.value
                ),
            );
            ok = false;
            continue;
        };
        if subject_key == Some(col.value.as_str()) && a != EraseAction::Keep {
            diags.error(
                &Pos::new(file, &action.referenced),
                cpath,
                "the subject key cannot be erased: it ties the subject's anonymised rows together (use rows: delete to remove them)",
            );
            ok = false;
            continue;
        }
        let rule = origin(
            &format!("{epath}.columns.{}", col.value),
            &Pos::new(file, &action.referenced),
        );
        out.columns.insert(col.value.clone(), (a, rule));
    }
    if let Some(rows) = &e.value.rows {
        out.rows = match rows.value.as_str() {
            "keep" => RowsAction::Keep,
            "delete" => RowsAction::Delete,
            other => {
                diags.error(
                    &Pos::new(file, &rows.referenced),
                    format!("{epath}.rows"),
                    format!("'{other}': rows is keep (anonymise in place) or delete"),
                );
                ok = false;
                RowsAction::Keep
            }
        };
    }
    ok.then_some(out)
}
