//! The result side of the audit trail: PostgreSQL's answers matched, in order, to the requests
//! the client side queued; rows counted per execution; the session's names updated as
//! PostgreSQL confirms them; hidden subject-key columns stripped; records made.

use std::time::Instant;

use bytes::Bytes;

use super::names::{Def, Kind, Resolved};
use super::{describe, rows, AuditTrail, Audited, ResultForm};
use crate::analysis::session_names::NameOp;
use crate::analysis::ColumnUse;
use crate::audit::{EventType, Outcome, Record, SubjectSet, Syncing};
use crate::protocol::results;

/// A result column that identifies a data subject.
#[derive(Clone, Debug)]
pub struct KeyColumn {
    pub(super) index: usize,
    pub(super) table: String,
    pub(super) type_oid: u32,
    pub(super) binary: bool,
}

pub enum Entry {
    Query(Pending),
    Execute(Pending, Vec<u8>),
    /// A Parse of a statement name; the proposal, unless pgvakt refused it.
    Parse(Vec<u8>, Option<u64>),
    /// A Bind: portal, proposal, statement and result formats.
    Bind(Vec<u8>, Option<u64>, Vec<u8>, Vec<i16>),
    Close(Kind, Vec<u8>),
    /// Statement or portal name, and the hidden columns its RowDescription carries (and
    /// whether they are all of it).
    DescribeStatement(Vec<u8>, ResultForm),
    DescribePortal(Vec<u8>, ResultForm),
    Sync,
}

/// One execution awaiting its answers.
pub struct Pending {
    pub(super) audited: Audited,
    pub(super) started: Instant,
    pub(super) rows: u64,
    /// DataRows of the statement now answering (a portal part ends with PortalSuspended).
    pub(super) batch_rows: u64,
    /// Whether any row reached the client (a statement that failed may have sent some).
    pub(super) any_rows: bool,
    pub(super) sqlstate: Option<String>,
    pub(super) keys: Option<Vec<KeyColumn>>,
    pub(super) subjects: Option<SubjectSet>,
    pub(super) copy: bool,
    /// Event id of the intent record written before the statement was forwarded.
    pub(super) intent: Option<String>,
    /// Name ops of each statement, applied as each completes, with the proposals of the
    /// names the statements define.
    pub(super) ops: Vec<NameOp>,
    pub(super) proposals: Vec<Option<u64>>,
    pub(super) hidden: Vec<ResultForm>,
    /// Statement now answering.
    pub(super) index: usize,
    pub(super) command: Option<&'static str>,
    /// Personal columns the results' origins showed.
    pub(super) found: Vec<ColumnUse>,
    /// The intent record's sync, still under way when the statement was forwarded: nothing
    /// of its answers reaches the client before it is done (`AuditTrail::take_hold`).
    hold: Option<Syncing>,
    /// That sync failed: the client got an error instead of the answers.
    withheld: bool,
}

impl Pending {
    pub fn new(r: Resolved, intent: Option<String>) -> Pending {
        Pending {
            audited: r.audited,
            started: Instant::now(),
            rows: 0,
            batch_rows: 0,
            any_rows: false,
            sqlstate: None,
            keys: None,
            subjects: None,
            copy: false,
            intent,
            ops: Vec::new(),
            proposals: Vec::new(),
            hidden: r.hidden,
            index: 0,
            command: r.command,
            found: Vec::new(),
            hold: None,
            withheld: false,
        }
    }

    /// Its answers wait for this sync of its intent record.
    pub fn held(mut self, syncing: Option<Syncing>) -> Pending {
        self.hold = syncing;
        self
    }

    /// A request that reads nothing audited.
    pub fn none() -> Pending {
        Pending::new(
            Resolved {
                audited: Audited::No,
                hidden: Vec::new(),
                command: None,
                doubt: None,
            },
            None,
        )
    }

    pub(super) fn is_audited(&self) -> bool {
        self.audited.is_recorded() || !self.found.is_empty()
    }

    pub(super) fn hidden_now(&self) -> ResultForm {
        self.hidden.get(self.index).cloned().unwrap_or_default()
    }
}

