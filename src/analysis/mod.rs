//! Statement analysis for restricted roles: parse, check, rewrite, render.
//!
//! The rule "as if the table held masked values" is implemented literally: every protected
//! table a statement reads is replaced by a derived table whose columns are the masked values
//! (blocked columns left out), so every clause — projections, filters, joins, grouping,
//! ordering, window and aggregate arguments, whole-row references, sub-queries, CTEs — sees
//! only what the role may see, and PostgreSQL itself keeps types right. Every other relation is
//! schema-qualified. What is forwarded is the rendering of the rewritten AST, never the
//! client's text, so a parser differential turns into an error rather than a leak.

pub mod authority;
mod functions;
mod grouping;
mod inheritance;
mod lexer;
pub mod literals;
mod names;
mod normalize;
mod plain;
mod relations;
mod result_origins;
pub mod session_names;
mod settings;
mod stand_in;
mod statements;
pub mod subjects;
mod view_writes;
mod write_guard;
mod write_targets;
mod writes;

pub use result_origins::ResultOrigin;
pub use write_guard::refusal_in as write_refusal_in;

use std::collections::HashSet;
use std::sync::Arc;

use sqlparser::ast::{Ident, Query, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::catalog::{Catalog, Relation};
use crate::policy::model::{ColumnAction, RoleRules, StatementClass};
use crate::protocol::PgError;

pub use statements::{analyse, default_search_path};

/// Statements up to this long are analysed on the caller's stack: their ASTs are at most a few
/// thousand levels deep.
const SHORT: usize = 4096;
/// Stack reserved per byte of a longer statement (reserved, not committed: pages are touched
/// only as deep as the recursion goes).
const STACK_PER_BYTE: usize = 512;
/// Longer statements are not analysed for restricted roles: refused, never forwarded.
pub const MAX_ANALYSED_BYTES: usize = 1 << 20;
/// The most stack a long statement's analysis reserves (chains are at most
/// `authority::MAX_CHAIN` tokens deep, so far less is touched).
const STACK_MAX: usize = 256 << 20;

/// [`analyse`], with the stack a statement of this length can need: parsing, rewriting,
/// rendering and dropping an AST recurse as deep as an operator chain is long (`1+1+...`).
pub fn analyse_on_a_fitting_stack(sql: &str, ctx: &Ctx) -> Outcome {
    if sql.len() <= SHORT {
        return analyse(sql, ctx);
    }
    if sql.len() > MAX_ANALYSED_BYTES {
        return Outcome::Refuse(ctx.refuse(format!(
            "statements longer than {} bytes cannot be analysed for role {}",
            MAX_ANALYSED_BYTES,
            ctx.role()
        )));
    }
    if let Some(e) = authority::too_complex(sql) {
        return Outcome::Refuse(e);
    }
    // A long analysis must not hold a runtime worker other sessions are waiting for.
    let run = || on_a_fitting_stack(sql.len(), || analyse(sql, ctx));
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
        _ => run(),
    }
}

/// Run `f`, which parses a text of `len` bytes, on a stack deep enough for its AST.
pub(crate) fn on_a_fitting_stack<R>(len: usize, f: impl FnOnce() -> R) -> R {
    if len <= SHORT {
        return f();
    }
    stacker::grow(((1 << 20) + len * STACK_PER_BYTE).min(STACK_MAX), f)
}

/// (fingerprint, text with literals replaced) of any statement text, for audit records.
pub fn normalize_text(sql: &str) -> (String, String) {
    normalize::normalize(sql)
}

/// The first keyword of the text, lower-cased.
pub fn first_word(sql: &str) -> Option<String> {
    lexer::first_word(sql)
}

/// Whether the text holds constructs the parser reads differently from PostgreSQL.
pub fn is_unfaithful(sql: &str) -> bool {
    lexer::unfaithful(sql).is_some()
}

