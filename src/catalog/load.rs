//! The catalog read from the upstream's system catalogs: relations with their columns and
//! what the analysis needs of each (views' definitions and what they read, keys, unique
//! indexes, inheritance children, foreign keys), and the user-defined function names.

use std::collections::HashMap;

use tokio_postgres::{Client, Row};

use super::foreign_keys::{self, ByTable};
use super::{pseudonym, Catalog, CatalogError, Column, RelKind, Relation};
use crate::policy::model::ColumnType;

impl Catalog {
    /// Load from the upstream.
    pub async fn load(client: &Client, database: &str) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::new(database);
        let rows = client.query(RELATIONS, &[]).await?;
        let mut facts = Facts::load(client).await?;
        let mut definitions = view_definitions(client).await?;
        let mut current: Option<Relation> = None;
        for r in rows {
            let oid: u32 = r.get(0);
            if current.as_ref().map(|c| c.oid) != Some(oid) {
                if let Some(done) = current.take() {
                    cat.add_relation(done);
                }
                current = Some(facts.relation(oid, &r));
            }
            if let Some(rel) = current.as_mut().filter(|r| r.definition.is_none()) {
                if let Some((def, barrier, instead)) = definitions.remove(&rel.oid) {
                    rel.definition = Some(def);
                    rel.barrier = barrier;
                    rel.instead = instead;
                }
            }
            if let (Some(rel), Some(column)) = (current.as_mut(), column(&r)) {
                rel.columns.push(column);
            }
        }
        if let Some(done) = current.take() {
            cat.add_relation(done);
        }
        for f in client.query(USER_FUNCTIONS, &[]).await? {
            cat.add_user_function(&f.get::<_, String>(0));
        }
        for f in client.query(VOLATILE_FUNCTIONS, &[]).await? {
            cat.add_volatile_function(&f.get::<_, String>(0));
        }
        for r in client.query(ROW_SECURITY, &[]).await? {
            cat.add_row_security(r.get::<_, u32>(0));
        }
        cat.pseudonym = Some(pseudonym::inspect(client).await);
        Ok(cat)
    }
}

/// One row per column (a relation without columns has one row with NULL column fields),
/// ordered by relation.
const RELATIONS: &str = "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, \
                        a.attname::text, a.attnum, format_type(a.atttypid, a.atttypmod), t.typcategory::text \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 LEFT JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE c.relkind IN ('r','v','m','f','p','S') AND n.nspname NOT LIKE 'pg\\_toast%' \
                   AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
                 ORDER BY c.oid, a.attnum";

/// Relations a view's rewrite rule reads.
const VIEW_READS: &str = "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d \
                 JOIN pg_rewrite r ON d.objid = r.oid \
                 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
                   AND d.refobjid <> r.ev_class \
                 ORDER BY 1, 2";

const PRIMARY_KEYS: &str = "SELECT c.conrelid, a.attname::text FROM pg_catalog.pg_constraint c \
                 CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
                 WHERE c.contype = 'p' ORDER BY c.conrelid, k.n";

const CHILDREN: &str =
    "SELECT inhparent, inhrelid FROM pg_catalog.pg_inherits ORDER BY inhparent, inhseqno, inhrelid";

// Expression and predicate columns are the Vars of the index's node trees (an index reads
// only its own table); varattno 0, a whole-row reference, reads every column.
const UNIQUE_COLUMNS: &str = "SELECT DISTINCT i.indrelid, a.attname::text FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE (i.indisunique OR i.indisexclusion) \
                   AND (a.attnum = ANY (i.indkey) OR EXISTS ( \
                     SELECT 1 FROM pg_catalog.regexp_matches( \
                       pg_catalog.concat(i.indexprs::pg_catalog.text, ' ', i.indpred::pg_catalog.text), \
                       ':varattno ([0-9]+)', 'g') AS m(v) \
                     WHERE m.v[1]::pg_catalog.int4 IN (a.attnum, 0))) \
                 ORDER BY 1, 2";

