//! Row rules: which people (and which of their rows) a role sees — "as if the tables held only
//! these rows". Purposes, consents, Art. 18 restrictions, retention periods and hand-written
//! predicates compile to one SQL predicate per table, which the analysis puts into the table's
//! stand-in, so PostgreSQL evaluates it at statement time against the current data: a consent
//! withdrawn upstream hides the person from the next statement on.
//!
//! Every relation the predicate reads is schema-qualified and every alias is pgvakt's own, so
//! neither the client's search_path, temporary tables nor WITH query names can capture it;
//! functions and operators are pg_catalog's (the session checks keep pg_catalog first in the
//! search_path).

use super::inventory::{Inventory, TableEntry};
use super::predicate::Predicate;

/// `purposes.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub description: Option<String>,
    /// GDPR Art. 6(1) bases processing for this purpose may rest on.
    pub legal_bases: Vec<String>,
}

/// `inventory.consents`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSource {
    pub schema: String,
    pub table: String,
    pub subject_key: String,
    pub purpose: String,
    pub withdrawn: Option<String>,
    pub expires: Option<String>,
    /// The subject type (schema, table) the key refers to.
    pub subject: (String, String),
    pub rule: String,
}

/// `inventory.restrictions`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestrictionSource {
    /// One row per restriction; in force while `lifted` is NULL or in the future.
    Table {
        schema: String,
        table: String,
        subject_key: String,
        lifted: Option<String>,
        subject: (String, String),
        rule: String,
    },
    /// A boolean column of the subject table; restricted when true.
    Flag {
        schema: String,
        table: String,
        column: String,
        rule: String,
    },
}

impl RestrictionSource {
    fn subject(&self) -> (&str, &str) {
        match self {
            RestrictionSource::Table { subject, .. } => (&subject.0, &subject.1),
            RestrictionSource::Flag { schema, table, .. } => (schema, table),
        }
    }

    pub fn rule(&self) -> &str {
        match self {
            RestrictionSource::Table { rule, .. } | RestrictionSource::Flag { rule, .. } => rule,
        }
    }
}

/// The time the rules compare against: the current statement's start. `now()` is the start of
/// the transaction, so a client that keeps one transaction open would go on reading (new data
/// about) a person whose consent was withdrawn or whose retention ended after it began.
pub const NOW: &str = "pg_catalog.statement_timestamp()";

/// A period in days, weeks, months or years (`3y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub amount: u32,
    pub unit: char,
}

impl Period {
    /// `3y`, `90d`, `6m`, `2w`: a positive number and one unit.
    pub fn parse(text: &str) -> Result<Period, String> {
        let t = text.trim();
        let unit = t.chars().last().ok_or("empty period")?;
        let digits = &t[..t.len() - unit.len_utf8()];
        if !matches!(unit, 'd' | 'w' | 'm' | 'y') {
            return Err(format!(
                "'{text}': a period is a number and a unit d, w, m or y (e.g. 3y)"
            ));
        }
        let amount: u32 = digits
            .parse()
            .ok()
            .filter(|n| *n > 0 && *n <= 100_000 && digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("'{text}': the amount must be a positive whole number"))?;
        Ok(Period { amount, unit })
    }

    /// The interval literal PostgreSQL reads, e.g. `3 years`.
    pub fn interval(&self) -> String {
        let unit = match self.unit {
            'd' => "days",
            'w' => "weeks",
            'm' => "months",
            _ => "years",
        };
        format!("{} {unit}", self.amount)
    }
}

/// `inventory.tables.<t>.retention`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub column: String,
    pub keep: Period,
    pub rule: String,
    /// `retention run` deletes rows past the period instead of anonymising them.
    pub delete: bool,
}

impl Retention {
    /// Past retention: the column is older than the period (NULL is not past it).
    pub fn past_sql(&self, alias: &str) -> String {
        format!(
            "{}.{} < {NOW} - CAST('{}' AS pg_catalog.interval)",
            q(alias),
            q(&self.column),
            self.keep.interval()
        )
    }
}

