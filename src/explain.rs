//! `pgvakt policy explain` and the analyser behind `pgvakt policy test`: what the proxy would
//! do with one statement for one role, and why. Both use the same analysis the relay uses, so
//! what they print is what the proxy does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::analysis::{self, ColumnUse, Ctx, Outcome, Refusal, UseAction};
use crate::catalog::snapshot::Snapshot;
use crate::catalog::Catalog;
use crate::policy::model::{RolePolicy, RoleRules, WriteAction, WriteDecision};
use crate::policy::testcases::{Decision, TestOutcome};
use crate::policy::PolicySet;
use crate::protocol::PgError;

/// The proxy's decision for one statement.
#[derive(Debug)]
pub struct Explanation {
    pub role: String,
    /// How the role was chosen (grant origin), when explained for a user.
    pub via: Option<String>,
    pub policy_version: String,
    pub decision: Decision,
    pub reads: Vec<ColumnUse>,
    pub writes: Vec<ColumnUse>,
    /// The write rule of each written column that is not plainly writable.
    pub write_rules: Vec<(String, WriteDecision)>,
    /// `schema.table` of each table read or written under row rules, with those rules.
    pub rows: Vec<(String, Vec<String>)>,
    /// What is forwarded upstream (None when refused, or the client's text when unrestricted).
    pub sql_out: Option<String>,
    pub refusal: Option<Refusal>,
}

/// Decide `sql` as the proxy does for a session of `role`.
pub fn explain(
    set: &PolicySet,
    catalog: &Catalog,
    role: &Arc<RolePolicy>,
    user: &str,
    search_path: &[String],
    sql: &str,
) -> Explanation {
    let mut e = Explanation {
        role: role.name.clone(),
        via: None,
        policy_version: set.version.clone(),
        decision: Decision::Allow,
        reads: Vec::new(),
        writes: Vec::new(),
        write_rules: Vec::new(),
        rows: Vec::new(),
        sql_out: None,
        refusal: None,
    };
    if role.is_unrestricted() {
        e.sql_out = Some(sql.to_owned());
        return e;
    }
    let ctx = Ctx {
        catalog,
        rules: role.as_ref(),
        search_path,
        user,
        policy_version: &set.version,
        hidden_subjects: false,
    };
    match analysis::analyse(sql, &ctx) {
        Outcome::Forward(a) => {
            e.reads = a.columns.clone();
            e.writes = a.written.clone();
            e.write_rules = e
                .writes
                .iter()
                .map(|c| {
                    let w = role.write(&c.schema, &c.table, &c.column);
                    (format!("{}.{}", c.table, c.column), w)
                })
                .filter(|(_, w)| w.action != WriteAction::Allow)
                .collect();
            let mut tables: Vec<String> = a.protected_reads.clone();
            tables.extend(a.written_tables.iter().cloned());
            tables.sort();
            tables.dedup();
            e.rows = tables
                .into_iter()
                .filter_map(|t| {
                    let (schema, table) = t.split_once('.')?;
                    let f = role.row_filter(schema, table, "pgvakt_row")?;
                    Some((t, f.rules))
                })
                .collect();
            e.decision = if a.masks_anything() || !e.write_rules.is_empty() || !e.rows.is_empty() {
                Decision::Rewrite
            } else {
                Decision::Allow
            };
            e.sql_out = Some(a.sql.clone());
        }
        Outcome::Refuse(r) => {
            e.decision = Decision::Refuse;
            e.refusal = Some(r);
        }
    }
    e
}

impl Explanation {
    /// `table.column` of the columns masked in what the statement reads.
    pub fn masked(&self) -> Vec<String> {
        self.reads
            .iter()
            .filter(|c| c.action == UseAction::Masked)
            .map(|c| format!("{}.{}", c.table, c.column))
            .collect()
    }

    /// `table.column` named by a refusal for a blocked column.
    pub fn blocked(&self) -> Vec<String> {
        self.refusal
            .as_ref()
            .and_then(Refusal::blocked_column)
            .into_iter()
            .collect()
    }

    /// The error a client of the proxy gets, when the statement is refused.
    pub fn error(&self) -> Option<PgError> {
        self.refusal.as_ref().map(Refusal::to_pg_error)
    }

    /// `table.column` of written columns whose stored value stays unless the role writes NULL
    /// into a new row (write rule `keep`).
    pub fn kept(&self) -> Vec<String> {
        self.write_rules
            .iter()
            .filter(|(_, w)| w.action == WriteAction::Keep)
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub fn test_outcome(&self) -> TestOutcome {
        TestOutcome {
            role: self.role.clone(),
            via: self.via.clone(),
            decision: self.decision,
            masked: self.masked(),
            blocked: self.blocked(),
            kept: self.kept(),
            rows: self.rows.clone(),
            sql_out: self.sql_out.clone(),
            error: self.error().map(|e| (e.code.to_owned(), e.message)),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decision = match self.decision {
            Decision::Allow => "allow",
            Decision::Rewrite => "rewrite",
            Decision::Refuse => "refuse",
        };
        writeln!(f, "decision: {decision}")?;
        write!(f, "role: {}", self.role)?;
        if let Some(via) = &self.via {
            write!(f, " (via {via})")?;
        }
        writeln!(f)?;
        writeln!(f, "policy version: {}", self.policy_version)?;
        for (title, list) in [("reads", &self.reads), ("writes", &self.writes)] {
            if list.is_empty() {
                continue;
            }
            writeln!(f, "{title}:")?;
            for c in list {
                writeln!(
                    f,
                    "  {}.{}.{}  category={}  action={}  rule: {}",
                    c.schema,
                    c.table,
                    c.column,
                    c.category,
                    c.action.as_str(),
                    c.rule
                )?;
            }
        }
        if !self.write_rules.is_empty() {
            writeln!(f, "write rules:")?;
            for (c, w) in &self.write_rules {
                let what = match w.action {
                    WriteAction::Keep => "keep (NULL or DEFAULT into a new row; in an UPDATE only the value the role reads, which leaves the stored value; decided by PostgreSQL per row)",
                    WriteAction::Refuse => "refuse",
                    WriteAction::Allow => "allow",
                };
                writeln!(f, "  {c}  write={what}  rule: {}", w.rule)?;
            }
        }
        if !self.rows.is_empty() {
            writeln!(f, "row rules:")?;
            for (t, rules) in &self.rows {
                writeln!(f, "  {t}")?;
                for r in rules {
                    writeln!(f, "    {r}")?;
                }
            }
        }
        if let Some(err) = &self.error() {
            writeln!(f, "error: {} {}", err.code, err.message)?;
            if let Some(d) = &err.detail {
                writeln!(f, "detail: {d}")?;
            }
        }
        if let Some(sql) = &self.sql_out {
            writeln!(f, "forwarded SQL:\n  {sql}")?;
        }
        Ok(())
    }
}

/// Load a schema snapshot file written by `pgvakt policy snapshot`.
pub fn load_snapshot(path: &Path) -> Result<Catalog, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Snapshot::from_json(&text)
        .and_then(Snapshot::into_catalog)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Connect to a live database for `--upstream` (a libpq-style connection string).
pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, String> {
    crate::dsn::connect(dsn, "pgvakt policy")
        .await
        .map_err(|e| format!("--upstream: {e}"))
}

/// The catalog of the database `dsn` names.
pub async fn live_catalog(client: &tokio_postgres::Client) -> Result<Catalog, String> {
    let db: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| crate::cause::chain(&e))?
        .get(0);
    Catalog::load(client, &db).await.map_err(|e| e.to_string())
}
