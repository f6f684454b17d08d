//! The session's prepared statements and portals as PostgreSQL holds them, with what running
//! each one reads. One namespace per kind, shared by the protocol and SQL as in PostgreSQL:
//! a Parse and `PREPARE` both make prepared statements (`EXECUTE` runs either, `DEALLOCATE` and
//! Close drop either); a Bind and `DECLARE` both make portals (`FETCH` and Execute read either).
//!
//! A name exists once PostgreSQL said so: a Parse, Bind, `PREPARE` or `DECLARE` is a proposal
//! until its success arrives (ParseComplete, BindComplete, the command's CommandComplete), and
//! a refused or failed one never creates the name. Requests sent before the answer see the
//! oldest proposal, which is what PostgreSQL keeps when several race for one name. Drops apply
//! when their success arrives; portals end with their transaction, except cursors declared
//! `WITH HOLD` in a transaction that committed.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Audited, ResultForm};
use crate::analysis::session_names::NameOp;

/// What a prepared statement or a portal runs.
#[derive(Clone)]
pub struct Def {
    pub audited: Audited,
    /// Name ops of its text, resolved each time it runs (a prepared `FETCH c` reads what `c`
    /// is then).
    pub ops: Arc<[NameOp]>,
    /// Its text, for the record of a name whose reads are unknown.
    pub text: Arc<str>,
    /// A restricted role's statement that only reads: it may run while its intent record
    /// syncs, its answers held until the record is on disk (nothing of it runs upstream that
    /// a failed record would leave unaccounted for).
    pub reads_only: bool,
}

#[derive(Clone)]
pub struct Portal {
    pub def: Def,
    hold: bool,
    /// Declared in the transaction still open: a held cursor survives only its commit.
    fresh: bool,
    /// Intent record written for its first Execute; later parts of the portal share it.
    pub intent: Option<String>,
}

struct Slot<T> {
    current: Option<T>,
    proposed: Vec<(u64, T)>,
    /// A drop of `current` is in flight (Close, `DEALLOCATE`, `CLOSE`, `DISCARD ALL`).
    dropping: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            current: None,
            proposed: Vec::new(),
            dropping: false,
        }
    }
}

impl<T> Slot<T> {
    /// What a request sent now will find. The unnamed statement and portal are replaced by
    /// each Parse or Bind (drivers send several in one pipeline), a named one only once freed.
    fn seen(&self, unnamed: bool) -> Option<&T> {
        let newest = self.proposed.last().map(|(_, t)| t);
        let oldest = self.proposed.first().map(|(_, t)| t);
        if unnamed || (self.dropping && oldest.is_some()) {
            let proposal = if unnamed { newest } else { oldest };
            return proposal.or(self.current.as_ref());
        }
        self.current.as_ref().or(oldest)
    }

    fn seen_mut(&mut self, unnamed: bool) -> Option<&mut T> {
        let use_proposal =
            (unnamed || self.dropping || self.current.is_none()) && !self.proposed.is_empty();
        if !use_proposal {
            return self.current.as_mut();
        }
        if unnamed {
            self.proposed.last_mut().map(|(_, t)| t)
        } else {
            self.proposed.first_mut().map(|(_, t)| t)
        }
    }

    fn is_empty(&self) -> bool {
        self.current.is_none() && self.proposed.is_empty()
    }

    /// A new definition is in flight while the name seems taken and no drop was sent: it
    /// fails if the name is still there, and succeeds if PostgreSQL already dropped it in a
    /// way pgvakt does not follow (`ROLLBACK TO SAVEPOINT`, `COMMIT AND CHAIN`). Until its
    /// answer, what a use of the name runs is not known.
    fn in_doubt(&self) -> bool {
        self.current.is_some() && !self.proposed.is_empty() && !self.dropping
    }
}

/// Which namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Statement,
    Portal,
}

/// Names a session may hold while records are written (beyond it a Parse is refused and new
/// portals are not followed: their reads are then recorded as unknown).
pub const MAX_NAMES: usize = 100_000;

#[derive(Default)]
pub struct Names {
    statements: HashMap<Vec<u8>, Slot<Def>>,
    portals: HashMap<Vec<u8>, Slot<Portal>>,
    next: u64,
}

/// What running a text reads, with the names as they stand.
pub struct Resolved {
    pub audited: Audited,
    /// How each statement's result is changed for the client (hidden columns, origins).
    pub hidden: Vec<ResultForm>,
    /// The command that runs a name's reads (`EXECUTE`, `FETCH`, `MOVE`), for its record.
    pub command: Option<&'static str>,
    /// A cursor or portal the text uses whose definition is in doubt (see `Slot::in_doubt`).
    pub doubt: Option<String>,
}

