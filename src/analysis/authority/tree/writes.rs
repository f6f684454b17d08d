//! The table an INSERT, UPDATE, DELETE or COPY FROM writes: the columns it writes, and what
//! every column reference in its scope binds to, as PostgreSQL binds it. Stored values of
//! protected columns and whole-row references of the written table never reach the role.

use super::super::{allow, Finding};
use super::{
    differs, field, fields, kind, list, names, not_allowed, policy, text, Checked, Field, FromItem,
    Gate, Level, Target, Value,
};
use crate::analysis::Why;
use crate::policy::model::{Capability, ColumnAction, WriteAction};

impl Gate<'_, '_> {
    /// Column references only matter where a written table with protected columns is in
    /// scope: there they read stored values, which must not reach the role.
    pub(super) fn column_ref(&mut self, cr: &Value, lvl: &Level) -> Checked {
        let fields = fields(field(cr, "fields"));
        if let [Field::Name(x)] = fields.as_slice() {
            if self.placeholders.expressions.contains(x) {
                if !self.seen.insert(x.clone()) {
                    return Err(differs("a masked column reference met twice"));
                }
                return Ok(());
            }
        }
        if !lvl.any_target() {
            return Ok(());
        }
        match fields.as_slice() {
            [Field::Star] if lvl.target.is_some() => Err(self.whole_row(lvl.target.as_ref())),
            [Field::Star] => Ok(()),
            [Field::Name(x)] => self.unqualified(x, lvl),
            _ => {
                for (i, f) in fields.iter().enumerate().take(fields.len() - 1) {
                    let Field::Name(q) = f else { continue };
                    let Some(t) = lvl.target_named(q) else {
                        continue;
                    };
                    match &fields[i + 1] {
                        Field::Star => return Err(self.whole_row(Some(t))),
                        Field::Name(c) if t.protected.contains(c) => return Err(self.stored(t, c)),
                        // `t.f` where f is no column of t is `f(t)` to PostgreSQL: a function
                        // of the whole stored row (`contacts.to_jsonb`).
                        Field::Name(c) if !t.columns.contains(c) => {
                            return Err(self.whole_row(Some(t)))
                        }
                        Field::Name(_) => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// PostgreSQL binds a one-part name to a column at the nearest level that has one, looking
    /// at every level before it tries the name as a whole-row reference to a FROM item.
    pub(super) fn unqualified(&self, x: &String, lvl: &Level) -> Checked {
        let mut cur = Some(lvl);
        while let Some(l) = cur {
            if l.froms
                .iter()
                .any(|f| f.columns.as_ref().is_some_and(|c| c.contains(x)))
            {
                return Ok(());
            }
            if let Some(t) = &l.target {
                if t.protected.contains(x) {
                    return Err(self.stored(t, x));
                }
                if t.columns.contains(x) {
                    return Ok(());
                }
            }
            if l.froms.iter().any(|f| f.columns.is_none()) && could_reach_target(x, l.parent) {
                return Err(policy(format!(
                    "pgvakt cannot tell whether {x} names a protected column of the table written, so it is refused for role {}",
                    self.role()
                )));
            }
            cur = l.parent;
        }
        let mut cur = Some(lvl);
        while let Some(l) = cur {
            if l.froms.iter().any(|f| f.name == *x) {
                return Ok(());
            }
            if let Some(t) = &l.target {
                if t.names.contains(x) {
                    return Err(self.whole_row(Some(t)));
                }
            }
            cur = l.parent;
        }
        Ok(())
    }

    pub(super) fn whole_row(&self, t: Option<&Target>) -> Finding {
        not_allowed(
            format!(
                "a whole-row reference to written table {}",
                t.map_or("", |t| t.table.as_str())
            ),
            Why::because("it reads columns the role may not see as stored"),
        )
    }

    pub(super) fn stored(&self, t: &Target, c: &str) -> Finding {
        let d = self.ctx.rules.column(
            t.table.split('.').next().unwrap_or(""),
            t.table.split('.').nth(1).unwrap_or(""),
            c,
        );
        policy(format!(
            "column {}.{c} of the written table is read as stored, which rule {} does not allow for role {}",
            t.table,
            d.rule,
            self.role()
        ))
    }

    /// The table an INSERT, UPDATE, DELETE or COPY FROM writes, with what the role may not
    /// read of it.
    pub(super) fn target(&self, rv: &Value) -> Result<Option<Target>, Finding> {
        let (schema, name) = (text(rv, "schemaname"), text(rv, "relname"));
        if schema.is_empty() || !text(rv, "catalogname").is_empty() {
            return Err(differs(format!(
                "the written table {name} is not the one analysed"
            )));
        }
        let rel = self.ctx.catalog.relation(schema, name).ok_or_else(|| {
            differs(format!(
                "relation {schema}.{name} is not in pgvakt's catalog"
            ))
        })?;
        if allow::is_system_schema(&rel.schema) {
            return Err(not_allowed(
                format!("writing {}.{}", rel.schema, rel.name),
                Why::Plain,
            ));
        }
        // A view written through is judged by its base table's rules, as the analysis did.
        let view = crate::analysis::view_writes::through(self.ctx, rel)
            .map_err(|e| Finding::Policy(*e.reason))?;
        let rules: Vec<(String, ColumnAction, WriteAction)> = match &view {
            Some(v) => v
                .rules(self.ctx, rel)
                .into_iter()
                .map(|(c, d, w)| (c, d.action, w.action))
                .collect(),
            None => rel
                .columns
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        self.ctx
                            .rules
                            .column(&rel.schema, &rel.name, &c.name)
                            .action,
                        self.ctx.rules.write(&rel.schema, &rel.name, &c.name).action,
                    )
                })
                .collect(),
        };
        let protected: Vec<String> = rules
            .iter()
            .filter(|(_, read, _)| *read != ColumnAction::Allow)
            .map(|(c, _, _)| c.clone())
            .collect();
        let guarded: Vec<String> = rules
            .iter()
            .filter(|(_, _, write)| *write != WriteAction::Allow)
            .map(|(c, _, _)| c.clone())
            .collect();
        if protected.is_empty() && guarded.is_empty() {
            return Ok(None);
        }
        let mut names = vec![rel.name.clone()];
        if let Some(a) = field(rv, "alias") {
            names.push(text(a, "aliasname").to_owned());
        }
        Ok(Some(Target {
            names,
            columns: rel.columns.iter().map(|c| c.name.clone()).collect(),
            protected,
            guarded,
            table: format!("{}.{}", rel.schema, rel.name),
        }))
    }

    pub(super) fn written(&self, t: Option<&Target>, cols: &[String]) -> Checked {
        let Some(t) = t else { return Ok(()) };
        if cols.is_empty() && !t.guarded.is_empty() {
            return Err(not_allowed(
                format!("writing every column of {}", t.table),
                Why::because("name the columns"),
            ));
        }
        match cols.iter().find(|c| t.guarded.contains(c)) {
            Some(c) => Err(not_allowed(
                format!("writing column {}.{c}", t.table),
                Why::because(
                    "its write rule allows only NULL into a new row or the value the role reads",
                ),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn dml(&mut self, k: &str, s: &Value, parent: &Level) -> Checked {
        let mut lvl = Level::child(parent);
        self.with(field(s, "with_clause"), &mut lvl)?;
        let rv = field(s, "relation").ok_or_else(|| differs("a write without its table"))?;
        let target = self.target(rv)?;
        let mut skip = vec!["with_clause", "relation"];
        match k {
            "InsertStmt" => {
                let cols: Vec<String> = list(field(s, "cols"))
                    .iter()
                    .filter_map(kind)
                    .map(|(_, r)| text(r, "name").to_owned())
                    .enumerate()
                    .filter(|(i, c)| !self.new_rows_kept(field(s, "select_stmt"), *i, c))
                    .map(|(_, c)| c)
                    .collect();
                if !cols.is_empty() || list(field(s, "cols")).is_empty() {
                    self.written(target.as_ref(), &cols)?;
                }
                // The rows inserted come from a query that cannot see the table written.
                if let Some(q) = field(s, "select_stmt") {
                    self.walk(q, &lvl)?;
                }
                if let Some(oc) = field(s, "on_conflict_clause") {
                    let sets: Vec<String> = list(field(oc, "target_list"))
                        .iter()
                        .filter_map(kind)
                        .map(|(_, r)| text(r, "name").to_owned())
                        .collect();
                    if !sets.is_empty() {
                        self.written(target.as_ref(), &sets)?;
                    }
                }
                // `excluded` is the row proposed by the client, not stored values.
                lvl.froms.push(FromItem {
                    name: "excluded".into(),
                    columns: Some(Vec::new()),
                });
                skip.extend(["cols", "select_stmt"]);
            }
            "UpdateStmt" => {
                let sets: Vec<String> = list(field(s, "target_list"))
                    .iter()
                    .filter_map(kind)
                    .filter(|(_, r)| !self.kept(r))
                    .map(|(_, r)| text(r, "name").to_owned())
                    .collect();
                if !sets.is_empty() {
                    self.written(target.as_ref(), &sets)?;
                }
                for item in list(field(s, "from_clause")) {
                    let mut froms = std::mem::take(&mut lvl.froms);
                    self.note_from_item(item, &lvl, &mut froms);
                    lvl.froms = froms;
                }
            }
            _ => {
                for item in list(field(s, "using_clause")) {
                    let mut froms = std::mem::take(&mut lvl.froms);
                    self.note_from_item(item, &lvl, &mut froms);
                    lvl.froms = froms;
                }
            }
        }
        lvl.target = target;
        for (key, v) in s.as_object().into_iter().flatten() {
            if !skip.contains(key) {
                self.walk(v, &lvl)?;
            }
        }
        Ok(())
    }

    /// Whether every row of an INSERT's VALUES (or a plain SELECT's output) holds, at position
    /// `i`, NULL, DEFAULT or the guard the analysis put there for `column`
    /// (`analysis::write_guard`): a new row's value that PostgreSQL lets through only when it
    /// is NULL.
    fn new_rows_kept(&self, select: Option<&Value>, i: usize, column: &str) -> bool {
        let Some(("SelectStmt", s)) = select.and_then(kind) else {
            return false;
        };
        let rows = list(field(s, "values_lists"));
        if rows.is_empty() {
            // A plain SELECT's output column (a set operation has no target list of its own).
            return match list(field(s, "target_list")).get(i).and_then(kind) {
                Some(("ResTarget", r)) => {
                    field(r, "val").is_some_and(|v| is_null(v) || self.guard(v, column, false))
                }
                _ => false,
            };
        }
        rows.iter().all(|row| {
            let items = row
                .get("node")
                .and_then(|n| n.get("List"))
                .and_then(|l| field(l, "items"));
            match list(items).get(i) {
                Some(v) => is_null(v) || self.guard(v, column, false),
                None => false,
            }
        })
    }

    /// Whether an UPDATE's `SET column = value` is the guard the analysis put there: the
    /// value the role reads for the row, which leaves the stored one, or a failure.
    fn kept(&self, res_target: &Value) -> bool {
        list(field(res_target, "indirection")).is_empty()
            && field(res_target, "val")
                .is_some_and(|v| self.guard(v, text(res_target, "name"), true))
    }

    /// `CASE WHEN CAST(v AS t) IS NULL THEN NULL ELSE <failure> END` (a new row) or
    /// `CASE WHEN CAST(v AS t) IS NOT DISTINCT FROM <mask> THEN <stored> ELSE <failure> END`
    /// (an update), with the placeholders the analysis made for this column's guard.
    fn guard(&self, v: &Value, column: &str, update: bool) -> bool {
        let Some(("CaseExpr", case)) = kind(v) else {
            return false;
        };
        let [when] = list(field(case, "args")) else {
            return false;
        };
        let (Some(("CaseWhen", when)), None) = (kind(when), field(case, "arg")) else {
            return false;
        };
        let Some(g) = field(case, "defresult")
            .and_then(placeholder)
            .and_then(|f| self.placeholders.guards.get(f))
        else {
            return false;
        };
        let (cond, result) = (field(when, "expr").and_then(kind), field(when, "result"));
        let cast = |e: Option<&Value>| matches!(e.and_then(kind), Some(("TypeCast", _)));
        g.column == column
            && match (update, cond, &g.mask, &g.stored) {
                (false, Some(("NullTest", t)), None, None) => {
                    t.get("nulltesttype").and_then(Value::as_i64) == Some(NULL_TEST_IS_NULL)
                        && cast(field(t, "arg"))
                        && result.is_some_and(is_null_const)
                }
                (true, Some(("AExpr", e)), Some(mask), Some(stored)) => {
                    e.get("kind").and_then(Value::as_i64) == Some(AEXPR_NOT_DISTINCT)
                        && cast(field(e, "lexpr"))
                        && field(e, "rexpr").and_then(placeholder) == Some(mask.as_str())
                        && result.and_then(placeholder) == Some(stored.as_str())
                }
                _ => false,
            }
    }

    pub(super) fn copy(&mut self, s: &Value, lvl: &Level) -> Checked {
        let to_file = !text(s, "filename").is_empty()
            || s.get("is_program").and_then(Value::as_bool) == Some(true);
        if to_file && !self.ctx.rules.allows(Capability::ServerFiles) {
            return Err(not_allowed(
                "COPY to or from a server file or program",
                Why::Plain,
            ));
        }
        if let Some(q) = field(s, "query") {
            return match kind(q) {
                Some(("SelectStmt", b)) => self.select(b, lvl),
                _ => Err(policy("COPY of anything but a query or a table")),
            };
        }
        let rv = field(s, "relation").ok_or_else(|| differs("COPY without a table"))?;
        if s.get("is_from").and_then(Value::as_bool) != Some(true) {
            return self.range_var(rv, lvl);
        }
        let target = self.target(rv)?;
        let cols = names(field(s, "attlist"));
        self.written(target.as_ref(), &cols)?;
        let mut inner = Level::child(lvl);
        inner.target = target;
        match field(s, "where_clause") {
            Some(w) => self.walk(w, &inner),
            None => Ok(()),
        }
    }
}

/// `NullTestType::IsNull` and `AExprKind::AexprNotDistinct` in pg_query's protobuf.
const NULL_TEST_IS_NULL: i64 = 1;
const AEXPR_NOT_DISTINCT: i64 = 5;

fn is_null_const(v: &Value) -> bool {
    matches!(kind(v), Some(("AConst", c)) if c.get("isnull").and_then(Value::as_bool) == Some(true))
}

/// NULL or DEFAULT as a new row's value: it reveals nothing and overwrites nothing.
fn is_null(v: &Value) -> bool {
    is_null_const(v) || matches!(kind(v), Some(("SetToDefault", _)))
}

/// The name of a one-part column reference (the form placeholders take).
fn placeholder(v: &Value) -> Option<&str> {
    let Some(("ColumnRef", cr)) = kind(v) else {
        return None;
    };
    match list(field(cr, "fields")) {
        [f] => match kind(f) {
            Some(("String", s)) => s.get("sval").and_then(Value::as_str),
            _ => None,
        },
        _ => None,
    }
}

fn could_reach_target(x: &String, lvl: Option<&Level>) -> bool {
    let mut cur = lvl;
    while let Some(l) = cur {
        if let Some(t) = &l.target {
            if t.protected.contains(x) || t.names.contains(x) {
                return true;
            }
        }
        cur = l.parent;
    }
    false
}
