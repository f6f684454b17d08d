//! Failed-login counts and locks as this replica knows them: a mirror of the shared state while
//! it answers, and the only count while it does not. Pure bookkeeping over a given `now`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::settings::{LockoutConfig, Threshold};

/// Keys followed at most; beyond, expired and then unlocked entries make room (locks stay).
const MAX_ENTRIES: usize = 100_000;

/// What a failed-login count is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    User,
    Client,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "user" => Some(Scope::User),
            "client" => Some(Scope::Client),
            _ => None,
        }
    }
}

/// A scope that is locked now, and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub scope: Scope,
    pub key: String,
    pub failures: u32,
    pub remaining: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
    /// Locked by this replica while the shared state did not answer: kept until it ends or an
    /// operator lifts it here, even when the shared state answers again without it.
    locked_here: bool,
}

impl Entry {
    fn new(now: Instant, failures: u32) -> Entry {
        Entry {
            window_start: now,
            failures,
            locked_until: None,
            locked_here: false,
        }
    }
}

/// One replica's counts, keyed by scope and user name or client address.
#[derive(Default)]
pub struct LocalCounts {
    entries: Mutex<HashMap<(Scope, String), Entry>>,
}

impl LocalCounts {
    /// The locks among `keys` in force at `now`.
    pub fn locked(&self, keys: &[(Scope, &str)], now: Instant) -> Vec<Locked> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|(scope, key)| {
                let e = map.get(&(*scope, (*key).to_owned()))?;
                let until = e.locked_until.filter(|u| *u > now)?;
                Some(Locked {
                    scope: *scope,
                    key: (*key).to_owned(),
                    failures: e.failures,
                    remaining: until - now,
                })
            })
            .collect()
    }

    /// Count a failure at `now` under `t`; returns the failures in the window and, when this
    /// failure locked the scope, the lock's length.
    pub fn fail(
        &self,
        scope: Scope,
        key: &str,
        t: &Threshold,
        now: Instant,
    ) -> (u32, Option<Duration>) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut map, now);
        let window = Duration::from_millis(t.window_ms);
        let e = map
            .entry((scope, key.to_owned()))
            .or_insert(Entry::new(now, 0));
        let lock_over = e.locked_until.is_some_and(|u| u <= now);
        let window_over = e.locked_until.is_none() && now.duration_since(e.window_start) >= window;
        if lock_over || window_over {
            *e = Entry::new(now, 0);
        }
        e.failures = e.failures.saturating_add(1);
        if e.locked_until.is_none() && t.max_failures > 0 && e.failures >= t.max_failures {
            let lock = Duration::from_millis(t.lock_ms);
            e.locked_until = Some(now + lock);
            e.locked_here = true;
            return (e.failures, Some(lock));
        }
        (e.failures, None)
    }

    /// Take the shared state's answer for one key as this replica's knowledge.
    pub fn mirror(
        &self,
        scope: Scope,
        key: &str,
        failures: u32,
        lock: Option<Duration>,
        now: Instant,
    ) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let k = (scope, key.to_owned());
        let kept = map
            .get(&k)
            .is_some_and(|e| e.locked_here && e.locked_until.is_some_and(|u| u > now));
        if kept && lock.is_none() {
            return;
        }
        if failures == 0 && lock.is_none() {
            map.remove(&k);
            return;
        }
        make_room(&mut map, now);
        let e = map.entry(k).or_insert(Entry::new(now, failures));
        e.failures = failures;
        e.locked_until = lock.map(|l| now + l);
        e.locked_here = false;
    }

    /// Forget a key (successful login, unlock).
    pub fn clear(&self, scope: Scope, key: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(scope, key.to_owned()));
    }

    /// Every lock in force at `now`, for `SHOW LOCKOUTS`.
    pub fn all_locked(&self, now: Instant) -> Vec<Locked> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Locked> = map
            .iter()
            .filter_map(|((scope, key), e)| {
                let until = e.locked_until.filter(|u| *u > now)?;
                Some(Locked {
                    scope: *scope,
                    key: key.clone(),
                    failures: e.failures,
                    remaining: until - now,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.scope, &a.key).cmp(&(b.scope, &b.key)));
        out
    }
}

/// Keep the map bounded: drop what no longer counts, then unlocked entries, never a lock.
fn make_room(map: &mut HashMap<(Scope, String), Entry>, now: Instant) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    let longest = Duration::from_secs(24 * 3600);
    map.retain(|_, e| match e.locked_until {
        Some(u) => u > now,
        None => now.duration_since(e.window_start) < longest,
    });
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, e| e.locked_until.is_some());
    }
}

/// The threshold of `scope`.
pub fn threshold(config: &LockoutConfig, scope: Scope) -> &Threshold {
    match scope {
        Scope::User => &config.user,
        Scope::Client => &config.client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(max: u32) -> Threshold {
        Threshold {
            max_failures: max,
            window_ms: 60_000,
            lock_ms: 10_000,
        }
    }

    #[test]
    fn locks_at_the_threshold_and_for_the_lock_time() {
        let c = LocalCounts::default();
        let now = Instant::now();
        assert_eq!(c.fail(Scope::User, "eve", &t(3), now), (1, None));
        assert_eq!(c.fail(Scope::User, "eve", &t(3), now), (2, None));
        assert!(c.locked(&[(Scope::User, "eve")], now).is_empty());
        let (n, lock) = c.fail(Scope::User, "eve", &t(3), now);
        assert_eq!((n, lock), (3, Some(Duration::from_secs(10))));
        let l = c.locked(&[(Scope::User, "eve"), (Scope::Client, "10.0.0.1")], now);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].scope, Scope::User);
        // Other users and the same name in another scope are not locked.
        assert!(c
            .locked(&[(Scope::User, "bob"), (Scope::Client, "eve")], now)
            .is_empty());
        let later = now + Duration::from_secs(11);
        assert!(c.locked(&[(Scope::User, "eve")], later).is_empty());
        // After the lock the count starts again.
        assert_eq!(c.fail(Scope::User, "eve", &t(3), later), (1, None));
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let c = LocalCounts::default();
        let now = Instant::now();
        c.fail(Scope::Client, "10.0.0.1", &t(2), now);
        let later = now + Duration::from_secs(61);
        assert_eq!(c.fail(Scope::Client, "10.0.0.1", &t(2), later), (1, None));
    }

    #[test]
    fn zero_disables_a_scope_and_clear_forgets() {
        let c = LocalCounts::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(c.fail(Scope::Client, "a", &t(0), now).1, None);
        }
        c.fail(Scope::User, "u", &t(1), now);
        assert_eq!(c.all_locked(now).len(), 1);
        c.clear(Scope::User, "u");
        assert!(c.all_locked(now).is_empty());
    }

    #[test]
    fn the_shared_answer_replaces_what_the_replica_knew() {
        let c = LocalCounts::default();
        let now = Instant::now();
        c.mirror(Scope::User, "eve", 5, Some(Duration::from_secs(30)), now);
        assert_eq!(c.locked(&[(Scope::User, "eve")], now)[0].failures, 5);
        c.mirror(Scope::User, "eve", 0, None, now);
        assert!(c.locked(&[(Scope::User, "eve")], now).is_empty());
        // A lock this replica imposed alone outlives a shared answer that does not know it.
        c.fail(Scope::User, "mallory", &t(1), now);
        c.mirror(Scope::User, "mallory", 0, None, now);
        assert_eq!(c.locked(&[(Scope::User, "mallory")], now).len(), 1);
        c.clear(Scope::User, "mallory");
        assert!(c.locked(&[(Scope::User, "mallory")], now).is_empty());
    }
}
