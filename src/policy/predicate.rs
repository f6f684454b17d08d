//! Row predicates a policy writes by hand (`roles.*.rows.where`): SQL expressions over one
//! table's columns, validated once at load with PostgreSQL's own parser (libpg_query) against an
//! allowlist of node kinds, functions, operators and types.
//!
//! A predicate is evaluated inside the role's stand-in for the table, on every statement, so it
//! must not be able to read anything else or change anything: no sub-queries, no aggregates or
//! window functions, no parameters, no user-defined or volatile functions, no casts to types
//! outside a fixed list (a cast to a user type runs its input function). Column references are
//! plain column names; the rendering qualifies each with the stand-in's row alias, so a name
//! the table lacks fails at PostgreSQL instead of binding to a column of the client's query.

use std::ops::ControlFlow;

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{a_const, AExpr, AExprKind, FuncCall, Node, TypeCast};
use sqlparser::ast::{Expr, Ident, VisitMut, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// Longest predicate text accepted: a predicate is a filter, not a program.
const MAX_LEN: usize = 4096;

/// Functions a predicate may call: stable or immutable built-ins that read nothing but their
/// arguments (and the clock).
const FUNCTIONS: &[&str] = &[
    "now",
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "btrim",
    "ltrim",
    "rtrim",
    "trim",
    "left",
    "right",
    "substr",
    "substring",
    "strpos",
    "position",
    "starts_with",
    "replace",
    "split_part",
    "concat",
    "concat_ws",
    "lpad",
    "rpad",
    "abs",
    "round",
    "trunc",
    "floor",
    "ceil",
    "ceiling",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "make_interval",
    "make_date",
    "to_char",
    "array_length",
    "cardinality",
];

/// Types a predicate may cast to (PostgreSQL's internal names, as its grammar gives them).
const TYPES: &[&str] = &[
    "text",
    "varchar",
    "bpchar",
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
    "bool",
    "date",
    "timestamp",
    "timestamptz",
    "interval",
    "time",
    "timetz",
    "uuid",
];

/// Operators (also LIKE `~~`, ILIKE `~~*`, their negations, and regular expressions).
const OPERATORS: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||", "~~", "~~*", "!~~",
    "!~~*", "~", "~*", "!~", "!~*",
];

/// The alias a predicate's column references are qualified with until rendered for a table.
const ROW: &str = "pgvakt_predicate_row";

/// A validated predicate: its expression with every column reference qualified by a marker
/// alias, and the columns it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    expr: Expr,
    pub columns: Vec<String>,
}

impl Predicate {
    /// The predicate over the row of the table aliased `alias` (a name, not quoted).
    pub fn render(&self, alias: &str) -> String {
        let mut e = self.expr.clone();
        let _ = e.visit(&mut Requalify { to: alias });
        e.to_string()
    }
}

struct Requalify<'a> {
    to: &'a str,
}

impl VisitorMut for Requalify<'_> {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = e {
            if parts.len() == 2 && parts[0].value == ROW && parts[0].quote_style == Some('"') {
                parts[0] = Ident::with_quote('"', self.to);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Reads and validates a predicate; the error says what is not allowed.
pub fn compile(text: &str) -> Result<Predicate, String> {
    if text.trim().is_empty() {
        return Err("the predicate is empty".into());
    }
    if text.len() > MAX_LEN {
        return Err(format!("the predicate is longer than {MAX_LEN} bytes"));
    }
    // What the author wrote, as PostgreSQL's scanner reads it, is one plain expression too.
    check_tokens(text)?;
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| format!("not valid SQL: {e}"))?;
    let mut expr = parser
        .parse_expr()
        .map_err(|e| format!("not a SQL expression: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err("must be a single SQL expression".into());
    }
    // PostgreSQL's reading of the text pgvakt will send is what is checked: the rendering.
    let rendered = expr.to_string();
    let columns = check_with_postgres(&rendered)?;
    let mut q = Qualify { bad: None };
    let _ = expr.visit(&mut q);
    if let Some(bad) = q.bad {
        return Err(bad);
    }
    let again = Parser::new(&dialect)
        .try_with_sql(&expr.to_string())
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("its rendering does not read back: {e}"))?;
    if again != expr {
        return Err("its rendering does not read back the same".into());
    }
    Ok(Predicate { expr, columns })
}

