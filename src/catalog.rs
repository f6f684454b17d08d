//! What the upstream database holds: relations with their columns and types, which views read
//! which relations, and which function names exist outside `pg_catalog`. Loaded through the
//! proxy's own connection and refreshed, so analysis can expand `*`, qualify every table it
//! forwards and see through views; also whether `pgvakt install` put the pseudonym function there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::policy::model::ColumnType;

pub mod foreign_keys;
mod load;
pub mod pseudonym;
pub mod snapshot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub attnum: i16,
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Table,
    View,
    MaterializedView,
    Foreign,
    Partitioned,
    /// Counters (`contacts_id_seq`): never personal data.
    Sequence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
    pub columns: Vec<Column>,
    /// Relations a view's rules read (direct dependencies only).
    pub reads: Vec<u32>,
    /// Columns of its primary key, in key order (empty without one).
    pub primary_key: Vec<String>,
    /// Direct inheritance children (partitions included): a read or write of this relation
    /// without ONLY reaches their rows too.
    pub children: Vec<u32>,
    /// Columns whose values a unique index or exclusion constraint checks against the stored
    /// rows (primary key included): key columns, and columns its expressions or partial-index
    /// predicate read. Whether a new value collides tells that a row exists, visible to the
    /// role or not.
    pub unique: Vec<String>,
    /// Foreign keys of this table: each makes PostgreSQL look for the referenced row, whether
    /// the role's row rules show it or not.
    pub foreign_keys: Vec<ForeignKey>,
    /// Foreign keys of other tables that reference this one: deleting a row or changing a
    /// referenced value looks for (and acts on) the referencing rows.
    pub referenced_by: Vec<ForeignKey>,
    /// A view's query (`pg_get_viewdef`), which restricted roles read inlined over masked
    /// stand-ins (unless it is a security barrier) and write through by its base table's rules;
    /// None for other relations.
    pub definition: Option<String>,
    /// A security-barrier view: not inlined, since its barrier would be lost.
    pub barrier: bool,
    /// A view with INSTEAD OF triggers or rules of its own: what a write through it does is
    /// code pgvakt cannot analyse.
    pub instead: bool,
}

/// One foreign key, seen from one of its two tables: `columns` are this table's, `other`
/// the table at the other end and `other_columns` its columns, pair by pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub other: u32,
    pub other_columns: Vec<String>,
}

/// Compared whole after each load: only a catalog that differs from the one in force starts a
/// new epoch for prepared statements (see `enforce::epoch`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Catalog {
    relations: HashMap<(String, String), Arc<Relation>>,
    by_oid: HashMap<u32, Arc<Relation>>,
    /// Function names defined outside pg_catalog: a call by such a name might run user code.
    user_functions: HashSet<String>,
    /// pg_catalog functions PostgreSQL marks VOLATILE (any overload): a call may change
    /// something that outlives the statement. Empty for a catalog not loaded live.
    volatile_functions: HashSet<String>,
    /// Relations with row-level security enabled: PostgreSQL runs their policies' expressions,
    /// which the statement's text does not show.
    row_security: HashSet<u32>,
    schemas: HashSet<String>,
    pub database: String,
    /// Whether the pseudonym mask's function is installed upstream; `None` for a catalog that
    /// was not loaded from a live database (snapshots, tests), where nothing is forwarded.
    pub pseudonym: Option<pseudonym::Installed>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("loading the catalog failed: {}", crate::cause::chain(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl Catalog {
    pub fn new(database: &str) -> Self {
        Catalog {
            database: database.to_owned(),
            ..Default::default()
        }
    }

    pub fn add_relation(&mut self, rel: Relation) {
        let rel = Arc::new(rel);
        self.schemas.insert(rel.schema.clone());
        self.by_oid.insert(rel.oid, rel.clone());
        self.relations
            .insert((rel.schema.clone(), rel.name.clone()), rel);
    }

    pub fn add_user_function(&mut self, name: &str) {
        self.user_functions.insert(name.to_owned());
    }

    pub fn is_user_function(&self, name: &str) -> bool {
        self.user_functions.contains(name)
    }

    pub fn add_volatile_function(&mut self, name: &str) {
        self.volatile_functions.insert(name.to_owned());
    }

    /// Whether a built-in function of this name may change what outlives the statement, as
    /// PostgreSQL classifies it (provolatile).
    pub fn is_volatile_function(&self, name: &str) -> bool {
        self.volatile_functions.contains(name)
    }

    pub fn add_row_security(&mut self, oid: u32) {
        self.row_security.insert(oid);
    }

    pub fn has_row_security(&self, oid: u32) -> bool {
        self.row_security.contains(&oid)
    }

    pub fn relation(&self, schema: &str, name: &str) -> Option<&Arc<Relation>> {
        self.relations.get(&(schema.to_owned(), name.to_owned()))
    }

    /// Whether any schema other than the system ones has a relation of this name.
    pub fn has_relation_named(&self, name: &str) -> bool {
        self.relations
            .keys()
            .any(|(s, n)| n == name && s != "pg_catalog" && s != "information_schema")
    }

    pub fn relations(&self) -> impl Iterator<Item = &Arc<Relation>> {
        self.by_oid.values()
    }

    pub fn by_oid(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.by_oid.get(&oid)
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// Resolve a relation name (parts already case-folded) the way PostgreSQL does:
    /// `pg_catalog` first unless the path names it, then the path (`$user` is the user's schema).
    pub fn resolve(
        &self,
        parts: &[String],
        search_path: &[String],
        user: &str,
    ) -> Option<&Arc<Relation>> {
        match parts {
            [name] => {
                let mut path: Vec<&str> = Vec::with_capacity(search_path.len() + 1);
                if !search_path.iter().any(|s| s == "pg_catalog") {
                    path.push("pg_catalog");
                }
                for s in search_path {
                    path.push(if s == "$user" { user } else { s.as_str() });
                }
                path.into_iter().find_map(|s| self.relation(s, name))
            }
            [schema, name] => self.relation(schema, name),
            [db, schema, name] if *db == self.database => self.relation(schema, name),
            _ => None,
        }
    }

    /// PostgreSQL groups `user` is a member of (directly or through other groups).
    pub async fn member_groups(
        client: &tokio_postgres::Client,
        user: &str,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT r.rolname::text FROM pg_roles r WHERE pg_has_role($1::text, r.oid, 'MEMBER') AND r.rolname <> $1::text",
                &[&user],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}
