//! The admin console: database `pgvakt`, answered by pgvakt itself for the users
//! `admin.users` names (their passwords checked by PostgreSQL). An operator sees the open
//! sessions with their policy roles and ends one with KILL (its client told why, its backend
//! gone, the others untouched); SHOW POLICY / GRANTS / LOCKOUTS / HELP and RELOAD work from psql
//! and tokio-postgres; a broken policy on RELOAD keeps the old one; other users are refused;
//! every command is in the audit trail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::{self, Env, EnvOptions};

const ADMIN: &str = "admin:\n  users: [ops]\nlockout:\n  user: {max_failures: 2, window_ms: 60000, lock_ms: 60000}\n";

/// The demo policy, copied where the test may break it.
fn policy_copy(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = dir.join("crm.yaml");
    std::fs::copy(root.join("policies/crm.yaml"), &path).expect("copy policy");
    path
}

async fn env_with_console(dir: &Path) -> Env {
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy_copy(dir)),
        extra_yaml: format!("{ADMIN}{}", common::audit_yaml(dir)),
        ..Default::default()
    })
    .await;
    env.create_user("ops", "ops-secret", false).await;
    env
}

/// A console command's rows, as (column name → value) maps.
async fn rows(console: &Client, command: &str) -> Vec<Vec<(String, Option<String>)>> {
    let messages = console
        .simple_query(command)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn field<'a>(row: &'a [(String, Option<String>)], name: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| c == name)
        .and_then(|(_, v)| v.as_deref())
        .unwrap_or_else(|| panic!("no {name} in {row:?}"))
}

/// The SHOW SESSIONS row of the session of `user`, if one is open.
async fn session_of(console: &Client, user: &str) -> Option<Vec<(String, Option<String>)>> {
    rows(console, "SHOW SESSIONS")
        .await
        .into_iter()
        .find(|r| field(r, "user") == user)
}

/// Connect through pgvakt, keeping the connection task's outcome (the FATAL that ends it).
async fn connect_watched(
    env: &Env,
    user: &str,
    password: &str,
) -> (
    Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = env
        .pg_config(user, password, "crm")
        .connect(env.tls())
        .await
        .expect("login");
    (client, tokio::spawn(conn))
}

