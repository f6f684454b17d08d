//! Connections refused before login, and failed logins, as records and log lines: one audit
//! record and one `warn` line each (the session's `prelogin` writes them), with the same fields (event, reason, SQLSTATE, client address, and the user and
//! database once the startup message named them).
//!
//! A flood must not fill the audit disk or the log. Per client IP address, event, reason and
//! user, the first occurrence in each 60-second window is recorded and logged; later ones in
//! that window are counted, and when the window ends one summary record and line carries the
//! count in `suppressed` (a timer writes it even if nothing else happens). At most
//! `MAX_TRACKED` keys are followed per window; occurrences beyond them are summed into one
//! summary per event with client address `*`. Nothing is dropped without being counted, and
//! `pgvakt_connections_refused_total` counts every refusal.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::{EventType, Outcome, Record};

/// How long one occurrence stands for the ones like it that follow.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys followed one by one per window; bounds the limiter's memory.
pub const MAX_TRACKED: usize = 1024;

/// One refusal or failed login, as recorded and logged.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub event: EventType,
    /// Short fixed reason, e.g. `tls_required`, `password`, `startup_timeout`.
    pub reason: &'static str,
    pub sqlstate: Option<String>,
    pub message: String,
    pub client: SocketAddr,
    /// None for connections refused before a session started (over the connection limit).
    pub session_id: Option<u64>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
}

impl Refusal {
    pub fn new(
        event: EventType,
        reason: &'static str,
        client: SocketAddr,
        id: Option<u64>,
    ) -> Refusal {
        Refusal {
            event,
            reason,
            sqlstate: None,
            message: String::new(),
            client,
            session_id: id,
            user: None,
            database: None,
            application_name: None,
            tls_version: None,
        }
    }

    /// The record of this occurrence, or with `suppressed`, of the ones counted after it.
    pub fn record(&self, suppressed: Option<u64>) -> Record {
        let outcome = match self.event {
            EventType::LoginFailed => Outcome::Error,
            _ => Outcome::Refused,
        };
        let mut r = Record::new(self.event, outcome);
        r.sqlstate = self.sqlstate.clone();
        r.session_id = self.session_id.map(|i| i.to_string());
        r.client_addr = Some(self.client.to_string());
        r.user = self.user.clone();
        r.database = self.database.clone();
        r.application_name = self.application_name.clone();
        r.tls_version = self.tls_version.clone();
        r.message = Some(match suppressed {
            None => format!("{}: {}", self.reason, self.message),
            Some(n) => format!(
                "{}: {n} more from this address in the {} s after the first, not recorded one \
                 by one",
                self.reason,
                WINDOW.as_secs()
            ),
        });
        r.suppressed = suppressed;
        r
    }

    /// The `warn` line, with the record's fields.
    pub fn log(&self, suppressed: Option<u64>) {
        tracing::warn!(
            event = self.event.as_str(),
            reason = self.reason,
            sqlstate = self.sqlstate.as_deref().unwrap_or(""),
            client.addr = %self.client,
            user = self.user.as_deref().unwrap_or(""),
            database = self.database.as_deref().unwrap_or(""),
            session.id = self.session_id.unwrap_or(0),
            suppressed = suppressed.unwrap_or(0),
            "{}",
            match (self.event, suppressed) {
                (EventType::LoginFailed, None) => "login failed",
                (EventType::LoginFailed, Some(_)) => "further failed logins",
                (_, None) => "connection refused before login",
                (_, Some(_)) => "further connections refused before login",
            }
        );
    }
}

type Key = (IpAddr, EventType, &'static str, Option<String>);

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    /// First occurrence of each key and how many followed it.
    seen: HashMap<Key, (Refusal, u64)>,
    /// Occurrences past `MAX_TRACKED` keys, per event, with the first of them.
    overflow: HashMap<EventType, (Refusal, u64)>,
    flush_scheduled: bool,
}

/// Per-proxy state of the rate limit.
#[derive(Default)]
pub struct PreloginLimiter {
    window: Mutex<Window>,
}

