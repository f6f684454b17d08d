//! Constants a client compares a column with, as they may be repeated inside a row-ruled
//! stand-in (`row_pushdown`).
//!
//! A constant's value does not depend on any row, but whether it is computed does: under a
//! generic plan PostgreSQL does not fold parameters, and computes `$1 + 1` (or coerces `$1`
//! to a subscript's integer) for each row that reaches the condition. Next to the rules'
//! predicate that may be a hidden row, and an overflow there would tell that the row exists.
//! So only constants PostgreSQL folds while planning, or that cannot fail, qualify: literals,
//! a parameter on its own, and `+`/`-` between literals (written with pg_catalog's operators,
//! so a client's own operator never runs inside the stand-in) and an element of an
//! `ARRAY[...]` of literals at a literal index.
//!
//! A parameter with a whole-number literal (`$1 + 9`) or as the index into such an array
//! (`(ARRAY['a', 'b'])[$1]`) qualifies too, as [`Constant::gated`]: its condition goes into
//! the stand-in with a gate, `(constant) IS NOT NULL`, which references no column, so
//! PostgreSQL evaluates it once as the stand-in's one-time filter before reading any row. If
//! the constant fails, it fails there, whatever the table holds; if it succeeds, computing it
//! again for a row gives the same value and cannot fail. (A NULL constant compares as NULL, so
//! the gate drops nothing the condition would keep.) Casts, functions, sub-queries and
//! parameters computed with each other still do not qualify.

use sqlparser::ast::{AccessExpr, BinaryOperator, Expr, Subscript, UnaryOperator, Value};

use super::literals::Marker;

/// What PostgreSQL will take the constant to be before it meets the column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole-number literal, or a shape's marker of one: an integer type.
    Integer,
    /// A string literal, or a shape's marker of a literal that is not a whole number: typed by
    /// the column it is compared with (a decimal compares as a number, as the client's text
    /// does).
    Untyped,
    /// A parameter: typed by its first use, which is the stand-in's condition when the
    /// client compares it with the column.
    Parameter,
    /// Anything computed from constants: its type is the expression's.
    Computed,
}

/// A constant as it goes into the stand-in.
#[derive(Clone, Debug)]
pub struct Constant {
    pub text: String,
    pub kind: Kind,
    /// The parameter's number, for a parameter or a constant computed from one.
    pub parameter: Option<usize>,
    /// Computed from a parameter: repeated only behind a one-time gate (see the module).
    pub gated: bool,
    /// The type it has, which the column must have too (a scalar sub-query's column): a
    /// conversion of the column's value could fail on a hidden row.
    pub same_type: Option<String>,
}

/// Deeper expressions are not worth the analysis.
const MAX_DEPTH: usize = 8;
const MAX_ELEMENTS: usize = 64;

/// The constant `e` as text for the stand-in, or None when `e` is not a plain constant.
pub fn constant(e: &Expr) -> Option<Constant> {
    within(e, 0)
}