/// The `admin` audit records, once the writer has written one that `last` matches (records
/// are written in the order the console sent them).
async fn admin_records(audit: &Path, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut found = Vec::new();
    // Bounded: 30 s, for a loaded machine where several suites write audit trails at once.
    for _ in 0..300 {
        found = common::trail::all_records(audit)
            .into_iter()
            .filter(|r| r["event"] == "admin")
            .collect();
        if found.iter().any(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

/// Backends PostgreSQL runs for `user`, or with `application_name` `app`.
async fn backends(env: &Env, user: &str, app: &str) -> i64 {
    env.direct()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 OR application_name = $2",
            &[&user, &app],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Wait (bounded) until no backend of `user` or `app` is left.
async fn gone(env: &Env, user: &str, app: &str) -> bool {
    for _ in 0..100 {
        if backends(env, user, app).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_sessions_and_ends_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with_console(dir.path()).await;
    let (victim, victim_conn) = connect_watched(&env, "secretary", "secretary").await;
    victim
        .simple_query("SELECT first_name FROM contacts LIMIT 1")
        .await
        .expect("victim reads");
    let bystander = env.connect("sales", "sales", "crm").await.expect("sales");
    let console = env
        .connect("ops", "ops-secret", "pgvakt")
        .await
        .expect("console");

    // Both sessions are listed with their policy roles, database, client and activity.
    let row = session_of(&console, "secretary").await.expect("listed");
    assert_eq!(field(&row, "role"), "secretary", "{row:?}");
    assert_eq!(field(&row, "database"), "crm");
    assert_eq!(field(&row, "state"), "idle");
    assert_eq!(field(&row, "statements"), "1", "{row:?}");
    assert!(field(&row, "client").starts_with("127.0.0.1:"), "{row:?}");
    assert!(field(&row, "tls").starts_with("TLSv1"), "{row:?}");
    let victim_id = field(&row, "id").to_owned();
    let sales = session_of(&console, "sales").await.expect("listed");
    assert_eq!(field(&sales, "role"), "sales");
    let own = session_of(&console, "ops")
        .await
        .expect("the console itself");
    assert_eq!(field(&own, "database"), "pgvakt");

    // KILL: the victim's client is told why, its backend ends, the bystander goes on.
    assert_eq!(backends(&env, "secretary", "-").await, 1);
    console
        .simple_query(&format!("KILL {victim_id}"))
        .await
        .expect("KILL");
    let ended = tokio::time::timeout(Duration::from_secs(10), victim_conn)
        .await
        .expect("the victim's connection ends")
        .expect("connection task");
    let e = ended.expect_err("ended with an error");
    assert_eq!(common::sqlstate(&e), "57P01", "{e}");
    assert!(
        common::message(&e).contains("ended by admin console user ops (KILL)"),
        "{e}"
    );
    let next = victim.simple_query("SELECT 1").await;
    assert!(next.is_err(), "the killed session takes no more statements");
    assert!(gone(&env, "secretary", "-").await, "backend left behind");
    bystander
        .simple_query("SELECT count(*) FROM companies")
        .await
        .expect("the bystander is unaffected");
    assert!(session_of(&console, "secretary").await.is_none());

    // A session running a long statement is ended too, and so is its statement upstream.
    // (`admin` is also pgvakt's service user: its backend is told apart by application_name.)
    let (busy, conn) = env
        .pg_config("admin", "admin", "crm")
        .application_name("busy")
        .connect(env.tls())
        .await
        .expect("admin");
    tokio::spawn(conn);
    let sleeping = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(60)").await });
    let mut busy_row = None;
    for _ in 0..100 {
        busy_row = rows(&console, "SHOW SESSIONS").await.into_iter().find(|r| {
            r.iter()
                .any(|(c, v)| c == "application_name" && v.as_deref() == Some("busy"))
                && field(r, "state") == "active"
        });
        if busy_row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy_row = busy_row.expect("the sleeping session is listed as active");
    assert_eq!(field(&busy_row, "role"), "admin");
    console
        .simple_query(&format!("KILL {}", field(&busy_row, "id")))
        .await
        .expect("KILL");
    let outcome = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the sleeping statement ends at once")
        .expect("task");
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(gone(&env, "-", "busy").await, "pg_sleep left running");

    // A session that is not open.
    let e = console.simple_query("KILL 999999").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42704", "{e}");
    assert!(
        common::message(&e).contains("no open session 999999"),
        "{e}"
    );

    // Each command is recorded with the user, the command and the outcome.
    let audit = dir.path().join("audit");
    let records = admin_records(&audit, |r| r["statement"]["normalized"] == "KILL 999999").await;
    let kill = records
        .iter()
        .find(|r| r["statement"]["normalized"] == format!("KILL {victim_id}").as_str())
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(kill["user"], "ops");
    assert_eq!(kill["outcome"], "ok");
    assert_eq!(kill["database"], "pgvakt");
    assert!(
        kill["message"]
            .as_str()
            .is_some_and(|m| m.contains("of user secretary")),
        "{kill}"
    );
    let missing = records
        .iter()
        .find(|r| r["statement"]["normalized"] == "KILL 999999")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(missing["outcome"], "refused");
    assert_eq!(missing["sqlstate"], "42704");
    assert!(records
        .iter()
        .any(|r| r["statement"]["normalized"] == "SHOW SESSIONS" && r["outcome"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_refused_to_users_it_does_not_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with_console(dir.path()).await;
    // secretary has a valid password, but is not a console user.
    let Err(e) = env.connect("secretary", "secretary", "pgvakt").await else {
        panic!("a user admin.users does not name got the console");
    };
    assert_eq!(common::sqlstate(&e), "28000", "{e}");
    assert!(
        common::message(&e).contains("user \"secretary\" may not use the admin console"),
        "{e}"
    );
    // A console user's password is checked by PostgreSQL: a wrong one is refused and counts.
    let Err(e) = env.connect("ops", "wrong", "pgvakt").await else {
        panic!("a wrong password got the console");
    };
    assert_eq!(common::sqlstate(&e), "28P01", "{e}");
    // Nothing was asked of PostgreSQL about a database called pgvakt.
    let log = std::fs::read_to_string(env.cluster.log_file()).expect("server log");
    assert!(!log.contains("\"pgvakt\" does not exist"), "{log}");
    let m = env.metrics().await;
    assert_eq!(
        common::metric(
            &m,
            "pgvakt_client_connections_refused_total{reason=\"console_not_allowed\"}"
        ),
        1.0
    );

    let audit = dir.path().join("audit");
    let records = admin_records(&audit, |r| r["user"] == "secretary").await;
    let refused = records
        .iter()
        .find(|r| r["user"] == "secretary")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["sqlstate"], "28000");
    assert_eq!(refused["database"], "pgvakt");
    let mut failed = None;
    for _ in 0..50 {
        failed = common::trail::all_records(&audit)
            .into_iter()
            .find(|r| r["event"] == "login_failed" && r["user"] == "ops");
        if failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = failed.expect("the failed console login is recorded");
    assert_eq!(failed["database"], "pgvakt", "{failed}");
}

/// psql's output of one console command (unaligned, tuples only).
async fn psql(env: &Env, command: &str) -> (bool, String) {
    let dsn = format!(
        "host=127.0.0.1 port={} user=ops password=ops-secret dbname=pgvakt sslmode=require",
        env.proxy_port()
    );
    let command = command.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args(["-X", "-At", &dsn, "-c", &command])
            .output()
            .expect("run psql")
    })
    .await
    .expect("psql task");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_grants_lockouts_help_and_reload_from_psql_and_a_driver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with_console(dir.path()).await;
    let console = env
        .connect("ops", "ops-secret", "pgvakt")
        .await
        .expect("console");
    let policy = dir.path().join("crm.yaml");

    let shown = rows(&console, "show policy").await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let version = field(&shown[0], "version").to_owned();
    assert!(field(&shown[0], "files").contains("crm.yaml"), "{shown:?}");
    assert!(field(&shown[0], "roles").contains("secretary"), "{shown:?}");
    assert_eq!(field(&shown[0], "default_role"), "nobody");
    let grants = rows(&console, "SHOW GRANTS").await;
    assert!(
        grants
            .iter()
            .any(|g| field(g, "grantee") == "user:secretary" && field(g, "role") == "secretary"),
        "{grants:?}"
    );
    let help = rows(&console, "SHOW HELP").await;
    assert!(help
        .iter()
        .any(|h| field(h, "command") == "KILL <session id>"));

    // Two wrong passwords lock `sales`: the console lists the lock.
    for _ in 0..2 {
        assert!(env.connect("sales", "guess", "crm").await.is_err());
    }
    let locks = rows(&console, "SHOW LOCKOUTS").await;
    let lock = locks
        .iter()
        .find(|l| field(l, "key") == "sales")
        .unwrap_or_else(|| panic!("{locks:?}"));
    assert_eq!(field(lock, "scope"), "user");
    assert_eq!(field(lock, "failures"), "2");

    // Every command from psql too, printed as rows.
    for (command, expect) in [
        ("SHOW SESSIONS", "|ops|(console)|pgvakt|"),
        ("SHOW POLICY", version.as_str()),
        ("SHOW GRANTS", "user:secretary|secretary|"),
        ("SHOW LOCKOUTS", "user|sales|2|"),
        ("SHOW HELP", "RELOAD|"),
        ("RELOAD", "policy|version "),
    ] {
        let (ok, out) = psql(&env, command).await;
        assert!(ok && out.contains(expect), "{command}: {out}");
    }
    let (ok, out) = psql(&env, "SELECT * FROM contacts").await;
    assert!(
        !ok && out.contains("does not understand \"SELECT\""),
        "{out}"
    );

    // A broken policy on RELOAD: the command says so and the old policy stays in force.
    let marketing = env
        .connect("marketing", "marketing", "crm")
        .await
        .expect("marketing");
    std::fs::write(&policy, "roles: [this is not a policy\n").expect("break the policy");
    let e = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "F0000", "{e}");
    assert!(
        common::message(&e).contains(&format!("policy {version} stays in force")),
        "{e}"
    );
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
    assert!(detail.contains("crm.yaml"), "{detail}");
    assert_eq!(
        field(&rows(&console, "SHOW POLICY").await[0], "version"),
        version
    );
    let e = marketing
        .simple_query("SELECT bank_account FROM contacts")
        .await
        .unwrap_err();
    assert_eq!(
        common::sqlstate(&e),
        "42501",
        "the old policy still refuses: {e}"
    );

    // Not a console command, or not the simple query protocol: a clear error, and the
    // console goes on.
    let e = console.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42601", "{e}");
    let e = console.query("SHOW SESSIONS", &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "0A000", "{e}");
    assert!(!rows(&console, "SHOW SESSIONS").await.is_empty());

    let audit = dir.path().join("audit");
    admin_records(&audit, |r| r["sqlstate"] == "F0000").await;
    let records = admin_records(&audit, |r| r["sqlstate"] == "42601").await;
    let reloads: Vec<&Value> = records
        .iter()
        .filter(|r| r["statement"]["normalized"] == "RELOAD")
        .collect();
    assert!(
        reloads.iter().any(|r| r["outcome"] == "ok")
            && reloads
                .iter()
                .any(|r| r["outcome"] == "refused" && r["sqlstate"] == "F0000"),
        "{reloads:#?}"
    );
    for command in ["SHOW POLICY", "SHOW GRANTS", "SHOW LOCKOUTS", "SHOW HELP"] {
        assert!(
            records
                .iter()
                .any(|r| r["statement"]["normalized"] == command
                    && r["user"] == "ops"
                    && r["outcome"] == "ok"),
            "{command}: {records:#?}"
        );
    }
    let unknown = records
        .iter()
        .find(|r| r["sqlstate"] == "42601")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(unknown["outcome"], "refused");
}
