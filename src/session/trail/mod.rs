//! A session's audit trail: which statement each result belongs to, and the records written
//! for logins, refusals, personal-data reads and writes, anomalies and disconnects.
//!
//! Layout: `requests.rs` is the client side (what each request reads, intent records, the
//! refusal of reads that cannot be recorded), `answers.rs` the result side (PostgreSQL's
//! answers matched to requests, rows counted, subjects collected), `names.rs` the prepared
//! statements and portals the session holds, `rows.rs` the bytes of result messages. This file
//! holds the records.
//!
//! A read is recorded when it is executed: a Query, an Execute of a portal (each part of a
//! portal read with a row limit gets its own record), an `EXECUTE` of a prepared statement or
//! a `FETCH`/`MOVE` of a cursor, under what the name was defined to read.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::analysis::{Analysed, ColumnUse, ResultOrigin};
use crate::audit::{AuditHandle, EventType, Outcome, Record, Statement};
use crate::enforce::AuditFacts;
use crate::protocol::PgError;

mod answers;
mod name_answers;
pub mod names;
pub mod requests;
mod result_rows;
mod rows;

pub use answers::Pending;
use answers::{Entry, KeyColumn};

/// What one audited request reads or writes.
#[derive(Clone)]
pub enum Audited {
    /// Not personal data: answers are only matched, nothing is written.
    No,
    Yes(Arc<Analysed>),
    /// Could not be analysed (unrestricted role): recorded with subjects unknown.
    Unknown(Arc<str>),
    /// The text reads no personal data as far as pgvakt can tell (unrestricted role): recorded
    /// only if the result's columns come from personal-data columns (RowDescription origins).
    Watched(Arc<str>),
}

/// The session facts every record carries.
#[derive(Clone)]
pub struct SessionInfo {
    pub user: String,
    pub role: String,
    pub session_id: String,
    pub client_addr: SocketAddr,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub database: String,
    pub policy_version: Option<String>,
    /// The role's declared purpose and legal basis (`roles.*.purpose`, `legal_basis`).
    pub purpose: Option<(String, String)>,
    /// Mass-read alarms, when the policy sets limits.
    pub reads: Option<crate::access::reads::ReadWatch>,
    /// Names of the role's declared purposes (`roles.*.purposes`).
    pub purposes: Vec<String>,
}

/// What pgvakt changes in a statement's result before the client sees it: the trailing hidden
/// columns it strips (and whether they are the whole result), and the origins it puts back
/// into the RowDescription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultForm {
    pub hidden: usize,
    pub whole: bool,
    pub origins: Arc<[ResultOrigin]>,
}

impl Audited {
    /// How its results are changed for the client.
    pub fn form(&self) -> ResultForm {
        match self {
            Audited::Yes(a) => ResultForm {
                hidden: a.hidden,
                whole: a.hidden_whole,
                origins: a.origins.as_slice().into(),
            },
            _ => ResultForm::default(),
        }
    }

    /// Whether it is recorded whatever its results show.
    pub fn is_recorded(&self) -> bool {
        matches!(self, Audited::Yes(_) | Audited::Unknown(_))
    }

    /// The reads of two requests run as one: columns of both; unknown if either is.
    pub fn merge(self, other: Audited) -> Audited {
        match (self, other) {
            (Audited::No | Audited::Watched(_), b) => b,
            (a, Audited::No | Audited::Watched(_)) => a,
            (Audited::Unknown(t), _) | (_, Audited::Unknown(t)) => Audited::Unknown(t),
            (Audited::Yes(a), Audited::Yes(b)) => {
                let mut m = (*a).clone();
                for u in b.columns.iter() {
                    if !m.columns.contains(u) {
                        m.columns.push(u.clone());
                    }
                }
                for u in b.written.iter() {
                    if !m.written.contains(u) {
                        m.written.push(u.clone());
                    }
                }
                m.classes.extend(b.classes.iter().copied());
                Audited::Yes(Arc::new(m))
            }
        }
    }
}

/// Shape of a described statement or portal: its subject-key columns.
type Shape = Vec<KeyColumn>;

pub struct AuditTrail {
    handle: AuditHandle,
    info: SessionInfo,
    queue: VecDeque<Entry>,
    pub names: names::Names,
    statement_shapes: HashMap<Vec<u8>, Shape>,
    portal_shapes: HashMap<Vec<u8>, Shape>,
    /// Result formats a Bind asked for, per portal (one code applies to all columns).
    portal_formats: HashMap<Vec<u8>, Vec<i16>>,
    /// Statement each portal was bound to.
    portal_statements: HashMap<Vec<u8>, Vec<u8>>,
    facts: Option<Arc<AuditFacts>>,
    /// Transaction status of the last ReadyForQuery, whether an error came since and whether
    /// the last command was a ROLLBACK: a transaction that ends so did not commit.
    tx_status: u8,
    /// Queries and Executes sent since the last Sync (a Query is its own Sync).
    runs_since_sync: u32,
    errored: bool,
    rolled_back: bool,
    /// Signalled when answers free room in a full queue, for a client side waiting on it.
    room: Arc<tokio::sync::Notify>,
    waiting: bool,
}

