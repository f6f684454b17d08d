//! `pgvakt policy check`: validate policy files without starting the proxy, optionally against
//! the live schema.

use std::fmt;
use std::path::PathBuf;

use super::detect::{personal_name, special_word, value_hint};
use super::diag::{Diagnostics, Pos, Severity};
use super::inventory::{is_pattern, is_system_schema, UnlistedRelations, NONE};
use super::model::RoleRules;
use super::{load, PolicySet};

/// Everything `check` found, printable as `file:line:col: error: path: message` lines.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub version: Option<String>,
    pub diagnostics: Diagnostics,
    /// Warnings fail the check too (`--strict`).
    pub strict: bool,
}

impl CheckReport {
    /// The caller exits non-zero when this is false.
    pub fn ok(&self) -> bool {
        !self.diagnostics.has_errors() && (!self.strict || self.diagnostics.items.is_empty())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diagnostics)?;
        let count = |s| {
            self.diagnostics
                .items
                .iter()
                .filter(|d| d.severity == s)
                .count()
        };
        match &self.version {
            Some(v) if self.ok() => {
                writeln!(f, "policy {v}: ok, {} warning(s)", count(Severity::Warning))
            }
            Some(v) if !self.diagnostics.has_errors() => writeln!(
                f,
                "policy {v}: {} warning(s), which fail the check with --strict",
                count(Severity::Warning)
            ),
            _ => writeln!(
                f,
                "policy invalid: {} error(s), {} warning(s)",
                count(Severity::Error),
                count(Severity::Warning)
            ),
        }
    }
}

/// Validates the files; the set is returned too so `--upstream` can reuse it.
pub fn check(paths: &[PathBuf]) -> CheckReport {
    match load(paths) {
        Ok(set) => {
            let mut diagnostics = set.warnings.clone();
            let now = super::grants::unix_seconds(std::time::SystemTime::now());
            super::expiry::warnings(&set.grants, now, super::expiry::SOON, &mut diagnostics);
            CheckReport {
                version: Some(set.version.clone()),
                diagnostics: diagnostics.sorted(),
                strict: false,
            }
        }
        Err(e) => CheckReport {
            version: None,
            diagnostics: e.diagnostics,
            strict: false,
        },
    }
}

/// Example values of one live column: ((schema, table, column), values).
pub type Sample = ((String, String, String), Vec<String>);

/// One live relation (table, view, materialized view, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveTable {
    pub schema: String,
    pub name: String,
    /// For messages: `table`, `view`, `materialized view`, `foreign table`, `partitioned table`.
    pub kind: String,
    /// (column, type) in order.
    pub columns: Vec<(String, String)>,
}

/// Compares the inventory with the live schema: inventory names that do not exist are errors
/// (a typo there silently protects nothing), and so are relations in the policy's schemas that
/// the inventory does not list (they are personal data of category `unclassified` by default;
/// with `unlisted_relations: not_personal` a warning); unclassified columns whose name looks
/// personal (by name, or by sample values: e-mail, IBAN, account and identity numbers, phone
/// numbers) are warnings, and so are columns not classified `special` whose name or values use
/// words of GDPR Art. 9's special categories. `samples` may give example values per (schema,
/// table, column). Each finding is reported at the policy line it concerns: the inventory entry
/// of its table (or, for a relation the inventory does not list, the first entry of its schema).
pub fn check_against_schema(
    set: &PolicySet,
    live: &[LiveTable],
    samples: &[Sample],
) -> Diagnostics {
    let mut d = Diagnostics::default();
    let at = Positions::new(set);
    unlisted_relations(set, live, &at, &mut d);
    inventory_entries_exist(set, live, &at, &mut d);
    columns_that_look_personal(set, live, samples, &at, &mut d);
    d
}

/// Where findings are reported: the policy line a rule or a relation is discussed at.
struct Positions<'a> {
    set: &'a PolicySet,
    file: Pos,
}

impl<'a> Positions<'a> {
    fn new(set: &'a PolicySet) -> Self {
        let file = set.files.first().cloned().unwrap_or_default();
        Positions {
            set,
            file: Pos::file_only(&file),
        }
    }

    fn rule(&self, rule: &str) -> Pos {
        Pos::of_rule(rule).map_or_else(|| self.file.clone(), |(_, p)| p)
    }

    /// A relation of `schema`: its inventory entry, else its schema's first.
    fn table(&self, schema: &str, table: &str) -> Pos {
        let entries = &self.set.inventory.tables;
        entries
            .iter()
            .find(|e| e.schema == schema && e.table == table)
            .or_else(|| entries.iter().find(|e| e.schema == schema))
            .map_or_else(|| self.file.clone(), |e| self.rule(&e.rule))
    }
}

