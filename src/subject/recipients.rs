//! "Who received my data" (Art. 15(1)(c)) from the audit trail: the users and policy roles whose
//! statements returned or changed the subject's rows, found by the subject's pseudonym with the
//! same search as `pgvakt audit search --subject`, and the reads that may have included them
//! (subjects not known: aggregates, COPY, results past the subject cap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;
use tempfile::TempDir;

use super::SubjectError;
use crate::audit::keys::KeySource;
use crate::audit::record::EventType;
use crate::audit::search::{search_files, Hit, Match, Query};
use crate::audit::subjects::SubjectKey;

/// Where the audit trail is and the key its pseudonyms were made with.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditSource {
    /// Audit files or directories (audit.dir); repeat for several.
    #[arg(long = "audit")]
    pub audit: Vec<PathBuf>,
    /// Or the audit table every replica writes into.
    #[command(flatten)]
    pub db: crate::audit::table_read::DbArgs,
    /// File holding the subject key (audit.subject_key_file). Default: the variable in --key-env.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the subject key.
    #[arg(long, default_value = "PGVAKT_AUDIT_SUBJECT_KEY")]
    pub key_env: String,
}

/// One user (and policy role) who received the subject's data.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Recipient {
    pub user: String,
    pub role: String,
    pub purposes: BTreeSet<String>,
    pub reads: u64,
    pub writes: u64,
    /// Reads whose subjects are not known, which may have included this subject.
    pub possible_reads: u64,
    pub first: String,
    pub last: String,
    /// `schema.table.column (action)` of what their statements read or wrote.
    pub columns: BTreeSet<String>,
}

#[derive(Debug, Serialize)]
pub struct Recipients {
    /// Whether the audit trail was searched at all.
    pub searched: bool,
    pub records_matched: u64,
    pub recipients: Vec<Recipient>,
}

/// Search the audit trail for `id` of `subject_type`.
pub fn find(src: &AuditSource, subject_type: &str, id: &str) -> Result<Recipients, SubjectError> {
    if src.audit.is_empty() && src.db.from_db.is_none() {
        return Ok(Recipients {
            searched: false,
            records_matched: 0,
            recipients: Vec::new(),
        });
    }
    let key = KeySource {
        env_field: "--key-env",
        file_field: "--key-file",
        env: &src.key_env,
        file: src.key_file.as_deref(),
    }
    .load()
    .map_err(|e| SubjectError::Audit(e.to_string()))?;
    let key = SubjectKey::new(&key);
    let own = key.id().to_owned();
    let q = Query {
        subject: Some((key, id.to_owned())),
        table: Some(subject_type.to_owned()),
        ..Default::default()
    };
    let (_copy, files) = trail_files(src)?;
    let found = search_files(&files, &q).map_err(SubjectError::Audit)?;
    if let Some((theirs, (n, file))) = found.other_keys.iter().next() {
        if found.hits.is_empty() {
            return Err(SubjectError::Audit(format!(
                "{n} records (first in {}) were written with subject key {theirs}, not this key ({own}): give the key the trail was written with",
                file.display()
            )));
        }
    }
    Ok(Recipients {
        searched: true,
        records_matched: found.hits.len() as u64,
        recipients: by_recipient(&found.hits),
    })
}

/// The audit files to search. From the audit table they are exported to a temporary
/// directory first, which is returned too: it must outlive the search.
fn trail_files(src: &AuditSource) -> Result<(Option<TempDir>, Vec<PathBuf>), SubjectError> {
    Ok(match &src.db.from_db {
        Some(_) => {
            let (dir, files) = crate::audit::table_read::export_for_search(&src.db, None, None)
                .map_err(SubjectError::Audit)?;
            (Some(dir), files)
        }
        None => (
            None,
            crate::audit::files::expand_inputs(&src.audit)
                .map_err(|e| SubjectError::Audit(e.to_string()))?,
        ),
    })
}

/// The matching records summed up per user and policy role, the recipients Art. 15 asks about.
fn by_recipient(hits: &[Hit]) -> Vec<Recipient> {
    let mut by_user: BTreeMap<(String, String), Recipient> = BTreeMap::new();
    for hit in hits {
        let r = &hit.record;
        let (user, role) = (
            r.user.clone().unwrap_or_default(),
            r.role.clone().unwrap_or_default(),
        );
        let e = by_user
            .entry((user.clone(), role.clone()))
            .or_insert_with(|| Recipient {
                user,
                role,
                purposes: BTreeSet::new(),
                reads: 0,
                writes: 0,
                possible_reads: 0,
                first: r.ts.clone(),
                last: r.ts.clone(),
                columns: BTreeSet::new(),
            });
        e.count(hit);
    }
    by_user.into_values().collect()
}

impl Recipient {
    /// Adds one matching record. Only reads and writes are counted: other records that name
    /// the subject, such as a statement's intent record, are repeated by its completion.
    fn count(&mut self, hit: &Hit) {
        let r = &hit.record;
        match (hit.matched, r.event) {
            (Match::Possible, _) => self.possible_reads += 1,
            (Match::Yes, EventType::StatementWrite) => self.writes += 1,
            (Match::Yes, EventType::StatementRead) => self.reads += 1,
            (Match::Yes, _) => return,
        }
        if let Some(p) = &r.purpose {
            self.purposes.insert(p.clone());
        }
        self.first = self.first.clone().min(r.ts.clone());
        self.last = self.last.clone().max(r.ts.clone());
        for t in &r.tables {
            for c in &t.columns {
                self.columns.insert(format!(
                    "{}.{} ({})",
                    t.table,
                    c.column,
                    action_name(c.action)
                ));
            }
        }
    }
}

fn action_name(a: crate::audit::record::Action) -> &'static str {
    use crate::audit::record::Action;
    match a {
        Action::Allowed => "allowed",
        Action::Masked => "masked",
        Action::Blocked => "blocked",
    }
}