impl AuditTrail {
    /// The client side waits for room before it reads a request (`AuditTrail::room`), so the
    /// queue stays within `MAX_QUEUE`.
    fn push(&mut self, e: Entry) {
        self.queue.push_back(e);
    }

    /// A Query or an Execute whose text runs `ops`: the names it defines are proposed now, so
    /// requests sent before its answer can use them.
    pub fn query(&mut self, mut p: Pending, ops: Vec<NameOp>, def: &Def) {
        p.proposals = self.propose(&ops, def);
        p.ops = ops;
        self.push(Entry::Query(p));
        self.runs_since_sync = 0;
    }

    pub fn execute(&mut self, portal: &[u8], mut p: Pending, ops: Vec<NameOp>, def: &Def) {
        p.proposals = self.propose(&ops, def);
        p.ops = ops;
        self.push(Entry::Execute(p, portal.to_vec()));
        self.runs_since_sync = self.runs_since_sync.saturating_add(1);
    }

    /// Whether a Query or Execute sent now runs alone in an implicit transaction of its own:
    /// the session is idle, no answer is outstanding and nothing ran since the last Sync.
    /// Only such a statement's answers can be replaced by an error with client and server
    /// still agreeing on what happened (see `withhold`).
    pub fn runs_alone(&self) -> bool {
        self.tx_status == b'I'
            && self.runs_since_sync == 0
            && !self
                .queue
                .iter()
                .any(|e| matches!(e, Entry::Query(_) | Entry::Execute(..) | Entry::Sync))
    }

