//! Metrics of access control, registered into the process registry with the others.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::local::Scope;

/// `scope`: `user` or `client` (snake_case, from [`Scope::as_str`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

impl From<Scope> for ScopeLabel {
    fn from(s: Scope) -> Self {
        ScopeLabel { scope: s.as_str() }
    }
}

/// `reason` of a failed login: fixed words, snake_case.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLoginLabel {
    pub reason: &'static str,
}

/// Why a login failed, as `pgvakt_failed_logins_total` counts it.
pub const FAILED_LOGIN_REASONS: &[&str] = &[
    // PostgreSQL rejected the password (28P01).
    "invalid_password",
    // PostgreSQL rejected the login otherwise (28000: no pg_hba entry, role may not log in).
    "invalid_authorization",
    // The server asked for an authentication method pgvakt cannot relay.
    "authentication_method",
    // PostgreSQL logged in another user or database than the policy and audit use.
    "identity_not_confirmed",
    // Anything else PostgreSQL answered during authentication (too many clients, no database).
    "other",
];

/// The reason word of a login PostgreSQL refused with `sqlstate`.
pub fn failed_login_reason(sqlstate: Option<&str>) -> &'static str {
    match sqlstate {
        Some("28P01") => "invalid_password",
        Some(s) if s.starts_with("28") => "invalid_authorization",
        _ => "other",
    }
}

/// One grant with an end: its place in the policy (`grants[3]`) and its role (policy names,
/// a small set; never the user, whom `pgvakt policy grants` names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabel {
    pub grant: String,
    pub role: String,
}

/// A crossed read limit: `limit` (subjects_per_hour, rows_per_hour) and `action` (alert,
/// block).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrossingLabel {
    pub limit: &'static str,
    pub action: &'static str,
}

/// Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct AccessMetrics {
    /// Locks imposed after repeated failed logins.
    pub lockouts: Family<ScopeLabel, Counter>,
    /// 1 while the last round trip to the shared state succeeded.
    pub shared_state_up: Gauge,
    /// Decisions taken on this replica's own counts because the shared state did not answer.
    pub shared_state_fallbacks: Counter,
    /// Failed logins by reason.
    pub failed_logins: Family<FailedLoginLabel, Counter>,
    /// Unix time each grant with a `valid_until` ends.
    pub grant_expiry: Family<GrantLabel, Gauge>,
    /// Read limits crossed (mass-read alarms).
    pub read_limit_crossings: Family<CrossingLabel, Counter>,
    /// Personal-data reads refused because the user crossed a `block` limit.
    pub read_limit_refusals: Counter,
}

impl Default for AccessMetrics {
    fn default() -> Self {
        let m = AccessMetrics {
            lockouts: Family::default(),
            shared_state_up: Gauge::default(),
            shared_state_fallbacks: Counter::default(),
            failed_logins: Family::default(),
            grant_expiry: Family::default(),
            read_limit_crossings: Family::default(),
            read_limit_refusals: Counter::default(),
        };
        for limit in ["subjects_per_hour", "rows_per_hour"] {
            for action in ["alert", "block"] {
                let _ = m
                    .read_limit_crossings
                    .get_or_create(&CrossingLabel { limit, action });
            }
        }
        for reason in FAILED_LOGIN_REASONS {
            let _ = m.failed_logins.get_or_create(&FailedLoginLabel { reason });
        }
        // Both series from 0, so increase() sees the first lock.
        for s in [Scope::User, Scope::Client] {
            let _ = m.lockouts.get_or_create(&s.into());
        }
        m
    }
}

impl AccessMetrics {
    /// The expiry series of the policy in force: one per grant with an end, no others.
    pub fn set_grants(&self, grants: &[crate::policy::Grant]) {
        self.grant_expiry.clear();
        for g in grants {
            let Some(until) = g.valid_until else { continue };
            let grant = g
                .origin
                .split_whitespace()
                .next()
                .unwrap_or("grants")
                .to_owned();
            self.grant_expiry
                .get_or_create(&GrantLabel {
                    grant,
                    role: g.role.clone(),
                })
                .set(until);
        }
    }

    /// Count a failed login; `reason` is one of [`FAILED_LOGIN_REASONS`].
    pub fn failed_login(&self, reason: &'static str) {
        self.failed_logins
            .get_or_create(&FailedLoginLabel { reason })
            .inc();
    }

    /// Register under the registry's prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "read_limit_crossings",
            "Users who read more personal data within an hour than their role's limits allow (limit: subjects_per_hour, rows_per_hour; action: alert, block)",
            self.read_limit_crossings.clone(),
        );
        registry.register(
            "read_limit_refusals",
            "Personal-data reads refused because the user crossed a limit with action block",
            self.read_limit_refusals.clone(),
        );
        registry.register(
            "grant_expiry_timestamp_seconds",
            "Unix time at which each policy grant with a valid_until ends (label grant: its place in the policy, e.g. grants[3]; `pgvakt policy grants` names the grantee)",
            self.grant_expiry.clone(),
        );
        registry.register(
            "failed_logins",
            "Logins that failed, by reason: invalid_password, invalid_authorization, authentication_method, identity_not_confirmed, other",
            self.failed_logins.clone(),
        );
        registry.register(
            "lockouts",
            "Users (scope=user) or client addresses (scope=client) locked after repeated failed logins",
            self.lockouts.clone(),
        );
        registry.register(
            "shared_state_up",
            "1 while the state replicas share (schema pgvakt upstream) answers, 0 while this replica counts on its own",
            self.shared_state_up.clone(),
        );
        registry.register(
            "shared_state_fallbacks",
            "Lockout decisions taken on this replica's own counts because the shared state did not answer",
            self.shared_state_fallbacks.clone(),
        );
    }
}
