//! Writes into tables with row rules must not tell whether a hidden row exists.
//!
//! - A new or changed value of a column with a unique index (the primary key included) would
//!   collide with a hidden row, or not: such values are refused; keys come from defaults.
//! - `INSERT ... ON CONFLICT` answers "is there a row with this key" by its effect: refused.
//! - COPY FROM's rows cannot be checked before PostgreSQL stores them: refused.
//! - A value of a column that names a subject (`activities.contact_id`) must name a subject the
//!   role sees: it is replaced by `COALESCE((SELECT key FROM (SELECT value) JOIN <subjects the
//!   role sees> ON key = value), <failure>)`, so a hidden subject and one that does not exist
//!   fail alike, with the same refusal (the failure is `write_guard`'s constant cast, read back
//!   by the relay).

use std::sync::Arc;

use sqlparser::ast::{Assignment, AssignmentTarget, Expr, Query, SelectItem, SetExpr};

use super::{parse_expr, stand_in, Analysed, Ctx};
use crate::analysis::{Refusal, Why};
use crate::catalog::Relation;

/// An INSERT's columns (all of them without a list, none without a source) and ON CONFLICT.
pub fn check_insert(
    ctx: &Ctx,
    rel: &Relation,
    columns: &[String],
    has_source: bool,
    on_conflict: bool,
) -> Result<(), Refusal> {
    let given: Vec<String> = match (has_source, columns.is_empty()) {
        (false, _) => Vec::new(),
        (true, true) => rel.columns.iter().map(|c| c.name.clone()).collect(),
        (true, false) => columns.to_vec(),
    };
    let how = if on_conflict {
        "ON CONFLICT"
    } else {
        "insert into"
    };
    check_written_columns(ctx, rel, &given, how)
}

/// One assignment of an UPDATE: unique columns refused, the column naming the subject noted
/// (by its index) for [`guard_update`], and refused inside a column list.
pub fn check_assignment(
    ctx: &Ctx,
    rel: &Relation,
    index: usize,
    columns: &[String],
    subject_values: &mut Vec<usize>,
) -> Result<(), Refusal> {
    check_written_columns(ctx, rel, columns, "update")?;
    match columns {
        [c] if names_subject(ctx, rel, c) => subject_values.push(index),
        [_] => {}
        _ => {
            if let Some(c) = columns.iter().find(|c| names_subject(ctx, rel, c)) {
                return Err(ctx.not_allowed(
                    format!("setting {}.{c} in a column list", rel.name),
                    Why::instead("write it on its own, where pgvakt checks the subject it names"),
                ));
            }
        }
    }
    Ok(())
}

/// What a guarded write adds to the statement: expression placeholders (the failure) and
/// relation placeholders (the subjects the role sees) with the columns they show.
#[derive(Default)]
pub struct RowGuards {
    pub expressions: Vec<(String, Arc<str>)>,
    pub relations: Vec<(String, Arc<str>)>,
    pub relation_columns: Vec<(String, Vec<String>)>,
}

/// Unique columns a write sets, and ON CONFLICT / COPY FROM, for a table with row rules;
/// foreign keys between the written table and one with row rules (`row_references`).
pub fn check_written_columns(
    ctx: &Ctx,
    rel: &Relation,
    columns: &[String],
    how: &str,
) -> Result<(), Refusal> {
    let all: Vec<String>;
    let given = if how == "COPY FROM" {
        all = rel.columns.iter().map(|c| c.name.clone()).collect();
        &all
    } else {
        columns
    };
    super::row_references::check_referencing(ctx, rel, given)?;
    if how == "update" {
        super::row_references::check_referenced(ctx, rel, Some(columns))?;
    }
    if ctx.row_filter(rel, super::row_rules::ROW_ALIAS).is_none() {
        return Ok(());
    }
    if how == "ON CONFLICT" || how == "COPY FROM" {
        return Err(ctx.not_allowed(
            format!("{how} into {}.{}", rel.schema, rel.name),
            Why::because("its outcome would tell whether rows the role's row rules hide exist"),
        ));
    }
    if let Some(c) = columns.iter().find(|c| rel.unique.contains(c)) {
        return Err(ctx.may_not(
            format!("{how} column {}.{c}", rel.name),
            "it has a unique index, and whether a value collides would tell whether a row the role's row rules hide exists; let its default assign it",
        ));
    }
    Ok(())
}

