//! Prepared statements, portals and cursors as the policy changes under them (see [`epoch`]):
//! what each name was defined as, and deciding it again when a restricted role runs it after
//! a reload.

use std::sync::Arc;
use std::time::SystemTime;

use super::epoch::{self, Definition};
use super::{Inner, SessionPolicy};
use crate::analysis::session_names::{name_ops, NameOp};
use crate::analysis::Outcome;
use crate::policy::model::RoleRules;
use crate::policy::PolicySet;
use crate::protocol::{Frame, PgError};

impl SessionPolicy {
    /// A protocol message on its way upstream, for the names it defines and runs. `Err`: an
    /// Execute of a portal a restricted role may not run: defined under an earlier policy role,
    /// or under an earlier policy and decided differently now.
    pub fn protocol(&mut self, frame: &Frame) -> Result<(), PgError> {
        let Some(inner) = self.inner.clone() else {
            return Ok(());
        };
        if !matches!(frame.tag, b'P' | b'E') {
            return self.epochs.frame(frame, false, &mut |_| Ok(()));
        }
        let set = inner.store.current();
        let role = set
            .resolve(&self.user, &self.groups, SystemTime::now())
            .role;
        let catalog = inner
            .catalog_generation
            .load(std::sync::atomic::Ordering::Acquire);
        self.epochs.enter(role.name(), &set.version, catalog);
        let restricted = !role.is_unrestricted();
        let mut epochs = std::mem::take(&mut self.epochs);
        let r = epochs.frame(frame, restricted, &mut |def| {
            self.redecide(&inner, &set, role.as_ref(), def)
        });
        self.epochs = epochs;
        r
    }

    /// A restricted role's statement text decided as forwarding `decided.1` for `decided.0`:
    /// the names it defines (as the Parse `parsing`, or with PREPARE and DECLARE) and runs.
    /// `Err`: it runs a name the role may not run now.
    pub(super) fn follow_names(
        &mut self,
        inner: &Arc<Inner>,
        set: &PolicySet,
        rules: &dyn RoleRules,
        (sql, forwarded): (&str, &str),
        parsing: Option<Vec<u8>>,
    ) -> Result<(), PgError> {
        let defines = epoch::may_define_names(sql);
        let definition = |search_path: &[String]| Definition {
            text: sql.to_owned(),
            search_path: search_path.to_vec(),
            forwarded: forwarded.to_owned(),
        };
        if self.epochs.checking() || defines {
            let def = defines.then(|| definition(&self.search_path));
            let mut epochs = std::mem::take(&mut self.epochs);
            let r = epochs.text(&name_ops(sql), def, true, &mut |def| {
                self.redecide(inner, set, rules, def)
            });
            self.epochs = epochs;
            r?;
        }
        if let Some(name) = parsing {
            let def = definition(&self.search_path);
            self.epochs.parsed(&name, def);
        }
        Ok(())
    }

    /// `def` decided again under the policy in force: `Ok` when PostgreSQL would receive
    /// exactly what it received when the name was defined.
    fn redecide(
        &mut self,
        inner: &Inner,
        set: &PolicySet,
        rules: &dyn RoleRules,
        def: &Definition,
    ) -> Result<(), String> {
        // A text that runs another name (a Parse of `EXECUTE p` or `FETCH c`) would run that
        // name as it was decided, which deciding the text again does not look into.
        let runs_a_name = name_ops(&def.text).iter().any(|op| match op {
            NameOp::Execute(_) | NameOp::Explain(_) => true,
            NameOp::Fetch { moves, .. } => !moves,
            _ => false,
        });
        if runs_a_name {
            return Err(
                "It runs a prepared statement or cursor itself, which may have been decided under the earlier policy or schema."
                    .to_owned(),
            );
        }
        // PostgreSQL keeps the search_path a statement was prepared under.
        let path = std::mem::replace(&mut self.search_path, def.search_path.clone());
        let (outcome, filled) = self.analysed(inner, set, rules, &def.text);
        self.search_path = path;
        match outcome.as_ref() {
            Outcome::Forward(a) if filled.as_deref().unwrap_or(&a.sql) == def.forwarded => Ok(()),
            Outcome::Forward(_) => Err(format!(
                "Under the policy in force now (version {}) it is rewritten differently: a mask, row rule or column it reads changed for role {}.",
                set.version,
                rules.name()
            )),
            Outcome::Refuse(e) => Err(format!(
                "Under the policy in force now (version {}) it is refused: {}",
                set.version, e.to_pg_error().message
            )),
        }
    }
}
