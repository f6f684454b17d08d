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
use std::time::Duration;

use crate::common;
use crate::common::raw::{self, Msg, Raw};
use crate::common::{Env, EnvOptions};

/// The demo with the audit trail writing under `keys`.
async fn start(keys: &Path) -> Env {
    Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: common::audit_yaml(keys),
        ..Default::default()
    })
    .await
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
