//! Conditions a client puts on a row-ruled table's plain columns, copied into its stand-in.
//!
//! Only for roles whose policy says `row_pushdown: true`: a repeated condition makes the
//! statement's time grow with the hidden rows it selects (a timing channel the policy accepts).
//!
//! A stand-in with row rules is fenced with `OFFSET 0` so that the client's own conditions
//! never run on hidden rows. The fence also keeps PostgreSQL from using an index for
//! `WHERE id = $1`, from driving a join into the table by its key, and from stopping a sorted
//! page early: every statement would read all visible rows. So what the client's WHERE and
//! joins say about a stand-in's rows is repeated inside it:
//! - `column op constant` (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, `IN (...)`) on the table,
//! - the same, carried over equalities between columns of one type (`a.contact_id = c.id AND
//!   c.id = $1` gives `a.contact_id = $1`), through inner joins, the WHERE, and into the
//!   nullable side of a LEFT JOIN (whose rows count only where they match),
//! - and for a SELECT of the table alone whose whole WHERE was repeated, its ORDER BY (plain
//!   columns) and LIMIT/OFFSET (see [`page`]).
//!
//! Each repeated condition is written with pg_catalog's operator for column types whose
//! comparison functions are leakproof (`int8eq`, `texteq`, `uuid_lt`, ...): it raises no error
//! and has no side effect whatever a row holds, so it may run next to the rules' predicate; the
//! client's condition still applies outside, so a repeated condition can only drop rows that
//! the client's statement would drop. Only columns the role reads as stored qualify (a
//! condition on a masked column compares masked values). Parameters are repeated only for
//! integer, text and uuid columns, whose comparisons with any type PostgreSQL may infer for
//! them convert without error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sqlparser::ast::{BinaryOperator, Expr, JoinOperator, ObjectName, Query, Select, TableFactor};

use super::grouping::StandIn;
use super::pushdown_constants::{constant, Constant, Kind};
use super::{fold, quote, Ctx};
use crate::catalog::Relation;
use crate::policy::model::ColumnAction;

/// Column types whose comparison operators in pg_catalog are all leakproof.
pub const LEAKPROOF_TYPES: &[&str] = &[
    "bigint",
    "integer",
    "smallint",
    "text",
    "uuid",
    "date",
    "timestamp with time zone",
    "timestamp without time zone",
];

const INTEGERS: &[&str] = &["bigint", "integer", "smallint"];
/// Types whose comparison with a parameter of any type PostgreSQL may infer for it cannot
/// fail (a date compared with a timestamp converts, and the conversion can overflow).
const PARAMETER_TYPES: &[&str] = &["bigint", "integer", "smallint", "text", "uuid"];

/// At most this many conditions are repeated in one stand-in.
const MAX_CONDITIONS: usize = 16;
const MAX_IN_LIST: usize = 64;

/// Resolves a plain table in FROM (not a stand-in) to its relation, None for CTEs and
/// unknown names.
pub type Resolve<'r> = &'r dyn Fn(&ObjectName) -> Option<Arc<Relation>>;

/// A column of a FROM item: (its alias, its name).
type Col = (String, String);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The WHERE or an inner join's ON: holds for every row of the result.
    Everywhere,
    /// A LEFT JOIN's ON: holds for the rows of that join's right-hand item that appear.
    Only(usize),
}

