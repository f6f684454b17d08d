//! The table an INSERT, UPDATE or DELETE writes cannot be replaced by a masked derived table,
//! so references to its protected columns (in WHERE, SET values, RETURNING, ON CONFLICT and
//! sub-queries) are replaced by the mask expression one by one, and writing a column the role
//! cannot see is refused.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, SelectItem, Statement, VisitorMut};

use super::relations::to_flow;
use super::{fold, parse_expr, Ctx};
use crate::catalog::Relation;
use crate::policy::model::{ColumnAction, ColumnDecision};
use crate::protocol::PgError;

pub struct Target<'a, 'c> {
    ctx: &'a Ctx<'c>,
    rel: &'a Relation,
    /// Names the target is known by in the statement: its name and alias.
    names: HashSet<String>,
    decisions: HashMap<String, ColumnDecision>,
    /// (placeholder, mask expression) for each protected column reference replaced: the
    /// expressions go in after PostgreSQL's parser has checked the rendering.
    pub stand_ins: Vec<(String, std::sync::Arc<str>)>,
}

impl<'a, 'c> Target<'a, 'c> {
    pub fn new(ctx: &'a Ctx<'c>, rel: &'a Relation, alias: Option<String>) -> Self {
        let mut names = HashSet::new();
        names.insert(rel.name.clone());
        if let Some(a) = alias {
            names.insert(a);
        }
        let decisions = rel
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ctx.rules.column(&rel.schema, &rel.name, &c.name),
                )
            })
            .collect();
        Target {
            ctx,
            rel,
            names,
            decisions,
            stand_ins: Vec::new(),
        }
    }

    /// A column written by the statement must be fully visible to the role.
    pub fn check_write(&self, column: &str) -> Result<(), PgError> {
        match self.decisions.get(column) {
            Some(d) if d.action == ColumnAction::Allow => Ok(()),
            Some(d) => Err(self.ctx.refuse(format!(
                "role {} may not write column {}.{}: it is {} for this role by rule {}",
                self.ctx.role(),
                self.rel.name,
                column,
                if d.action == ColumnAction::Block {
                    "blocked"
                } else {
                    "masked"
                },
                d.rule
            ))),
            None => Err(self.ctx.refuse(format!(
                "column {}.{} is not in pgvakt's catalog",
                self.rel.name, column
            ))),
        }
    }

    /// Columns an INSERT without a column list would write.
    pub fn check_all_writable(&self) -> Result<(), PgError> {
        for c in &self.rel.columns {
            self.check_write(&c.name)?;
        }
        Ok(())
    }

    fn masked(&mut self, column_sql: &str, column: &str) -> Result<Option<Expr>, PgError> {
        let Some(d) = self.decisions.get(column) else {
            return Ok(None);
        };
        match &d.action {
            ColumnAction::Allow => Ok(None),
            ColumnAction::Block => {
                Err(self
                    .ctx
                    .blocked(&self.rel.schema, &self.rel.name, column, &d.rule))
            }
            ColumnAction::Mask(m) => {
                let Some(c) = self.rel.columns.iter().find(|c| c.name == column) else {
                    return Ok(None);
                };
                let sql = m.render(column_sql, &c.ty).map_err(|e| {
                    self.ctx.refuse(format!(
                        "mask {} cannot be applied to {}.{column}: {e}",
                        m.name, self.rel.name
                    ))
                })?;
                let unsupported =
                    |e: String| self.ctx.unsupported(&format!("the mask of {column}: {e}"));
                let checked = super::stand_in::check_expr(&sql).map_err(unsupported)?;
                let placeholder = super::stand_in::placeholder();
                let expr = parse_expr(&placeholder).map_err(|e| unsupported(e.to_string()))?;
                self.stand_ins.push((placeholder, checked));
                Ok(Some(expr))
            }
        }
    }

    fn expr(&mut self, e: &mut Expr) -> Result<(), PgError> {
        let replacement = match e {
            Expr::Identifier(i) => {
                let n = fold(i);
                if self.names.contains(&n) && !self.decisions.contains_key(&n) {
                    return Err(self.ctx.refuse(format!(
                        "whole-row reference to {} is not allowed for role {}; list the columns",
                        self.rel.name,
                        self.ctx.role()
                    )));
                }
                self.masked(&e.to_string(), &n)?
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let qualifier = fold(&parts[parts.len() - 2]);
                let col = fold(&parts[parts.len() - 1]);
                if self.names.contains(&qualifier) {
                    self.masked(&e.to_string(), &col)?
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(r) = replacement {
            *e = r;
        }
        Ok(())
    }

    /// Columns of the target a RETURNING list returns (they are read: the client gets them).
    pub fn returned(&self, items: &[SelectItem]) -> Vec<String> {
        struct Refs<'t, 'a, 'c>(&'t Target<'a, 'c>, Vec<String>);
        impl sqlparser::ast::Visitor for Refs<'_, '_, '_> {
            type Break = ();
            fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
                let col = match e {
                    Expr::Identifier(i) => Some(fold(i)),
                    Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                        let qualifier = fold(&parts[parts.len() - 2]);
                        self.0
                            .names
                            .contains(&qualifier)
                            .then(|| fold(&parts[parts.len() - 1]))
                    }
                    _ => None,
                };
                if let Some(c) = col.filter(|c| self.0.decisions.contains_key(c)) {
                    if !self.1.contains(&c) {
                        self.1.push(c);
                    }
                }
                ControlFlow::Continue(())
            }
        }
        let mut refs = Refs(self, Vec::new());
        for item in items {
            match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    return self.rel.columns.iter().map(|c| c.name.clone()).collect();
                }
                other => {
                    let _ = sqlparser::ast::Visit::visit(other, &mut refs);
                }
            }
        }
        refs.1
    }

    /// RETURNING * or t.* of a protected target would return raw values.
    pub fn check_returning(&self, items: &[SelectItem]) -> Result<(), PgError> {
        let protected = self
            .decisions
            .values()
            .any(|d| d.action != ColumnAction::Allow);
        for item in items {
            if protected
                && matches!(
                    item,
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                )
            {
                return Err(self.ctx.refuse(format!(
                    "RETURNING * on {} is not allowed for role {}; list the columns",
                    self.rel.name,
                    self.ctx.role()
                )));
            }
        }
        Ok(())
    }
}