/// A hand-written predicate for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhereRule {
    pub schema: String,
    pub table: String,
    pub predicate: Predicate,
    /// As written in the policy, for `explain`.
    pub text: String,
    pub rule: String,
}

/// A role's row rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowRules {
    pub consent: bool,
    pub retention: bool,
    pub see_restricted: bool,
    pub where_: Vec<WhereRule>,
    /// Origin of `rows`, e.g. `roles.marketing.rows (crm.yaml:120:5)`.
    pub rule: String,
    /// Origin of the restriction default or of `see_restricted`.
    pub restricted_rule: String,
    /// `row_pushdown`: the client's conditions are repeated inside the fenced stand-ins so
    /// PostgreSQL can use indexes, at the cost of a timing channel (how long a statement takes
    /// grows with the hidden rows its conditions select). Off unless the policy opens it.
    pub pushdown: bool,
}

/// The predicate a table's rows must satisfy for a role, and the rules it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    /// SQL over the row aliased `alias`.
    pub sql: String,
    /// Which rules apply, in words, for `explain` and refusals.
    pub rules: Vec<String>,
    /// The subject table (schema, table) when the table's rows are hidden exactly when the
    /// subject they refer to is (no rule of the table's own): a row whose subject the role
    /// sees is visible.
    pub through_subject: Option<(String, String)>,
    /// The role's `row_pushdown` (see [`RowRules::pushdown`]).
    pub pushdown: bool,
}

/// What a role's rules need from the policy.
pub struct RowContext<'a> {
    pub inventory: &'a Inventory,
    pub rules: &'a RowRules,
    pub purposes: &'a [String],
}

/// Quoted identifier.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn active(alias: &str, column: Option<&str>) -> Option<String> {
    column.map(|c| {
        let c = format!("{}.{}", q(alias), q(c));
        format!("({c} IS NULL OR {c} > {NOW})")
    })
}

