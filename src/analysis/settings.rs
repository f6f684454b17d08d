//! SET and friends for restricted roles: the search_path is followed (analysis resolves names
//! with it), and settings that change how text is read, who runs it or what it can reach are
//! refused.

use sqlparser::ast::{ContextModifier, Expr, ObjectName, Set, TableFactor};

use super::functions::is_protected_setting;
use super::statements::name_parts;
use super::{fold, Analysed, Ctx};
use crate::analysis::{Refusal, Why};

/// A setting's name as PostgreSQL reads it: quoted parts keep their case, others fold.
pub fn setting_name(ctx: &Ctx, name: &ObjectName) -> Result<String, Refusal> {
    Ok(name_parts(ctx, name)?.join(".").to_ascii_lowercase())
}

pub fn set_statement(set: &mut Set, ctx: &Ctx, out: &mut Analysed) -> Result<(), Refusal> {
    let refuse = |what: &str| Err(ctx.not_allowed(what, Why::Plain));
    match set {
        Set::SetRole { .. } => refuse("SET ROLE"),
        Set::SetSessionAuthorization(_) => refuse("SET SESSION AUTHORIZATION"),
        Set::SetNames { charset_name, .. } => {
            if fold(charset_name)
                .replace('-', "")
                .eq_ignore_ascii_case("utf8")
            {
                Ok(())
            } else {
                refuse("changing client_encoding")
            }
        }
        Set::SingleAssignment {
            variable,
            values,
            scope,
            ..
        } => {
            let name = setting_name(ctx, variable)?;
            single_assignment(&name, values, scope.as_ref(), ctx, out)
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            for v in variables.iter() {
                if is_protected_setting(&setting_name(ctx, v)?) {
                    return refuse(&format!("SET {v}"));
                }
            }
            Ok(())
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments.iter() {
                let n = setting_name(ctx, &a.name)?;
                if is_protected_setting(&n) {
                    return refuse(&format!("SET {n}"));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `SET name = values`, `name` folded as PostgreSQL reads it.
fn single_assignment(
    name: &str,
    values: &[Expr],
    scope: Option<&ContextModifier>,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    let refuse = |what: &str| Err(ctx.not_allowed(what, Why::Plain));
    match name {
        "search_path" => set_search_path(values, scope, ctx, out),
        "standard_conforming_strings" => {
            let v = values.first().map(|v| v.to_string().to_ascii_lowercase());
            match v.as_deref().map(|s| s.trim_matches('\'')) {
                Some("on") | Some("true") | Some("1") => Ok(()),
                _ => refuse("turning standard_conforming_strings off"),
            }
        }
        "client_encoding" => {
            let v = values.first().map(|v| {
                v.to_string()
                    .to_ascii_lowercase()
                    .replace(['\'', '-', '_'], "")
            });
            if v.as_deref() == Some("utf8") {
                Ok(())
            } else {
                refuse("changing client_encoding")
            }
        }
        n if is_protected_setting(n) => refuse(&format!("SET {n}")),
        _ => Ok(()),
    }
}

/// `SET [LOCAL] search_path`: the new path is followed, unless it puts pg_catalog after other
/// schemas (then a user's function could stand in for a built-in one).
fn set_search_path(
    values: &[Expr],
    scope: Option<&ContextModifier>,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<(), Refusal> {
    let refuse = |what: &str| Err(ctx.not_allowed(what, Why::Plain));
    let mut path = Vec::new();
    for v in values.iter() {
        let s = match v {
            Expr::Identifier(i) => fold(i),
            Expr::Value(v) => v.value.to_string().trim_matches('\'').to_owned(),
            _ => return refuse("this search_path value"),
        };
        path.push(s);
    }
    if path
        .iter()
        .position(|s| s == "pg_catalog")
        .is_some_and(|p| p > 0)
    {
        return refuse("a search_path that puts pg_catalog after other schemas");
    }
    out.search_path_local = matches!(scope, Some(ContextModifier::Local));
    out.path_events
        .push(super::PathEvent::Set(path.clone(), out.search_path_local));
    out.search_path = Some(path);
    Ok(())
}

/// `SELECT [pg_catalog.]set_config('search_path', '<path>', <local>)` alone in its text, as
/// pg_dump and other tools send it to make every name they use qualified: PostgreSQL evaluates
/// it exactly once, so the new path is known and followed like a SET. Any other use of
/// set_config on search_path stays refused (a call in a filter or over many rows could run any
/// number of times). Returns None when the statement is not of this form.
pub fn tracked_search_path(
    q: &sqlparser::ast::Query,
    ctx: &Ctx,
) -> Option<Result<(Vec<String>, bool), Refusal>> {
    let rendered = q.to_string();
    let rest = rendered.strip_prefix("SELECT ")?;
    let (qualified, rest) = match rest.strip_prefix("pg_catalog.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.strip_prefix("set_config('search_path', '")?;
    let (value, rest) = split_literal(rest)?;
    let local = match rest {
        ", false)" => false,
        ", true)" => true,
        _ => return None,
    };
    if !qualified && ctx.catalog.is_user_function("set_config") {
        return Some(Err(ctx.user_function(None, "set_config")));
    }
    let refuse = |what: &str| ctx.not_allowed(what, Why::Plain);
    let Some(path) = search_path_value(&value) else {
        return Some(Err(refuse("this search_path value")));
    };
    if path
        .iter()
        .position(|s| s == "pg_catalog")
        .is_some_and(|p| p > 0)
    {
        return Some(Err(refuse(
            "a search_path that puts pg_catalog after other schemas",
        )));
    }
    Some(Ok((path, local)))
}

/// The body of a single-quoted literal as sqlparser renders it (`''` for a quote), and the text
/// after its closing quote.
fn split_literal(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                chars.next();
                value.push('\'');
                continue;
            }
            return Some((value, &s[i + 1..]));
        }
        value.push(c);
    }
    None
}

/// A search_path value split into schema names as PostgreSQL's `SplitIdentifierString` does:
/// comma-separated, double-quoted names keep their case (`""` for a quote), others fold to lower
/// case. None for what PostgreSQL would refuse or truncate (names over 63 bytes), which is
/// refused rather than guessed.
pub fn search_path_value(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = value.trim_start_matches(is_pg_space);
    if rest.is_empty() {
        return Some(out);
    }
    loop {
        let name = if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        chars.next();
                        name.push('"');
                        continue;
                    }
                    break i + 1;
                }
                name.push(c);
            };
            rest = &quoted[end..];
            name
        } else {
            let end = rest
                .find(|c: char| c == ',' || is_pg_space(c))
                .unwrap_or(rest.len());
            let name = rest[..end].to_ascii_lowercase();
            rest = &rest[end..];
            name
        };
        if name.is_empty() || name.len() > 63 {
            return None;
        }
        out.push(name);
        rest = rest.trim_start_matches(is_pg_space);
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start_matches(is_pg_space),
            None if rest.is_empty() => return Some(out),
            None => return None,
        }
    }
}