/// What a restricted role's statement text becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward this text (the rendering of the analysed, rewritten statements).
    Forward(Arc<Analysed>),
    /// Refuse with this error.
    Refuse(PgError),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysed {
    pub sql: String,
    pub classes: Vec<StatementClass>,
    /// `schema.table` of protected tables read (their masks applied).
    pub protected_reads: Vec<String>,
    /// New search_path set by the statements, if any.
    pub search_path: Option<Vec<String>>,
    /// It was set with SET LOCAL: it lasts until the transaction ends.
    pub search_path_local: bool,
    /// What the statements do to search_path, in order: settings and savepoints.
    pub path_events: Vec<PathEvent>,
    /// The statements changed the schema: the catalog should be refreshed.
    pub ddl: bool,
    /// Personal-data columns the statements read, with the role's action on each.
    pub columns: Vec<ColumnUse>,
    /// Personal-data columns the statements write (INSERT/UPDATE/COPY FROM targets).
    pub written: Vec<ColumnUse>,
    /// The client's text, for the audit record's normalised form (computed when first needed).
    pub original: String,
    /// Command of the first statement, e.g. `SELECT`.
    pub command: String,
    /// Trailing output columns added for the audit trail (subject keys), which the session
    /// strips before the client sees the result.
    pub hidden: usize,
    /// What each hidden column holds.
    pub hidden_keys: Vec<subjects::HiddenKey>,
    /// The hidden columns are the whole result (a write without RETURNING): the session drops
    /// its RowDescription and rows.
    pub hidden_whole: bool,
    /// Result columns whose origin (table OID, column number) the client gets from pgvakt:
    /// PostgreSQL reports none for a masked column of the rewritten statement.
    pub origins: Vec<ResultOrigin>,
    hide_subjects: bool,
    /// The text holds one statement, so its result can be told apart.
    single: bool,
    /// The statement just analysed writes its target without its children: the keyword
    /// before the target and the target's rendering, where ONLY is written back.
    only_write: Option<(&'static str, String)>,
    /// (placeholder, SQL) of masked stand-ins, put in place after rendering.
    stand_ins: Vec<(String, Arc<str>)>,
    /// (placeholder name, columns its stand-in shows), for PostgreSQL's parser's check.
    stand_in_columns: Vec<(String, Vec<String>)>,
    /// Placeholder names of masked column references of a written table.
    mask_placeholders: Vec<String>,
    /// The placeholders of each write guard.
    guard_places: Vec<authority::GuardPlaces>,
    normalized: std::sync::OnceLock<(String, String)>,
}

/// A statement that changes search_path or its savepoint history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEvent {
    /// SET (LOCAL) search_path, RESET, DISCARD.
    Set(Vec<String>, bool),
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// BEGIN / START TRANSACTION (and the new block of `AND CHAIN`).
    Begin,
    /// COMMIT / END (a failed block's COMMIT rolls back).
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
}

/// What a role does with a column it reads or writes, for `explain` and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UseAction {
    Allowed,
    Masked,
    Blocked,
}

impl UseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            UseAction::Allowed => "allowed",
            UseAction::Masked => "masked",
            UseAction::Blocked => "blocked",
        }
    }
}

/// One column of a base table a statement uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnUse {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub category: String,
    pub action: UseAction,
    /// The policy rule that decided the action (with its file and line).
    pub rule: String,
}

impl Analysed {
    /// True when any column the statements read is masked for the role.
    pub fn masks_anything(&self) -> bool {
        self.columns.iter().any(|c| c.action == UseAction::Masked)
    }

    /// True when the statements read or write personal data (audit-relevant).
    pub fn touches_personal_data(&self) -> bool {
        !self.columns.is_empty() || !self.written.is_empty()
    }

    /// (fingerprint, text) of the client's statement with every literal replaced by `?`, for
    /// audit records: they must never hold values.
    pub fn normalized(&self) -> &(String, String) {
        self.normalized
            .get_or_init(|| normalize::normalize(&self.original))
    }

    fn take_stand_ins(
        &mut self,
        from: &mut Vec<(String, Arc<str>)>,
        columns: &mut Vec<(String, Vec<String>)>,
    ) {
        self.stand_ins.append(from);
        self.stand_in_columns.append(columns);
    }

