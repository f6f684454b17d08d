//! Mass-read alarms: reading contacts one by one as `secretary` past the role's
//! `limits.subjects_per_hour` writes an `anomaly` record, counts the crossing and, with
//! `action: block`, refuses the user's further personal-data reads on every replica until an
//! operator resets the limits; re-reading the same few contacts does not trip it. Reads of one
//! user spread over three replicas are counted once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::reads::read_contact;
use crate::common::{self, Env, EnvOptions};

fn policy_with_limits(dir: &Path) -> PathBuf {
    let text = common::policy_files::demo_policy();
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

/// The demo (30 people) with the secretary's read limit and an audit trail under `dir`.
async fn limited_env(dir: &Path) -> Env {
    Env::start_with(EnvOptions {
        demo_contacts: Some(30),
        policy_file: Some(policy_with_limits(dir)),
        extra_yaml: common::audit_yaml(dir),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_contacts_one_by_one_trips_the_alarm_and_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = limited_env(dir.path()).await;
    let replica = env.start_replica().await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("login");
    // An ordinary workload: the same few customers again and again.
    for _ in 0..10 {
        for id in 1..=3 {
            read_contact(&c, id, true)
                .await
                .expect("ordinary reads pass");
        }
    }
    // One contact after another: the sixth distinct subject crosses the limit.
    let mut refused_at = None;
    for id in 4..=12 {
        if let Err(e) = read_contact(&c, id, true).await {
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
        if read_contact(&b, 1, true).await.is_err() {
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
        if read_contact(&c, 1, true).await.is_ok() && read_contact(&b, 2, true).await.is_ok() {
            open_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open_again, "reads resume after reset-limits");
    replica.shutdown().await;
}

/// Whether personal-data reads are refused on every client within a bounded wait.
async fn refused_on_all(clients: &[tokio_postgres::Client]) -> bool {
    for _ in 0..40 {
        let mut all = true;
        for c in clients {
            all &= read_contact(c, 1, true).await.is_err();
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_three_replicas_are_counted_once_and_blocked_on_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = limited_env(dir.path()).await;
    let replicas = [env.start_replica().await, env.start_replica().await];
    let ports = [
        env.proxy_port(),
        replicas[0].addr.port(),
        replicas[1].addr.port(),
    ];
    let mut clients = Vec::new();
    for port in ports {
        let c = env
            .connect_port(port, "secretary", "secretary", "crm")
            .await;
        clients.push(c.expect("login"));
    }
    // Twelve contacts, each replica reading four of them (five with contact 1 below): no
    // replica alone crosses the limit of five; together they do.
    let mut refused_at = None;
    for id in 1..=12i64 {
        if let Err(e) = read_contact(&clients[id as usize % 3], id, true).await {
            assert_eq!(common::sqlstate(&e), "42501", "{e}");
            assert!(
                common::message(&e).contains("more personal data within an hour"),
                "{e}"
            );
            refused_at = Some(id);
            break;
        }
    }
    if let Some(id) = refused_at {
        assert!(id >= 7, "refused at contact {id}, before six were read");
    }
    // The totals reach every replica with its sync; the block then holds on all three.
    assert!(refused_on_all(&clients).await, "blocked on every replica");
    let audit = dir.path().join("audit");
    let mut counted = None;
    for _ in 0..50 {
        counted = common::trail::all_records(&audit).iter().find_map(|r| {
            let m = r["message"].as_str().filter(|_| r["event"] == "anomaly")?;
            let n = m.strip_prefix("read limit: ")?.split(' ').next()?;
            n.parse::<u64>().ok()
        });
        if counted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = counted.expect("anomaly record");
    assert!(
        counted >= 6,
        "distinct subjects over all replicas: {counted}"
    );
    let mut crossings = 0.0;
    for addr in [
        env.server().metrics_addr,
        replicas[0].metrics_addr,
        replicas[1].metrics_addr,
    ] {
        let m = common::http_get(addr, "/metrics").await;
        crossings += common::metric(
            &m,
            "pgvakt_read_limit_crossings_total{limit=\"subjects_per_hour\",action=\"block\"}",
        );
    }
    assert!(crossings >= 1.0, "a crossing is counted");

    // An operator's reset through one reaches all three.
    let config = env.server().proxy.config.clone();
    pgvakt::admin::reset_limits(&config, "secretary")
        .await
        .expect("reset");
    let mut open_again = false;
    for _ in 0..30 {
        let mut all = true;
        for (i, c) in clients.iter().enumerate() {
            all &= read_contact(c, 1 + i as i64, true).await.is_ok();
        }
        if all {
            open_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        open_again,
        "reads resume on every replica after reset-limits"
    );
    // And stay open over the next syncs: a block from a crossing before the reset that one
    // replica writes only after it does not come back.
    for round in 0..12 {
        for (i, c) in clients.iter().enumerate() {
            let r = read_contact(c, 1 + i as i64, true).await;
            assert!(r.is_ok(), "round {round}, replica {i}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for r in replicas {
        r.shutdown().await;
    }
}
