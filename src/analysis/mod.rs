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
mod ctx;
mod cursor_moves;
mod functions;
mod grouping;
mod inheritance;
mod lexer;
pub mod literals;
mod names;
mod normalize;
mod plain;
mod pushdown_constants;
mod pushdown_parameters;
mod pushdown_subquery;
mod recording;
mod refusal;
mod relations;
mod result_origins;
mod row_page;
mod row_pushdown;
pub use pushdown_parameters::unsafe_declared as unsafe_declared_parameter;
mod row_references;
mod row_rules;
mod row_writes;
pub mod session_names;
mod settings;
mod stand_in;
mod statements;
pub mod subjects;
mod view_writes;
mod write_guard;
mod write_statements;
mod write_targets;
mod writes;

pub use refusal::{Reason, Refusal, Why};
pub use result_origins::ResultOrigin;
pub use write_guard::refusal_in as write_refusal_in;

use std::sync::Arc;

use sqlparser::ast::{Ident, Query, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::catalog::Catalog;
use crate::policy::model::{RoleRules, StatementClass};

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
        return Outcome::Refuse(ctx.refusal(e));
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
    Refuse(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysed {
    pub sql: String,
    /// Parameters the statement uses exactly once: only these may be repeated in a row-ruled
    /// stand-in, where they would otherwise be typed by the copy instead of by the client's use.
    pub parameters_once: std::collections::BTreeSet<usize>,
    /// Parameters compared with a column inside a row-ruled stand-in: a Parse may leave their
    /// types to PostgreSQL or declare only `pushdown_parameters::SAFE_DECLARED_TYPES` for them.
    pub pushed_parameters: std::collections::BTreeSet<usize>,
    pub classes: Vec<StatementClass>,
    /// `schema.table` of protected tables read (their masks and row rules applied).
    pub protected_reads: Vec<String>,
    /// `schema.table` of the tables the statements write.
    pub written_tables: Vec<String>,
    /// New search_path set by the statements, if any.
    pub search_path: Option<Vec<String>>,
    /// It was set with SET LOCAL: it lasts until the transaction ends.
    pub search_path_local: bool,
    /// What the statements do to search_path, in order: settings and savepoints.
    pub path_events: Vec<PathEvent>,
    /// The statements changed the schema: the catalog should be refreshed.
    pub ddl: bool,
    /// Running the statements may change what is not a write to the analysis: a setting, an
    /// advisory lock, a sequence, or whatever a view the analysis did not inline does.
    pub changes_state: bool,
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
    /// The statements only read: no write, COPY, utility or schema change, no listed function
    /// with lasting effects and no view whose code was not analysed (a restricted role's text
    /// calls no user function either, so they change nothing upstream).
    pub fn reads_only(&self) -> bool {
        !self.ddl
            && !self.changes_state
            && self.written.is_empty()
            && self.written_tables.is_empty()
            && !self.classes.is_empty()
            && self.classes.iter().all(|c| *c == StatementClass::Read)
    }

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

    /// The placeholders of guarded writes into tables with row rules.
    fn take_row_guards(&mut self, mut g: row_writes::RowGuards) {
        self.take_mask_stand_ins(&mut g.expressions);
        self.take_stand_ins(&mut g.relations, &mut g.relation_columns);
    }

    /// Masked column references of a written table, put in place like stand-ins.
    fn take_mask_stand_ins(&mut self, from: &mut Vec<(String, Arc<str>)>) {
        for (p, _) in from.iter() {
            self.mask_placeholders.push(p.trim_matches('"').to_owned());
        }
        self.stand_ins.append(from);
    }

    /// Check the rendering (stand-ins still as placeholders) with PostgreSQL's parser.
    fn verify_with_postgres(&self, sql: &str, ctx: &Ctx) -> Result<(), Refusal> {
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
