//! Rewriting of everything a statement reads: each protected table becomes a derived table
//! that holds masked values (blocked columns absent), so every clause sees only what the role
//! may see; every other relation is schema-qualified so PostgreSQL reads exactly what was
//! analysed; functions and catalog relations are checked.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    Expr, JoinConstraint, JoinOperator, ObjectName, Query, SetExpr, TableAlias, TableFactor,
    VisitMut, VisitorMut,
};

use super::names::Names;
use super::{fold, parse_query, parse_table_factor, quote, ColumnUse, Ctx};
use crate::analysis::functions::is_denied_relation;
use crate::analysis::{Reason, Refusal, Why};
use crate::catalog::{RelKind, Relation};
use crate::policy::model::ColumnAction;

pub struct Reads<'a, 'c> {
    pub ctx: &'a Ctx<'c>,
    pub cte_names: HashSet<String>,
    /// Parameters the statement uses once (see `Analysed::parameters_once`).
    pub parameters_once: std::collections::BTreeSet<usize>,
    /// Parameters repeated inside row-ruled stand-ins (see `Analysed::pushed_parameters`).
    pub pushed_parameters: std::collections::BTreeSet<usize>,
    /// Column names, relation names and unnamed reads seen so far (blocked-column check and
    /// the columns records list).
    pub names: Names,
    /// Protected relations the statement reads.
    pub protected: Vec<Arc<Relation>>,
    /// Every relation the statement reads.
    pub read: Vec<Arc<Relation>>,
    /// Column names the whole statement can reach (None: all), from a first pass.
    pub reach: Option<HashSet<String>>,
    /// (placeholder, masked stand-in SQL) for each protected table replaced.
    pub stand_ins: Vec<(String, std::sync::Arc<str>)>,
    /// (placeholder name, the columns its stand-in shows).
    pub stand_in_columns: Vec<(String, Vec<String>)>,
    /// Personal-data columns read through inlined views.
    pub inlined_uses: Vec<ColumnUse>,
    /// Placeholder name → the relation its stand-in reads, for GROUP BY a key.
    stand_in_rels: std::collections::HashMap<String, super::grouping::StandIn>,
    /// How many views deep the walk is.
    depth: usize,
    /// PostgreSQL may change something while running the statement that the analysis does not
    /// see as a write: a listed function with lasting effects (`functions::changes_state`), or
    /// a view or foreign table whose code the analysis did not read (it may call any function).
    pub changes_state: bool,
}

/// WITH queries in one list, at most: each is a scope the analysis checks names against.
const MAX_CTES: usize = 1_000;

/// Views inlined within views, at most.
const MAX_VIEW_DEPTH: usize = 16;

impl<'a, 'c> Reads<'a, 'c> {
    pub fn new(ctx: &'a Ctx<'c>) -> Self {
        Reads {
            ctx,
            cte_names: HashSet::new(),
            parameters_once: Default::default(),
            pushed_parameters: Default::default(),
            names: Names::default(),
            protected: Vec::new(),
            read: Vec::new(),
            reach: None,
            stand_ins: Vec::new(),
            stand_in_columns: Vec::new(),
            inlined_uses: Vec::new(),
            stand_in_rels: std::collections::HashMap::new(),
            depth: 0,
            changes_state: false,
        }
    }

