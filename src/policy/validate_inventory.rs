//! One inventory entry at a time: a column entry classified, a table entry with its columns,
//! subject key, retention and erasure, checked against the categories known.

use std::collections::BTreeSet;

use serde_saphyr::Spanned;

use super::diag::{Diagnostics, Pos};
use super::inventory::{globs_overlap, is_pattern, Classified, ColumnName, TableEntry, NONE};
use super::validate::{check_category, check_schema, origin, qualify, sorted, Checked, First};

/// Where an entry was written: its file and the file's default schema.
#[derive(Clone, Copy)]
pub(super) struct Where<'a> {
    pub file: &'a str,
    pub schema: &'a str,
}

/// One `inventory.columns` entry, classified; None when it is invalid or a duplicate.
pub(super) fn inventory_column(
    Where { file, schema }: Where<'_>,
    (name, cat): (&Spanned<String>, &Spanned<String>),
    categories: &BTreeSet<String>,
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) -> Option<(ColumnName, Classified, Pos, String)> {
    let pos = Pos::new(file, &name.referenced);
    let path = format!("inventory.columns.{}", name.value);
    let Some(q) = qualify(&name.value, 3, schema) else {
        diags.error(&pos, &path, "expected table.column or schema.table.column");
        return None;
    };
    let key = (q[0].clone(), q[1].clone(), q[2].clone());
    if !first(format!("column {key:?}"), &pos, &path, diags)
        || !check_schema(&mut c.inventory, &q[0], &pos, &path, diags)
    {
        return None;
    }
    if check_category(
        &cat.value,
        categories,
        &Pos::new(file, &cat.referenced),
        &path,
        diags,
    ) {
        let cls = Classified {
            category: cat.value.clone(),
            rule: origin(&path, &pos),
        };
        return Some((key, cls, pos, path));
    }
    None
}

/// One `inventory.tables` entry with its columns, subject key, retention and erasure; its
/// subject reference is resolved once every table is known.
pub(super) fn inventory_table(
    Where { file, schema }: Where<'_>,
    (name, spec): (&Spanned<String>, &Spanned<super::source::TableSpec>),
    (categories, subject_refs): &mut (
        &BTreeSet<String>,
        &mut Vec<super::validate_subjects::SubjectRef>,
    ),
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    let pos = Pos::new(file, &name.referenced);
    let path = format!("inventory.tables.{}", name.value);
    let Some(q) = qualify(&name.value, 2, schema) else {
        diags.error(&pos, &path, "expected table or schema.table");
        return;
    };
    if !first(format!("table {q:?}"), &pos, &path, diags)
        || !check_schema(&mut c.inventory, &q[0], &pos, &path, diags)
    {
        return;
    }
    let t = &spec.value;
    let personal = t.personal.unwrap_or(true);
    let columns = table_columns(file, (&path, t), categories, personal, diags);
    if let Some(sk) = &t.subject_key {
        let known = columns.iter().any(|(n, _, _)| *n == sk.value);
        if !known && !columns.is_empty() {
            diags.unknown(
                &Pos::new(file, &sk.referenced),
                format!("{path}.subject_key"),
                format!("'{}' is not a column of this table", sk.value),
                &sk.value,
                columns.iter().map(|(n, _, _)| n.as_str()),
            );
        }
    } else if personal && !is_pattern(&q[1]) {
        diags.warning(
            &pos,
            &path,
            "personal table without subject_key: audit cannot name data subjects",
        );
    }
    if let Some(subject) = &t.subject {
        subject_refs.push(super::validate_subjects::SubjectRef {
            entry: c.inventory.tables.len(),
            name: subject.value.clone(),
            schema: schema.to_owned(),
            pos: Pos::new(file, &subject.referenced),
            path: format!("{path}.subject"),
            has_key: t.subject_key.is_some(),
        });
    }
    c.inventory.tables.push(TableEntry {
        schema: q[0].clone(),
        table: q[1].clone(),
        subject_key: t.subject_key.as_ref().map(|s| s.value.clone()),
        subject: None,
        personal,
        retention: t
            .retention
            .as_ref()
            .and_then(|r| super::validate_rows::retention(r, file, &path, &columns, diags)),
        erase: t.erase.as_ref().and_then(|e| {
            let key = t.subject_key.as_ref().map(|k| k.value.as_str());
            super::erase::validate(e, file, &path, &columns, key, diags)
        }),
        columns: columns.into_iter().map(|(n, cls, _)| (n, cls)).collect(),
        rule: origin(&path, &pos),
    });
}

/// The columns of one table entry, classified; a pattern conflicting with another is an error.
fn table_columns(
    file: &str,
    (path, t): (&str, &super::source::TableSpec),
    categories: &BTreeSet<String>,
    personal: bool,
    diags: &mut Diagnostics,
) -> Vec<(String, Classified, Pos)> {
    let mut columns: Vec<(String, Classified, Pos)> = Vec::new();
    for (col, cat) in sorted(&t.columns) {
        let cpos = Pos::new(file, &col.referenced);
        let cpath = format!("{path}.columns.{}", col.value);
        if col.value.contains('.') {
            diags.error(&cpos, &cpath, "column names inside a table have no '.'");
            continue;
        }
        if !check_category(
            &cat.value,
            categories,
            &Pos::new(file, &cat.referenced),
            &cpath,
            diags,
        ) {
            continue;
        }
        if !personal && cat.value != NONE {
            diags.error(
                &Pos::new(file, &cat.referenced),
                &cpath,
                format!(
                    "table is marked 'personal: false' but the column is classified '{}'",
                    cat.value
                ),
            );
        }
        for (other, ocls, opos) in &columns {
            if is_pattern(&col.value)
                && is_pattern(other)
                && ocls.category != cat.value
                && globs_overlap(other, &col.value)
            {
                diags.error(&cpos, &cpath, format!("pattern conflicts with '{other}' at {opos}: a column could match both with different categories"));
            }
        }
        let cls = Classified {
            category: cat.value.clone(),
            rule: origin(&cpath, &cpos),
        };
        columns.push((col.value.clone(), cls, cpos));
    }
    columns
}
