//! PostgreSQL's parse tree of the forwarded text, checked on its own terms: every statement,
//! relation, function, operator and column reference in it, with names scoped exactly as
//! PostgreSQL scopes them (WITH per query level, sub-queries seeing their outer levels).
//!
//! The tree is walked through its serde form so that no field of any node type can be missed:
//! the walk descends into everything and stops only where a node needs a decision.

use std::collections::{HashMap, HashSet};

use super::fields::V as Value;

use super::allow::{self, Reads};
use super::{Finding, Placeholders};

mod utility;
mod writes;
use crate::analysis::functions::is_protected_setting;
use crate::analysis::{Ctx, Reason, Why};
use crate::catalog::{RelKind, Relation};
use crate::policy::model::Capability;
use utility::sets_search_path_alone;

type Checked = Result<(), Finding>;

/// One query level's names: its WITH queries, its FROM items and, for INSERT/UPDATE/DELETE,
/// the table written.
#[derive(Default)]
struct Level<'p> {
    parent: Option<&'p Level<'p>>,
    ctes: std::borrow::Cow<'p, [String]>,
    froms: Vec<FromItem>,
    target: Option<Target>,
}

impl<'p> Level<'p> {
    fn child(parent: &'p Level<'p>) -> Level<'p> {
        Level {
            parent: Some(parent),
            ..Default::default()
        }
    }

    fn sees_cte(&self, name: &str) -> bool {
        self.ctes.iter().any(|c| c == name) || self.parent.is_some_and(|p| p.sees_cte(name))
    }

    fn any_target(&self) -> bool {
        self.target.is_some() || self.parent.is_some_and(Level::any_target)
    }

    /// The written table a qualifier names, unless a nearer FROM item takes the name.
    fn target_named(&self, q: &str) -> Option<&Target> {
        if self.froms.iter().any(|f| f.name == q) {
            return None;
        }
        match &self.target {
            Some(t) if t.names.iter().any(|n| n == q) => Some(t),
            _ => self.parent?.target_named(q),
        }
    }
}

/// A FROM item: the name it goes by and, when known, its columns.
struct FromItem {
    name: String,
    columns: Option<Vec<String>>,
}

/// A written table with columns the role may not read as stored.
struct Target {
    names: Vec<String>,
    columns: Vec<String>,
    protected: Vec<String>,
    /// Columns whose write rule does not allow any value.
    guarded: Vec<String>,
    table: String,
}

enum Field {
    Name(String),
    Star,
}

pub struct Gate<'a, 'c> {
    ctx: &'a Ctx<'c>,
    placeholders: &'a Placeholders,
    /// Relation placeholder name → the columns its stand-in shows.
    stand_ins: &'a HashMap<String, Vec<String>>,
    seen: HashSet<String>,
}

fn field<'v>(v: &'v Value, k: &str) -> Option<&'v Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn text<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// `{"node": {"Kind": body}}` (or `{"Kind": body}`) → (Kind, body).
fn kind(v: &Value) -> Option<(&str, &Value)> {
    let inner = v.get("node").unwrap_or(v);
    let (k, body) = inner.as_object()?.first()?;
    Some((*k, body))
}

fn fields(v: Option<&Value>) -> Vec<Field> {
    list(v)
        .iter()
        .filter_map(kind)
        .map(|(k, b)| match k {
            "AStar" => Field::Star,
            _ => Field::Name(text(b, "sval").to_owned()),
        })
        .collect()
}

fn names(v: Option<&Value>) -> Vec<String> {
    list(v)
        .iter()
        .filter_map(kind)
        .map(|(_, b)| text(b, "sval").to_owned())
        .collect()
}

fn policy(m: impl Into<String>) -> Finding {
    Finding::Policy(Reason::Policy {
        message: m.into(),
        hint: None,
    })
}

/// `{what} is not allowed for role R`, going on as `why` says.
fn not_allowed(what: impl Into<String>, why: Why) -> Finding {
    Finding::Policy(Reason::NotAllowed {
        what: what.into(),
        why,
    })
}

fn differs(m: impl Into<String>) -> Finding {
    Finding::Disagreement(m.into())
}

impl<'a, 'c> Gate<'a, 'c> {
    pub fn new(ctx: &'a Ctx<'c>, placeholders: &'a Placeholders) -> Self {
        Gate {
            ctx,
            placeholders,
            stand_ins: &placeholders.relations,
            seen: HashSet::new(),
        }
    }

    /// Check every statement of a parse result; then every stand-in must have been met once.
    pub fn parse_result(&mut self, tree: &Value) -> Checked {
        let root = Level::default();
        for raw in list(field(tree, "stmts")) {
            let stmt = field(raw, "stmt").ok_or_else(|| differs("an empty statement"))?;
            self.statement(stmt, &root)?;
        }
        if self.seen.len() != self.stand_ins.len() + self.placeholders.expressions.len() {
            return Err(differs(
                "a masked stand-in is not where the analysis put it",
            ));
        }
        Ok(())
    }