/// Qualifies plain column names with the marker alias.
struct Qualify {
    bad: Option<String>,
}

impl VisitorMut for Qualify {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        match e {
            Expr::Identifier(id) => {
                let name = if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_ascii_lowercase()
                };
                *e = Expr::CompoundIdentifier(vec![
                    Ident::with_quote('"', ROW),
                    Ident::with_quote('"', name),
                ]);
            }
            // A built-in by its pg_catalog name: a function of the same name in a schema on
            // the client's search_path cannot be picked instead for a better-matching type.
            Expr::Function(f) if f.name.0.len() == 1 => {
                let mut parts = vec![sqlparser::ast::ObjectNamePart::Identifier(Ident::new(
                    "pg_catalog",
                ))];
                // now() is the transaction's start: a client holding a transaction open would
                // be judged by an old clock. The rules read the statement's.
                let is_now = matches!(f.name.0.as_slice(), [sqlparser::ast::ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("now"));
                if is_now {
                    f.name = sqlparser::ast::ObjectName(vec![
                        sqlparser::ast::ObjectNamePart::Identifier(Ident::new(
                            "statement_timestamp",
                        )),
                    ]);
                }
                parts.extend(f.name.0.iter().cloned());
                f.name = sqlparser::ast::ObjectName(parts);
            }
            Expr::CompoundIdentifier(_) | Expr::QualifiedWildcard(..) | Expr::Wildcard(_) => {
                self.bad = Some("column references must be plain column names".into());
                return ControlFlow::Break(());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// PostgreSQL's parse of the predicate, walked against the allowlists; the columns it reads.
fn check_with_postgres(rendered: &str) -> Result<Vec<String>, String> {
    check_tokens(rendered)?;
    let sql = format!("SELECT 1 WHERE ({rendered})");
    let parsed = pg_query::parse(&sql, pg_query::ParserOptions::DEFAULT)
        .map_err(|e| format!("PostgreSQL's grammar rejects it: {e}"))?;
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return Err("must be a single SQL expression".into());
    };
    let Some(N::SelectStmt(s)) = stmt.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
        return Err("must be a single SQL expression".into());
    };
    let plain = s.from_clause.is_empty()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.with_clause.is_none()
        && s.sort_clause.is_empty()
        && s.limit_count.is_none()
        && s.locking_clause.is_empty()
        && s.window_clause.is_empty()
        && s.target_list.len() == 1;
    let Some(w) = s.where_clause.as_deref().filter(|_| plain) else {
        return Err("must be a single SQL expression".into());
    };
    let mut columns = Vec::new();
    walk(w, &mut columns)?;
    columns.sort();
    columns.dedup();
    Ok(columns)
}

/// No statement separator, no comment, parentheses balanced: the text cannot end the
/// parenthesised expression it is put in.
fn check_tokens(text: &str) -> Result<(), String> {
    let scan = pg_query::scan(text).map_err(|e| format!("PostgreSQL cannot scan it: {e}"))?;
    let mut depth = 0i64;
    for t in &scan.tokens {
        let start = usize::try_from(t.start).unwrap_or(usize::MAX);
        let end = usize::try_from(t.end).unwrap_or(0);
        let token = text.get(start..end).unwrap_or_default();
        match token {
            "(" => depth += 1,
            ")" => depth -= 1,
            ";" => return Err("must not contain ';'".into()),
            _ if token.starts_with("--") || token.starts_with("/*") => {
                return Err("must not contain comments".into())
            }
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    Ok(())
}

fn names(list: &[Node]) -> Vec<&str> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect()
}

/// `[name]` or `[pg_catalog, name]` from the allowlist.
fn builtin<'a>(list: &'a [Node], allowed: &[&str]) -> Option<&'a str> {
    let n = names(list);
    if n.len() != list.len() {
        return None;
    }
    match n.as_slice() {
        [name] | ["pg_catalog", name] if allowed.contains(name) => Some(name),
        _ => None,
    }
}

