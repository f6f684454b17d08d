//! The demo policy and an offline catalog of the demo schema, shared by the criterion benches.
//!
//! The catalog is built by hand from the demo DDL (same names and types `format_type` reports), so
//! the benches need no PostgreSQL and measure only the proxy's own work.

// Each bench includes this file and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pgvakt::catalog::{Catalog, Column, RelKind, Relation};
use pgvakt::policy::model::ColumnType;
use pgvakt::policy::PolicySet;

/// Typical statements of the CRM application, as a secretary's client sends them.
pub const CRM_STATEMENTS: &[(&str, &str)] = &[
    (
        "contact_by_id",
        "SELECT id, first_name, last_name, email, phone, bank_account, date_of_birth \
         FROM contacts WHERE id = 4711",
    ),
    (
        "contacts_by_name",
        "SELECT id, first_name, last_name, email, phone FROM contacts \
         WHERE last_name = 'Hansen' ORDER BY first_name LIMIT 20",
    ),
    (
        "company_listing_join",
        "SELECT co.name, co.city, count(c.id) AS contacts, max(c.last_activity_at) AS last_activity \
         FROM companies co LEFT JOIN contacts c ON c.company_id = co.id \
         WHERE co.city = 'Bergen' GROUP BY co.id, co.name, co.city ORDER BY contacts DESC LIMIT 20",
    ),
    (
        "activity_insert",
        "INSERT INTO activities (contact_id, kind, subject, body) \
         VALUES (4711, 'call', 'Follow-up', 'Called about the renewal')",
    ),
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    ),
];

pub fn policy() -> PolicySet {
    // No pseudonym key: the demo policy's secretary role does not use the keyed mask.
    pgvakt::policy::load_with_env(&policy_paths(), &|_| None).expect("the demo policy loads")
}

/// The demo policy and the entry that lists pgbench's tables as not personal (unlisted
/// relations are personal by default).
pub fn policy_paths() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        root.join("policies/crm.yaml"),
        root.join("bench/pgbench-tables.yaml"),
    ]
}

/// Column name, `format_type` name and `pg_type.typcategory`.
type ColumnSpec = (&'static str, &'static str, char);

pub fn catalog() -> Catalog {
    let text = |n: &'static str| (n, "text", 'S');
    let bigint = |n: &'static str| (n, "bigint", 'N');
    let tstz = |n: &'static str| (n, "timestamp with time zone", 'D');
    let tables: Vec<(&str, Vec<ColumnSpec>)> = vec![
        (
            "companies",
            vec![
                bigint("id"),
                text("name"),
                ("org_number", "character varying(9)", 'S'),
                text("industry"),
                text("city"),
                text("website"),
                tstz("created_at"),
            ],
        ),
        (
            "contacts",
            vec![
                bigint("id"),
                bigint("company_id"),
                text("first_name"),
                text("last_name"),
                text("email"),
                text("phone"),
                text("street_address"),
                text("postal_code"),
                text("city"),
                text("country"),
                ("date_of_birth", "date", 'D'),
                text("bank_account"),
                text("notes"),
                tstz("created_at"),
                tstz("last_activity_at"),
            ],
        ),
        (
            "activities",
            vec![
                bigint("id"),
                bigint("contact_id"),
                text("kind"),
                text("subject"),
                text("body"),
                tstz("happened_at"),
            ],
        ),
        (
            "consents",
            vec![
                bigint("id"),
                bigint("contact_id"),
                text("purpose"),
                text("legal_basis"),
                text("source"),
                tstz("granted_at"),
                text("granted_by"),
                tstz("withdrawn_at"),
            ],
        ),
        (
            "pgbench_accounts",
            vec![
                ("aid", "integer", 'N'),
                ("bid", "integer", 'N'),
                ("abalance", "integer", 'N'),
                ("filler", "character(84)", 'S'),
            ],
        ),
    ];
    let mut catalog = Catalog::new("crm");
    for (i, (name, columns)) in tables.into_iter().enumerate() {
        catalog.add_relation(Relation {
            oid: 16_384 + i as u32,
            schema: "public".into(),
            name: name.into(),
            kind: RelKind::Table,
            columns: columns
                .into_iter()
                .zip(1..)
                .map(|((name, ty, category), attnum)| Column {
                    name: name.into(),
                    attnum,
                    ty: ColumnType {
                        sql_name: ty.into(),
                        category,
                    },
                })
                .collect(),
            reads: Vec::new(),
            children: Vec::new(),
            primary_key: Vec::new(),
            unique: Vec::new(),
            foreign_keys: Vec::new(),
            referenced_by: Vec::new(),
            definition: None,
            barrier: false,
            instead: false,
        });
    }
    catalog
}