    fn role(&self) -> &str {
        self.ctx.role()
    }

    fn statement(&mut self, stmt: &Value, lvl: &Level) -> Checked {
        let Some((k, s)) = kind(stmt) else {
            return Err(differs("a statement PostgreSQL's parser does not name"));
        };
        match k {
            "SelectStmt" if sets_search_path_alone(s) => Ok(()),
            "SelectStmt" => self.select(s, lvl),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" => self.dml(k, s, lvl),
            "LockStmt" => self.lock(s),
            "CopyStmt" => self.copy(s, lvl),
            "ExplainStmt" => self.explain(s, lvl),
            "PrepareStmt" => self.inner_statement(s, lvl),
            "DeclareCursorStmt" => match field(s, "query").and_then(kind) {
                Some(("SelectStmt", q)) => self.select(q, lvl),
                _ => Err(policy("a cursor over anything but a query")),
            },
            "ExecuteStmt" => self.walk(s, lvl),
            "VariableSetStmt" => self.set(s, lvl),
            // UNLISTEN moves no data, and pools send `UNLISTEN *` when a connection is
            // returned (asyncpg's reset), so it needs no capability.
            "ListenStmt" | "NotifyStmt" => {
                if !self.ctx.rules.allows(Capability::Notify) {
                    return Err(not_allowed(
                        "LISTEN/NOTIFY",
                        Why::aside("capability notify"),
                    ));
                }
                Ok(())
            }
            "TransactionStmt" | "VariableShowStmt" | "DiscardStmt" | "FetchStmt"
            | "ClosePortalStmt" | "DeallocateStmt" | "UnlistenStmt" => Ok(()),
            other => Err(not_allowed(format!("the statement {other}"), Why::Plain)),
        }
    }

    fn explain(&mut self, s: &Value, lvl: &Level) -> Checked {
        // Cost estimates come from statistics of the stored values (a GROUP BY on a masked
        // column shows how many distinct stored values it has).
        let costs_off = list(field(s, "options"))
            .iter()
            .filter_map(kind)
            .any(|(_, o)| {
                text(o, "defname").eq_ignore_ascii_case("costs") && is_false(field(o, "arg"))
            });
        if !costs_off {
            return Err(policy(format!(
                "EXPLAIN for role {} needs COSTS OFF: cost estimates come from statistics of stored values",
                self.role()
            )));
        }
        // Executed plans count the rows each node removed: the stand-ins' row rules would
        // show how many rows they hide.
        let analyze = list(field(s, "options"))
            .iter()
            .filter_map(kind)
            .any(|(_, o)| {
                text(o, "defname").eq_ignore_ascii_case("analyze") && !is_false(field(o, "arg"))
            });
        if analyze && self.ctx.rules.has_row_rules() {
            return Err(not_allowed(
                "EXPLAIN ANALYZE",
                Why::because("its row counts would tell how many rows the role's row rules hide"),
            ));
        }
        for o in list(field(s, "options")).iter().filter_map(kind) {
            let name = text(o.1, "defname").to_ascii_lowercase();
            if !allow::explain_option(&name) {
                return Err(not_allowed(
                    format!("EXPLAIN option {}", name.to_ascii_uppercase()),
                    Why::aside("VERBOSE prints the expressions that mask values"),
                ));
            }
        }
        self.inner_statement(s, lvl)
    }

    fn set(&mut self, s: &Value, lvl: &Level) -> Checked {
        let name = text(s, "name").to_ascii_lowercase();
        // These three are allowed with the values the analysis checked (it reads the same
        // tokens); the others are never changed by restricted roles.
        let checked = matches!(
            name.as_str(),
            "search_path" | "standard_conforming_strings" | "client_encoding"
        );
        // Another session's exported snapshot shows the rows the rules read as they were when
        // it was taken: a consent withdrawn since would still count.
        if name == "transaction snapshot" && self.ctx.rules.has_row_rules() {
            return Err(not_allowed(
                "SET TRANSACTION SNAPSHOT",
                Why::because(
                    "another session's snapshot would show consents and restrictions as they were, not as its row rules read them now",
                ),
            ));
        }
        if !checked && is_protected_setting(&name) {
            return Err(not_allowed(
                format!("changing the setting {name}"),
                Why::Plain,
            ));
        }
        self.walk(s, lvl)
    }

    fn inner_statement(&mut self, s: &Value, lvl: &Level) -> Checked {
        let q = field(s, "query").ok_or_else(|| differs("a statement without its query"))?;
        self.statement(q, lvl)
    }

