//! A differential fuzzer: generated statements — token soups around comments, operators,
//! quotes, dollar quotes, escapes and nesting, and mutations of the known bypasses — for which
//! the analysis and PostgreSQL's parser must agree.
//!
//! - Offline, thousands of cases: whatever the analysis forwards for a restricted role must
//!   scan without comments under PostgreSQL's scanner, parse under its grammar, call only
//!   allowlisted functions and read only schema-qualified relations or WITH queries — checked
//!   with pg_query's own extraction of tables and functions, not pgvakt's walk.
//! - Live, hundreds of cases: sent through pgvakt to a real PostgreSQL holding the demo data,
//!   no response byte may hold a bank account or full birth date, and nothing is written.
//!
//! The corpus (`tests/fuzz/corpus.sql`, one case per line with `\n` for newlines) runs first;
//! `PGVAKT_FUZZ_CASES` sets the number of generated cases (long runs), `PGVAKT_FUZZ_SEED` the
//! seed. A failing case is printed with its seed so it can be added to the corpus.

use crate::common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::leaks::{run_case, Expect, Secrets};
use common::Env;
use pgvakt::analysis::{self, authority, Ctx, Outcome};
use pgvakt::catalog::snapshot::Snapshot;

const PIECES: &[&str] = &[
    "SELECT",
    "bank_account",
    "date_of_birth",
    "first_name",
    "FROM",
    "contacts",
    "c",
    ",",
    "(",
    ")",
    "1",
    "2",
    "'x'",
    "'",
    "\"",
    "$$",
    "$a$",
    "/*",
    "*/",
    "--",
    "\n",
    "<",
    ">",
    "=",
    "!",
    "@",
    "#",
    "~",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "&",
    "|",
    "?",
    "::",
    ";",
    "E'",
    "\\",
    "U&",
    "WHERE",
    "AS",
    "string_agg(bank_account, ',')",
    "row_to_json(c)",
    "c.*",
    "contacts.*",
    "query_to_xml('SELECT bank_account FROM contacts', true, false, '')",
    "UNION SELECT",
    "WITH x AS (SELECT bank_account FROM contacts)",
    "LATERAL",
    " ",
    "\t",
    "\u{c}",
    "0x1",
    "1_0",
    "1e",
    ".5",
    "''",
    "$1",
    "U&\"",
    "\\'",
    "E'\\''",
    "$b$ $$ $b$",
    "/**/",
    "/* /* */",
    "pg_stats",
    "pg_catalog.",
    "public.",
    "(SELECT",
    "ORDER BY",
    "LIMIT 1",
    "UPDATE contacts SET",
    "notes",
    "RETURNING",
    "contacts",
    "INSERT INTO",
    "VALUES",
];

const OPERATORS: &[&str] = &[
    "<", ">", "=", "<>", "!=", "<=", ">=", "||", "@", "#", "~", "+", "-", "*", "/", "%", "^", "&",
    "|", "?", "@@", "<@", "@>", "->", "->>", "!~", "~~", "<->", "&&", "",
];
const OPENERS: &[&str] = &[
    "/*", "--", "/**", "/* /*", "-- /*", "$$", "$x$", "'", "E'", "\"",
];
const CLOSERS: &[&str] = &["*/", "\n", "*/ */", "$$", "$x$", "'", "\"", "", "*/\n"];
const PAYLOADS: &[&str] = &[
    "string_agg(bank_account, ',')",
    "bank_account",
    "date_of_birth::text",
    "row_to_json(contacts)::text",
    "(SELECT string_agg(bank_account, ',') FROM contacts)",
    "query_to_xml('SELECT bank_account FROM contacts', true, false, '')",
];

fn generate(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.5) {
        // Mutations of `SELECT 1 </* 2, 'x */ 2 AS a, <payload> FROM contacts --' AS z`.
        let pick = |rng: &mut StdRng, xs: &[&'static str]| xs[rng.gen_range(0..xs.len())];
        let (op, open, close, quote, payload) = (
            pick(rng, OPERATORS),
            pick(rng, OPENERS),
            pick(rng, CLOSERS),
            pick(rng, &["'", "$$", "\"", "E'", ""]),
            pick(rng, PAYLOADS),
        );
        let tail = pick(rng, &["--", "/*", "", ";", "\n--"]);
        format!("SELECT 1 {op}{open} 2, {quote}x {close} 2 AS a, {payload} FROM contacts {tail}{quote} AS z")
    } else {
        let n = rng.gen_range(3..25);
        let mut s = String::from("SELECT ");
        for _ in 0..n {
            s.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
            if rng.gen_bool(0.6) {
                s.push(' ');
            }
        }
        s
    }
}

