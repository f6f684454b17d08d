//! Names defined under an earlier policy. A statement is decided (analysed, masked, refused)
//! when it is prepared or declared, under the role and policy of that moment; PostgreSQL keeps
//! the decided text. When the session's role changes — a grant's `valid_until` passes, a
//! reload maps the user elsewhere — or a reload changes the policy, what was prepared before
//! would still run as decided then. So from the first change on, each prepared statement and
//! portal (protocol or SQL, cursors included) is checked before a restricted role runs it:
//! - defined under another role: refused, and the client prepares it again;
//! - defined under the same role and an earlier policy or catalog (a reload, or DDL that pgvakt
//!   has since read, such as a view redefined to show another column): its text is decided
//!   again under the policy and catalog in force (with the search_path it was prepared under, which PostgreSQL keeps too);
//!   it runs when what PostgreSQL received for it is exactly what would be forwarded now, and
//!   is refused otherwise.
//!
//! A definition counts only if PostgreSQL cannot have kept an older one under the name: a name
//! used before in the session stays old (a Parse of an existing name fails, and the old one
//! stays); the unnamed statement counts when parsed at the start of a batch (after an error
//! PostgreSQL skips the rest of the batch, definitions included); a portal counts when bound
//! from a statement that counts, and carries that statement's definition. Pure bookkeeping; no
//! IO: deciding a text again is the caller's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::analysis::session_names::NameOp;
use crate::protocol::message::{decode_bind, decode_execute, parse_name};
use crate::protocol::{Frame, PgError};

/// What a prepared statement or cursor was defined as, to decide it again after a reload.
#[derive(Debug, PartialEq, Eq)]
pub struct Definition {
    /// The client's text: a Parse's query, or the whole Query holding the PREPARE or DECLARE.
    pub text: String,
    /// The search_path the text was analysed under.
    pub search_path: Vec<String>,
    /// What PostgreSQL received for the text.
    pub forwarded: String,
}

impl Definition {
    fn size(&self) -> usize {
        self.text.len()
            + self.forwarded.len()
            + self.search_path.iter().map(String::len).sum::<usize>()
    }
}

/// A name that counts: what it was defined as, and the policy it was last decided under.
#[derive(Debug, Clone)]
struct Entry {
    /// None when not known (an unrestricted role's text, which was not analysed; a definition
    /// PostgreSQL may have skipped; past the memory bound): it cannot be decided again.
    def: Option<Arc<Definition>>,
    version: Arc<str>,
}

/// Decides a definition again under the policy in force: `Err` says why it would now be
/// forwarded differently, or refused.
pub type Redecide<'a> = dyn FnMut(&Definition) -> Result<(), String> + 'a;

#[derive(Debug, Default)]
pub struct Epochs {
    /// The policy role of the current epoch, and what else decisions depend on: the policy's
    /// version and the generation of pgvakt's catalog of the schema (`version` joins them).
    role: Option<String>,
    policy: String,
    catalog: u64,
    version: Arc<str>,
    /// The role or the policy changed at least once in this session: names are checked from
    /// then on; `role_changed`: the role did.
    changed: bool,
    role_changed: bool,
    /// Every statement and portal name defined in the session.
    seen_statements: HashSet<Vec<u8>>,
    seen_portals: HashSet<Vec<u8>>,
    /// Names that count, defined since the role last changed.
    statements: HashMap<Vec<u8>, Entry>,
    portals: HashMap<Vec<u8>, Entry>,
    /// No extended-protocol message since the last Sync or Query: the next one cannot be
    /// skipped for an error before it.
    batch_start: bool,
    /// The statement the Parse being decided defines (set by the Parse, taken by the decision).
    parsing: Option<Vec<u8>>,
    /// Bytes of definition text kept, against `MAX_TEXT_BYTES`.
    text_bytes: usize,
}

/// Cap on names followed; beyond it new names are not remembered as seen, and count as defined
/// before (uses are refused after a change rather than followed without bound).
const MAX_NAMES: usize = 100_000;

/// Cap on definition text kept per session; beyond it new definitions are kept without their
/// text, and are refused after a reload that changes the policy instead of decided again.
const MAX_TEXT_BYTES: usize = 16 << 20;

impl Epochs {
    pub fn new() -> Epochs {
        Epochs {
            batch_start: true,
            ..Default::default()
        }
    }

