//! Keyed pseudonyms of data subjects, so the log can answer "who read subject X" without
//! holding X's identity.
//!
//! `ref = hex(HMAC-SHA256(subject_key, subject type ‖ 0x00 ‖ key value as PostgreSQL's text
//! output))[..32]`. 128 bits keep collisions out of reach for any CRM's subject count while
//! keeping records short. The subject type (`schema.table` of the table holding the subjects,
//! declared in the inventory: `activities.contact_id` refers to `public.contacts`) is part of
//! the input, so one person has one reference across tables while the same id of two kinds
//! of subject (a contact 42 and a company 42) gives different ones; `audit search` computes
//! the reference per subject type from the raw id with this same function.

use std::collections::{BTreeMap, BTreeSet};

use hmac::Mac;

use super::chain::{keyed, HmacSha256};
use super::record::{Record, SubjectGroup};

/// Hex digits kept of the HMAC output.
pub const REF_HEX_LEN: usize = 32;

#[derive(Clone)]
pub struct SubjectKey(HmacSha256, String);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    pub fn new(key: &[u8]) -> SubjectKey {
        SubjectKey(keyed(key), super::keys::fingerprint(key))
    }

    /// The fingerprint records carry in `subject_key_id`.
    pub fn id(&self) -> &str {
        &self.1
    }

    /// The pseudonym of the subject of type `table` (`schema.table` of the subject type)
    /// whose key is `key`.
    pub fn pseudonym(&self, table: &str, key: &str) -> String {
        let mut m = self.0.clone();
        m.update(table.as_bytes());
        m.update(&[0]);
        m.update(key.as_bytes());
        let mut hex = hex::encode(m.finalize().into_bytes());
        hex.truncate(REF_HEX_LEN);
        hex
    }
}

/// Collects the subjects of one statement's result, up to a cap. Memory stays bounded by the
/// cap: beyond it only a count is kept.
#[derive(Debug, Clone)]
pub struct SubjectSet {
    key: SubjectKey,
    cap: usize,
    groups: BTreeMap<String, BTreeSet<String>>,
    stored: usize,
    count: u64,
    truncated: bool,
    unknown: bool,
}

impl SubjectSet {
    pub fn new(key: SubjectKey, cap: usize) -> SubjectSet {
        SubjectSet {
            key,
            cap,
            groups: BTreeMap::new(),
            stored: 0,
            count: 0,
            truncated: false,
            unknown: false,
        }
    }

    /// One row's subject: `table` is its subject type (`schema.table`), `key` the key
    /// column's text value.
    pub fn add(&mut self, table: &str, key: &str) {
        let r = self.key.pseudonym(table, key);
        let group = self.groups.entry(table.to_owned()).or_default();
        if group.contains(&r) {
            return;
        }
        self.count += 1;
        if self.stored < self.cap {
            group.insert(r);
            self.stored += 1;
        } else {
            // Past the cap a repeated subject cannot be recognised, so the count becomes an
            // upper bound; the flag says so.
            self.truncated = true;
        }
    }

    /// The result's shape did not allow naming subjects (aggregates, expressions).
    pub fn mark_unknown(&mut self) {
        self.unknown = true;
    }

    /// Write the collected subjects into `rec`.
    pub fn finish(self, rec: &mut Record) {
        rec.subject_count = (!self.unknown || self.count > 0).then_some(self.count);
        rec.subjects = self
            .groups
            .into_iter()
            .filter(|(_, refs)| !refs.is_empty())
            .map(|(table, refs)| SubjectGroup {
                table,
                refs: refs.into_iter().collect(),
            })
            .collect();
        rec.subjects_truncated = self.truncated;
        rec.subjects_unknown = self.unknown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{EventType, Outcome};

    fn key() -> SubjectKey {
        SubjectKey::new(b"subject key for tests, 32 bytes!")
    }

    #[test]
    fn pseudonym_is_keyed_hmac_of_table_and_value() {
        let k = key();
        let r = k.pseudonym("public.contacts", "42");
        assert_eq!(r.len(), REF_HEX_LEN);
        let mut m = keyed(b"subject key for tests, 32 bytes!");
        m.update(b"public.contacts\x0042");
        assert_eq!(r, hex::encode(m.finalize().into_bytes())[..32]);
        assert_ne!(r, k.pseudonym("public.companies", "42"));
        assert_ne!(r, k.pseudonym("public.contacts", "43"));
        assert_ne!(
            r,
            SubjectKey::new(b"another subject key, 32 bytes!!!").pseudonym("public.contacts", "42")
        );
    }

    #[test]
    fn the_cap_truncates_and_counts() {
        let mut set = SubjectSet::new(key(), 2);
        for id in ["1", "2", "2", "3"] {
            set.add("public.contacts", id);
        }
        let mut rec = Record::new(EventType::StatementRead, Outcome::Ok);
        set.finish(&mut rec);
        assert_eq!(rec.subject_count, Some(3));
        assert_eq!(rec.subjects.len(), 1);
        assert_eq!(rec.subjects[0].refs.len(), 2);
        assert!(rec.subjects_truncated);
        assert!(!rec.subjects_unknown);
    }

    #[test]
    fn unknown_subjects_have_no_count() {
        let mut set = SubjectSet::new(key(), 10);
        set.mark_unknown();
        let mut rec = Record::new(EventType::StatementRead, Outcome::Ok);
        set.finish(&mut rec);
        assert_eq!(rec.subject_count, None);
        assert!(rec.subjects_unknown);
    }
}