impl RowContext<'_> {
    /// The filter for rows of `schema.table` aliased `alias`, or None when the role sees all
    /// of them.
    pub fn filter(&self, schema: &str, table: &str, alias: &str) -> Option<RowFilter> {
        let entry = self.inventory.table_entry(schema, table)?;
        let mut rules = Vec::new();
        let mut conds = self.own(entry, schema, table, alias, &mut rules);
        let through_subject = entry.subject.clone().filter(|_| conds.is_empty());
        match (&entry.subject_key, &entry.subject) {
            (Some(key), None) => {
                conds.extend(self.subject(schema, table, key, alias, &mut rules));
            }
            (Some(key), Some((ss, st))) => {
                let sub = "pgvakt_subject";
                let mut sub_rules = Vec::new();
                let mut inner = self
                    .inventory
                    .table_entry(ss, st)
                    .map(|e| self.own(e, ss, st, sub, &mut sub_rules))
                    .unwrap_or_default();
                let skey = self
                    .inventory
                    .table_entry(ss, st)
                    .and_then(|e| e.subject_key.clone());
                if let Some(skey) = skey {
                    inner.extend(self.subject(ss, st, &skey, sub, &mut sub_rules));
                    if !inner.is_empty() {
                        rules.push(format!(
                            "rows of {schema}.{table} only for visible {ss}.{st} subjects ({})",
                            sub_rules.join("; ")
                        ));
                        conds.push(format!(
                            "EXISTS (SELECT 1 FROM {}.{} AS {} WHERE {}.{} = {}.{} AND {})",
                            q(ss),
                            q(st),
                            q(sub),
                            q(sub),
                            q(&skey),
                            q(alias),
                            q(key),
                            inner.join(" AND ")
                        ));
                    }
                }
            }
            _ => {}
        }
        if conds.is_empty() {
            return None;
        }
        Some(RowFilter {
            sql: conds.join(" AND "),
            rules,
            through_subject,
            pushdown: self.rules.pushdown,
        })
    }

    /// Rules on the table's own rows: retention and hand-written predicates.
    fn own(
        &self,
        entry: &TableEntry,
        schema: &str,
        table: &str,
        alias: &str,
        rules: &mut Vec<String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if self.rules.retention {
            if let Some(r) = &entry.retention {
                rules.push(format!(
                    "retention: {schema}.{table}.{} within {} ({})",
                    r.column,
                    r.keep.interval(),
                    r.rule
                ));
                // NULL is not past retention.
                out.push(format!(
                    "({}.{} IS NULL OR NOT ({}))",
                    q(alias),
                    q(&r.column),
                    r.past_sql(alias)
                ));
            }
        }
        for w in &self.rules.where_ {
            if w.schema == schema && w.table == table {
                rules.push(format!("where: {} ({})", w.text, w.rule));
                out.push(format!("({})", w.predicate.render(alias)));
            }
        }
        out
    }

    /// Rules on the subject itself (consent, restriction), for a row of the subject table.
    fn subject(
        &self,
        schema: &str,
        table: &str,
        key: &str,
        alias: &str,
        rules: &mut Vec<String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let me = (schema, table);
        if self.rules.consent {
            match &self.inventory.consents {
                Some(c) if (c.subject.0.as_str(), c.subject.1.as_str()) == me => {
                    let a = "pgvakt_consent";
                    let purposes = self
                        .purposes
                        .iter()
                        .map(|p| lit(p))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut w = vec![
                        format!("{}.{} = {}.{}", q(a), q(&c.subject_key), q(alias), q(key)),
                        format!("{}.{} IN ({purposes})", q(a), q(&c.purpose)),
                    ];
                    w.extend(active(a, c.withdrawn.as_deref()));
                    w.extend(active(a, c.expires.as_deref()));
                    rules.push(format!(
                        "consent: an active consent for {} in {}.{} ({}; {})",
                        self.purposes.join(" or "),
                        c.schema,
                        c.table,
                        self.rules.rule,
                        c.rule
                    ));
                    out.push(format!(
                        "EXISTS (SELECT 1 FROM {}.{} AS {} WHERE {})",
                        q(&c.schema),
                        q(&c.table),
                        q(a),
                        w.join(" AND ")
                    ));
                }
                // Subjects of a type no consent can name: none is visible (fail closed).
                _ => {
                    rules.push(format!(
                        "consent: no consent can name {schema}.{table} subjects ({})",
                        self.rules.rule
                    ));
                    out.push("false".to_owned());
                }
            }
        }
        if !self.rules.see_restricted {
            if let Some(r) = &self.inventory.restrictions {
                if r.subject() == me {
                    rules.push(format!(
                        "restriction: subjects whose processing is restricted are hidden ({}; {})",
                        self.rules.restricted_rule,
                        r.rule()
                    ));
                    out.push(restriction_sql(r, key, alias));
                }
            }
        }
        out
    }
}

fn restriction_sql(r: &RestrictionSource, key: &str, alias: &str) -> String {
    match r {
        RestrictionSource::Flag { column, .. } => {
            format!("{}.{} IS NOT TRUE", q(alias), q(column))
        }
        RestrictionSource::Table {
            schema,
            table,
            subject_key,
            lifted,
            ..
        } => {
            let a = "pgvakt_restriction";
            let mut w = vec![format!(
                "{}.{} = {}.{}",
                q(a),
                q(subject_key),
                q(alias),
                q(key)
            )];
            w.extend(active(a, lifted.as_deref()));
            format!(
                "NOT EXISTS (SELECT 1 FROM {}.{} AS {} WHERE {})",
                q(schema),
                q(table),
                q(a),
                w.join(" AND ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Period;

    #[test]
    fn periods() {
        assert_eq!(
            Period::parse("3y").map(|p| p.interval()),
            Ok("3 years".into())
        );
        assert_eq!(
            Period::parse("90d").map(|p| p.interval()),
            Ok("90 days".into())
        );
        assert_eq!(
            Period::parse("2w").map(|p| p.interval()),
            Ok("2 weeks".into())
        );
        assert_eq!(
            Period::parse("6m").map(|p| p.interval()),
            Ok("6 months".into())
        );
        for bad in ["", "y", "3", "0y", "-1y", "3h", "+3y", "3 y", "1.5y", "3yy"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }
}
