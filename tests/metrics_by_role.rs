//! The metrics an operator alerts on beyond traffic: refusals by policy role and reason,
//! personal-data reads by category, the served certificate's expiry (renewed on reload) and the
//! catalog's age and failed refreshes.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{metric, sqlstate, Env};

fn refusals(role: &str, reason: &str) -> String {
    format!("pgvakt_statement_refusals_total{{role=\"{role}\",reason=\"{reason}\"}}")
}

fn reads(role: &str, category: &str, action: &str) -> String {
    format!(
        "pgvakt_personal_data_reads_total{{role=\"{role}\",category=\"{category}\",action=\"{action}\"}}"
    )
}

/// The value of a series, which must be present (not only 0 because it is missing).
fn present(m: &str, series: &str) -> f64 {
    assert!(
        m.lines().any(|l| l.starts_with(&format!("{series} "))),
        "{series} missing:\n{m}"
    );
    metric(m, series)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_role_and_reads_by_category() {
    let env = Env::start_demo(20).await;
    let before = env.metrics().await;
    // Every role of the policy has its refusal series from the start, at 0.
    for role in ["secretary", "sales", "marketing", "dpo", "admin", "nobody"] {
        assert_eq!(present(&before, &refusals(role, "policy")), 0.0, "{role}");
    }

    let secretary = env.connect("secretary", "secretary", "crm").await.unwrap();
    // Bank account (financial) masked, first name (identity) as stored: one statement.
    secretary
        .simple_query("SELECT first_name, bank_account FROM contacts")
        .await
        .unwrap();
    let err = secretary
        .simple_query("CREATE TABLE notes (t text)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    let marketing = env.connect("marketing", "marketing", "crm").await.unwrap();
    for _ in 0..2 {
        let err = marketing
            .simple_query("SELECT bank_account FROM contacts")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        // The refusal names the rule and the policy file's name and line, not its place on
        // the host's disk.
        let text = common::message(&err);
        assert!(text.contains("(crm.yaml:"), "{text}");
        assert!(!text.contains(env!("CARGO_MANIFEST_DIR")), "{text}");
        assert!(!text.contains("policies/"), "{text}");
    }
    // Reading nothing personal counts no personal read.
    marketing.simple_query("SELECT 1").await.unwrap();

    let m = env.metrics().await;
    assert_eq!(present(&m, &refusals("secretary", "policy")), 1.0);
    assert_eq!(present(&m, &refusals("marketing", "policy")), 2.0);
    assert_eq!(metric(&m, &refusals("sales", "policy")), 0.0);
    assert_eq!(present(&m, &reads("secretary", "financial", "masked")), 1.0);
    assert_eq!(present(&m, &reads("secretary", "identity", "allowed")), 1.0);
    // Marketing's bank account is blocked: both attempts are counted under its category, and
    // nothing as read.
    assert_eq!(
        present(&m, &reads("marketing", "financial", "blocked")),
        2.0
    );
    let marketing_reads = m
        .lines()
        .filter(|l| l.starts_with("pgvakt_personal_data_reads_total{role=\"marketing\""))
        .count();
    assert_eq!(marketing_reads, 1, "{m}");
    // No user name is a label value anywhere.
    assert!(!m.contains("user=\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_follows_a_reload_and_catalog_refreshes_are_timed() {
    let mut env = Env::start_demo(5).await;
    const EXPIRY: &str = "pgvakt_tls_certificate_expiry_timestamp_seconds";
    const CATALOG_AT: &str = "pgvakt_catalog_loaded_timestamp_seconds";
    const CATALOG_FAILED: &str = "pgvakt_catalog_refresh_failures_total";
    let m = env.metrics().await;
    // The test certificates carry rcgen's default notAfter, 4096-01-01.
    assert_eq!(present(&m, EXPIRY), 67_090_118_400.0);
    let loaded = present(&m, CATALOG_AT);
    assert!((now() - loaded).abs() < 120.0, "{loaded}");
    assert_eq!(present(&m, CATALOG_FAILED), 0.0);

    // A renewed certificate with a known notAfter, installed by replacing the files.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = time::macros::datetime!(2031-05-17 12:00 UTC);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(&env.certs.server_cert, cert.pem()).unwrap();
    std::fs::write(&env.certs.server_key, key.serialize_pem()).unwrap();
    env.server().reload_tls().unwrap();
    assert_eq!(metric(&env.metrics().await, EXPIRY), 1_936_785_600.0);

    // A refresh while PostgreSQL is down fails and is counted; the next one succeeds.
    env.cluster.stop_server().unwrap();
    env.server().proxy.enforcer.refresh_catalog();
    env.metrics_when("a failed catalog refresh", |m| {
        metric(m, CATALOG_FAILED) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.cluster.start_server().unwrap();
    // The service connection comes back and reloads the catalog by itself.
    let m = env
        .metrics_when("a catalog reload", |m| metric(m, CATALOG_AT) > loaded)
        .await;
    assert!((now() - metric(&m, CATALOG_AT)).abs() < 60.0);
}
