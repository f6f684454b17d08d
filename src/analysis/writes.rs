//! The table an INSERT, UPDATE or DELETE writes cannot be replaced by a masked derived table,
//! so references to its protected columns (in WHERE, SET values, RETURNING, ON CONFLICT and
//! sub-queries) are replaced by the mask expression one by one, and writing a column the role
//! cannot see is refused.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, SelectItem, Statement, VisitorMut};

use super::relations::to_flow;
use super::{fold, parse_expr, Ctx};
use crate::analysis::{Refusal, Why};
use crate::catalog::Relation;
use crate::policy::model::{ColumnAction, ColumnDecision, WriteAction, WriteDecision};

pub struct Target<'a, 'c> {
    ctx: &'a Ctx<'c>,
    rel: &'a Relation,
    /// Names the target is known by in the statement: its name and alias.
    names: HashSet<String>,
    /// How the statement refers to the target's columns: its alias, or its qualified name.
    qualifier: String,
    decisions: HashMap<String, ColumnDecision>,
    writes: HashMap<String, WriteDecision>,
    /// (placeholder, mask expression) for each protected column reference replaced: the
    /// expressions go in after PostgreSQL's parser has checked the rendering.
    pub stand_ins: Vec<(String, std::sync::Arc<str>)>,
    /// Stand-ins of write guards (`write_guard`), put in place like the masks.
    pub guards: Vec<(String, std::sync::Arc<str>)>,
    pub guard_places: Vec<super::authority::GuardPlaces>,
}

