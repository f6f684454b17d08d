//! `pgvakt check-config` reads everything `pgvakt run` reads before serving (the systemd unit
//! runs it as `ExecStartPre`): a configuration whose policy, certificate or audit keys would
//! stop `run` fails the check, with every problem at once.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::cli::text;

fn pgvakt(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(args)
        .env_remove("PGVAKT_AUDIT_CHAIN_KEY")
        .env_remove("PGVAKT_AUDIT_SUBJECT_KEY")
        .output()
        .expect("run pgvakt")
}

/// A complete configuration in `dir` whose policy is `policy`.
fn write_config(dir: &Path, policy: &Path) -> PathBuf {
    let certs = pgvakt::certs::generate(dir, "client").unwrap();
    std::fs::write(dir.join("chain.key"), "c".repeat(40)).unwrap();
    std::fs::write(dir.join("subject.key"), "s".repeat(40)).unwrap();
    let config = dir.join("pgvakt.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:6432\nupstream:\n  host: 127.0.0.1\ntls:\n  cert_file: {}\n  key_file: {}\n\
             policy:\n  paths: [{}]\naudit:\n  dir: audit\n  chain_key_file: chain.key\n  subject_key_file: subject.key\n",
            certs.server_cert.display(),
            certs.server_key.display(),
            policy.display()
        ),
    )
    .unwrap();
    config
}

fn crm_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml")
}

#[test]
fn a_complete_configuration_passes_and_names_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &crm_policy());
    let out = pgvakt(&["check-config", "--config", config.to_str().unwrap()]);
    let version = pgvakt::policy::load(&[crm_policy()]).unwrap().version;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("ok (policy {version})")),
        "{}",
        text(&out)
    );
}

#[test]
fn an_invalid_policy_fails_the_check_as_it_fails_run() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("crm.yaml");
    let original = std::fs::read_to_string(crm_policy()).unwrap();
    let broken = original.replacen("financial: {mask: redact}", "finacial: {mask: redact}", 1);
    assert_ne!(broken, original);
    std::fs::write(&policy, &broken).unwrap();
    let config = write_config(dir.path(), &policy);
    let check = pgvakt(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let line = broken
        .lines()
        .position(|l| l.contains("finacial:"))
        .unwrap()
        + 1;
    let out = text(&check);
    assert!(
        out.contains(&format!("{}:{line}:", policy.display())) && out.contains("finacial"),
        "the policy error with its line: {out}"
    );
    assert!(out.contains("would not start"), "{out}");
    // `run` refuses the same configuration.
    let run = pgvakt(&["run", "--config", config.to_str().unwrap()]);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("finacial"), "{}", text(&run));
}

#[test]
fn unreadable_files_and_short_keys_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &crm_policy());
    let yaml = std::fs::read_to_string(&config).unwrap();
    let field = |name: &str| {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    let (cert, key) = (field("cert_file: "), field("key_file: "));
    let check = || {
        let out = pgvakt(&["check-config", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        text(&out)
    };

    // Missing files and short keys: all reported at once.
    std::fs::rename(&key, dir.path().join("elsewhere.pem")).unwrap();
    std::fs::write(dir.path().join("chain.key"), "short").unwrap();
    let out = check();
    assert!(out.contains(&key), "the missing key file: {out}");
    assert!(out.contains("audit.chain_key_file"), "the short key: {out}");

    // Files that exist but that `run` could not use: a certificate that is not one, and an
    // audit directory that is a file.
    std::fs::rename(dir.path().join("elsewhere.pem"), &key).unwrap();
    std::fs::write(dir.path().join("chain.key"), "c".repeat(40)).unwrap();
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(dir.path().join("audit"), "a file where the directory goes").unwrap();
    let out = check();
    assert!(
        out.contains("error: tls:"),
        "the unusable certificate: {out}"
    );
    assert!(
        out.contains("audit.dir:") && out.contains("not a directory"),
        "{out}"
    );
    assert!(out.contains("2 problem(s)"), "{out}");
}

#[test]
fn a_certificate_near_its_end_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &crm_policy());
    // Replace the served certificate by one that ends in five days.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(5);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    let out = pgvakt(&["check-config", "--config", config.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "run would start: {t}");
    let warning = t
        .lines()
        .find(|l| l.starts_with("warning: tls.cert_file "))
        .unwrap_or_else(|| panic!("no certificate warning in\n{t}"));
    assert!(warning.contains("the certificate expires at "), "{warning}");
    assert!(warning.ends_with(", in 4 days"), "{warning}");
}
