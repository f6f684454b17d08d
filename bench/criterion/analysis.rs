//! Statement analysis and rewrite for a restricted role (secretary) over the demo policy:
//! uncached (parse, check, rewrite, render every time) and cached (the session's verdict path,
//! a hash lookup keyed by text, role, policy version and search_path).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pgvakt::analysis::{self, Ctx, Outcome};
use pgvakt::enforce::{Enforcer, Verdict};
use pgvakt::policy::store::PolicyStore;

#[path = "demo.rs"]
mod demo;

fn uncached(c: &mut Criterion) {
    let set = demo::policy();
    let catalog = demo::catalog();
    let rules = set.role("secretary").expect("secretary role");
    let search_path = analysis::default_search_path();
    let ctx = Ctx {
        catalog: &catalog,
        rules: rules.as_ref(),
        search_path: &search_path,
        user: "secretary",
        policy_version: &set.version,
        hidden_subjects: false,
    };
    let mut group = c.benchmark_group("analysis_uncached");
    for (name, sql) in demo::CRM_STATEMENTS {
        assert!(
            matches!(analysis::analyse(sql, &ctx), Outcome::Forward(_)),
            "{name} must be forwarded for secretary"
        );
        group.bench_function(*name, |b| {
            b.iter(|| analysis::analyse(black_box(sql), &ctx))
        });
    }
    group.finish();
}

fn cached(c: &mut Criterion) {
    let store = Arc::new(PolicyStore::from_set(demo::policy(), demo::policy_paths()));
    let enforcer = Enforcer::with_parts(store, demo::catalog());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut session = runtime
        .block_on(enforcer.session("secretary", "crm"))
        .expect("no group lookup needed");
    let mut group = c.benchmark_group("analysis_cached");
    for (name, sql) in demo::CRM_STATEMENTS {
        assert!(matches!(session.check(sql), Verdict::Rewrite(_)));
        group.bench_function(*name, |b| b.iter(|| session.check(black_box(sql))));
    }
    group.finish();
}

/// The simple protocol with constants written into the text (pgbench, many ORMs): every text
/// is new, but its shape is cached.
fn varying_constants(c: &mut Criterion) {
    let store = Arc::new(PolicyStore::from_set(demo::policy(), demo::policy_paths()));
    let enforcer = Enforcer::with_parts(store, demo::catalog());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut session = runtime
        .block_on(enforcer.session("secretary", "crm"))
        .expect("no group lookup needed");
    let texts: Vec<String> = (0..4096)
        .map(|i| {
            format!(
                "SELECT id, first_name, last_name, email, phone, bank_account, date_of_birth \
                 FROM contacts WHERE id = {i}"
            )
        })
        .collect();
    assert!(matches!(session.check(&texts[0]), Verdict::Rewrite(_)));
    let mut i = 0;
    c.bench_function("analysis_shapes/contact_by_id_new_constant", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            session.check(black_box(&texts[i]))
        })
    });
}

/// The parts of PostgreSQL's parser's check on a typical forwarded text (a stand-in
/// placeholder in place of the protected table), to see where the check's time goes.
fn authority(c: &mut Criterion) {
    let sql = "SELECT id, first_name, last_name, email, phone, bank_account FROM \"pgvakt_stand_in_0123456789abcdef0123456789abcdef_1\" AS contacts WHERE id = $1";
    let mut group = c.benchmark_group("authority");
    group.bench_function("scan_tokens", |b| {
        b.iter(|| pg_query::scan_tokens(black_box(sql)))
    });
    group.bench_function("sqlparser_tokenize", |b| {
        let dialect = sqlparser::dialect::PostgreSqlDialect {};
        b.iter(|| {
            sqlparser::tokenizer::Tokenizer::new(&dialect, black_box(sql)).tokenize_with_location()
        })
    });
    group.bench_function("pg_query_parse", |b| {
        b.iter(|| pg_query::parse(black_box(sql), 0))
    });
    group.finish();
}

criterion_group!(benches, authority, uncached, cached, varying_constants);
criterion_main!(benches);