impl VisitorMut for Target<'_, '_> {
    type Break = PgError;

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<PgError> {
        to_flow(self.expr(e))
    }
}

/// Whether every row of an INSERT's VALUES holds NULL or DEFAULT at position `i`.
pub fn only_null_or_default(source: Option<&sqlparser::ast::Query>, i: usize) -> bool {
    use sqlparser::ast::{Expr, SetExpr, Value};
    let Some(q) = source else { return false };
    let SetExpr::Values(values) = q.body.as_ref() else {
        return false;
    };
    let is_null_or_default = |e: &Expr| match e {
        Expr::Value(v) => matches!(v.value, Value::Null),
        Expr::Identifier(id) => {
            id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default")
        }
        _ => false,
    };
    !values.rows.is_empty()
        && values
            .rows
            .iter()
            .all(|row| row.get(i).is_some_and(is_null_or_default))
}

/// Whether a query contains INSERT, UPDATE, DELETE or MERGE (in a WITH clause or as a body):
/// those would write and return rows past the write checks.
pub fn modifies_data(q: &sqlparser::ast::Query) -> bool {
    use sqlparser::ast::{SetExpr, Visit, Visitor};
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            fn body(b: &SetExpr) -> bool {
                match b {
                    SetExpr::Insert(_)
                    | SetExpr::Update(_)
                    | SetExpr::Delete(_)
                    | SetExpr::Merge(_) => true,
                    SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
                    SetExpr::Query(q) => body(&q.body),
                    _ => false,
                }
            }
            if body(&q.body) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            if matches!(
                s,
                Statement::Insert(_)
                    | Statement::Update { .. }
                    | Statement::Delete(_)
                    | Statement::Merge { .. }
            ) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = q.visit(&mut f);
    f.0
}
