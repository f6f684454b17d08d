//! Where a result's columns come from, as PostgreSQL's RowDescription would report them for
//! the client's own statement: a plain column reference carries its relation's OID and the
//! column's number. The rewritten statement reads masked columns as expressions over derived
//! tables, and views over protected tables inlined, so PostgreSQL reports no origin (or the base
//! table's instead of the view's) there. The session puts the origins computed here into the
//! RowDescription the client gets, after its own check has read PostgreSQL's: which columns
//! were masked is pgvakt's own knowledge, never something a result can claim.
//!
//! This follows PostgreSQL's `markTargetListOrigins`: a column reference to a relation gives
//! that relation and column (a view's own, not its base table's); through a sub-query in FROM
//! or a WITH query, the origin of the column it refers to; set operations, expressions,
//! whole-row references and columns merged by USING give none. Wherever the columns of a FROM
//! item are not known (functions, VALUES, `*` over USING joins), no origin is given, and a `*`
//! that cannot be expanded leaves the whole result as PostgreSQL reported it.

use std::collections::HashMap;

use sqlparser::ast::{
    Expr, JoinConstraint, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    TableAlias, TableFactor, TableWithJoins, WildcardAdditionalOptions,
};

use super::{fold, Ctx};
use crate::catalog::RelKind;
use crate::policy::model::ColumnAction;

/// A result column whose origin the client gets from pgvakt rather than from PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultOrigin {
    /// Position in the result the client sees.
    pub index: usize,
    pub table_oid: u32,
    pub attnum: i16,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    oid: u32,
    attnum: i16,
    /// PostgreSQL will not report this origin for the rewritten statement: the column is
    /// masked, or comes from a view that is inlined.
    rewritten: bool,
}

/// Output columns by name (empty for a name no reference can match) and origin.
type Columns = Vec<(String, Option<Origin>)>;

/// A FROM item: the name it goes by and its columns, when known.
struct Item {
    name: Option<String>,
    columns: Option<Columns>,
}

/// How deep sub-queries are followed.
const MAX_DEPTH: usize = 32;

/// The origins the client's result should carry where the rewrite hides them.
pub fn of_query(q: &Query, ctx: &Ctx) -> Vec<ResultOrigin> {
    let Some(columns) = query_columns(q, ctx, &HashMap::new(), 0) else {
        return Vec::new();
    };
    columns
        .iter()
        .enumerate()
        .filter_map(|(index, (_, o))| {
            let o = o.filter(|o| o.rewritten)?;
            Some(ResultOrigin {
                index,
                table_oid: o.oid,
                attnum: o.attnum,
            })
        })
        .collect()
}

type Ctes = HashMap<String, Option<Columns>>;

fn query_columns(q: &Query, ctx: &Ctx, outer: &Ctes, depth: usize) -> Option<Columns> {
    if depth > MAX_DEPTH {
        return None;
    }
    // Only a query with its own WITH gets its own scope: cloning the outer one for every
    // sub-query made a long WITH list quadratic.
    let mut ctes = std::borrow::Cow::Borrowed(outer);
    if let Some(with) = &q.with {
        let ctes = ctes.to_mut();
        for cte in &with.cte_tables {
            // A recursive query's columns come from a set operation: no origins.
            let columns = if with.recursive {
                None
            } else {
                query_columns(&cte.query, ctx, ctes, depth + 1)
                    .map(|c| renamed(c, Some(&cte.alias)))
            };
            ctes.insert(fold(&cte.alias.name), columns);
        }
    }
    match q.body.as_ref() {
        SetExpr::Select(s) => select_columns(s, ctx, &ctes, depth),
        SetExpr::Query(inner) => query_columns(inner, ctx, &ctes, depth + 1),
        _ => None,
    }
}