    /// The role, policy version and catalog generation the session's next statement runs
    /// under; a different one starts a new epoch.
    pub fn enter(&mut self, role: &str, policy: &str, catalog: u64) {
        match &self.role {
            Some(r) if r == role => {}
            Some(_) => {
                self.changed = true;
                self.role_changed = true;
                self.statements.clear();
                self.portals.clear();
                self.text_bytes = 0;
                self.role = Some(role.to_owned());
            }
            None => self.role = Some(role.to_owned()),
        }
        if self.policy != policy || self.catalog != catalog || self.version.is_empty() {
            self.changed = !self.version.is_empty() || self.changed;
            self.policy = policy.to_owned();
            self.catalog = catalog;
            self.version = format!("{policy}/{catalog}").into();
        }
    }

    /// Whether names are checked (the role or the policy changed in this session).
    pub fn checking(&self) -> bool {
        self.changed
    }

    fn current(&self, def: Option<Arc<Definition>>) -> Entry {
        Entry {
            def,
            version: self.version.clone(),
        }
    }

    /// A statement definition that counts when `fresh`; the unnamed statement parsed after an
    /// error PostgreSQL may have skipped keeps counting only when both of the definitions
    /// PostgreSQL may hold were decided under the policy in force (and then is not decided
    /// again: which text it holds is not known).
    fn define_statement(&mut self, name: &[u8], def: Option<Arc<Definition>>) -> bool {
        let room = self.seen_statements.len() < MAX_NAMES;
        let fresh = if name.is_empty() {
            self.batch_start
        } else {
            room && !self.seen_statements.contains(name)
        };
        if fresh {
            let entry = self.current(def);
            let old = self.statements.insert(name.to_vec(), entry);
            self.release(old);
        } else if name.is_empty()
            && self
                .statements
                .get(name)
                .is_some_and(|e| e.version == self.version)
        {
            let entry = self.current(None);
            let old = self.statements.insert(Vec::new(), entry);
            self.release(old);
        } else {
            let old = self.statements.remove(name);
            self.release(old);
        }
        if room {
            self.seen_statements.insert(name.to_vec());
        }
        fresh
    }

    fn define_portal(&mut self, name: &[u8], from: Option<Entry>) {
        // A Bind of the unnamed portal replaces it; one PostgreSQL skipped leaves the old one
        // only inside a transaction block open across the change (see the README).
        let room = self.seen_portals.len() < MAX_NAMES;
        let fresh = name.is_empty() || (room && !self.seen_portals.contains(name));
        let old = match from.filter(|_| fresh) {
            Some(entry) => self.portals.insert(name.to_vec(), entry),
            None => self.portals.remove(name),
        };
        self.release(old);
        if room {
            self.seen_portals.insert(name.to_vec());
        }
    }

    /// The statement name a Parse being decided defines, if the definition counts.
    pub fn take_parsing(&mut self) -> Option<Vec<u8>> {
        self.parsing.take()
    }

    /// The Parse of `name` (from [`Epochs::take_parsing`]) was decided: PostgreSQL receives
    /// `def.forwarded` under the policy in force.
    pub fn parsed(&mut self, name: &[u8], def: Definition) {
        let def = self.kept(def);
        let entry = self.current(def);
        let old = match self.statements.get_mut(name) {
            Some(e) => Some(std::mem::replace(e, entry)),
            None => Some(entry),
        };
        self.release(old);
    }

    /// An entry no longer held: its definition's text no longer counts once nothing holds it.
    fn release(&mut self, old: Option<Entry>) {
        if let Some(def) = old.and_then(|e| e.def) {
            if Arc::strong_count(&def) == 1 {
                self.text_bytes = self.text_bytes.saturating_sub(def.size());
            }
        }
    }

    /// `def`, unless keeping it would pass the memory bound.
    fn kept(&mut self, def: Definition) -> Option<Arc<Definition>> {
        let size = def.size();
        if self.text_bytes + size > MAX_TEXT_BYTES {
            return None;
        }
        self.text_bytes += size;
        Some(Arc::new(def))
    }