/// Whether an occurrence is written now, and the summaries of a window that has ended.
pub struct Admitted {
    pub write: bool,
    pub summaries: Vec<(Refusal, u64)>,
    /// When a timer must write the summaries of this window (set once per window).
    pub schedule_flush: Option<Duration>,
}

impl PreloginLimiter {
    pub fn admit(&self, r: &Refusal, now: Instant) -> Admitted {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let summaries = roll(&mut w, now);
        let started = *w.started.get_or_insert(now);
        let key = (r.client.ip(), r.event, r.reason, r.user.clone());
        let write = if let Some((_, n)) = w.seen.get_mut(&key) {
            *n += 1;
            false
        } else if w.seen.len() < MAX_TRACKED {
            w.seen.insert(key, (r.clone(), 0));
            true
        } else {
            let mut first = r.clone();
            first.client = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0);
            w.overflow.entry(r.event).or_insert((first, 0)).1 += 1;
            false
        };
        let schedule_flush = (!write && !w.flush_scheduled).then(|| {
            w.flush_scheduled = true;
            WINDOW.saturating_sub(now.duration_since(started))
        });
        Admitted {
            write,
            summaries,
            schedule_flush,
        }
    }

    /// The summaries of the window, if it has ended.
    pub fn flush(&self, now: Instant) -> Vec<(Refusal, u64)> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        roll(&mut w, now)
    }
}

/// End the window if it is over: its counts, to be written as summaries.
fn roll(w: &mut Window, now: Instant) -> Vec<(Refusal, u64)> {
    match w.started {
        Some(s) if now.duration_since(s) >= WINDOW => {}
        _ => return Vec::new(),
    }
    let old = std::mem::take(w);
    old.seen
        .into_values()
        .chain(old.overflow.into_values())
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(addr: &str, reason: &'static str) -> Refusal {
        Refusal::new(
            EventType::ConnectionRefused,
            reason,
            addr.parse().unwrap(),
            Some(1),
        )
    }

    #[test]
    fn one_record_per_address_and_reason_per_window_then_a_summary() {
        let l = PreloginLimiter::default();
        let t0 = Instant::now();
        let a = refusal("10.0.0.1:5000", "tls_required");
        let first = l.admit(&a, t0);
        assert!(first.write && first.schedule_flush.is_none());
        // Another port of the same address: the same client, counted.
        let again = l.admit(&refusal("10.0.0.1:5001", "tls_required"), t0);
        assert!(!again.write);
        assert_eq!(again.schedule_flush, Some(WINDOW));
        assert!(!l.admit(&a, t0).write);
        assert!(
            l.admit(&a, t0).schedule_flush.is_none(),
            "one timer per window"
        );
        // Another reason or address is recorded on its own.
        assert!(
            l.admit(&refusal("10.0.0.1:5002", "startup_timeout"), t0)
                .write
        );
        assert!(l.admit(&refusal("10.0.0.2:5000", "tls_required"), t0).write);
        assert!(l.flush(t0 + Duration::from_secs(1)).is_empty());
        let due = l.flush(t0 + WINDOW);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, 3);
        let rec = due[0].0.record(Some(due[0].1));
        assert_eq!(rec.suppressed, Some(3));
        assert_eq!(rec.client_addr.as_deref(), Some("10.0.0.1:5000"));
        // A new window records again.
        assert!(l.admit(&a, t0 + WINDOW).write);
    }

    #[test]
    fn past_the_tracked_addresses_occurrences_are_summed() {
        let l = PreloginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            let addr = SocketAddr::new(IpAddr::from((i as u128).to_be_bytes()), 1);
            let mut r = refusal("10.0.0.1:1", "tls_required");
            r.client = addr;
            assert_eq!(l.admit(&r, t0).write, i < MAX_TRACKED, "{i}");
        }
        let due = l.flush(t0 + WINDOW);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, 10);
        assert!(due[0].0.client.ip().is_unspecified());
    }
}