    /// Descend into everything; nodes that need a decision stop here.
    fn walk(&mut self, v: &Value, lvl: &Level) -> Checked {
        match v {
            Value::Map(m) => {
                for (k, child) in m {
                    if k.as_bytes().first().is_some_and(u8::is_ascii_uppercase) {
                        self.node(k, child, lvl)?;
                    } else {
                        self.walk(child, lvl)?;
                    }
                }
                Ok(())
            }
            Value::Seq(a) => a.iter().try_for_each(|x| self.walk(x, lvl)),
            _ => Ok(()),
        }
    }

    fn node(&mut self, k: &str, body: &Value, lvl: &Level) -> Checked {
        match k {
            "SelectStmt" => self.select(body, lvl),
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => Err(not_allowed(
                "a data-modifying statement inside another statement",
                Why::Plain,
            )),
            "RangeVar" => self.range_var(body, lvl),
            "FuncCall" => {
                self.function(body)?;
                self.walk(body, lvl)
            }
            "AExpr" => {
                self.operator(body)?;
                self.walk(body, lvl)
            }
            "ColumnRef" => self.column_ref(body, lvl),
            "IntoClause" => Err(not_allowed("SELECT INTO", Why::Plain)),
            // FOR UPDATE OF names FROM items already checked.
            "LockingClause" => Ok(()),
            _ => self.walk(body, lvl),
        }
    }

    fn select(&mut self, s: &Value, parent: &Level) -> Checked {
        if field(s, "into_clause").is_some() && !self.ctx.rules.allows(Capability::TempObjects) {
            return Err(not_allowed(
                "SELECT INTO (creating a table from query results)",
                Why::Plain,
            ));
        }
        let mut lvl = Level::child(parent);
        self.with(field(s, "with_clause"), &mut lvl)?;
        let mut froms = Vec::new();
        for item in list(field(s, "from_clause")) {
            self.note_from_item(item, &lvl, &mut froms);
        }
        lvl.froms = froms;
        for (k, v) in s.as_object().into_iter().flatten() {
            if *k != "with_clause" && *k != "into_clause" {
                self.walk(v, &lvl)?;
            }
        }
        Ok(())
    }

    /// WITH queries: each body sees the earlier ones (all of them when RECURSIVE) and the outer
    /// levels; the level itself sees all of them.
    fn with(&mut self, w: Option<&Value>, lvl: &mut Level) -> Checked {
        let Some(w) = w else { return Ok(()) };
        let recursive = w.get("recursive").and_then(Value::as_bool) == Some(true);
        let mut ctes = Vec::new();
        for c in list(field(w, "ctes")) {
            match kind(c) {
                Some(("CommonTableExpr", b)) => ctes.push((text(b, "ctename").to_owned(), b)),
                _ => return Err(differs("a WITH item that is not a query")),
            }
        }
        let all: Vec<String> = ctes.iter().map(|(n, _)| n.clone()).collect();
        for (i, (_, body)) in ctes.iter().enumerate() {
            let visible = if recursive { &all[..] } else { &all[..i] };
            let scope = Level {
                parent: lvl.parent,
                ctes: std::borrow::Cow::Borrowed(visible),
                ..Default::default()
            };
            self.walk(body, &scope)?;
        }
        lvl.ctes = std::borrow::Cow::Owned(all);
        Ok(())
    }

    fn note_from_item(&self, item: &Value, lvl: &Level, out: &mut Vec<FromItem>) {
        let Some((k, b)) = kind(item) else { return };
        let alias = field(b, "alias");
        let alias_name = alias.map(|a| text(a, "aliasname").to_owned());
        let renamed = alias.is_some_and(|a| !list(field(a, "colnames")).is_empty());
        match k {
            "RangeVar" => {
                let (schema, name) = (text(b, "schemaname"), text(b, "relname"));
                let columns = if renamed {
                    None
                } else if schema.is_empty() {
                    if lvl.sees_cte(name) {
                        None
                    } else {
                        self.stand_ins.get(name).cloned()
                    }
                } else {
                    self.ctx
                        .catalog
                        .relation(schema, name)
                        .map(|r| r.columns.iter().map(|c| c.name.clone()).collect())
                };
                out.push(FromItem {
                    name: alias_name.unwrap_or_else(|| name.to_owned()),
                    columns,
                });
            }
            "JoinExpr" => {
                for side in ["larg", "rarg"] {
                    if let Some(s) = field(b, side) {
                        self.note_from_item(s, lvl, out);
                    }
                }
                if let Some(n) = alias_name {
                    out.push(FromItem {
                        name: n,
                        columns: None,
                    });
                }
            }
            "RangeTableSample" => {
                if let Some(r) = field(b, "relation") {
                    self.note_from_item(r, lvl, out);
                }
            }
            _ => out.push(FromItem {
                name: alias_name.unwrap_or_default(),
                columns: None,
            }),
        }
    }

