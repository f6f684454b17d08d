//! One audit event as it is written: the record's fields, its canonical JSON form and the UTC
//! timestamps it carries.
//!
//! Records hold no identities of data subjects (only keyed pseudonyms, see `subjects.rs`) and
//! no SQL literals or parameters: the caller supplies the fingerprint and the normalised text.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the record layout; readers ignore fields they do not know.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Written and synced before a statement that may touch personal data is forwarded
    /// (`audit.durability: before_release`); its completion record names it in `intent`.
    StatementIntent,
    StatementRead,
    StatementWrite,
    Refused,
    Login,
    LoginFailed,
    Disconnect,
    PolicyReload,
    Anomaly,
    /// A connection refused before login (no TLS, too many connections, a malformed startup,
    /// a startup timeout, ...). Rate-limited per client address and reason: `suppressed`
    /// counts the refusals this record stands for that were not recorded one by one.
    ConnectionRefused,
    /// A command on the admin console (`SHOW SESSIONS`, `KILL`, `RELOAD`, ...), or a refused
    /// attempt to open it, with the console user and the outcome.
    Admin,
    /// `pgvakt subject export`: a subject's data handed out (Art. 15, 20), recorded by the
    /// command before it writes the archive.
    SubjectExport,
    /// `pgvakt subject erase`: a subject erased (or, with `dry_run`, measured), recorded by the
    /// command before it commits.
    SubjectErase,
    /// `pgvakt retention run`: one transaction of a run (a subject, or a table's rows past
    /// their period), recorded before it commits, and the run's summary.
    RetentionRun,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StatementIntent => "statement_intent",
            EventType::StatementRead => "statement_read",
            EventType::StatementWrite => "statement_write",
            EventType::Refused => "refused",
            EventType::Login => "login",
            EventType::LoginFailed => "login_failed",
            EventType::Disconnect => "disconnect",
            EventType::PolicyReload => "policy_reload",
            EventType::Anomaly => "anomaly",
            EventType::ConnectionRefused => "connection_refused",
            EventType::Admin => "admin",
            EventType::SubjectExport => "subject_export",
            EventType::SubjectErase => "subject_erase",
            EventType::RetentionRun => "retention_run",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The statement or login succeeded.
    Ok,
    /// pgvakt refused it (policy); `sqlstate` says how the client was answered.
    Refused,
    /// PostgreSQL or the connection failed; `sqlstate` when PostgreSQL sent one.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    Read,
    Write,
    Copy,
    Utility,
}

impl From<crate::policy::model::StatementClass> for StatementClass {
    fn from(c: crate::policy::model::StatementClass) -> Self {
        use crate::policy::model::StatementClass as P;
        match c {
            P::Read => StatementClass::Read,
            P::Write => StatementClass::Write,
            P::Copy => StatementClass::Copy,
            P::Utility => StatementClass::Utility,
        }
    }
}

/// The statement, without literals or parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub class: StatementClass,
    /// Command tag, e.g. `SELECT`, `UPDATE`, `COPY`.
    pub command: String,
    /// Stable hash of the normalised text, to group executions of one statement.
    pub fingerprint: String,
    /// The statement with every literal and parameter replaced by a placeholder.
    pub normalized: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allowed,
    Masked,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnAccess {
    pub action: Action,
    /// Inventory category, e.g. `contact`, `financial`.
    pub category: String,
    pub column: String,
}

/// A table the statement read or wrote, with the columns involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableAccess {
    pub access: Access,
    #[serde(default)]
    pub columns: Vec<ColumnAccess>,
    /// The subject type of the table's subject key (`schema.table` of the table that holds
    /// those subjects, e.g. `public.contacts` for `activities.contact_id`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `schema.table`.
    pub table: String,
}

/// Pseudonyms of the data subjects of one subject type whose rows were returned or written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectGroup {
    pub refs: Vec<String>,
    /// The subject type: `schema.table` of the table that holds these subjects (for
    /// `activities.contact_id`, `public.contacts`). Part of the pseudonym's input, so search
    /// recomputes the pseudonym per subject type.
    pub table: String,
}

