//! What the upstream database holds: relations with their columns and types, which views read
//! which relations, and which function names exist outside `pg_catalog`. Loaded through the
//! proxy's own connection and refreshed, so analysis can expand `*`, qualify every table it
//! forwards and see through views; also whether `pgvakt install` put the pseudonym function there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::policy::model::ColumnType;

pub mod foreign_keys;
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

    /// Load from the upstream.
    pub async fn load(
        client: &tokio_postgres::Client,
        database: &str,
    ) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::new(database);
        let rows = client
            .query(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, \
                        a.attname::text, a.attnum, format_type(a.atttypid, a.atttypmod), t.typcategory::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 LEFT JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE c.relkind IN ('r','v','m','f','p','S') AND n.nspname NOT LIKE 'pg\\_toast%' \
                   AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
                 ORDER BY c.oid, a.attnum",
                &[],
            )
            .await?;
        let deps = client
            .query(
                "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d \
                 JOIN pg_rewrite r ON d.objid = r.oid \
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
                   AND d.refobjid <> r.ev_class \
                 ORDER BY 1, 2",
                &[],
            )
            .await?;
        let mut reads: HashMap<u32, Vec<u32>> = HashMap::new();
        for d in deps {
            reads.entry(d.get(0)).or_default().push(d.get(1));
        }
        let mut keys: HashMap<u32, Vec<String>> = HashMap::new();
        for k in client
            .query(
                "SELECT c.conrelid, a.attname::text FROM pg_catalog.pg_constraint c \
                 CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
                 WHERE c.contype = 'p' ORDER BY c.conrelid, k.n",
                &[],
            )
            .await?
        {
            keys.entry(k.get(0)).or_default().push(k.get(1));
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for i in client
            .query(
                "SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits ORDER BY inhparent, inhseqno, inhrelid",
                &[],
            )
            .await?
        {
            children.entry(i.get(0)).or_default().push(i.get(1));
        }
        let mut unique: HashMap<u32, Vec<String>> = HashMap::new();
        // Expression and predicate columns are the Vars of the index's node trees (an index
        // reads only its own table); varattno 0, a whole-row reference, reads every column.
        for u in client
            .query(
                "SELECT DISTINCT i.indrelid, a.attname::text FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE (i.indisunique OR i.indisexclusion) \
                   AND (a.attnum = ANY (i.indkey) OR EXISTS ( \
                     SELECT 1 FROM pg_catalog.regexp_matches( \
                       pg_catalog.concat(i.indexprs::pg_catalog.text, ' ', i.indpred::pg_catalog.text), \
                       ':varattno ([0-9]+)', 'g') AS m(v) \
                     WHERE m.v[1]::pg_catalog.int4 IN (a.attnum, 0))) \
                 ORDER BY 1, 2",
                &[],
            )
            .await?
        {
            unique.entry(u.get(0)).or_default().push(u.get(1));
        }
        let (mut foreign_keys, mut referenced_by) = foreign_keys::load(client).await?;
        // Security-barrier views are not inlined: their barrier would be lost. With only
        // pg_catalog on the path, pg_get_viewdef qualifies every relation, so an inlined view
        // reads the relations it was defined over whatever a session's search_path is.
        // The caller's connection gets its own search_path back afterwards.
        let path: String = client
            .query_one("SELECT pg_catalog.current_setting('search_path')", &[])
            .await?
            .get(0);
        client.batch_execute("SET search_path = pg_catalog").await?;
        let mut definitions: HashMap<u32, (String, bool, bool)> = HashMap::new();
        // A barrier is any security_barrier option PostgreSQL does not read as false.
        for d in client
            .query(
                "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid), \
                    EXISTS (SELECT 1 FROM pg_catalog.unnest(c.reloptions) o \
                            WHERE pg_catalog.lower(o) LIKE 'security\\_barrier%' \
                              AND pg_catalog.lower(o) NOT IN ('security_barrier=false', 'security_barrier=off', \
                                'security_barrier=0', 'security_barrier=no', 'security_barrier=f', 'security_barrier=n', \
                                'security_barrier=of', 'security_barrier=fa', 'security_barrier=fal', 'security_barrier=fals')), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid) \
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN') \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .await?
        {
            if let Some(def) = d.get::<_, Option<String>>(1) {
                definitions.insert(d.get(0), (def, d.get(2), d.get(3)));
            }
        }
        client
            .query(
                "SELECT pg_catalog.set_config('search_path', $1, false)",
                &[&path],
            )
            .await?;
        let mut current: Option<Relation> = None;
        for r in rows {
            let oid: u32 = r.get(0);
            if current.as_ref().map(|c| c.oid) != Some(oid) {
                if let Some(done) = current.take() {
                    cat.add_relation(done);
                }
                let kind = match r.get::<_, String>(3).as_str() {
                    "v" => RelKind::View,
                    "m" => RelKind::MaterializedView,
                    "f" => RelKind::Foreign,
                    "p" => RelKind::Partitioned,
                    "S" => RelKind::Sequence,
                    _ => RelKind::Table,
                };
                current = Some(Relation {
                    oid,
                    schema: r.get(1),
                    name: r.get(2),
                    kind,
                    columns: Vec::new(),
                    reads: reads.remove(&oid).unwrap_or_default(),
                    children: children.remove(&oid).unwrap_or_default(),
                    primary_key: keys.remove(&oid).unwrap_or_default(),
                    unique: unique.remove(&oid).unwrap_or_default(),
                    foreign_keys: foreign_keys.remove(&oid).unwrap_or_default(),
                    referenced_by: referenced_by.remove(&oid).unwrap_or_default(),
                    definition: None,
                    barrier: false,
                    instead: false,
                });
            }
            if let Some(rel) = current.as_mut().filter(|r| r.definition.is_none()) {
                if let Some((def, barrier, instead)) = definitions.remove(&rel.oid) {
                    rel.definition = Some(def);
                    rel.barrier = barrier;
                    rel.instead = instead;
                }
            }
            if let (Some(rel), Some(name)) = (current.as_mut(), r.get::<_, Option<String>>(4)) {
                rel.columns.push(Column {
                    name,
                    attnum: r.get(5),
                    ty: ColumnType {
                        sql_name: r.get::<_, Option<String>>(6).unwrap_or_default(),
                        category: r
                            .get::<_, Option<String>>(7)
                            .and_then(|s| s.chars().next())
                            .unwrap_or('U'),
                    },
                });
            }
        }
        if let Some(done) = current.take() {
            cat.add_relation(done);
        }
        for f in client
            .query(
                "SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .await?
        {
            cat.add_user_function(&f.get::<_, String>(0));
        }
        cat.pseudonym = Some(pseudonym::inspect(client).await);
        Ok(cat)
    }
}
