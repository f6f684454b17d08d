//! PostgreSQL's own parser as the authority on what a restricted role's statement does.
//!
//! # Why this exists
//!
//! pgvakt analyses and rewrites statements with sqlparser, then forwards the rendering. A
//! rendering is only safe if PostgreSQL reads it as sqlparser did: `SELECT 1 </* 2, 'x */ ...`
//! is an operator and a string to sqlparser and a comment and code to PostgreSQL. Comparing
//! sqlparser with itself (render, re-parse) cannot see that. So every text forwarded for a
//! restricted role passes this gate, built on libpg_query (the `pg_query` crate: PostgreSQL's
//! own scanner and grammar compiled as a library), before anything reaches the server.
//!
//! # What the gate checks
//!
//! 1. **Same tokens** ([`tokens::agree`]): PostgreSQL's scanner and sqlparser's tokenizer cut
//!    the text into tokens with the same byte boundaries and agree on which are strings; the
//!    text holds no comment. Two readers that agree on every token boundary cannot disagree
//!    on where a string, identifier, comment or statement begins or ends.
//! 2. **The tree on its own terms** ([`tree::Gate`]): PostgreSQL's parse tree of the text is
//!    walked completely (through its serde form, so no field of any node type is skipped), with
//!    allowlists rather than denylists:
//!    - statements: only SELECT, INSERT, UPDATE, DELETE, COPY (STDIN/STDOUT), EXPLAIN without
//!      VERBOSE, PREPARE/EXECUTE/DEALLOCATE, cursors, transaction control, SET/SHOW of
//!      unprotected settings, DISCARD, LISTEN/NOTIFY with the capability;
//!    - relations: a WITH query visible at that point under PostgreSQL's scoping rules, a
//!      masked stand-in the analysis put there (each exactly once), a catalog relation on the
//!      allowlist, or a schema-qualified relation the role may read as stored. A protected
//!      table appears only as the table an INSERT/UPDATE/DELETE/COPY FROM writes;
//!    - functions and operators: built-ins on the allowlist ([`allow`]), wherever they appear
//!      (select list, FROM, LATERAL, ROWS FROM, arguments, RETURNING, ON CONFLICT, ORDER BY,
//!      FILTER, window, sub-queries);
//!    - column references where a written table with protected columns is in scope, bound as
//!      PostgreSQL binds them: a protected column or a whole-row reference (`t`, `t.*`, `*` in
//!      RETURNING) of the written table is refused in every clause;
//!    - written columns: each is allowed by the role's write rules, or its value is NULL,
//!      DEFAULT (new rows only) or the write guard the analysis made for that very column
//!      (`analysis::write_guard`), in exactly its shape, with its placeholders. The guard's
//!      parts that touch the stored value (its mask, the column itself, the failure) are
//!      placeholders put in place after this check, like masked stand-ins; the client's value
//!      stays in the text and is walked like any expression.
//!
//! Because masked values only exist inside stand-ins and a protected table can otherwise
//! appear only as a write target whose stored columns are checked, a statement that passes
//! cannot read a protected value as stored, whatever sqlparser thought it meant. A
//! disagreement between the two readings is refused (42501) and counted as an anomaly.
//!
//! # Which grammar
//!
//! `pg_query` 18 carries PostgreSQL 18's scanner and grammar; pgvakt runs in front of
//! PostgreSQL 15 and later. Between 15 and 18 the grammar grew (new syntax, new keywords) but
//! did not change the meaning of text both versions accept, with one lexical exception that is
//! refused here: numeric literals in non-decimal or underscore forms (`0x1F`, `1_000`), which
//! PostgreSQL 16+ reads as one number. Syntax only the newer grammar knows cannot pass the
//! gate unnoticed: it is either refused by the allowlists or rejected by the older server.
//! A newer keyword that the older server takes for an identifier makes the newer grammar
//! stricter, never looser. The gate checks the exact text sent, so server settings that change
//! lexing are pinned by the session checks (standard_conforming_strings must stay on).

mod allow;
mod fields;
mod tokens;
mod tree;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;

use super::Ctx;
use crate::analysis::{Reason, Refusal};

pub use allow::{function as allowed_function, is_statistics_relation, Reads};

/// Statements refused because PostgreSQL's parser read them differently from the analysis;
/// exported by the metrics module as `pgvakt_parser_disagreements_total`.
pub static DISAGREEMENTS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The detail of a refusal caused by a disagreement: the audit trail records such refusals
/// as anomalies too.
pub const DISAGREEMENT: &str = "parser disagreement";