fn walk_all(nodes: &[Node], columns: &mut Vec<String>) -> Result<(), String> {
    nodes.iter().try_for_each(|n| walk(n, columns))
}

fn walk_opt(node: Option<&Node>, columns: &mut Vec<String>) -> Result<(), String> {
    node.map_or(Ok(()), |n| walk(n, columns))
}

fn walk(node: &Node, columns: &mut Vec<String>) -> Result<(), String> {
    let Some(n) = &node.node else {
        return Err("an empty expression node".into());
    };
    match n {
        N::ColumnRef(c) => match names(&c.fields).as_slice() {
            [col] if c.fields.len() == 1 => {
                columns.push((*col).to_owned());
                Ok(())
            }
            _ => Err("column references must be plain column names".into()),
        },
        N::AConst(c) => match &c.val {
            Some(a_const::Val::Bsval(_)) => Err("bit-string constants are not allowed".into()),
            _ => Ok(()),
        },
        N::AExpr(e) => operator(e, columns),
        N::List(l) => walk_all(&l.items, columns),
        N::BoolExpr(b) => walk_all(&b.args, columns),
        N::NullTest(t) => walk_opt(t.arg.as_deref(), columns),
        N::BooleanTest(t) => walk_opt(t.arg.as_deref(), columns),
        N::CaseExpr(c) => {
            walk_opt(c.arg.as_deref(), columns)?;
            walk_all(&c.args, columns)?;
            walk_opt(c.defresult.as_deref(), columns)
        }
        N::CaseWhen(w) => {
            walk_opt(w.expr.as_deref(), columns)?;
            walk_opt(w.result.as_deref(), columns)
        }
        N::CoalesceExpr(c) => walk_all(&c.args, columns),
        N::MinMaxExpr(m) => walk_all(&m.args, columns),
        N::AArrayExpr(a) => walk_all(&a.elements, columns),
        N::SqlvalueFunction(_) => Ok(()),
        N::TypeCast(t) => cast(t, columns),
        N::FuncCall(f) => function_call(f, columns),
        N::SubLink(_) => Err("sub-queries are not allowed in a row predicate; declare consents and restrictions in the inventory instead".into()),
        N::ParamRef(_) => Err("parameters are not allowed in a row predicate".into()),
        other => Err(format!(
            "{} is not allowed in a row predicate",
            node_kind(other)
        )),
    }
}

/// An operator expression: named operators only from the allowlist, since a user-defined
/// operator runs arbitrary functions; the fixed forms (BETWEEN, IS DISTINCT FROM, NULLIF) have
/// no name to look up and are always allowed.
fn operator(e: &AExpr, columns: &mut Vec<String>) -> Result<(), String> {
    let kind = AExprKind::try_from(e.kind).unwrap_or(AExprKind::Undefined);
    let op_ok = match kind {
        AExprKind::AexprOp
        | AExprKind::AexprOpAny
        | AExprKind::AexprOpAll
        | AExprKind::AexprLike
        | AExprKind::AexprIlike
        | AExprKind::AexprIn => builtin(&e.name, OPERATORS).is_some(),
        AExprKind::AexprDistinct
        | AExprKind::AexprNotDistinct
        | AExprKind::AexprNullif
        | AExprKind::AexprBetween
        | AExprKind::AexprNotBetween
        | AExprKind::AexprBetweenSym
        | AExprKind::AexprNotBetweenSym => true,
        _ => false,
    };
    if !op_ok {
        return Err(format!(
            "operator {} is not allowed in a row predicate",
            names(&e.name).join(".")
        ));
    }
    walk_opt(e.lexpr.as_deref(), columns)?;
    walk_opt(e.rexpr.as_deref(), columns)
}