impl Names {
    pub fn statement(&self, name: &[u8]) -> Option<&Def> {
        self.statements.get(name)?.seen(name.is_empty())
    }

    pub fn portal(&self, name: &[u8]) -> Option<&Portal> {
        self.portals.get(name)?.seen(name.is_empty())
    }

    /// Whether a use of the named portal sent now may run another definition than the one
    /// `portal` finds. The unnamed portal is replaced by each Bind, so it is never in doubt.
    pub fn portal_in_doubt(&self, name: &[u8]) -> bool {
        !name.is_empty() && self.portals.get(name).is_some_and(Slot::in_doubt)
    }

    /// A drop was sent: requests sent after it no longer find the current definition if a
    /// new one is proposed. None: all of the kind.
    pub fn dropping(&mut self, kind: Kind, name: Option<&[u8]>) {
        fn mark<T>(map: &mut HashMap<Vec<u8>, Slot<T>>, name: Option<&[u8]>) {
            match name {
                Some(n) => {
                    if let Some(slot) = map.get_mut(n) {
                        slot.dropping = true;
                    }
                }
                None => map.values_mut().for_each(|s| s.dropping = true),
            }
        }
        match kind {
            Kind::Statement => mark(&mut self.statements, name),
            Kind::Portal => mark(&mut self.portals, name),
        }
    }

    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }

    pub fn propose_statement(&mut self, name: &[u8], def: Def) -> u64 {
        self.next += 1;
        let id = self.next;
        self.statements
            .entry(name.to_vec())
            .or_default()
            .proposed
            .push((id, def));
        id
    }

    /// None when the session holds too many portals to follow another.
    pub fn propose_portal(&mut self, name: &[u8], def: Def, hold: bool) -> Option<u64> {
        if self.portals.len() >= MAX_NAMES && !self.portals.contains_key(name) {
            return None;
        }
        self.next += 1;
        let id = self.next;
        let portal = Portal {
            def,
            hold,
            fresh: true,
            intent: None,
        };
        self.portals
            .entry(name.to_vec())
            .or_default()
            .proposed
            .push((id, portal));
        Some(id)
    }

    /// The intent record the portal's later parts share.
    pub fn set_portal_intent(&mut self, name: &[u8], intent: &str) {
        if let Some(p) = self
            .portals
            .get_mut(name)
            .and_then(|slot| slot.seen_mut(name.is_empty()))
        {
            p.intent = Some(intent.to_owned());
        }
    }

    /// PostgreSQL created the proposed name.
    pub fn confirm(&mut self, kind: Kind, name: &[u8], id: u64) {
        match kind {
            Kind::Statement => confirm(&mut self.statements, name, id),
            Kind::Portal => confirm(&mut self.portals, name, id),
        }
    }

    /// PostgreSQL refused or skipped the proposal: the name is as it was.
    pub fn withdraw(&mut self, kind: Kind, name: &[u8], id: u64) {
        match kind {
            Kind::Statement => withdraw(&mut self.statements, name, id),
            Kind::Portal => withdraw(&mut self.portals, name, id),
        }
    }

    /// `name` dropped; None: all of the kind (proposals still in flight were sent later, so
    /// they stay).
    pub fn drop_current(&mut self, kind: Kind, name: Option<&[u8]>) {
        match kind {
            Kind::Statement => drop_current(&mut self.statements, name),
            Kind::Portal => drop_current(&mut self.portals, name),
        }
    }

    /// A transaction ended: its portals end with it, but for cursors declared `WITH HOLD`
    /// (if it committed, or earlier).
    pub fn transaction_end(&mut self, committed: bool) {
        self.portals.retain(|_, slot| {
            if let Some(p) = &mut slot.current {
                if p.hold && (committed || !p.fresh) {
                    p.fresh = false;
                } else {
                    slot.current = None;
                }
            }
            !slot.is_empty()
        });
    }

    /// What running a text reads: its own analysis `audited` and, for each `EXECUTE`,
    /// `FETCH` or `MOVE` in `ops`, what the name it runs reads. `analysing`: a name pgvakt never
    /// saw defined is a possible personal-data read (otherwise nothing is known).
    pub fn resolve(
        &self,
        audited: &Audited,
        ops: &[NameOp],
        text: &str,
        analysing: bool,
    ) -> Resolved {
        if ops.is_empty() {
            return Resolved {
                hidden: vec![audited.form()],
                audited: audited.clone(),
                command: None,
                doubt: None,
            };
        }
        // Definitions and drops read nothing now: the text's own reads count only when it also
        // holds other statements (their reads are not told apart from the definitions').
        let mut merged = if ops.contains(&NameOp::Other) {
            audited.clone()
        } else {
            Audited::No
        };
        let mut command = None;
        let mut doubt = None;
        let mut hidden = Vec::with_capacity(ops.len());
        let mut changed = Changed::default();
        for op in ops {
            let Some((def, cmd, in_text)) = self.runs(op, &mut changed, &mut doubt) else {
                hidden.push(ResultForm::default());
                continue;
            };
            // A name this very text (re)defined or dropped runs what the text defined: its
            // reads are the text's own, and a text of several statements has no hidden
            // columns.
            let reads = match def {
                _ if in_text => audited.clone(),
                Some(d) => d.audited.clone(),
                None if analysing => Audited::Unknown(Arc::from(text)),
                None => Audited::No,
            };
            // MOVE returns no rows, EXPLAIN a plan: neither carries the hidden columns.
            hidden.push(if cmd == "MOVE" || cmd == "EXPLAIN" || in_text {
                ResultForm::default()
            } else {
                reads.form()
            });
            if !matches!(reads, Audited::No | Audited::Watched(_)) && command.is_none() {
                command = Some(cmd);
            }
            merged = merged.merge(reads);
        }
        Resolved {
            audited: merged,
            hidden,
            command,
            doubt,
        }
    }

    /// For an op that runs a name (`EXECUTE`, `EXPLAIN ANALYZE EXECUTE`, `FETCH`, `MOVE`): the name's
    /// definition, the command, and whether the text itself (re)defined or dropped the name
    /// before. Other ops define or drop names: they are noted in `changed`, and give None.
    fn runs<'a>(
        &'a self,
        op: &NameOp,
        changed: &mut Changed,
        doubt: &mut Option<String>,
    ) -> Option<(Option<&'a Def>, &'static str, bool)> {
        Some(match op {
            NameOp::Execute(n) => (
                self.statement(n.as_bytes()),
                "EXECUTE",
                changed.statement(n),
            ),
            NameOp::Explain(n) => (
                self.statement(n.as_bytes()),
                "EXPLAIN",
                changed.statement(n),
            ),
            NameOp::Fetch { name, moves } => {
                let in_text = changed.portal(name);
                if !in_text && self.portal_in_doubt(name.as_bytes()) {
                    doubt.get_or_insert_with(|| name.clone());
                }
                (
                    self.portal(name.as_bytes()).map(|p| &p.def),
                    if *moves { "MOVE" } else { "FETCH" },
                    in_text,
                )
            }
            other => {
                changed.note(other);
                return None;
            }
        })
    }
}

