//! What a statement reads and writes, walked out of its parts and recorded in `Analysed`:
//! the columns with the role's action on each, the subjects returned, the write targets.

use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, VisitMut};

use super::names::Names;
use super::relations::Reads;
use super::writes::Target;
use super::{fold, Analysed, Ctx};
use crate::analysis::Refusal;

pub(super) fn walk_reads<T: VisitMut + sqlparser::ast::Visit>(
    node: &mut T,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    let mut reads = Reads::new(ctx);
    reads.parameters_once = out.parameters_once.clone();
    reads.reach = Names::of(&*node).reachable().cloned();
    if let ControlFlow::Break(e) = node.visit(&mut reads) {
        return Err(e);
    }
    reads.check_blocked()?;
    record_reads(&mut reads, out)
}

/// Walk several parts of one statement with one scope (used where the written table itself
/// must not be replaced).
pub(super) fn walk_parts(
    ctx: &Ctx,
    out: &mut Analysed,
    f: impl FnOnce(&mut Reads) -> ControlFlow<Refusal>,
) -> Result<(), Refusal> {
    let mut reads = Reads::new(ctx);
    if let ControlFlow::Break(e) = f(&mut reads) {
        return Err(e);
    }
    reads.check_blocked()?;
    record_reads(&mut reads, out)
}

pub(super) fn record_reads(reads: &mut Reads, out: &mut Analysed) -> Result<(), Refusal> {
    // A table with row-level security runs its policies' expressions, unseen in the text.
    out.changes_state |= reads.changes_state
        || reads
            .read
            .iter()
            .any(|r| reads.ctx.catalog.has_row_security(r.oid));
    out.take_stand_ins(&mut reads.stand_ins, &mut reads.stand_in_columns);
    out.pushed_parameters
        .extend(std::mem::take(&mut reads.pushed_parameters));
    for r in &reads.protected {
        out.protected_reads.push(format!("{}.{}", r.schema, r.name));
    }
    for u in reads.uses() {
        Analysed::add_use(&mut out.columns, u);
    }
    Ok(())
}

pub(super) fn record_writes(
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    columns: impl IntoIterator<Item = String>,
    out: &mut Analysed,
) {
    let table = format!("{}.{}", rel.schema, rel.name);
    if !out.written_tables.contains(&table) {
        out.written_tables.push(table);
    }
    for c in columns {
        if let Some(u) = ctx.column_use(rel, &c) {
            Analysed::add_use(&mut out.written, u);
        }
    }
}

/// A write's record names the subjects whose rows it wrote: their keys are returned as hidden
/// columns (only where the statement is alone in its text, so its result can be told apart).
pub(super) fn return_subjects(
    returning: &mut Option<Vec<sqlparser::ast::SelectItem>>,
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    reference: sqlparser::ast::Ident,
    out: &mut Analysed,
) {
    if out.hide_subjects && out.touches_personal_data() {
        let (hidden, whole) = super::subjects::add_returned_key(returning, ctx, rel, reference);
        out.hidden = hidden.len();
        out.hidden_keys = hidden;
        out.hidden_whole = whole;
    }
}

/// Columns of the written table that RETURNING hands to the client are reads.
pub(super) fn record_returned(
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    columns: Vec<String>,
    out: &mut Analysed,
) {
    for c in columns {
        if let Some(u) = ctx.column_use(rel, &c) {
            Analysed::add_use(&mut out.columns, u);
        }
    }
}

pub(super) fn walk_target<T: VisitMut>(node: &mut T, target: &mut Target) -> Result<(), Refusal> {
    match node.visit(target) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

pub(super) fn name_parts(ctx: &Ctx, name: &ObjectName) -> Result<Vec<String>, Refusal> {
    name.0
        .iter()
        .map(|p| p.as_ident().map(fold))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ctx.unsupported(&format!("the name {name}")))
}