/// A cast, to a listed type only: a cast to a user type runs that type's input function.
fn cast(t: &TypeCast, columns: &mut Vec<String>) -> Result<(), String> {
    let ty = t.type_name.as_ref().ok_or("a cast without a type")?;
    let plain = !ty.setof && !ty.pct_type && ty.array_bounds.is_empty();
    if !plain || builtin(&ty.names, TYPES).is_none() {
        return Err(format!(
            "casts to {} are not allowed in a row predicate (allowed: {})",
            names(&ty.names).join("."),
            TYPES.join(", ")
        ));
    }
    walk_all(&ty.typmods, columns)?;
    walk_opt(t.arg.as_deref(), columns)
}

/// A call of a listed function, plainly: aggregates and window functions would change what a
/// condition on one row means.
fn function_call(f: &FuncCall, columns: &mut Vec<String>) -> Result<(), String> {
    let plain = f.agg_order.is_empty()
        && f.agg_filter.is_none()
        && f.over.is_none()
        && !f.agg_within_group
        && !f.agg_star
        && !f.agg_distinct
        && !f.func_variadic;
    if !plain || builtin(&f.funcname, FUNCTIONS).is_none() {
        return Err(format!(
            "function {} is not allowed in a row predicate (allowed: {})",
            names(&f.funcname).join("."),
            FUNCTIONS.join(", ")
        ));
    }
    walk_all(&f.args, columns)
}

fn node_kind(n: &N) -> String {
    let d = format!("{n:?}");
    d.split('(').next().unwrap_or("this construct").to_owned()
}

#[cfg(test)]
mod tests {
    use super::compile;

    #[test]
    fn plain_filters_are_accepted_and_qualified() {
        let p = compile("country = 'NO' AND last_activity_at > now() - interval '1 year'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.columns, vec!["country", "last_activity_at"]);
        let r = p.render("pgvakt_row");
        assert!(r.contains("\"pgvakt_row\".\"country\""), "{r}");
        assert!(!r.contains("pgvakt_predicate_row"), "{r}");
        // The statement's clock, not the transaction's.
        assert!(r.contains("pg_catalog.statement_timestamp()"), "{r}");
        assert!(!r.contains("now"), "{r}");
        for ok in [
            "lower(city) LIKE 'os%'",
            "id % 2 = 0",
            "company_id IN (1, 2, 3)",
            "coalesce(country, 'NO') <> 'SE'",
            "CASE WHEN city IS NULL THEN false ELSE true END",
            "created_at::date >= DATE '2020-01-01'",
            "\"City\" IS NOT NULL",
        ] {
            compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn reads_writes_and_escapes_are_refused() {
        for (bad, why) in [
            ("id IN (SELECT contact_id FROM consents)", "sub-queries"),
            ("EXISTS (SELECT 1)", "sub-queries"),
            ("pg_sleep(1) IS NULL", "function pg_sleep"),
            ("public.f(id)", "function public.f"),
            ("random() < 0.5", "function random"),
            ("nextval('s') > 0", "function nextval"),
            ("count(*) > 0", "function count"),
            ("c.id = 1", "plain column names"),
            ("id = $1", "parameters"),
            ("id::regclass IS NULL", "casts to regclass"),
            ("id::public.mytype IS NULL", "casts to public.mytype"),
            ("true; DELETE FROM contacts", "';'"),
            ("true) OR (true", "unbalanced"),
            ("id = 1 -- x", "comments"),
            ("id OPERATOR(public.=) 1", "operator"),
            ("ROW(id) IS NULL", "not allowed"),
            ("", "empty"),
        ] {
            let e = compile(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