/// The names a text defined or dropped in the statements before the one being resolved.
#[derive(Default)]
struct Changed {
    statements: Vec<String>,
    portals: Vec<String>,
    all_statements: bool,
    all_portals: bool,
}

impl Changed {
    fn note(&mut self, op: &NameOp) {
        match op {
            NameOp::Prepare(n) | NameOp::Deallocate(Some(n)) => self.statements.push(n.clone()),
            NameOp::Declare { name, .. } | NameOp::Close(Some(name)) => {
                self.portals.push(name.clone())
            }
            NameOp::Deallocate(None) => self.all_statements = true,
            NameOp::Close(None) => self.all_portals = true,
            NameOp::DiscardAll => {
                self.all_statements = true;
                self.all_portals = true;
            }
            NameOp::Execute(_) | NameOp::Explain(_) | NameOp::Fetch { .. } | NameOp::Other => {}
        }
    }

    fn statement(&self, n: &str) -> bool {
        self.all_statements || self.statements.iter().any(|s| s == n)
    }

    fn portal(&self, n: &str) -> bool {
        self.all_portals || self.portals.iter().any(|p| p == n)
    }
}

fn confirm<T>(map: &mut HashMap<Vec<u8>, Slot<T>>, name: &[u8], id: u64) {
    if let Some(slot) = map.get_mut(name) {
        if let Some(i) = slot.proposed.iter().position(|(p, _)| *p == id) {
            let (_, t) = slot.proposed.remove(i);
            slot.current = Some(t);
            slot.dropping = false;
        }
    }
}

fn withdraw<T>(map: &mut HashMap<Vec<u8>, Slot<T>>, name: &[u8], id: u64) {
    if let Some(slot) = map.get_mut(name) {
        slot.proposed.retain(|(p, _)| *p != id);
        if slot.is_empty() {
            map.remove(name);
        }
    }
}

