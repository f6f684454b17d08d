//! What a write may target: the relation must be writable by the role, every assigned
//! column is checked against its write rule, and guarded columns of new rows get the guard
//! that lets NULL or DEFAULT through (see `write_guard`).

use sqlparser::ast::{AssignmentTarget, ObjectName, SelectItem};

use super::statements::name_parts;
use super::writes::Target;
use super::{Analysed, Ctx};
use crate::analysis::{Refusal, Why};

/// Each guarded column of a new row: NULL or DEFAULT pass, other values of a VALUES list or
/// of a plain SELECT's output are guarded (`write_guard`), and other queries' rows cannot be.
pub(super) fn guard_new_rows(
    ctx: &Ctx,
    columns: &[String],
    source: Option<&mut sqlparser::ast::Query>,
    target: &mut Target,
) -> Result<(), Refusal> {
    for c in columns {
        target.known(c)?;
    }
    let guarded: Vec<(usize, &String)> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| target.guarded(c).is_some())
        .collect();
    if guarded.is_empty() {
        return Ok(());
    }
    match source.map(|q| q.body.as_mut()) {
        Some(sqlparser::ast::SetExpr::Values(values)) => {
            for row in values.rows.iter_mut() {
                for (i, c) in &guarded {
                    let v = row.get_mut(*i).ok_or_else(|| {
                        ctx.unsupported("a VALUES row shorter than its column list")
                    })?;
                    target.guard_insert(c, v)?;
                }
            }
        }
        // `INSERT ... SELECT p0, p1 FROM (VALUES ...)`, as SQLAlchemy writes many rows: each
        // output column is guarded where it is computed, row by row like a VALUES list.
        // `(t.*)` is an expression to sqlparser and several columns to PostgreSQL.
        Some(sqlparser::ast::SetExpr::Select(select))
            if !select.projection.iter().any(super::row_writes::expands) =>
        {
            for (i, c) in &guarded {
                match select.projection.get_mut(*i) {
                    Some(
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. },
                    ) => target.guard_insert(c, e)?,
                    _ => target.check_write(c)?,
                }
            }
        }
        _ => {
            for (_, c) in guarded {
                target.check_write(c)?;
            }
        }
    }
    Ok(())
}

pub(super) fn assignment_targets(
    ctx: &Ctx,
    t: &AssignmentTarget,
    target: &Target,
) -> Result<(), Refusal> {
    match t {
        AssignmentTarget::ColumnName(n) => target.check_write(&column_name(ctx, n)?),
        AssignmentTarget::Tuple(ns) => {
            for n in ns {
                target.check_write(&column_name(ctx, n)?)?;
            }
            Ok(())
        }
    }
}

/// System catalogs are never written by restricted roles: `UPDATE pg_settings` changes settings
/// past every check.
pub(super) fn writable(
    ctx: &Ctx,
    rel: std::sync::Arc<crate::catalog::Relation>,
) -> Result<std::sync::Arc<crate::catalog::Relation>, Refusal> {
    if rel.schema == "pg_catalog" || rel.schema == "information_schema" {
        return Err(ctx.not_allowed(format!("writing {}.{}", rel.schema, rel.name), Why::Plain));
    }
    Ok(rel)
}

pub(super) fn column_name(ctx: &Ctx, name: &ObjectName) -> Result<String, Refusal> {
    name_parts(ctx, name)?
        .pop()
        .ok_or_else(|| ctx.unsupported("an empty column name"))
}

/// An UPDATE or DELETE target: with ONLY, written back into the rendering; without, its
/// descendants' rows are changed too, under its rules.
pub(super) fn only_target(
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    name: &ObjectName,
    keyword: &'static str,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    if super::inheritance::is_only(name) {
        out.only_write = Some((
            keyword,
            format!("{}.{}", super::quote(&rel.schema), super::quote(&rel.name)),
        ));
        Ok(())
    } else {
        ctx.check_descendants(rel)
    }
}

/// A view written through: its base table and column map (its descendants' rows are written
/// too unless the view reads ONLY).
pub(super) fn through_view(
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
) -> Result<Option<super::view_writes::ViewColumns>, Refusal> {
    let view = super::view_writes::through(ctx, rel)?;
    if let Some(v) = view.as_ref().filter(|v| !v.only) {
        ctx.check_descendants(&v.base)?;
    }
    Ok(view)
}

/// The write target, judged by its own rules or, for a view, by its base table's.
pub(super) fn judged<'a, 'c>(
    ctx: &'a Ctx<'c>,
    rel: &'a crate::catalog::Relation,
    alias: Option<String>,
    view: Option<&super::view_writes::ViewColumns>,
) -> Target<'a, 'c> {
    let target = Target::new(ctx, rel, alias);
    match view {
        Some(v) => target.with_rules(v.rules(ctx, rel)),
        None => target,
    }
}

/// Columns written, as records name them: a view's are its base table's.
pub(super) fn record_view_writes(
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    view: Option<&super::view_writes::ViewColumns>,
    columns: impl IntoIterator<Item = String>,
    out: &mut Analysed,
) {
    match view {
        Some(v) => {
            let base: Vec<String> = columns
                .into_iter()
                .filter_map(|c| v.base_column(&c).map(str::to_owned))
                .collect();
            super::statements::record_writes(ctx, &v.base, base, out);
        }
        None => super::statements::record_writes(ctx, rel, columns, out),
    }
}

/// Rows inserted into a partitioned table are stored in its partitions.
pub(super) fn routed_rows(ctx: &Ctx, rel: &crate::catalog::Relation) -> Result<(), Refusal> {
    if rel.kind == crate::catalog::RelKind::Partitioned {
        ctx.check_descendants(rel)?;
    }
    Ok(())
}