    /// A relation read: a visible WITH query, a masked stand-in, or a catalog relation the role
    /// may read as stored.
    fn range_var(&mut self, rv: &Value, lvl: &Level) -> Checked {
        let (schema, name) = (text(rv, "schemaname"), text(rv, "relname"));
        if !text(rv, "catalogname").is_empty() {
            return Err(differs(format!("the three-part name of {name}")));
        }
        if schema.is_empty() {
            if lvl.sees_cte(name) {
                return Ok(());
            }
            if self.stand_ins.contains_key(name) {
                if !self.seen.insert(name.to_owned()) {
                    return Err(differs("a masked stand-in read twice"));
                }
                return Ok(());
            }
            return Err(differs(format!(
                "relation {name} is read without a schema, so it is not the relation analysed"
            )));
        }
        let rel = self.ctx.catalog.relation(schema, name).ok_or_else(|| {
            differs(format!(
                "relation {schema}.{name} is not in pgvakt's catalog"
            ))
        })?;
        self.readable(rel)
    }

    fn readable(&self, rel: &Relation) -> Checked {
        if allow::is_system_schema(&rel.schema) {
            let stats = self.ctx.rules.allows(Capability::StatisticsViews);
            if allow::catalog_relation(&rel.schema, &rel.name, stats) {
                return Ok(());
            }
            return Err(not_allowed(
                format!("reading {}.{}", rel.schema, rel.name),
                Why::because(
                    "it is not on pgvakt's list of catalog relations without values or other sessions' statements",
                ),
            ));
        }
        if self.ctx.is_protected(rel) {
            return Err(differs(format!(
                "protected table {}.{} is read without its masks",
                rel.schema, rel.name
            )));
        }
        if matches!(rel.kind, RelKind::View | RelKind::MaterializedView) {
            if let Some(base) = self.ctx.view_reads_protected(rel) {
                return Err(policy(format!(
                    "view {}.{} reads protected table {base} for role {}",
                    rel.schema,
                    rel.name,
                    self.role()
                )));
            }
        }
        Ok(())
    }

    fn function(&self, f: &Value) -> Checked {
        let parts = names(field(f, "funcname"));
        let (schema, name) = match parts.as_slice() {
            [n] => (None, n.as_str()),
            [s, n] => (Some(s.as_str()), n.as_str()),
            _ => return Err(differs(format!("the function name {}", parts.join(".")))),
        };
        match schema {
            Some("pg_catalog") => {}
            Some(s) => {
                return Err(Finding::Policy(Reason::UserFunction {
                    schema: Some(s.to_owned()),
                    name: name.to_owned(),
                }))
            }
            None if self.ctx.catalog.is_user_function(name) => {
                return Err(Finding::Policy(Reason::UserFunction {
                    schema: None,
                    name: name.to_owned(),
                }))
            }
            None => {}
        }
        match allow::function(name) {
            None => Err(not_allowed(
                format!("function {name}"),
                Why::because(
                    "it is not on pgvakt's list of functions that cannot read data past the analysis",
                ),
            )),
            Some(Reads::Needs(cap)) if !self.ctx.rules.allows(cap) => Err(not_allowed(
                format!("function {name}"),
                Why::WithoutCapability(cap),
            )),
            Some(_) if name == "set_config" => {
                let first = list(field(f, "args")).first().and_then(kind);
                let setting = match first {
                    Some(("AConst", c)) => field(c, "val")
                        .and_then(|v| field(v, "Sval"))
                        .map(|s| text(s, "sval").to_ascii_lowercase()),
                    _ => None,
                };
                match setting {
                    Some(s) if !is_protected_setting(&s) => Ok(()),
                    _ => Err(not_allowed("set_config of this setting", Why::Plain)),
                }
            }
            Some(_) => Ok(()),
        }
    }

    fn operator(&self, e: &Value) -> Checked {
        let parts = names(field(e, "name"));
        let ok = match parts.as_slice() {
            [op] => allow::operator(op),
            [s, op] => s == "pg_catalog" && allow::operator(op),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(not_allowed(
                format!("operator {}", parts.join(".")),
                Why::because("only built-in operators are"),
            ))
        }
    }
}

/// Whether an option's argument says off (`false`, `off`, `no`, `0`); no argument means on.
fn is_false(arg: Option<&Value>) -> bool {
    match arg.and_then(kind) {
        Some(("String", v)) => matches!(
            text(v, "sval").to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        ),
        Some(("Integer", v)) => v.get("ival").and_then(Value::as_i64) == Some(0),
        Some(("Boolean", v)) => v.get("boolval").and_then(Value::as_bool) == Some(false),
        _ => false,
    }
}
