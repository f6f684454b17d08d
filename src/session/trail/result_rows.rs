//! Rows of audited results: counted per execution, and the subject keys they carry read (from
//! the result's own key columns or the hidden ones) and collected as pseudonyms; a
//! RowDescription's origins say which columns are keys and which are personal.

use super::answers::{Entry, KeyColumn};
use super::{rows, AuditTrail, Audited};
use crate::analysis::subjects::HiddenKey;
use crate::analysis::ColumnUse;
use crate::protocol::results;

impl AuditTrail {
    pub(super) fn data_row(&mut self, frame: &[u8]) {
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
            let hidden_keys = match &p.audited {
                Audited::Yes(a) if a.hidden > 0 && a.hidden == p.hidden_now().hidden => {
                    Some(a.hidden_keys.clone())
                }
                _ => None,
            };
            let shape = portal
                .as_ref()
                .and_then(|portal| self.portal_shape(portal))
                .or_else(|| self.hidden_key_shape(frame, portal.as_ref(), hidden_keys?));
            // Re-borrow after reading the maps.
            if let Some(Entry::Query(p) | Entry::Execute(p, _)) = self.queue.front_mut() {
                p.keys = Some(shape.unwrap_or_default());
            }
        }
        self.collect_row_keys(frame);
    }

    /// The key columns of an Execute without its own RowDescription: the portal's, or the
    /// statement's with the Bind's result formats.
    fn portal_shape(&self, portal: &[u8]) -> Option<Vec<KeyColumn>> {
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
    }

    /// The key columns of a result without any RowDescription (no Describe): the hidden keys
    /// are the row's last values, their tables and types known from the analysis.
    fn hidden_key_shape(
        &self,
        frame: &[u8],
        portal: Option<&Vec<u8>>,
        keys: Vec<HiddenKey>,
    ) -> Option<Vec<KeyColumn>> {
        let count = results::data_row_values(frame)?.len();
        let first = count.checked_sub(keys.len())?;
        let formats = portal.and_then(|p| self.portal_formats.get(p));
        let types = self.facts.as_ref().map(|f| &f.subject_types);
        Some(
            keys.into_iter()
                .enumerate()
                .map(|(i, k)| KeyColumn {
                    index: first + i,
                    // Pseudonyms are per subject type, as for keys found by origin.
                    table: types
                        .and_then(|t| t.get(&k.table))
                        .cloned()
                        .unwrap_or(k.table),
                    type_oid: k.type_oid,
                    binary: match formats.map(Vec::as_slice) {
                        Some([one]) => *one == 1,
                        Some(all) => all.get(first + i).is_some_and(|f| *f == 1),
                        None => false,
                    },
                })
                .collect(),
        )
    }

    /// Add the subject keys this row carries to the pending request's set.
    fn collect_row_keys(&mut self, frame: &[u8]) {
        let Some(Entry::Query(p) | Entry::Execute(p, _)) = self.queue.front_mut() else {
            return;
        };
        let keys = p.keys.as_deref().unwrap_or_default();
        if keys.is_empty() {
            return;
        }
        let set = p.subjects.get_or_insert_with(|| self.handle.subjects());
        let values = results::data_row_values(frame);
        for k in keys {
            if let Some(Some(v)) = values.as_ref().and_then(|vals| vals.get(k.index)) {
                if let Some(text) = rows::key_text(v, k.type_oid, k.binary) {
                    set.add(&k.table, &text);
                }
            }
        }
    }

    /// Subject-key columns of a RowDescription (their origins are subject keys).
    pub(super) fn key_columns(&self, frame: &[u8]) -> Vec<KeyColumn> {
        let Some(facts) = &self.facts else {
            return Vec::new();
        };
        let Some(fields) = results::row_fields(frame) else {
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

    /// Personal-data columns a RowDescription's fields come from, by their origins.
    pub(super) fn personal_origins(&self, frame: &[u8]) -> Vec<ColumnUse> {
        let Some(facts) = &self.facts else {
            return Vec::new();
        };
        if facts.personal_columns.is_empty() {
            return Vec::new();
        }
        let Some(fields) = results::row_fields(frame) else {
            return Vec::new();
        };
        fields
            .iter()
            .filter_map(|f| {
                facts
                    .personal_columns
                    .get(&(f.table_oid, f.attnum))
                    .cloned()
            })
            .collect()
    }
}
