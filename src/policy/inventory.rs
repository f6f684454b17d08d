//! The compiled data inventory: which columns hold personal data, and of what category.
//!
//! Names match exactly or by `*` glob patterns. Precedence, most specific first: a table's own
//! exact column, the table's column patterns, then the global `schema.table.column` patterns.
//! Overlapping patterns that disagree are rejected at load time, so lookup order among patterns
//! never decides anything.
//!
//! Privacy by default: a relation the inventory does not list is personal data of category
//! `unclassified` unless the policy sets `unlisted_relations: not_personal`. System schemas
//! ([`SYSTEM_SCHEMAS`]) are never personal data; a separate catalog allowlist governs them.

use std::collections::{BTreeMap, BTreeSet};

use super::model::TableInventory;

/// Category given to columns of a personal table that no rule classifies: personal by default.
pub const UNCLASSIFIED: &str = "unclassified";
/// Category of non-personal columns.
pub const NONE: &str = "none";
/// GDPR Art. 9 special categories of personal data (built-in category).
pub const SPECIAL: &str = "special";

/// Schemas of PostgreSQL's own catalogs: never personal data, whatever the inventory says
/// (the analyser's catalog allowlist decides what a restricted role may read there).
pub const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

pub fn is_system_schema(schema: &str) -> bool {
    SYSTEM_SCHEMAS.contains(&schema)
}

/// What a relation the inventory does not list is (policy setting `unlisted_relations`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnlistedRelations {
    /// Personal data of category `unclassified`: masked or blocked by each role's rule for
    /// `unclassified` or its default, and audited (privacy by default).
    #[default]
    Personal,
    /// Not personal data: readable by every role and not audited. A deliberate relaxation.
    NotPersonal,
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    // Names are matched on every column decision: ASCII (the common case) without allocating.
    if pattern.is_ascii() && name.is_ascii() {
        return wildcard(pattern.as_bytes(), name.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    wildcard(&p, &n)
}

/// Classic iterative wildcard match with backtracking to the last star.
fn wildcard<T: PartialEq + Copy + Into<u32>>(p: &[T], n: &[T]) -> bool {
    let star = |c: T| c.into() == u32::from(b'*');
    let (mut pi, mut ni) = (0, 0);
    let mut last: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && star(p[pi]) {
            last = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = last {
            pi = sp + 1;
            ni = sn + 1;
            last = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| star(c))
}

pub fn is_pattern(name: &str) -> bool {
    name.contains('*')
}

/// Whether some name matches both globs.
pub fn globs_overlap(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // reach[i][j]: the prefixes a[..i] and b[..j] can generate a common string.
    let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
    reach[0][0] = true;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            if !reach[i][j] {
                continue;
            }
            if i < a.len() && a[i] == '*' {
                reach[i + 1][j] = true;
                if j < b.len() {
                    reach[i][j + 1] = true;
                }
            }
            if j < b.len() && b[j] == '*' {
                reach[i][j + 1] = true;
                if i < a.len() {
                    reach[i + 1][j] = true;
                }
            }
            if i < a.len() && j < b.len() && a[i] == b[j] {
                reach[i + 1][j + 1] = true;
            }
        }
    }
    reach[a.len()][b.len()]
}

/// A schema-qualified column name whose parts may be globs.
pub type ColumnName = (String, String, String);

/// Values keyed by column names, exact or pattern.
#[derive(Debug, Clone)]
pub struct ColumnRules<V> {
    pub exact: BTreeMap<ColumnName, V>,
    pub patterns: Vec<(ColumnName, V)>,
}

impl<V> Default for ColumnRules<V> {
    fn default() -> Self {
        ColumnRules {
            exact: BTreeMap::new(),
            patterns: Vec::new(),
        }
    }
}

impl<V> ColumnRules<V> {
    pub fn insert(&mut self, name: ColumnName, value: V) {
        if is_pattern(&name.0) || is_pattern(&name.1) || is_pattern(&name.2) {
            self.patterns.push((name, value));
        } else {
            self.exact.insert(name, value);
        }
    }

    pub fn get(&self, schema: &str, table: &str, column: &str) -> Option<&V> {
        let key = (schema.to_owned(), table.to_owned(), column.to_owned());
        self.exact.get(&key).or_else(|| {
            self.patterns
                .iter()
                .find(|((s, t, c), _)| {
                    glob_match(s, schema) && glob_match(t, table) && glob_match(c, column)
                })
                .map(|(_, v)| v)
        })
    }
}

/// A category with the rule that assigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub category: String,
    pub rule: String,
}

/// One `inventory.tables` entry (the table name may be a pattern).
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub schema: String,
    pub table: String,
    pub subject_key: Option<String>,
    /// The subject type (schema, table) the key refers to, when it is another table's.
    pub subject: Option<(String, String)>,
    pub personal: bool,
    /// Column name (exact or pattern) → classification.
    pub columns: Vec<(String, Classified)>,
    pub rule: String,
    /// How long rows stay in daily use (`retention`).
    pub retention: Option<super::rows::Retention>,
    /// How erasure anonymises the table's rows (`erase`); None: the category defaults.
    pub erase: Option<super::erase::Erase>,
}

