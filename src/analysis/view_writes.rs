//! Writes through a view are writes to its base table: PostgreSQL turns an INSERT, UPDATE or
//! DELETE of an automatically updatable view into one of the table it reads, column for
//! column. So the role's rules for the written view's columns are those of the base columns
//! they show (through nested views too), never the view's own inventory entry, which would
//! let a view listed as non-personal write anything into a protected column. A column the view
//! computes is not written by PostgreSQL and, over protected data, cannot be filtered on. A
//! view with INSTEAD OF triggers or rules runs code pgvakt cannot analyse, and a view that is
//! not one table's columns is not written through: both are refused.

use std::sync::Arc;

use sqlparser::ast::{Expr, Query, Select, SelectItem, SetExpr, TableFactor};

use super::{fold, parse_query, Ctx};
use crate::analysis::{Refusal, Why};
use crate::catalog::{RelKind, Relation};
use crate::policy::model::{ColumnAction, ColumnDecision, WriteAction, WriteDecision};

/// Views through views, at most.
const MAX_DEPTH: usize = 16;

/// The table a view writes, and for each of the view's columns the base column it shows.
pub struct ViewColumns {
    pub base: Arc<Relation>,
    pub map: Vec<(String, Option<String>)>,
    /// The view reads its table with ONLY: writes reach no inheritance child.
    pub only: bool,
}

impl ViewColumns {
    /// The base column a view column writes.
    pub fn base_column(&self, column: &str) -> Option<&str> {
        self.map
            .iter()
            .find(|(v, _)| v == column)
            .and_then(|(_, b)| b.as_deref())
    }

    /// The rules of each view column: its base column's, or for a computed column none to
    /// write and, over protected data, none to read.
    pub fn rules(
        &self,
        ctx: &Ctx,
        view: &Relation,
    ) -> Vec<(String, ColumnDecision, WriteDecision)> {
        let protected = ctx.view_reads_protected(view).is_some();
        self.map
            .iter()
            .map(|(v, b)| match b {
                Some(b) => (
                    v.clone(),
                    ctx.column(&self.base, b),
                    ctx.rules.write(&self.base.schema, &self.base.name, b),
                ),
                None => {
                    let rule = format!(
                        "view {}.{} computes column {v}, which no write changes",
                        view.schema, view.name
                    );
                    let action = if protected {
                        ColumnAction::Block
                    } else {
                        ColumnAction::Allow
                    };
                    (
                        v.clone(),
                        ColumnDecision {
                            action,
                            category: crate::policy::inventory::NONE.to_owned(),
                            rule: rule.clone(),
                        },
                        WriteDecision {
                            action: WriteAction::Refuse,
                            rule,
                        },
                    )
                }
            })
            .collect()
    }
}

/// For a view written through: its base table and column map; None for other relations.
pub fn through(ctx: &Ctx, rel: &Relation) -> Result<Option<ViewColumns>, Refusal> {
    if rel.kind != RelKind::View {
        return Ok(None);
    }
    resolve(ctx, rel, 0).map(Some)
}

fn resolve(ctx: &Ctx, view: &Relation, depth: usize) -> Result<ViewColumns, Refusal> {
    let refuse = |why: &str| write_refusal(ctx, view, why);
    if view.instead {
        return Err(refuse(
            "it has INSTEAD OF triggers or rules, which run code pgvakt cannot analyse",
        ));
    }
    if depth > MAX_DEPTH {
        return Err(refuse("it is built on views nested too deep"));
    }
    let not_simple = "pgvakt writes through views that show the columns of one table";
    let def = view
        .definition
        .as_deref()
        .ok_or_else(|| refuse(not_simple))?;
    let def = super::inheritance::mark_only(def.trim().trim_end_matches(';'));
    let q = parse_query(&def).map_err(|_| refuse(not_simple))?;
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Err(refuse(not_simple));
    };
    // A view over no table (`SELECT 1 AS x`) has no FROM item at all.
    let Some(TableFactor::Table {
        name, args: None, ..
    }) = s.from.first().map(|f| &f.relation)
    else {
        return Err(refuse(not_simple));
    };
    if !is_plain(&q, s, view) {
        return Err(refuse(not_simple));
    }
    let parts = super::statements::name_parts(ctx, name)?;
    let base = ctx.resolve(&parts, name)?;
    if let Some(filter) = &s.selection {
        if let Some(why) = filter_refusal(ctx, &base, filter) {
            return Err(refuse(&why));
        }
    }
    let mut map = column_map(view, &s.projection, &base).ok_or_else(|| refuse(not_simple))?;
    if base.kind == RelKind::View {
        // Through the next view to its table.
        let next = resolve(ctx, &base, depth + 1)?;
        for (_, b) in map.iter_mut() {
            *b = b
                .as_deref()
                .and_then(|c| next.base_column(c))
                .map(str::to_owned);
        }
        return Ok(ViewColumns {
            base: next.base,
            map,
            only: next.only,
        });
    }
    if !matches!(
        base.kind,
        RelKind::Table | RelKind::Partitioned | RelKind::Foreign
    ) {
        return Err(refuse(not_simple));
    }
    Ok(ViewColumns {
        base,
        map,
        only: super::inheritance::is_only(name),
    })
}