    /// A protocol message on its way upstream. `Err`: an Execute of a portal a restricted
    /// role (`restricted`) may not run: defined under another role, or under an earlier policy
    /// and decided differently now (`redecide`).
    pub fn frame(
        &mut self,
        frame: &Frame,
        restricted: bool,
        redecide: &mut Redecide<'_>,
    ) -> Result<(), PgError> {
        self.parsing = None;
        let result = match frame.tag {
            b'P' => {
                if let Some(name) = parse_name(frame) {
                    if self.define_statement(name, None) {
                        self.parsing = Some(name.to_vec());
                    }
                }
                Ok(())
            }
            b'B' => {
                if let Ok(b) = decode_bind(frame) {
                    let from = self.statements.get(b.statement).cloned();
                    self.define_portal(b.portal, from);
                }
                Ok(())
            }
            b'E' => match decode_execute(frame) {
                Ok(portal) if restricted && self.changed => {
                    self.may_run(Kind::Portal, portal, redecide)
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        self.batch_start = matches!(frame.tag, b'S' | b'Q');
        result
    }

    /// What a statement text does to names (`ops`, in order); `def`: the text's definition,
    /// for the names it defines. `Err`: it runs a prepared statement or fetches from a cursor
    /// a restricted role may not run (as for [`Epochs::frame`]).
    pub fn text(
        &mut self,
        ops: &[NameOp],
        def: Option<Definition>,
        restricted: bool,
        redecide: &mut Redecide<'_>,
    ) -> Result<(), PgError> {
        let defines = ops
            .iter()
            .any(|op| matches!(op, NameOp::Prepare(_) | NameOp::Declare { .. }));
        let def = def.filter(|_| defines).and_then(|d| self.kept(d));
        let checked = restricted && self.changed;
        let mut result = Ok(());
        for op in ops {
            result = match op {
                NameOp::Prepare(n) => {
                    self.define_statement(n.as_bytes(), def.clone());
                    Ok(())
                }
                NameOp::Declare { name, .. } => {
                    let entry = self.current(def.clone());
                    self.define_portal(name.as_bytes(), Some(entry));
                    Ok(())
                }
                NameOp::Execute(n) | NameOp::Explain(n) if checked => {
                    self.may_run(Kind::Statement, n.as_bytes(), redecide)
                }
                NameOp::Fetch { name, moves: false } if checked => {
                    self.may_run(Kind::Cursor, name.as_bytes(), redecide)
                }
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        // Kept by no name (each was defined before, or none ran): its text no longer counts.
        let version = self.version.clone();
        self.release(def.map(|def| Entry {
            def: Some(def),
            version,
        }));
        result
    }

    /// Whether a restricted role may run `name` now that names are checked.
    fn may_run(
        &mut self,
        kind: Kind,
        name: &[u8],
        redecide: &mut Redecide<'_>,
    ) -> Result<(), PgError> {
        let version = self.version.clone();
        let names = match kind {
            Kind::Statement => &mut self.statements,
            Kind::Portal | Kind::Cursor => &mut self.portals,
        };
        let Some(entry) = names.get_mut(name) else {
            return Err(self.stale(kind, name));
        };
        if entry.version == version {
            return Ok(());
        }
        let why = match &entry.def {
            Some(def) => match redecide(def) {
                Ok(()) => {
                    // Decided the same now: no need to decide it again until the next change.
                    entry.version = version;
                    return Ok(());
                }
                Err(why) => why,
            },
            None => "its text was not analysed when it was defined".to_owned(),
        };
        Err(self.policy_changed(kind, name, &why))
    }

    fn stale(&self, kind: Kind, name: &[u8]) -> PgError {
        if !self.role_changed {
            return self.policy_changed(kind, name, "pgvakt cannot tell which definition PostgreSQL holds under this name (it was defined more than once, or past the number of names followed)");
        }
        PgError::insufficient_privilege(format!(
            "pgvakt: {} \"{}\" was defined before this session's policy role changed to {} (a grant began or ended, or the policy was reloaded); it is not run",
            kind.noun(),
            String::from_utf8_lossy(name),
            self.role.as_deref().unwrap_or("?")
        ))
        .with_hint(AGAIN)
    }

    fn policy_changed(&self, kind: Kind, name: &[u8], why: &str) -> PgError {
        PgError::insufficient_privilege(format!(
            "pgvakt: {} \"{}\" was prepared before the policy or the schema changed, and it would not run as prepared under the policy in force now; it must be prepared again",
            kind.noun(),
            String::from_utf8_lossy(name),
        ))
        .with_detail(why.to_owned())
        .with_hint(AGAIN)
    }
}

const AGAIN: &str =
    "Prepare the statement or declare the cursor again, under a name not used before in this session.";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Statement,
    Portal,
    Cursor,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Statement => "prepared statement",
            Kind::Portal => "portal",
            Kind::Cursor => "cursor",
        }
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
#[path = "epoch_tests.rs"]
mod tests;