impl<'a, 'c> Target<'a, 'c> {
    pub fn new(ctx: &'a Ctx<'c>, rel: &'a Relation, alias: Option<String>) -> Self {
        let mut names = HashSet::new();
        names.insert(rel.name.clone());
        let qualifier = match &alias {
            Some(a) => super::quote(a).to_string(),
            None => format!("{}.{}", super::quote(&rel.schema), super::quote(&rel.name)),
        };
        if let Some(a) = alias {
            names.insert(a);
        }
        let writes = rel
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ctx.rules.write(&rel.schema, &rel.name, &c.name),
                )
            })
            .collect();
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
            qualifier,
            decisions,
            writes,
            stand_ins: Vec::new(),
            guards: Vec::new(),
            guard_places: Vec::new(),
        }
    }

    /// The rules of each column, where they are not the target's own (a view written through
    /// is judged by its base table's rules).
    pub fn with_rules(mut self, rules: Vec<(String, ColumnDecision, WriteDecision)>) -> Self {
        self.decisions.clear();
        self.writes.clear();
        for (c, d, w) in rules {
            self.decisions.insert(c.clone(), d);
            self.writes.insert(c, w);
        }
        self
    }

    /// A column written with a value the analysis cannot guard (COPY FROM, INSERT ... SELECT,
    /// tuple assignments, ON CONFLICT): its write rule must allow any value.
    pub fn check_write(&self, column: &str) -> Result<(), Refusal> {
        match self.writes.get(column) {
            Some(w) if w.action == WriteAction::Allow => Ok(()),
            Some(w) => Err(self.write_refusal(column, w)),
            None => Err(self.ctx.refuse(format!(
                "column {}.{} is not in pgvakt's catalog",
                self.rel.name, column
            ))),
        }
    }

    /// A column the statement writes must be one pgvakt knows.
    pub fn known(&self, column: &str) -> Result<(), Refusal> {
        if self.writes.contains_key(column) {
            return Ok(());
        }
        Err(self.ctx.refuse(format!(
            "column {}.{} is not in pgvakt's catalog",
            self.rel.name, column
        )))
    }

    /// The write rule of a column, when it is not `allow`.
    pub fn guarded(&self, column: &str) -> Option<&WriteDecision> {
        self.writes
            .get(column)
            .filter(|w| w.action != WriteAction::Allow)
    }

    fn write_refusal(&self, column: &str, w: &WriteDecision) -> Refusal {
        let read = match self.decisions.get(column).map(|d| &d.action) {
            Some(ColumnAction::Block) => "blocked",
            Some(ColumnAction::Mask(_)) => "masked",
            _ => "readable",
        };
        let why = match w.action {
            WriteAction::Keep if read == "blocked" => {
                "it is blocked for this role, so only NULL or DEFAULT in a new row may be written"
            }
            WriteAction::Keep => "it is masked for this role, so only the value the role reads (which leaves the stored value) or NULL or DEFAULT in a new row may be written",
            _ => "the role may not write it",
        };
        self.ctx.may_not(
            format!("write column {}.{column}", self.rel.name),
            format!("{why} (write rule {})", w.rule),
        )
    }

    /// A new row's value for a guarded column: NULL and DEFAULT pass as they are, anything
    /// else is wrapped so that PostgreSQL lets only NULL through.
    pub fn guard_insert(&mut self, column: &str, value: &mut Expr) -> Result<(), Refusal> {
        self.known(column)?;
        let Some(w) = self.guarded(column).cloned() else {
            return Ok(());
        };
        if w.action == WriteAction::Refuse {
            return Err(self.write_refusal(column, &w));
        }
        if is_null_or_default(value) {
            return Ok(());
        }
        let ty = self.column_type(column)?;
        let refusal = self.write_refusal(column, &w);
        let g = super::write_guard::insert(value, column, &ty, &refusal).map_err(|e| {
            self.ctx
                .unsupported(&format!("the value written to {column} ({e})"))
        })?;
        *value = g.expr;
        self.guards.extend(g.stand_ins);
        self.guard_places.push(g.places);
        Ok(())
    }

    /// An UPDATE's value for a guarded column: only the value the role reads for the row may
    /// be written, and it leaves the stored value.
    pub fn guard_update(&mut self, column: &str, value: &mut Expr) -> Result<(), Refusal> {
        self.known(column)?;
        let Some(w) = self.guarded(column).cloned() else {
            return Ok(());
        };
        let mask = match self.decisions.get(column).map(|d| &d.action) {
            Some(ColumnAction::Mask(m)) if w.action == WriteAction::Keep => m.clone(),
            _ => return Err(self.write_refusal(column, &w)),
        };
        if is_default(value) {
            return Err(self.write_refusal(column, &w));
        }
        let ty = self.column_type(column)?;
        let col_sql = format!("{}.{}", self.qualifier, super::quote(column));
        let unsupported = |e: String| {
            self.ctx
                .unsupported(&format!("the value written to {column} ({e})"))
        };
        let ct = self
            .rel
            .columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.ty.clone())
            .ok_or_else(|| unsupported("no type".into()))?;
        let mask_sql = mask.render(&col_sql, &ct).map_err(unsupported)?;
        let refusal = self.write_refusal(column, &w);
        let g = super::write_guard::update(value, (column, &col_sql), &ty, &mask_sql, &refusal)
            .map_err(unsupported)?;
        *value = g.expr;
        self.guards.extend(g.stand_ins);
        self.guard_places.push(g.places);
        Ok(())
    }

    fn column_type(&self, column: &str) -> Result<String, Refusal> {
        self.rel
            .columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.ty.sql_name.clone())
            .ok_or_else(|| {
                self.ctx.refuse(format!(
                    "column {}.{column} is not in pgvakt's catalog",
                    self.rel.name
                ))
            })
    }

    /// Columns an INSERT without a column list would write.
    pub fn check_all_writable(&self) -> Result<(), Refusal> {
        for c in &self.rel.columns {
            self.check_write(&c.name)?;
        }
        Ok(())
    }

    fn masked(&mut self, column_sql: &str, column: &str) -> Result<Option<Expr>, Refusal> {
        let Some(d) = self.decisions.get(column) else {
            return Ok(None);
        };
        match &d.action {
            ColumnAction::Allow => Ok(None),
            ColumnAction::Block => {
                Err(self
                    .ctx
                    .blocked(&self.rel.schema, &self.rel.name, column, d))
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

    fn expr(&mut self, e: &mut Expr) -> Result<(), Refusal> {
        let replacement = match e {
            Expr::Identifier(i) => {
                let n = fold(i);
                if self.names.contains(&n) && !self.decisions.contains_key(&n) {
                    return Err(self.ctx.not_allowed(
                        format!("whole-row reference to {}", self.rel.name),
                        Why::instead("list the columns"),
                    ));
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
    pub fn check_returning(&self, items: &[SelectItem]) -> Result<(), Refusal> {
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
                return Err(self.ctx.not_allowed(
                    format!("RETURNING * on {}", self.rel.name),
                    Why::instead("list the columns"),
                ));
            }
        }
        Ok(())
    }
}

impl VisitorMut for Target<'_, '_> {
    type Break = Refusal;

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<Refusal> {
        to_flow(self.expr(e))
    }
}

fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default"))
}

/// NULL or DEFAULT, as written: a new row's value that reveals nothing and overwrites nothing.
fn is_null_or_default(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, sqlparser::ast::Value::Null)) || is_default(e)
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
