//! Row rules in statements: "as if the table held only these rows".
//!
//! A table the role has row rules for is read through its stand-in, which gains the rules'
//! predicate as its WHERE and `OFFSET 0`. The OFFSET keeps PostgreSQL from pulling the
//! stand-in up into the client's query or pushing the client's conditions down into it, so
//! every expression the client wrote is evaluated on visible rows only: a cast error, a
//! division by zero or a slow function in the client's WHERE cannot tell that a hidden row
//! exists. Written tables get the predicate in the write's own WHERE, as the condition of a
//! CASE that evaluates the client's condition only for visible rows.

use crate::analysis::Why;
use crate::catalog::{RelKind, Relation};
use crate::policy::rows::RowFilter;

use super::Ctx;

/// The alias of the row a stand-in's predicate is written over.
pub const ROW_ALIAS: &str = "pgvakt_row";

impl Ctx<'_> {
    /// The role's row filter for a relation read or written, over the row aliased `alias`.
    /// Views are inlined over their tables and sequences hold counters, so neither has one.
    pub fn row_filter(&self, rel: &Relation, alias: &str) -> Option<RowFilter> {
        if matches!(rel.kind, RelKind::View | RelKind::Sequence) {
            return None;
        }
        self.rules.row_filter(&rel.schema, &rel.name, alias)
    }
}

/// A stand-in's SELECT reading only the rows the filter lets through, as a fence.
pub fn with_rows(select: String, filter: &RowFilter) -> String {
    format!(
        "{select} AS {} WHERE ({}) OFFSET 0",
        super::quote(ROW_ALIAS),
        filter.sql
    )
}

/// An UPDATE's or DELETE's WHERE for a target with row rules: `CASE WHEN <rules> THEN
/// (<client's condition>) ELSE false END`. CASE evaluates its condition first, so the client's
/// condition never runs on a hidden row (its errors and side channels stay silent there), and
/// a hidden row is never changed. The rules go in as a placeholder put in place after
/// PostgreSQL's parser checked the statement, like a masked column reference.
pub fn guard_written_rows(
    ctx: &Ctx,
    rel: &Relation,
    view: Option<&super::view_writes::ViewColumns>,
    reference: &str,
    selection: &mut Option<sqlparser::ast::Expr>,
    out: &mut super::Analysed,
) -> Result<(), crate::analysis::Refusal> {
    use sqlparser::ast::Expr;
    let table = view.map_or(rel, |v| v.base.as_ref());
    let Some(filter) = ctx.row_filter(table, reference) else {
        return Ok(());
    };
    if reference.starts_with("pgvakt_") {
        return Err(ctx.refuse(format!(
            "the alias {reference} is reserved for pgvakt's row rules; choose another for {}.{}",
            rel.schema, rel.name
        )));
    }
    let unsupported = |e: String| {
        ctx.unsupported(&format!(
            "the row rules of {}.{} ({e})",
            table.schema, table.name
        ))
    };
    let condition = match view {
        None => {
            let checked = super::stand_in::check_expr(&filter.sql).map_err(unsupported)?;
            let placeholder = super::stand_in::placeholder();
            out.take_mask_stand_ins(&mut vec![(placeholder.clone(), checked)]);
            placeholder
        }
        Some(v) => visible_keys(ctx, rel, v, reference, out)?,
    };
    let mut guarded = super::parse_expr(&format!("CASE WHEN {condition} THEN true ELSE false END"))
        .map_err(|e| unsupported(e.to_string()))?;
    match (&mut guarded, selection.take()) {
        (Expr::Case { conditions, .. }, Some(client)) => match conditions.first_mut() {
            Some(when) => when.result = Expr::Nested(Box::new(client)),
            None => return Err(unsupported("an empty CASE".into())),
        },
        (_, None) => {
            guarded = super::parse_expr(&condition).map_err(|e| unsupported(e.to_string()))?;
        }
        _ => return Err(unsupported("a CASE that does not read back".into())),
    }
    *selection = Some(guarded);
    Ok(())
}

/// A view's rows are its base table's, and the rules' predicate may read base columns the view
/// does not show: a row written through the view is visible when its primary key is among the
/// keys of the rows the role sees, `(view.k1, ...) IN (SELECT k1, ... FROM <stand-in>)`. A view
/// that does not show the whole primary key as plain columns cannot be guarded: refused.
fn visible_keys(
    ctx: &Ctx,
    view: &Relation,
    columns: &super::view_writes::ViewColumns,
    reference: &str,
    out: &mut super::Analysed,
) -> Result<String, crate::analysis::Refusal> {
    let base = columns.base.as_ref();
    let refuse = || {
        ctx.not_allowed(
            format!("writing through view {}.{}", view.schema, view.name),
            Why::because(format!(
                "its table {}.{} has row rules for the role, and the view does not show the table's whole primary key; write the table itself",
                base.schema, base.name
            )),
        )
    };
    if base.primary_key.is_empty() {
        return Err(refuse());
    }
    let mut shown = Vec::new();
    for k in &base.primary_key {
        let v = columns
            .map
            .iter()
            .find(|(_, b)| b.as_deref() == Some(k.as_str()))
            .map(|(v, _)| v)
            .ok_or_else(refuse)?;
        shown.push(format!("{}.{}", super::quote(reference), super::quote(v)));
    }
    let reach: std::collections::HashSet<String> = base.primary_key.iter().cloned().collect();
    let sql = ctx
        .masked_relation_sql(base, Some(&reach))?
        .ok_or_else(refuse)?;
    let unsupported = |e: String| {
        ctx.unsupported(&format!(
            "the row rules of {}.{} ({e})",
            base.schema, base.name
        ))
    };
    let checked = super::stand_in::check(&sql).map_err(unsupported)?;
    let placeholder = super::stand_in::placeholder();
    let keys: Vec<String> = base
        .primary_key
        .iter()
        .map(|k| super::quote(k).to_string())
        .collect();
    out.take_stand_ins(
        &mut vec![(placeholder.clone(), checked)],
        &mut vec![(
            placeholder.trim_matches('"').to_owned(),
            base.primary_key.clone(),
        )],
    );
    Ok(format!(
        "({}) IN (SELECT {} FROM {placeholder} AS \"pgvakt_visible\")",
        shown.join(", "),
        keys.join(", ")
    ))
}

/// The stand-in with `condition` (over its row, see `row_pushdown`) added to its WHERE; None
/// when it is not in the form [`with_rows`] writes.
pub fn with_condition(stand_in: &str, condition: &str) -> Option<String> {
    let head = stand_in.strip_suffix(" OFFSET 0")?;
    Some(format!("{head} AND {condition} OFFSET 0"))
}

/// The stand-in with `page` (ORDER BY and LIMIT, see `row_page`) after its WHERE.
pub fn with_page(stand_in: &str, page: &str) -> Option<String> {
    let head = stand_in.strip_suffix(" OFFSET 0")?;
    Some(format!("{head}{page} OFFSET 0"))
}
