//! Why a statement is refused for a role, as facts: the column and rule, the construct, the
//! relation. Analysis, `policy explain` and the audit trail read the facts; the text a client
//! gets is written in one place, [`Refusal::to_pg_error`], when the verdict leaves analysis.

use crate::policy::model::Capability;
use crate::protocol::PgError;

use super::authority::DISAGREEMENT;
use super::without_paths;

/// A statement refused for a role under one policy version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.to_pg_error().message)]
pub struct Refusal {
    pub role: String,
    pub policy_version: String,
    /// Boxed: refusals travel in every `Result` of the analysis, which stays small.
    pub reason: Box<Reason>,
}

/// What was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The statement names a column the role's policy blocks.
    BlockedColumn {
        schema: String,
        table: String,
        column: String,
        /// The column's inventory category.
        category: String,
        /// The policy rule that blocks it (with its file and line).
        rule: String,
    },
    /// Something the role's policy does not allow (`what` names it as a client wrote it).
    NotAllowed { what: String, why: Why },
    /// Something the role may not do because of what it would tell or change: `role R may not
    /// {what}: {why}`.
    MayNot { what: String, why: String },
    /// A user-defined function, or a name that may resolve to one (`schema` when written).
    UserFunction {
        schema: Option<String>,
        name: String,
    },
    /// Something the analysis cannot fully read for the role: refused, never forwarded.
    NotSupported { what: String },
    /// A relation pgvakt's catalog does not hold, so its rules cannot be told.
    NotInCatalog { relation: String },
    /// Text the parser cannot read (`do_block`: a DO block, which is procedural code).
    Unparsable { do_block: bool, parser: String },
    /// PostgreSQL's parser reads the text differently from the analysis.
    Disagreement { what: String },
    /// Too deep or too wide to analyse safely (SQLSTATE 54001).
    TooComplex {
        what: String,
        hint: Option<&'static str>,
    },
    /// The role may only use the database pgvakt has a catalog for.
    OtherDatabase { database: String },
    /// Any other refusal, in its own words (they name the role where it matters).
    Policy {
        message: String,
        hint: Option<&'static str>,
    },
}

/// How a [`Reason::NotAllowed`] goes on after "is not allowed for role R".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Nothing more to say.
    Plain,
    /// `: {0}`: why the policy does not allow it.
    Because(String),
    /// `; {0}`: what to write instead.
    Instead(String),
    /// ` ({0})`: an aside.
    Aside(String),
    /// ` without capability {0:?}`.
    WithoutCapability(Capability),
}

impl Why {
    pub fn because(why: impl Into<String>) -> Self {
        Why::Because(why.into())
    }

    pub fn instead(what: impl Into<String>) -> Self {
        Why::Instead(what.into())
    }

    pub fn aside(text: impl Into<String>) -> Self {
        Why::Aside(text.into())
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Plain => Ok(()),
            Why::Because(s) => write!(f, ": {s}"),
            Why::Instead(s) => write!(f, "; {s}"),
            Why::Aside(s) => write!(f, " ({s})"),
            Why::WithoutCapability(c) => write!(f, " without capability {c:?}"),
        }
    }
}

const UNSUPPORTED_HINT: &str =
    "pgvakt refuses what it cannot fully analyse for roles with restrictions.";
const NOT_IN_CATALOG_HINT: &str = "Temporary and newly created relations are refused for restricted roles; the catalog refreshes after DDL.";
const DISAGREEMENT_HINT: &str = "Write the statement without comments and in plain syntax.";

impl Refusal {
    /// The ErrorResponse a client gets for this refusal.
    pub fn to_pg_error(&self) -> PgError {
        let role = &self.role;
        let policy = format!("policy {}", self.policy_version);
        let refused = |message: String| {
            PgError::insufficient_privilege(format!("pgvakt: {}", without_paths(&message)))
                .with_detail(policy.clone())
        };
        match self.reason.as_ref() {
            Reason::BlockedColumn {
                schema,
                table,
                column,
                rule,
                category,
            } => {
                let mut e = PgError::insufficient_privilege(format!(
                    "pgvakt: column {table}.{column} is blocked for role {role} by rule {}",
                    without_paths(rule)
                ))
                .with_detail(format!("table {schema}.{table}, {policy}"));
                // The metrics count blocked reads by category.
                e.blocked_category = Some(category.as_str().into());
                e
            }
            Reason::NotAllowed { what, why } => {
                refused(format!("{what} is not allowed for role {role}{why}"))
            }
            Reason::MayNot { what, why } => refused(format!("role {role} may not {what}: {why}")),
            Reason::UserFunction {
                schema: Some(s),
                name,
            } => refused(format!(
                "function {s}.{name} is not a built-in function; user-defined functions are not allowed for role {role}"
            )),
            Reason::UserFunction { schema: None, name } => refused(format!(
                "function {name} is (or may resolve to) a user-defined function, which is not allowed for role {role}"
            )),
            Reason::NotSupported { what } => PgError::insufficient_privilege(format!(
                "pgvakt: cannot analyse {what} for role {role}, so it is refused"
            ))
            .with_detail(policy)
            .with_hint(UNSUPPORTED_HINT),
            Reason::NotInCatalog { relation } => refused(format!(
                "relation {relation} is not in pgvakt's catalog, so it cannot be checked for role {role}"
            ))
            .with_hint(NOT_IN_CATALOG_HINT),
            Reason::Unparsable { do_block, parser } => {
                let what = if *do_block {
                    format!("DO blocks (procedural code) are not allowed for role {role}")
                } else {
                    "pgvakt could not parse this statement, so it is refused".to_owned()
                };
                PgError::insufficient_privilege(format!("pgvakt: {what}"))
                    .with_detail(format!("{policy}; parser: {parser}"))
            }
            Reason::Disagreement { what } => refused(format!(
                "PostgreSQL's parser reads this statement differently from pgvakt's analysis ({what}), so it is refused for role {role}"
            ))
            .with_detail(format!("{DISAGREEMENT}; {policy}"))
            .with_hint(DISAGREEMENT_HINT),
            Reason::TooComplex { what, hint } => {
                let e = PgError::error("54001", format!("pgvakt: statement too complex: {what}"));
                match hint {
                    Some(h) => e.with_hint(*h),
                    None => e,
                }
            }
            Reason::OtherDatabase { database } => PgError::insufficient_privilege(format!(
                "pgvakt: role {role} may only use database {database}, which pgvakt has a catalog for"
            )),
            Reason::Policy { message, hint } => {
                let e = refused(message.clone());
                match hint {
                    Some(h) => e.with_hint(*h),
                    None => e,
                }
            }
        }
    }

