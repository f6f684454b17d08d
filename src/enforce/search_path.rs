//! search_path as PostgreSQL holds it through transactions: SET LOCAL lasts until the
//! transaction ends, a SET inside one is undone by ROLLBACK and kept by COMMIT, and ROLLBACK TO
//! a savepoint restores the path it was made with. Statements are analysed under this path.

use super::SessionPolicy;
use crate::analysis;

/// The search_path before the open transaction changed it, and its session-level value set in
/// it (SET without LOCAL), which a COMMIT keeps.
pub(super) struct TxPath {
    pub(super) before: Vec<String>,
    pub(super) session: Option<Vec<String>>,
    /// Savepoints of the open transaction: name, and the path and session value when it was
    /// made, which ROLLBACK TO restores.
    pub(super) savepoints: Vec<(String, Vec<String>, Option<Vec<String>>)>,
}

impl SessionPolicy {
    /// What the relay knows of transactions: whether one is open, how many have ended, and
    /// whether the last one committed. search_path follows PostgreSQL: SET LOCAL lasts until
    /// the transaction ends, a SET inside one is undone by ROLLBACK and kept by COMMIT.
    /// `status`: the last ReadyForQuery's transaction status (`I`, `T`, or `E` for a failed
    /// block, whose COMMIT rolls back).
    pub fn transaction_state(&mut self, status: u8, ended: u64, committed: bool) {
        let in_tx = status != b'I';
        if ended != self.tx_ends_seen {
            self.tx_ends_seen = ended;
            if let Some(t) = self.tx_path.take() {
                self.search_path = match (committed, t.session) {
                    (true, Some(session)) => session,
                    _ => t.before,
                };
            }
        }
        self.in_tx = in_tx;
        self.tx_failed = status == b'E';
    }

    /// The open block ends (as a statement of the text being analysed says).
    fn end_transaction(&mut self, committed: bool) {
        if !self.in_tx {
            // PostgreSQL warns and does nothing.
            return;
        }
        if let Some(t) = self.tx_path.take() {
            self.search_path = match (committed, t.session) {
                (true, Some(session)) => session,
                _ => t.before,
            };
        }
        self.in_tx = false;
        self.tx_failed = false;
    }

    /// What a statement did to search_path, in order, as PostgreSQL applies it: a savepoint
    /// keeps the path it was made with for ROLLBACK TO; RELEASE keeps the current one.
    pub(super) fn apply_path_events(&mut self, events: &[analysis::PathEvent]) {
        use analysis::PathEvent;
        for e in events {
            match e {
                PathEvent::Set(path, local) => self.apply_search_path(path, *local),
                PathEvent::Savepoint(name) if self.in_tx => {
                    let path = self.search_path.clone();
                    let t = self.tx_path.get_or_insert_with(|| TxPath {
                        before: path.clone(),
                        session: None,
                        savepoints: Vec::new(),
                    });
                    let session = t.session.clone();
                    t.savepoints.push((name.clone(), path, session));
                }
                PathEvent::RollbackTo(name) => {
                    let Some(t) = self.tx_path.as_mut() else {
                        continue;
                    };
                    if let Some(i) = t.savepoints.iter().rposition(|(n, _, _)| n == name) {
                        t.savepoints.truncate(i + 1);
                        if let Some((_, path, session)) = t.savepoints.last() {
                            t.session = session.clone();
                            self.search_path = path.clone();
                        }
                    }
                }
                PathEvent::Release(name) => {
                    if let Some(t) = self.tx_path.as_mut() {
                        if let Some(i) = t.savepoints.iter().rposition(|(n, _, _)| n == name) {
                            t.savepoints.truncate(i);
                        }
                    }
                }
                PathEvent::Savepoint(_) => {}
                PathEvent::Begin => {
                    if !self.in_tx {
                        self.in_tx = true;
                        self.tx_failed = false;
                    }
                }
                PathEvent::Commit => self.end_transaction(!self.tx_failed),
                PathEvent::Rollback => self.end_transaction(false),
            }
        }
    }

    pub(super) fn apply_search_path(&mut self, path: &[String], local: bool) {
        if self.in_tx {
            let before = &self.search_path;
            let t = self.tx_path.get_or_insert_with(|| TxPath {
                before: before.clone(),
                session: None,
                savepoints: Vec::new(),
            });
            if !local {
                t.session = Some(path.to_vec());
            }
            self.search_path = path.to_vec();
        } else if !local {
            // Outside a transaction block SET LOCAL changes nothing.
            self.search_path = path.to_vec();
        }
    }
}
