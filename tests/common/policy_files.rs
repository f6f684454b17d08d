//! Policy files for tests: the demo policy (`policies/crm.yaml`) as it is or as a copy a test
//! may rewrite, and policies of a test's own written where pgvakt can load them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{Env, EnvOptions};

/// `policies/crm.yaml` in the repository.
pub fn demo_policy_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml")
}

/// The text of `policies/crm.yaml`.
pub fn demo_policy() -> String {
    std::fs::read_to_string(demo_policy_path()).expect("demo policy")
}

/// A copy of the demo policy that a test rewrites and reloads.
pub struct DemoPolicyCopy {
    /// The directory of the copy, kept while the test runs; tests put their other files here too.
    pub dir: TempDir,
    /// `crm.yaml` in `dir`.
    pub file: PathBuf,
    /// The demo policy's text, as the copy starts.
    pub original: String,
}

/// The demo policy copied to `crm.yaml` in a fresh directory.
pub fn demo_policy_copy() -> DemoPolicyCopy {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("crm.yaml");
    let original = demo_policy();
    std::fs::write(&file, &original).expect("policy");
    DemoPolicyCopy {
        dir,
        file,
        original,
    }
}

/// `text` written to `name` in a fresh directory (kept while the test runs); the file.
pub fn write_policy(name: &str, text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(name);
    std::fs::write(&file, text).expect("policy");
    (dir, file)
}

/// The inventory of small policies over the demo's tables: names (identity) and bank accounts
/// (financial) are the contacts' personal data, companies are not personal. Tests add their
/// `default_role`, roles and grants around it.
pub const NAMES_AND_ACCOUNTS: &str = "inventory:
  tables:
    companies: {personal: false}
    contacts:
      subject_key: id
      columns: {id: none, first_name: identity, bank_account: financial}
    activities: {subject_key: contact_id}
    consents: {subject_key: contact_id}
";

/// The demo with `contacts` people enforcing `text`, written to `name` in a fresh directory;
/// the directory is returned to be kept while the test runs.
pub async fn demo_with_policy(contacts: usize, name: &str, text: &str) -> (Env, TempDir) {
    let (dir, policy) = write_policy(name, text);
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(contacts),
        policy_file: Some(policy),
        ..Default::default()
    })
    .await;
    (env, dir)
}
