//! A scalar sub-query a client compares a column with (`email = (SELECT email FROM contacts
//! WHERE id = $1)`), as a constant that may be repeated inside a row-ruled stand-in
//! (`row_pushdown`).
//!
//! The sub-query is repeated as PostgreSQL will run it, its own tables already stand-ins, so
//! it reads only what the role may read. It goes in behind the same one-time gate as a
//! parameter computed with a literal (`pushdown_constants`): it is run once, before the
//! stand-in reads a row, and what it fails with (more than one row) depends on the rows it
//! may read, never on the hidden rows of the table it filters. Only the plainest form
//! qualifies, one column of one FROM item under `column op constant` conditions, so running it
//! once more has no side effect, cannot refer to the outer statement's rows, and gives the
//! same value each time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sqlparser::ast::{Expr, Query, SelectItem, SetExpr, TableFactor};

use super::fold;
use super::grouping::StandIn;
use super::pushdown_constants::{constant, Constant, Kind};

/// What [`constant_of`] needs from the statement being analysed.
pub struct Scope<'s> {
    /// Placeholder name (without quotes) → what it stands in for.
    pub stand_in_rels: &'s HashMap<String, StandIn>,
    /// Placeholder (with quotes) → its text.
    pub stand_in_texts: &'s [(String, Arc<str>)],
    pub once: &'s BTreeSet<usize>,
}

/// The sub-query `q` as a gated constant of the type of the column it reads; None unless it
/// has the plain form the module describes.
pub fn constant_of(q: &Query, scope: &Scope) -> Option<Constant> {
    // A query with anything but its body (WITH, ORDER BY, LIMIT, FOR UPDATE, ...) prints more.
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if q.to_string() != s.to_string() {
        return None;
    }
    let [item] = s.projection.as_slice() else {
        return None;
    };
    let (SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. }) = item
    else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    let TableFactor::Table {
        name,
        alias: Some(alias),
        args: None,
        ..
    } = &from.relation
    else {
        return None;
    };
    if !from.joins.is_empty() || !alias.columns.is_empty() || name.0.len() != 1 {
        return None;
    }
    let placeholder = name.0[0].as_ident()?.value.clone();
    let stand_in = scope.stand_in_rels.get(&placeholder)?;
    let alias = fold(&alias.name);
    // Nothing but SELECT column FROM item [WHERE ...]: any other clause prints more.
    let plain = match &s.selection {
        Some(w) => format!("SELECT {item} FROM {from} WHERE {w}"),
        None => format!("SELECT {item} FROM {from}"),
    };
    if s.to_string() != plain {
        return None;
    }
    let own = |e: &Expr| own_column(e, &alias, &stand_in.rel);
    let ty = stand_in
        .rel
        .columns
        .iter()
        .find(|c| Some(c.name.as_str()) == own(column).as_deref())?
        .ty
        .sql_name
        .clone();
    if !stand_in
        .shown
        .iter()
        .any(|c| Some(c) == own(column).as_ref())
    {
        return None;
    }
    if let Some(w) = &s.selection {
        let mut terms = Vec::new();
        super::row_pushdown::and_terms(w, &mut terms);
        if !terms.iter().all(|t| plain_condition(t, &own, scope.once)) {
            return None;
        }
    }
    let text = expanded(&format!("({q})"), scope.stand_in_texts)?;
    Some(Constant {
        text,
        kind: Kind::Computed,
        parameter: None,
        gated: true,
        same_type: Some(ty),
    })
}

/// The column of the sub-query's own FROM item that `e` names; None for anything else, an
/// outer column among them.
fn own_column(e: &Expr, alias: &str, rel: &crate::catalog::Relation) -> Option<String> {
    let name = match e {
        Expr::Identifier(i) => fold(i),
        Expr::CompoundIdentifier(p) if p.len() == 2 && fold(&p[0]) == alias => fold(&p[1]),
        _ => return None,
    };
    rel.columns.iter().any(|c| c.name == name).then_some(name)
}

/// `column op constant` over the sub-query's own columns, with a constant that runs nothing
/// and parameters used once in the statement.
fn plain_condition(
    e: &Expr,
    own: &dyn Fn(&Expr) -> Option<String>,
    once: &BTreeSet<usize>,
) -> bool {
    let Expr::BinaryOp { left, op, right } = e else {
        return false;
    };
    use sqlparser::ast::BinaryOperator as B;
    if !matches!(op, B::Eq | B::Lt | B::LtEq | B::Gt | B::GtEq) {
        return false;
    }
    let fine = |c: Option<Constant>| {
        c.is_some_and(|c| !c.gated && c.parameter.is_none_or(|n| once.contains(&n)))
    };
    (own(left).is_some() && fine(constant(right))) || (own(right).is_some() && fine(constant(left)))
}

/// `text` with its stand-ins put in place and its literal markers as copy markers (each
/// marker is filled once, where the client wrote it); None if anything is left unresolved.
fn expanded(text: &str, stand_ins: &[(String, Arc<str>)]) -> Option<String> {
    let used: Vec<(String, Arc<str>)> = stand_ins
        .iter()
        .filter(|(p, _)| text.contains(p.as_str()))
        .cloned()
        .collect();
    let placed = super::stand_in::put_in_place(text, &used).ok()?;
    if super::stand_in::mentions_placeholder(&placed) {
        return None;
    }
    Some(super::literals::as_copies(&placed))
}