fn drop_current<T>(map: &mut HashMap<Vec<u8>, Slot<T>>, name: Option<&[u8]>) {
    match name {
        Some(n) => {
            if let Some(slot) = map.get_mut(n) {
                slot.current = None;
                slot.dropping = false;
                if slot.is_empty() {
                    map.remove(n);
                }
            }
        }
        None => map.retain(|_, slot| {
            slot.current = None;
            slot.dropping = false;
            !slot.is_empty()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> Def {
        Def {
            reads_only: false,
            audited: Audited::Unknown(Arc::from(text)),
            ops: Arc::from(Vec::new()),
            text: Arc::from(text),
        }
    }

    fn text_of(d: Option<&Def>) -> Option<&str> {
        d.map(|d| &*d.text)
    }

    #[test]
    fn a_refused_proposal_never_creates_the_name() {
        let mut n = Names::default();
        let bad = n.propose_statement(b"s", def("bad"));
        let good = n.propose_statement(b"s", def("good"));
        // Before any answer the oldest proposal is what a request sees.
        assert_eq!(text_of(n.statement(b"s")), Some("bad"));
        n.withdraw(Kind::Statement, b"s", bad);
        assert_eq!(text_of(n.statement(b"s")), Some("good"));
        n.confirm(Kind::Statement, b"s", good);
        assert_eq!(text_of(n.statement(b"s")), Some("good"));
        n.drop_current(Kind::Statement, Some(b"s"));
        assert!(n.statement(b"s").is_none());
        assert_eq!(n.statement_count(), 0);
    }

    #[test]
    fn a_name_being_dropped_gives_way_to_its_next_definition() {
        let mut n = Names::default();
        let old = n.propose_statement(b"s", def("old"));
        n.confirm(Kind::Statement, b"s", old);
        n.dropping(Kind::Statement, Some(b"s"));
        assert_eq!(text_of(n.statement(b"s")), Some("old"));
        n.propose_statement(b"s", def("new"));
        assert_eq!(text_of(n.statement(b"s")), Some("new"));
    }

    #[test]
    fn each_unnamed_parse_replaces_the_last() {
        let mut n = Names::default();
        let a = n.propose_statement(b"", def("a"));
        n.propose_statement(b"", def("b"));
        assert_eq!(text_of(n.statement(b"")), Some("b"));
        n.confirm(Kind::Statement, b"", a);
        assert_eq!(text_of(n.statement(b"")), Some("b"));
    }

    #[test]
    fn drop_all_keeps_proposals_sent_after_it() {
        let mut n = Names::default();
        let a = n.propose_statement(b"a", def("a"));
        n.confirm(Kind::Statement, b"a", a);
        n.propose_statement(b"b", def("b"));
        n.drop_current(Kind::Statement, None);
        assert!(n.statement(b"a").is_none());
        assert_eq!(text_of(n.statement(b"b")), Some("b"));
    }

    #[test]
    fn portals_end_with_their_transaction_but_committed_held_cursors() {
        let mut n = Names::default();
        for (name, hold) in [(&b"p"[..], false), (b"held", true), (b"lost", true)] {
            let id = n.propose_portal(name, def("x"), hold).expect("room");
            n.confirm(Kind::Portal, name, id);
        }
        n.transaction_end(true);
        assert!(n.portal(b"p").is_none());
        assert!(n.portal(b"held").is_some());
        // A held cursor from a committed transaction survives a later rollback; one declared
        // in the rolled-back transaction does not.
        let id = n.propose_portal(b"new", def("x"), true).expect("room");
        n.confirm(Kind::Portal, b"new", id);
        n.transaction_end(false);
        assert!(n.portal(b"held").is_some());
        assert!(n.portal(b"new").is_none());
    }

    #[test]
    fn executing_a_name_reads_what_it_was_defined_to_read() {
        let mut n = Names::default();
        let id = n.propose_statement(b"p", def("PREPARE p AS SELECT email FROM contacts"));
        n.confirm(Kind::Statement, b"p", id);
        let ops = [NameOp::Execute("p".into())];
        let r = n.resolve(&Audited::No, &ops, "EXECUTE p", true);
        assert!(matches!(&r.audited, Audited::Unknown(t) if t.contains("PREPARE p")));
        assert_eq!(r.command, Some("EXECUTE"));
        assert_eq!(r.hidden, vec![ResultForm::default()]);
        // A name never seen: a possible read, recorded under the executing text.
        let ops = [NameOp::Fetch {
            name: "c".into(),
            moves: false,
        }];
        let r = n.resolve(&Audited::No, &ops, "FETCH c", true);
        assert!(matches!(&r.audited, Audited::Unknown(t) if &**t == "FETCH c"));
        // A text that only defines reads nothing now.
        let ops = [NameOp::Prepare("q".into())];
        let r = n.resolve(
            &def("PREPARE q AS ...").audited,
            &ops,
            "PREPARE q AS ...",
            true,
        );
        assert!(matches!(r.audited, Audited::No));
    }
}
