//! Red-team 11: attacks on reads forwarded while their intent record syncs
//! (`audit.durability: before_release`). A restricted role's read that runs alone goes to
//! PostgreSQL at once and its answers wait for the sync; when the sync fails the client gets the
//! 42501 audit error in their place and the session goes on. So (1) nothing a later request
//! reads may lean on that intent as if it were on disk, and (2) what PostgreSQL ran must have
//! left nothing behind that the client, told "error", does not know about.
//!
//! Each test breaks the audit sink (its directory becomes a file) right before the statement
//! under attack, so that statement's intent is accepted (the sink still looks healthy) and its
//! sync then fails; the directory is put back before the test ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use crate::common;
use crate::common::raw::{self, Msg, Raw};
use crate::common::{sqlstate, Env, EnvOptions};

/// The demo with the audit trail writing under `keys`.
async fn start(keys: &Path) -> Env {
    Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: common::audit_yaml(keys),
        ..Default::default()
    })
    .await
}

/// The demo (20 people) under the names-and-accounts policy with `roles` (YAML of roles and
/// grants) added, and an audit trail under `keys`; the policy's directory lives as long as the
/// first value.
async fn start_with_roles(keys: &Path, file: &str, roles: &str) -> (tempfile::TempDir, Env) {
    let (dir, policy) = common::policy_files::write_policy(
        file,
        &format!(
            "\ndefault_role: nobody\n{}{roles}",
            common::policy_files::NAMES_AND_ACCOUNTS
        ),
    );
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        policy_file: Some(policy),
        extra_yaml: common::audit_yaml(keys),
        ..Default::default()
    })
    .await;
    (dir, env)
}

/// The audit directory made unwritable: a regular file takes its place.
struct BrokenSink {
    dir: PathBuf,
    moved: PathBuf,
}

impl BrokenSink {
    /// Records already queued (logins, completions) are given time to land first, so the next
    /// intent is the first record the writer fails on.
    async fn break_now(keys: &Path) -> BrokenSink {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let dir = keys.join("audit");
        let moved = dir.with_extension("moved");
        std::fs::rename(&dir, &moved).expect("move audit dir");
        std::fs::write(&dir, "not a directory").expect("block the path");
        BrokenSink { dir, moved }
    }

    fn restore(self) {
        std::fs::remove_file(&self.dir).expect("unblock");
        std::fs::rename(&self.moved, &self.dir).expect("restore audit dir");
    }
}

/// Execute `portal` for at most `limit` rows.
fn execute_portal(portal: &str, limit: i32) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&limit.to_be_bytes());
    raw::msg(b'E', &b)
}

fn data_rows(m: &[Msg]) -> usize {
    m.iter().filter(|m| m.tag == b'D').count()
}

fn errors(m: &[Msg]) -> Vec<String> {
    m.iter()
        .filter(|m| m.tag == b'E')
        .map(|m| {
            format!(
                "{} {}",
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default()
            )
        })
        .collect()
}