/// Why the gate refuses.
#[derive(Debug)]
pub enum Finding {
    /// The statement does something the role may not do.
    Policy(Reason),
    /// PostgreSQL reads the text differently from the analysis.
    Disagreement(String),
}

impl Finding {
    fn into_refusal(self, ctx: &Ctx) -> Refusal {
        match self {
            Finding::Policy(reason) => ctx.refusal(reason),
            Finding::Disagreement(what) => {
                DISAGREEMENTS.inc();
                tracing::warn!(reason = %what, "parser disagreement: statement refused");
                ctx.refusal(Reason::Disagreement { what })
            }
        }
    }
}

/// What the analysis put in the rendering as placeholder names, to be replaced after the check.
#[derive(Debug, Default)]
pub struct Placeholders {
    /// Masked stand-ins for protected tables: name → the columns each shows.
    pub relations: HashMap<String, Vec<String>>,
    /// Masked references to protected columns of a written table.
    pub expressions: HashSet<String>,
    /// Write guards (`analysis::write_guard`) by the placeholder of their failure.
    pub guards: HashMap<String, GuardPlaces>,
}

/// The placeholders of one write guard, all of them also in `expressions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPlaces {
    /// The column the guarded value is written to.
    pub column: String,
    /// The role's masked value of the column, and the stored column (updates only).
    pub mask: Option<String>,
    pub stored: Option<String>,
    pub fail: String,
}

/// Check the text to forward, masked stand-ins still as placeholders.
pub fn verify(sql: &str, ctx: &Ctx, placeholders: &Placeholders) -> Result<(), Refusal> {
    check(sql, ctx, placeholders).map_err(|f| f.into_refusal(ctx))
}

fn check(sql: &str, ctx: &Ctx, placeholders: &Placeholders) -> Result<(), Finding> {
    tokens::agree(sql).map_err(Finding::Disagreement)?;
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
        .map_err(|e| Finding::Disagreement(format!("PostgreSQL's grammar rejects it: {e}")))?;
    let tree = fields::of(&parsed.protobuf)
        .map_err(|e| Finding::Disagreement(format!("its parse tree: {e}")))?;
    tree::Gate::new(ctx, placeholders).parse_result(&tree)
}

/// Why a statement's operator chains are too long to analyse safely (refused with 54001), or
/// None. Checked before anything parses the text, so such a statement costs one scan.
pub fn too_complex(sql: &str) -> Option<Reason> {
    let longest = tokens::longest_chain(sql)?;
    (longest > tokens::MAX_CHAIN).then(|| Reason::TooComplex {
        what: format!(
            "an expression of {longest} tokens without a comma or parenthesis (at most {})",
            tokens::MAX_CHAIN
        ),
        hint: Some("Split the expression, or pass long lists as an array parameter."),
    })
}

/// Whether a text calls a function that is not on the allowlist (by PostgreSQL's scanner: a
/// name followed by a parenthesis), or cannot be scanned. Such a function may read personal data
/// whatever relation names the text shows (`query_to_xml('... con' || 'tacts')`).
pub fn calls_unlisted_function(sql: &str) -> bool {
    use pg_query::protobuf::Token;
    let Ok(tokens) = tokens::pg_tokens(sql) else {
        return true;
    };
    tokens.windows(2).any(|w| {
        w[0].token == Token::Ident as i32
            && w[1].token == i32::from(b'(')
            && sql
                .get(w[0].start as usize..w[0].end as usize)
                .map(|name| {
                    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                        Some(quoted) => quoted.replace("\"\"", "\""),
                        None => name.to_ascii_lowercase(),
                    };
                    allow::function(&name).is_none()
                })
                .unwrap_or(true)
    })
}

/// Whether PostgreSQL's scanner and sqlparser cut `sql` into the same tokens (no comments).
pub fn tokens_agree(sql: &str) -> Result<(), String> {
    tokens::agree(sql).map(|_| ())
}

/// Whether `filled` is `shape` with its constant markers replaced by exactly those literals,
/// as PostgreSQL's scanner reads both texts.
pub fn same_but_literals(shape: &str, filled: &str, literals: &[String]) -> bool {
    tokens::same_but_literals(shape, filled, literals).is_ok()
}
