//! Hidden subject keys: for a plain SELECT that reads a table with a subject key but does not
//! return the key, the key is added as trailing output columns, so the audit trail can name the
//! data subjects whose rows were returned. The session strips them from every RowDescription
//! and DataRow (and pads Bind result formats), so the client never sees them.
//!
//! Only where an extra output column cannot change the result: no DISTINCT, GROUP BY, HAVING or
//! aggregate (restricted roles can call built-in functions only, so the aggregates are known),
//! no set operation, and only base tables named directly in FROM whose key the role may see.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, TableFactor, Visit, Visitor,
};

use super::{fold, quote, Ctx};
use crate::policy::model::ColumnAction;

/// Built-in aggregates of PostgreSQL 15 (with a FILTER or OVER clause or not).
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "count",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "max",
    "min",
    "range_agg",
    "range_intersect_agg",
    "string_agg",
    "sum",
    "xmlagg",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "grouping",
    "any_value",
];

/// Prefix of the hidden columns' names.
pub const HIDDEN_PREFIX: &str = "pgvakt_subject_";

struct Aggregates(bool);

impl Visitor for Aggregates {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let name = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(fold)
                .unwrap_or_default();
            if f.over.is_none() && AGGREGATES.contains(&name.as_str()) {
                self.0 = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// A hidden key column: the subject table (`schema.table`) and the key's type OID (0 when it
/// is not one the audit trail reads in binary), so its values can be read from rows whose
/// RowDescription the session never saw (an Execute without a Describe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenKey {
    pub table: String,
    pub type_oid: u32,
}

fn hidden_key(rel: &crate::catalog::Relation, key: &str) -> HiddenKey {
    let ty = rel
        .columns
        .iter()
        .find(|c| c.name == key)
        .map(|c| c.ty.sql_name.as_str())
        .unwrap_or_default();
    let type_oid = match ty {
        "bigint" => 20,
        "integer" => 23,
        "smallint" => 21,
        "uuid" => 2950,
        "text" => 25,
        t if t.starts_with("character varying") => 1043,
        t if t.starts_with("character") => 1042,
        _ => 0,
    };
    HiddenKey {
        table: format!("{}.{}", rel.schema, rel.name),
        type_oid,
    }
}

/// Adds the hidden key columns to `q`; returns them.
pub fn add_hidden_keys(q: &mut Query, ctx: &Ctx) -> Vec<HiddenKey> {
    let ctes: HashSet<String> = q
        .with
        .as_ref()
        .map(|w| w.cte_tables.iter().map(|c| fold(&c.alias.name)).collect())
        .unwrap_or_default();
    if order_blocks(q) {
        return Vec::new();
    }
    let SetExpr::Select(sel) = q.body.as_mut() else {
        return Vec::new();
    };
    if !one_row_per_row(sel) {
        return Vec::new();
    }
    let mut keys: Vec<(Ident, String, HiddenKey)> = Vec::new();
    for twj in &sel.from {
        let factors = std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation));
        for tf in factors {
            if let Some(found) = subject_key_of(tf, &sel.projection, &ctes, ctx) {
                keys.push(found);
            }
        }
    }
    for (i, (reference, key, _)) in keys.iter().enumerate() {
        sel.projection.push(SelectItem::ExprWithAlias {
            expr: Expr::CompoundIdentifier(vec![reference.clone(), quote(key)]),
            alias: quote(&format!("{HIDDEN_PREFIX}{i}")),
        });
    }
    keys.into_iter().map(|(_, _, h)| h).collect()
}

/// An ORDER BY that an added column would change: one with aggregates, or naming an output
/// position (`ORDER BY 2`), to which an added column could give a meaning. In a statement's
/// shape the number is a marker (`$9500000`), filled in before PostgreSQL reads it: a whole
/// number's marker counts as that number.
fn order_blocks(q: &Query) -> bool {
    q.order_by.as_ref().is_some_and(|order| {
        let mut agg = Aggregates(false);
        let _ = order.visit(&mut agg);
        agg.0
            || order
                .to_string()
                .split([' ', ',', '(', ')'])
                .any(|w| w.parse::<u64>().is_ok() || is_whole_marker(w))
    })
}

/// Whether each result row is one row of the FROM items, so an added key column names the
/// subject of the row it sits in (no DISTINCT, grouping, aggregates or SELECT INTO).
fn one_row_per_row(sel: &Select) -> bool {
    let grouped =
        !matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if sel.distinct.is_some() || grouped || sel.having.is_some() || sel.into.is_some() {
        return false;
    }
    let mut agg = Aggregates(false);
    let _ = sel.projection.visit(&mut agg);
    !agg.0
}