    /// `table.column` of the blocked column the statement names, if that is why it is refused.
    pub fn blocked_column(&self) -> Option<String> {
        match self.reason.as_ref() {
            Reason::BlockedColumn { table, column, .. } => Some(format!("{table}.{column}")),
            _ => None,
        }
    }

    /// Every text the refusal quotes from the statement or the policy, to rewrite in place.
    pub(super) fn texts_mut(&mut self) -> Vec<&mut String> {
        match self.reason.as_mut() {
            Reason::BlockedColumn {
                schema,
                table,
                column,
                rule,
                ..
            } => vec![schema, table, column, rule],
            Reason::NotAllowed { what, why } => match why {
                Why::Because(s) | Why::Instead(s) | Why::Aside(s) => vec![what, s],
                Why::Plain | Why::WithoutCapability(_) => vec![what],
            },
            Reason::MayNot { what, why } => vec![what, why],
            Reason::UserFunction { schema, name } => schema.iter_mut().chain([name]).collect(),
            Reason::NotSupported { what }
            | Reason::Disagreement { what }
            | Reason::TooComplex { what, .. } => vec![what],
            Reason::NotInCatalog { relation } => vec![relation],
            Reason::Unparsable { parser, .. } => vec![parser],
            Reason::OtherDatabase { database } => vec![database],
            Reason::Policy { message, .. } => vec![message],
        }
    }
}

impl From<Refusal> for PgError {
    fn from(r: Refusal) -> Self {
        r.to_pg_error()
    }
}

impl From<&Refusal> for PgError {
    fn from(r: &Refusal) -> Self {
        r.to_pg_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(reason: Reason) -> PgError {
        Refusal {
            role: "secretary".into(),
            policy_version: "v1".into(),
            reason: Box::new(reason),
        }
        .to_pg_error()
    }

    #[test]
    fn a_blocked_column_names_table_column_role_and_rule_but_no_policy_path() {
        let e = by(Reason::BlockedColumn {
            schema: "public".into(),
            table: "contacts".into(),
            column: "ssn".into(),
            category: "national_id".into(),
            rule: "roles.secretary.categories.national_id (/etc/pgvakt/crm.yaml:3:5)".into(),
        });
        assert_eq!(e.code, "42501");
        assert_eq!(
            e.message,
            "pgvakt: column contacts.ssn is blocked for role secretary by rule roles.secretary.categories.national_id (crm.yaml:3:5)"
        );
        assert_eq!(
            e.detail.as_deref(),
            Some("table public.contacts, policy v1")
        );
    }

    #[test]
    fn not_allowed_reads_on_as_its_why_says() {
        let cases = [
            (
                Why::Plain,
                "pgvakt: SET ROLE is not allowed for role secretary",
            ),
            (
                Why::Because("it runs code".into()),
                "pgvakt: SET ROLE is not allowed for role secretary: it runs code",
            ),
            (
                Why::Instead("list the columns".into()),
                "pgvakt: SET ROLE is not allowed for role secretary; list the columns",
            ),
            (
                Why::Aside("capability notify".into()),
                "pgvakt: SET ROLE is not allowed for role secretary (capability notify)",
            ),
            (
                Why::WithoutCapability(Capability::Notify),
                "pgvakt: SET ROLE is not allowed for role secretary without capability Notify",
            ),
        ];
        for (why, message) in cases {
            let e = by(Reason::NotAllowed {
                what: "SET ROLE".into(),
                why,
            });
            assert_eq!(e.message, message);
            assert_eq!(e.detail.as_deref(), Some("policy v1"));
        }
    }

    #[test]
    fn statements_too_complex_keep_their_own_sqlstate() {
        let e = by(Reason::TooComplex {
            what: "too deep".into(),
            hint: None,
        });
        assert_eq!(
            (e.code, e.message.as_str()),
            ("54001", "pgvakt: statement too complex: too deep")
        );
        assert_eq!(e.detail, None);
    }
}
