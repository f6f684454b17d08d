//! Utility statements pg_dump sends that read no rows: LOCK TABLE in ACCESS SHARE mode and the
//! one followed form of set_config on search_path.

use super::{differs, field, kind, list, names, not_allowed, text, Checked, Gate, Value};
use crate::analysis::Why;

impl Gate<'_, '_> {
    /// LOCK TABLE in ACCESS SHARE mode (pg_dump's) of relations the analysis qualified.
    pub(super) fn lock(&self, s: &Value) -> Checked {
        const ACCESS_SHARE: i64 = 1;
        if field(s, "mode").and_then(Value::as_i64) != Some(ACCESS_SHARE) {
            return Err(not_allowed(
                "LOCK TABLE in a mode other than ACCESS SHARE",
                Why::Plain,
            ));
        }
        for r in list(field(s, "relations")) {
            let Some(("RangeVar", rv)) = kind(r) else {
                return Err(differs("a LOCK TABLE target that is not a relation"));
            };
            let (schema, name) = (text(rv, "schemaname"), text(rv, "relname"));
            if schema.is_empty() || self.ctx.catalog.relation(schema, name).is_none() {
                return Err(differs(format!(
                    "LOCK TABLE {name} is not the relation analysed"
                )));
            }
        }
        Ok(())
    }
}

/// `SELECT [pg_catalog.]set_config('search_path', '<text>', <bool>)` and nothing else: the one
/// form of set_config on search_path the analysis follows (it read these same tokens and
/// checked the value). Every other part of the SELECT must be empty.
pub(super) fn sets_search_path_alone(s: &Value) -> bool {
    let Some(fields) = s.as_object() else {
        return false;
    };
    let rest_empty = fields.iter().all(|(k, v)| {
        *k == "target_list"
            || match v {
                Value::Null | Value::Int(_) | Value::Bool(false) => true,
                Value::Seq(a) => a.is_empty(),
                _ => false,
            }
    });
    let [target] = list(field(s, "target_list")) else {
        return false;
    };
    let Some(("ResTarget", t)) = kind(target) else {
        return false;
    };
    let Some(("FuncCall", f)) = field(t, "val").and_then(kind) else {
        return false;
    };
    let name = names(field(f, "funcname"));
    let plain_call = ["agg_order", "agg_filter", "over"]
        .iter()
        .all(|k| field(f, k).is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)));
    let consts: Vec<&Value> = list(field(f, "args"))
        .iter()
        .filter_map(|a| match kind(a) {
            Some(("AConst", c)) => field(c, "val"),
            _ => None,
        })
        .collect();
    let sval = |v: &Value| field(v, "Sval").map(|x| text(x, "sval").to_owned());
    rest_empty
        && text(t, "name").is_empty()
        && (name == ["set_config"] || name == ["pg_catalog", "set_config"])
        && plain_call
        && consts.len() == 3
        && list(field(f, "args")).len() == 3
        && sval(consts[0]).as_deref() == Some("search_path")
        && sval(consts[1]).is_some()
        && field(consts[2], "Boolval").is_some()
}