/// What a subject command read or changed in one table: counts, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// Per erased column: its erase action and how many rows it changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnCount>,
    /// The rows were (or would be) deleted rather than anonymised.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The subject's rows in the table that were exported, erased or deleted (or, in a dry
    /// run, would be).
    pub rows: u64,
    /// `schema.table`.
    pub table: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnCount {
    /// Rows whose value the erasure changed (or, in a dry run, would change).
    pub changed: u64,
    pub column: String,
    /// `null`, `redact` or `pseudonym`.
    pub erase: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One audit event. Build it with [`Record::new`] and fill in what applies; the writer assigns
/// `seq` and the chain MAC.
///
/// Fields are declared in the byte order of their names, here and in every struct a record
/// holds: serde writes fields in declaration order, so the record serialises straight to its
/// canonical form (see [`canonical`]) without building a `serde_json::Value` tree first, which
/// was most of the writer's work per record. `Chain::seal` checks the two forms agree in debug
/// builds, so the whole test suite guards the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Fingerprint of the chain key that sealed this record (see `keys::fingerprint`), so
    /// `audit verify` can tell a wrong key from tampering. Set by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Subject commands: a dry run, which changed nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub event: EventType,
    pub event_id: String,
    /// Event id of the `statement_intent` record written before the statement ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// HMAC of the chain (see `chain.rs`) over the record without this field. Set by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Refusal reason, anomaly or reload detail; never SQL literals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Subject commands: the operating-system user who ran the command (`user` is the
    /// database user it connected as).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Names of the role's declared purposes (`roles.*.purposes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// Policy role the session ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub schema: u32,
    /// Position in the chain; assigned by the writer.
    #[serde(default)]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<Statement>,
    /// Distinct subjects seen; exact unless `subjects_truncated` (then an upper bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_count: Option<u64>,
    /// Fingerprint of the subject key the record's pseudonyms were computed with, so
    /// `audit search` can tell a wrong key from "no matching records". Set by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<SubjectGroup>,
    /// More subjects than `audit.max_subjects`: `subjects` lists only the first ones.
    #[serde(default, skip_serializing_if = "is_false")]
    pub subjects_truncated: bool,
    /// The result's shape (e.g. an aggregate) did not let the proxy name the subjects.
    #[serde(default, skip_serializing_if = "is_false")]
    pub subjects_unknown: bool,
    /// `connection_refused`: further refusals of the same address and reason that this
    /// record stands for, not recorded one by one (rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// Subject commands: what was exported, erased or deleted, per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_counts: Vec<TableCount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// RFC 3339 UTC with milliseconds, when the event happened.
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Record {
    /// A record of `event` happening now, with a fresh event id and every optional field empty.
    pub fn new(event: EventType, outcome: Outcome) -> Record {
        Record {
            schema: SCHEMA_VERSION,
            event_id: format!("{:032x}", rand::random::<u128>()),
            seq: 0,
            ts: rfc3339_millis(SystemTime::now()),
            duration_ms: None,
            event,
            outcome,
            sqlstate: None,
            user: None,
            role: None,
            session_id: None,
            client_addr: None,
            application_name: None,
            tls_version: None,
            database: None,
            purpose: None,
            purposes: Vec::new(),
            legal_basis: None,
            statement: None,
            tables: Vec::new(),
            rows: None,
            subject_count: None,
            subjects: Vec::new(),
            subjects_truncated: false,
            subjects_unknown: false,
            policy_version: None,
            intent: None,
            message: None,
            suppressed: None,
            operator: None,
            table_counts: Vec::new(),
            dry_run: false,
            chain_key_id: None,
            subject_key_id: None,
            mac: None,
        }
    }
}

/// Canonical JSON: object keys sorted bytewise at every level, no whitespace, serde_json's
/// string escaping. Parsing a canonical line and writing it again gives the same bytes, which is
/// what lets `verify` recompute a MAC from the file alone, whatever fields a newer writer added.
pub fn canonical(value: &Value) -> String {
    // serde_json's maps are BTreeMaps (its `preserve_order` feature is off), so its compact
    // output already has every object's keys sorted: the same bytes as the explicit writer
    // below, which a test keeps as the reference, at a fraction of the cost.
    value.to_string()
}

#[cfg(test)]
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form every record's `ts` has (one per record: written with
/// the calendar fields `time` computes, rather than its general formatter).
pub fn rfc3339_millis(t: SystemTime) -> String {
    // Before 1970 is a wrong clock; such a record says so by its epoch timestamp.
    let at = time::OffsetDateTime::from(t.max(UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Compact form for file names: `YYYYMMDDTHHMMSSZ`.
pub fn compact_utc(t: SystemTime) -> String {
    let full = rfc3339_millis(t);
    let digits: String = full[..19]
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{digits}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_read_back_as_the_instant_they_were_written_for() {
        // Every day from 1970 to 2400 (leap years, century rules) at a varying time of day.
        let mut day = 0u64;
        while day < 157_000 {
            let secs = day * 86_400 + (day * 7_919) % 86_400;
            let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + day % 1000);
            let text = rfc3339_millis(t);
            let back = crate::policy::grants::parse_rfc3339(&text);
            assert_eq!(back, Ok(secs as i64), "{text}");
            day += 13;
        }
    }

    #[test]
    fn fast_canonical_form_equals_the_explicit_sorted_writer() {
        let mut rec = Record::new(EventType::StatementRead, Outcome::Ok);
        rec.user = Some("secretary \"x\" é".into());
        rec.message = Some("line\nbreak\t\u{1}".into());
        rec.tables.push(TableAccess {
            table: "public.contacts".into(),
            access: Access::Read,
            columns: vec![ColumnAccess {
                column: "bank_account".into(),
                category: "financial".into(),
                action: Action::Masked,
            }],
            subject: Some("public.contacts".into()),
        });
        let value = serde_json::to_value(&rec).unwrap();
        let mut reference = String::new();
        write_canonical(&value, &mut reference);
        assert_eq!(canonical(&value), reference);
        // Keys inserted out of order still come out sorted.
        let shuffled: Value =
            serde_json::from_str(r#"{"z":1,"a":{"y":2,"b":[{"d":1,"c":2}]},"m":"x"}"#).unwrap();
        let mut reference = String::new();
        write_canonical(&shuffled, &mut reference);
        assert_eq!(canonical(&shuffled), reference);
    }

    #[test]
    fn canonical_json_sorts_keys_and_is_stable() {
        let a: Value = serde_json::from_str(
            r#"{ "b": 1, "a": {"z": [1, {"y": "é\n", "x": null}], "c": true} }"#,
        )
        .unwrap();
        let text = canonical(&a);
        assert_eq!(
            text,
            r#"{"a":{"c":true,"z":[1,{"x":null,"y":"é\n"}]},"b":1}"#
        );
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical(&again), text);
    }

    #[test]
    fn record_canonical_form_round_trips() {
        let mut r = Record::new(EventType::StatementRead, Outcome::Ok);
        r.user = Some("secretary".into());
        r.subjects.push(SubjectGroup {
            table: "public.contacts".into(),
            refs: vec!["ab".into()],
        });
        let text = canonical(&serde_json::to_value(&r).unwrap());
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(canonical(&serde_json::to_value(&back).unwrap()), text);
        assert!(
            !text.contains("subjects_truncated"),
            "false flags are left out: {text}"
        );
    }

    /// Every field set, so a field declared out of order fails here and not only where a test
    /// happens to seal a record that carries it.
    #[test]
    fn a_record_serialises_straight_to_its_canonical_form() {
        let mut r = Record::new(EventType::SubjectErase, Outcome::Refused);
        let s = |v: &str| Some(v.to_owned());
        (r.duration_ms, r.rows, r.subject_count, r.suppressed) =
            (Some(1), Some(2), Some(3), Some(4));
        (r.sqlstate, r.user, r.role, r.session_id) = (s("42501"), s("u"), s("r"), s("7"));
        (r.client_addr, r.application_name) = (s("127.0.0.1:5"), s("a\"pp\n"));
        (r.tls_version, r.database, r.purpose) = (s("TLSv1_3"), s("crm"), s("p"));
        (r.legal_basis, r.policy_version, r.intent) = (s("consent"), s("v"), s("i"));
        (r.message, r.operator, r.chain_key_id) = (s("m"), s("o"), s("c"));
        (r.subject_key_id, r.mac) = (s("k"), s("mac"));
        (r.subjects_truncated, r.subjects_unknown, r.dry_run) = (true, true, true);
        r.purposes = vec!["newsletter".into()];
        r.statement = Some(Statement {
            class: StatementClass::Read,
            command: "SELECT".into(),
            fingerprint: "f".into(),
            normalized: "SELECT ?".into(),
        });
        r.tables.push(TableAccess {
            access: Access::Read,
            columns: vec![ColumnAccess {
                action: Action::Masked,
                category: "financial".into(),
                column: "bank_account".into(),
            }],
            subject: s("public.contacts"),
            table: "public.contacts".into(),
        });
        r.subjects.push(SubjectGroup {
            refs: vec!["ab".into()],
            table: "public.contacts".into(),
        });
        r.table_counts.push(TableCount {
            columns: vec![ColumnCount {
                changed: 1,
                column: "email".into(),
                erase: "null".into(),
            }],
            deleted: true,
            rows: 1,
            table: "public.contacts".into(),
        });
        let direct = serde_json::to_string(&r).unwrap();
        let value = serde_json::to_value(&r).unwrap();
        let mut reference = String::new();
        write_canonical(&value, &mut reference);
        assert_eq!(direct, reference);
        let keys = value.as_object().map_or(0, |m| m.len());
        assert_eq!(keys, 35, "every field is set in this test: {direct}");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_209_815_123);
        assert_eq!(rfc3339_millis(t), "2024-02-29T12:30:15.123Z");
        assert_eq!(compact_utc(t), "20240229T123015Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let parsed = crate::policy::grants::parse_rfc3339(&rfc3339_millis(t)).unwrap();
        assert_eq!(parsed, 1_709_209_815);
    }
}
