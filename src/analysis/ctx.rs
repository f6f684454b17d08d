//! What a statement is analysed against — the role's rules, the catalog, the search_path —
//! and the refusals it builds, each naming the role and the policy version.

use std::collections::HashSet;
use std::sync::Arc;

use super::refusal::{Reason, Why};
use super::*;
use crate::analysis::Refusal;
use crate::catalog::Relation;
use crate::policy::model::{ColumnAction, ColumnDecision};

impl Ctx<'_> {
    pub fn role(&self) -> &str {
        self.rules.name()
    }

    /// A refusal of this role under this policy version.
    pub fn refusal(&self, reason: Reason) -> Refusal {
        Refusal {
            role: self.role().to_owned(),
            policy_version: self.policy_version.to_owned(),
            reason: Box::new(reason),
        }
    }

    /// A refusal in its own words.
    pub fn refuse(&self, message: String) -> Refusal {
        self.refusal(Reason::Policy {
            message,
            hint: None,
        })
    }

    /// `{what} is not allowed for role R`, going on as `why` says.
    pub fn not_allowed(&self, what: impl Into<String>, why: Why) -> Refusal {
        self.refusal(Reason::NotAllowed {
            what: what.into(),
            why,
        })
    }

    /// `role R may not {what}: {why}`.
    pub fn may_not(&self, what: impl Into<String>, why: impl Into<String>) -> Refusal {
        self.refusal(Reason::MayNot {
            what: what.into(),
            why: why.into(),
        })
    }

    pub fn unsupported(&self, what: &str) -> Refusal {
        self.refusal(Reason::NotSupported {
            what: what.to_owned(),
        })
    }

    /// The refusal of a statement naming `column` of `schema.table`, blocked for the role by
    /// `d`.
    pub fn blocked(&self, schema: &str, table: &str, column: &str, d: &ColumnDecision) -> Refusal {
        self.refusal(Reason::BlockedColumn {
            schema: schema.to_owned(),
            table: table.to_owned(),
            column: column.to_owned(),
            category: d.category.clone(),
            rule: d.rule.clone(),
        })
    }

    /// A user-defined function, or a name that may resolve to one.
    pub fn user_function(&self, schema: Option<&str>, name: &str) -> Refusal {
        self.refusal(Reason::UserFunction {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    pub fn resolve(
        &self,
        parts: &[String],
        name: &sqlparser::ast::ObjectName,
    ) -> Result<Arc<Relation>, Refusal> {
        self.catalog
            .resolve(
                inheritance::without_marker(parts),
                self.search_path,
                self.user,
            )
            .cloned()
            .ok_or_else(|| {
                self.refusal(Reason::NotInCatalog {
                    relation: name.to_string(),
                })
            })
    }

    /// The use record for a column of `rel`, or None for columns that are not personal data.
    pub fn column_use(&self, rel: &Relation, column: &str) -> Option<ColumnUse> {
        let d = self.column(rel, column);
        if d.category == crate::policy::inventory::NONE {
            return None;
        }
        Some(ColumnUse {
            schema: rel.schema.clone(),
            table: rel.name.clone(),
            column: column.to_owned(),
            category: d.category,
            action: match d.action {
                ColumnAction::Allow => UseAction::Allowed,
                ColumnAction::Mask(_) => UseAction::Masked,
                ColumnAction::Block => UseAction::Blocked,
            },
            rule: d.rule,
        })
    }

    fn decisions(&self, rel: &Relation) -> Vec<(usize, crate::policy::model::ColumnDecision)> {
        rel.columns
            .iter()
            .enumerate()
            .map(|(i, c)| (i, self.column(rel, &c.name)))
            .collect()
    }

    /// The role's decision on a column; sequences' columns are counters, never personal data.
    pub fn column(&self, rel: &Relation, column: &str) -> crate::policy::model::ColumnDecision {
        if rel.kind == crate::catalog::RelKind::Sequence {
            return crate::policy::model::ColumnDecision {
                action: ColumnAction::Allow,
                category: crate::policy::inventory::NONE.to_owned(),
                rule: "sequences hold no personal data".to_owned(),
            };
        }
        if functions::is_hidden_catalog_column(&rel.schema, &rel.name, column) {
            return crate::policy::model::ColumnDecision {
                action: ColumnAction::Block,
                category: crate::policy::inventory::NONE.to_owned(),
                rule: "pgvakt: the session's own statement texts are its rewritten forms"
                    .to_owned(),
            };
        }
        self.rules.column(&rel.schema, &rel.name, column)
    }

    /// Whether the role reads the relation only through a stand-in: a column it does not
    /// read as stored, or rows it does not see.
    pub fn is_protected(&self, rel: &Relation) -> bool {
        self.decisions(rel)
            .iter()
            .any(|(_, d)| d.action != ColumnAction::Allow)
            || self.row_filter(rel, super::row_rules::ROW_ALIAS).is_some()
    }

    /// The SELECT that stands in for a protected relation, or None when nothing is protected.
    /// Only the columns in `reach` are included (all when None): a statement cannot name the
    /// others, and a smaller stand-in is cheaper to analyse and to run.
    pub fn masked_relation_sql(
        &self,
        rel: &Relation,
        reach: Option<&HashSet<String>>,
    ) -> Result<Option<String>, Refusal> {
        self.masked_relation_sql_with(rel, reach, false, false)
    }

    /// As [`Ctx::masked_relation_sql`]; with `blocked_as_null`, blocked columns are there as
    /// typed NULLs (inside an inlined view, which names them whatever the statement reads).
    /// With `always`, a relation with nothing protected gets one too (read with ONLY).
    pub fn masked_relation_sql_with(
        &self,
        rel: &Relation,
        reach: Option<&HashSet<String>>,
        blocked_as_null: bool,
        always: bool,
    ) -> Result<Option<String>, Refusal> {
        let decisions = self.decisions(rel);
        let rows = self.row_filter(rel, super::row_rules::ROW_ALIAS);
        if !always
            && rows.is_none()
            && decisions
                .iter()
                .all(|(_, d)| d.action == ColumnAction::Allow)
        {
            return Ok(None);
        }
        let mut cols = Vec::with_capacity(rel.columns.len());
        let mut visible = 0;
        for (i, d) in decisions {
            let c = &rel.columns[i];
            if d.action != ColumnAction::Block {
                visible += 1;
            }
            if reach.is_some_and(|r| !r.contains(&c.name)) {
                continue;
            }
            let q = quote(&c.name).to_string();
            match &d.action {
                ColumnAction::Allow => cols.push(q),
                ColumnAction::Mask(m) => {
                    let masked = m.render(&q, &c.ty).map_err(|e| {
                        self.refuse(format!(
                            "mask {} cannot be applied to {}.{} ({}): {e}",
                            m.name, rel.name, c.name, c.ty.sql_name
                        ))
                    })?;
                    cols.push(format!("{masked} AS {q}"));
                }
                ColumnAction::Block if blocked_as_null => {
                    cols.push(format!("CAST(NULL AS {}) AS {q}", c.ty.sql_name));
                }
                ColumnAction::Block => {}
            }
        }
        if visible == 0 {
            return Err(self.refuse(format!(
                "every column of {}.{} is blocked for role {}",
                rel.schema,
                rel.name,
                self.role()
            )));
        }
        if cols.is_empty() {
            // The statement names no column of it (e.g. count(*)): rows only.
            cols.push("NULL AS \"pgvakt_no_column\"".to_owned());
        }
        let select = format!(
            "SELECT {} FROM {}.{}",
            cols.join(", "),
            quote(&rel.schema),
            quote(&rel.name)
        );
        Ok(Some(match rows {
            Some(f) => super::row_rules::with_rows(select, &f),
            None => select,
        }))
    }

    /// The first protected relation a view reads, directly or through other views.
    pub fn view_reads_protected(&self, view: &Relation) -> Option<String> {
        let mut seen = HashSet::new();
        let mut stack: Vec<u32> = view.reads.clone();
        while let Some(oid) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let Some(rel) = self.catalog.by_oid(oid) else {
                continue;
            };
            if self.is_protected(rel) {
                return Some(format!("{}.{}", rel.schema, rel.name));
            }
            stack.extend(rel.reads.iter().copied());
        }
        None
    }

    /// Functions: built-ins only, minus those that run SQL text, read files or expose other
    /// sessions; a name that also exists outside pg_catalog could resolve to user code.
    pub fn check_function(
        &self,
        parts: &[String],
        f: Option<&sqlparser::ast::Function>,
    ) -> Result<(), Refusal> {
        let (schema, name) = match parts {
            [n] => (None, n.as_str()),
            [s, n] => (Some(s.as_str()), n.as_str()),
            _ => return Err(self.unsupported(&format!("function {}", parts.join(".")))),
        };
        if let Some(s) = schema {
            if s != "pg_catalog" {
                return Err(self.user_function(Some(s), name));
            }
        } else if self.catalog.is_user_function(name) {
            return Err(self.user_function(None, name));
        }
        if functions::is_denied_function(name) {
            return Err(self.not_allowed(
                format!("function {name}"),
                Why::because("it can read data past pgvakt's analysis"),
            ));
        }
        if name == "set_config" && !f.is_some_and(relations::setting_allowed) {
            return Err(self.not_allowed("set_config of this setting", Why::Plain));
        }
        Ok(())
    }
}