fn corpus() -> Vec<String> {
    include_str!("fuzz/corpus.sql")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("#"))
        .map(|l| l.replace("\\n", "\n"))
        .collect()
}

fn cases(default: usize) -> (u64, Vec<String>) {
    let n = std::env::var("PGVAKT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed = std::env::var("PGVAKT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = corpus();
    out.extend((0..n).map(|_| generate(&mut rng)));
    (seed, out)
}

/// What pg_query itself (not pgvakt's walk) finds wrong in a forwarded text.
fn postgres_objects(sql: &str) -> Result<(), String> {
    for t in pg_query::scan_tokens(sql).map_err(|e| e.to_string())? {
        if t.token == pg_query::protobuf::Token::SqlComment as i32
            || t.token == pg_query::protobuf::Token::CComment as i32
        {
            return Err("PostgreSQL reads a comment".into());
        }
    }
    let parsed = pg_query::parse(sql, 0).map_err(|e| e.to_string())?;
    for f in parsed.functions() {
        let name = f.rsplit('.').next().unwrap_or(&f);
        let qualified_ok =
            !f.contains('.') || f.starts_with("pg_catalog.") || f == "pgvakt.pseudonym";
        if !qualified_ok || (f != "pgvakt.pseudonym" && authority::allowed_function(name).is_none())
        {
            return Err(format!("PostgreSQL calls {f}"));
        }
    }
    let ctes = &parsed.cte_names;
    for t in parsed.tables() {
        if !t.contains('.') && !ctes.contains(&t) {
            return Err(format!("PostgreSQL reads relation {t} unqualified"));
        }
        if t.starts_with("pg_catalog.pg_stat") {
            return Err(format!("PostgreSQL reads {t}"));
        }
    }
    Ok(())
}

#[test]
fn forwarded_text_reads_the_same_to_postgresql() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let snapshot =
        std::fs::read_to_string(root.join("policies/schema/crm-snapshot.json")).expect("snapshot");
    let catalog = Snapshot::from_json(&snapshot)
        .and_then(Snapshot::into_catalog)
        .expect("catalog");
    let set = pgvakt::policy::load_with_env(&[root.join("policies/crm.yaml")], &|_| None)
        .expect("policy");
    let (seed, cases) = cases(3000);
    let search_path = analysis::default_search_path();
    let mut forwarded = 0;
    let mut failures = Vec::new();
    for role in ["secretary", "marketing", "sales"] {
        let rules = set.role(role).expect("role");
        let ctx = Ctx {
            catalog: &catalog,
            rules: rules.as_ref(),
            search_path: &search_path,
            user: role,
            policy_version: &set.version,
            hidden_subjects: true,
        };
        for sql in &cases {
            if let Outcome::Forward(a) = analysis::analyse(sql, &ctx) {
                forwarded += 1;
                if let Err(e) = postgres_objects(&a.sql) {
                    failures.push(format!("{role} (seed {seed}): {sql:?} → {:?}: {e}", a.sql));
                }
            }
        }
    }
    eprintln!(
        "{} cases × 3 roles, {forwarded} forwarded (seed {seed})",
        cases.len()
    );
    assert!(
        forwarded * 20 > cases.len(),
        "too few generated cases were forwarded ({forwarded}): the generator is off"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn generated_statements_never_leak_through_the_proxy() {
    let env = Env::start_audited_demo(100).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let secrets = Secrets::load(&direct).await;
    let (seed, cases) = cases(250);
    let mut failures = Vec::new();
    for role in ["marketing", "secretary"] {
        let c = env.connect(role, role, "crm").await.expect("connect");
        for sql in &cases {
            if let Err(f) = run_case(&c, &secrets, role, sql, Expect::NoLeak).await {
                failures.push(format!("(seed {seed}) {f}"));
            }
        }
    }
    let written: i64 = direct
        .query_one(
            "SELECT count(*) FROM contacts WHERE bank_account = 'PWNED' OR notes LIKE '%PWNED%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(written, 0, "a generated statement wrote through the proxy");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