    /// Masked column references of a written table, put in place like stand-ins.
    fn take_mask_stand_ins(&mut self, from: &mut Vec<(String, Arc<str>)>) {
        for (p, _) in from.iter() {
            self.mask_placeholders.push(p.trim_matches('"').to_owned());
        }
        self.stand_ins.append(from);
    }

    /// Check the rendering (stand-ins still as placeholders) with PostgreSQL's parser.
    fn verify_with_postgres(&self, sql: &str, ctx: &Ctx) -> Result<(), PgError> {
        let placeholders = authority::Placeholders {
            relations: self.stand_in_columns.iter().cloned().collect(),
            expressions: self.mask_placeholders.iter().cloned().collect(),
            guards: self
                .guard_places
                .iter()
                .map(|g| (g.fail.clone(), g.clone()))
                .collect(),
        };
        authority::verify(sql, ctx, &placeholders)
    }

    fn put_stand_ins(&mut self, sql: String) -> Result<String, String> {
        let stand_ins = std::mem::take(&mut self.stand_ins);
        if stand_ins.is_empty() {
            return Ok(sql);
        }
        stand_in::put_in_place(&sql, &stand_ins)
    }

    fn add_use(list: &mut Vec<ColumnUse>, u: ColumnUse) {
        if !list.contains(&u) {
            list.push(u);
        }
    }
}

/// Everything analysis consults.
pub struct Ctx<'a> {
    pub catalog: &'a Catalog,
    pub rules: &'a dyn RoleRules,
    pub search_path: &'a [String],
    pub user: &'a str,
    pub policy_version: &'a str,
    /// Add hidden subject-key columns to plain SELECTs (when audit records are written).
    pub hidden_subjects: bool,
}

pub(crate) fn dialect() -> PostgreSqlDialect {
    PostgreSqlDialect {}
}

pub(crate) fn parse_query(sql: &str) -> Result<Box<Query>, ParserError> {
    Parser::new(&dialect()).try_with_sql(sql)?.parse_query()
}

pub(crate) fn parse_table_factor(sql: &str) -> Result<TableFactor, ParserError> {
    Parser::new(&dialect())
        .try_with_sql(sql)?
        .parse_table_factor()
}

pub(crate) fn parse_expr(sql: &str) -> Result<sqlparser::ast::Expr, ParserError> {
    Parser::new(&dialect()).try_with_sql(sql)?.parse_expr()
}

/// PostgreSQL folds unquoted identifiers to lower case (ASCII only).
pub(crate) fn fold(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

pub(crate) fn quote(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// A rule's origin as clients see it: `(crm.yaml:41:7)`, not the policy file's path on disk,
/// which tells an attacker about the host and nothing a security team needs.
pub fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')').map(|c| open + c) else {
            break;
        };
        let inner = &rest[open + 1..close];
        out.push_str(&rest[..=open]);
        let is_location = (inner.contains(".yaml:") || inner.contains(".yml:"))
            && inner.contains('/')
            && !inner.contains(' ');
        if is_location {
            out.push_str(inner.rsplit('/').next().unwrap_or(inner));
        } else {
            out.push_str(inner);
        }
        out.push(')');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    quote(name).to_string()
}

