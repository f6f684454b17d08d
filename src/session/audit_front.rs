//! The client side of a session's audit trail: which requests read or write personal data,
//! in the order PostgreSQL will answer them, and the refusal of personal-data reads while the
//! audit trail cannot be written (nothing is read without being recorded).
//!
//! With `audit.durability: before_release` a Query, or the first Execute of a Bind, that may
//! touch personal data is forwarded only once its intent record is synced; if it cannot be,
//! the client gets the audit error instead and the refusal is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::audit_trail::{AuditTrail, Audited};
use crate::config::Durability;
use crate::enforce::{Observed, SessionPolicy, Verdict};
use crate::protocol::message::{decode_bind, decode_execute, decode_target};
use crate::protocol::{Frame, PgError};

pub struct FrontAudit {
    pub trail: Arc<Mutex<AuditTrail>>,
    statements: HashMap<Vec<u8>, Audited>,
    portals: HashMap<Vec<u8>, Audited>,
    /// Intent records already synced for a bound portal (a portal run in several Executes,
    /// with row limits, has one intent).
    portal_intents: HashMap<Vec<u8>, String>,
    /// A policy is loaded, so statements are analysed; without one nothing is known to be
    /// personal data and only session events are recorded.
    analysing: bool,
    /// Policy generation and time the session facts were last refreshed for.
    synced: Option<(usize, std::time::Instant)>,
}

/// Prepared statements a session may have open while audit records are written (beyond it a
/// Parse is refused: forgetting one could misplace hidden columns); portals beyond it are
/// forgotten (their reads are then recorded as not analysed).
const MAX_NAMES: usize = 100_000;

impl FrontAudit {
    pub fn new(trail: AuditTrail, analysing: bool) -> FrontAudit {
        FrontAudit {
            trail: Arc::new(Mutex::new(trail)),
            statements: HashMap::new(),
            portals: HashMap::new(),
            portal_intents: HashMap::new(),
            analysing,
            synced: None,
        }
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
                None => Audited::No,
            },
        }
    }

    /// Before a statement is forwarded: its audit entry, or the error that replaces it when
    /// it touches personal data and the trail cannot be written.
    async fn admit(&self, audited: &Audited) -> Result<(), PgError> {
        if matches!(audited, Audited::No) {
            return Ok(());
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
    /// statement when the record cannot be made durable.
    async fn intent(&self, audited: &Audited) -> Result<Option<String>, PgError> {
        let (handle, rec) = {
            let trail = self.lock();
            if trail.handle().durability() != Durability::BeforeRelease {
                return Ok(None);
            }
            let Some(rec) = trail.intent_record(audited) else {
                return Ok(None);
            };
            (trail.handle().clone(), rec)
        };
        let id = rec.event_id.clone();
        match handle.record_durable(rec).await {
            Ok(()) => Ok(Some(id)),
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
        let admitted = match self.admit(&audited).await {
            Ok(()) => self.intent(&audited).await,
            Err(e) => Err(e),
        };
        match admitted {
            Ok(intent) => {
                self.lock().query(audited, intent);
                Ok(())
            }
            Err(e) => {
                self.lock().query(Audited::No, None);
                Err(e)
            }
        }
    }

    /// A Parse: remembered per statement name for the Executes that follow.
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
        }
        let audited = Self::audited(policy, verdict, sql, readable);
        self.admit(&audited).await?;
        if !name.is_empty() && self.statements.contains_key(name) {
            // PostgreSQL rejects a second statement of the same name (42P05) and keeps the
            // first: so does the audit trail's view of it.
            return Ok(());
        }
        if self.statements.len() >= MAX_NAMES {
            return Err(PgError::error(
                "54000",
                format!("pgvakt: more than {MAX_NAMES} prepared statements in one session; close some first"),
            ));
        }
        self.statements.insert(name.to_vec(), audited);
        Ok(())
    }

    /// A Bind; returns the Bind to forward instead when its statement carries hidden columns
    /// and the client gave one result format per column (PostgreSQL wants one for each).
    pub fn bind(&mut self, frame: &Frame) -> Option<Frame> {
        let Ok(b) = decode_bind(frame) else {
            return None;
        };
        let audited = self
            .statements
            .get(b.statement)
            .cloned()
            .unwrap_or_else(|| {
                if self.analysing {
                    Audited::Unknown(Arc::from("(prepared before pgvakt saw it)"))
                } else {
                    Audited::No
                }
            });
        if self.portals.len() >= MAX_NAMES {
            self.portals.clear();
        }
        let hidden = audited.hidden();
        self.portal_intents.remove(b.portal);
        self.portals.insert(b.portal.to_vec(), audited);
        let padded = (hidden > 0 && b.result_formats.len() > 1)
            .then(|| pad_result_formats(frame, b.result_formats.len(), hidden))
            .flatten();
        self.lock().bind(b.portal, b.statement, b.result_formats);
        padded
    }

    pub fn describe(&mut self, frame: &Frame) {
        if let Ok((kind, name)) = decode_target(frame) {
            let map = if kind == b'S' {
                &self.statements
            } else {
                &self.portals
            };
            let hidden = map.get(name).map_or(0, Audited::hidden);
            self.lock().describe(kind, name, hidden);
        }
    }

    /// An Execute: with `durability: before_release` its portal's intent is synced first (once
    /// per Bind). `Err`: the Execute must not be forwarded; the client gets the error.
    pub async fn execute(&mut self, frame: &Frame) -> Result<(), PgError> {
        let Ok(portal) = decode_execute(frame) else {
            return Ok(());
        };
        let audited = self.portals.get(portal).cloned().unwrap_or(Audited::No);
        let intent = match self.portal_intents.get(portal) {
            Some(id) => Some(id.clone()),
            None => match self.intent(&audited).await {
                Ok(id) => id,
                Err(e) => {
                    self.lock().execute(portal, Audited::No, None);
                    return Err(e);
                }
            },
        };
        if let Some(id) = &intent {
            if self.portal_intents.len() >= MAX_NAMES {
                self.portal_intents.clear();
            }
            self.portal_intents.insert(portal.to_vec(), id.clone());
        }
        self.lock().execute(portal, audited, intent);
        Ok(())
    }

    pub fn close(&mut self, frame: &Frame) {
        if let Ok((kind, name)) = decode_target(frame) {
            if kind == b'S' {
                self.statements.remove(name);
            } else {
                self.portals.remove(name);
                self.portal_intents.remove(name);
            }
            self.lock().close(kind, name);
        }
    }

    pub fn sync(&mut self) {
        self.lock().sync();
    }

    /// A request answered up to ReadyForQuery that reads nothing audited (FunctionCall).
    pub fn other(&mut self) {
        self.lock().query(Audited::No, None);
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
        let mut t = self.lock();
        t.set_facts(facts);
        if let Some(r) = role {
            t.set_role(&r, version);
        }
    }
}

/// What the client gets instead of a statement that may touch personal data while its record
/// cannot be written.
fn unavailable() -> PgError {
    PgError::insufficient_privilege(
        "pgvakt: personal data cannot be read or written now: the audit trail cannot be written",
    )
    .with_hint("Reads of personal data resume as soon as audit records can be written again.")
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