fn select_columns(s: &Select, ctx: &Ctx, ctes: &Ctes, depth: usize) -> Option<Columns> {
    let mut items = Vec::new();
    let mut merged = Vec::new();
    let mut natural = false;
    for twj in &s.from {
        from_items(twj, ctx, ctes, depth, &mut items, &mut merged, &mut natural);
    }
    let mut out = Columns::new();
    for item in &s.projection {
        match item {
            SelectItem::UnnamedExpr(e) => {
                out.push((expr_name(e), expr_origin(e, &items, &merged, natural)));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                out.push((fold(alias), expr_origin(expr, &items, &merged, natural)));
            }
            SelectItem::Wildcard(opts) => {
                if !plain(opts) || natural || !merged.is_empty() {
                    return None;
                }
                for it in &items {
                    out.extend(it.columns.clone()?);
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), opts) => {
                let [part] = n.0.as_slice() else {
                    return None;
                };
                let name = fold(part.as_ident()?);
                if !plain(opts) {
                    return None;
                }
                out.extend(unique_item(&items, &name)?.columns.clone()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn plain(opts: &WildcardAdditionalOptions) -> bool {
    opts.opt_ilike.is_none()
        && opts.opt_exclude.is_none()
        && opts.opt_except.is_none()
        && opts.opt_replace.is_none()
        && opts.opt_rename.is_none()
        && opts.opt_alias.is_none()
}

fn from_items(
    twj: &TableWithJoins,
    ctx: &Ctx,
    ctes: &Ctes,
    depth: usize,
    items: &mut Vec<Item>,
    merged: &mut Vec<String>,
    natural: &mut bool,
) {
    item(&twj.relation, ctx, ctes, depth, items, merged, natural);
    for j in &twj.joins {
        item(&j.relation, ctx, ctes, depth, items, merged, natural);
        match super::relations::join_constraint(&j.join_operator) {
            Some(JoinConstraint::Natural) => *natural = true,
            Some(JoinConstraint::Using(names)) => {
                for n in names {
                    merged.extend(n.0.iter().filter_map(|p| p.as_ident()).map(fold));
                }
            }
            _ => {}
        }
    }
}

fn item(
    tf: &TableFactor,
    ctx: &Ctx,
    ctes: &Ctes,
    depth: usize,
    items: &mut Vec<Item>,
    merged: &mut Vec<String>,
    natural: &mut bool,
) {
    if let TableFactor::NestedJoin {
        table_with_joins,
        alias: None,
    } = tf
    {
        // A parenthesised join's items are the query's own.
        return from_items(table_with_joins, ctx, ctes, depth, items, merged, natural);
    }
    items.push(one_item(tf, ctx, ctes, depth));
}

fn one_item(tf: &TableFactor, ctx: &Ctx, ctes: &Ctes, depth: usize) -> Item {
    let unknown = |name: Option<String>| Item {
        name,
        columns: None,
    };
    match tf {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let Some(parts) = name
                .0
                .iter()
                .map(|p| p.as_ident().map(fold))
                .collect::<Option<Vec<_>>>()
            else {
                return unknown(None);
            };
            let refname = alias
                .as_ref()
                .map(|a| fold(&a.name))
                .or_else(|| parts.last().cloned());
            if let [single] = parts.as_slice() {
                if let Some(columns) = ctes.get(single) {
                    return Item {
                        name: refname,
                        columns: columns.clone().map(|c| renamed(c, alias.as_ref())),
                    };
                }
            }
            let Some(rel) = ctx.catalog.resolve(
                super::inheritance::without_marker(&parts),
                ctx.search_path,
                ctx.user,
            ) else {
                return unknown(refname);
            };
            Item {
                name: refname,
                columns: Some(renamed(relation_columns(rel, ctx), alias.as_ref())),
            }
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => Item {
            name: alias.as_ref().map(|a| fold(&a.name)),
            columns: query_columns(subquery, ctx, ctes, depth + 1)
                .map(|c| renamed(c, alias.as_ref())),
        },
        other => unknown(alias_of(other)),
    }
}

fn alias_of(tf: &TableFactor) -> Option<String> {
    match tf {
        TableFactor::Table { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias.as_ref().map(|a| fold(&a.name)),
        _ => None,
    }
}

/// The columns a relation shows in the rewritten statement, in order: a protected table's
/// stand-in leaves blocked columns out; a view is read with all of its columns.
fn relation_columns(rel: &crate::catalog::Relation, ctx: &Ctx) -> Columns {
    let view = rel.kind == RelKind::View;
    let inlined = view && ctx.view_reads_protected(rel).is_some();
    rel.columns
        .iter()
        .filter_map(|c| {
            let action = ctx.column(rel, &c.name).action;
            if !view && action == ColumnAction::Block {
                return None;
            }
            let rewritten = if view {
                inlined
            } else {
                action != ColumnAction::Allow
            };
            Some((
                c.name.clone(),
                Some(Origin {
                    oid: rel.oid,
                    attnum: c.attnum,
                    rewritten,
                }),
            ))
        })
        .collect()
}

/// Columns renamed by an alias's column list (the first ones, as PostgreSQL does).
fn renamed(mut columns: Columns, alias: Option<&TableAlias>) -> Columns {
    if let Some(a) = alias {
        for (c, new) in columns.iter_mut().zip(&a.columns) {
            c.0 = fold(&new.name);
        }
    }
    columns
}

/// The name PostgreSQL gives an output column, where a reference by name could find it; an
/// empty name (which no reference matches) for everything else.
fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => fold(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold).unwrap_or_default(),
        Expr::Nested(inner) => expr_name(inner),
        _ => String::new(),
    }
}

fn expr_origin(e: &Expr, items: &[Item], merged: &[String], natural: bool) -> Option<Origin> {
    match e {
        Expr::Nested(inner) => expr_origin(inner, items, merged, natural),
        Expr::Identifier(i) => {
            let name = fold(i);
            // A merged column belongs to the join, and a function's columns are unknown.
            if natural || merged.contains(&name) || items.iter().any(|it| it.columns.is_none()) {
                return None;
            }
            let mut found = items
                .iter()
                .filter_map(|it| it.columns.as_ref())
                .flat_map(|cols| cols.iter().filter(|(n, _)| *n == name));
            let (_, origin) = found.next()?;
            if found.next().is_some() {
                return None;
            }
            *origin
        }
        Expr::CompoundIdentifier(parts) => {
            let [q, c] = parts.as_slice() else {
                return None;
            };
            let cols = unique_item(items, &fold(q))?.columns.as_ref()?;
            let name = fold(c);
            let mut found = cols.iter().filter(|(n, _)| *n == name);
            let (_, origin) = found.next()?;
            if found.next().is_some() {
                return None;
            }
            *origin
        }
        _ => None,
    }
}

fn unique_item<'i>(items: &'i [Item], name: &str) -> Option<&'i Item> {
    let mut found = items.iter().filter(|it| it.name.as_deref() == Some(name));
    let item = found.next()?;
    found.next().is_none().then_some(item)
}
