//! SET and friends for restricted roles: the search_path is followed (analysis resolves names
//! with it), and settings that change how text is read, who runs it or what it can reach are
//! refused.

use sqlparser::ast::{Expr, ObjectName, Set};

use super::functions::is_protected_setting;
use super::statements::name_parts;
use super::{fold, Analysed, Ctx};
use crate::protocol::PgError;

/// A setting's name as PostgreSQL reads it: quoted parts keep their case, others fold.
pub fn setting_name(ctx: &Ctx, name: &ObjectName) -> Result<String, PgError> {
    Ok(name_parts(ctx, name)?.join(".").to_ascii_lowercase())
}

pub fn set_statement(set: &mut Set, ctx: &Ctx, out: &mut Analysed) -> Result<(), PgError> {
    let refuse =
        |what: &str| Err(ctx.refuse(format!("{what} is not allowed for role {}", ctx.role())));
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
            match name.as_str() {
                "search_path" => {
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
                    out.search_path_local =
                        matches!(scope, Some(sqlparser::ast::ContextModifier::Local));
                    out.path_events
                        .push(super::PathEvent::Set(path.clone(), out.search_path_local));
                    out.search_path = Some(path);
                    Ok(())
                }
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