    /// The sync the request now answered waits for failed: its completion record says its
    /// answers were withheld. True when the client can be given an error in their place and
    /// the session go on: a Query, or an Execute followed by nothing but its Sync (PostgreSQL
    /// runs nothing else the client would take for skipped after the error).
    pub fn withhold(&mut self) -> bool {
        let alone = match self.queue.front() {
            Some(Entry::Query(_)) => true,
            Some(Entry::Execute(..)) => {
                self.queue.len() == 2 && matches!(self.queue.get(1), Some(Entry::Sync))
            }
            _ => false,
        };
        if let Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) = self.queue.front_mut() {
            p.withheld = true;
        }
        alone
    }

    pub fn parse(&mut self, name: &[u8], proposal: Option<u64>) {
        self.push(Entry::Parse(name.to_vec(), proposal));
    }

    pub fn bind(
        &mut self,
        portal: &[u8],
        proposal: Option<u64>,
        statement: &[u8],
        formats: Vec<i16>,
    ) {
        self.push(Entry::Bind(
            portal.to_vec(),
            proposal,
            statement.to_vec(),
            formats,
        ));
    }

    pub fn close(&mut self, kind: u8, name: &[u8]) {
        let kind = if kind == b'S' {
            Kind::Statement
        } else {
            Kind::Portal
        };
        self.names.dropping(kind, Some(name));
        self.push(Entry::Close(kind, name.to_vec()));
    }

    pub fn describe(&mut self, kind: u8, name: &[u8], hidden: ResultForm) {
        self.push(match kind {
            b'S' => Entry::DescribeStatement(name.to_vec(), hidden),
            _ => Entry::DescribePortal(name.to_vec(), hidden),
        });
    }

    pub fn sync(&mut self) {
        self.push(Entry::Sync);
        self.runs_since_sync = 0;
    }

    /// The sync the request now answered waits for, handed out once: the frame in hand and
    /// everything after it must wait until it is done.
    pub fn take_hold(&mut self) -> Option<Syncing> {
        match self.queue.front_mut() {
            Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) => p.hold.take(),
            _ => None,
        }
    }

    /// Whether a frame from the server needs `on_frame`.
    pub fn wants(&self, tag: u8) -> bool {
        !self.queue.is_empty()
            && matches!(
                tag,
                b'T' | b'n' | b'D' | b'C' | b's' | b'I' | b'E' | b'Z' | b'H' | b'1' | b'2' | b'3'
            )
    }

    /// Match one server message to the queued requests. Returns the records to write and,
    /// when the message carries hidden columns, the message the client gets instead.
    pub fn on_frame(&mut self, tag: u8, frame: &[u8]) -> (Vec<Record>, Option<Bytes>) {
        let mut done = Vec::new();
        let mut replaced = None;
        match tag {
            b'T' | b'n' => replaced = self.row_description(tag, frame),
            b'H' => {
                if let Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) = self.queue.front_mut() {
                    p.copy = true;
                }
            }
            b'D' => {
                self.data_row(frame);
                let hidden = match self.queue.front_mut() {
                    Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) => {
                        p.batch_rows += 1;
                        p.any_rows = true;
                        p.hidden_now()
                    }
                    _ => ResultForm::default(),
                };
                replaced = match (hidden.hidden, hidden.whole) {
                    (_, true) => Some(Bytes::new()),
                    (0, false) => None,
                    (n, false) => rows::strip_values(frame, n),
                };
            }
            b'C' | b'I' | b's' => done.extend(self.completed(tag, frame)),
            b'1' | b'2' | b'3' => self.confirmed(tag),
            b'E' => {
                self.errored = true;
                done.extend(self.error(frame));
            }
            b'Z' => done.extend(self.ready(frame)),
            _ => {}
        }
        if self.waiting && self.queue.len() < super::MAX_QUEUE {
            self.waiting = false;
            self.room.notify_waiters();
        }
        (done, replaced)
    }

    fn row_description(&mut self, tag: u8, frame: &[u8]) -> Option<Bytes> {
        let shape = if tag == b'T' {
            self.key_columns(frame)
        } else {
            Vec::new()
        };
        let found = if tag == b'T' {
            self.personal_origins(frame)
        } else {
            Vec::new()
        };
        let (hidden, describe) = match self.queue.front_mut() {
            Some(Entry::DescribeStatement(name, hidden)) => {
                let (name, hidden) = (std::mem::take(name), std::mem::take(hidden));
                self.statement_shapes.insert(name, shape);
                self.queue.pop_front();
                (hidden, true)
            }
            Some(Entry::DescribePortal(name, hidden)) => {
                let (name, hidden) = (std::mem::take(name), std::mem::take(hidden));
                self.portal_shapes.insert(name, shape);
                self.queue.pop_front();
                (hidden, true)
            }
            Some(Entry::Query(p)) | Some(Entry::Execute(p, _)) => {
                // What the text analysis did not see, the result's origins may show (an
                // unrestricted role's statement, a name pgvakt did not see defined).
                if matches!(p.audited, Audited::Watched(_) | Audited::Unknown(_)) {
                    for u in found {
                        if !p.found.contains(&u) {
                            p.found.push(u);
                        }
                    }
                }
                if p.is_audited() {
                    p.keys = Some(shape);
                }
                (p.hidden_now(), false)
            }
            _ => (ResultForm::default(), false),
        };
        let stripped = match (tag, hidden.hidden, hidden.whole) {
            // A write's hidden keys are a result the client did not ask for: a Describe
            // answers NoData, as for the write alone, and a Query's or Execute's result goes.
            (b'T', _, true) if describe => return Some(Bytes::from_static(b"n\0\0\0\x04")),
            (b'T', _, true) => return Some(Bytes::new()),
            (b'T', n, false) if n > 0 => rows::strip_fields(frame, n),
            _ => None,
        };
        if tag != b'T' || hidden.origins.is_empty() {
            return stripped;
        }
        // PostgreSQL's own RowDescription has been read (key columns, personal origins, and
        // the session's check for protected columns) before the origins are put in.
        let base = stripped.as_deref().unwrap_or(frame);
        rows::with_origins(base, &hidden.origins).or(stripped)
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended: one statement (or a portal's
    /// part) is over.
    fn completed(&mut self, tag: u8, frame: &[u8]) -> Option<Record> {
        let rows = match tag {
            b'C' => {
                let text = frame.get(5..).unwrap_or_default();
                self.rolled_back = text.starts_with(b"ROLLBACK");
                // MOVE reports the rows it skipped; none reached the client.
                if text.starts_with(b"MOVE") {
                    0
                } else {
                    results::command_rows(frame)
                }
            }
            _ => 0,
        };
        match self.queue.front_mut() {
            Some(Entry::Query(p)) => {
                p.rows += rows;
                p.batch_rows = 0;
                let (ops, proposals, index) = (p.ops.clone(), p.proposals.clone(), p.index);
                p.index += 1;
                self.apply(&ops, &proposals, index);
                None
            }
            Some(Entry::Execute(p, _)) => {
                p.rows += if tag == b's' { p.batch_rows } else { rows };
                if tag != b's' {
                    let (ops, proposals) = (p.ops.clone(), p.proposals.clone());
                    self.apply(&ops, &proposals, 0);
                }
                match self.queue.pop_front() {
                    Some(Entry::Execute(p, _)) => self.finish(p),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn error(&mut self, frame: &[u8]) -> Option<Record> {
        let state = results::error_code(frame);
        match self.queue.pop_front() {
            Some(Entry::Query(mut p)) => {
                p.sqlstate = state;
                self.queue.push_front(Entry::Query(p));
                None
            }
            Some(Entry::Execute(mut p, portal)) => {
                p.sqlstate = state;
                let e = Entry::Execute(p, portal);
                self.withdraw(&e);
                self.skip_to_sync();
                match e {
                    Entry::Execute(p, _) => self.finish(p),
                    _ => None,
                }
            }
            Some(Entry::Sync) => {
                self.queue.push_front(Entry::Sync);
                None
            }
            Some(e) => {
                self.withdraw(&e);
                self.skip_to_sync();
                None
            }
            None => None,
        }
    }

    /// ReadyForQuery: everything before the Sync (or the Query) it answers is over; Executes
    /// still queued were skipped after an error and read nothing. A transaction that ended
    /// takes its portals with it.
    fn ready(&mut self, frame: &[u8]) -> Option<Record> {
        let mut done = None;
        while let Some(e) = self.queue.pop_front() {
            match e {
                Entry::Query(p) => {
                    self.withdraw_all(&p);
                    // A simple Query replaces the unnamed statement and portal.
                    self.drop_statement(Some(b""));
                    self.drop_portal(Some(b""));
                    done = self.finish(p);
                    break;
                }
                Entry::Sync => break,
                other => self.withdraw(&other),
            }
        }
        let status = frame.get(5).copied().unwrap_or(b'I');
        if status == b'I' {
            let committed = self.tx_status != b'E' && !self.errored && !self.rolled_back;
            self.names.transaction_end(committed);
        }
        self.tx_status = status;
        self.errored = false;
        self.rolled_back = false;
        done
    }

    fn skip_to_sync(&mut self) {
        while let Some(e) = self.queue.front() {
            if matches!(e, Entry::Sync | Entry::Query(_)) {
                break;
            }
            if let Some(e) = self.queue.pop_front() {
                self.withdraw(&e);
            }
        }
    }

    fn finish(&self, p: Pending) -> Option<Record> {
        if !p.is_audited() {
            return None;
        }
        let writes = matches!(&p.audited, Audited::Yes(a) if !a.written.is_empty());
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
        if p.withheld {
            let mut r = self.base(event, Outcome::Refused);
            r.sqlstate = Some("42501".into());
            r.intent = p.intent.clone();
            r.rows = Some(0);
            describe(&mut r, &p.audited, p.command, &p.found);
            r.message =
                Some("results withheld: the intent record could not be made durable".into());
            self.handle.subjects().finish(&mut r);
            return Some(r);
        }
        let mut r = self.base(event, outcome);
        r.sqlstate = p.sqlstate.clone();
        r.duration_ms = Some(p.started.elapsed().as_millis() as u64);
        r.rows = Some(p.rows);
        r.intent = p.intent.clone();
        describe(&mut r, &p.audited, p.command, &p.found);
        self.subject_types(&mut r);
        r.message = match &p.audited {
            Audited::Unknown(_) => Some("not analysed: personal data may have been read".into()),
            Audited::Watched(_) => Some(
                "personal data read: the result's columns come from personal-data columns the statement text does not name".into(),
            ),
            _ => None,
        };
        let key_in_output = p.keys.as_ref().is_some_and(|k| !k.is_empty());
        // Nothing returned, copied or written (MOVE, an empty result): no subject was touched.
        let touched_none = p.rows == 0 && !p.any_rows;
        let mut subjects = p.subjects.unwrap_or_else(|| self.handle.subjects());
        if (!key_in_output || p.copy) && !touched_none {
            subjects.mark_unknown();
        }
        subjects.finish(&mut r);
        Some(r)
    }
}
