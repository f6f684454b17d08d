//! Policies: the data inventory, roles, masks and user grants.
//!
//! Layout, in load order:
//! - `source.rs`: the YAML file shapes (strict serde) and reading files with locations.
//! - `diag.rs`: problems with file:line:column, field path and "did you mean" suggestions.
//! - `validate.rs`: every semantic check, all problems collected at once.
//! - `compile.rs`: validated sources → [`PolicySet`] (roles, inventory, grants, version).
//! - `inventory.rs`, `masks.rs`, `grants.rs`: the compiled pieces consulted per statement.
//! - `model.rs`: the contract the analyser codes against ([`model::RoleRules`]).
//! - `store.rs`: the atomically swapped current policy; `check.rs` and `testcases.rs` back the
//!   `pgvakt policy check` and `pgvakt policy test` commands.

pub mod diag;
pub mod grants;
pub mod inventory;
pub mod masks;
pub mod model;
pub mod source;
