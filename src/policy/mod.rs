//! Policies: the data inventory, roles, masks and user grants.
//!
//! Layout, in load order:
//! - `source.rs`: the YAML file shapes (strict serde) and reading files with locations.
//! - `diag.rs`: problems with file:line:column, field path and "did you mean" suggestions.
//! - `validate.rs`: every semantic check, all problems collected at once.
//! - `compile.rs`: validated sources → [`PolicySet`] (roles, inventory, grants, version).
//! - `inventory.rs`, `masks.rs`, `grants.rs`: the compiled pieces consulted per statement.
//! - `rows.rs`, `predicate.rs`, `validate_rows.rs`: purposes and row rules (consent,
//!   restriction, retention, hand-written predicates) and the SQL predicate each table gets.
//! - `model.rs`: the contract the analyser codes against ([`model::RoleRules`]).
//! - `store.rs`: the atomically swapped current policy; `check.rs` and `testcases.rs` back the
//!   `pgvakt policy check` and `pgvakt policy test` commands.

pub mod check;
pub mod compile;
pub mod detect;
pub mod diag;
pub mod erase;
pub mod expiry;
pub mod grants;
pub mod inventory;
pub mod limits;
pub mod masks;
pub mod model;
pub mod predicate;
pub mod record;
pub mod rows;
pub mod source;
pub mod store;
pub mod testcases;
pub mod validate;
mod validate_inventory;
mod validate_roles;
mod validate_rows;
mod validate_subjects;
mod validate_writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use compile::{load, load_with_env};
pub use diag::{Diagnostic, Diagnostics, PolicyErrors, Severity};
pub use grants::{Grant, Grantee, Resolution};

use inventory::Inventory;
use model::{MaskMethod, RolePolicy, TableInventory};

/// A loaded, validated, compiled policy: what the session consults per statement.
#[derive(Debug)]
pub struct PolicySet {
    /// First 12 hex digits of SHA-256 over all files' content (and the pseudonym key's
    /// fingerprint); part of analysis cache keys and audit records.
    pub version: String,
    pub roles: BTreeMap<String, Arc<RolePolicy>>,
    /// The role of users without a valid grant; sees no personal data.
    pub default_role: Arc<RolePolicy>,
    pub grants: Vec<Grant>,
    pub inventory: Arc<Inventory>,
    pub masks: BTreeMap<String, Arc<MaskMethod>>,
    /// Declared purposes of processing.
    pub purposes: BTreeMap<String, rows::Purpose>,
    /// Role → how much personal data its users may read per hour.
    pub read_limits: BTreeMap<String, limits::ReadLimit>,
    /// Problems that did not prevent loading (e.g. no pseudonym key).
    pub warnings: Diagnostics,
    pub files: Vec<String>,
}

impl PolicySet {
    /// The policy role for a login: an explicit user grant valid at `now` first, then grants
    /// of the user's PostgreSQL groups; otherwise the default role. Group grants naming
    /// different roles are ambiguous and also give the default role: guessing could open more
    /// than intended.
    /// Whether any grant names a PostgreSQL group (logins then need a group lookup).
    pub fn has_group_grants(&self) -> bool {
        self.grants
            .iter()
            .any(|g| matches!(g.grantee, grants::Grantee::Group(_)))
    }

    pub fn resolve(&self, user: &str, groups: &[String], now: SystemTime) -> Resolution {
        let now = grants::unix_seconds(now);
        let fallback = |via: String| Resolution {
            role: Arc::clone(&self.default_role),
            via,
        };
        let grant_role = |g: &Grant| self.roles.get(&g.role).cloned();
        let mut user_grants = self
            .grants
            .iter()
            .filter(|g| g.grantee == Grantee::User(user.to_owned()))
            .peekable();
        let had_user_grant = user_grants.peek().is_some();
        if let Some(g) = user_grants.find(|g| g.is_valid_at(now)) {
            if let Some(role) = grant_role(g) {
                return Resolution {
                    role,
                    via: g.origin.clone(),
                };
            }
        }
        let group_grants: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| matches!(&g.grantee, Grantee::Group(n) if groups.contains(n)))
            .filter(|g| g.is_valid_at(now))
            .collect();
        let mut roles: Vec<&str> = group_grants.iter().map(|g| g.role.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        match (group_grants.first(), roles.len()) {
            (Some(g), 1) => match grant_role(g) {
                Some(role) => Resolution {
                    role,
                    via: g.origin.clone(),
                },
                None => fallback("default_role (grant names a missing role)".into()),
            },
            (Some(_), _) => fallback(format!(
                "default_role (group grants conflict: {})",
                group_grants
                    .iter()
                    .map(|g| g.origin.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (None, _) if had_user_grant => {
                fallback("default_role (the user's grants are not valid now)".into())
            }
            (None, _) => fallback("default_role (no grant for this user)".into()),
        }
    }

    /// The pseudonym key, when one is configured (every pseudonym-kind mask carries the same).
    pub fn pseudonym_key(&self) -> Option<&masks::PseudonymKey> {
        self.masks.values().find_map(|m| match &m.kind {
            masks::MaskKind::Pseudonym(k) => k.as_ref(),
            _ => None,
        })
    }

    pub fn role(&self, name: &str) -> Option<Arc<RolePolicy>> {
        self.roles.get(name).cloned()
    }

    pub fn table(&self, schema: &str, table: &str) -> Option<TableInventory> {
        self.inventory.table(schema, table)
    }
}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_erase;
#[cfg(test)]
mod tests_record;
#[cfg(test)]
mod tests_rows;
#[cfg(test)]
mod tests_subjects;
#[cfg(test)]
mod tests_unlisted;