// A barrier is any security_barrier option PostgreSQL does not read as false.
const VIEW_DEFINITIONS: &str = "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid), \
                    EXISTS (SELECT 1 FROM pg_catalog.unnest(c.reloptions) o \
                            WHERE pg_catalog.lower(o) LIKE 'security\\_barrier%' \
                              AND pg_catalog.lower(o) NOT IN ('security_barrier=false', 'security_barrier=off', \
                                'security_barrier=0', 'security_barrier=no', 'security_barrier=f', 'security_barrier=n', \
                                'security_barrier=of', 'security_barrier=fa', 'security_barrier=fal', 'security_barrier=fals')), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid) \
                      OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN') \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

const USER_FUNCTIONS: &str =
    "SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

const VOLATILE_FUNCTIONS: &str = "SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE n.nspname = 'pg_catalog' AND p.provolatile = 'v'";

const ROW_SECURITY: &str = "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relrowsecurity";

/// What each relation has besides its columns, by relation OID.
struct Facts {
    reads: HashMap<u32, Vec<u32>>,
    keys: HashMap<u32, Vec<String>>,
    children: HashMap<u32, Vec<u32>>,
    unique: HashMap<u32, Vec<String>>,
    foreign_keys: ByTable,
    referenced_by: ByTable,
}

impl Facts {
    async fn load(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let (foreign_keys, referenced_by) = foreign_keys::load(client).await?;
        Ok(Facts {
            reads: grouped(client, VIEW_READS).await?,
            keys: grouped(client, PRIMARY_KEYS).await?,
            children: grouped(client, CHILDREN).await?,
            unique: grouped(client, UNIQUE_COLUMNS).await?,
            foreign_keys,
            referenced_by,
        })
    }

    /// The relation of a row of [`RELATIONS`], without columns yet; its facts move into it.
    fn relation(&mut self, oid: u32, r: &Row) -> Relation {
        let kind = match r.get::<_, String>(3).as_str() {
            "v" => RelKind::View,
            "m" => RelKind::MaterializedView,
            "f" => RelKind::Foreign,
            "p" => RelKind::Partitioned,
            "S" => RelKind::Sequence,
            _ => RelKind::Table,
        };
        Relation {
            oid,
            schema: r.get(1),
            name: r.get(2),
            kind,
            columns: Vec::new(),
            reads: self.reads.remove(&oid).unwrap_or_default(),
            children: self.children.remove(&oid).unwrap_or_default(),
            primary_key: self.keys.remove(&oid).unwrap_or_default(),
            unique: self.unique.remove(&oid).unwrap_or_default(),
            foreign_keys: self.foreign_keys.remove(&oid).unwrap_or_default(),
            referenced_by: self.referenced_by.remove(&oid).unwrap_or_default(),
            definition: None,
            barrier: false,
            instead: false,
        }
    }
}

/// The column of a row of [`RELATIONS`], if it has one.
fn column(r: &Row) -> Option<Column> {
    Some(Column {
        name: r.get::<_, Option<String>>(4)?,
        attnum: r.get(5),
        ty: ColumnType {
            sql_name: r.get::<_, Option<String>>(6).unwrap_or_default(),
            category: r
                .get::<_, Option<String>>(7)
                .and_then(|s| s.chars().next())
                .unwrap_or('U'),
        },
    })
}

/// (OID, value) rows of `sql`, grouped by OID in the order they come.
async fn grouped<T>(
    client: &Client,
    sql: &str,
) -> Result<HashMap<u32, Vec<T>>, tokio_postgres::Error>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let mut by_oid: HashMap<u32, Vec<T>> = HashMap::new();
    for row in client.query(sql, &[]).await? {
        by_oid.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(by_oid)
}

/// Definitions of views, with whether each is a security barrier and whether it has INSTEAD
/// OF triggers or rules.
///
/// Security-barrier views are not inlined: their barrier would be lost. With only pg_catalog
/// on the path, pg_get_viewdef qualifies every relation, so an inlined view reads the
/// relations it was defined over whatever a session's search_path is. The caller's
/// connection gets its own search_path back afterwards.
async fn view_definitions(
    client: &Client,
) -> Result<HashMap<u32, (String, bool, bool)>, tokio_postgres::Error> {
    let path: String = client
        .query_one("SELECT pg_catalog.current_setting('search_path')", &[])
        .await?
        .get(0);
    client.batch_execute("SET search_path = pg_catalog").await?;
    let mut definitions = HashMap::new();
    for d in client.query(VIEW_DEFINITIONS, &[]).await? {
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
    Ok(definitions)
}
