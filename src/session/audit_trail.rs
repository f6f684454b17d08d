//! A session's audit trail: which statement each result belongs to, and the records written
//! for logins, refusals, personal-data reads and writes, anomalies and disconnects.
//!
//! The client side queues one entry per request that PostgreSQL answers in order (Query,
//! Execute, Describe of a statement or portal, Sync). The result side walks the answers,
//! matches them to entries, counts rows and, where a result carries a data subject's key
//! column (by its origin in RowDescription), collects keyed pseudonyms of the subjects
//! returned. Only results of audited statements that carry such a column have their rows
//! decoded.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::audit_rows;
use crate::analysis::Analysed;
use crate::audit::{AuditHandle, EventType, Outcome, Record, Statement, SubjectSet};
use crate::enforce::AuditFacts;
use crate::protocol::message;
use crate::protocol::PgError;

/// What one audited request reads or writes.
#[derive(Clone)]
pub enum Audited {
    /// Not personal data: answers are only matched, nothing is written.
    No,
    Yes(Arc<Analysed>),
    /// Could not be analysed (unrestricted role): recorded with subjects unknown.
    Unknown(Arc<str>),
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
}

/// A result column that identifies a data subject.
#[derive(Clone, Debug)]
struct KeyColumn {
    index: usize,
    table: String,
    type_oid: u32,
    binary: bool,
}

impl Audited {
    /// Trailing hidden columns its results carry.
    pub fn hidden(&self) -> usize {
        match self {
            Audited::Yes(a) => a.hidden,
            _ => 0,
        }
    }
}

enum Entry {
    Query(Pending),
    Execute(Pending, Vec<u8>),
    /// Statement or portal name, and the hidden columns its RowDescription carries.
    DescribeStatement(Vec<u8>, usize),
    DescribePortal(Vec<u8>, usize),
    Sync,
}

struct Pending {
    audited: Audited,
    started: Instant,
    rows: u64,
    sqlstate: Option<String>,
    keys: Option<Vec<KeyColumn>>,
    subjects: Option<SubjectSet>,
    copy: bool,
    /// Event id of the intent record written before the statement was forwarded.
    intent: Option<String>,
}

impl Pending {
    fn new(audited: Audited, intent: Option<String>) -> Pending {
        Pending {
            intent,
            audited,
            started: Instant::now(),
            rows: 0,
            sqlstate: None,
            keys: None,
            subjects: None,
            copy: false,
        }
    }

    fn is_audited(&self) -> bool {
        !matches!(self.audited, Audited::No)
    }
}

/// Shape of a described statement or portal: its subject-key columns.
type Shape = Vec<KeyColumn>;

pub struct AuditTrail {
    handle: AuditHandle,
    info: SessionInfo,
    queue: VecDeque<Entry>,
    statement_shapes: HashMap<Vec<u8>, Shape>,
    portal_shapes: HashMap<Vec<u8>, Shape>,
    /// Result formats a Bind asked for, per portal (one code applies to all columns).
    portal_formats: HashMap<Vec<u8>, Vec<i16>>,
    /// Statement each portal was bound to.
    portal_statements: HashMap<Vec<u8>, Vec<u8>>,
    facts: Option<Arc<AuditFacts>>,
}

/// Cap on queued entries: a client that pipelines without reading is bounded by PostgreSQL's
/// own buffers; beyond this the oldest are recorded as they are (nothing is lost silently).
const MAX_QUEUE: usize = 65_536;

