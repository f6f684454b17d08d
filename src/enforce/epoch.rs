//! Names defined under an earlier policy role. A statement is decided (analysed, masked,
//! refused) when it is prepared or declared, under the role of that moment; PostgreSQL keeps
//! the decided text. When the session's role changes — a grant's `valid_until` passes, a
//! reload maps the user elsewhere — what was prepared before would still run as decided for
//! the old role. So from the first change on, each prepared statement and portal (protocol or
//! SQL, cursors included) must have been defined since the last change to be run by a
//! restricted role; anything older is refused, and the client prepares it again.
//!
//! A definition counts only if PostgreSQL cannot have kept an older one under the name: a name
//! used before in the session stays old (a Parse of an existing name fails, and the old one
//! stays); the unnamed statement counts when parsed at the start of a batch (after an error
//! PostgreSQL skips the rest of the batch, definitions included) or when it was already
//! defined since the change; a portal counts when bound from a statement that counts. Pure
//! bookkeeping; no IO.

use std::collections::HashSet;

use crate::analysis::session_names::NameOp;
use crate::protocol::message::{decode_bind, decode_execute, parse_name};
use crate::protocol::{Frame, PgError};

#[derive(Debug, Default)]
pub struct Epochs {
    /// The policy role of the current epoch.
    role: Option<String>,
    /// The role changed at least once in this session: names are checked from then on.
    changed: bool,
    /// Every statement and portal name defined in the session.
    seen_statements: HashSet<Vec<u8>>,
    seen_portals: HashSet<Vec<u8>>,
    /// Names defined since the last change.
    statements: HashSet<Vec<u8>>,
    portals: HashSet<Vec<u8>>,
    /// No extended-protocol message since the last Sync or Query: the next one cannot be
    /// skipped for an error before it.
    batch_start: bool,
}

/// Cap on names followed; beyond it new names are not remembered as seen (they then count as
/// defined before, so uses are refused after a change rather than followed without bound).
const MAX_NAMES: usize = 100_000;

impl Epochs {
    pub fn new() -> Epochs {
        Epochs {
            batch_start: true,
            ..Default::default()
        }
    }

    /// The role the session's next statement runs as; a different one starts a new epoch.
    pub fn enter(&mut self, role: &str) {
        match &self.role {
            Some(r) if r == role => {}
            Some(_) => {
                self.changed = true;
                self.statements.clear();
                self.portals.clear();
                self.role = Some(role.to_owned());
            }
            None => self.role = Some(role.to_owned()),
        }
    }

    /// Whether names are checked (the role changed in this session).
    pub fn checking(&self) -> bool {
        self.changed
    }

    fn define_statement(&mut self, name: &[u8]) {
        let fresh = if name.is_empty() {
            self.batch_start || self.statements.contains(name)
        } else {
            !self.seen_statements.contains(name)
        };
        if fresh {
            self.statements.insert(name.to_vec());
        } else {
            self.statements.remove(name);
        }
        if self.seen_statements.len() < MAX_NAMES {
            self.seen_statements.insert(name.to_vec());
        }
    }

    fn define_portal(&mut self, name: &[u8], from_current: bool) {
        // A Bind of the unnamed portal replaces it; one PostgreSQL skipped leaves the old one
        // only inside a transaction block open across the change (see the README).
        let fresh = from_current && (name.is_empty() || !self.seen_portals.contains(name));
        if fresh {
            self.portals.insert(name.to_vec());
        } else {
            self.portals.remove(name);
        }
        if self.seen_portals.len() < MAX_NAMES {
            self.seen_portals.insert(name.to_vec());
        }
    }

