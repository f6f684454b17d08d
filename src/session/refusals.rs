//! Refusals delivered in protocol order.
//!
//! A refused statement is replaced by a statement that makes PostgreSQL fail at the same point
//! (it names a column that cannot exist). PostgreSQL then does what it does for any failed
//! statement: aborts the rest of a multi-statement query or the transaction, discards extended
//! protocol messages until Sync, and answers in order. The relay swaps that error for the
//! refusal it stands for. The marker carries a per-session random nonce so a client cannot forge
//! one.

use std::collections::VecDeque;
use std::sync::Mutex;

use rand::Rng;

use crate::protocol::PgError;

/// Refusals whose errors have not come back yet; beyond this the oldest are forgotten (their
/// errors were skipped by PostgreSQL, e.g. inside an already failed transaction).
const MAX_PENDING: usize = 256;

pub struct Refusals {
    nonce: String,
    pending: Mutex<(u64, VecDeque<(u64, PgError)>)>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    pub fn new() -> Self {
        let nonce: u128 = rand::thread_rng().gen();
        Refusals {
            nonce: format!("pgvakt-refusal-{nonce:032x}-"),
            pending: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Remember `err` and return the SQL that stands in for the refused statement.
    pub fn marker(&self, err: PgError) -> String {
        let mut guard = match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.0 += 1;
        let id = guard.0;
        guard.1.push_back((id, err));
        if guard.1.len() > MAX_PENDING {
            guard.1.pop_front();
        }
        format!("SELECT \"{}{}\"", self.nonce, id)
    }

    /// If an upstream error message came from a marker, or from a write guard that failed
    /// inside a statement (`analysis::write_guard`), the refusal it stands for.
    pub fn resolve(&self, message: &str) -> Option<PgError> {
        if let Some(refusal) = crate::analysis::write_refusal_in(message) {
            return Some(refusal);
        }
        let start = message.find(&self.nonce)? + self.nonce.len();
        let digits: String = message[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let id: u64 = digits.parse().ok()?;
        let mut guard = match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some((pid, err)) = guard.1.pop_front() {
            if pid == id {
                return Some(err);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_resolves_once_and_skipped_ones_are_dropped() {
        let r = Refusals::new();
        let a = r.marker(PgError::insufficient_privilege("a"));
        let b = r.marker(PgError::insufficient_privilege("b"));
        let col = |m: &str| {
            m.trim_start_matches("SELECT \"")
                .trim_end_matches('"')
                .to_owned()
        };
        let msg_b = format!("column \"{}\" does not exist", col(&b));
        assert_eq!(r.resolve(&msg_b).unwrap().message, "b");
        let msg_a = format!("column \"{}\" does not exist", col(&a));
        assert!(r.resolve(&msg_a).is_none());
        assert!(r
            .resolve("column \"pgvakt-refusal-0-1\" does not exist")
            .is_none());
    }
}