/// Cap on requests awaiting their answers: a client that pipelines more waits (its requests
/// are not read) until PostgreSQL has answered some, so every answer is matched to its own
/// request and no entry is ever dropped.
const MAX_QUEUE: usize = 65_536;

impl AuditTrail {
    pub fn new(handle: AuditHandle, info: SessionInfo) -> AuditTrail {
        AuditTrail {
            handle,
            info,
            queue: VecDeque::new(),
            names: names::Names::default(),
            statement_shapes: HashMap::new(),
            portal_shapes: HashMap::new(),
            portal_formats: HashMap::new(),
            portal_statements: HashMap::new(),
            facts: None,
            tx_status: b'I',
            runs_since_sync: 0,
            errored: false,
            rolled_back: false,
            room: Arc::new(tokio::sync::Notify::new()),
            waiting: false,
        }
    }

    /// Wait until fewer than `MAX_QUEUE` requests await their answers (returns at once if so).
    /// The requests already read must have been forwarded, or no answer ever comes.
    pub async fn room(trail: &std::sync::Mutex<AuditTrail>) {
        let lock = || match trail.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        loop {
            let notify = lock().room.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut t = lock();
                if t.queue.len() < MAX_QUEUE {
                    return;
                }
                t.waiting = true;
            }
            notified.await;
        }
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_QUEUE
    }

    pub fn handle(&self) -> &AuditHandle {
        &self.handle
    }

    /// A trail with the same handle and session facts and nothing queued, for writing records
    /// without holding the session's lock across an await.
    pub fn writer(&self) -> AuditTrail {
        AuditTrail::new(self.handle.clone(), self.info.clone())
    }

    pub fn set_facts(&mut self, facts: Option<Arc<AuditFacts>>) {
        self.facts = facts;
    }

    pub fn set_role(
        &mut self,
        role: &str,
        policy_version: Option<String>,
        purpose: Option<(String, String)>,
        purposes: Vec<String>,
    ) {
        if self.info.role != role {
            self.info.role = role.to_owned();
        }
        self.info.policy_version = policy_version;
        self.info.purpose = purpose;
        self.info.purposes = purposes;
    }

    fn base(&self, event: EventType, outcome: Outcome) -> Record {
        let mut r = Record::new(event, outcome);
        r.user = Some(self.info.user.clone());
        r.role = Some(self.info.role.clone());
        r.session_id = Some(self.info.session_id.clone());
        r.client_addr = Some(self.info.client_addr.to_string());
        r.application_name = self.info.application_name.clone();
        r.tls_version = self.info.tls_version.clone();
        r.database = Some(self.info.database.clone());
        r.policy_version = self.info.policy_version.clone();
        r.purposes = self.info.purposes.clone();
        if let Some((purpose, basis)) = &self.info.purpose {
            r.purpose = Some(purpose.clone());
            r.legal_basis = Some(basis.clone());
        }
        r
    }

    /// Name each table's subject type, so a search for a person also finds the reads of
    /// their rows whose subjects are not known.
    fn subject_types(&self, r: &mut Record) {
        if let Some(facts) = &self.facts {
            for t in &mut r.tables {
                t.subject = facts.subject_types.get(&t.table).cloned();
            }
        }
    }

    /// The `statement_intent` record written before an audited statement is forwarded: who,
    /// the statement, and the columns and categories the analysis says it touches ("personal
    /// data may be read" when it could not be analysed). None for statements not audited.
    pub fn intent_record(&self, audited: &Audited, command: Option<&str>) -> Option<Record> {
        if !audited.is_recorded() {
            return None;
        }
        let mut r = self.base(EventType::StatementIntent, Outcome::Ok);
        describe(&mut r, audited, command, &[]);
        self.subject_types(&mut r);
        if matches!(audited, Audited::Unknown(_)) {
            r.message = Some("not analysed: possible personal-data read".into());
        }
        Some(r)
    }

    pub async fn login(&self) {
        self.write(self.base(EventType::Login, Outcome::Ok)).await;
    }

    pub async fn disconnect(&self, duration_ms: u64) {
        let mut r = self.base(EventType::Disconnect, Outcome::Ok);
        r.duration_ms = Some(duration_ms);
        self.write(r).await;
    }

    pub async fn refused(&self, sql: &str, err: &PgError) {
        let mut r = self.base(EventType::Refused, Outcome::Refused);
        r.sqlstate = Some(err.code.to_owned());
        let (fingerprint, normalized) = crate::analysis::normalize_text(sql);
        r.statement = Some(Statement {
            class: crate::audit::StatementClass::Utility,
            command: crate::analysis::first_word(sql)
                .unwrap_or_default()
                .to_ascii_uppercase(),
            fingerprint,
            normalized,
        });
        r.message = Some(err.message.clone());
        let disagreement = err
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with(crate::analysis::authority::DISAGREEMENT));
        let statement = r.statement.clone();
        self.write(r).await;
        if disagreement {
            // Someone sent text that PostgreSQL and the analysis read differently: refused,
            // and worth a look as an attempt to get past the analysis.
            let mut a = self.base(EventType::Anomaly, Outcome::Refused);
            a.sqlstate = Some(err.code.to_owned());
            a.statement = statement;
            a.message = Some(format!("parser disagreement: {}", err.message));
            self.write(a).await;
        }
    }

    pub async fn anomaly(&self, columns: &[String]) {
        let mut r = self.base(EventType::Anomaly, Outcome::Error);
        r.message = Some(format!(
            "protected columns arrived unmasked and were replaced with NULL: {}",
            columns.join(", ")
        ));
        self.write(r).await;
    }

    async fn write(&self, r: Record) {
        let crossing = self.count_read(&r);
        if let Err(e) = self.handle.record(r).await {
            tracing::error!(error = %e, "audit record not written");
        }
        if let Some(c) = crossing {
            self.read_limit_crossed(c).await;
        }
    }

    /// Count a completed read of personal data against the role's limits.
    fn count_read(&self, r: &Record) -> Option<crate::access::reads::Crossing> {
        let watch = self.info.reads.as_ref()?;
        if r.event != EventType::StatementRead || r.outcome != Outcome::Ok {
            return None;
        }
        let subjects = r.subjects.iter().flat_map(|g| {
            g.refs
                .iter()
                .map(move |s| crate::access::reads::subject(&g.table, s))
        });
        watch.limits.observe(
            &self.info.user,
            &self.info.role,
            r.rows.unwrap_or(0),
            subjects,
            std::time::Instant::now(),
        )
    }

    /// The anomaly record, log line and metric of a crossed read limit.
    async fn read_limit_crossed(&self, c: crate::access::reads::Crossing) {
        if let Some(w) = &self.info.reads {
            w.metrics
                .read_limit_crossings
                .get_or_create(&crate::access::metrics::CrossingLabel {
                    limit: c.limit,
                    action: c.action.as_str(),
                })
                .inc();
        }
        tracing::warn!(user = %self.info.user, role = %self.info.role, limit = c.limit, count = c.count, max = c.max, action = c.action.as_str(), "read limit crossed");
        let mut rec = self.base(EventType::Anomaly, Outcome::Ok);
        rec.message = Some(format!(
            "read limit: {} {} within an hour, over {} {} ({}); action {}",
            c.count,
            if c.limit == "rows_per_hour" {
                "personal rows"
            } else {
                "distinct subjects"
            },
            c.limit,
            c.max,
            c.origin,
            match c.action {
                crate::policy::limits::LimitAction::Block => {
                    "block: further personal-data reads by this user are refused"
                }
                crate::policy::limits::LimitAction::Alert => "alert",
            }
        ));
        if let Err(e) = self.handle.record(rec).await {
            tracing::error!(error = %e, "audit record not written");
        }
    }

    /// The refusal of a personal-data read while the user is blocked by a read limit.
    pub fn read_block(&self) -> Option<PgError> {
        let watch = self.info.reads.as_ref()?;
        let message = watch.refusal(&self.info.user, std::time::Instant::now())?;
        Some(
            PgError::insufficient_privilege(message)
                .with_hint("An operator can lift it with `pgvakt admin reset-limits <user>`."),
        )
    }

    /// Write records for finished statements. A record the writer does not accept is counted
    /// (`pgvakt_audit_records_dropped_total`) and logged.
    pub async fn write_all(&self, records: Vec<Record>) {
        for r in records {
            self.write(r).await;
        }
    }
}

