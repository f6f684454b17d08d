//! The session's statement and portal names as PostgreSQL's answers confirm them: a request
//! proposes the names it defines or drops, a completion applies them, and a request that
//! failed or was skipped withdraws its proposals (PostgreSQL never created those names).

use super::answers::{Entry, Pending};
use super::names::{Def, Kind};
use super::AuditTrail;
use crate::analysis::session_names::NameOp;

impl AuditTrail {
    pub(super) fn propose(&mut self, ops: &[NameOp], def: &Def) -> Vec<Option<u64>> {
        for op in ops {
            match op {
                NameOp::Deallocate(n) => self
                    .names
                    .dropping(Kind::Statement, n.as_deref().map(str::as_bytes)),
                NameOp::Close(n) => self
                    .names
                    .dropping(Kind::Portal, n.as_deref().map(str::as_bytes)),
                NameOp::DiscardAll => {
                    self.names.dropping(Kind::Statement, None);
                    self.names.dropping(Kind::Portal, None);
                }
                _ => {}
            }
        }
        // A defined name runs the definition's reads, not the defining text's name ops.
        let body = Def {
            ops: std::sync::Arc::from(Vec::new()),
            ..def.clone()
        };
        ops.iter()
            .map(|op| match op {
                NameOp::Prepare(n) => {
                    Some(self.names.propose_statement(n.as_bytes(), body.clone()))
                }
                NameOp::Declare { name, hold } => {
                    self.names
                        .propose_portal(name.as_bytes(), body.clone(), *hold)
                }
                _ => None,
            })
            .collect()
    }

    /// Statement `index` of a request completed: the names it defines or drops change.
    pub(super) fn apply(&mut self, ops: &[NameOp], proposals: &[Option<u64>], index: usize) {
        let Some(op) = ops.get(index) else {
            return;
        };
        let proposal = proposals.get(index).copied().flatten();
        match op {
            NameOp::Prepare(n) => {
                if let Some(id) = proposal {
                    self.names.confirm(Kind::Statement, n.as_bytes(), id);
                }
                self.statement_shapes.remove(n.as_bytes());
            }
            NameOp::Declare { name, .. } => {
                if let Some(id) = proposal {
                    self.names.confirm(Kind::Portal, name.as_bytes(), id);
                }
                self.forget_portal(Some(name.as_bytes()));
            }
            NameOp::Deallocate(n) => self.drop_statement(n.as_deref().map(str::as_bytes)),
            NameOp::Close(n) => self.drop_portal(n.as_deref().map(str::as_bytes)),
            NameOp::DiscardAll => {
                self.drop_statement(None);
                self.drop_portal(None);
            }
            NameOp::Execute(_) | NameOp::Explain(_) | NameOp::Fetch { .. } | NameOp::Other => {}
        }
    }

    pub(super) fn drop_statement(&mut self, name: Option<&[u8]>) {
        self.names.drop_current(Kind::Statement, name);
        match name {
            Some(n) => {
                self.statement_shapes.remove(n);
            }
            None => self.statement_shapes.clear(),
        }
    }

    pub(super) fn drop_portal(&mut self, name: Option<&[u8]>) {
        self.names.drop_current(Kind::Portal, name);
        self.forget_portal(name);
    }

    pub(super) fn forget_portal(&mut self, name: Option<&[u8]>) {
        match name {
            Some(n) => {
                self.portal_shapes.remove(n);
                self.portal_formats.remove(n);
                self.portal_statements.remove(n);
            }
            None => {
                self.portal_shapes.clear();
                self.portal_formats.clear();
                self.portal_statements.clear();
            }
        }
    }

    /// ParseComplete, BindComplete, CloseComplete.
    pub(super) fn confirmed(&mut self, tag: u8) {
        let matches = matches!(
            (tag, self.queue.front()),
            (b'1', Some(Entry::Parse(..)))
                | (b'2', Some(Entry::Bind(..)))
                | (b'3', Some(Entry::Close(..)))
        );
        if !matches {
            return;
        }
        match self.queue.pop_front() {
            Some(Entry::Parse(name, proposal)) => {
                if let Some(id) = proposal {
                    self.names.confirm(Kind::Statement, &name, id);
                }
                self.statement_shapes.remove(&name);
            }
            Some(Entry::Bind(portal, proposal, statement, formats)) => {
                if let Some(id) = proposal {
                    self.names.confirm(Kind::Portal, &portal, id);
                }
                self.portal_shapes.remove(&portal);
                self.portal_formats.insert(portal.clone(), formats);
                self.portal_statements.insert(portal, statement);
            }
            Some(Entry::Close(Kind::Statement, name)) => self.drop_statement(Some(&name)),
            Some(Entry::Close(Kind::Portal, name)) => self.drop_portal(Some(&name)),
            _ => {}
        }
    }

    /// Proposals a request made that PostgreSQL never confirmed are dropped (confirmed ones
    /// are no longer proposals, so this leaves them).
    pub(super) fn withdraw(&mut self, e: &Entry) {
        match e {
            Entry::Query(p) | Entry::Execute(p, _) => self.withdraw_all(p),
            Entry::Parse(name, Some(id)) => self.names.withdraw(Kind::Statement, name, *id),
            Entry::Bind(portal, Some(id), ..) => self.names.withdraw(Kind::Portal, portal, *id),
            _ => {}
        }
    }

    pub(super) fn withdraw_all(&mut self, p: &Pending) {
        for (op, id) in p.ops.iter().zip(&p.proposals) {
            match (op, id) {
                (NameOp::Prepare(n), Some(id)) => {
                    self.names.withdraw(Kind::Statement, n.as_bytes(), *id)
                }
                (NameOp::Declare { name, .. }, Some(id)) => {
                    self.names.withdraw(Kind::Portal, name.as_bytes(), *id)
                }
                _ => {}
            }
        }
    }
}
