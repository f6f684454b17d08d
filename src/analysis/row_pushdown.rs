//! Conditions a client puts on a row-ruled table's plain columns, copied into its stand-in.
//!
//! A stand-in with row rules is fenced with `OFFSET 0` so that the client's own conditions
//! never run on hidden rows. The fence also keeps PostgreSQL from using an index for
//! `WHERE id = $1`: every lookup would scan all visible rows. So a top-level
//! `column = constant` condition of the SELECT that reads the stand-in is copied into it,
//! written with `OPERATOR(pg_catalog.=)` and only for column types whose pg_catalog equality
//! is leakproof: it raises no error and has no side effect whatever a row holds, so it may
//! run next to the rules' predicate, and the client's condition still applies outside.
//! Only columns the role reads as stored qualify (a condition on a masked column compares
//! masked values), and only constants: number and string literals and parameters.

use std::collections::HashMap;

use sqlparser::ast::{BinaryOperator, Expr, Select, TableFactor, Value};

use super::grouping::StandIn;
use super::literals::{COPY_BASE, MARKER_BASE};
use super::{fold, quote, Ctx};
use crate::policy::model::ColumnAction;

/// Column types whose equality operator in pg_catalog is leakproof (`int8eq`, `int48eq`,
/// `texteq`, `uuid_eq`, `date_eq`, ...).
const LEAKPROOF_EQ: &[&str] = &["bigint", "integer", "smallint", "text", "uuid", "date"];

const INTEGERS: &[&str] = &["bigint", "integer", "smallint"];

/// A constant as it goes into the stand-in.
struct Constant {
    text: String,
    /// A number literal (a whole number that fits a bigint).
    integer: bool,
}

/// (placeholder name, condition over the stand-in's row) for each condition to copy.
pub fn conditions(
    s: &Select,
    stand_ins: &HashMap<String, StandIn>,
    ctx: &Ctx,
) -> Vec<(String, String)> {
    let Some(selection) = &s.selection else {
        return Vec::new();
    };
    let mut factors = Vec::new();
    for twj in &s.from {
        factors.push(&twj.relation);
        factors.extend(twj.joins.iter().map(|j| &j.relation));
    }
    let single = factors.len() == 1;
    // (alias, placeholder) of the row-ruled stand-ins this SELECT reads.
    let ruled: Vec<(String, String)> = factors
        .iter()
        .filter_map(|tf| match tf {
            TableFactor::Table {
                name,
                alias: Some(a),
                ..
            } if name.0.len() == 1 => {
                let p = name.0[0].as_ident()?.value.clone();
                let s = stand_ins.get(&p)?;
                ctx.row_filter(&s.rel, super::row_rules::ROW_ALIAS)?;
                a.columns.is_empty().then(|| (fold(&a.name), p))
            }
            _ => None,
        })
        .collect();
    if ruled.is_empty() {
        return Vec::new();
    }
    let mut conjuncts = Vec::new();
    and_terms(selection, &mut conjuncts);
    let mut out = Vec::new();
    for c in conjuncts {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            continue;
        };
        let (column, value) = match (constant(right), constant(left)) {
            (Some(v), _) => (left.as_ref(), v),
            (None, Some(v)) => (right.as_ref(), v),
            _ => continue,
        };
        let (qualifier, name) = match column {
            Expr::Identifier(i) => (None, fold(i)),
            Expr::CompoundIdentifier(p) if p.len() == 2 => (Some(fold(&p[0])), fold(&p[1])),
            _ => continue,
        };
        let target = match qualifier {
            Some(q) => ruled.iter().find(|(a, _)| *a == q),
            None if single => ruled.first(),
            None => None,
        };
        let Some((_, placeholder)) = target else {
            continue;
        };
        let Some(s) = stand_ins.get(placeholder) else {
            continue;
        };
        let Some(ty) = s
            .rel
            .columns
            .iter()
            .find(|col| col.name == name)
            .map(|col| col.ty.sql_name.as_str())
        else {
            continue;
        };
        // A whole number compares with an integer column as an integer; with another type
        // PostgreSQL would pick an operator outside the leakproof list.
        let fits = LEAKPROOF_EQ.contains(&ty) && (!value.integer || INTEGERS.contains(&ty));
        let readable = fits
            && s.shown.contains(&name)
            && ctx.column(&s.rel, &name).action == ColumnAction::Allow;
        if readable {
            let value = value.text;
            let condition = format!(
                "{}.{} OPERATOR(pg_catalog.=) {value}",
                quote(super::row_rules::ROW_ALIAS),
                quote(&name)
            );
            out.push((placeholder.clone(), condition));
        }
    }
    out
}

fn and_terms<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            and_terms(left, out);
            and_terms(right, out);
        }
        Expr::Nested(inner) => and_terms(inner, out),
        _ => out.push(e),
    }
}

/// A constant's text as it goes into the stand-in: a whole-number or string literal as
/// written, a parameter as written, and a shape's literal marker as its copy marker (see
/// `literals::fill`); other constants (decimals, typed or escaped strings) are not copied.
fn constant(e: &Expr) -> Option<Constant> {
    let Expr::Value(v) = e else {
        return None;
    };
    let (text, integer) = match &v.value {
        Value::Number(n, false)
            if !n.is_empty() && n.len() <= 18 && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (n.to_string(), true)
        }
        Value::SingleQuotedString(_) => (v.value.to_string(), false),
        Value::Placeholder(p) => {
            let n: usize = p.strip_prefix('$')?.parse().ok()?;
            let text = match n.checked_sub(MARKER_BASE) {
                Some(i) => format!("${}", COPY_BASE + i),
                None if (1..=65_535).contains(&n) => p.clone(),
                None => return None,
            };
            (text, false)
        }
        _ => return None,
    };
    Some(Constant { text, integer })
}
