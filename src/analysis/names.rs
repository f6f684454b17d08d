//! A first pass over a statement: the column names it uses and whether anything reads columns
//! without naming them. Protected tables are then replaced by derived tables that hold only
//! the columns the statement can reach, which keeps the forwarded text (and its analysis)
//! small. Over-collecting is harmless; a column left out can only turn into an error, because
//! every way to reach a column without its name sets `wide`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Select, SelectItem, SetExpr,
    TableFactor, Visit, Visitor,
};

use super::fold;

#[derive(Debug, Default)]
pub struct Names {
    /// Lower-cased (or quoted) names used as column references or in USING lists.
    pub idents: HashSet<String>,
    /// Names relations are known by (alias or table name).
    pub range_names: HashSet<String>,
    /// `*`, `t.*`, `f(t.*)`, NATURAL joins, column alias lists.
    pub wide: bool,
}

impl Names {
    pub fn of<T: Visit>(node: &T) -> Names {
        let mut n = Names::default();
        let _ = node.visit(&mut n);
        n.wide = n.whole_rows();
        n
    }

    /// The columns of a relation the statement can reach, or None for all of them.
    pub fn reachable(&self) -> Option<&HashSet<String>> {
        (!self.wide).then_some(&self.idents)
    }
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
        // `TABLE t` reads every column of t.
        fn has_table(body: &SetExpr) -> bool {
            match body {
                SetExpr::Table(_) => true,
                SetExpr::SetOperation { left, right, .. } => has_table(left) || has_table(right),
                _ => false,
            }
        }
        if has_table(&q.body) {
            self.wide = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        self.note_select(s);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        self.note_table_factor(tf);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        self.note_expr(e);
        ControlFlow::Continue(())
    }
}

impl Names {
    /// Wildcards in the projection, NATURAL joins and USING lists of a SELECT.
    pub fn note_select(&mut self, s: &Select) {
        if s.projection.iter().any(|p| {
            matches!(
                p,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        }) {
            self.wide = true;
        }
        for twj in &s.from {
            self.joins(&twj.joins);
        }
    }

    /// The names a relation goes by, and column alias lists.
    pub fn note_table_factor(&mut self, tf: &TableFactor) {
        match tf {
            TableFactor::Table { name, alias, .. } => match alias {
                Some(a) => {
                    self.range_names.insert(fold(&a.name));
                    if !a.columns.is_empty() {
                        self.wide = true;
                    }
                }
                None => {
                    if let Some(i) = name.0.last().and_then(|p| p.as_ident()) {
                        self.range_names.insert(fold(i));
                    }
                }
            },
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if let Some(a) = alias {
                    self.range_names.insert(fold(&a.name));
                }
                self.joins(&table_with_joins.joins)
            }
            TableFactor::Derived { alias: Some(a), .. } => {
                self.range_names.insert(fold(&a.name));
            }
            _ => {}
        }
    }

    /// Column names used, wildcards and whole rows passed to functions.
    pub fn note_expr(&mut self, e: &Expr) {
        match e {
            Expr::Identifier(i) => {
                self.idents.insert(fold(i));
            }
            Expr::CompoundIdentifier(parts) => {
                if let Some(i) = parts.last() {
                    self.idents.insert(fold(i));
                }
            }
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => self.wide = true,
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    if list.args.iter().any(|a| {
                        let e = match a {
                            FunctionArg::Unnamed(e) => e,
                            FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } => {
                                arg
                            }
                        };
                        matches!(e, FunctionArgExpr::QualifiedWildcard(_))
                    }) {
                        self.wide = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether some construct reads columns without naming them, a relation's name used as
    /// a value (a whole-row reference) included.
    pub fn whole_rows(&self) -> bool {
        self.wide || self.idents.iter().any(|i| self.range_names.contains(i))
    }

    fn joins(&mut self, joins: &[sqlparser::ast::Join]) {
        use sqlparser::ast::JoinConstraint;
        for j in joins {
            match super::relations::join_constraint(&j.join_operator) {
                Some(JoinConstraint::Natural) => self.wide = true,
                Some(JoinConstraint::Using(names)) => {
                    for n in names {
                        for i in n.0.iter().filter_map(|p| p.as_ident()) {
                            self.idents.insert(fold(i));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