fn within(e: &Expr, depth: usize) -> Option<Constant> {
    if depth > MAX_DEPTH {
        return None;
    }
    match e {
        Expr::Value(v) => value(&v.value),
        Expr::Nested(inner) => {
            let c = within(inner, depth + 1)?;
            Some(Constant {
                text: format!("({})", c.text),
                ..c
            })
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => {
            let c = within(expr, depth + 1)?;
            (c.kind == Kind::Integer).then(|| Constant {
                text: format!("(OPERATOR(pg_catalog.-) {})", c.text),
                kind: Kind::Computed,
                parameter: None,
                gated: false,
                same_type: None,
            })
        }
        Expr::BinaryOp { left, op, right } => {
            let sign = match op {
                BinaryOperator::Plus => "+",
                BinaryOperator::Minus => "-",
                _ => return None,
            };
            let text = |l: &Constant, r: &Constant| {
                format!("({} OPERATOR(pg_catalog.{sign}) {})", l.text, r.text)
            };
            if let Some(c) = with_parameter(left, right, depth, text) {
                return Some(c);
            }
            let (l, r) = (folded(left, depth)?, folded(right, depth)?);
            // `'1' + '2'` would leave PostgreSQL to guess both types.
            let typed = |c: &Constant| matches!(c.kind, Kind::Integer | Kind::Computed);
            (typed(&l) || typed(&r)).then(|| Constant {
                text: text(&l, &r),
                kind: Kind::Computed,
                parameter: None,
                gated: l.gated || r.gated,
                same_type: None,
            })
        }
        Expr::CompoundFieldAccess { root, access_chain } => element(root, access_chain, depth),
        _ => None,
    }
}

/// A part of a computed constant: anything but a parameter, which PostgreSQL would compute
/// with for each row under a generic plan, or a constant computed from one.
fn folded(e: &Expr, depth: usize) -> Option<Constant> {
    within(e, depth + 1).filter(|c| c.kind != Kind::Parameter && !c.gated)
}

/// `$n + 9`, `9 + $n`, `$n - 9`: a parameter with a whole-number literal, whose type
/// PostgreSQL takes from the literal as it does in the client's text.
fn with_parameter(
    left: &Expr,
    right: &Expr,
    depth: usize,
    text: impl Fn(&Constant, &Constant) -> String,
) -> Option<Constant> {
    let (l, r) = (within(left, depth + 1)?, within(right, depth + 1)?);
    let parameter = match (l.kind, r.kind) {
        (Kind::Parameter, Kind::Integer) => l.parameter,
        (Kind::Integer, Kind::Parameter) => r.parameter,
        _ => return None,
    };
    Some(Constant {
        text: text(&l, &r),
        kind: Kind::Computed,
        parameter: Some(parameter?),
        gated: true,
        same_type: None,
    })
}

/// `(ARRAY[c1, c2, ...])[i]`: an element of a constant array; out of range it is NULL.
fn element(root: &Expr, chain: &[AccessExpr], depth: usize) -> Option<Constant> {
    let [AccessExpr::Subscript(Subscript::Index { index })] = chain else {
        return None;
    };
    let array = match root {
        Expr::Nested(inner) => inner.as_ref(),
        other => other,
    };
    let Expr::Array(a) = array else {
        return None;
    };
    if !a.named || a.elem.is_empty() || a.elem.len() > MAX_ELEMENTS {
        return None;
    }
    let elements = a
        .elem
        .iter()
        .map(|e| folded(e, depth).map(|c| c.text))
        .collect::<Option<Vec<_>>>()?;
    // A parameter index is coerced to integer for each row under a generic plan: gated.
    let index = within(index, depth + 1).filter(|c| !c.gated)?;
    Some(Constant {
        text: format!("(ARRAY[{}])[{}]", elements.join(", "), index.text),
        kind: Kind::Computed,
        parameter: index.parameter,
        gated: index.kind == Kind::Parameter,
        same_type: None,
    })
}

/// A literal or parameter: a whole number or string as written, a parameter as written, and a
/// shape's literal marker as its copy marker (see `literals::fill`). Decimals, typed or
/// escaped strings are not copied.
fn value(v: &Value) -> Option<Constant> {
    let (text, kind) = match v {
        Value::Number(n, false)
            if !n.is_empty() && n.len() <= 18 && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (n.to_string(), Kind::Integer)
        }
        Value::SingleQuotedString(_) => (v.to_string(), Kind::Untyped),
        Value::Placeholder(p) => {
            let n: usize = p.strip_prefix('$')?.parse().ok()?;
            match Marker::of(n) {
                Some(m) if m.copy => return None,
                Some(m) if m.whole => (m.copy_text(), Kind::Integer),
                Some(m) => (m.copy_text(), Kind::Untyped),
                None if (1..=65_535).contains(&n) => (p.clone(), Kind::Parameter),
                None => return None,
            }
        }
        _ => return None,
    };
    let parameter = (kind == Kind::Parameter)
        .then(|| text.strip_prefix('$')?.parse().ok())
        .flatten();
    Some(Constant {
        text,
        kind,
        parameter,
        gated: false,
        same_type: None,
    })
}