fn is_pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\x0b')
}

/// `SELECT set_config(name, 'v', false) FROM pg_settings WHERE name = 's'` (pg_dump's way of
/// setting a parameter only where the server has it) becomes `set_config('s', ...)`: the same
/// call, with the setting named by a literal that the checks of set_config can read. Only this
/// exact shape is rewritten; anything else is checked as written.
pub fn pin_set_config_name(q: &mut sqlparser::ast::Query) {
    use sqlparser::ast::{
        BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr, Value,
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    let [from] = select.from.as_slice() else {
        return;
    };
    let TableFactor::Table {
        name,
        alias: None,
        args: None,
        ..
    } = &from.relation
    else {
        return;
    };
    let is_settings = matches!(
        name.to_string().to_ascii_lowercase().as_str(),
        "pg_settings" | "pg_catalog.pg_settings"
    );
    if !is_settings || !from.joins.is_empty() {
        return;
    }
    let is_name = |e: &Expr| matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("name"));
    let setting = match &select.selection {
        Some(Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        }) if is_name(left) => match right.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => s.clone(),
                _ => return,
            },
            _ => return,
        },
        _ => return,
    };
    for item in select.projection.iter_mut() {
        let (SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        }) = item
        else {
            continue;
        };
        if !f.name.to_string().eq_ignore_ascii_case("set_config") {
            continue;
        }
        let FunctionArguments::List(list) = &mut f.args else {
            continue;
        };
        if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = list.args.first_mut() {
            if is_name(first) {
                *first = Expr::value(Value::SingleQuotedString(setting.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::search_path_value;

    #[test]
    fn search_path_values_split_as_postgres_splits_them() {
        let v = |s: &str| search_path_value(s);
        assert_eq!(v(""), Some(vec![]));
        assert_eq!(v("  "), Some(vec![]));
        assert_eq!(v("public"), Some(vec!["public".to_owned()]));
        assert_eq!(
            v(" \"$user\", Public ,\"My\"\"S\""),
            Some(vec!["$user".into(), "public".into(), "My\"S".into()])
        );
        assert_eq!(v("a,,b"), None);
        assert_eq!(v("a,"), None);
        assert_eq!(v("\"\""), None);
        assert_eq!(v("\"open"), None);
        assert_eq!(v("a b"), None);
        assert_eq!(v(&"x".repeat(64)), None);
    }
}
