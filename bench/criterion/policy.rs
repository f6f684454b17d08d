//! Policy evaluation on the demo policy: resolving a login to its role, deciding single
//! columns, and building the masked stand-in for a protected table.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use pgvakt::analysis::{self, Ctx};
use pgvakt::policy::model::RoleRules;

#[path = "demo.rs"]
mod demo;

fn evaluation(c: &mut Criterion) {
    let set = demo::policy();
    let catalog = demo::catalog();
    let now = SystemTime::now();
    let groups = vec!["crm_staff".to_owned()];
    let mut group = c.benchmark_group("policy");

    group.bench_function("resolve_user_grant", |b| {
        b.iter(|| set.resolve(black_box("secretary"), &groups, now))
    });
    group.bench_function("resolve_default_role", |b| {
        b.iter(|| set.resolve(black_box("unknown_user"), &groups, now))
    });

    let secretary = set.role("secretary").expect("secretary role");
    for column in ["id", "email", "bank_account", "date_of_birth"] {
        group.bench_function(format!("column_decision/{column}"), |b| {
            b.iter(|| secretary.column("public", "contacts", black_box(column)))
        });
    }

    let search_path = analysis::default_search_path();
    let ctx = Ctx {
        catalog: &catalog,
        rules: secretary.as_ref(),
        search_path: &search_path,
        user: "secretary",
        policy_version: &set.version,
        hidden_subjects: false,
    };
    let contacts = catalog.relation("public", "contacts").expect("contacts");
    group.bench_function("masked_relation_sql/contacts", |b| {
        b.iter(|| ctx.masked_relation_sql(black_box(contacts), None))
    });
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
