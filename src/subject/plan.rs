//! Which tables hold a subject's data, with their columns as PostgreSQL has them: the policy's
//! inventory names the tables and keys, the database the columns and types (a column the
//! inventory does not classify is still exported, as `unclassified`).

use tokio_postgres::Client;

use super::SubjectError;
use crate::policy::erase::{column_action, EraseAction, RowsAction};
use crate::policy::inventory::{is_pattern, TableEntry, UNCLASSIFIED};
use crate::policy::PolicySet;

/// One column of a subject table.
#[derive(Debug, Clone)]
pub struct PlanColumn {
    pub name: String,
    /// `format_type` of the column, e.g. `bigint`, `character varying(9)`.
    pub sql_type: String,
    /// PostgreSQL's type category (`S` string, `N` numeric, `D` date/time, ...).
    pub type_category: char,
    pub not_null: bool,
    pub category: String,
    pub erase: EraseAction,
    /// Where the erase action comes from (the policy rule or the category default).
    pub erase_rule: String,
}

/// One table holding part of the subjects' data.
#[derive(Debug, Clone)]
pub struct PlanTable {
    pub schema: String,
    pub table: String,
    /// The column holding the subject's id.
    pub key: String,
    pub key_type: String,
    pub columns: Vec<PlanColumn>,
    pub rows: RowsAction,
    /// The period after which rows are past retention.
    pub retention: Option<PlanRetention>,
}

/// A table's retention period, as `retention run` applies it.
#[derive(Debug, Clone)]
pub struct PlanRetention {
    pub column: String,
    /// The period as PostgreSQL reads an interval, e.g. `10 years`.
    pub interval: String,
    /// Delete rows past the period instead of anonymising them.
    pub delete: bool,
}

impl PlanRetention {
    /// Rows of `alias` past the period at the time in parameter `$param`.
    pub fn past(&self, alias: &str, param: usize) -> String {
        format!(
            "{alias}.{} < CAST(CAST(${param} AS text) AS timestamptz) - CAST('{}' AS interval)",
            q(&self.column),
            self.interval
        )
    }
}

impl PlanTable {
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", q(&self.schema), q(&self.table))
    }

    /// `t.key = <the id parameter>` with the parameter cast as the key is typed.
    pub fn key_filter(&self, alias: &str, param: usize) -> String {
        format!(
            "{alias}.{} = CAST(CAST(${param} AS text) AS {})",
            q(&self.key),
            self.key_type
        )
    }
}

/// The subject type and its tables, the subject's own table first.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `schema.table` holding the subjects.
    pub subject_type: String,
    pub tables: Vec<PlanTable>,
}

pub fn q(name: &str) -> String {
    crate::analysis::quote_ident(name)
}

impl Plan {
    /// Every subject type of the inventory: the tables with a subject key of their own.
    pub fn subject_types(policy: &PolicySet) -> Vec<String> {
        policy
            .inventory
            .tables
            .iter()
            .filter(|t| t.subject_key.is_some() && t.subject.is_none() && !is_pattern(&t.table))
            .map(|t| format!("{}.{}", t.schema, t.table))
            .collect()
    }

    /// The tables of `subject_type` (default: the inventory's one table whose subject key is
    /// its own), with their columns read from the database.
    pub async fn load(
        client: &Client,
        policy: &PolicySet,
        subject_type: Option<&str>,
    ) -> Result<Plan, SubjectError> {
        let holder = subjects_table(policy, subject_type)?;
        let key = (holder.schema.clone(), holder.table.clone());
        let mut tables = Vec::new();
        for entry in &policy.inventory.tables {
            let of_type = entry
                .subject
                .as_ref()
                .unwrap_or(&(entry.schema.clone(), entry.table.clone()))
                == &key;
            let Some(subject_key) = entry.subject_key.as_ref().filter(|_| of_type) else {
                continue;
            };
            if is_pattern(&entry.table) || is_pattern(&entry.schema) {
                continue;
            }
            let table = plan_table(client, policy, entry, subject_key).await?;
            if (entry.schema.as_str(), entry.table.as_str()) == (key.0.as_str(), key.1.as_str()) {
                tables.insert(0, table);
            } else {
                tables.push(table);
            }
        }
        Ok(Plan {
            subject_type: format!("{}.{}", key.0, key.1),
            tables,
        })
    }
}

