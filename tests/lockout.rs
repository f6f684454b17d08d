//! Lockout after repeated failed logins: a brute force with a wrong password locks the user
//! after the configured number of failures; further attempts, even with the right password, are
//! refused with FATAL 28000 without reaching PostgreSQL; the lock ends with its time or an
//! operator's unlock (`pgvakt admin unlock` included); a successful login resets the count;
//! replicas (three here) share the count through schema `pgvakt`, and without it a replica
//! counts alone and keeps the locks it knows.

use std::time::Duration;

use pgvakt::access::Scope;

use crate::common::cli::pgvakt;
use crate::common::{self, Env, EnvOptions};

const LOCKOUT: &str =
    "lockout:\n  user: {max_failures: 3, window_ms: 60000, lock_ms: 4000}\n  client: {max_failures: 0}\n";

async fn env() -> Env {
    env_with(String::new()).await
}

/// Locks that only an operator ends within a test.
const LONG_LOCKOUT: &str =
    "lockout:\n  user: {max_failures: 3, window_ms: 60000, lock_ms: 600000}\n  client: {max_failures: 0}\n";

async fn env_with(extra: String) -> Env {
    env_locking(LOCKOUT, extra).await
}

async fn env_locking(lockout: &str, extra: String) -> Env {
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: format!("{lockout}{extra}"),
        ..Default::default()
    })
    .await;
    env.create_user("victim", "right", false).await;
    env.create_user("bystander", "right", false).await;
    env
}

/// The SQLSTATE and message of a login through the proxy on `port`, or "ok".
async fn login(env: &Env, port: u16, user: &str, password: &str) -> (String, String) {
    match env.connect_port(port, user, password, "crm").await {
        Ok(c) => {
            c.simple_query("SELECT 1").await.expect("query after login");
            ("ok".into(), String::new())
        }
        Err(e) => (common::sqlstate(&e), common::message(&e)),
    }
}

