//! The client side of a session's audit trail: which requests read or write personal data,
//! in the order PostgreSQL will answer them, and the refusal of personal-data reads while the
//! audit trail cannot be written (nothing is read without being recorded).
//!
//! With `audit.durability: before_release` a Query, or the first Execute of a Bind, that may
//! touch personal data is forwarded only once its intent record is synced; if it cannot be,
//! the client gets the audit error instead and the refusal is counted. A restricted role's
//! read that runs alone is forwarded while its record syncs; the result side holds its
//! answers until the sync is done (`AuditTrail::take_hold`).

use std::sync::{Arc, Mutex};

use super::names::{Def, Resolved, MAX_NAMES};
use super::{AuditTrail, Audited, Pending, ResultForm};
use crate::analysis::session_names::{name_ops, NameOp};
use crate::audit::Syncing;
use crate::config::Durability;
use crate::enforce::{Observed, SessionPolicy, Verdict};
use crate::protocol::message::{decode_bind, decode_execute, decode_target};
use crate::protocol::{Frame, PgError};

pub struct FrontAudit {
    pub trail: Arc<Mutex<AuditTrail>>,
    /// A policy is loaded, so statements are analysed; without one nothing is known to be
    /// personal data and only session events are recorded.
    analysing: bool,
    /// Policy generation and time the session facts were last refreshed for.
    synced: Option<(usize, std::time::Instant)>,
}

impl FrontAudit {
    pub fn new(trail: AuditTrail, analysing: bool) -> FrontAudit {
        FrontAudit {
            trail: Arc::new(Mutex::new(trail)),
            analysing,
            synced: None,
        }
    }

    /// Whether the trail holds as many unanswered requests as it follows: the next one must
    /// wait for `room`.
    pub fn is_full(&self) -> bool {
        self.lock().is_full()
    }