    fn name_parts(&self, name: &ObjectName) -> Result<Vec<String>, Refusal> {
        name.0
            .iter()
            .map(|p| p.as_ident().map(fold))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.ctx.unsupported(&format!("the name {name}")))
    }

    fn table(&mut self, tf: &mut TableFactor) -> Result<(), Refusal> {
        if let TableFactor::Function { name, .. } = tf {
            // `LATERAL f(...)`: PostgreSQL's parser checks the function against the allowlist.
            match self.name_parts(name) {
                Ok(parts) => self.note_call(&parts),
                Err(_) => self.changes_state = true,
            }
            return Ok(());
        }
        let TableFactor::Table {
            name,
            alias,
            args,
            sample,
            ..
        } = tf
        else {
            return Ok(());
        };
        let parts = self.name_parts(name)?;
        if args.is_some() {
            // A set-returning function in FROM.
            self.note_call(&parts);
            return self.ctx.check_function(&parts, None);
        }
        if parts.len() == 1 && self.cte_names.contains(&parts[0]) {
            return Ok(());
        }
        let rel = self.ctx.resolve(&parts, name)?;
        let only = self.admit(&rel, name)?;
        if rel.kind == RelKind::View {
            if let Some(base) = self.ctx.view_reads_protected(&rel) {
                return match rel.definition.as_ref().filter(|_| !rel.barrier) {
                    Some(def) => self.inline_view(tf, &rel, def),
                    None => Err(self.ctx.refuse(format!(
                        "view {}.{} reads protected table {} and is a security-barrier view, which is not inlined for role {}; query the table itself so its masks apply",
                        rel.schema, rel.name, base, self.ctx.role()
                    ))),
                };
            }
        }
        // Not inlined: PostgreSQL runs the view's own query, which the analysis did not read.
        if matches!(rel.kind, RelKind::View | RelKind::Foreign)
            && !matches!(rel.schema.as_str(), "pg_catalog" | "information_schema")
        {
            self.changes_state = true;
        }
        let protected = self.ctx.is_protected(&rel);
        let Some(derived) =
            self.ctx
                .masked_relation_sql_with(&rel, self.reach.as_ref(), self.depth > 0, only)?
        else {
            *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
            return Ok(());
        };
        if sample.is_some() {
            return Err(self.ctx.refuse(format!(
                "TABLESAMPLE on protected table {}.{} is not supported for role {}",
                rel.schema,
                rel.name,
                self.ctx.role()
            )));
        }
        let alias_sql = alias_sql(alias.as_ref(), name, &rel);
        let derived = self.checked_stand_in(&derived, &rel, only)?;
        // The stand-in goes in as a placeholder name and its text is put in place after the
        // rendering check: short texts to re-parse, and each stand-in is checked once.
        let placeholder = super::stand_in::placeholder();
        *tf = parse_table_factor(&format!("{placeholder} AS {alias_sql}")).map_err(|e| {
            self.ctx
                .unsupported(&format!("rewriting {}: {e}", rel.name))
        })?;
        self.add_stand_in(placeholder, &rel, derived);
        if protected {
            self.protected.push(rel);
        }
        Ok(())
    }

    /// Refuse a catalog relation that holds column values or other sessions' SQL (unless the
    /// role may read statistics views), record the read, and check ONLY and the tables that
    /// inherit from it. Returns whether the name said ONLY.
    fn admit(&mut self, rel: &Arc<Relation>, name: &ObjectName) -> Result<bool, Refusal> {
        let statistics_allowed = self
            .ctx
            .rules
            .allows(crate::policy::model::Capability::StatisticsViews)
            && crate::analysis::functions::statistics_relation(&rel.schema, &rel.name);
        if is_denied_relation(&rel.schema, &rel.name) && !statistics_allowed {
            return Err(self.ctx.not_allowed(
                format!("reading {}.{}", rel.schema, rel.name),
                Why::because("it exposes column values or other sessions' statements"),
            ));
        }
        self.read.push(rel.clone());
        let only = super::inheritance::is_only(name);
        if only && matches!(rel.kind, RelKind::View | RelKind::Sequence) {
            return Err(self
                .ctx
                .unsupported(&format!("ONLY {}.{}", rel.schema, rel.name)));
        }
        if !only {
            self.ctx.check_descendants(rel)?;
        }
        Ok(only)
    }

    /// The derived table's text after the rendering check, reading `ONLY` the table when the
    /// client's name did.
    fn checked_stand_in(
        &self,
        derived: &str,
        rel: &Relation,
        only: bool,
    ) -> Result<Arc<str>, Refusal> {
        let mut derived = super::stand_in::check(derived).map_err(|e| {
            self.ctx
                .unsupported(&format!("rewriting {}: {e}", rel.name))
        })?;
        if only {
            derived =
                super::stand_in::with_only(&derived, &rel.schema, &rel.name).map_err(|e| {
                    self.ctx
                        .unsupported(&format!("rewriting ONLY {}: {e}", rel.name))
                })?;
        }
        Ok(derived)
    }

    /// Note a stand-in put in place of `rel`: its text, the relation it reads (GROUP BY a key)
    /// and the columns it shows (those in reach, less blocked ones at the top level).
    fn add_stand_in(&mut self, placeholder: String, rel: &Arc<Relation>, derived: Arc<str>) {
        let shown = rel
            .columns
            .iter()
            .filter(|c| self.reach.as_ref().is_none_or(|r| r.contains(&c.name)))
            .filter(|c| {
                self.depth > 0
                    || self
                        .ctx
                        .rules
                        .column(&rel.schema, &rel.name, &c.name)
                        .action
                        != ColumnAction::Block
            })
            .map(|c| c.name.clone())
            .collect::<Vec<_>>();
        self.stand_in_rels.insert(
            placeholder.trim_matches('"').to_owned(),
            super::grouping::StandIn {
                rel: rel.clone(),
                shown: shown.clone(),
            },
        );
        self.stand_in_columns
            .push((placeholder.trim_matches('"').to_owned(), shown));
        self.stand_ins.push((placeholder, derived));
    }

    /// Adds a client's condition to a row-ruled stand-in (see `row_pushdown`); a stand-in not
    /// in the expected form, or a text the check refuses, keeps its rows as they were.
    fn copy_condition(&mut self, placeholder: &str, condition: &str) {
        let quoted = format!("\"{placeholder}\"");
        let Some(entry) = self.stand_ins.iter_mut().find(|(p, _)| *p == quoted) else {
            return;
        };
        let Some(text) = super::row_rules::with_condition(&entry.1, condition) else {
            return;
        };
        if let Ok(checked) = super::stand_in::check(&text) {
            entry.1 = checked;
        }
    }

    /// What the SELECT's conditions say about its row-ruled stand-ins (see `row_pushdown`).
    fn pushdown(&self, s: &sqlparser::ast::Select) -> super::row_pushdown::Pushdown {
        let resolve = |name: &ObjectName| {
            let parts = self.name_parts(name).ok()?;
            if parts.len() == 1 && self.cte_names.contains(&parts[0]) {
                return None;
            }
            self.ctx.resolve(&parts, name).ok()
        };
        let once = &self.parameters_once;
        let scope = super::pushdown_subquery::Scope {
            stand_in_rels: &self.stand_in_rels,
            stand_in_texts: &self.stand_ins,
            once,
        };
        let subquery = |q: &Query| super::pushdown_subquery::constant_of(q, &scope);
        super::row_pushdown::conditions(s, &self.stand_in_rels, self.ctx, &resolve, once, &subquery)
    }

    /// Repeats a page (ORDER BY, LIMIT) inside a row-ruled stand-in (see `row_page`).
    fn copy_page(&mut self, placeholder: &str, page: &str) {
        let quoted = format!("\"{placeholder}\"");
        let Some(entry) = self.stand_ins.iter_mut().find(|(p, _)| *p == quoted) else {
            return;
        };
        let Some(text) = super::row_rules::with_page(&entry.1, page) else {
            return;
        };
        if let Ok(checked) = super::stand_in::check(&text) {
            entry.1 = checked;
        }
    }

    /// A view over protected tables, read "as if the tables held masked values": its query is
    /// analysed like a sub-query (its protected tables become stand-ins) and put in its place.
    fn inline_view(
        &mut self,
        tf: &mut TableFactor,
        rel: &Relation,
        definition: &str,
    ) -> Result<(), Refusal> {
        self.depth += 1;
        if self.depth > MAX_VIEW_DEPTH {
            return Err(self.ctx.unsupported("views nested this deep"));
        }
        let body = definition.trim().trim_end_matches(';');
        // A view over `ONLY t` reads t without its children, as the client's text would.
        let mut q = parse_query(&super::inheritance::mark_only(body)).map_err(|e| {
            self.ctx.unsupported(&format!(
                "the definition of view {}.{} ({e})",
                rel.schema, rel.name
            ))
        })?;
        let mut inner = Reads::new(self.ctx);
        inner.depth = self.depth;
        // Blocked columns are typed NULLs inside the view (so it works for every role); a
        // statement naming the view's column gets NULL, never the stored value.
        if let ControlFlow::Break(e) = q.visit(&mut inner) {
            return Err(e);
        }
        self.inlined_uses.extend(inner.uses());
        self.inlined_uses.append(&mut inner.inlined_uses);
        self.stand_ins.append(&mut inner.stand_ins);
        self.stand_in_columns.append(&mut inner.stand_in_columns);
        self.protected.append(&mut inner.protected);
        self.changes_state |= inner.changes_state;
        let TableFactor::Table { name, alias, .. } = &*tf else {
            return Err(self.ctx.unsupported("a view reference"));
        };
        let alias_sql = match alias {
            Some(a) => a.to_string(),
            None => name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.to_string())
                .unwrap_or_else(|| quote(&rel.name).to_string()),
        };
        *tf = parse_table_factor(&format!("({q}) AS {alias_sql}")).map_err(|e| {
            self.ctx
                .unsupported(&format!("inlining view {}.{} ({e})", rel.schema, rel.name))
        })?;
        self.depth -= 1;
        Ok(())
    }

    fn query(&mut self, q: &mut Query) -> Result<(), Refusal> {
        if let Some(with) = &q.with {
            if with.cte_tables.len() > MAX_CTES {
                return Err(self.ctx.refusal(Reason::TooComplex {
                    what: format!(
                        "{} WITH queries in one list (at most {MAX_CTES})",
                        with.cte_tables.len()
                    ),
                    hint: None,
                }));
            }
            for cte in &with.cte_tables {
                let n = fold(&cte.alias.name);
                if self.ctx.catalog.has_relation_named(&n) {
                    return Err(self.ctx.refuse(format!(
                        "the WITH query name {n} hides a table of the same name; rename it"
                    )));
                }
                self.cte_names.insert(n);
            }
        }
        self.expand_table_exprs(&mut q.body)
    }

    /// `TABLE t` reads all of t: make it `SELECT * FROM t` so the table rule applies.
    fn expand_table_exprs(&self, body: &mut SetExpr) -> Result<(), Refusal> {
        match body {
            SetExpr::Table(t) => {
                let name = match (&t.schema_name, &t.table_name) {
                    (Some(s), Some(n)) => format!("{s}.{n}"),
                    (None, Some(n)) => n.clone(),
                    _ => return Err(self.ctx.unsupported("TABLE without a name")),
                };
                let q = parse_query(&format!("SELECT * FROM {name}"))
                    .map_err(|e| self.ctx.unsupported(&format!("TABLE {name}: {e}")))?;
                *body = *q.body;
                Ok(())
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.expand_table_exprs(left)?;
                self.expand_table_exprs(right)
            }
            _ => Ok(()),
        }
    }

    fn expr(&mut self, e: &mut Expr) -> Result<(), Refusal> {
        self.names.note_expr(e);
        if let Expr::Function(f) = e {
            let parts = self.name_parts(&f.name)?;
            self.note_call(&parts);
            self.ctx.check_function(&parts, Some(f))?;
        }
        Ok(())
    }

    /// A call of a function whose effect outlives the statement (see `changes_state`).
    fn note_call(&mut self, parts: &[String]) {
        if parts.last().is_some_and(|n| {
            crate::analysis::functions::changes_state(n) || self.ctx.catalog.is_volatile_function(n)
        }) {
            self.changes_state = true;
        }
    }

    /// Personal-data columns of the relations read that the statement uses: those named, or
    /// all of them when a construct reads columns without naming them.
    pub fn uses(&self) -> Vec<ColumnUse> {
        let wide = self.names.whole_rows();
        let mut out = self.inlined_uses.clone();
        for rel in &self.read {
            for c in &rel.columns {
                if wide || self.names.idents.contains(&c.name) {
                    // Blocked columns are left out of what a protected table shows.
                    if let Some(u) = self
                        .ctx
                        .column_use(rel, &c.name)
                        .filter(|u| u.action != super::UseAction::Blocked)
                    {
                        if !out.contains(&u) {
                            out.push(u);
                        }
                    }
                }
            }
        }
        out
    }

    /// After the walk: a reference by name to a blocked column is refused with its rule.
    pub fn check_blocked(&self) -> Result<(), Refusal> {
        for rel in &self.protected {
            for c in &rel.columns {
                let d = self.ctx.rules.column(&rel.schema, &rel.name, &c.name);
                if d.action == ColumnAction::Block && self.names.idents.contains(&c.name) {
                    return Err(self.ctx.blocked(&rel.schema, &rel.name, &c.name, &d));
                }
            }
        }
        Ok(())
    }
}

