//! The `lockout:` section of the configuration, owned by the lockout it configures.

use serde::Deserialize;

/// Failed-login thresholds for one scope (a login user, or a client IP address).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Failed logins within `window_ms` that lock the scope; 0 disables this scope.
    pub max_failures: u32,
    /// Length of the counting window, from the first failure in it, ms.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// How long a locked scope is refused, ms.
    #[serde(default = "default_lock_ms")]
    pub lock_ms: u64,
}

fn default_window_ms() -> u64 {
    600_000
}
fn default_lock_ms() -> u64 {
    900_000
}

/// Lockout after repeated failed logins. Absent section: the defaults below apply.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Per login user. Default 5 failures in 10 minutes lock the user for 15 minutes.
    #[serde(default = "default_user")]
    pub user: Threshold,
    /// Per client IP address. Default 30 failures in 10 minutes lock the address for 15
    /// minutes (higher than per user: offices and NAT gateways share addresses).
    #[serde(default = "default_client")]
    pub client: Threshold,
}

fn default_user() -> Threshold {
    Threshold {
        max_failures: 5,
        window_ms: default_window_ms(),
        lock_ms: default_lock_ms(),
    }
}

fn default_client() -> Threshold {
    Threshold {
        max_failures: 30,
        window_ms: default_window_ms(),
        lock_ms: default_lock_ms(),
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            user: default_user(),
            client: default_client(),
        }
    }
}

impl LockoutConfig {
    /// Semantic problems, each naming its field.
    pub fn problems(&self, out: &mut Vec<String>) {
        for (scope, t) in [("user", &self.user), ("client", &self.client)] {
            if t.max_failures > 0 && t.window_ms < 1000 {
                out.push(format!("lockout.{scope}.window_ms: must be at least 1000"));
            }
            if t.max_failures > 0 && t.lock_ms < 1000 {
                out.push(format!("lockout.{scope}.lock_ms: must be at least 1000"));
            }
        }
    }
}