    /// A protocol message on its way upstream. `Err`: an Execute of a portal defined before
    /// the role changed, which a restricted role (`restricted`) may not run.
    pub fn frame(&mut self, frame: &Frame, restricted: bool) -> Result<(), PgError> {
        let result = match frame.tag {
            b'P' => {
                if let Some(name) = parse_name(frame) {
                    self.define_statement(name);
                }
                Ok(())
            }
            b'B' => {
                if let Ok(b) = decode_bind(frame) {
                    let current = self.statements.contains(b.statement);
                    self.define_portal(b.portal, current);
                }
                Ok(())
            }
            b'E' => match decode_execute(frame) {
                Ok(portal) if restricted && self.changed && !self.portals.contains(portal) => {
                    Err(self.stale("portal", portal))
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        self.batch_start = matches!(frame.tag, b'S' | b'Q');
        result
    }

    /// What a statement text does to names (`ops`, in order). `Err`: it runs a prepared
    /// statement or fetches from a cursor defined before the role changed.
    pub fn text(&mut self, ops: &[NameOp], restricted: bool) -> Result<(), PgError> {
        for op in ops {
            match op {
                NameOp::Prepare(n) => self.define_statement(n.as_bytes()),
                NameOp::Declare { name, .. } => self.define_portal(name.as_bytes(), true),
                NameOp::Execute(n) | NameOp::Explain(n)
                    if restricted && self.changed && !self.statements.contains(n.as_bytes()) =>
                {
                    return Err(self.stale("prepared statement", n.as_bytes()));
                }
                NameOp::Fetch { name, moves: false }
                    if restricted && self.changed && !self.portals.contains(name.as_bytes()) =>
                {
                    return Err(self.stale("cursor", name.as_bytes()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn stale(&self, what: &str, name: &[u8]) -> PgError {
        PgError::insufficient_privilege(format!(
            "pgvakt: {what} \"{}\" was defined before this session's policy role changed to {} (a grant began or ended, or the policy was reloaded); it is not run",
            String::from_utf8_lossy(name),
            self.role.as_deref().unwrap_or("?")
        ))
        .with_hint("Prepare the statement or declare the cursor again, under a name not used before in this session.")
    }
}

/// Whether `sql` may define a prepared statement or cursor: a cheap look for the words before
/// PostgreSQL's parser is asked (most statements hold neither).
pub fn may_define_names(sql: &str) -> bool {
    let b = sql.as_bytes();
    [b"prepare".as_slice(), b"declare".as_slice()]
        .iter()
        .any(|w| b.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::encode_parse;

    fn bind(portal: &[u8], statement: &[u8]) -> Frame {
        let mut body = portal.to_vec();
        body.push(0);
        body.extend_from_slice(statement);
        body.push(0);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        Frame::build(b'B', &body)
    }

    fn execute(portal: &[u8]) -> Frame {
        let mut body = portal.to_vec();
        body.push(0);
        body.extend_from_slice(&[0, 0, 0, 0]);
        Frame::build(b'E', &body)
    }

    fn sync() -> Frame {
        Frame::build(b'S', &[])
    }

    #[test]
    fn nothing_is_checked_until_the_role_changes() {
        let mut e = Epochs::new();
        e.enter("admin");
        assert!(e.frame(&execute(b"never bound"), true).is_ok());
        assert!(e.text(&[NameOp::Execute("p".into())], true).is_ok());
        e.enter("admin");
        assert!(!e.checking());
    }

    #[test]
    fn names_from_before_the_change_are_refused_and_new_ones_run() {
        let mut e = Epochs::new();
        e.enter("admin");
        e.frame(&encode_parse(b"s1", "SELECT 1", &[]), false)
            .unwrap();
        e.frame(&bind(b"held", b"s1"), false).unwrap();
        e.text(&[NameOp::Prepare("p".into())], false).unwrap();
        e.enter("nobody");
        let err = e.frame(&execute(b"held"), true).unwrap_err();
        assert_eq!(err.code, "42501");
        assert!(err.message.contains("changed to nobody"), "{}", err.message);
        // A portal bound now from a statement prepared before is just as old.
        e.frame(&sync(), true).unwrap();
        e.frame(&bind(b"", b"s1"), true).unwrap();
        assert!(e.frame(&execute(b""), true).is_err());
        assert!(e.text(&[NameOp::Execute("p".into())], true).is_err());
        // Defined since the change: runs.
        e.frame(&sync(), true).unwrap();
        e.frame(&encode_parse(b"s2", "SELECT 1", &[]), true)
            .unwrap();
        e.frame(&bind(b"", b"s2"), true).unwrap();
        assert!(e.frame(&execute(b""), true).is_ok());
        e.text(
            &[NameOp::Prepare("q".into()), NameOp::Execute("q".into())],
            true,
        )
        .unwrap();
        // An unrestricted role runs anything (what was decided before is no wider).
        assert!(e.frame(&execute(b"held"), false).is_ok());
    }

    #[test]
    fn a_name_used_before_stays_old_even_when_defined_again() {
        let mut e = Epochs::new();
        e.enter("admin");
        e.frame(&encode_parse(b"s1", "SELECT 1", &[]), false)
            .unwrap();
        e.text(
            &[NameOp::Declare {
                name: "c".into(),
                hold: true,
            }],
            false,
        )
        .unwrap();
        e.enter("nobody");
        // PostgreSQL refuses these (the names exist) and keeps the old definitions.
        e.frame(&encode_parse(b"s1", "SELECT 2", &[]), true)
            .unwrap();
        e.frame(&bind(b"p", b"s1"), true).unwrap();
        assert!(e.frame(&execute(b"p"), true).is_err());
        e.text(
            &[NameOp::Declare {
                name: "c".into(),
                hold: false,
            }],
            true,
        )
        .unwrap();
        let fetch = NameOp::Fetch {
            name: "c".into(),
            moves: false,
        };
        assert!(e.text(&[fetch], true).is_err());
    }

    #[test]
    fn an_unnamed_statement_defined_after_a_possible_error_in_its_batch_is_not_trusted() {
        let mut e = Epochs::new();
        e.enter("admin");
        e.frame(&encode_parse(b"", "SELECT 1", &[]), false).unwrap();
        e.enter("nobody");
        e.frame(&sync(), true).unwrap();
        // Parse '' after another message: PostgreSQL may have skipped it after an error.
        e.frame(&execute(b"x"), true).unwrap_err();
        e.frame(&encode_parse(b"", "SELECT 2", &[]), true).unwrap();
        e.frame(&sync(), true).unwrap();
        e.frame(&bind(b"", b""), true).unwrap();
        assert!(e.frame(&execute(b""), true).is_err());
        // At the start of a batch it counts.
        e.frame(&sync(), true).unwrap();
        e.frame(&encode_parse(b"", "SELECT 3", &[]), true).unwrap();
        e.frame(&bind(b"", b""), true).unwrap();
        assert!(e.frame(&execute(b""), true).is_ok());
    }
}