enum Test {
    Cmp(&'static str, Constant),
    In(Vec<Constant>),
}

struct Bound {
    col: Col,
    test: Test,
    scope: Scope,
}

struct Same {
    a: Col,
    b: Col,
    scope: Scope,
}

/// One FROM item a condition may name.
struct Item {
    alias: String,
    rel: Option<Arc<Relation>>,
    /// The stand-in's placeholder, when the item is a row-ruled stand-in.
    ruled: Option<String>,
}

/// What the client's conditions say about a SELECT's row-ruled stand-ins.
pub struct Pushdown {
    /// (placeholder, condition over the stand-in's row), to add to the stand-in's WHERE.
    pub conditions: Vec<(String, String)>,
    /// The only FROM item is this row-ruled stand-in and all of the WHERE was repeated in it.
    pub whole: Option<String>,
    /// The parameters (`$n`) the conditions compare a column with: a type the client declares
    /// for one of them chooses the comparison (see [`SAFE_DECLARED_TYPES`]).
    pub parameters: BTreeSet<usize>,
}

/// A scalar sub-query as a constant (see `pushdown_subquery`), None when it is not one.
pub type SubqueryConstant<'q> = &'q dyn Fn(&Query) -> Option<Constant>;

pub fn conditions(
    s: &Select,
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
    resolve: Resolve,
    once: &BTreeSet<usize>,
    subquery: SubqueryConstant,
) -> Pushdown {
    let mut none = Pushdown {
        conditions: Vec::new(),
        whole: None,
        parameters: BTreeSet::new(),
    };
    let items = items(s, stand_ins, ctx, resolve);
    if items.iter().all(|i| i.ruled.is_none()) {
        return none;
    }
    let value = |e: &Expr| {
        constant(e).or_else(|| match e {
            Expr::Subquery(q) => subquery(q),
            _ => None,
        })
    };
    let mut facts = Facts {
        value: &value,
        bounds: Vec::new(),
        same: Vec::new(),
    };
    let mut whole = facts.add_select(s, &items);
    for (at, item) in items.iter().enumerate() {
        let Some(placeholder) = &item.ruled else {
            continue;
        };
        let mut seen = HashSet::new();
        for (text, parameters) in facts.for_item(at, &items, stand_ins, ctx, once) {
            if seen.contains(&text) {
                continue;
            }
            if seen.len() < MAX_CONDITIONS {
                seen.insert(text.clone());
                none.parameters.extend(parameters);
                none.conditions.push((placeholder.clone(), text));
            } else {
                // Left out: the stand-in then holds rows the WHERE drops, and a page
                // repeated inside would count them.
                whole = false;
            }
        }
    }
    // Every conjunct became bounds on the one item, and every bound was repeated.
    if whole && all_repeated(&facts, &items, stand_ins, ctx, once) {
        none.whole = items[0].ruled.clone();
    }
    none
}

/// Whether the only FROM item's stand-in repeats every bound the statement puts on it, and
/// no condition ties it to anything else.
fn all_repeated(
    facts: &Facts,
    items: &[Item],
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
    once: &BTreeSet<usize>,
) -> bool {
    items.len() == 1
        && facts.same.is_empty()
        && facts.bounds.iter().all(|b| {
            readable(0, &b.col.1, items, stand_ins, ctx)
                .is_some_and(|ty| render(&b.col.1, ty, &b.test, once).is_some())
        })
}

/// The FROM items in order; one that cannot be named reliably (a nested join, a table whose
/// alias renames its columns) has no known columns.
fn items(
    s: &Select,
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
    resolve: Resolve,
) -> Vec<Item> {
    let mut out = Vec::new();
    for twj in &s.from {
        for tf in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            out.push(item(tf, stand_ins, ctx, resolve));
        }
    }
    out
}

fn item(
    tf: &TableFactor,
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
    resolve: Resolve,
) -> Item {
    let unknown = |alias: String| Item {
        alias,
        rel: None,
        ruled: None,
    };
    let TableFactor::Table { name, alias, .. } = tf else {
        // A derived table or function: its alias names it, its columns are not known here.
        let alias = match tf {
            TableFactor::Derived { alias: Some(a), .. }
            | TableFactor::Function { alias: Some(a), .. } => fold(&a.name),
            _ => String::new(),
        };
        return unknown(alias);
    };
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return unknown(alias.as_ref().map(|a| fold(&a.name)).unwrap_or_default());
    }
    let last = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(fold)
        .unwrap_or_default();
    let alias_name = alias.as_ref().map(|a| fold(&a.name)).unwrap_or(last);
    let placeholder = (name.0.len() == 1)
        .then(|| name.0[0].as_ident().map(|i| i.value.clone()))
        .flatten();
    if let Some(stand_in) = placeholder.as_ref().and_then(|p| stand_ins.get(p)) {
        // Only where the policy accepts the timing channel (`row_pushdown`).
        let ruled = ctx
            .row_filter(&stand_in.rel, super::row_rules::ROW_ALIAS)
            .filter(|f| f.pushdown)
            .and(placeholder.clone());
        return Item {
            alias: alias_name,
            rel: Some(stand_in.rel.clone()),
            ruled: ruled.filter(|_| alias.is_some()),
        };
    }
    Item {
        alias: alias_name,
        rel: resolve(name),
        ruled: None,
    }
}

struct Facts<'v> {
    /// The constant an expression is, if any.
    value: &'v dyn Fn(&Expr) -> Option<Constant>,
    bounds: Vec<Bound>,
    same: Vec<Same>,
}

