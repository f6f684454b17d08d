//! GROUP BY a table's primary key lets a query name the table's other columns ungrouped:
//! PostgreSQL knows they are functionally dependent on the key. A masked stand-in is a derived
//! table, which has no key, so PostgreSQL refuses such a query (42803) once the table is
//! replaced. Where a SELECT groups by every column of a stand-in's stored primary key, plainly
//! and with the key unmasked for the role, the stand-in's other columns the SELECT names are
//! added to its GROUP BY: each is determined by the key (a masked value is computed from the
//! stored row), so every group keeps exactly its rows and the result is the one PostgreSQL
//! gives for the table itself. Grouping sets, ROLLUP and CUBE are left as they are.

use std::collections::HashMap;
use std::sync::Arc;

use sqlparser::ast::{Expr, GroupByExpr, Select, TableFactor, TableWithJoins};

use super::names::Names;
use super::{fold, quote, Ctx};
use crate::catalog::Relation;
use crate::policy::model::ColumnAction;

/// A stand-in put in a FROM clause: the relation it reads and the columns it shows.
pub struct StandIn {
    pub rel: Arc<Relation>,
    pub shown: Vec<String>,
}

/// Types without the equality PostgreSQL needs to group by them.
const UNGROUPABLE: &[&str] = &[
    "json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle",
];

/// Add to `s`'s GROUP BY the columns its stand-ins' keys determine (see the module header).
/// `stand_ins`: placeholder name → what it stands in for.
pub fn license(s: &mut Select, stand_ins: &HashMap<String, StandIn>, ctx: &Ctx) {
    let GroupByExpr::Expressions(exprs, modifiers) = &s.group_by else {
        return;
    };
    let sets = exprs
        .iter()
        .any(|e| matches!(e, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)));
    if exprs.is_empty() || !modifiers.is_empty() || sets || stand_ins.is_empty() {
        return;
    }
    let mut factors = Vec::new();
    for twj in &s.from {
        placeholders(twj, &mut factors);
    }
    if factors.is_empty() {
        return;
    }
    let named = Names::of(&*s).idents;
    let mut added = Vec::new();
    for (placeholder, alias) in factors {
        let Some(stand_in) = stand_ins.get(&placeholder) else {
            continue;
        };
        let rel = &stand_in.rel;
        let reference = fold(&alias);
        let grouped = |col: &str| {
            exprs.iter().any(|e| match e {
                Expr::Identifier(i) => fold(i) == col,
                Expr::CompoundIdentifier(p) => {
                    matches!(p.as_slice(), [q, c] if fold(q) == reference && fold(c) == col)
                }
                _ => false,
            })
        };
        let keyed = !rel.primary_key.is_empty()
            && rel.primary_key.iter().all(|k| {
                stand_in.shown.contains(k)
                    && ctx.column(rel, k).action == ColumnAction::Allow
                    && grouped(k)
            });
        if !keyed {
            continue;
        }
        for col in &stand_in.shown {
            let groupable = rel
                .columns
                .iter()
                .find(|c| c.name == *col)
                .is_some_and(|c| !UNGROUPABLE.contains(&c.ty.sql_name.as_str()));
            if named.contains(col) && groupable && !grouped(col) {
                added.push(Expr::CompoundIdentifier(vec![alias.clone(), quote(col)]));
            }
        }
    }
    if let GroupByExpr::Expressions(exprs, _) = &mut s.group_by {
        exprs.extend(added);
    }
}

/// (placeholder name, alias) of the stand-ins among a FROM item's relations.
fn placeholders(twj: &TableWithJoins, out: &mut Vec<(String, sqlparser::ast::Ident)>) {
    let factors = std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation));
    for tf in factors {
        match tf {
            TableFactor::Table {
                name,
                alias: Some(a),
                args: None,
                ..
            } if a.columns.is_empty() => {
                if let [part] = name.0.as_slice() {
                    if let Some(i) = part.as_ident() {
                        if super::stand_in::is_placeholder(i) {
                            out.push((i.value.clone(), a.name.clone()));
                        }
                    }
                }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => placeholders(table_with_joins, out),
            _ => {}
        }
    }
}
