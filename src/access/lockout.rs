//! Lockout decisions: is this login refused before it reaches PostgreSQL, what a failed or
//! successful login changes, and the operator's unlock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::local::{threshold, LocalCounts, Locked, Scope};
use super::metrics::AccessMetrics;
use super::settings::LockoutConfig;
use super::shared::{FailureRow, SharedState};

/// How often counts that no longer matter are removed from the shared state.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct Lockout {
    config: LockoutConfig,
    local: LocalCounts,
    shared: Option<SharedState>,
    metrics: AccessMetrics,
    /// Whether the last shared round trip failed (logged once per change, not per login).
    degraded: AtomicBool,
}

impl Lockout {
    /// A lockout over `shared` (None: this replica's counts only) that prunes the shared
    /// state in the background while it lives.
    pub fn start(
        config: LockoutConfig,
        shared: Option<SharedState>,
        metrics: AccessMetrics,
    ) -> Arc<Lockout> {
        let l = Arc::new(Lockout {
            config,
            local: LocalCounts::default(),
            shared,
            metrics,
            degraded: AtomicBool::new(false),
        });
        if l.shared.is_some() {
            tokio::spawn(prune(Arc::downgrade(&l)));
        }
        l
    }

    /// The lock that refuses a login of `user` from `client` now, if any.
    pub async fn check(&self, user: &str, client: IpAddr) -> Option<Locked> {
        let addr = client.to_string();
        let keys = [(Scope::User, user), (Scope::Client, addr.as_str())];
        if let Some(shared) = &self.shared {
            match shared.read(user, &addr).await {
                Ok(rows) => {
                    self.answered();
                    let now = Instant::now();
                    for (scope, key) in keys {
                        match rows.iter().find(|r| r.scope == scope && r.key == key) {
                            Some(r) => {
                                self.local
                                    .mirror(scope, key, r.failures, r.lock_remaining, now)
                            }
                            None => self.local.mirror(scope, key, 0, None, now),
                        }
                    }
                }
                Err(e) => self.unanswered(&e),
            }
        } else {
            self.metrics.shared_state_fallbacks.inc();
        }
        self.local.locked(&keys, Instant::now()).into_iter().next()
    }

    /// Count a failed login; the locks it imposed.
    pub async fn failed(&self, user: &str, client: IpAddr) -> Vec<Locked> {
        let addr = client.to_string();
        let mut imposed = Vec::new();
        for (scope, key) in [(Scope::User, user), (Scope::Client, addr.as_str())] {
            let t = *threshold(&self.config, scope);
            if t.max_failures == 0 {
                continue;
            }
            let window = Duration::from_millis(t.window_ms);
            let lock = Duration::from_millis(t.lock_ms);
            let shared = match &self.shared {
                Some(s) => Some(s.fail(scope, key, t.max_failures, window, lock).await),
                None => {
                    self.metrics.shared_state_fallbacks.inc();
                    None
                }
            };
            let now = Instant::now();
            let lock_imposed = match shared {
                Some(Ok((row, newly))) => {
                    self.answered();
                    self.local
                        .mirror(scope, key, row.failures, row.lock_remaining, now);
                    newly.then_some(locked(&row))
                }
                other => {
                    if let Some(Err(e)) = other {
                        self.unanswered(&e);
                    }
                    let (failures, lock) = self.local.fail(scope, key, &t, now);
                    lock.map(|remaining| Locked {
                        scope,
                        key: key.to_owned(),
                        failures,
                        remaining,
                    })
                }
            };
            if let Some(l) = lock_imposed {
                self.metrics.lockouts.get_or_create(&scope.into()).inc();
                imposed.push(l);
            }
        }
        imposed
    }

    /// A successful login of `user` resets its count (not its client address's: an attacker
    /// must not reset the count of an address by logging in with an account of their own).
    pub async fn succeeded(&self, user: &str) {
        self.local.clear(Scope::User, user);
        if let Some(shared) = &self.shared {
            match shared.reset(Scope::User, user).await {
                Ok(()) => self.answered(),
                Err(e) => self.unanswered(&e),
            }
        }
    }

    /// Lift the lock of `key` in `scope`, shared and on this replica.
    pub async fn unlock(&self, scope: Scope, key: &str) -> Result<u64, String> {
        self.local.clear(scope, key);
        match &self.shared {
            Some(s) => s.unlock(scope, key).await,
            None => Ok(0),
        }
    }

    /// Every lock in force: the shared state's, or this replica's when it does not answer
    /// (the flag says which).
    pub async fn locks(&self) -> (Vec<Locked>, bool) {
        if let Some(s) = &self.shared {
            if let Ok(rows) = s.locks().await {
                let mut all: Vec<Locked> = rows.iter().filter_map(locked_opt).collect();
                // Locks this replica imposed alone during an outage are in force too.
                for l in self.local.all_locked(Instant::now()) {
                    if !all.iter().any(|a| a.scope == l.scope && a.key == l.key) {
                        all.push(l);
                    }
                }
                return (all, true);
            }
        }
        (self.local.all_locked(Instant::now()), false)
    }

    fn answered(&self) {
        self.metrics.shared_state_up.set(1);
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("shared lockout state answers again");
        }
    }

    fn unanswered(&self, error: &str) {
        self.metrics.shared_state_up.set(0);
        self.metrics.shared_state_fallbacks.inc();
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "shared lockout state does not answer; counting failed logins on this replica alone (known locks stay)");
        }
    }
}

fn locked(row: &FailureRow) -> Locked {
    Locked {
        scope: row.scope,
        key: row.key.clone(),
        failures: row.failures,
        remaining: row.lock_remaining.unwrap_or_default(),
    }
}

fn locked_opt(row: &FailureRow) -> Option<Locked> {
    row.lock_remaining.map(|_| locked(row))
}

async fn prune(weak: Weak<Lockout>) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let Some(l) = weak.upgrade() else { return };
        let Some(s) = &l.shared else { return };
        let longest = l.config.user.window_ms.max(l.config.client.window_ms);
        if let Err(e) = s.prune(Duration::from_millis(longest)).await {
            tracing::debug!(error = %e, "pruning the shared lockout state failed");
        }
    }
}