/// Writing through `view` is refused, `why`.
fn write_refusal(ctx: &Ctx, view: &Relation, why: &str) -> Refusal {
    ctx.not_allowed(
        format!("writing through view {}.{}", view.schema, view.name),
        Why::because(format!("{why}; write the table itself")),
    )
}

/// The view is one SELECT of one relation, one item per view column, with nothing that makes
/// PostgreSQL refuse to write through it (WITH, joins, DISTINCT, GROUP BY, HAVING).
fn is_plain(q: &Query, s: &Select, view: &Relation) -> bool {
    q.with.is_none()
        && s.from.len() == 1
        && s.from[0].joins.is_empty()
        && s.distinct.is_none()
        && s.having.is_none()
        && matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.projection.len() == view.columns.len()
}

/// Why the view's WHERE keeps it from being written through, if it does. The view's own
/// filter runs on stored values: over a protected column, which rows a write reaches would
/// tell what the role cannot read.
fn filter_refusal(ctx: &Ctx, base: &Relation, filter: &Expr) -> Option<String> {
    let named = super::names::Names::of(filter).idents;
    if let Some(c) = base.columns.iter().find(|c| {
        named.contains(&c.name) && ctx.column(base, &c.name).action != ColumnAction::Allow
    }) {
        return Some(format!(
            "its WHERE clause reads protected column {}.{}",
            base.name, c.name
        ));
    }
    let read = protected_relation_read(ctx, filter)?;
    Some(format!(
        "its WHERE clause reads {read}, whose stored rows and values PostgreSQL would judge the written rows by"
    ))
}

/// Each view column with the base column it shows (None for a computed one); None when an
/// item is not a column or expression (the view is not simple).
fn column_map(
    view: &Relation,
    projection: &[SelectItem],
    base: &Relation,
) -> Option<Vec<(String, Option<String>)>> {
    let mut map = Vec::with_capacity(view.columns.len());
    for (col, item) in view.columns.iter().zip(projection) {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return None,
        };
        let shown = match expr {
            Expr::Identifier(i) => Some(fold(i)),
            Expr::CompoundIdentifier(p) if p.len() == 2 => p.last().map(fold),
            _ => None,
        }
        .filter(|c| base.columns.iter().any(|b| b.name == *c));
        map.push((col.name.clone(), shown));
    }
    Some(map)
}

/// A relation a view's WHERE reads in a sub-query that the role reads through a stand-in
/// (masked columns or row rules), or a view or name pgvakt cannot tell (fail closed).
/// PostgreSQL evaluates the view's WHERE of a write on the stored relations, so the rows a
/// write reaches would tell what the stand-in hides: that a hidden person works for a company,
/// say, by an UPDATE's row count.
fn protected_relation_read(ctx: &Ctx, filter: &Expr) -> Option<String> {
    use std::ops::ControlFlow;
    let mut found = None;
    let _ = sqlparser::ast::visit_relations(filter, |name| {
        let rel = super::statements::name_parts(ctx, name)
            .ok()
            .and_then(|p| ctx.resolve(&p, name).ok());
        if rel.is_none_or(|r| r.kind == RelKind::View || ctx.is_protected(&r)) {
            found = Some(name.to_string());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}
