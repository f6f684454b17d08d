//! The suite is one binary: a file in `tests/` that `suite.rs` does not declare would never be
//! compiled or run, so its absence is an error here rather than a silent gap.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn every_test_file_is_a_module_of_the_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let suite = std::fs::read_to_string(dir.join("suite.rs")).expect("tests/suite.rs");
    let declared: BTreeSet<String> = suite
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("tests/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".rs")?.to_string();
            (stem != "suite").then_some(stem)
        })
        .collect();
    let missing: Vec<_> = files.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "files in tests/ that tests/suite.rs does not declare (add `mod NAME;`): {missing:?}"
    );
    let stale: Vec<_> = declared
        .iter()
        .filter(|m| *m != "common" && !files.contains(*m))
        .collect();
    assert!(
        stale.is_empty(),
        "tests/suite.rs declares missing files: {stale:?}"
    );
}