/// For a plain table in FROM whose subject key the role reads as stored and the result does
/// not already return: (the name the query knows it by, the key column, the hidden key).
fn subject_key_of(
    tf: &TableFactor,
    projection: &[SelectItem],
    ctes: &HashSet<String>,
    ctx: &Ctx,
) -> Option<(Ident, String, HiddenKey)> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = tf
    else {
        return None;
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    let parts = name
        .0
        .iter()
        .map(|p| p.as_ident().map(fold))
        .collect::<Option<Vec<_>>>()?;
    if parts.len() == 1 && ctes.contains(&parts[0]) {
        return None;
    }
    let rel = ctx.catalog.resolve(
        super::inheritance::without_marker(&parts),
        ctx.search_path,
        ctx.user,
    )?;
    let key = ctx.rules.subject_key(&rel.schema, &rel.name)?;
    if !rel.columns.iter().any(|c| c.name == key)
        || ctx.rules.column(&rel.schema, &rel.name, &key).action != ColumnAction::Allow
    {
        return None;
    }
    let reference = match alias {
        Some(a) => a.name.clone(),
        None => name.0.last().and_then(|p| p.as_ident())?.clone(),
    };
    if projects(projection, &fold(&reference), &key) {
        // Already in the result: the audit trail finds it by its origin.
        return None;
    }
    let hidden = hidden_key(rel, &key);
    Some((reference, key, hidden))
}

/// Whether `word` is a shape's marker of a whole-number literal (see `literals`); other
/// constants in ORDER BY name no position (PostgreSQL refuses them).
fn is_whole_marker(word: &str) -> bool {
    word.strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(super::literals::Marker::of)
        .is_some_and(|m| m.whole)
}

/// Whether the projection returns `reference.key` as a plain column (or all of `reference`).
fn projects(projection: &[SelectItem], reference: &str, key: &str) -> bool {
    projection.iter().any(|item| match item {
        SelectItem::Wildcard(_) => true,
        SelectItem::QualifiedWildcard(kind, _) => kind
            .to_string()
            .rsplit('.')
            .next()
            .is_some_and(|r| r.trim_matches('"').eq_ignore_ascii_case(reference)),
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => match e {
            Expr::Identifier(i) => fold(i) == key,
            Expr::CompoundIdentifier(parts) => {
                parts.len() >= 2
                    && fold(&parts[parts.len() - 1]) == key
                    && fold(&parts[parts.len() - 2]) == reference
            }
            _ => false,
        },
        _ => false,
    })
}

/// For a write: adds the written table's subject key to RETURNING as a hidden column, so the
/// record names the subjects whose rows were written. `reference` is the name the statement
/// knows the table by. Returns (hidden columns added, whether they are the whole result: the
/// statement had no RETURNING, and the session drops the result the client did not ask for).
pub fn add_returned_key(
    returning: &mut Option<Vec<SelectItem>>,
    ctx: &Ctx,
    rel: &crate::catalog::Relation,
    reference: Ident,
) -> (Vec<HiddenKey>, bool) {
    let Some(key) = ctx.rules.subject_key(&rel.schema, &rel.name) else {
        return (Vec::new(), false);
    };
    if !rel.columns.iter().any(|c| c.name == key)
        || ctx.rules.column(&rel.schema, &rel.name, &key).action != ColumnAction::Allow
    {
        return (Vec::new(), false);
    }
    let hidden = vec![hidden_key(rel, &key)];
    let item = SelectItem::ExprWithAlias {
        expr: Expr::CompoundIdentifier(vec![reference.clone(), quote(&key)]),
        alias: quote(&format!("{HIDDEN_PREFIX}0")),
    };
    match returning {
        None => {
            *returning = Some(vec![item]);
            (hidden, true)
        }
        Some(items) if projects(items, &fold(&reference), &key) => (Vec::new(), false),
        Some(items) => {
            items.push(item);
            (hidden, false)
        }
    }
}

/// Undoes `add_hidden_keys`.
pub fn remove_hidden_keys(q: &mut Query, n: usize) {
    if let SetExpr::Select(sel) = q.body.as_mut() {
        let keep = sel.projection.len().saturating_sub(n);
        sel.projection.truncate(keep);
    }
}