/// "42501" when `r` is the audit trail's refusal; otherwise what it was.
fn audit_refusal<T>(r: &Result<T, tokio_postgres::Error>) -> String {
    match r {
        Err(e) if common::message(e).contains("audit trail cannot be written") => sqlstate(e),
        Err(e) => format!("{} {}", sqlstate(e), common::message(e)),
        Ok(_) => "answered".to_owned(),
    }
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    common::answers::text_rows(msgs)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

/// A cursor declared WITH HOLD outlives the implicit transaction of its first Execute. That
/// Execute ran alone, so it went upstream while its intent synced; the sync failed and its
/// answers were withheld, and the session went on. Its intent had already been noted as the
/// portal's intent for later parts, which then went upstream with no check at all: rows of
/// personal data reached the client while the audit trail could not be written, under an
/// intent that never reached the disk (after a kill -9 nothing records that read).
#[tokio::test]
async fn a_cursor_part_after_a_withheld_first_part_is_not_read_unrecorded() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    env.trust_user("secretary").await;
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "secretary", "crm").await;
    c.send(&raw::query(
        "DECLARE rt11 CURSOR WITH HOLD FOR SELECT first_name, email FROM contacts ORDER BY id",
    ))
    .await
    .expect("send");
    let m = c.until_ready().await;
    assert_eq!(errors(&m), Vec::<String>::new());

    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(&[execute_portal("rt11", 1), raw::sync()].concat())
        .await
        .expect("send");
    let m = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
        .await
        .expect("first part answered");
    let first_rows = data_rows(&m);
    let first_errors = errors(&m);
    // The next part, as a client that retries (or reads on) would ask for it.
    let mut second = Vec::new();
    if m.last().is_some_and(|z| z.tag == b'Z') {
        c.send(&[execute_portal("rt11", 5), raw::sync()].concat())
            .await
            .expect("send");
        second = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
            .await
            .expect("second part answered");
    }
    sink.restore();
    assert_eq!(first_rows, 0, "first part: {first_errors:?}");
    assert!(
        first_errors
            .iter()
            .any(|e| e.contains("audit trail cannot be written")),
        "the first part's answers were withheld: {first_errors:?}"
    );
    assert_eq!(
        data_rows(&second),
        0,
        "rows of personal data reached the client while the audit trail could not be written \
         (first part: {first_errors:?}; second part: {:?})",
        errors(&second)
    );
}

/// `pg_advisory_lock` and `set_config` are allowed in a restricted role's SELECT, which is a
/// read: it went upstream before its intent was on disk. When its answers were withheld the
/// client was told the statement failed, yet the session kept a lock other sessions wait on
/// and a DateStyle the client's driver was never told of (its ParameterStatus was withheld).
#[tokio::test]
async fn a_withheld_read_leaves_no_lock_or_setting_behind() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let style_before = first_value(&c.simple_query("SHOW DateStyle").await.expect("show"));
    // The shape runs for this role while the trail can be written.
    c.simple_query(
        "SELECT pg_advisory_lock(4712) AS locked, set_config('DateStyle', 'ISO, MDY', false) AS style, first_name FROM contacts WHERE id = 2",
    )
    .await
    .expect("allowed while the trail works");
    c.simple_query("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");

    let sink = BrokenSink::break_now(keys.path()).await;
    let r = c
        .simple_query(
            "SELECT pg_advisory_lock(4711) AS locked, set_config('DateStyle', 'SQL, DMY', false) AS style, first_name FROM contacts WHERE id = 2",
        )
        .await;
    let told = audit_refusal(&r);
    let style_after = if c.is_closed() {
        style_before.clone()
    } else {
        first_value(&c.simple_query("SHOW DateStyle").await.expect("show"))
    };
    // A session that ended releases its lock as its backend exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    let locks = loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4711 AND granted",
                &[],
            )
            .await
            .expect("locks")
            .get(0);
        if n == 0 || !c.is_closed() || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sink.restore();
    assert_eq!(told, "42501");
    assert_eq!(
        (locks, style_after),
        (0, style_before),
        "the client was told the read failed, but its advisory lock and setting stayed"
    );
}

/// A text that prepares a statement and reads personal data is a read; after its answers were
/// withheld the client, told the text failed, runs the PREPARE again and learns the name exists.
#[tokio::test]
async fn a_withheld_read_defines_no_name() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    // The shape runs for this role while the trail can be written.
    c.simple_query(
        "PREPARE rt11_probe AS SELECT 1 AS one; SELECT first_name FROM contacts WHERE id = 2",
    )
    .await
    .expect("allowed while the trail works");

    let sink = BrokenSink::break_now(keys.path()).await;
    let r = c
        .simple_query(
            "PREPARE rt11 AS SELECT 1 AS one; SELECT first_name FROM contacts WHERE id = 2",
        )
        .await;
    let told = audit_refusal(&r);
    // What a client that was told the text failed does next (PREPARE alone reads nothing, so
    // it runs whatever the sink's state).
    let again = if c.is_closed() {
        Ok(())
    } else {
        c.simple_query("PREPARE rt11 AS SELECT 1 AS one")
            .await
            .map(|_| ())
            .map_err(|e| format!("{} {}", sqlstate(&e), common::message(&e)))
    };
    sink.restore();
    assert_eq!(told, "42501");
    assert_eq!(again, Ok(()), "the withheld text's PREPARE ran after all");
}

