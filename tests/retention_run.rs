//! `pgvakt retention run` on a clock set past the demo's periods: a dry run reports and changes
//! nothing (exit 1), a run anonymises the subjects past `contacts.last_activity_at + 10y` as the
//! inventory's `erase` says and deletes activities past their own period, leaves everyone else
//! alone, and a second run finds nothing; the textfile metrics say what the alerts read.

use std::path::Path;

use crate::common;

use common::cli::pgvakt;
use common::{Env, EnvOptions};

/// The demo policy, with activities kept for five years and then deleted.
fn policy(dir: &Path) -> std::path::PathBuf {
    let text = common::policy_files::demo_policy();
    let changed = text.replacen(
        "      erase:\n        columns: {body: \"null\"}\n",
        "      erase:\n        columns: {body: \"null\"}\n      retention: {column: happened_at, keep: 5y, action: delete}\n",
        1,
    );
    assert_ne!(
        changed, text,
        "the demo policy's activities changed; update this test"
    );
    let p = dir.join("crm.yaml");
    std::fs::write(&p, changed).expect("policy");
    p
}

/// The contacts inside the period on the run's clock (2036-06-01), as JSON.
async fn kept(direct: &tokio_postgres::Client) -> Vec<String> {
    direct
        .query(
            "SELECT row_to_json(c)::text FROM contacts c WHERE last_activity_at >= '2036-06-01'::timestamptz - interval '10 years' ORDER BY id",
            &[],
        )
        .await
        .expect("rows inside the period")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn retention_run_on_a_clock_past_the_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy(dir.path());
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(60),
        policy_file: Some(policy.clone()),
        ..Default::default()
    })
    .await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let now = "2036-06-01T00:00:00Z";
    let count = |sql: &'static str| {
        let direct = &direct;
        async move {
            direct
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    let past_contacts = "SELECT count(*) FROM contacts WHERE last_activity_at < '2036-06-01'::timestamptz - interval '10 years'";
    let past_activities = "SELECT count(*) FROM activities WHERE happened_at < '2036-06-01'::timestamptz - interval '5 years'";
    let (n_contacts, n_activities) = (count(past_contacts).await, count(past_activities).await);
    assert!(
        n_contacts > 5 && n_activities > 5,
        "{n_contacts} {n_activities}"
    );
    let total_contacts = count("SELECT count(*) FROM contacts").await;
    let kept_before: Vec<String> = kept(&direct).await;

    let metrics = dir.path().join("pgvakt_retention.prom");
    // The run records itself in the audit trail this configuration names.
    let config = common::trail::dpo_config(dir.path(), &common::audit_yaml(dir.path()));
    let own_dir = dir.path().join("audit").join("dpo");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "retention".into(),
            "run".into(),
            "--upstream".into(),
            format!(
                "host=127.0.0.1 port={} user=dpo password=dpo dbname=crm sslmode=require",
                env.proxy_port()
            ),
            "--policy".into(),
            policy.display().to_string(),
            "--now".into(),
            now.into(),
            "--metrics-file".into(),
            metrics.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let (code, out) = pgvakt(args(&["--dry-run"])).await;
    assert_eq!(code, 1, "a dry run that finds overdue rows: {out}");
    assert!(
        out.contains(&format!("{n_contacts} subjects past 10 years")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "public.activities: {n_activities} rows past 5 years"
        )),
        "{out}"
    );
    assert_eq!(
        count(past_activities).await,
        n_activities,
        "dry run deletes nothing"
    );
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("pgvakt_retention_last_run_success 1"),
        "{prom}"
    );
    assert!(!prom.contains("pgvakt_retention_overdue_rows 0"), "{prom}");
    // A dry run is one record: what is overdue per table, nothing changed.
    let records = common::trail::all_records(&own_dir);
    assert_eq!(records.len(), 1, "{records:?}");
    let dry = &records[0];
    assert_eq!(
        (&dry["event"], &dry["dry_run"], &dry["user"]),
        (&"retention_run".into(), &true.into(), &"dpo".into())
    );
    let activities = dry["table_counts"]
        .as_array()
        .expect("table_counts")
        .iter()
        .find(|t| t["table"] == "public.activities" && t["deleted"] == true)
        .expect("activities past their period counted");
    assert_eq!(activities["rows"], n_activities);
    assert_eq!(activities["deleted"], true);

    let (code, out) = pgvakt(args(&[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 left overdue"), "{out}");
    assert_eq!(
        count(past_activities).await,
        0,
        "activities past 5 years deleted"
    );
    let anonymised = count(
        "SELECT count(*) FROM contacts WHERE last_activity_at < '2036-06-01'::timestamptz - interval '10 years'
         AND first_name = '***' AND email = '***' AND bank_account IS NULL AND date_of_birth IS NULL",
    )
    .await;
    assert_eq!(
        anonymised, n_contacts,
        "every subject past the period anonymised"
    );
    assert_eq!(
        count("SELECT count(*) FROM contacts").await,
        total_contacts,
        "rows kept"
    );
    let kept_after: Vec<String> = kept(&direct).await;
    assert_eq!(
        kept_after, kept_before,
        "subjects inside the period untouched"
    );
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(prom.contains("pgvakt_retention_overdue_rows 0"), "{prom}");
    // The run: one record per subject erased (before its commit), one for the activities
    // deleted, naming whose they were, and the summary.
    let records = common::trail::all_records(&own_dir);
    let run: Vec<&serde_json::Value> = records[1..].iter().collect();
    let per_subject = run
        .iter()
        .filter(|r| r["subject_count"] == 1 && r["table_counts"][0]["table"] == "public.contacts")
        .count();
    assert_eq!(per_subject as i64, n_contacts, "{run:?}");
    let deleted = run
        .iter()
        .find(|r| r["table_counts"][0]["table"] == "public.activities")
        .expect("the activities' record");
    assert_eq!(deleted["rows"], n_activities);
    assert!(deleted["subject_count"].as_u64() > Some(0), "{deleted}");
    let summary = run.last().expect("summary");
    assert!(
        summary["message"]
            .as_str()
            .is_some_and(|m| m.contains("0 left overdue"))
            && summary.get("dry_run").is_none(),
        "{summary}"
    );
    assert!(run
        .iter()
        .all(|r| r["event"] == "retention_run" && r["outcome"] == "ok"));

    let (code, out) = pgvakt(args(&[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("0 rows overdue, 0 changed"),
        "a second run changes nothing: {out}"
    );

    // A run that cannot connect fails with 2 and says so in the metrics.
    let mut bad = args(&[]);
    bad[3] = "host=127.0.0.1 port=1 user=dpo dbname=crm sslmode=disable".into();
    let (code, _) = pgvakt(bad).await;
    assert_eq!(code, 2);
    let records = common::trail::all_records(&own_dir);
    let failed = records.last().expect("the failed run's record");
    assert_eq!(
        (&failed["event"], &failed["outcome"], &failed["message"]),
        (
            &"retention_run".into(),
            &"error".into(),
            &"failed: connecting".into()
        )
    );
    assert!(common::schema::assert_audit_dir_valid(&own_dir) >= 4);
    let (intact, report) = common::trail::verify(&dir.path().join("chain.key"), &own_dir);
    assert!(intact, "{report}");
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains("pgvakt_retention_last_run_success 0"),
        "{prom}"
    );
}

#[test]
fn retention_alerts_read_what_the_run_writes() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/retention-alerts.yml"),
    )
    .expect("rules");
    let written = pgvakt::subject::retention::metrics_text(
        Some(&pgvakt::subject::retention::Outcome::default()),
        0,
    );
    let mut seen = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("pgvakt_retention_") {
            seen += 1;
            assert!(
                written.contains(&format!("\n{word} ")),
                "{word} is not written by retention run"
            );
        }
    }
    assert!(seen >= 3, "the rules read the run's metrics");
}
