//! INSERT, UPDATE, DELETE and COPY: the table a statement writes (or COPY TO reads), checked
//! column by column against the role's write rules and row rules, and rewritten so that
//! PostgreSQL writes only what the role may write.

use sqlparser::ast::{
    AssignmentTarget, CopySource, CopyTarget, Delete, FromTable, Insert, ObjectName,
    OnConflictAction, OnInsert, TableFactor, TableObject, Update, VisitMut,
};

use super::recording::{
    name_parts, record_returned, record_writes, return_subjects, walk_parts, walk_reads,
    walk_target,
};
use super::view_writes::ViewColumns;
use super::write_targets::{
    assignment_targets, column_name, guard_new_rows, judged, only_target, record_view_writes,
    routed_rows, through_view, writable,
};
use super::writes::Target;
use super::{fold, parse_query, quote, Analysed, Ctx};
use crate::analysis::{Refusal, Why};
use crate::catalog::Relation;
use crate::policy::model::{Capability, StatementClass};

pub(super) fn insert(
    ins: &mut Insert,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<StatementClass, Refusal> {
    let TableObject::TableName(name) = &mut ins.table else {
        return Err(ctx.not_allowed("INSERT into a table function", Why::Plain));
    };
    let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
    routed_rows(ctx, &rel)?;
    let view = through_view(ctx, &rel)?;
    *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
    let alias = ins.table_alias.as_ref().map(|a| fold(&a.alias));
    let mut target = judged(ctx, &rel, alias, view.as_ref());
    if ins.columns.is_empty() {
        target.check_all_writable()?;
        record_view_writes(
            ctx,
            &rel,
            view.as_ref(),
            rel.columns.iter().map(|c| c.name.clone()),
            out,
        );
    }
    let columns = ins
        .columns
        .iter()
        .map(|c| column_name(ctx, c))
        .collect::<Result<Vec<_>, _>>()?;
    guard_new_rows(ctx, &columns, ins.source.as_deref_mut(), &mut target)?;
    // Row rules are the written table's: through a view, its base table's columns.
    let written = view
        .as_ref()
        .map_or_else(|| rel.clone(), |v| v.base.clone());
    let row_columns = match (&view, columns.is_empty()) {
        (Some(v), true) => v.map.iter().map(|(c, _)| c.clone()).collect(),
        _ => columns.clone(),
    };
    let row_columns = super::row_writes::base_columns(view.as_ref(), &row_columns);
    super::row_writes::check_insert(
        ctx,
        &written,
        &row_columns,
        ins.source.is_some(),
        ins.on.is_some(),
    )?;
    record_view_writes(ctx, &rel, view.as_ref(), columns.clone(), out);
    on_conflict_updates(ctx, ins.on.as_ref(), &target, view.as_ref(), &written)?;
    if let Some(r) = &ins.returning {
        target.check_returning(r)?;
        record_returned(ctx, &rel, target.returned(r), out);
    }
    rows_inserted(ins, ctx, (&rel, &written), &row_columns, target, out)?;
    Ok(StatementClass::Write)
}

/// The columns `ON CONFLICT DO UPDATE` sets are written like an UPDATE's.
fn on_conflict_updates(
    ctx: &Ctx,
    on: Option<&OnInsert>,
    target: &Target,
    view: Option<&ViewColumns>,
    written: &Relation,
) -> Result<(), Refusal> {
    if let Some(OnInsert::OnConflict(oc)) = on {
        if let OnConflictAction::DoUpdate(du) = &oc.action {
            for a in &du.assignments {
                assignment_targets(ctx, &a.target, target)?;
                let cols = match &a.target {
                    AssignmentTarget::ColumnName(n) => vec![column_name(ctx, n)?],
                    AssignmentTarget::Tuple(ns) => ns
                        .iter()
                        .map(|n| column_name(ctx, n))
                        .collect::<Result<_, _>>()?,
                };
                let cols = super::row_writes::base_columns(view, &cols);
                super::row_writes::check_written_columns(ctx, written, &cols, "update")?;
            }
        }
    }
    Ok(())
}

/// The inserted rows: the target's guards and stand-ins put in, the source query's reads
/// rewritten, and the row rules' guards and the subject keys of RETURNING added.
fn rows_inserted(
    ins: &mut Insert,
    ctx: &Ctx,
    (rel, written): (&Relation, &Relation),
    row_columns: &[String],
    mut target: Target,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    // The rows inserted come from a query that cannot see the table written: its
    // names are read like any query's.
    let source = ins.source.take();
    let walked = walk_target(ins, &mut target);
    ins.source = source;
    walked?;
    out.take_mask_stand_ins(&mut target.stand_ins);
    out.take_mask_stand_ins(&mut target.guards);
    out.guard_places.append(&mut target.guard_places);
    walk_reads(ins, ctx, out)?;
    super::row_writes::guard_new_rows(ctx, written, row_columns, ins.source.as_deref_mut(), out)?;
    let reference = match &ins.table_alias {
        Some(a) => a.alias.clone(),
        None => quote(&rel.name),
    };
    return_subjects(&mut ins.returning, ctx, rel, reference, out);
    Ok(())
}

pub(super) fn update(
    u: &mut Update,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<StatementClass, Refusal> {
    let TableFactor::Table { name, alias, .. } = &mut u.table.relation else {
        return Err(ctx.not_allowed("UPDATE of a derived table", Why::Plain));
    };
    let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
    only_target(ctx, &rel, name, "UPDATE", out)?;
    let view = through_view(ctx, &rel)?;
    *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
    let reference = alias
        .as_ref()
        .map_or_else(|| quote(&rel.name), |a| a.name.clone());
    let alias = alias.as_ref().map(|a| fold(&a.name));
    let mut target = judged(ctx, &rel, alias, view.as_ref());
    let mut subject_values = Vec::new();
    for (i, a) in u.assignments.iter_mut().enumerate() {
        let cols: Vec<String> = match &a.target {
            AssignmentTarget::ColumnName(n) => {
                let c = column_name(ctx, n)?;
                target.guard_update(&c, &mut a.value)?;
                vec![c]
            }
            AssignmentTarget::Tuple(ns) => {
                assignment_targets(ctx, &a.target, &target)?;
                ns.iter()
                    .map(|n| column_name(ctx, n))
                    .collect::<Result<_, _>>()?
            }
        };
        let written = view.as_ref().map_or(&*rel, |v| v.base.as_ref());
        let base_cols = super::row_writes::base_columns(view.as_ref(), &cols);
        super::row_writes::check_assignment(ctx, written, i, &base_cols, &mut subject_values)?;
        record_view_writes(ctx, &rel, view.as_ref(), cols, out);
    }
    if let Some(r) = &u.returning {
        target.check_returning(r)?;
        record_returned(ctx, &rel, target.returned(r), out);
    }
    walk_target(u, &mut target)?;
    out.take_mask_stand_ins(&mut target.stand_ins);
    out.take_mask_stand_ins(&mut target.guards);
    out.guard_places.append(&mut target.guard_places);
    walk_parts(ctx, out, |r| {
        u.table.joins.visit(r)?;
        u.assignments.visit(r)?;
        u.from.visit(r)?;
        u.selection.visit(r)?;
        u.returning.visit(r)
    })?;
    super::row_writes::guard_update(
        ctx,
        (&rel, view.as_ref()),
        (&fold(&reference), &subject_values),
        (&mut u.assignments, &mut u.selection),
        out,
    )?;
    return_subjects(&mut u.returning, ctx, &rel, reference, out);
    Ok(StatementClass::Write)
}

pub(super) fn delete(
    d: &mut Delete,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<StatementClass, Refusal> {
    let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &mut d.from;
    if from.len() != 1 || !d.tables.is_empty() {
        return Err(ctx.not_allowed("DELETE from several tables", Why::Plain));
    }
    let TableFactor::Table { name, alias, .. } = &mut from[0].relation else {
        return Err(ctx.not_allowed("DELETE from a derived table", Why::Plain));
    };
    let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
    only_target(ctx, &rel, name, "DELETE FROM", out)?;
    let view = through_view(ctx, &rel)?;
    let base = view.as_ref().map_or(&*rel, |v| v.base.as_ref());
    super::row_references::check_referenced(ctx, base, None)?;
    record_writes(ctx, &rel, std::iter::empty(), out);
    *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
    let reference = alias
        .as_ref()
        .map_or_else(|| quote(&rel.name), |a| a.name.clone());
    let alias = alias.as_ref().map(|a| fold(&a.name));
    let mut target = judged(ctx, &rel, alias, view.as_ref());
    if let Some(r) = &d.returning {
        target.check_returning(r)?;
        record_returned(ctx, &rel, target.returned(r), out);
    }
    walk_target(d, &mut target)?;
    out.take_mask_stand_ins(&mut target.stand_ins);
    walk_parts(ctx, out, |r| {
        d.using.visit(r)?;
        d.selection.visit(r)?;
        d.returning.visit(r)
    })?;
    super::row_rules::guard_written_rows(
        ctx,
        &rel,
        view.as_ref(),
        &fold(&reference),
        &mut d.selection,
        out,
    )?;
    return_subjects(&mut d.returning, ctx, &rel, reference, out);
    Ok(StatementClass::Write)
}

pub(super) fn copy(
    (source, to, target): (&mut CopySource, bool, &CopyTarget),
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<StatementClass, Refusal> {
    if !matches!(target, CopyTarget::Stdin | CopyTarget::Stdout)
        && !ctx.rules.allows(Capability::ServerFiles)
    {
        return Err(ctx.not_allowed("COPY to or from a server file or program", Why::Plain));
    }
    if to {
        if let CopySource::Table {
            table_name,
            columns,
        } = source
        {
            let cols = if columns.is_empty() {
                "*".to_owned()
            } else {
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // `COPY t TO` copies t's own rows, never its inheritance children's:
            // the query reads `ONLY t`, or a dump would hold the children's rows twice.
            let q = parse_query(&format!(
                "SELECT {cols} FROM {}",
                super::inheritance::only(table_name)
            ))
            .map_err(|e| ctx.unsupported(&format!("COPY {table_name}: {e}")))?;
            *source = CopySource::Query(q);
        }
        if let CopySource::Query(q) = source {
            walk_reads(q.as_mut(), ctx, out)?;
        }
    } else {
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(ctx.not_allowed("COPY FROM into a query", Why::Plain));
        };
        let rel = writable(ctx, ctx.resolve(&name_parts(ctx, table_name)?, table_name)?)?;
        routed_rows(ctx, &rel)?;
        super::row_writes::check_written_columns(ctx, &rel, &[], "COPY FROM")?;
        *table_name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
        let target = Target::new(ctx, &rel, None);
        if columns.is_empty() {
            target.check_all_writable()?;
            record_writes(ctx, &rel, rel.columns.iter().map(|c| c.name.clone()), out);
        }
        for c in columns.iter() {
            target.check_write(&fold(c))?;
            record_writes(ctx, &rel, [fold(c)], out);
        }
    }
    Ok(StatementClass::Copy)
}