impl Facts<'_> {
    /// Records what a SELECT's WHERE says everywhere and what its joins' ON conditions say
    /// (a LEFT JOIN's only about its nullable side); true when every WHERE conjunct became
    /// bounds on columns.
    fn add_select(&mut self, s: &Select, items: &[Item]) -> bool {
        let mut whole = true;
        if let Some(selection) = &s.selection {
            let mut terms = Vec::new();
            and_terms(selection, &mut terms);
            for t in terms {
                whole &= self.add(t, Scope::Everywhere, items);
            }
        }
        let mut index = 0;
        for twj in &s.from {
            index += 1;
            for j in &twj.joins {
                let (on, scope) = match &j.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) => (c, Scope::Everywhere),
                    JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, Scope::Only(index)),
                    _ => (&sqlparser::ast::JoinConstraint::None, Scope::Everywhere),
                };
                if let sqlparser::ast::JoinConstraint::On(e) = on {
                    let mut terms = Vec::new();
                    and_terms(e, &mut terms);
                    for t in terms {
                        self.add(t, scope, items);
                    }
                }
                index += 1;
            }
        }
        whole
    }

    /// Records what one conjunct says; true when it became bounds on columns.
    fn add(&mut self, e: &Expr, scope: Scope, items: &[Item]) -> bool {
        let col = |e: &Expr| column(e, items);
        let constant = self.value;
        match e {
            Expr::BinaryOp { left, op, right } => {
                let Some(sign) = comparison(op) else {
                    return false;
                };
                match (col(left), col(right), constant(right), constant(left)) {
                    (Some(a), Some(b), _, _) if sign == "=" => {
                        self.same.push(Same { a, b, scope });
                        false
                    }
                    (Some(c), None, Some(v), _) => self.bound(c, Test::Cmp(sign, v), scope),
                    (None, Some(c), _, Some(v)) => self.bound(c, Test::Cmp(flip(sign), v), scope),
                    _ => false,
                }
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let (Some(c), Some(lo), Some(hi)) = (col(expr), constant(low), constant(high))
                else {
                    return false;
                };
                self.bound(c.clone(), Test::Cmp(">=", lo), scope)
                    && self.bound(c, Test::Cmp("<=", hi), scope)
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } if !list.is_empty() && list.len() <= MAX_IN_LIST => {
                let (Some(c), Some(values)) = (
                    col(expr),
                    list.iter().map(constant).collect::<Option<Vec<_>>>(),
                ) else {
                    return false;
                };
                self.bound(c, Test::In(values), scope)
            }
            _ => false,
        }
    }

    fn bound(&mut self, col: Col, test: Test, scope: Scope) -> bool {
        self.bounds.push(Bound { col, test, scope });
        true
    }

    /// The conditions that hold for item `at`'s rows, over its readable columns, each with
    /// the parameters it compares a column with.
    fn for_item(
        &self,
        at: usize,
        items: &[Item],
        stand_ins: &HashMap<String, StandIn>,
        ctx: &Ctx,
        once: &BTreeSet<usize>,
    ) -> Vec<(String, Vec<usize>)> {
        let Some(rel) = &items[at].rel else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in &rel.columns {
            let Some(ty) = readable(at, &c.name, items, stand_ins, ctx) else {
                continue;
            };
            let start = (items[at].alias.clone(), c.name.clone());
            for bound in self.reaching(&start, ty, items) {
                if let Some(text) = render(&c.name, ty, &bound.test, once) {
                    let parameters = match &bound.test {
                        Test::Cmp(_, c) => c.parameter.into_iter().collect(),
                        Test::In(values) => values.iter().filter_map(|c| c.parameter).collect(),
                    };
                    out.push((text, parameters));
                }
            }
        }
        out
    }

    /// The bounds that hold for column `start` of a FROM item: its own, and those of columns
    /// of the same type it is equal to (so a parameter is typed alike wherever it is repeated).
    fn reaching<'f>(&'f self, start: &Col, ty: &str, items: &[Item]) -> Vec<&'f Bound> {
        let holds = |scope: Scope, alias: &str| match scope {
            Scope::Everywhere => true,
            Scope::Only(i) => items.get(i).is_some_and(|it| it.alias == alias),
        };
        let mut seen = vec![start.clone()];
        let mut next = 0;
        while next < seen.len() && seen.len() <= 8 {
            let here = seen[next].clone();
            next += 1;
            for s in &self.same {
                // Over a LEFT JOIN's ON, rows of its right-hand item follow the other side, not
                // the other way round.
                let from = match s.scope {
                    Scope::Everywhere if s.a == here => Some(&s.b),
                    Scope::Everywhere if s.b == here => Some(&s.a),
                    Scope::Only(_) if s.a == here && holds(s.scope, &here.0) => Some(&s.b),
                    Scope::Only(_) if s.b == here && holds(s.scope, &here.0) => Some(&s.a),
                    _ => None,
                };
                if let Some(other) = from {
                    if !seen.contains(other) && type_of(other, items) == Some(ty) {
                        seen.push(other.clone());
                    }
                }
            }
        }
        self.bounds
            .iter()
            .filter(|b| holds(b.scope, &b.col.0))
            .filter(|b| seen.contains(&b.col))
            .collect()
    }
}