/// Relations of inventoried schemas that the inventory does not list.
fn unlisted_relations(set: &PolicySet, live: &[LiveTable], at: &Positions, d: &mut Diagnostics) {
    for rel in live {
        if is_system_schema(&rel.schema)
            || !set.inventory.schemas.contains(&rel.schema)
            || set.inventory.is_listed(&rel.schema, &rel.name)
        {
            continue;
        }
        let path = format!("{}.{}", rel.schema, rel.name);
        let pos = at.table(&rel.schema, &rel.name);
        match set.inventory.unlisted {
            UnlistedRelations::Personal => d.error(
                &pos,
                path,
                format!(
                    "{} is not in the data inventory: it is treated as personal data of category 'unclassified' (masked or blocked for restricted roles, reads audited); list it under inventory.tables, with 'personal: false' if it holds no personal data",
                    rel.kind
                ),
            ),
            UnlistedRelations::NotPersonal => d.warning(
                &pos,
                path,
                format!(
                    "{} is not in the data inventory and is treated as not personal ({})",
                    rel.kind,
                    set.inventory.non_personal_reason(&rel.schema, &rel.name)
                ),
            ),
        }
    }
}

/// Inventory entries naming tables or columns that do not exist upstream.
fn inventory_entries_exist(
    set: &PolicySet,
    live: &[LiveTable],
    at: &Positions,
    d: &mut Diagnostics,
) {
    for entry in &set.inventory.tables {
        if is_pattern(&entry.schema) || is_pattern(&entry.table) {
            continue;
        }
        let Some(LiveTable { columns: cols, .. }) = live
            .iter()
            .find(|t| t.schema == entry.schema && t.name == entry.table)
        else {
            let known = live.iter().map(|t| t.name.as_str());
            d.unknown(
                &at.rule(&entry.rule),
                entry.rule.clone(),
                format!(
                    "table '{}.{}' does not exist upstream",
                    entry.schema, entry.table
                ),
                &entry.table,
                known,
            );
            continue;
        };
        for (name, cls) in &entry.columns {
            if !is_pattern(name) && !cols.iter().any(|(c, _)| c == name) {
                d.unknown(
                    &at.rule(&cls.rule),
                    cls.rule.clone(),
                    format!(
                        "column '{name}' does not exist in {}.{}",
                        entry.schema, entry.table
                    ),
                    name,
                    cols.iter().map(|(c, _)| c.as_str()),
                );
            }
        }
    }
}

/// Columns whose name or sample values look personal, or special-category, while the
/// inventory classifies them otherwise.
fn columns_that_look_personal(
    set: &PolicySet,
    live: &[LiveTable],
    samples: &[Sample],
    at: &Positions,
    d: &mut Diagnostics,
) {
    for LiveTable {
        schema,
        name: table,
        columns: cols,
        ..
    } in live
    {
        // Schema `pgvakt` is pgvakt's own state (`pgvakt install`), not the application's data.
        if is_system_schema(schema) || schema == "pgvakt" {
            continue;
        }
        for (col, ty) in cols {
            column_findings(set, (schema, table, col, ty), samples, at, d);
        }
    }
}

fn column_findings(
    set: &PolicySet,
    (schema, table, col, ty): (&str, &str, &str, &str),
    samples: &[Sample],
    at: &Positions,
    d: &mut Diagnostics,
) {
    // Any role shows whether the inventory classifies a column; the default role always exists.
    let role = &set.default_role;
    let decision = role.column(schema, table, col);
    let classified = set.inventory.classify(schema, table, col);
    let unclassified = classified
        .as_ref()
        .is_none_or(|c| c.category == super::inventory::UNCLASSIFIED);
    let values = samples
        .iter()
        .filter(|((s, t, c), _)| s == schema && t == table && c == col)
        .flat_map(|(_, vals)| vals.iter());
    let by_value = values.clone().find_map(|v| value_hint(v));
    let pos = at.table(schema, table);
    let path = format!("{schema}.{table}.{col}");
    let not_personal = classified.as_ref().is_some_and(|c| c.category == NONE);
    if (unclassified && personal_name(col))
        || ((unclassified || not_personal) && by_value.is_some())
    {
        let why = by_value.map_or_else(
            || "its name looks personal".to_owned(),
            |v| format!("its values look like {v}"),
        );
        d.warning(
            &pos,
            path.clone(),
            format!(
                "column ({ty}) is not classified as personal data but {why} (currently: {})",
                if decision.category == NONE {
                    "not personal"
                } else {
                    "personal, unclassified"
                }
            ),
        );
    }
    let special = classified
        .as_ref()
        .is_some_and(|c| c.category == super::inventory::SPECIAL);
    if special {
        return;
    }
    let word = special_word(col)
        .map(|w| format!("its name ('{w}')"))
        .or_else(|| {
            values
                .clone()
                .find_map(|v| special_word(v))
                .map(|w| format!("its values ('{w}...')"))
        });
    if let Some(word) = word {
        d.warning(
            &pos,
            path,
            format!(
                "{word} suggest special-category data (GDPR Art. 9: health, beliefs, ethnicity, ...), but it is classified as '{}'; classify it as 'special'",
                classified.map_or_else(|| NONE.to_owned(), |c| c.category)
            ),
        );
    }
}