impl TableEntry {
    fn column(&self, column: &str) -> Option<&Classified> {
        let exact = self.columns.iter().find(|(c, _)| c == column);
        exact
            .or_else(|| {
                self.columns
                    .iter()
                    .find(|(c, _)| is_pattern(c) && glob_match(c, column))
            })
            .map(|(_, cls)| cls)
    }

    fn matches(&self, schema: &str, table: &str) -> bool {
        glob_match(&self.schema, schema) && glob_match(&self.table, table)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub tables: Vec<TableEntry>,
    pub columns: ColumnRules<Classified>,
    /// What relations no `tables` entry matches are.
    pub unlisted: UnlistedRelations,
    /// Where `unlisted_relations` is set, e.g. `unlisted_relations (p.yaml:3:1)`; empty when
    /// the default applies.
    pub unlisted_rule: String,
    /// The schemas the policy is about: every file's `schema` (default `public`) and every
    /// schema an inventory name spells out. `policy check --upstream` lists their relations.
    pub schemas: BTreeSet<String>,
    /// The files' `schema` values (default `public`) in file order: where the policy's own
    /// unqualified names live, so `explain` and `test` resolve a statement's unqualified names
    /// there too.
    pub file_schemas: Vec<String>,
    /// Where consents live (`inventory.consents`).
    pub consents: Option<super::rows::ConsentSource>,
    /// Where Art. 18 restrictions live (`inventory.restrictions`).
    pub restrictions: Option<super::rows::RestrictionSource>,
}

impl Inventory {
    /// The entry for a table: an exact entry wins over pattern entries.
    pub fn table_entry(&self, schema: &str, table: &str) -> Option<&TableEntry> {
        self.tables
            .iter()
            .find(|t| t.schema == schema && t.table == table)
            .or_else(|| self.tables.iter().find(|t| t.matches(schema, table)))
    }

    /// Whether an `inventory.tables` entry (exact or pattern) names the relation.
    pub fn is_listed(&self, schema: &str, table: &str) -> bool {
        self.table_entry(schema, table).is_some()
    }

    /// Category of a column, or `None` when it is not personal data: a system schema, a column
    /// of a `personal: false` table that no rule classifies, or a relation the inventory does
    /// not list under `unlisted_relations: not_personal`. Anything else that no rule classifies
    /// is `unclassified` (privacy by default).
    pub fn classify(&self, schema: &str, table: &str, column: &str) -> Option<Classified> {
        if is_system_schema(schema) {
            return None;
        }
        let entry = self.table_entry(schema, table);
        if let Some(cls) = entry.and_then(|e| e.column(column)) {
            return Some(cls.clone());
        }
        if let Some(cls) = self.columns.get(schema, table, column) {
            return Some(cls.clone());
        }
        match entry {
            Some(e) if e.personal => Some(Classified {
                category: UNCLASSIFIED.into(),
                rule: format!("{} (column not classified)", e.rule),
            }),
            Some(_) => None,
            None if self.unlisted == UnlistedRelations::Personal => Some(Classified {
                category: UNCLASSIFIED.into(),
                rule: unlisted_rule(schema, table),
            }),
            None => None,
        }
    }

    /// Why `classify` finds a column of this relation not personal, for decisions' `rule`.
    pub fn non_personal_reason(&self, schema: &str, table: &str) -> String {
        if is_system_schema(schema) {
            return format!("system schema {schema} (not personal data)");
        }
        match self.table_entry(schema, table) {
            Some(e) => format!("{} (personal: false)", e.rule),
            None => format!(
                "{schema}.{table} is not in the data inventory and {}",
                if self.unlisted_rule.is_empty() {
                    "unlisted_relations: not_personal".to_owned()
                } else {
                    format!("{} is not_personal", self.unlisted_rule)
                }
            ),
        }
    }

    pub fn table(&self, schema: &str, table: &str) -> Option<TableInventory> {
        self.table_entry(schema, table).map(|e| TableInventory {
            schema: schema.to_owned(),
            table: table.to_owned(),
            subject_key: e.subject_key.clone(),
            subject_type: e.subject_key.as_ref().map(|_| match &e.subject {
                Some((s, t)) => format!("{s}.{t}"),
                None => format!("{schema}.{table}"),
            }),
        })
    }
}

/// The classification rule of an unlisted relation's columns.
pub fn unlisted_rule(schema: &str, table: &str) -> String {
    format!("{schema}.{table} is not in the data inventory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*_at", "created_at"));
        assert!(!glob_match("*_at", "created_by"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("email", "emails"));
        assert!(globs_overlap("*_at", "created_*"));
        assert!(globs_overlap("*", "x"));
        assert!(!globs_overlap("*_at", "*_by"));
        assert!(!globs_overlap("email", "phone"));
        assert!(globs_overlap("e*l", "*mai*"));
    }
}