impl VisitorMut for Reads<'_, '_> {
    type Break = Refusal;

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<Refusal> {
        to_flow(self.query(q))
    }

    fn pre_visit_select(&mut self, s: &mut sqlparser::ast::Select) -> ControlFlow<Refusal> {
        self.names.note_select(s);
        if s.into.is_some()
            && !self
                .ctx
                .rules
                .allows(crate::policy::model::Capability::TempObjects)
        {
            return ControlFlow::Break(self.ctx.not_allowed(
                "SELECT INTO (creating a table from query results)",
                Why::Plain,
            ));
        }
        // It creates and fills a table: not a read that leaves nothing behind.
        if s.into.is_some() {
            self.changes_state = true;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, s: &mut sqlparser::ast::Select) -> ControlFlow<Refusal> {
        // Its FROM items are stand-ins now.
        super::grouping::license(s, &self.stand_in_rels, self.ctx);
        let pushdown = self.pushdown(s);
        self.pushed_parameters.extend(pushdown.parameters);
        for (placeholder, condition) in pushdown.conditions {
            self.copy_condition(&placeholder, &condition);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<Refusal> {
        // Its SELECT's conditions are in its stand-ins now.
        if let SetExpr::Select(s) = q.body.as_ref() {
            if let Some(placeholder) = self.pushdown(s).whole {
                if let Some(page) = super::row_page::page(
                    q,
                    &placeholder,
                    &self.stand_in_rels,
                    self.ctx,
                    &self.parameters_once,
                ) {
                    self.copy_page(&placeholder, &page);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<Refusal> {
        // Before the table is replaced by its stand-in: the names it goes by.
        self.names.note_table_factor(tf);
        to_flow(self.table(tf))
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<Refusal> {
        to_flow(self.expr(e))
    }
}

pub fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c) => Some(c),
        _ => None,
    }
}

pub fn to_flow(r: Result<(), Refusal>) -> ControlFlow<Refusal> {
    match r {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => ControlFlow::Break(e),
    }
}

/// The setting name of a `set_config(name, ...)` call when it is a plain literal.
pub fn literal_setting(f: &sqlparser::ast::Function) -> Option<String> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match list.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.to_ascii_lowercase()),
            _ => None,
        },
        _ => None,
    }
}

pub fn setting_allowed(f: &sqlparser::ast::Function) -> bool {
    literal_setting(f).is_some_and(|s| !crate::analysis::functions::is_protected_setting(&s))
}

/// The alias the stand-in takes: the client's (with its column names), else the name the
/// client used, so the statement's references to it still resolve.
fn alias_sql(alias: Option<&TableAlias>, name: &ObjectName, rel: &Relation) -> String {
    match alias {
        Some(a) if a.columns.is_empty() => a.name.to_string(),
        Some(a) => format!(
            "{} ({})",
            a.name,
            a.columns
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.to_string())
            .unwrap_or_else(|| quote(&rel.name).to_string()),
    }
}