/// The type of a column the role reads as stored in row-ruled stand-in `at`, when its
/// comparisons are leakproof; None otherwise.
fn readable<'i>(
    at: usize,
    name: &str,
    items: &'i [Item],
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
) -> Option<&'i str> {
    let item = items.get(at)?;
    let stand_in = stand_ins.get(item.ruled.as_ref()?)?;
    let ty = type_of(&(item.alias.clone(), name.to_owned()), items)?;
    (LEAKPROOF_TYPES.contains(&ty)
        && stand_in.shown.iter().any(|s| s == name)
        && ctx.column(&stand_in.rel, name).action == ColumnAction::Allow)
        .then_some(ty)
}

fn type_of<'i>(col: &Col, items: &'i [Item]) -> Option<&'i str> {
    let mut found = items.iter().filter(|i| i.alias == col.0);
    let item = found.next()?;
    if found.next().is_some() {
        return None;
    }
    item.rel
        .as_ref()?
        .columns
        .iter()
        .find(|c| c.name == col.1)
        .map(|c| c.ty.sql_name.as_str())
}

/// The FROM item and column an expression names; an unqualified name only when exactly one
/// item has such a column and every item's columns are known.
fn column(e: &Expr, items: &[Item]) -> Option<Col> {
    match e {
        Expr::Identifier(i) => {
            let name = fold(i);
            if items.iter().any(|it| it.rel.is_none()) {
                return None;
            }
            let mut having = items.iter().filter(|it| {
                it.rel
                    .as_ref()
                    .is_some_and(|r| r.columns.iter().any(|c| c.name == name))
            });
            let one = having.next()?;
            having.next().is_none().then(|| (one.alias.clone(), name))
        }
        Expr::CompoundIdentifier(p) if p.len() == 2 => {
            let (alias, name) = (fold(&p[0]), fold(&p[1]));
            type_of(&(alias.clone(), name.clone()), items).map(|_| (alias, name))
        }
        Expr::Nested(inner) => column(inner, items),
        _ => None,
    }
}

fn comparison(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Eq => "=",
        BinaryOperator::Lt => "<",
        BinaryOperator::LtEq => "<=",
        BinaryOperator::Gt => ">",
        BinaryOperator::GtEq => ">=",
        _ => return None,
    })
}

fn flip(sign: &'static str) -> &'static str {
    match sign {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

/// One condition over the stand-in's row; None when the constant could meet the column in a
/// comparison that is not leakproof.
/// A parameter the statement uses elsewhere too is not repeated: the copy, read first by
/// PostgreSQL, would give it the column's type instead of the type the client's use gives it.
fn render(column: &str, ty: &str, test: &Test, once: &BTreeSet<usize>) -> Option<String> {
    let fits = |c: &Constant| {
        let parameter_ok =
            || PARAMETER_TYPES.contains(&ty) && c.parameter.is_some_and(|n| once.contains(&n));
        if c.same_type.as_ref().is_some_and(|t| t != ty) {
            return false;
        }
        match c.kind {
            Kind::Integer => INTEGERS.contains(&ty),
            Kind::Untyped => true,
            Kind::Computed => c.parameter.is_none() || parameter_ok(),
            Kind::Parameter => parameter_ok(),
        }
    };
    let row = format!("{}.{}", quote(super::row_rules::ROW_ALIAS), quote(column));
    match test {
        Test::Cmp(sign, c) => fits(c).then(|| {
            let cmp = format!("{row} OPERATOR(pg_catalog.{sign}) {}", c.text);
            if c.gated {
                // Evaluated once, before any row (see `pushdown_constants`).
                format!("{cmp} AND ({}) IS NOT NULL", c.text)
            } else {
                cmp
            }
        }),
        Test::In(values) => {
            // A NULL element does not empty an IN list, so a gate there would drop rows.
            if !values.iter().all(|c| fits(c) && !c.gated) {
                return None;
            }
            let each: Vec<String> = values
                .iter()
                .map(|c| format!("{row} OPERATOR(pg_catalog.=) {}", c.text))
                .collect();
            Some(format!("({})", each.join(" OR ")))
        }
    }
}

/// The conjuncts of `e`, through parentheses.
pub(super) fn and_terms<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            and_terms(left, out);
            and_terms(right, out);
        }
        Expr::Nested(inner) => and_terms(inner, out),
        _ => out.push(e),
    }
}
