//! The compiled policy model: what the session and the analyser consult for every statement.
//!
//! This is the contract between policy loading (YAML → validated → compiled) and enforcement.
//! Everything here is plain data plus pure functions, so decisions are unit-testable without IO.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::inventory::{ColumnRules, Inventory, NONE, UNCLASSIFIED};
use super::masks::{self, MaskKind};
use super::rows::{RowContext, RowFilter, RowRules};

/// What a statement does, for per-role limits and for audit records. There is no DDL class:
/// restricted roles can never run DDL (pgvakt cannot analyse what it does with protected data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementClass {
    Read,
    Write,
    Copy,
    Utility,
}

/// The type of a column as the catalog reports it, enough for a mask to keep the type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnType {
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(40)`, `date`, `numeric(12,2)`.
    pub sql_name: String,
    /// `pg_type.typcategory`: `S` string, `D` date/time, `N` numeric, `B` boolean, `U` user, ...
    pub category: char,
}

/// A masking method compiled from its SQL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskMethod {
    pub name: String,
    /// SQL expression template; `{col}` is the column expression, `{type}` its SQL type name.
    /// For built-in methods this is the text-column form, kept for `explain` output.
    pub template: String,
    /// Which method this is; decides the SQL per column type (see `masks.rs`).
    pub kind: MaskKind,
}

impl MaskMethod {
    /// SQL expression that masks `col_sql` (an already-rendered column reference) while keeping
    /// the column's type. An error means the method cannot mask this type: enforcement refuses
    /// the statement rather than forwarding the column unmasked.
    pub fn render(&self, col_sql: &str, ty: &ColumnType) -> Result<String, String> {
        masks::render(self, col_sql, ty)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAction {
    Allow,
    Mask(Arc<MaskMethod>),
    Block,
}

/// The decision for one column for one role, with the rule that produced it (for messages,
/// `explain` and audit records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDecision {
    pub action: ColumnAction,
    /// Inventory category, e.g. `financial`; `none` for non-personal columns.
    pub category: String,
    /// Human-readable origin of the decision, e.g. `roles.secretary.categories.financial (policies/crm.yaml:41)`.
    pub rule: String,
}

/// What a role may write into a column, decided apart from what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    /// Any value.
    Allow,
    /// The stored value stays: NULL or DEFAULT into a new row, and in an UPDATE exactly the
    /// value the role reads for that row (a no-op, decided by PostgreSQL inside the statement);
    /// anything else is refused.
    Keep,
    /// No write at all.
    Refuse,
}

/// The write decision for one column for one role, with the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteDecision {
    pub action: WriteAction,
    pub rule: String,
}

/// Per-table inventory facts needed by enforcement and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInventory {
    pub schema: String,
    pub table: String,
    /// Column identifying the data subject of a row, e.g. `id` for contacts, `contact_id` for activities.
    pub subject_key: Option<String>,
    /// With a subject key: the subject type it identifies, `schema.table` of the table that
    /// holds those subjects (`public.contacts` for `activities.contact_id`). Pseudonyms are
    /// computed per subject type, so one person has one pseudonym across tables.
    pub subject_type: Option<String>,
}

/// Constructs a restricted role may use only when the policy explicitly allows them. DO blocks,
/// CREATE FUNCTION and DDL are never allowed to restricted roles, and PREPARE / EXECUTE /
/// DECLARE are always analysed like the statement they wrap, so neither is a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// CREATE TEMP TABLE / VIEW, SELECT INTO.
    TempObjects,
    /// LISTEN, NOTIFY and `pg_notify` (`analysis::functions::needs_capability`). UNLISTEN is
    /// always allowed: it moves no data, and connection pools send `UNLISTEN *` on release.
    Notify,
    /// pg_catalog's statistics views and tables (`analysis::functions::statistics_relation`):
    /// `pg_stats`, `pg_statistic`, `pg_stat_*`, `pg_statio_*`, ... They hold column values
    /// (most common values, histogram bounds) or other sessions' query text.
    StatisticsViews,
    /// COPY to/from server files or programs.
    ServerFiles,
}

pub trait RoleRules: Send + Sync {
    /// Policy role name.
    fn name(&self) -> &str;
    /// True when the role has no restriction at all: statements pass through untouched.
    fn is_unrestricted(&self) -> bool;
    /// Decision for a base-table column (schema-qualified, as in the catalog).
    fn column(&self, schema: &str, table: &str, column: &str) -> ColumnDecision;
    /// Whether the role may run statements of this class.
    fn allows_class(&self, class: StatementClass) -> bool;
    /// Whether the role may use a construct that is otherwise refused.
    fn allows(&self, capability: Capability) -> bool;
    /// The column identifying a table's data subject, if the inventory names one.
    fn subject_key(&self, _schema: &str, _table: &str) -> Option<String> {
        None
    }
    /// `schema.table` of the table holding the subjects a table's subject key identifies.
    fn subject_type(&self, _schema: &str, _table: &str) -> Option<String> {
        None
    }
    /// Whether any row rule can hide rows from the role.
    fn has_row_rules(&self) -> bool {
        false
    }
    /// The predicate rows of a table must satisfy for the role, over the row aliased `alias`
    /// ("as if the table held only these rows"); None when the role sees every row.
    fn row_filter(&self, _schema: &str, _table: &str, _alias: &str) -> Option<RowFilter> {
        None
    }
    /// What the role may write into a column. Without a write rule: what it reads as stored it
    /// may write, and a masked or blocked column keeps its stored value.
    fn write(&self, schema: &str, table: &str, column: &str) -> WriteDecision {
        let read = self.column(schema, table, column);
        match read.action {
            ColumnAction::Allow => WriteDecision {
                action: WriteAction::Allow,
                rule: read.rule,
            },
            _ => WriteDecision {
                action: WriteAction::Keep,
                rule: format!("roles.{}.writes (built-in default: keep)", self.name()),
            },
        }
    }
}

/// A role's rule for a column or category, with its origin for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAction {
    pub action: ColumnAction,
    /// e.g. `roles.secretary.categories.financial (policies/crm.yaml:41:7)`.
    pub rule: String,
}

/// A compiled policy role; built by the loader.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    pub name: String,
    pub unrestricted: bool,
    /// Declared purpose of the role's processing and its GDPR Art. 6(1) legal basis; audit
    /// records of the role's sessions carry them.
    pub purpose: Option<(String, String)>,
    /// The data inventory shared by all roles of one policy set.
    pub inventory: Arc<Inventory>,
    /// Column rules (exact or pattern names); they win over category rules.
    pub columns: ColumnRules<RuleAction>,
    /// Category → rule.
    pub categories: BTreeMap<String, RuleAction>,
    /// Decision for personal columns not opened by any rule (privacy by default).
    pub default_action: ColumnAction,
    pub default_rule: String,
    pub classes: Vec<StatementClass>,
    pub capabilities: Vec<Capability>,
    /// Write rules (exact or pattern column names); they win over category write rules.
    pub write_columns: ColumnRules<WriteDecision>,
    /// Category → write rule.
    pub write_categories: BTreeMap<String, WriteDecision>,
    /// Names of the declared purposes the role processes for.
    pub purposes: Vec<String>,
    /// Which rows (people) the role sees.
    pub rows: RowRules,
}

impl RolePolicy {
    /// Inventory facts (subject key) for a base table, if the inventory lists it.
    pub fn table_inventory(&self, schema: &str, table: &str) -> Option<TableInventory> {
        self.inventory.table(schema, table)
    }
}

impl RoleRules for RolePolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    fn column(&self, schema: &str, table: &str, column: &str) -> ColumnDecision {
        let classified = self.inventory.classify(schema, table, column);
        let category = classified
            .as_ref()
            .map_or_else(|| NONE.to_owned(), |c| c.category.clone());
        let decide = |r: &RuleAction| ColumnDecision {
            action: r.action.clone(),
            category: category.clone(),
            rule: r.rule.clone(),
        };
        if self.unrestricted {
            return ColumnDecision {
                action: ColumnAction::Allow,
                category,
                rule: format!("roles.{} is unrestricted", self.name),
            };
        }
        if let Some(r) = self.columns.get(schema, table, column) {
            return decide(r);
        }
        let Some(classified) = classified else {
            return ColumnDecision {
                action: ColumnAction::Allow,
                category,
                rule: self.inventory.non_personal_reason(schema, table),
            };
        };
        if classified.category == NONE {
            return ColumnDecision {
                action: ColumnAction::Allow,
                category,
                rule: classified.rule,
            };
        }
        let mut decision = match self.categories.get(&classified.category) {
            Some(r) => decide(r),
            None => ColumnDecision {
                action: self.default_action.clone(),
                category,
                rule: self.default_rule.clone(),
            },
        };
        if classified.category == UNCLASSIFIED && !self.inventory.is_listed(schema, table) {
            // Privacy by default: say why a table nobody classified is treated as personal.
            decision.rule = format!("{}; {}", decision.rule, classified.rule);
        }
        decision
    }

    fn allows_class(&self, class: StatementClass) -> bool {
        self.unrestricted || self.classes.contains(&class)
    }

    fn allows(&self, capability: Capability) -> bool {
        self.unrestricted || self.capabilities.contains(&capability)
    }

    fn subject_key(&self, schema: &str, table: &str) -> Option<String> {
        self.inventory.table(schema, table)?.subject_key
    }

    fn subject_type(&self, schema: &str, table: &str) -> Option<String> {
        self.inventory.table(schema, table)?.subject_type
    }

    fn has_row_rules(&self) -> bool {
        !self.unrestricted
            && (self.rows.consent
                || self.rows.retention
                || !self.rows.where_.is_empty()
                || (!self.rows.see_restricted && self.inventory.restrictions.is_some()))
    }

    fn row_filter(&self, schema: &str, table: &str, alias: &str) -> Option<RowFilter> {
        if self.unrestricted {
            return None;
        }
        RowContext {
            inventory: &self.inventory,
            rules: &self.rows,
            purposes: &self.purposes,
        }
        .filter(schema, table, alias)
    }

    fn write(&self, schema: &str, table: &str, column: &str) -> WriteDecision {
        if self.unrestricted {
            return WriteDecision {
                action: WriteAction::Allow,
                rule: format!("roles.{} is unrestricted", self.name),
            };
        }
        if let Some(w) = self.write_columns.get(schema, table, column) {
            return w.clone();
        }
        let read = self.column(schema, table, column);
        if let Some(w) = self.write_categories.get(&read.category) {
            return w.clone();
        }
        match read.action {
            ColumnAction::Allow => WriteDecision {
                action: WriteAction::Allow,
                rule: read.rule,
            },
            _ => WriteDecision {
                action: WriteAction::Keep,
                rule: format!("roles.{}.writes (built-in default: keep)", self.name),
            },
        }
    }
}