impl Ctx<'_> {
    pub fn role(&self) -> &str {
        self.rules.name()
    }

    pub fn refuse(&self, message: String) -> PgError {
        PgError::insufficient_privilege(format!("pgvakt: {}", without_paths(&message)))
            .with_detail(format!("policy {}", self.policy_version))
    }

    pub fn unsupported(&self, what: &str) -> PgError {
        PgError::insufficient_privilege(format!(
            "pgvakt: cannot analyse {what} for role {}, so it is refused",
            self.role()
        ))
        .with_detail(format!("policy {}", self.policy_version))
        .with_hint("pgvakt refuses what it cannot fully analyse for roles with restrictions.")
    }

    pub fn blocked(&self, schema: &str, table: &str, column: &str, rule: &str) -> PgError {
        PgError::insufficient_privilege(format!(
            "pgvakt: column {table}.{column} is blocked for role {} by rule {}",
            self.role(),
            without_paths(rule)
        ))
        .with_detail(format!(
            "table {schema}.{table}, policy {}",
            self.policy_version
        ))
    }

    pub fn resolve(
        &self,
        parts: &[String],
        name: &sqlparser::ast::ObjectName,
    ) -> Result<Arc<Relation>, PgError> {
        self.catalog
            .resolve(
                inheritance::without_marker(parts),
                self.search_path,
                self.user,
            )
            .cloned()
            .ok_or_else(|| {
                self.refuse(format!(
                    "relation {name} is not in pgvakt's catalog, so it cannot be checked for role {}",
                    self.role()
                ))
                .with_hint("Temporary and newly created relations are refused for restricted roles; the catalog refreshes after DDL.")
            })
    }

    /// The use record for a column of `rel`, or None for columns that are not personal data.
    pub fn column_use(&self, rel: &Relation, column: &str) -> Option<ColumnUse> {
        let d = self.column(rel, column);
        if d.category == crate::policy::inventory::NONE {
            return None;
        }
        Some(ColumnUse {
            schema: rel.schema.clone(),
            table: rel.name.clone(),
            column: column.to_owned(),
            category: d.category,
            action: match d.action {
                ColumnAction::Allow => UseAction::Allowed,
                ColumnAction::Mask(_) => UseAction::Masked,
                ColumnAction::Block => UseAction::Blocked,
            },
            rule: d.rule,
        })
    }

    fn decisions(&self, rel: &Relation) -> Vec<(usize, crate::policy::model::ColumnDecision)> {
        rel.columns
            .iter()
            .enumerate()
            .map(|(i, c)| (i, self.column(rel, &c.name)))
            .collect()
    }

    /// The role's decision on a column; sequences' columns are counters, never personal data.
    pub fn column(&self, rel: &Relation, column: &str) -> crate::policy::model::ColumnDecision {
        if rel.kind == crate::catalog::RelKind::Sequence {
            return crate::policy::model::ColumnDecision {
                action: ColumnAction::Allow,
                category: crate::policy::inventory::NONE.to_owned(),
                rule: "sequences hold no personal data".to_owned(),
            };
        }
        if functions::is_hidden_catalog_column(&rel.schema, &rel.name, column) {
            return crate::policy::model::ColumnDecision {
                action: ColumnAction::Block,
                category: crate::policy::inventory::NONE.to_owned(),
                rule: "pgvakt: the session's own statement texts are its rewritten forms"
                    .to_owned(),
            };
        }
        self.rules.column(&rel.schema, &rel.name, column)
    }

    pub fn is_protected(&self, rel: &Relation) -> bool {
        self.decisions(rel)
            .iter()
            .any(|(_, d)| d.action != ColumnAction::Allow)
    }

    /// The SELECT that stands in for a protected relation, or None when nothing is protected.
    /// Only the columns in `reach` are included (all when None): a statement cannot name the
    /// others, and a smaller stand-in is cheaper to analyse and to run.
    pub fn masked_relation_sql(
        &self,
        rel: &Relation,
        reach: Option<&HashSet<String>>,
    ) -> Result<Option<String>, PgError> {
        self.masked_relation_sql_with(rel, reach, false, false)
    }

    /// As [`Ctx::masked_relation_sql`]; with `blocked_as_null`, blocked columns are there as
    /// typed NULLs (inside an inlined view, which names them whatever the statement reads).
    /// With `always`, a relation with nothing protected gets one too (read with ONLY).
    pub fn masked_relation_sql_with(
        &self,
        rel: &Relation,
        reach: Option<&HashSet<String>>,
        blocked_as_null: bool,
        always: bool,
    ) -> Result<Option<String>, PgError> {
        let decisions = self.decisions(rel);
        if !always
            && decisions
                .iter()
                .all(|(_, d)| d.action == ColumnAction::Allow)
        {
            return Ok(None);
        }
        let mut cols = Vec::with_capacity(rel.columns.len());
        let mut visible = 0;
        for (i, d) in decisions {
            let c = &rel.columns[i];
            if d.action != ColumnAction::Block {
                visible += 1;
            }
            if reach.is_some_and(|r| !r.contains(&c.name)) {
                continue;
            }
            let q = quote(&c.name).to_string();
            match &d.action {
                ColumnAction::Allow => cols.push(q),
                ColumnAction::Mask(m) => {
                    let masked = m.render(&q, &c.ty).map_err(|e| {
                        self.refuse(format!(
                            "mask {} cannot be applied to {}.{} ({}): {e}",
                            m.name, rel.name, c.name, c.ty.sql_name
                        ))
                    })?;
                    cols.push(format!("{masked} AS {q}"));
                }
                ColumnAction::Block if blocked_as_null => {
                    cols.push(format!("CAST(NULL AS {}) AS {q}", c.ty.sql_name));
                }
                ColumnAction::Block => {}
            }
        }
        if visible == 0 {
            return Err(self.refuse(format!(
                "every column of {}.{} is blocked for role {}",
                rel.schema,
                rel.name,
                self.role()
            )));
        }
        if cols.is_empty() {
            // The statement names no column of it (e.g. count(*)): rows only.
            cols.push("NULL AS \"pgvakt_no_column\"".to_owned());
        }
        Ok(Some(format!(
            "SELECT {} FROM {}.{}",
            cols.join(", "),
            quote(&rel.schema),
            quote(&rel.name)
        )))
    }

    /// The first protected relation a view reads, directly or through other views.
    pub fn view_reads_protected(&self, view: &Relation) -> Option<String> {
        let mut seen = HashSet::new();
        let mut stack: Vec<u32> = view.reads.clone();
        while let Some(oid) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let Some(rel) = self.catalog.by_oid(oid) else {
                continue;
            };
            if self.is_protected(rel) {
                return Some(format!("{}.{}", rel.schema, rel.name));
            }
            stack.extend(rel.reads.iter().copied());
        }
        None
    }

    /// Functions: built-ins only, minus those that run SQL text, read files or expose other
    /// sessions; a name that also exists outside pg_catalog could resolve to user code.
    pub fn check_function(
        &self,
        parts: &[String],
        f: Option<&sqlparser::ast::Function>,
    ) -> Result<(), PgError> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [s, n] => (Some(s.as_str()), n.as_str()),
            _ => return Err(self.unsupported(&format!("function {}", parts.join(".")))),
        };
        if let Some(s) = schema {
            if s != "pg_catalog" {
                return Err(self.refuse(format!(
                    "function {s}.{name} is not a built-in function; user-defined functions are not allowed for role {}",
                    self.role()
                )));
            }
        } else if self.catalog.is_user_function(name) {
            return Err(self.refuse(format!(
                "function {name} is (or may resolve to) a user-defined function, which is not allowed for role {}",
                self.role()
            )));
        }
        if functions::is_denied_function(name) {
            return Err(self.refuse(format!(
                "function {name} is not allowed for role {}: it can read data past pgvakt's analysis",
                self.role()
            )));
        }
        if name == "set_config" && !f.is_some_and(relations::setting_allowed) {
            return Err(self.refuse(format!(
                "set_config of this setting is not allowed for role {}",
                self.role()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::without_paths;

    #[test]
    fn refusals_name_the_rule_but_not_the_policy_path() {
        assert_eq!(
            without_paths(
                "by rule roles.s.categories.financial (/etc/pgvakt/policies/crm.yaml:87:7); x (y)"
            ),
            "by rule roles.s.categories.financial (crm.yaml:87:7); x (y)"
        );
        assert_eq!(without_paths("no location (a b)"), "no location (a b)");
        assert_eq!(without_paths("unclosed (x"), "unclosed (x");
    }
}