/// The subject a table's rows refer to through another table, with the referring column:
/// (subject relation, its key column, the referring column).
fn subject_reference(ctx: &Ctx, rel: &Relation) -> Option<(Arc<Relation>, String, String)> {
    ctx.row_filter(rel, super::row_rules::ROW_ALIAS)?;
    let column = ctx.rules.subject_key(&rel.schema, &rel.name)?;
    let subject_type = ctx.rules.subject_type(&rel.schema, &rel.name)?;
    let (ss, st) = subject_type.split_once('.')?;
    if (ss, st) == (rel.schema.as_str(), rel.name.as_str()) {
        return None;
    }
    let subject = ctx.catalog.relation(ss, st)?.clone();
    let key = ctx.rules.subject_key(ss, st)?;
    Some((subject, key, column))
}

/// The subjects' stand-in for a guard. Where the role accepts `row_pushdown`'s timing channel
/// and the value has the key's type (whose equality is leakproof), the stand-in looks the key
/// up itself, by index, instead of reading every visible subject for each row written: its
/// fence keeps the condition outside from reaching in.
fn keyed(ctx: &Ctx, subject: &Relation, key: &str, ty: &str, stand_in: String) -> String {
    let pushdown = ctx
        .row_filter(subject, super::row_rules::ROW_ALIAS)
        .is_some_and(|f| f.pushdown);
    let key_type = subject
        .columns
        .iter()
        .find(|c| c.name == key)
        .map(|c| c.ty.sql_name.as_str());
    if !pushdown || key_type != Some(ty) || !super::row_pushdown::LEAKPROOF_TYPES.contains(&ty) {
        return stand_in;
    }
    let condition = format!(
        "{}.{} OPERATOR(pg_catalog.=) \"pgvakt_given\".\"pgvakt_value\"",
        super::quote(super::row_rules::ROW_ALIAS),
        super::quote(key)
    );
    super::row_rules::with_condition(&stand_in, &condition).unwrap_or(stand_in)
}

/// A guard for one value written to the referring column.
fn guard(
    ctx: &Ctx,
    rel: &Relation,
    (subject, key, column): (&Relation, &str, &str),
    value: &mut Expr,
    out: &mut RowGuards,
) -> Result<(), Refusal> {
    let unsupported =
        |e: String| ctx.unsupported(&format!("the value of {}.{column} ({e})", rel.name));
    let reach = std::iter::once(key.to_owned()).collect();
    let sql = ctx
        .masked_relation_sql(subject, Some(&reach))?
        .ok_or_else(|| unsupported("no stand-in for its subjects".into()))?;
    let ty = rel
        .columns
        .iter()
        .find(|c| c.name == column)
        .map(|c| c.ty.sql_name.clone())
        .ok_or_else(|| unsupported("no type".into()))?;
    let sql = keyed(ctx, subject, key, &ty, sql);
    let checked = stand_in::check(&sql).map_err(unsupported)?;
    let rel_placeholder = stand_in::placeholder();
    let refusal = ctx.refuse(format!(
        "role {} may write {}.{column} only with the key of a {} it sees (its row rules)",
        ctx.role(),
        rel.name,
        subject.name
    ));
    let fail = super::write_guard::failure_sql(&refusal, &ty);
    let fail_checked = stand_in::check_expr(&fail).map_err(unsupported)?;
    let fail_placeholder = stand_in::placeholder();
    let k = super::quote(key);
    // The value is computed in a FROM-less sub-select, so its names bind in the client's
    // query, never to the subjects' stand-in (which is a level further in). It is cast to the
    // column's type there: a parameter the client left untyped gets the type PostgreSQL would
    // give it in the column, not text. The subjects are read in a sub-query of that level, so
    // the stand-in may name the value (see `keyed`).
    let sql = format!(
        "COALESCE((SELECT (SELECT \"pgvakt_subject\".{k} FROM {rel_placeholder} AS \"pgvakt_subject\" WHERE \"pgvakt_subject\".{k} = \"pgvakt_given\".\"pgvakt_value\") FROM (SELECT CAST(({value}) AS {ty}) AS \"pgvakt_value\") AS \"pgvakt_given\"), {fail_placeholder})"
    );
    *value = parse_expr(&sql).map_err(|e| unsupported(e.to_string()))?;
    out.relation_columns.push((
        rel_placeholder.trim_matches('"').to_owned(),
        vec![key.to_owned()],
    ));
    out.relations.push((rel_placeholder, checked));
    out.expressions.push((fail_placeholder, fail_checked));
    Ok(())
}

