//! Mass-read alarms: reading contacts one by one as `secretary` past the role's
//! `limits.subjects_per_hour` writes an `anomaly` record, counts the crossing and, with
//! `action: block`, refuses the user's further personal-data reads on every replica until an
//! operator resets the limits; re-reading the same few contacts does not trip it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{self, Env, EnvOptions};

fn policy_with_limits(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("policies/crm.yaml")).expect("crm.yaml");
    let text = text.replacen(
        "\n  secretary:\n",
        "\n  secretary:\n    limits: {subjects_per_hour: 5, action: block}\n",
        1,
    );
    assert!(text.contains("subjects_per_hour"));
    let path = dir.join("crm-limits.yaml");
    std::fs::write(&path, text).expect("write policy");
    path
}

async fn read_contact(c: &tokio_postgres::Client, id: i64) -> Result<(), tokio_postgres::Error> {
    c.simple_query(&format!(
        "SELECT first_name, email FROM contacts WHERE id = {id}"
    ))
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_contacts_one_by_one_trips_the_alarm_and_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(30),
        policy_file: Some(policy_with_limits(dir.path())),
        extra_yaml: common::audit_yaml(dir.path()),
        ..Default::default()
    })
    .await;
    let replica = env.start_replica().await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    // An ordinary workload: the same few customers again and again.
    for _ in 0..10 {
        for id in 1..=3 {
            read_contact(&c, id).await.expect("ordinary reads pass");
        }
    }
    // One contact after another: the sixth distinct subject crosses the limit.
    let mut refused_at = None;
    for id in 4..=12 {
        if let Err(e) = read_contact(&c, id).await {
            assert_eq!(common::sqlstate(&e), "42501", "{e}");
            assert!(
                common::message(&e).contains("more personal data within an hour"),
                "{e}"
            );
            refused_at = Some(id);
            break;
        }
    }
    let refused_at = refused_at.expect("the loop is stopped");
    assert!(
        (7..=8).contains(&refused_at),
        "stopped at contact {refused_at}"
    );
    // Reads without personal data go on.
    c.simple_query("SELECT 1").await.expect("not personal data");

    let m = env.metrics().await;
    let crossed = "pgvakt_read_limit_crossings_total{limit=\"subjects_per_hour\",action=\"block\"}";
    assert_eq!(common::metric(&m, crossed), 1.0, "{m}");
    assert!(common::metric(&m, "pgvakt_read_limit_refusals_total") >= 1.0);
    let audit = dir.path().join("audit");
    let find = || {
        common::trail::all_records(&audit).into_iter().find(|r| {
            r["event"] == "anomaly"
                && r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("read limit: 6 distinct subjects"))
        })
    };
    let mut anomaly = find();
    for _ in 0..50 {
        if anomaly.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        anomaly = find();
    }
    let anomaly = anomaly.expect("anomaly record");
    assert_eq!(anomaly["user"], "secretary");
    assert_eq!(anomaly["role"], "secretary");

    // The other replica learns of the block within its sync.
    let b = env
        .connect_port(replica.addr.port(), "secretary", "secretary", "crm")
        .await
        .expect("login on the replica");
    let mut blocked_there = false;
    for _ in 0..30 {
        if read_contact(&b, 1).await.is_err() {
            blocked_there = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(blocked_there, "the block is shared");

    // An operator resets the limits: reads work again on both.
    let config = env.server().proxy.config.clone();
    pgvakt::admin::reset_limits(&config, "secretary")
        .await
        .expect("reset");
    let mut open_again = false;
    for _ in 0..30 {
        if read_contact(&c, 1).await.is_ok() && read_contact(&b, 2).await.is_ok() {
            open_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open_again, "reads resume after reset-limits");
    replica.shutdown().await;
}
