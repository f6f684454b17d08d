//! The documented step that makes a person's audit pseudonyms unlinkable: rotate the subject
//! key (a new key in `audit.subject_key_file`, pgvakt restarted). The chain continues and
//! verifies; reads before the rotation are found only with the old key, reads after only with
//! the new one, and nothing the new key computes names the old records' person, so destroying
//! the old key leaves them without a way back to the id.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common;

use common::{Env, EnvOptions};

/// `pgvakt audit search --subject ID --format json` with `key`: the matched records.
fn search(dir: &Path, key: &Path, id: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["audit", "search", "--format", "json", "--subject", id])
        .arg("--key-file")
        .arg(key)
        .arg(dir)
        .output()
        .expect("audit search");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["match"] == "yes" || r["match"].is_null())
        .collect()
}

/// The pseudonyms of public.contacts the secretary's reads name, in chain order.
fn reads_of_contacts(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["event"] == "statement_read" && r["user"] == "secretary")
        .filter_map(|r| {
            r["subjects"].as_array()?.iter().find_map(|g| {
                (g["table"] == "public.contacts")
                    .then(|| g["refs"][0].as_str().map(str::to_owned))?
            })
        })
        .collect()
}

#[tokio::test]
async fn rotating_the_subject_key_unlinks_earlier_pseudonyms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = Env::start_with(EnvOptions {
        demo_contacts: Some(20),
        extra_yaml: common::audit_yaml(dir.path()),
        ..Default::default()
    })
    .await;
    let audit = dir.path().join("audit");
    let (chain_key, key) = (dir.path().join("chain.key"), dir.path().join("subject.key"));
    let read = "SELECT first_name FROM contacts WHERE id = 3";
    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary");
    secretary.query(read, &[]).await.expect("read before");
    drop(secretary);

    // The step: keep the old key aside (until the audit retention ends), write a new one,
    // restart pgvakt.
    let old_key = dir.path().join("subject.key.old");
    std::fs::copy(&key, &old_key).expect("keep the old key");
    std::fs::write(&key, "a new subject key, also long enough for this\n").expect("new key");
    let config = env.server().proxy.config.clone();
    env.server.take().expect("server").shutdown().await;
    let enforcer = pgvakt::enforce::Enforcer::load(&config)
        .await
        .expect("policy and catalog");
    env.server = Some(
        pgvakt::listener::Server::start(config, enforcer)
            .await
            .expect("restart"),
    );
    let secretary = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("secretary after the restart");
    secretary.query(read, &[]).await.expect("read after");
    drop(secretary);
    env.server.take().expect("server").shutdown().await;

    let (intact, report) = common::trail::verify(&chain_key, &audit);
    assert!(intact, "the chain continues across the rotation: {report}");
    let refs = reads_of_contacts(&common::trail::all_records(&audit));
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert_ne!(refs[0], refs[1], "one person, two unrelated pseudonyms");

    let with_old = reads_of_contacts(&search(&audit, &old_key, "3"));
    let with_new = reads_of_contacts(&search(&audit, &key, "3"));
    assert_eq!(
        with_old,
        vec![refs[0].clone()],
        "the old key finds the read before"
    );
    assert_eq!(
        with_new,
        vec![refs[1].clone()],
        "the new key finds only the read after"
    );
    // Without the old key, no id leads to the earlier pseudonym: the new key gives another
    // one for every contact of the demo.
    std::fs::remove_file(&old_key).expect("destroy the old key");
    for id in 1..=20 {
        let found = reads_of_contacts(&search(&audit, &key, &id.to_string()));
        assert!(
            !found.contains(&refs[0]),
            "contact {id} links to the old read"
        );
    }
}
