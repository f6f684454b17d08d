//! Access control around the data: lockout after repeated failed logins, kept consistent across
//! replicas through a small state in the upstream database.
//!
//! - [`settings`]: the `lockout:` configuration section.
//! - [`console`]: the `admin:` configuration section (who may open the admin console).
//! - [`local`]: one replica's counts and locks (pure bookkeeping).
//! - [`shared`]: the state every replica shares, in schema `pgvakt` (created by `pgvakt install`).
//! - [`lockout`]: the decisions sessions ask for, over both.
//! - [`metrics`]: lockouts and the shared state's health.
//!
//! # When the shared state does not answer
//!
//! Each decision tries the shared state first (one round trip, at most a second). When it does
//! not answer (service connection down, schema not installed), the replica decides on its own
//! counts: those it mirrored from the shared state before, plus the failures it sees itself. A
//! user or address known to be locked stays locked; counting goes on per replica, so an attacker
//! spread over N replicas gets at most N times the threshold, never unlimited attempts. Every
//! such decision is counted in `pgvakt_shared_state_fallbacks_total` and
//! `pgvakt_shared_state_up` is 0.

pub mod console;
pub mod local;
pub mod lockout;
pub mod metrics;
pub mod reads;
pub mod reads_shared;
pub mod settings;
pub mod shared;

pub use local::{Locked, Scope};
pub use lockout::Lockout;
pub use metrics::AccessMetrics;
pub use settings::LockoutConfig;
