//! The `pgvakt policy` commands that need a schema: `explain`, `test`, `snapshot` and
//! `check --upstream`. Output goes to stdout; the return value is the exit code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::analysis::default_search_path;
use crate::catalog::snapshot::Snapshot;
use crate::catalog::{Catalog, RelKind};
use crate::explain::{connect, explain, live_catalog, load_snapshot};
use crate::policy::check::{check_against_schema, LiveTable, Sample};
use crate::policy::inventory::{is_system_schema, SPECIAL};
use crate::policy::testcases::{self, Subject, TestReport};
use crate::policy::{load, PolicySet};

/// Where analysis gets the schema from.
pub enum SchemaSource {
    Snapshot(PathBuf),
    Upstream(String),
}

pub struct ExplainArgs {
    pub policy: Vec<PathBuf>,
    pub role: Option<String>,
    pub user: Option<String>,
    pub schema: SchemaSource,
    pub search_path: Option<String>,
    pub sql: String,
}

/// The search_path offline tools assume: the policy's own schemas (each file's `schema:`, in
/// order) before PostgreSQL's default, so a statement's unqualified names resolve where the
/// policy's do.
pub fn policy_search_path(set: &PolicySet) -> Vec<String> {
    let mut path = default_search_path();
    let at = path
        .iter()
        .position(|s| s == "public")
        .unwrap_or(path.len());
    for (i, s) in set.inventory.file_schemas.iter().enumerate() {
        if !path.contains(s) {
            path.insert(at + i, s.clone());
        }
    }
    path
}

fn load_policy(paths: &[PathBuf]) -> Result<PolicySet, String> {
    load(paths).map_err(|e| e.to_string())
}

async fn catalog_from(
    source: &SchemaSource,
) -> Result<(Catalog, Option<tokio_postgres::Client>), String> {
    match source {
        SchemaSource::Snapshot(p) => Ok((load_snapshot(p)?, None)),
        SchemaSource::Upstream(dsn) => {
            let client = connect(dsn).await?;
            let cat = live_catalog(&client).await?;
            Ok((cat, Some(client)))
        }
    }
}

pub async fn explain_command(args: ExplainArgs) -> Result<i32, String> {
    let set = load_policy(&args.policy)?;
    let (catalog, client) = catalog_from(&args.schema).await?;
    let (role, via, user) = match (&args.role, &args.user) {
        (Some(r), _) => {
            let role = set.role(r).ok_or_else(|| {
                let known: Vec<&str> = set.roles.keys().map(String::as_str).collect();
                format!(
                    "unknown role {r:?}; the policy defines: {}",
                    known.join(", ")
                )
            })?;
            let user = args.user.clone().unwrap_or_else(|| r.clone());
            (role, None, user)
        }
        (None, Some(u)) => {
            let groups = match &client {
                Some(c) => groups_of(c, u).await?,
                None => Vec::new(),
            };
            let r = set.resolve(u, &groups, SystemTime::now());
            (r.role, Some(r.via), u.clone())
        }
        (None, None) => return Err("give --role or --user".into()),
    };
    let path: Vec<String> = match &args.search_path {
        Some(p) => p.split(',').map(|s| s.trim().to_owned()).collect(),
        None => policy_search_path(&set),
    };
    let mut e = explain(&set, &catalog, &role, &user, &path, &args.sql);
    e.via = via;
    print!("{e}");
    Ok(0)
}

/// Runs test files (directories: their *.yaml files); `policy`/`schema` override what each
/// file names.
pub async fn test_command(
    paths: &[PathBuf],
    policy: &[PathBuf],
    schema: Option<SchemaSource>,
) -> Result<i32, String> {
    let mut total = TestReport::default();
    for file in testcases::expand(paths)? {
        let report = test_file(&file, policy, schema.as_ref()).await?;
        total.passed += report.passed;
        total.failures.extend(report.failures);
    }
    print!("{total}");
    Ok(if total.ok() { 0 } else { 1 })
}