/// A view the analysis does not inline (it reads no protected table) is run by PostgreSQL as
/// it is defined: here it calls a function that writes. The read went upstream before its
/// intent was on disk; its answers were withheld and the client told it failed, while the
/// function's write committed (and after a kill -9 no record names the statement that wrote).
#[tokio::test]
async fn a_withheld_read_through_a_view_writes_nothing() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute(
            "CREATE TABLE rt11_log (at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION rt11_bump() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
               AS $$ BEGIN INSERT INTO rt11_log DEFAULT VALUES; RETURN true; END $$;
             GRANT CREATE ON SCHEMA public TO admin;",
        )
        .await
        .expect("setup");
    // Made through pgvakt, which reloads its catalog after DDL it relays.
    let admin = env.connect("admin", "admin", "crm").await.expect("admin");
    admin
        .batch_execute(
            "CREATE VIEW rt11_tickets AS SELECT 1 AS one WHERE rt11_bump();
             GRANT SELECT ON rt11_tickets TO PUBLIC;",
        )
        .await
        .expect("view");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let sql = "SELECT c.first_name FROM contacts c, rt11_tickets t WHERE c.id = 2";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.simple_query(sql).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the view is never readable: {}",
                common::message(&e)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let count = || async {
        direct
            .query_one("SELECT count(*) FROM rt11_log", &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    let before = count().await;
    assert!(before >= 1, "the view's function runs when it is read");

    let sink = BrokenSink::break_now(keys.path()).await;
    let r = c.simple_query(sql).await;
    let told = audit_refusal(&r);
    let after = count().await;
    sink.restore();
    assert_eq!(told, "42501");
    assert_eq!(
        after, before,
        "the client was told the read failed, but the write it caused committed"
    );
}

/// Until a read of personal data through `c` works again after the sink was restored; a
/// session the attack ended is replaced.
async fn recovered(env: &Env, c: Option<Raw>) -> Raw {
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = match c {
        Some(c) => c,
        None => Raw::connect_db(env.proxy_port(), tls.clone(), "secretary", "crm").await,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.send(&raw::query("SELECT first_name FROM contacts WHERE id = 1"))
            .await
            .expect("send");
        let m = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
            .await
            .expect("answered");
        if errors(&m).is_empty() && data_rows(&m) == 1 {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "reads never resumed: {:?}",
            errors(&m)
        );
        if m.last().is_none_or(|z| z.tag != b'Z') {
            c = Raw::connect_db(env.proxy_port(), tls.clone(), "secretary", "crm").await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages up to the `n`th ReadyForQuery, or the end of the session.
async fn until_ready_n(c: &mut Raw, n: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
            .await
            .expect("answered");
        let ended = m.last().is_none_or(|z| z.tag != b'Z');
        out.extend(m);
        if ended {
            break;
        }
    }
    out
}

/// Whether the session is still there after `m` (its last message a ReadyForQuery).
fn alive(m: &[Msg]) -> bool {
    m.last().is_some_and(|z| z.tag == b'Z')
}

/// Shapes around a read that went upstream early, each sent as the first statement after the
/// sink broke: none may release a row, and a write in them must not run. (These held: the
/// attack found nothing.)
#[tokio::test]
async fn withheld_answers_release_nothing_in_batches_pipelines_and_mixed_texts() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    env.trust_user("secretary").await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let mut c = recovered(&env, None).await;
    let mut found = Vec::new();

    // A portal read in two parts in one batch: the second part was sent before the first
    // part's sync failed, so the session cannot go on.
    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(
        &[
            raw::parse(
                "",
                "SELECT first_name FROM contacts WHERE id <= 5 ORDER BY id",
            ),
            raw::bind("", 0),
            raw::describe(b'P', ""),
            execute_portal("", 2),
            execute_portal("", 2),
            raw::sync(),
        ]
        .concat(),
    )
    .await
    .expect("send");
    let m = until_ready_n(&mut c, 1).await;
    sink.restore();
    if data_rows(&m) > 0 || m.iter().any(|m| m.tag == b'C' || m.tag == b's') {
        found.push(format!(
            "portal in parts: {:?}",
            m.iter().map(|m| m.tag as char).collect::<String>()
        ));
    }
    let ended = !alive(&m);
    c = recovered(&env, (!ended).then_some(c)).await;

    // A read and a write in one simple Query: the write must not run before its record.
    let before: i64 = direct
        .query_one(
            "SELECT count(*) FROM activities WHERE subject = 'rt11'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(&raw::query(
        "SELECT first_name FROM contacts WHERE id = 3; INSERT INTO activities (kind, contact_id, subject, body) VALUES ('call', 3, 'rt11', 'x')",
    ))
    .await
    .expect("send");
    let m = until_ready_n(&mut c, 1).await;
    sink.restore();
    let after: i64 = direct
        .query_one(
            "SELECT count(*) FROM activities WHERE subject = 'rt11'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    if data_rows(&m) > 0 || after != before {
        found.push(format!(
            "read and write: {} rows, {} written",
            data_rows(&m),
            after - before
        ));
    }
    let ended = !alive(&m);
    c = recovered(&env, (!ended).then_some(c)).await;

    // Two reads pipelined: the second does not run alone and waits for its record.
    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(
        &[
            raw::query("SELECT first_name FROM contacts WHERE id = 4"),
            raw::query("SELECT email FROM contacts WHERE id = 5"),
        ]
        .concat(),
    )
    .await
    .expect("send");
    let m = until_ready_n(&mut c, 2).await;
    sink.restore();
    if data_rows(&m) > 0 {
        found.push(format!("pipelined reads: {} rows", data_rows(&m)));
    }
    let ended = !alive(&m);
    c = recovered(&env, (!ended).then_some(c)).await;

    // A read inside a transaction block waits for its record.
    c.send(&raw::query("BEGIN")).await.expect("send");
    let _ = until_ready_n(&mut c, 1).await;
    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(&raw::query("SELECT phone FROM contacts WHERE id = 6"))
        .await
        .expect("send");
    let m = until_ready_n(&mut c, 1).await;
    sink.restore();
    if data_rows(&m) > 0 {
        found.push(format!("read in a block: {} rows", data_rows(&m)));
    }
    if alive(&m) {
        c.send(&raw::query("ROLLBACK")).await.expect("send");
        let _ = until_ready_n(&mut c, 1).await;
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// The roles of the notification attack: `sales` reads names and may LISTEN.
const NOTIFY_POLICY: &str = "roles:
  nobody: {default: block}
  announcer:
    description: Reads names and may use LISTEN/NOTIFY.
    categories: {identity: allow}
    capabilities: [notify]
grants:
  - {user: sales, role: announcer}
";

/// While the answers of a withheld read are swallowed up to its ReadyForQuery, a
/// NotificationResponse PostgreSQL delivers then for another session's NOTIFY still reaches
/// the listening client (it was dropped with the answers). A withheld read sends none of its
/// own: pg_notify is volatile, and reads calling volatile functions wait for their record.
#[tokio::test]
async fn a_withheld_read_does_not_swallow_another_sessions_notification() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (_pdir, env) = start_with_roles(keys.path(), "notify.yaml", NOTIFY_POLICY).await;
    env.trust_user("sales").await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    let tls = common::client_tls(&env.certs.ca_cert);
    let mut c = Raw::connect_db(env.proxy_port(), tls, "sales", "crm").await;
    c.send(&raw::query("LISTEN rt11_events"))
        .await
        .expect("send");
    let m = until_ready_n(&mut c, 1).await;
    assert_eq!(errors(&m), Vec::<String>::new());

    let sink = BrokenSink::break_now(keys.path()).await;
    c.send(&raw::query(
        "SELECT pg_sleep(1) AS s, first_name FROM contacts WHERE id = 2",
    ))
    .await
    .expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    direct
        .batch_execute("NOTIFY rt11_events, 'from another session'")
        .await
        .expect("notify");
    let mut m = until_ready_n(&mut c, 1).await;
    let told = errors(&m);
    if alive(&m) {
        c.send(&raw::query("SELECT 1")).await.expect("send");
        m.extend(until_ready_n(&mut c, 1).await);
    }
    sink.restore();
    assert!(
        told.iter().any(|e| e.starts_with("42501")),
        "the read was withheld: {told:?}"
    );
    assert!(
        m.iter().any(|m| m.tag == b'A'),
        "the session went on, but the notification never reached the client: {:?}",
        m.iter().map(|m| m.tag as char).collect::<String>()
    );
}

/// Code PostgreSQL runs for a plain table the analysis does not see: a row-level security
/// policy that calls a function which writes (an access log, say) runs when a restricted role
/// reads the table. Such a read went upstream before its intent was on disk, its answers were
/// withheld and the client told it failed while the write committed; a table with row
/// security (pg_class.relrowsecurity, from the catalog) now makes the read wait for its record.
#[tokio::test]
async fn a_withheld_read_of_a_table_with_a_policy_function_writes_nothing() {
    let keys = tempfile::tempdir().expect("tempdir");
    let env = start(keys.path()).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute(
            "CREATE TABLE rt11_access (at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION rt11_seen() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
               AS $$ BEGIN INSERT INTO rt11_access DEFAULT VALUES; RETURN true; END $$;
             ALTER TABLE companies ENABLE ROW LEVEL SECURITY;
             CREATE POLICY rt11 ON companies USING (rt11_seen());",
        )
        .await
        .expect("setup");
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    let sql = "SELECT c.first_name, co.name FROM contacts c JOIN companies co ON co.id = c.company_id WHERE c.id = 2";
    c.simple_query(sql).await.expect("readable");
    let count = || async {
        direct
            .query_one("SELECT count(*) FROM rt11_access", &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    let before = count().await;
    assert!(
        before >= 1,
        "the policy's function runs when the table is read"
    );

    let sink = BrokenSink::break_now(keys.path()).await;
    let r = c.simple_query(sql).await;
    let told = audit_refusal(&r);
    let after = count().await;
    sink.restore();
    assert_eq!(told, "42501");
    assert_eq!(
        after, before,
        "the client was told the read failed, but the write it caused committed"
    );
}

/// A role that may create temporary objects, reading names.
const TEMP_POLICY: &str = "roles:
  nobody: {default: block}
  builder:
    description: Reads names and may make temporary tables.
    categories: {identity: allow}
    capabilities: [temp_objects]
grants:
  - {user: secretary, role: builder}
";

/// With `temp_objects`, `SELECT ... INTO TEMP` is a SELECT, so a read: it went upstream before
/// its intent was on disk and, its answers withheld, left behind a table holding the personal
/// data it copied, which the client was told was never made.
#[tokio::test]
async fn a_withheld_select_into_makes_no_table() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (_pdir, env) = start_with_roles(keys.path(), "temp.yaml", TEMP_POLICY).await;
    let c = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    // The shape runs for this role while the trail can be written.
    c.simple_query("SELECT first_name INTO TEMP rt11_probe FROM contacts WHERE id <= 3")
        .await
        .expect("allowed while the trail works");
    let tables = |name: &'static str| {
        let c = &c;
        async move {
            let sql = format!(
                "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = '{name}' AND relpersistence = 't'"
            );
            first_value(&c.simple_query(&sql).await.expect("catalog"))
        }
    };
    assert_eq!(tables("rt11_probe").await.as_deref(), Some("1"));

    let sink = BrokenSink::break_now(keys.path()).await;
    let r = c
        .simple_query("SELECT first_name INTO TEMP rt11_copy FROM contacts WHERE id <= 3")
        .await;
    let told = audit_refusal(&r);
    let made = if c.is_closed() {
        Some("0".to_owned())
    } else {
        tables("rt11_copy").await
    };
    sink.restore();
    assert_eq!(told, "42501");
    assert_eq!(
        made.as_deref(),
        Some("0"),
        "the client was told the SELECT INTO failed, but its table of personal data exists"
    );
}