impl AuditTrail {
    pub fn new(handle: AuditHandle, info: SessionInfo) -> AuditTrail {
        AuditTrail {
            handle,
            info,
            queue: VecDeque::new(),
            statement_shapes: HashMap::new(),
            portal_shapes: HashMap::new(),
            portal_formats: HashMap::new(),
            portal_statements: HashMap::new(),
            facts: None,
        }
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

    pub fn set_role(&mut self, role: &str, policy_version: Option<String>) {
        if self.info.role != role {
            self.info.role = role.to_owned();
        }
        self.info.policy_version = policy_version;
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
        r
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
        if let Err(e) = self.handle.record(r).await {
            tracing::error!(error = %e, "audit record not written");
        }
    }

    fn push(&mut self, e: Entry) {
        self.queue.push_back(e);
        if self.queue.len() > MAX_QUEUE {
            self.queue.pop_front();
        }
    }

    pub fn query(&mut self, audited: Audited, intent: Option<String>) {
        self.push(Entry::Query(Pending::new(audited, intent)));
    }

    pub fn execute(&mut self, portal: &[u8], audited: Audited, intent: Option<String>) {
        self.push(Entry::Execute(
            Pending::new(audited, intent),
            portal.to_vec(),
        ));
    }

    /// The `statement_intent` record written before an audited statement is forwarded: who,
    /// the statement, and the columns and categories the analysis says it touches ("personal
    /// data may be read" when it could not be analysed). None for statements not audited.
    pub fn intent_record(&self, audited: &Audited) -> Option<Record> {
        if matches!(audited, Audited::No) {
            return None;
        }
        let mut r = self.base(EventType::StatementIntent, Outcome::Ok);
        describe(&mut r, audited);
        if matches!(audited, Audited::Unknown(_)) {
            r.message = Some("not analysed: possible personal-data read".into());
        }
        Some(r)
    }

    pub fn describe(&mut self, kind: u8, name: &[u8], hidden: usize) {
        self.push(match kind {
            b'S' => Entry::DescribeStatement(name.to_vec(), hidden),
            _ => Entry::DescribePortal(name.to_vec(), hidden),
        });
    }

    pub fn sync(&mut self) {
        self.push(Entry::Sync);
    }

    pub fn bind(&mut self, portal: &[u8], statement: &[u8], formats: Vec<i16>) {
        self.portal_formats.insert(portal.to_vec(), formats);
        self.portal_statements
            .insert(portal.to_vec(), statement.to_vec());
        self.portal_shapes.remove(portal);
    }

    pub fn close(&mut self, kind: u8, name: &[u8]) {
        if kind == b'S' {
            self.statement_shapes.remove(name);
        } else {
            self.portal_shapes.remove(name);
            self.portal_formats.remove(name);
            self.portal_statements.remove(name);
        }
    }

    /// Whether a frame from the server needs `on_frame`.
    pub fn wants(&self, tag: u8) -> bool {
        !self.queue.is_empty()
            && matches!(
                tag,
                b'T' | b'n' | b'D' | b'C' | b's' | b'I' | b'E' | b'Z' | b'H'
            )
    }

    /// Match one server message to the queued requests. Returns the records to write and,
    /// when the message carries hidden columns, the message the client gets instead.
    pub fn on_frame(&mut self, tag: u8, frame: &[u8]) -> (Vec<Record>, Option<Bytes>) {
        let mut done = Vec::new();
        let mut replaced = None;
        match tag {
            b'T' | b'n' => {
                let shape = if tag == b'T' {
                    self.key_columns(frame, None)
                } else {
                    Vec::new()
                };
                let hidden = match self.queue.front_mut() {
                    Some(Entry::DescribeStatement(name, hidden)) => {
                        let (name, hidden) = (std::mem::take(name), *hidden);
                        self.statement_shapes.insert(name, shape);
                        self.queue.pop_front();
                        hidden
                    }
                    Some(Entry::DescribePortal(name, hidden)) => {
                        let (name, hidden) = (std::mem::take(name), *hidden);
                        self.portal_shapes.insert(name, shape);
                        self.queue.pop_front();
                        hidden
                    }
                    Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) => {
                        if p.is_audited() {
                            p.keys = Some(shape);
                        }
                        p.audited.hidden()
                    }
                    _ => 0,
                };
                if hidden > 0 && tag == b'T' {
                    replaced = audit_rows::strip_fields(frame, hidden);
                }
            }
            b'H' => {
                if let Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) = self.queue.front_mut() {
                    p.copy = true;
                }
            }
            b'D' => {
                self.data_row(frame);
                let hidden = match self.queue.front() {
                    Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) => p.audited.hidden(),
                    _ => 0,
                };
                if hidden > 0 {
                    replaced = audit_rows::strip_values(frame, hidden);
                }
            }
            b'C' | b's' | b'I' => {
                let rows = if tag == b'C' {
                    message::command_rows(frame)
                } else {
                    0
                };
                match self.queue.front_mut() {
                    Some(Entry::Query(p)) => p.rows += rows,
                    Some(Entry::Execute(p, _)) => {
                        p.rows += rows;
                        if let Some(Entry::Execute(p, _)) = self.queue.pop_front() {
                            done.extend(self.finish(p));
                        }
                    }
                    _ => {}
                }
            }
            b'E' => {
                let state = crate::protocol::message::error_code(frame);
                match self.queue.pop_front() {
                    Some(Entry::Query(mut p)) => {
                        p.sqlstate = state;
                        self.queue.push_front(Entry::Query(p));
                    }
                    Some(Entry::Execute(mut p, _)) => {
                        p.sqlstate = state;
                        done.extend(self.finish(p));
                        self.skip_to_sync();
                    }
                    Some(Entry::Sync) => self.queue.push_front(Entry::Sync),
                    Some(_) => self.skip_to_sync(),
                    None => {}
                }
            }
            b'Z' => {
                // Everything before the Sync (or the Query) this answers is over; Executes
                // still queued were skipped after an error and read nothing.
                while let Some(e) = self.queue.pop_front() {
                    match e {
                        Entry::Query(p) => {
                            done.extend(self.finish(p));
                            break;
                        }
                        Entry::Sync => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        (done, replaced)
    }

    fn skip_to_sync(&mut self) {
        while let Some(e) = self.queue.front() {
            if matches!(e, Entry::Sync | Entry::Query(_)) {
                break;
            }
            self.queue.pop_front();
        }
    }

    fn data_row(&mut self, frame: &[u8]) {
        let Some(front) = self.queue.front_mut() else {
            return;
        };
        let (p, portal) = match front {
            Entry::Query(p) => (p, None),
            Entry::Execute(p, portal) => (p, Some(portal.clone())),
            _ => return,
        };
        if !p.is_audited() {
            return;
        }
        if p.keys.is_none() {
            // An Execute without its own RowDescription: the shape is the portal's, or the
            // statement's with the Bind's result formats.
            let shape = portal.as_ref().and_then(|portal| {
                self.portal_shapes.get(portal).cloned().or_else(|| {
                    let stmt = self.portal_statements.get(portal)?;
                    let formats = self.portal_formats.get(portal);
                    let mut shape = self.statement_shapes.get(stmt)?.clone();
                    for k in &mut shape {
                        k.binary = match formats.map(Vec::as_slice) {
                            Some([one]) => *one == 1,
                            Some(all) => all.get(k.index).is_some_and(|f| *f == 1),
                            None => false,
                        };
                    }
                    Some(shape)
                })
            });
            // Re-borrow after reading the maps.
            if let Some(Entry::Query(p) | Entry::Execute(p, _)) = self.queue.front_mut() {
                p.keys = Some(shape.unwrap_or_default());
            }
        }
        let Some(Entry::Query(p) | Entry::Execute(p, _)) = self.queue.front_mut() else {
            return;
        };
        let keys = p.keys.as_deref().unwrap_or_default();
        if keys.is_empty() {
            return;
        }
        let set = p.subjects.get_or_insert_with(|| self.handle.subjects());
        let values = message::data_row_values(frame);
        for k in keys {
            if let Some(Some(v)) = values.as_ref().and_then(|vals| vals.get(k.index)) {
                if let Some(text) = audit_rows::key_text(v, k.type_oid, k.binary) {
                    set.add(&k.table, &text);
                }
            }
        }
    }

    /// Subject-key columns of a RowDescription (their origins are subject keys).
    fn key_columns(&self, frame: &[u8], _formats: Option<&[i16]>) -> Vec<KeyColumn> {
        let Some(facts) = &self.facts else {
            return Vec::new();
        };
        let Some(fields) = crate::protocol::message::row_fields(frame) else {
            return Vec::new();
        };
        fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let table = facts.subject_keys.get(&(f.table_oid, f.attnum))?;
                Some(KeyColumn {
                    index: i,
                    table: table.clone(),
                    type_oid: f.type_oid,
                    binary: f.format == 1,
                })
            })
            .collect()
    }