async fn test_file(
    file: &Path,
    policy: &[PathBuf],
    schema: Option<&SchemaSource>,
) -> Result<TestReport, String> {
    let tests = testcases::parse_test_file(file).map_err(|e| e.to_string())?;
    let base = file.parent().unwrap_or(Path::new("."));
    let policy_paths: Vec<PathBuf> = if policy.is_empty() {
        tests.policy.iter().map(|p| base.join(p)).collect()
    } else {
        policy.to_vec()
    };
    if policy_paths.is_empty() {
        return Err(format!(
            "{}: name the policy with `policy:` in the file or --policy",
            file.display()
        ));
    }
    let source = match (schema, &tests.snapshot) {
        (Some(SchemaSource::Snapshot(p)), _) => SchemaSource::Snapshot(p.clone()),
        (Some(SchemaSource::Upstream(d)), _) => SchemaSource::Upstream(d.clone()),
        (None, Some(s)) => SchemaSource::Snapshot(base.join(s)),
        (None, None) => {
            return Err(format!(
                "{}: name a schema snapshot with `snapshot:` in the file, --snapshot or --upstream",
                file.display()
            ))
        }
    };
    let set = load_policy(&policy_paths)?;
    let (catalog, client) = catalog_from(&source).await?;
    // Groups of the users whose cases do not give them, looked up when live.
    let mut looked_up: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(c) = &client {
        for case in &tests.cases {
            if let (Some(u), None) = (&case.value.user, &case.value.groups) {
                if !looked_up.contains_key(u) {
                    let groups = groups_of(c, u).await?;
                    looked_up.insert(u.clone(), groups);
                }
            }
        }
    }
    let path = policy_search_path(&set);
    let now = SystemTime::now();
    Ok(testcases::run(
        &file.display().to_string(),
        &tests,
        |case, subject| {
            let (role, via, user) = match subject {
                Subject::Role(r) => (set.role(r), None, r),
                Subject::User { name, groups, at } => {
                    let groups = groups
                        .or_else(|| looked_up.get(name).map(Vec::as_slice))
                        .unwrap_or(&[]);
                    let at = at.map_or(now, |s| {
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64)
                    });
                    let r = set.resolve(name, groups, at);
                    (Some(r.role), Some(r.via), name)
                }
            };
            let Some(r) = role else {
                let known: Vec<&str> = set.roles.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown role {user:?}; the policy defines: {}",
                    known.join(", ")
                ));
            };
            let mut e = explain(&set, &catalog, &r, user, &path, &case.sql);
            e.via = via;
            Ok(e.test_outcome())
        },
    ))
}

/// The PostgreSQL groups of `user`; none when PostgreSQL has no such role (it could not log
/// in, but its grants can still be tested).
async fn groups_of(client: &tokio_postgres::Client, user: &str) -> Result<Vec<String>, String> {
    match Catalog::member_groups(client, user).await {
        Ok(groups) => Ok(groups),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
            Ok(Vec::new())
        }
        Err(e) => Err(format!(
            "looking up the groups of {user}: {}",
            crate::cause::chain(&e)
        )),
    }
}

pub async fn snapshot_command(dsn: &str, out: Option<&Path>) -> Result<i32, String> {
    let client = connect(dsn).await?;
    let json = Snapshot::of(&live_catalog(&client).await?).to_json();
    match out {
        Some(p) => std::fs::write(p, json).map_err(|e| format!("{}: {e}", p.display()))?,
        None => print!("{json}"),
    }
    Ok(0)
}

/// `policy check --upstream` / `--snapshot`: the inventory against the schema's relations, every
/// mask against the columns it covers (PostgreSQL checks them when live), and, when live,
/// sample values of text columns as extra hints.
pub async fn check_schema(
    set: &PolicySet,
    source: &SchemaSource,
) -> Result<crate::policy::Diagnostics, String> {
    let (cat, client) = catalog_from(source).await?;
    let live = live_tables(&cat);
    let samples = match &client {
        Some(c) => sample_values(set, &cat, c).await,
        None => Vec::new(),
    };
    let mut d = check_against_schema(set, &live, &samples);
    let uses = crate::mask_check::mask_uses(set, &cat);
    d.extend(match &client {
        Some(c) => crate::mask_check::check_live(set, &uses, c).await,
        None => crate::mask_check::check_offline(set, &uses),
    });
    if let Some(c) = &client {
        row_rules_upstream(set, c, &cat, &mut d).await;
    }
    Ok(d)
}

