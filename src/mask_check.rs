//! Every mask the policy applies, on every column it covers, rendered as the proxy renders it
//! for a restricted role, so that a mask that cannot apply to its column (`email` on a `date`,
//! a custom `left({col}, 4)` on a `date`) is found by `policy check` instead of by end users.
//!
//! Offline (a schema snapshot) the built-in masks are checked against the column types;
//! against a live database PostgreSQL is the authority: each rendering is prepared
//! (`PREPARE`-like Parse, nothing runs), then computed over a few stored rows, counting only,
//! so that conversions that fail at run time are found too without printing a value.

use std::collections::BTreeMap;

use crate::analysis::quote_ident;
use crate::catalog::{Catalog, RelKind};
use crate::policy::diag::{Diagnostics, Pos};
use crate::policy::inventory::is_system_schema;
use crate::policy::model::{ColumnAction, RoleRules};
use crate::policy::PolicySet;

/// Rows each rendering is computed over against a live database.
const SAMPLE_ROWS: usize = 20;

/// One mask on the columns of one type in one relation, under one rule.
#[derive(Debug)]
pub struct MaskUse {
    /// The rule that applies the mask (`roles.sales.categories.financial (file:line:col)`).
    pub rule: String,
    pub mask: String,
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
    pub type_name: String,
    /// The select list computing the mask of each column, or why it cannot be rendered.
    pub rendered: Result<Vec<String>, String>,
}

/// Every (rule, mask, relation, type) the policy's restricted roles use over `catalog`.
pub fn mask_uses(set: &PolicySet, catalog: &Catalog) -> Vec<MaskUse> {
    let mut uses: BTreeMap<(String, String, String, String, String), MaskUse> = BTreeMap::new();
    let roles = set
        .roles
        .values()
        .chain(std::iter::once(&set.default_role))
        .filter(|r| !r.is_unrestricted());
    for role in roles {
        for rel in catalog.relations() {
            if is_system_schema(&rel.schema) || rel.kind == RelKind::Sequence {
                continue;
            }
            for col in &rel.columns {
                let decision = role.column(&rel.schema, &rel.name, &col.name);
                let ColumnAction::Mask(method) = &decision.action else {
                    continue;
                };
                let key = (
                    decision.rule.clone(),
                    method.name.clone(),
                    rel.schema.clone(),
                    rel.name.clone(),
                    col.ty.sql_name.clone(),
                );
                let entry = uses.entry(key).or_insert_with(|| MaskUse {
                    rule: decision.rule.clone(),
                    mask: method.name.clone(),
                    schema: rel.schema.clone(),
                    table: rel.name.clone(),
                    columns: Vec::new(),
                    type_name: col.ty.sql_name.clone(),
                    rendered: Ok(Vec::new()),
                });
                if entry.columns.contains(&col.name) {
                    continue;
                }
                entry.columns.push(col.name.clone());
                let sql = method.render(&quote_ident(&col.name), &col.ty);
                match (&mut entry.rendered, sql) {
                    (Ok(list), Ok(sql)) => list.push(sql),
                    (Ok(_), Err(e)) => entry.rendered = Err(e),
                    (Err(_), _) => {}
                }
            }
        }
    }
    uses.into_values().collect()
}

impl MaskUse {
    fn target(&self) -> String {
        format!(
            "{}.{}({})",
            self.schema,
            self.table,
            self.columns.join(", ")
        )
    }

    fn report(&self, d: &mut Diagnostics, fallback: &Pos, why: &str) {
        let (path, pos) =
            Pos::of_rule(&self.rule).unwrap_or_else(|| (self.rule.clone(), fallback.clone()));
        d.error(
            &pos,
            path,
            format!(
                "mask '{}' cannot apply to {} of type {}: {why}; statements reading it are refused",
                self.mask,
                self.target(),
                self.type_name
            ),
        );
    }
}

/// Offline: renderings that fail for the column type (built-in masks know their types).
pub fn check_offline(set: &PolicySet, uses: &[MaskUse]) -> Diagnostics {
    let mut d = Diagnostics::default();
    let fallback = Pos::file_only(set.files.first().map_or("", String::as_str));
    for u in uses {
        if let Err(why) = &u.rendered {
            u.report(&mut d, &fallback, why);
        }
    }
    d
}

/// The server's message, without a value it may quote (`invalid input syntax for type date:
/// "..."`), with its SQLSTATE.
fn server_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let msg = db.message();
            let msg = msg.split_once(": \"").map_or(msg, |(m, _)| m);
            format!("PostgreSQL: {msg} (SQLSTATE {})", db.code().code())
        }
        None => crate::cause::chain(e),
    }
}

/// Live: PostgreSQL prepares each rendering and computes it over a few stored rows.
pub async fn check_live(
    set: &PolicySet,
    uses: &[MaskUse],
    client: &tokio_postgres::Client,
) -> Diagnostics {
    let mut d = Diagnostics::default();
    let fallback = Pos::file_only(set.files.first().map_or("", String::as_str));
    for u in uses {
        let list = match &u.rendered {
            Ok(list) if !list.is_empty() => list,
            Ok(_) => continue,
            Err(why) => {
                u.report(&mut d, &fallback, why);
                continue;
            }
        };
        let from = format!("{}.{}", quote_ident(&u.schema), quote_ident(&u.table));
        let counts: Vec<String> = (0..list.len()).map(|i| format!("count(m{i})")).collect();
        let masks: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, sql)| format!("{sql} AS m{i}"))
            .collect();
        let sql = format!(
            "SELECT {} FROM (SELECT {} FROM {from} LIMIT {SAMPLE_ROWS}) AS s",
            counts.join(", "),
            masks.join(", ")
        );
        if let Err(e) = client.prepare(&sql).await {
            u.report(&mut d, &fallback, &server_reason(&e));
            continue;
        }
        match client.query(sql.as_str(), &[]).await {
            Ok(_) => {}
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                d.warning(
                    &fallback,
                    format!("{}.{}", u.schema, u.table),
                    "the --upstream user may not read this table: masks were checked for their types only",
                );
            }
            Err(e) => u.report(
                &mut d,
                &fallback,
                &format!("fails on stored values: {}", server_reason(&e)),
            ),
        }
    }
    d
}