/// The table holding the subjects of `subject_type`. Without `--type` the inventory must have
/// exactly one, since exporting or erasing "subject 42" of the wrong type would act on
/// someone else.
fn subjects_table<'p>(
    policy: &'p PolicySet,
    subject_type: Option<&str>,
) -> Result<&'p TableEntry, SubjectError> {
    let holders: Vec<_> = policy
        .inventory
        .tables
        .iter()
        .filter(|t| t.subject_key.is_some() && t.subject.is_none())
        .filter(|t| !is_pattern(&t.table))
        .collect();
    match subject_type {
        Some(want) => holders
            .iter()
            .find(|t| want == t.table || want == format!("{}.{}", t.schema, t.table))
            .copied()
            .ok_or_else(|| {
                SubjectError::Plan(format!(
                    "--type {want}: not an inventory table with a subject_key of its own"
                ))
            }),
        None => match holders.as_slice() {
            [one] => Ok(one),
            [] => Err(SubjectError::Plan(
                "the inventory has no table with a subject_key of its own".into(),
            )),
            _ => Err(SubjectError::Plan(
                "the inventory has several subject types: name one with --type".into(),
            )),
        },
    }
}

/// One inventory table of the subject type, with its columns as the database has them: the
/// inventory may lag behind the schema, and every column is exported or erased, classified
/// or not.
async fn plan_table(
    client: &Client,
    policy: &PolicySet,
    entry: &TableEntry,
    subject_key: &str,
) -> Result<PlanTable, SubjectError> {
    let cols = columns(client, &entry.schema, &entry.table).await?;
    let Some(key_col) = cols.iter().find(|c| c.0 == subject_key) else {
        return Err(SubjectError::Plan(format!(
            "{}.{}: subject key {subject_key} is not a column in the database",
            entry.schema, entry.table
        )));
    };
    let key_type = key_col.1.clone();
    let columns = cols
        .into_iter()
        .map(|(name, sql_type, type_category, not_null)| {
            let category = policy
                .inventory
                .classify(&entry.schema, &entry.table, &name)
                .map_or_else(|| UNCLASSIFIED.to_owned(), |c| c.category);
            let (erase, erase_rule) =
                column_action(entry.erase.as_ref(), Some(subject_key), &name, &category);
            PlanColumn {
                name,
                sql_type,
                type_category,
                not_null,
                category,
                erase,
                erase_rule,
            }
        })
        .collect();
    Ok(PlanTable {
        schema: entry.schema.clone(),
        table: entry.table.clone(),
        key: subject_key.to_owned(),
        key_type,
        columns,
        rows: entry.erase.as_ref().map(|e| e.rows).unwrap_or_default(),
        retention: entry.retention.as_ref().map(|r| PlanRetention {
            column: r.column.clone(),
            interval: r.keep.interval(),
            delete: r.delete,
        }),
    })
}

/// (name, format_type, type category, NOT NULL) of a table's columns, in order.
async fn columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String, char, bool)>, SubjectError> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    t.typcategory::text, a.attnotnull \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| db_error(&format!("columns of {schema}.{table}"), &e))?;
    if rows.is_empty() {
        return Err(SubjectError::Plan(format!(
            "{schema}.{table} is in the inventory but not in the database"
        )));
    }
    Ok(rows
        .iter()
        .map(|r| {
            let cat: String = r.get(2);
            (
                r.get(0),
                r.get(1),
                cat.chars().next().unwrap_or('X'),
                r.get(3),
            )
        })
        .collect())
}

/// A database error with PostgreSQL's message and SQLSTATE.
pub fn db_error(what: &str, e: &tokio_postgres::Error) -> SubjectError {
    SubjectError::Database(match e.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {}", crate::cause::chain(e)),
    })
}
