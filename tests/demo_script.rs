//! `scripts/demo.sh` passes its options to `pgvakt demo` in both forms the README shows: with
//! and without the `--` that cargo users type. Cargo is replaced by a stand-in that records
//! its arguments, so no release build runs.

use std::path::Path;

fn run_script(args: &[&str]) -> Vec<String> {
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("args");
    let cargo = bin.path().join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\n",
            record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(record)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn demo_script_passes_options_with_and_without_the_double_dash() {
    let want = [
        "run",
        "--release",
        "--locked",
        "--",
        "demo",
        "--dir",
        "/tmp/x",
    ];
    assert_eq!(run_script(&["--", "--dir", "/tmp/x"]), want);
    assert_eq!(run_script(&["--dir", "/tmp/x"]), want);
    // The demo command itself accepts what the script passes.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(["demo", "--dir", "/tmp/x", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
}