/// Each role's row rules as PostgreSQL reads them: for every table of the inventory that
/// exists upstream, the predicate the role's stand-in gets must plan (`EXPLAIN`, nothing runs),
/// so a consent, restriction, retention or hand-written predicate naming a missing column or
/// comparing the wrong types is reported before a session meets it.
async fn row_rules_upstream(
    set: &PolicySet,
    client: &tokio_postgres::Client,
    cat: &Catalog,
    diags: &mut crate::policy::Diagnostics,
) {
    use crate::policy::diag::Pos;
    use crate::policy::model::RoleRules;
    let fallback = Pos::file_only(set.files.first().map_or("", String::as_str));
    for (name, role) in &set.roles {
        for rel in cat.relations() {
            if is_system_schema(&rel.schema)
                || matches!(rel.kind, RelKind::Sequence | RelKind::View)
            {
                continue;
            }
            let Some(filter) = role.row_filter(&rel.schema, &rel.name, "pgvakt_row") else {
                continue;
            };
            let sql = format!(
                "EXPLAIN (COSTS OFF) SELECT 1 FROM {}.{} AS \"pgvakt_row\" WHERE {}",
                crate::analysis::quote_ident(&rel.schema),
                crate::analysis::quote_ident(&rel.name),
                filter.sql
            );
            if let Err(e) = client.simple_query(&sql).await {
                let why = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_owned());
                let pos = filter
                    .rules
                    .iter()
                    .find_map(|r| Pos::of_rule(r))
                    .map_or_else(|| fallback.clone(), |(_, p)| p);
                diags.error(
                    &pos,
                    format!("roles.{name}.rows"),
                    format!(
                        "PostgreSQL rejects the row rules of {}.{} for this role ({}): {why}",
                        rel.schema,
                        rel.name,
                        filter.rules.join("; ")
                    ),
                );
            }
        }
    }
}

fn live_tables(cat: &Catalog) -> Vec<LiveTable> {
    let mut live: Vec<LiveTable> = cat
        .relations()
        .filter(|rel| !is_system_schema(&rel.schema) && rel.kind != RelKind::Sequence)
        .map(|rel| LiveTable {
            schema: rel.schema.clone(),
            name: rel.name.clone(),
            kind: match rel.kind {
                RelKind::Table => "table",
                RelKind::Partitioned => "partitioned table",
                RelKind::Foreign => "foreign table",
                RelKind::View => "view",
                RelKind::MaterializedView => "materialized view",
                RelKind::Sequence => "sequence",
            }
            .into(),
            columns: rel
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.sql_name.clone()))
                .collect(),
        })
        .collect();
    live.sort();
    live
}

/// Up to 20 values of each text column of each table not classified as special category data,
/// for the detector (never printed).
async fn sample_values(
    set: &PolicySet,
    cat: &Catalog,
    client: &tokio_postgres::Client,
) -> Vec<Sample> {
    let mut samples: Vec<Sample> = Vec::new();
    for rel in cat.relations() {
        // Views and materialized views show the tables' values; foreign tables may be remote.
        if is_system_schema(&rel.schema)
            || !matches!(rel.kind, RelKind::Table | RelKind::Partitioned)
        {
            continue;
        }
        for c in rel.columns.iter().filter(|c| c.ty.category == 'S') {
            let classified = set.inventory.classify(&rel.schema, &rel.name, &c.name);
            if classified.is_some_and(|c| c.category == SPECIAL) {
                continue;
            }
            let q = format!(
                "SELECT {col}::text FROM {s}.{t} WHERE {col} IS NOT NULL LIMIT 20",
                col = crate::analysis::quote_ident(&c.name),
                s = crate::analysis::quote_ident(&rel.schema),
                t = crate::analysis::quote_ident(&rel.name),
            );
            if let Ok(rows) = client.query(q.as_str(), &[]).await {
                let vals = rows
                    .iter()
                    .filter_map(|r| r.get::<_, Option<String>>(0))
                    .collect();
                samples.push(((rel.schema.clone(), rel.name.clone(), c.name.clone()), vals));
            }
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy written for schema `crm` resolves a statement's unqualified names there first,
    /// before PostgreSQL's default `public`.
    #[test]
    fn unqualified_names_resolve_in_the_policy_schema_first() {
        let demo =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/crm.yaml"))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.yaml");
        let in_crm = demo.replacen("schema: public\n", "schema: crm\n", 1);
        assert_ne!(in_crm, demo);
        std::fs::write(&path, in_crm).unwrap();
        let set = load(&[path]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy_search_path(&set), ["$user", "crm", "public"]);
        let public = load(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/crm.yaml"
        ))])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy_search_path(&public), ["$user", "public"]);
    }
}
