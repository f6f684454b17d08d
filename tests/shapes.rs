//! Statements are analysed once per shape (constants taken out) and their constants put back.
//! Differential check: for every statement, what the proxy forwards through the shape path is
//! exactly what the analysis of the statement itself renders, and refusals agree.

use std::path::PathBuf;
use std::sync::Arc;

use pgvakt::analysis::{self, Ctx, Outcome};
use pgvakt::enforce::{Enforcer, Verdict};
use pgvakt::policy::store::PolicyStore;

const CORPUS: &[&str] = &[
    "SELECT first_name, bank_account FROM contacts WHERE id = 42",
    "SELECT first_name, bank_account FROM contacts WHERE id = 43",
    "SELECT * FROM contacts WHERE email = 'anna@example.com' AND id > 10 LIMIT 5 OFFSET 10",
    "SELECT id FROM contacts WHERE bank_account LIKE 'SE45%' ORDER BY 1",
    "SELECT id FROM contacts WHERE date_of_birth < '1990-01-01'::date",
    "SELECT count(*) FROM contacts WHERE id IN (1, 2, 3, 4)",
    "SELECT c.id, a.subject FROM contacts c JOIN activities a ON a.contact_id = c.id WHERE c.id = 7 AND a.kind = 'call'",
    "SELECT x.a FROM contacts AS x(a, b, c, d, e, f, g, h, i, j, k, l) WHERE x.a = 1",
    "SELECT 'it''s', 1.5, .5, 2e3, 1E-2 FROM contacts WHERE id = 1",
    "SELECT substr(bank_account, 1, 4) FROM contacts WHERE id = 9",
    "SELECT id FROM contacts WHERE notes = E'it\\'s' ",
    "SELECT id FROM contacts WHERE notes = $$x$$",
    "SELECT id FROM contacts WHERE created_at > now() - INTERVAL '1 day'",
    "SELECT CAST(id AS varchar(10)) FROM contacts WHERE id = 3",
    "SELECT id FROM contacts WHERE first_name = 'a'\n'b'",
    "UPDATE contacts SET phone = '+46 70 000 00 00' WHERE id = 5 RETURNING id",
    "DELETE FROM activities WHERE id = 123456789",
    "INSERT INTO activities (contact_id, kind, subject, body) VALUES (42, 'note', 'hello', 'body text')",
    "WITH r AS (SELECT id, bank_account FROM contacts WHERE id < 10) SELECT * FROM r WHERE id = 2",
    "SELECT set_config('search_path', 'public', false)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT bank_account::int + 1 FROM contacts WHERE id = 1",
    "SELECT t1.id FROM contacts t1 WHERE t1.id = 11",
    "SELECT \"first_name\" FROM \"contacts\" WHERE \"id\" = 12 -- 13\n",
    "SELECT id FROM contacts /* 14 */ WHERE id = 15",
    "SELECT jsonb_build_object('b', bank_account) FROM contacts WHERE id = 16",
    "SELECT id FROM contacts WHERE id = $1 AND city = 'Oslo'",
    "SELECT id FROM contacts ORDER BY bank_account LIMIT 3",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The benchmark's statements as pgbench sends them: each `:variable` as a whole number (simple
/// protocol) and as a parameter of its own (extended protocol).
fn workload_statements() -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["bench/workloads", "bench/workloads/marketing"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("bench/workloads") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sql") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("workload");
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("--") || line.starts_with('\\') {
                continue;
            }
            let (mut literal, mut parameters, mut n) = (String::new(), String::new(), 0);
            let mut rest = line;
            while let Some(at) = rest.find(':') {
                let name = rest[at + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                literal.push_str(&rest[..at]);
                parameters.push_str(&rest[..at]);
                if name == 0 || rest[at + 1..].starts_with(':') {
                    // `::type`: a cast, kept as written.
                    let keep = rest[at..].bytes().take_while(|b| *b == b':').count();
                    literal.push_str(&rest[at..at + keep]);
                    parameters.push_str(&rest[at..at + keep]);
                    rest = &rest[at + keep..];
                    continue;
                }
                n += 1;
                literal.push_str(&(40 + n).to_string());
                parameters.push_str(&format!("${n}"));
                rest = &rest[at + 1 + name..];
            }
            literal.push_str(rest);
            parameters.push_str(rest);
            out.push(literal.trim_end_matches(';').to_owned());
            if n > 0 {
                out.push(parameters.trim_end_matches(';').to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn shape_path_forwards_exactly_what_the_statement_itself_analyses_to() {
    let mut corpus: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
    let workloads = workload_statements();
    assert!(workloads.len() >= 20, "{workloads:?}");
    corpus.extend(workloads);
    let policy = root().join("policies/crm.yaml");
    let set = pgvakt::policy::load(std::slice::from_ref(&policy)).expect("policy");
    let catalog = pgvakt::explain::load_snapshot(&root().join("policies/schema/crm-snapshot.json"))
        .expect("snapshot");
    let path = analysis::default_search_path();
    let ctx_catalog = catalog.clone();
    let version = set.version.clone();
    let roles: Vec<_> = ["secretary", "marketing"]
        .iter()
        .map(|r| (*r, set.role(r).expect("role")))
        .collect();
    let store = Arc::new(PolicyStore::from_set(set, vec![policy]));
    let enforcer = Enforcer::with_parts(store, catalog);
    let mut shaped = 0;
    for (role, rules) in roles {
        let mut session = enforcer
            .session(role, "crm")
            .await
            .expect("no group lookup needed");
        for sql in &corpus {
            let ctx = Ctx {
                catalog: &ctx_catalog,
                rules: rules.as_ref(),
                search_path: &path,
                user: role,
                policy_version: &version,
                hidden_subjects: false,
            };
            let direct = analysis::analyse(sql, &ctx);
            // Twice: the second time the shape comes from the cache.
            for _ in 0..2 {
                match (session.check(sql), &direct) {
                    (Verdict::Rewrite(r), Outcome::Forward(a)) => {
                        assert_eq!(r.sql(), a.sql, "{role}: {sql}");
                        if r.sql() != r.analysed.sql {
                            shaped += 1;
                        }
                    }
                    (Verdict::Refuse(e), Outcome::Refuse(d)) => {
                        assert_eq!(e, d.to_pg_error(), "{role}: {sql}")
                    }
                    (v, d) => panic!("{role}: {sql}: proxy {v:?}, analysis {d:?}"),
                }
            }
        }
    }
    assert!(shaped >= 60, "the shape path was used {shaped} times");
}

/// A client sending a flood of distinct statements must not flush the statements every other
/// session repeats: the bounded cache evicts one-off entries first.
#[tokio::test]
async fn a_flood_of_distinct_statements_does_not_evict_a_hot_one() {
    let policy = root().join("policies/crm.yaml");
    let set = pgvakt::policy::load(std::slice::from_ref(&policy)).expect("policy");
    let catalog = pgvakt::explain::load_snapshot(&root().join("policies/schema/crm-snapshot.json"))
        .expect("snapshot");
    let store = Arc::new(PolicyStore::from_set(set, vec![policy]));
    let enforcer = Enforcer::with_parts(store, catalog);
    let mut session = enforcer
        .session("secretary", "crm")
        .await
        .expect("no group lookup needed");
    let hot = "SELECT first_name, phone FROM contacts WHERE id = 7";
    let counters = enforcer.counters();
    assert!(matches!(session.check(hot), Verdict::Rewrite(_)));
    for i in 1..24_000 {
        if i % 200 == 0 {
            let misses = counters.cache_misses.get();
            assert!(matches!(session.check(hot), Verdict::Rewrite(_)));
            assert_eq!(
                counters.cache_misses.get(),
                misses,
                "the hot statement was evicted after {i} one-off statements"
            );
        }
        // Each alias makes a new text and a new shape: a cache entry used once.
        let one_off = format!("SELECT id AS c{i} FROM companies");
        assert!(matches!(
            session.check(&one_off),
            Verdict::Rewrite(_) | Verdict::Forward
        ));
    }
}