/// New rows' values of the column naming their subject, in a VALUES list or a plain SELECT's
/// output (as `write_targets::guard_new_rows` finds them); other sources cannot be guarded.
/// Runs after the statement's reads were walked: the guards hold placeholders.
pub fn guard_new_rows(
    ctx: &Ctx,
    rel: &Relation,
    columns: &[String],
    source: Option<&mut Query>,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    let Some((subject, key, column)) = subject_reference(ctx, rel) else {
        return Ok(());
    };
    let listed = if columns.is_empty() {
        rel.columns.iter().position(|c| c.name == column)
    } else {
        columns.iter().position(|c| *c == column)
    };
    let (Some(i), Some(source)) = (listed, source) else {
        return Ok(());
    };
    let parts = (subject.as_ref(), key.as_str(), column.as_str());
    let mut g = RowGuards::default();
    match source.body.as_mut() {
        SetExpr::Values(values) => {
            for row in values.rows.iter_mut() {
                let v = row
                    .get_mut(i)
                    .ok_or_else(|| ctx.unsupported("a VALUES row shorter than its column list"))?;
                guard(ctx, rel, parts, v, &mut g)?;
            }
        }
        // The item at the column's position is its value only where no item stands for
        // several columns.
        SetExpr::Select(select) if !select.projection.iter().any(expands) => {
            match select.projection.get_mut(i) {
                Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) => {
                    guard(ctx, rel, parts, e, &mut g)?
                }
                _ => return Err(unsupported_source(ctx, rel, &column)),
            }
        }
        _ => return Err(unsupported_source(ctx, rel, &column)),
    }
    out.take_row_guards(g);
    Ok(())
}

/// Whether a SELECT list item may stand for several output columns: `*`, `t.*`, and `(t.*)`,
/// which PostgreSQL expands like `t.*` (its parser drops the parentheses). After one, the
/// items no longer line up with the columns written.
pub fn expands(item: &SelectItem) -> bool {
    fn star(e: &Expr) -> bool {
        match e {
            Expr::Nested(inner) => star(inner),
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => true,
            _ => false,
        }
    }
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => star(e),
        // `expr AS (a, b)` names several columns.
        SelectItem::ExprWithAliases { .. }
        | SelectItem::Wildcard(_)
        | SelectItem::QualifiedWildcard(..) => true,
    }
}

fn unsupported_source(ctx: &Ctx, rel: &Relation, column: &str) -> Refusal {
    ctx.refuse(format!(
        "role {} may write {}.{column} only from a VALUES list or a plain SELECT list, where pgvakt checks that each row names a subject the role sees",
        ctx.role(),
        rel.name
    ))
}

/// Whether `column` is the column of `rel` that names a subject the role's row rules filter.
pub fn names_subject(ctx: &Ctx, rel: &Relation, column: &str) -> bool {
    subject_reference(ctx, rel).is_some_and(|(_, _, c)| c == column)
}

/// An UPDATE after its reads were walked: the values of the column naming the subject
/// (`subject_values`, from [`check_assignment`]) guarded, and the row rules in its WHERE.
pub fn guard_update(
    ctx: &Ctx,
    (rel, view): (&Relation, Option<&super::view_writes::ViewColumns>),
    (reference, subject_values): (&str, &[usize]),
    (assignments, selection): (&mut [Assignment], &mut Option<Expr>),
    out: &mut Analysed,
) -> Result<(), Refusal> {
    let mut g = RowGuards::default();
    let table = view.map_or(rel, |v| v.base.as_ref());
    if let Some((subject, key, column)) = subject_reference(ctx, table) {
        // Every value noted is guarded or the statement is refused: `SET (contact_id) =
        // ROW(...)` is one column in a list, whose value PostgreSQL would take unchecked.
        for i in subject_values {
            match assignments.get_mut(*i) {
                Some(a) if matches!(a.target, AssignmentTarget::ColumnName(_)) => {
                    guard(ctx, table, (&subject, &key, &column), &mut a.value, &mut g)?;
                }
                _ => {
                    return Err(ctx.not_allowed(
                        format!("setting {}.{column} in a column list", table.name),
                        Why::instead(
                            "write it on its own, where pgvakt checks the subject it names",
                        ),
                    ))
                }
            }
        }
    }
    out.take_row_guards(g);
    super::row_rules::guard_written_rows(ctx, rel, view, reference, selection, out)
}

/// The base table's names of columns written through a view (a computed column keeps its own
/// name, which the base table does not have, so no base rule matches it; writing it is refused
/// by the view's column rules); the columns themselves for a table.
pub fn base_columns(
    view: Option<&super::view_writes::ViewColumns>,
    columns: &[String],
) -> Vec<String> {
    match view {
        None => columns.to_vec(),
        Some(v) => columns
            .iter()
            .map(|c| v.base_column(c).unwrap_or(c).to_owned())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_that_stand_for_several_columns_expand() {
        let q = super::super::parse_query(
            "SELECT *, t.*, (t.*), ((t.*)), a, b AS c, (a), t.a, f(t.*) FROM t",
        )
        .expect("parses");
        let SetExpr::Select(s) = q.body.as_ref() else {
            panic!("a SELECT");
        };
        let expanding: Vec<bool> = s.projection.iter().map(expands).collect();
        assert_eq!(
            expanding,
            [true, true, true, true, false, false, false, false, false]
        );
    }
}