/// The statement and the tables and columns it touches, as a record lists them; `command` when
/// a name's reads are run by another statement (`EXECUTE`, `FETCH`); `found`: personal columns
/// the result's origins showed.
fn describe(r: &mut Record, audited: &Audited, command: Option<&str>, found: &[ColumnUse]) {
    match audited {
        Audited::Yes(a) => {
            let (fingerprint, normalized) = a.normalized().clone();
            r.statement = Some(Statement {
                class: a
                    .classes
                    .first()
                    .copied()
                    .map(Into::into)
                    .unwrap_or(crate::audit::StatementClass::Utility),
                command: a.command.clone(),
                fingerprint,
                normalized,
            });
            r.tables = rows::tables(&a.columns, &a.written);
        }
        Audited::Unknown(sql) | Audited::Watched(sql) => {
            let (fingerprint, normalized) = crate::analysis::normalize_text(sql);
            r.statement = Some(Statement {
                class: crate::audit::StatementClass::Utility,
                command: crate::analysis::first_word(sql)
                    .unwrap_or_default()
                    .to_ascii_uppercase(),
                fingerprint,
                normalized,
            });
        }
        Audited::No => {}
    }
    if !found.is_empty() {
        let mut tables = rows::tables(found, &[]);
        for t in tables.drain(..) {
            match r
                .tables
                .iter_mut()
                .find(|x| x.table == t.table && x.access == t.access)
            {
                Some(x) => {
                    for c in t.columns {
                        if !x.columns.iter().any(|y| y.column == c.column) {
                            x.columns.push(c);
                        }
                    }
                }
                None => r.tables.push(t),
            }
        }
    }
    if let (Some(c), Some(s)) = (command, r.statement.as_mut()) {
        s.command = c.to_owned();
    }
}
