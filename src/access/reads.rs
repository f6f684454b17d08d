//! Mass-read alarms: per user, the distinct data subjects and personal rows read within the
//! last hour (a sliding window), against the limits of the user's role
//! (`roles.<r>.limits`). Crossing one is reported once per window; with `action: block` the
//! user's further personal-data reads are refused until the hour has passed or an operator
//! resets the limits. Replicas share counts and blocks through schema `pgvakt` (see
//! `reads_shared.rs`): this module decides on what this replica saw plus the shared totals of
//! the last sync.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::policy::limits::{LimitAction, ReadLimit};

/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// A limit crossed by one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// `subjects_per_hour` or `rows_per_hour`.
    pub limit: &'static str,
    pub count: u64,
    pub max: u64,
    pub action: LimitAction,
    pub origin: String,
}

#[derive(Default)]
struct Window {
    /// Subject (see [`subject`]) → last read.
    subjects: HashMap<String, Instant>,
    rows: VecDeque<(Instant, u64)>,
    /// Shared totals of the last sync (every replica's reads in the window).
    shared_subjects: u64,
    shared_rows: u64,
    /// Read here since the last sync, to be written to the shared state.
    pending_subjects: Vec<String>,
    pending_rows: u64,
    /// When a crossing was last reported: once per window.
    reported: Option<Instant>,
    blocked_until: Option<Instant>,
    /// Blocked by this replica (kept when a sync does not know the block yet).
    blocked_here: bool,
}

impl Window {
    fn prune(&mut self, now: Instant) {
        self.subjects.retain(|_, t| now.duration_since(*t) < WINDOW);
        while self
            .rows
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            self.rows.pop_front();
        }
    }

    fn counts(&self) -> (u64, u64) {
        let local_subjects = self.subjects.len() as u64;
        let local_rows: u64 = self.rows.iter().map(|(_, n)| n).sum();
        (
            local_subjects.max(self.shared_subjects + self.pending_subjects.len() as u64),
            local_rows.max(self.shared_rows + self.pending_rows),
        )
    }
}

/// How a data subject read through `table` with pseudonym `reference` is counted, here and in
/// the shared state. PostgreSQL's text holds no NUL, so the two are joined with `/`; the
/// pseudonym is hex, so the last `/` ends the table name and no two subjects collide.
pub fn subject(table: &str, reference: &str) -> String {
    format!("{table}/{reference}")
}

/// What one sync writes: per user, the subjects and rows read since the last one.
pub type Pending = Vec<(String, Vec<String>, u64)>;

/// What a session needs to count its reads and report crossings.
#[derive(Clone)]
pub struct ReadWatch {
    pub limits: std::sync::Arc<ReadLimits>,
    pub metrics: super::AccessMetrics,
}

impl ReadWatch {
    /// The error a personal-data read of a blocked user gets, counted.
    pub fn refusal(&self, user: &str, now: Instant) -> Option<String> {
        let left = self.limits.blocked(user, now)?;
        self.metrics.read_limit_refusals.inc();
        Some(format!(
            "pgvakt: user \"{user}\" read more personal data within an hour than its role's limits allow; personal-data reads are refused for another {} s",
            left.as_secs().max(1)
        ))
    }
}

#[derive(Default)]
pub struct ReadLimits {
    limits: ArcSwap<BTreeMap<String, ReadLimit>>,
    users: Mutex<HashMap<String, Window>>,
}

impl ReadLimits {
    /// The limits of the policy in force, by role.
    pub fn set_limits(&self, limits: BTreeMap<String, ReadLimit>) {
        self.limits.store(std::sync::Arc::new(limits));
    }

    /// Whether any role has limits (nothing is counted otherwise).
    pub fn any(&self) -> bool {
        !self.limits.load().is_empty()
    }

