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
    let store = Arc::new(PolicyStore::from_set(
        demo::policy(),
        vec![demo::policy_path()],
    ));
    let enforcer = Enforcer::with_parts(store, demo::catalog());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut session = runtime.block_on(enforcer.session("secretary", "crm"));
    let mut group = c.benchmark_group("analysis_cached");
    for (name, sql) in demo::CRM_STATEMENTS {
        assert!(matches!(session.check(sql), Verdict::Rewrite(_)));
        group.bench_function(*name, |b| b.iter(|| session.check(black_box(sql))));
    }
    group.finish();
}

criterion_group!(benches, uncached, cached);
criterion_main!(benches);