/// Failed password checks PostgreSQL itself logged for `user`.
fn seen_by_postgres(env: &Env, user: &str) -> usize {
    let log = std::fs::read_to_string(env.cluster.log_file()).expect("server log");
    log.matches(&format!(
        "password authentication failed for user \"{user}\""
    ))
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_is_locked_out_before_postgresql_and_unlocked_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with(common::audit_yaml(dir.path())).await;
    let port = env.proxy_port();
    for _ in 0..3 {
        let (code, message) = login(&env, port, "victim", "guess").await;
        assert_eq!(code, "28P01", "{message}");
    }
    assert_eq!(seen_by_postgres(&env, "victim"), 3);
    // Locked: wrong and right passwords alike are refused by pgvakt with a clear message.
    for password in ["guess", "right", "guess"] {
        let (code, message) = login(&env, port, "victim", password).await;
        assert_eq!(code, "28000", "{message}");
        assert!(
            message.contains("user \"victim\" is locked after 3 failed logins"),
            "{message}"
        );
    }
    assert_eq!(
        seen_by_postgres(&env, "victim"),
        3,
        "attempts while locked must not reach PostgreSQL"
    );
    // Other users are not affected.
    assert_eq!(login(&env, port, "bystander", "right").await.0, "ok");
    let m = env.metrics().await;
    assert_eq!(
        common::metric(&m, "pgvakt_lockouts_total{scope=\"user\"}"),
        1.0
    );
    assert_eq!(
        common::metric(
            &m,
            "pgvakt_client_connections_refused_total{reason=\"locked_out\"}"
        ),
        3.0
    );
    assert_eq!(common::metric(&m, "pgvakt_shared_state_up"), 1.0);
    // The lock and the refusals are in the audit trail.
    let audit = dir.path().join("audit");
    let recorded = |event: &str, text: &str| {
        common::trail::all_records(&audit).iter().any(|r| {
            r["event"] == event
                && r["user"] == "victim"
                && r["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    for _ in 0..50 {
        if recorded("anomaly", "lockout: user victim locked") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded(
        "anomaly",
        "lockout: user victim locked for 4 s after 3 failed logins"
    ));
    assert!(recorded(
        "connection_refused",
        "locked_out: pgvakt: user \"victim\" is locked"
    ));
    assert!(recorded("login_failed", "authentication"));
    // The lock ends with its time; the count starts again.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(login(&env, port, "victim", "right").await.0, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_unlocks_and_a_successful_login_resets_the_count() {
    let env = env().await;
    let port = env.proxy_port();
    // Two failures, a success, two failures: never three in a row, never locked.
    for password in ["guess", "guess", "right", "guess", "guess", "right"] {
        let want = if password == "right" { "ok" } else { "28P01" };
        assert_eq!(login(&env, port, "victim", password).await.0, want);
    }
    for _ in 0..3 {
        login(&env, port, "victim", "guess").await;
    }
    assert_eq!(login(&env, port, "victim", "right").await.0, "28000");
    let config = env.server().proxy.config.clone();
    let listed = pgvakt::admin::lockouts(&config).await.expect("lockouts");
    assert!(listed.contains("victim"), "{listed}");
    let out = pgvakt::admin::unlock(&config, Scope::User, "victim")
        .await
        .expect("unlock");
    assert!(out.contains("unlocked"), "{out}");
    assert_eq!(login(&env, port, "victim", "right").await.0, "ok");
    let listed = pgvakt::admin::lockouts(&config).await.expect("lockouts");
    assert!(!listed.contains("victim"), "{listed}");
}

/// `pgvakt <args>` as an operator runs it: exit code and output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_unlocks_with_the_command_line() {
    let env = env_locking(LONG_LOCKOUT, String::new()).await;
    let port = env.proxy_port();
    for _ in 0..3 {
        assert_eq!(login(&env, port, "victim", "guess").await.0, "28P01");
    }
    assert_eq!(login(&env, port, "victim", "right").await.0, "28000");
    // The operator's own configuration file, naming the service user and the upstream.
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = common::audit_db::process_yaml(&env, dir.path(), LONG_LOCKOUT);
    let config = dir.path().join("pgvakt.yaml");
    std::fs::write(&config, yaml).expect("config");
    let config = config.to_str().expect("utf-8 path").to_owned();
    let admin = |args: &[&str]| {
        let mut all = vec![
            "admin".to_owned(),
            args[0].to_owned(),
            "--config".to_owned(),
        ];
        all.push(config.clone());
        all.extend(args[1..].iter().map(|a| (*a).to_owned()));
        pgvakt(all)
    };

    let (code, listed) = admin(&["lockouts"]).await;
    assert_eq!(code, 0, "{listed}");
    let victim = listed.lines().find(|l| l.contains("victim"));
    assert!(
        victim.is_some_and(|l| l.starts_with("user") && l.contains(" 3 ")),
        "{listed}"
    );
    let (code, out) = admin(&["unlock", "victim"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "user victim: unlocked, failed-login count cleared\n");
    assert_eq!(login(&env, port, "victim", "right").await.0, "ok");
    let (code, listed) = admin(&["lockouts"]).await;
    assert_eq!(code, 0, "{listed}");
    assert!(!listed.contains("victim"), "{listed}");
    // Nothing to unlock is said so, and succeeds; a configuration that cannot reach the shared
    // state fails with the cause.
    let (code, out) = admin(&["unlock", "bystander"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to unlock"), "{out}");
    std::fs::write(dir.path().join("service-password"), "wrong\n").expect("password");
    let (code, out) = admin(&["unlock", "victim"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("password"), "the cause is named: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_count() {
    let env = env().await;
    let (b, c) = (env.start_replica().await, env.start_replica().await);
    let ports = [env.proxy_port(), b.addr.port(), c.addr.port()];
    // One failure on each: no replica alone has seen three.
    for port in ports {
        assert_eq!(login(&env, port, "victim", "guess").await.0, "28P01");
    }
    // The third failure, counted by the last replica, locks the user on all three.
    for port in ports {
        let (code, message) = login(&env, port, "victim", "right").await;
        assert_eq!(code, "28000", "{message}");
        assert!(
            message.contains("locked after 3 failed logins"),
            "{message}"
        );
    }
    assert_eq!(seen_by_postgres(&env, "victim"), 3);
    // Each replica counted the refusals it made.
    for metrics in [env.server().metrics_addr, b.metrics_addr, c.metrics_addr] {
        let m = common::http_get(metrics, "/metrics").await;
        let refused = "pgvakt_client_connections_refused_total{reason=\"locked_out\"}";
        assert_eq!(common::metric(&m, refused), 1.0, "{m}");
    }
    // An unlock through one reaches all three.
    let config = env.server().proxy.config.clone();
    pgvakt::admin::unlock(&config, Scope::User, "victim")
        .await
        .expect("unlock");
    for port in ports.into_iter().rev() {
        assert_eq!(login(&env, port, "victim", "right").await.0, "ok");
    }
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_state_a_replica_counts_alone_and_keeps_known_locks() {
    let env = env().await;
    let port = env.proxy_port();
    for _ in 0..3 {
        login(&env, port, "victim", "guess").await;
    }
    // The shared state goes away (as if its database did not answer).
    env.setup_crm("ALTER TABLE pgvakt.login_failures RENAME TO gone", "rename")
        .await;
    // The lock this replica knows still holds.
    let (code, message) = login(&env, port, "victim", "right").await;
    assert_eq!(code, "28000", "{message}");
    // Counting goes on here: never unlimited attempts.
    for _ in 0..3 {
        assert_eq!(login(&env, port, "bystander", "guess").await.0, "28P01");
    }
    let (code, message) = login(&env, port, "bystander", "right").await;
    assert_eq!(code, "28000", "{message}");
    assert_eq!(seen_by_postgres(&env, "bystander"), 3);
    let m = env.metrics().await;
    assert_eq!(common::metric(&m, "pgvakt_shared_state_up"), 0.0);
    assert!(
        common::metric(&m, "pgvakt_shared_state_fallbacks_total") >= 4.0,
        "{m}"
    );
}