    /// Count a read of `rows` personal rows naming `subjects` by `user` in `role`; the limit it
    /// crossed, once per window. With `block`, the user is blocked from now on.
    pub fn observe(
        &self,
        user: &str,
        role: &str,
        rows: u64,
        subjects: impl Iterator<Item = String>,
        now: Instant,
    ) -> Option<Crossing> {
        let limits = self.limits.load();
        let limit = limits.get(role)?;
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let w = users.entry(user.to_owned()).or_default();
        w.prune(now);
        // Enough to know the limit is crossed; more would only cost memory.
        let keep = limit
            .subjects_per_hour
            .unwrap_or(0)
            .saturating_mul(2)
            .max(1024) as usize;
        for s in subjects {
            let room = w.subjects.len() < keep || w.subjects.contains_key(&s);
            if room && w.subjects.insert(s.clone(), now).is_none() {
                w.pending_subjects.push(s);
            }
        }
        if rows > 0 {
            w.rows.push_back((now, rows));
            w.pending_rows += rows;
        }
        let (subjects, rows) = w.counts();
        let crossed = [
            ("subjects_per_hour", subjects, limit.subjects_per_hour),
            ("rows_per_hour", rows, limit.rows_per_hour),
        ]
        .into_iter()
        .find_map(|(name, count, max)| max.filter(|m| count > *m).map(|m| (name, count, m)))?;
        if w.reported.is_some_and(|t| now.duration_since(t) < WINDOW) {
            return None;
        }
        w.reported = Some(now);
        if limit.action == LimitAction::Block {
            w.blocked_until = Some(now + WINDOW);
            w.blocked_here = true;
        }
        Some(Crossing {
            limit: crossed.0,
            count: crossed.1,
            max: crossed.2,
            action: limit.action,
            origin: limit.origin.clone(),
        })
    }

    /// How long `user` stays blocked, if blocked now.
    pub fn blocked(&self, user: &str, now: Instant) -> Option<Duration> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let until = users.get(user)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Forget `user`'s window and block on this replica.
    pub fn reset(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.remove(user);
    }

    /// Take what was read since the last sync, for the shared state.
    pub fn take_pending(&self) -> Pending {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .iter_mut()
            .filter(|(_, w)| !w.pending_subjects.is_empty() || w.pending_rows > 0)
            .map(|(u, w)| {
                (
                    u.clone(),
                    std::mem::take(&mut w.pending_subjects),
                    std::mem::take(&mut w.pending_rows),
                )
            })
            .collect()
    }

