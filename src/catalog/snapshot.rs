//! A catalog saved as JSON, so `pgvakt policy explain` and `policy test` work offline against
//! the schema a policy was written for. Object ids differ between clusters, so view
//! dependencies are stored by name and ids are assigned afresh on load.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::foreign_keys::{add, ByTable};
use super::{Catalog, Column, RelKind, Relation};
use crate::policy::model::ColumnType;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub database: String,
    pub relations: Vec<SnapRelation>,
    pub user_functions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapRelation {
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub columns: Vec<SnapColumn>,
    /// `schema.name` of the relations a view reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// Columns of its primary key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// `schema.name` of its inheritance children (partitions included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Columns of its unique indexes (primary key included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<String>,
    /// Its foreign keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<SnapForeignKey>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapForeignKey {
    pub columns: Vec<String>,
    /// `schema.name` of the table it references.
    pub references: String,
    pub referenced_columns: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// `pg_type.typcategory`.
    pub category: String,
}

fn kind_name(k: RelKind) -> &'static str {
    match k {
        RelKind::Table => "table",
        RelKind::View => "view",
        RelKind::MaterializedView => "materialized_view",
        RelKind::Foreign => "foreign_table",
        RelKind::Partitioned => "partitioned_table",
        RelKind::Sequence => "sequence",
    }
}

fn kind_of(s: &str) -> Option<RelKind> {
    Some(match s {
        "table" => RelKind::Table,
        "view" => RelKind::View,
        "materialized_view" => RelKind::MaterializedView,
        "foreign_table" => RelKind::Foreign,
        "partitioned_table" => RelKind::Partitioned,
        "sequence" => RelKind::Sequence,
        _ => return None,
    })
}

/// System schemas are the same in every PostgreSQL 15 and make a snapshot unreadable; schema
/// `pgvakt` holds pgvakt's own state (`pgvakt install`), not the application's schema.
fn is_system(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema" || schema == "pgvakt"
}

impl Snapshot {
    /// The user relations of `cat` (system catalogs are left out: analysis refuses statistics
    /// views by name and resolves the rest when it runs against a live catalog).
    pub fn of(cat: &Catalog) -> Snapshot {
        let mut relations: Vec<SnapRelation> = cat
            .by_oid
            .values()
            // Sequences hold no personal data and nothing checks them offline.
            .filter(|r| !is_system(&r.schema) && r.kind != RelKind::Sequence)
            .map(|r| {
                let mut reads: Vec<String> = r
                    .reads
                    .iter()
                    .filter_map(|oid| cat.by_oid(*oid))
                    .map(|d| format!("{}.{}", d.schema, d.name))
                    .collect();
                reads.sort();
                let children = r
                    .children
                    .iter()
                    .filter_map(|oid| cat.by_oid(*oid))
                    .map(|d| format!("{}.{}", d.schema, d.name))
                    .collect();
                SnapRelation {
                    schema: r.schema.clone(),
                    name: r.name.clone(),
                    kind: kind_name(r.kind).to_owned(),
                    columns: r
                        .columns
                        .iter()
                        .map(|c| SnapColumn {
                            name: c.name.clone(),
                            ty: c.ty.sql_name.clone(),
                            category: c.ty.category.to_string(),
                        })
                        .collect(),
                    reads,
                    primary_key: r.primary_key.clone(),
                    children,
                    unique: r.unique.clone(),
                    foreign_keys: r
                        .foreign_keys
                        .iter()
                        .filter_map(|k| {
                            let to = cat.by_oid(k.other)?;
                            Some(SnapForeignKey {
                                columns: k.columns.clone(),
                                references: format!("{}.{}", to.schema, to.name),
                                referenced_columns: k.other_columns.clone(),
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        relations.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        let mut user_functions: Vec<String> = cat.user_functions.iter().cloned().collect();
        user_functions.sort();
        Snapshot {
            database: cat.database.clone(),
            relations,
            user_functions,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn from_json(text: &str) -> Result<Snapshot, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    pub fn into_catalog(self) -> Result<Catalog, String> {
        let mut cat = Catalog::new(&self.database);
        let ids: HashMap<String, u32> = self
            .relations
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{}.{}", r.schema, r.name), 1 + i as u32))
            .collect();
        let (mut from, mut to) = (ByTable::new(), ByTable::new());
        for (i, r) in self.relations.iter().enumerate() {
            for k in &r.foreign_keys {
                if let Some(other) = ids.get(&k.references) {
                    add(
                        &mut from,
                        &mut to,
                        (1 + i as u32, k.columns.clone()),
                        (*other, k.referenced_columns.clone()),
                    );
                }
            }
        }
        for (i, r) in self.relations.into_iter().enumerate() {
            let kind = kind_of(&r.kind).ok_or_else(|| {
                format!(
                    "{}.{}: unknown relation kind {:?}",
                    r.schema, r.name, r.kind
                )
            })?;
            let columns = r
                .columns
                .into_iter()
                .enumerate()
                .map(|(n, c)| Column {
                    name: c.name,
                    attnum: i16::try_from(n + 1).unwrap_or(i16::MAX),
                    ty: ColumnType {
                        sql_name: c.ty,
                        category: c.category.chars().next().unwrap_or('U'),
                    },
                })
                .collect();
            let reads = r.reads.iter().filter_map(|n| ids.get(n).copied()).collect();
            let children = r
                .children
                .iter()
                .filter_map(|n| ids.get(n).copied())
                .collect();
            cat.add_relation(Relation {
                oid: 1 + i as u32,
                schema: r.schema,
                name: r.name,
                kind,
                columns,
                reads,
                children,
                primary_key: r.primary_key,
                unique: r.unique,
                foreign_keys: from.remove(&(1 + i as u32)).unwrap_or_default(),
                referenced_by: to.remove(&(1 + i as u32)).unwrap_or_default(),
                definition: None,
                barrier: false,
                instead: false,
            });
        }
        for f in self.user_functions {
            cat.add_user_function(&f);
        }
        Ok(cat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_relations_columns_and_view_dependencies() {
        let text = r#"{"database":"crm","relations":[
            {"schema":"public","name":"contacts","kind":"table","columns":[
                {"name":"id","type":"integer","category":"N"},
                {"name":"email","type":"text","category":"S"}]},
            {"schema":"public","name":"v","kind":"view","columns":[
                {"name":"email","type":"text","category":"S"}],"reads":["public.contacts"]}],
            "user_functions":["f"]}"#;
        let snap = Snapshot::from_json(text).expect("parses");
        let cat = snap.into_catalog().expect("builds");
        let v = cat.relation("public", "v").expect("view");
        let base = cat.by_oid(v.reads[0]).expect("dependency");
        assert_eq!(base.name, "contacts");
        assert_eq!(base.columns[1].attnum, 2);
        assert!(cat.is_user_function("f"));
        let again = Snapshot::of(&cat);
        assert_eq!(again, Snapshot::from_json(text).expect("parses"));
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        assert!(Snapshot::from_json(
            r#"{"database":"x","relations":[],"user_functions":[],"x":1}"#
        )
        .is_err());
        let snap = Snapshot::from_json(
            r#"{"database":"x","relations":[{"schema":"s","name":"t","kind":"weird","columns":[]}],"user_functions":[]}"#,
        )
        .expect("parses");
        assert!(snap.into_catalog().is_err());
    }
}