    pub async fn room(&self) {
        AuditTrail::room(&self.trail).await;
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, AuditTrail> {
        match self.trail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// What a statement the policy let through touches. `readable`: `sql` reads as PostgreSQL
    /// will read it (see `texts`); an unrestricted role's text that does not is unknown.
    fn audited(
        policy: &mut SessionPolicy,
        verdict: &Verdict,
        sql: &str,
        readable: bool,
    ) -> Audited {
        match verdict {
            Verdict::Rewrite(a) if a.touches_personal_data() => Audited::Yes(a.analysed.clone()),
            Verdict::Rewrite(_) | Verdict::Refuse(_) => Audited::No,
            Verdict::Forward if !readable => Audited::Unknown(sql.into()),
            Verdict::Forward => match policy.observe(sql) {
                Some(Observed::Reads(a)) => Audited::Yes(a),
                Some(Observed::Unknown) => Audited::Unknown(sql.into()),
                None => Audited::Watched(sql.into()),
            },
        }
    }

    /// Before a statement is forwarded: its audit entry, or the error that replaces it when
    /// it touches personal data and the trail cannot be written.
    async fn admit(&self, audited: &Audited) -> Result<(), PgError> {
        if !audited.is_recorded() {
            return Ok(());
        }
        if let Some(e) = self.lock().read_block() {
            return Err(e);
        }
        let handle = self.lock().handle().clone();
        if handle.is_healthy() {
            return Ok(());
        }
        handle.refused_unrecorded();
        Err(unavailable())
    }

    /// With `durability: before_release`, write the intent record of an audited statement and
    /// wait until it is synced; its event id, for the completion record. The error replaces the
    /// statement when the record cannot be made durable. A statement that only reads
    /// (`reads_only`, and no name it runs) and runs alone (`AuditTrail::runs_alone`) does not
    /// wait: it goes with the sync still under way, which its answers wait for instead
    /// (`Pending::held`), so PostgreSQL's work and the fsync overlap.
    async fn intent(&self, r: &Resolved, reads_only: bool) -> Result<Intent, PgError> {
        let (handle, rec, reads_only) = {
            let trail = self.lock();
            if trail.handle().durability() != Durability::BeforeRelease {
                return Ok(None);
            }
            let Some(rec) = trail.intent_record(&r.audited, r.command) else {
                return Ok(None);
            };
            let reads_only = reads_only && r.command.is_none() && trail.runs_alone();
            (trail.handle().clone(), rec, reads_only)
        };
        let id = rec.event_id.clone();
        let synced = match handle.submit_durable(rec).await {
            Ok(syncing) if reads_only => {
                return Ok(Some((id, Some(syncing))));
            }
            Ok(syncing) => syncing.wait().await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => Ok(Some((id, None))),
            Err(e) => {
                handle.refused_unrecorded();
                tracing::error!(error = %e, "intent record not durable; statement refused");
                Err(unavailable())
            }
        }
    }

    pub async fn refused(&self, sql: &str, err: &PgError) {
        let trail = self.snapshot();
        trail.refused(sql, err).await;
    }

    /// A copy of the record-writing half (handle and session facts) to await on without
    /// holding the lock.
    fn snapshot(&self) -> AuditTrail {
        self.lock().writer()
    }

    /// The name ops of a text PostgreSQL will run (none for one pgvakt refused: it runs
    /// nothing).
    fn ops_of(&self, verdict: &Verdict, sql: &str) -> Vec<NameOp> {
        if !self.analysing || matches!(verdict, Verdict::Refuse(_)) {
            return Vec::new();
        }
        name_ops(sql)
    }

    /// A simple-protocol Query: returns the error to send instead, if it must be refused.
    pub async fn query(
        &mut self,
        policy: &mut SessionPolicy,
        verdict: &Verdict,
        sql: &str,
        readable: bool,
    ) -> Result<(), PgError> {
        self.sync_role(policy);
        if let Verdict::Refuse(e) = verdict {
            self.refused(sql, e).await;
        }
        let audited = Self::audited(policy, verdict, sql, readable);
        let ops = self.ops_of(verdict, sql);
        let resolved = self
            .lock()
            .names
            .resolve(&audited, &ops, sql, self.analysing);
        let reads_only = reads_only(verdict);
        // A text that defines or drops names (PREPARE, DECLARE ... WITH HOLD, DEALLOCATE)
        // leaves them changed even when its answers are withheld: it waits for its record.
        let overlaps = reads_only && ops.is_empty();
        let admitted = match (&resolved.doubt, self.admit(&resolved.audited).await) {
            (Some(name), _) => Err(in_doubt(name.as_bytes())),
            (None, Ok(())) => self.intent(&resolved, overlaps).await,
            (None, Err(e)) => Err(e),
        };
        let def = Def {
            audited,
            ops: Arc::from(Vec::new()),
            text: Arc::from(sql),
            reads_only,
        };
        match admitted {
            Ok(intent) => {
                self.lock().query(pending(resolved, intent), ops, &def);
                Ok(())
            }
            Err(e) => {
                self.lock().query(Pending::none(), Vec::new(), &def);
                Err(e)
            }
        }
    }

    /// A Parse: proposes the statement name, unless pgvakt refuses the Parse (then PostgreSQL
    /// never creates it).
    pub async fn parse(
        &mut self,
        policy: &mut SessionPolicy,
        name: &[u8],
        verdict: &Verdict,
        sql: &str,
        readable: bool,
    ) -> Result<(), PgError> {
        self.sync_role(policy);
        if let Verdict::Refuse(e) = verdict {
            self.refused(sql, e).await;
            self.lock().parse(name, None);
            return Ok(());
        }
        let audited = Self::audited(policy, verdict, sql, readable);
        let ops = self.ops_of(verdict, sql);
        // A statement whose reads depend on names is judged when it runs.
        if ops.is_empty() {
            if let Err(e) = self.admit(&audited).await {
                self.lock().parse(name, None);
                return Err(e);
            }
        }
        let mut trail = self.lock();
        if trail.names.statement_count() >= MAX_NAMES && trail.names.statement(name).is_none() {
            trail.parse(name, None);
            return Err(PgError::error(
                "54000",
                format!("pgvakt: more than {MAX_NAMES} prepared statements in one session; close some first"),
            ));
        }
        let def = Def {
            audited,
            reads_only: reads_only(verdict) && ops.is_empty(),
            ops: Arc::from(ops),
            text: Arc::from(sql),
        };
        let id = trail.names.propose_statement(name, def);
        trail.parse(name, Some(id));
        Ok(())
    }

    /// What a statement or portal runs, as a request sent now finds it.
    fn def_of(&self, trail: &AuditTrail, kind: u8, name: &[u8]) -> Def {
        let found = if kind == b'S' {
            trail.names.statement(name).cloned()
        } else {
            trail.names.portal(name).map(|p| p.def.clone())
        };
        found.unwrap_or_else(|| {
            let audited = if self.analysing {
                Audited::Unknown(Arc::from(if kind == b'S' {
                    "(a prepared statement pgvakt did not see)"
                } else {
                    "(a portal pgvakt did not see)"
                }))
            } else {
                Audited::No
            };
            Def {
                text: Arc::from(""),
                audited,
                ops: Arc::from(Vec::new()),
                reads_only: false,
            }
        })
    }

    /// A Bind; returns the Bind to forward instead when its statement carries hidden columns
    /// and the client gave one result format per column (PostgreSQL wants one for each).
    pub fn bind(&mut self, frame: &Frame) -> Option<Frame> {
        let Ok(b) = decode_bind(frame) else {
            return None;
        };
        let mut trail = self.lock();
        let def = self.def_of(&trail, b'S', b.statement);
        let hidden = trail
            .names
            .resolve(&def.audited, &def.ops, &def.text, self.analysing)
            .hidden
            .first()
            .map_or(0, |f| f.hidden);
        let id = trail.names.propose_portal(b.portal, def, false);
        let padded = (hidden > 0 && b.result_formats.len() > 1)
            .then(|| pad_result_formats(frame, b.result_formats.len(), hidden))
            .flatten();
        trail.bind(b.portal, id, b.statement, b.result_formats);
        padded
    }

    /// `Err`: the Describe must not be forwarded (its portal is in doubt, as for an Execute:
    /// PostgreSQL would describe a cursor pgvakt does not know, hidden columns included).
    pub fn describe(&mut self, frame: &Frame) -> Result<(), PgError> {
        let Ok((kind, name)) = decode_target(frame) else {
            return Ok(());
        };
        let mut trail = self.lock();
        let def = self.def_of(&trail, kind, name);
        let resolved = trail
            .names
            .resolve(&def.audited, &def.ops, &def.text, self.analysing);
        let doubt = match &resolved.doubt {
            Some(n) => Some(in_doubt(n.as_bytes())),
            None => (kind == b'P' && trail.names.portal_in_doubt(name)).then(|| in_doubt(name)),
        };
        if let Some(e) = doubt {
            // The stand-in's error is matched to this entry, which expects nothing else.
            trail.describe(kind, name, ResultForm::default());
            return Err(e);
        }
        let hidden = resolved.hidden.first().cloned().unwrap_or_default();
        trail.describe(kind, name, hidden);
        Ok(())
    }

    /// An Execute: with `durability: before_release` its portal's intent is synced first (once
    /// per Bind). `Err`: the Execute must not be forwarded; the client gets the error.
    pub async fn execute(&mut self, frame: &Frame) -> Result<Option<Frame>, PgError> {
        let Ok(portal) = decode_execute(frame) else {
            return Ok(None);
        };
        let (def, resolved, intent, doubt) = {
            let trail = self.lock();
            let def = self.def_of(&trail, b'P', portal);
            let resolved = trail
                .names
                .resolve(&def.audited, &def.ops, &def.text, self.analysing);
            let intent = trail.names.portal(portal).and_then(|p| p.intent.clone());
            let doubt = match &resolved.doubt {
                Some(name) => Some(in_doubt(name.as_bytes())),
                None => trail
                    .names
                    .portal_in_doubt(portal)
                    .then(|| in_doubt(portal)),
            };
            (def, resolved, intent, doubt)
        };
        let ops: Vec<NameOp> = def.ops.to_vec();
        let intent = match (intent, doubt) {
            (_, Some(e)) => {
                self.lock()
                    .execute(portal, Pending::none(), Vec::new(), &def);
                return Err(e);
            }
            // The intent is on disk: it was synced before the first part was forwarded (an
            // intent still syncing then is not kept for the portal, see below).
            (Some(id), None) => Some((id, None)),
            (None, None) => {
                let admitted = match self.admit(&resolved.audited).await {
                    Ok(()) => self.intent(&resolved, def.reads_only).await,
                    Err(e) => Err(e),
                };
                match admitted {
                    Ok(id) => id,
                    Err(e) => {
                        self.lock()
                            .execute(portal, Pending::none(), Vec::new(), &def);
                        return Err(e);
                    }
                }
            }
        };
        // A write whose hidden keys are its whole result returns rows the client did not ask
        // for; with a row limit its portal would be suspended where the client expects it to
        // complete, so it runs to completion, as the write alone would.
        let unlimited = resolved
            .hidden
            .first()
            .is_some_and(|f| f.whole)
            .then(|| without_row_limit(frame, portal))
            .flatten();
        let mut trail = self.lock();
        // Later parts of the portal run on this intent without a check of their own, so only
        // an intent known to be on disk is kept for them: one still syncing may fail, and its
        // answers be withheld while a cursor declared WITH HOLD outlives the refusal.
        if let Some((id, None)) = &intent {
            trail.names.set_portal_intent(portal, id);
        }
        trail.execute(portal, pending(resolved, intent), ops, &def);
        Ok(unlimited)
    }

    /// An Execute the policy refused (its portal was defined under an earlier role): followed
    /// as a request whose answer is the refusal.
    pub fn refuse_execute(&mut self, frame: &Frame) {
        let Ok(portal) = decode_execute(frame) else {
            return;
        };
        let def = {
            let trail = self.lock();
            self.def_of(&trail, b'P', portal)
        };
        self.lock()
            .execute(portal, Pending::none(), Vec::new(), &def);
    }

    pub fn close(&mut self, frame: &Frame) {
        if let Ok((kind, name)) = decode_target(frame) {
            self.lock().close(kind, name);
        }
    }

    pub fn sync(&mut self) {
        self.lock().sync();
    }

    /// A request answered up to ReadyForQuery that reads nothing audited (FunctionCall).
    pub fn other(&mut self) {
        let def = Def {
            audited: Audited::No,
            ops: Arc::from(Vec::new()),
            text: Arc::from(""),
            reads_only: false,
        };
        self.lock().query(Pending::none(), Vec::new(), &def);
    }

    /// Refresh the role and facts records carry after a reload, and once a second (grants
    /// can expire without a reload).
    fn sync_role(&mut self, policy: &SessionPolicy) {
        let generation = policy.policy_generation();
        if self.synced.is_some_and(|(g, at)| {
            g == generation && at.elapsed() < std::time::Duration::from_secs(1)
        }) {
            return;
        }
        self.synced = Some((generation, std::time::Instant::now()));
        let facts = policy.audit_facts();
        let role = policy.role().map(|(r, _)| r);
        let version = policy.policy_version();
        let purpose = policy.purpose();
        let purposes = policy.purposes();
        let mut t = self.lock();
        t.set_facts(facts);
        if let Some(r) = role {
            t.set_role(&r, version, purpose, purposes);
        }
    }
}

/// An intent record's event id, and the sync its statement's answers wait for when the
/// statement was forwarded without waiting.
type Intent = Option<(String, Option<Syncing>)>;

fn pending(resolved: Resolved, intent: Intent) -> Pending {
    let (id, syncing) = intent.map_or((None, None), |(id, s)| (Some(id), s));
    Pending::new(resolved, id).held(syncing)
}

/// A restricted role's statement that only reads (see `Def::reads_only`).
fn reads_only(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Rewrite(a) if a.analysed.reads_only())
}

/// What the client gets instead of a statement that may touch personal data while its record
/// cannot be written.
pub(crate) fn unavailable() -> PgError {
    PgError::insufficient_privilege(
        "pgvakt: personal data cannot be read or written now: the audit trail cannot be written",
    )
    .with_hint("Reads of personal data resume as soon as audit records can be written again.")
}

/// What the client gets instead of a use of a cursor or portal while a new definition of its
/// name is in flight: which of the two it would read is not known until PostgreSQL answers.
fn in_doubt(name: &[u8]) -> PgError {
    PgError::insufficient_privilege(format!(
        "pgvakt: cursor \"{}\" is being defined again while in use; wait for the DECLARE or Bind to complete before using it",
        String::from_utf8_lossy(name)
    ))
}

/// The Execute of `portal` with no row limit, if it had one.
fn without_row_limit(frame: &Frame, portal: &[u8]) -> Option<Frame> {
    let limit = frame.body().get(portal.len() + 1..)?;
    if limit == [0, 0, 0, 0] {
        return None;
    }
    let mut body = portal.to_vec();
    body.push(0);
    body.extend_from_slice(&0i32.to_be_bytes());
    Some(Frame::build(b'E', &body))
}

/// The Bind with `extra` text result formats appended to its `n` per-column formats (the
/// formats are the message's last field).
fn pad_result_formats(frame: &Frame, n: usize, extra: usize) -> Option<Frame> {
    let body = frame.body();
    let cut = body.len().checked_sub(2 + 2 * n)?;
    let mut out = body[..cut].to_vec();
    out.extend_from_slice(&i16::try_from(n + extra).ok()?.to_be_bytes());
    out.extend_from_slice(body.get(cut + 2..)?);
    out.extend(std::iter::repeat_n([0u8, 0u8], extra).flatten());
    Some(Frame::build(b'B', &out))
}