    /// What [`ReadLimits::take_pending`] took and the shared state did not get: written with
    /// the next sync.
    pub fn give_back(&self, pending: Pending) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for (user, subjects, rows) in pending {
            let w = users.entry(user).or_default();
            w.pending_subjects.extend(subjects);
            w.pending_rows += rows;
        }
    }

    /// Users this replica follows.
    pub fn users(&self) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.keys().cloned().collect()
    }

    /// The shared state's answer: totals per user in the window, and the blocks in force
    /// (user → time left). A block this replica imposed that the shared state does not know
    /// yet stays; other blocks follow the shared state (an operator's reset lifts them).
    pub fn synced(
        &self,
        totals: &HashMap<String, (u64, u64)>,
        blocks: &HashMap<String, Duration>,
        now: Instant,
    ) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for (user, left) in blocks {
            let w = users.entry(user.clone()).or_default();
            w.blocked_until = Some(now + *left);
            w.blocked_here = false;
        }
        for (user, w) in users.iter_mut() {
            let (s, r) = totals.get(user).copied().unwrap_or((0, 0));
            w.shared_subjects = s;
            w.shared_rows = r;
            if !blocks.contains_key(user) && !w.blocked_here {
                if w.blocked_until.is_some_and(|t| t > now) {
                    // The shared block went before its time: an operator's reset. What this
                    // replica counted before it goes too, or its own count of the same reads
                    // would cross again at the user's next read.
                    w.subjects.clear();
                    w.rows.clear();
                    w.pending_subjects.clear();
                    w.pending_rows = 0;
                    w.reported = None;
                }
                w.blocked_until = None;
            }
        }
    }

    /// Blocks this replica imposed, to be written to the shared state (then shared).
    pub fn take_new_blocks(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .iter_mut()
            .filter(|(_, w)| w.blocked_here)
            .filter_map(|(u, w)| {
                let until = w.blocked_until.filter(|t| *t > now)?;
                w.blocked_here = false;
                Some((u.clone(), until - now))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(action: LimitAction) -> ReadLimits {
        let l = ReadLimits::default();
        let mut m = BTreeMap::new();
        m.insert(
            "secretary".to_owned(),
            ReadLimit {
                subjects_per_hour: Some(3),
                rows_per_hour: Some(100),
                action,
                origin: "roles.secretary.limits".into(),
            },
        );
        l.set_limits(m);
        l
    }

    fn subjects(ids: &[&str]) -> impl Iterator<Item = String> {
        ids.iter()
            .map(|i| subject("public.contacts", i))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn distinct_subjects_over_the_limit_cross_once_and_block_for_the_window() {
        let l = limits(LimitAction::Block);
        let now = Instant::now();
        assert_eq!(
            l.observe("eve", "secretary", 1, subjects(&["1"]), now),
            None
        );
        // Reading the same subject again is not a new subject.
        assert_eq!(
            l.observe("eve", "secretary", 1, subjects(&["1", "2", "3"]), now),
            None
        );
        let c = l
            .observe("eve", "secretary", 1, subjects(&["4"]), now)
            .expect("crossed");
        assert_eq!((c.limit, c.count, c.max), ("subjects_per_hour", 4, 3));
        assert!(l.blocked("eve", now).is_some());
        assert!(l.blocked("bob", now).is_none());
        assert_eq!(
            l.observe("eve", "secretary", 1, subjects(&["5"]), now),
            None,
            "once"
        );
        let later = now + WINDOW + Duration::from_secs(1);
        assert!(
            l.blocked("eve", later).is_none(),
            "the block ends with the window"
        );
        l.reset("eve");
        assert!(l.blocked("eve", now).is_none());
    }

    #[test]
    fn rows_count_and_roles_without_limits_are_not_followed() {
        let l = limits(LimitAction::Alert);
        let now = Instant::now();
        assert!(l
            .observe("eve", "sales", 1_000, subjects(&["1"]), now)
            .is_none());
        assert!(l
            .observe("eve", "secretary", 60, std::iter::empty(), now)
            .is_none());
        let c = l
            .observe("eve", "secretary", 60, std::iter::empty(), now)
            .expect("rows");
        assert_eq!((c.limit, c.count), ("rows_per_hour", 120));
        assert!(l.blocked("eve", now).is_none(), "alert does not block");
        // Rows older than the window no longer count.
        let later = now + WINDOW;
        l.reset("eve");
        assert!(l
            .observe("eve", "secretary", 60, std::iter::empty(), later)
            .is_none());
    }

    #[test]
    fn shared_totals_count_other_replicas_reads() {
        let l = limits(LimitAction::Block);
        let now = Instant::now();
        l.observe("eve", "secretary", 1, subjects(&["1"]), now);
        let pending = l.take_pending();
        assert_eq!(pending.len(), 1);
        let mut totals = HashMap::new();
        totals.insert("eve".to_owned(), (3, 3));
        l.synced(&totals, &HashMap::new(), now);
        let c = l
            .observe("eve", "secretary", 1, subjects(&["9"]), now)
            .expect("crossed");
        assert_eq!(c.count, 4);
        assert_eq!(l.take_new_blocks(now).len(), 1);
        // An operator's reset elsewhere: the next sync has no block for eve.
        l.synced(&HashMap::new(), &HashMap::new(), now);
        assert!(l.blocked("eve", now).is_none());
        // What was read before the reset no longer counts here either.
        let fresh = ["20", "21", "22"];
        assert!(l
            .observe("eve", "secretary", 1, subjects(&fresh), now)
            .is_none());
        let c = l.observe("eve", "secretary", 1, subjects(&["23"]), now);
        assert_eq!(c.expect("crossed again").count, 4);
    }

    #[test]
    fn a_block_learned_from_another_replica_is_lifted_by_a_reset_with_what_was_counted() {
        let l = limits(LimitAction::Block);
        let now = Instant::now();
        // Three subjects read here: at the limit, not over it.
        assert!(l
            .observe("eve", "secretary", 1, subjects(&["1", "2", "3"]), now)
            .is_none());
        let mut blocks = HashMap::new();
        blocks.insert("eve".to_owned(), Duration::from_secs(3000));
        let mut totals = HashMap::new();
        totals.insert("eve".to_owned(), (9, 9));
        l.synced(&totals, &blocks, now);
        assert!(l.blocked("eve", now).is_some());
        l.synced(&HashMap::new(), &HashMap::new(), now);
        assert!(l.blocked("eve", now).is_none());
        // One more subject: four read here in all, but three of them before the reset.
        assert!(l
            .observe("eve", "secretary", 1, subjects(&["4"]), now)
            .is_none());
    }
}
