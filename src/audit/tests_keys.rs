//! Key fingerprints: `verify` and `search` with the wrong key say so instead of reporting
//! tampering or finding nothing, and tampering stays tampering.

use super::chain::ChainKey;
use super::files::audit_files;
use super::keys::fingerprint;
use super::tests::{five_record_log, rewrite, verify_dir, CHAIN_KEY};
use super::verify::{verify_files, Break};

const OTHER_KEY: &[u8] = b"not the key these records carry!!";

#[tokio::test]
async fn every_record_names_both_key_fingerprints() {
    let (_tmp, _, lines) = five_record_log().await;
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["chain_key_id"], fingerprint(CHAIN_KEY).as_str());
        assert_eq!(
            v["subject_key_id"],
            fingerprint(super::tests::SUBJECT_KEY).as_str()
        );
        assert!(!l.contains(std::str::from_utf8(CHAIN_KEY).unwrap()));
    }
}

#[tokio::test]
async fn verify_with_another_key_says_so_and_exits_2() {
    let (tmp, _, _) = five_record_log().await;
    let files = audit_files(&tmp.path().join("log")).unwrap();
    let report = verify_files(files, &ChainKey::new(OTHER_KEY), false).unwrap();
    let p = report.problem.clone().expect("not verified");
    assert_eq!(
        p.kind,
        Break::WrongKey {
            found: fingerprint(CHAIN_KEY),
            given: fingerprint(OTHER_KEY)
        }
    );
    assert_eq!(report.exit_code(), 2);
    let text = report.to_string();
    assert!(
        text.contains("these records were not written with this key"),
        "{text}"
    );
    assert!(
        !text.contains("edited") && !text.contains("FAILED"),
        "{text}"
    );
}

#[tokio::test]
async fn an_edited_fingerprint_is_an_edit_not_a_wrong_key() {
    let (tmp, path, mut lines) = five_record_log().await;
    let fp = fingerprint(CHAIN_KEY);
    lines[0] = lines[0].replace(&fp, &fingerprint(OTHER_KEY));
    rewrite(&path, &lines);
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!((p.seq, p.kind), (1, Break::Edited), "{report}");
    assert_eq!(report.exit_code(), 1);
    // Further on, a record naming another key after verified ones is a break, not a wrong key.
    let (tmp, path, mut lines) = five_record_log().await;
    lines[3] = lines[3].replace(&fp, &fingerprint(OTHER_KEY));
    rewrite(&path, &lines);
    let report = verify_dir(&tmp.path().join("log"), false);
    let p = report.problem.clone().expect("broken");
    assert_eq!(p.seq, 4);
    assert!(matches!(p.kind, Break::KeyChanged { .. }), "{report}");
    assert_eq!(report.exit_code(), 1);
}

/// Records from before fingerprints: re-seal five records without `chain_key_id`.
fn legacy_lines(lines: &[String]) -> Vec<String> {
    let key = ChainKey::new(CHAIN_KEY);
    let mut prev = super::chain::GENESIS;
    lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let map = v.as_object_mut().unwrap();
            map.remove("mac");
            map.remove("chain_key_id");
            map.remove("subject_key_id");
            let seq = map["seq"].as_u64().unwrap();
            let body = super::record::canonical(&v);
            let mac = key.mac(seq, &prev, &body);
            prev = mac;
            if let Some(map) = v.as_object_mut() {
                map.insert("mac".into(), hex::encode(mac).into());
            }
            super::record::canonical(&v)
        })
        .collect()
}

#[tokio::test]
async fn records_without_fingerprints_still_verify_and_say_so() {
    let (tmp, path, lines) = five_record_log().await;
    rewrite(&path, &legacy_lines(&lines));
    let report = verify_dir(&tmp.path().join("log"), false);
    assert!(report.ok(), "{report}");
    assert!(
        report
            .to_string()
            .contains("5 records carry no key fingerprint (written before pgvakt recorded one)"),
        "{report}"
    );
    let files = audit_files(&tmp.path().join("log")).unwrap();
    let wrong = verify_files(files, &ChainKey::new(OTHER_KEY), false).unwrap();
    assert_eq!(wrong.exit_code(), 1);
    assert!(
        wrong
            .to_string()
            .contains("a wrong key looks the same as an edit"),
        "{wrong}"
    );
}
