//! A page of a row-ruled table, read in the table's order inside its stand-in.
//!
//! `SELECT ... FROM contacts WHERE last_name = $1 ORDER BY first_name LIMIT 20` through a
//! fenced stand-in would sort every visible match before the first 20 are kept. When the
//! stand-in is the SELECT's only FROM item and all of the WHERE was repeated in it
//! (`row_pushdown`), the stand-in holds exactly the rows the SELECT filters, so its ORDER BY
//! and LIMIT (LIMIT + OFFSET when there is an OFFSET) can be repeated inside too: PostgreSQL
//! then reads an index in order and stops early. Sorting and counting inside the stand-in run
//! after its WHERE, on visible rows only. Anything that makes the number of result rows differ
//! from the number of rows read (aggregates, DISTINCT, GROUP BY, set-returning functions,
//! which hide among function calls) leaves the stand-in as it was.

use std::collections::HashMap;

use sqlparser::ast::{
    Expr, GroupByExpr, LimitClause, OrderByKind, OrderBySort, Query, SelectItem, SetExpr,
};

use super::grouping::StandIn;
use super::pushdown_constants::{constant, Kind};
use super::{fold, quote, Ctx};
use crate::policy::model::ColumnAction;

/// What goes after the stand-in's WHERE for query `q` whose only FROM item is the row-ruled
/// stand-in `placeholder`; None when the query's page cannot be repeated.
pub fn page(
    q: &Query,
    placeholder: &str,
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
    once: &std::collections::BTreeSet<usize>,
) -> Option<String> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let plain = s.distinct.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.into.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && !calls_functions(&s.projection);
    if !plain {
        return None;
    }
    let stand_in = stand_ins.get(placeholder)?;
    let alias = match &s.from.first()?.relation {
        sqlparser::ast::TableFactor::Table { alias: Some(a), .. } => fold(&a.name),
        _ => return None,
    };
    let limit = limit(q, once)?;
    let mut keys = Vec::new();
    if let Some(order) = &q.order_by {
        let OrderByKind::Expressions(list) = &order.kind else {
            return None;
        };
        for o in list {
            if o.with_fill.is_some() {
                return None;
            }
            let name = match &o.expr {
                Expr::Identifier(i) if !renamed(&s.projection, &fold(i)) => fold(i),
                Expr::CompoundIdentifier(p) if p.len() == 2 && fold(&p[0]) == alias => fold(&p[1]),
                _ => return None,
            };
            let shown = stand_in.shown.contains(&name);
            if !shown || ctx.column(&stand_in.rel, &name).action != ColumnAction::Allow {
                return None;
            }
            let sort = match o.options.sort {
                None => "",
                Some(OrderBySort::Asc) => " ASC",
                Some(OrderBySort::Desc) => " DESC",
                Some(OrderBySort::Using(_)) => return None,
            };
            let nulls = match o.options.nulls_first {
                None => "",
                Some(true) => " NULLS FIRST",
                Some(false) => " NULLS LAST",
            };
            keys.push(format!(
                "{}.{}{sort}{nulls}",
                quote(super::row_rules::ROW_ALIAS),
                quote(&name)
            ));
        }
    }
    let order = if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    };
    Some(format!("{order} LIMIT {limit}"))
}

/// The number of rows the query keeps from the start: its LIMIT, plus its OFFSET.
/// A parameter used elsewhere in the statement is not repeated (see `row_pushdown::render`).
fn limit(q: &Query, once: &std::collections::BTreeSet<usize>) -> Option<String> {
    let Some(LimitClause::LimitOffset {
        limit: Some(limit),
        offset,
        limit_by,
    }) = &q.limit_clause
    else {
        return None;
    };
    if !limit_by.is_empty() {
        return None;
    }
    let counted = |e: &Expr| {
        constant(e).filter(|c| match c.kind {
            Kind::Integer | Kind::Untyped => true,
            Kind::Parameter => c.parameter.is_some_and(|n| once.contains(&n)),
            Kind::Computed => false,
        })
    };
    let limit = counted(limit)?;
    match offset {
        None => Some(limit.text),
        Some(o) => Some(sum(&limit.text, &counted(&o.value)?.text)),
    }
}

/// LIMIT `limit` + OFFSET `offset` rows, or all rows where the sum would not fit a bigint:
/// PostgreSQL accepts `LIMIT 9223372036854775807 OFFSET 1`, and the sum must fail nowhere
/// the client's clauses do not. A negative LIMIT or OFFSET fails in the client's clauses
/// before the stand-in is read; inside it reads all rows, and the sum is never computed (a
/// CASE arm after a true condition is not even folded while planning).
fn sum(limit: &str, offset: &str) -> String {
    let (l, o) = (
        format!("CAST({limit} AS bigint)"),
        format!("CAST({offset} AS bigint)"),
    );
    format!(
        "CASE WHEN {l} OPERATOR(pg_catalog.<) 0 OR {o} OPERATOR(pg_catalog.<) 0 THEN NULL \
         WHEN {l} OPERATOR(pg_catalog.<=) (9223372036854775807 OPERATOR(pg_catalog.-) {o}) \
         THEN {l} OPERATOR(pg_catalog.+) {o} END"
    )
}

/// Whether an output column is named `name` without being that column: ORDER BY would then
/// mean the output column. Without an alias PostgreSQL names a cast, COLLATE or parenthesised
/// column after the column (`id::text` is named id), and other expressions after a type, a
/// keyword or a sub-query's column, or `?column?` (operators and literals).
fn renamed(projection: &[SelectItem], name: &str) -> bool {
    projection.iter().any(|item| match item {
        SelectItem::ExprWithAlias { expr, alias } => fold(alias) == name && !plain(expr, name),
        SelectItem::UnnamedExpr(expr) if plain(expr, name) => false,
        SelectItem::UnnamedExpr(expr) => match column_name(expr) {
            Some(n) => n == name,
            None => !matches!(
                expr,
                Expr::BinaryOp { .. } | Expr::UnaryOp { .. } | Expr::Value(_)
            ),
        },
        _ => false,
    })
}

/// `e` is the column `name` itself.
fn plain(e: &Expr, name: &str) -> bool {
    match e {
        Expr::Identifier(i) => fold(i) == name,
        Expr::CompoundIdentifier(p) => p.last().is_some_and(|l| fold(l) == name),
        _ => false,
    }
}

/// The column name PostgreSQL gives `e` when it is a column, possibly cast, collated or in
/// parentheses.
fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(fold(i)),
        Expr::CompoundIdentifier(p) => p.last().map(fold),
        Expr::Nested(inner)
        | Expr::Collate { expr: inner, .. }
        | Expr::Cast { expr: inner, .. } => column_name(inner),
        _ => None,
    }
}

fn calls_functions(projection: &[SelectItem]) -> bool {
    let mut found = false;
    for item in projection {
        let _ = sqlparser::ast::visit_expressions(item, |e| {
            if matches!(e, Expr::Function(_)) {
                found = true;
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        });
    }
    found
}