/// The parameters (`$n`) a statement uses exactly once.
pub fn used_once<T: sqlparser::ast::Visit>(node: &T) -> std::collections::BTreeSet<usize> {
    let mut seen = std::collections::BTreeMap::<usize, usize>::new();
    let _ = sqlparser::ast::visit_expressions(node, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                    *seen.entry(n).or_default() += 1;
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    seen.into_iter()
        .filter(|(_, count)| *count == 1)
        .map(|(n, _)| n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> Option<(String, Kind)> {
        let e = crate::analysis::parse_expr(sql).ok()?;
        constant(&e).map(|c| (c.text, c.kind))
    }

    #[test]
    fn literals_parameters_and_markers() {
        assert_eq!(of("42"), Some(("42".into(), Kind::Integer)));
        assert_eq!(of("'Hansen'"), Some(("'Hansen'".into(), Kind::Untyped)));
        assert_eq!(of("$2"), Some(("$2".into(), Kind::Parameter)));
        assert_eq!(of("$9000003"), Some(("$8000003".into(), Kind::Untyped)));
        assert_eq!(of("$9500003"), Some(("$8500003".into(), Kind::Integer)));
        assert_eq!(of("$8500003"), None);
        assert_eq!(of("4.5"), None);
        assert_eq!(of("E'x'"), None);
        assert_eq!(of("$70000"), None);
    }

    #[test]
    fn computed_from_constants_with_catalog_operators() {
        assert_eq!(
            of("20 + 9"),
            Some(("(20 OPERATOR(pg_catalog.+) 9)".into(), Kind::Computed))
        );
        assert_eq!(
            of("(ARRAY['a', 'b'])[2]"),
            Some(("(ARRAY['a', 'b'])[2]".into(), Kind::Computed))
        );
        assert_eq!(of("(ARRAY['a', 'b'])[1:2]"), None);
    }

    #[test]
    fn a_parameter_with_a_literal_is_gated() {
        let gated = |sql: &str| {
            let e = crate::analysis::parse_expr(sql).ok()?;
            constant(&e).map(|c| (c.text, c.kind, c.parameter, c.gated))
        };
        assert_eq!(
            gated("$1 + 9"),
            Some((
                "($1 OPERATOR(pg_catalog.+) 9)".into(),
                Kind::Computed,
                Some(1),
                true
            ))
        );
        assert_eq!(
            gated("(ARRAY['a', 'b'])[$2]"),
            Some((
                "(ARRAY['a', 'b'])[$2]".into(),
                Kind::Computed,
                Some(2),
                true
            ))
        );
        assert_eq!(gated("20 - 9").map(|c| c.3), Some(false));
        // In a shape, whole numbers keep their class: `$1 + 9` is gated there too.
        assert_eq!(
            gated("$1 + $9500002"),
            Some((
                "($1 OPERATOR(pg_catalog.+) $8500002)".into(),
                Kind::Computed,
                Some(1),
                true
            ))
        );
        assert_eq!(gated("$1 + $9000002"), None);
        assert_eq!(gated("$3").map(|c| c.3), Some(false));
    }

    #[test]
    fn rows_functions_casts_and_subqueries_are_not_constants() {
        for sql in [
            "id",
            "c.id + 1",
            "now()",
            "$1::bigint",
            "(SELECT 1)",
            "(ARRAY[id])[1]",
            "1 * 2",
            // Parameters computed with each other, or inside what is computed further.
            "$1 + $2",
            "($1 + 1) + 1",
            "(ARRAY[$1, 5])[1]",
            "(ARRAY['a', 'b'])[$1 + 1]",
            "$1 * 2",
            "-$1",
        ] {
            assert_eq!(of(sql), None, "{sql}");
        }
    }
}