    fn finish(&self, p: Pending) -> Option<Record> {
        let a = match &p.audited {
            Audited::No => return None,
            Audited::Yes(a) => Some(a.clone()),
            Audited::Unknown(_) => None,
        };
        let writes = a.as_ref().is_some_and(|a| !a.written.is_empty());
        let outcome = if p.sqlstate.is_some() {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        let event = if writes {
            EventType::StatementWrite
        } else {
            EventType::StatementRead
        };
        let mut r = self.base(event, outcome);
        r.sqlstate = p.sqlstate.clone();
        r.duration_ms = Some(p.started.elapsed().as_millis() as u64);
        r.rows = Some(p.rows);
        r.intent = p.intent.clone();
        describe(&mut r, &p.audited);
        if matches!(p.audited, Audited::Unknown(_)) {
            r.message = Some("not analysed: personal data may have been read".into());
        }
        let key_in_output = p.keys.as_ref().is_some_and(|k| !k.is_empty());
        let mut subjects = p.subjects.unwrap_or_else(|| self.handle.subjects());
        if !key_in_output || p.copy {
            subjects.mark_unknown();
        }
        subjects.finish(&mut r);
        Some(r)
    }

    /// Write records for finished statements. A record the writer does not accept is counted
    /// (`pgvakt_audit_records_dropped_total`) and logged.
    pub async fn write_all(&self, records: Vec<Record>) {
        for r in records {
            self.write(r).await;
        }
    }
}

/// The statement and the tables and columns it touches, as a record lists them.
fn describe(r: &mut Record, audited: &Audited) {
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
            r.tables = audit_rows::tables(a);
        }
        Audited::Unknown(sql) => {
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
}
