//! `pgvakt check-config`: everything `pgvakt run` reads before it serves, read the same way,
//! without binding ports or connecting anywhere: the configuration, the policy files, the TLS
//! certificate and key, CA files, the service password, the audit keys and the audit
//! directory. A systemd `ExecStartPre` that runs it then stops a start that would fail.

use std::path::Path;

use crate::audit::keys::Keys;
use crate::config::Config;

/// What the check found: problems stop `run`; warnings (e.g. from the policy) do not.
#[derive(Debug, Default)]
pub struct Preflight {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// Version of the policy that would be enforced, when it loads.
    pub policy_version: Option<String>,
}

impl Preflight {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn readable(field: &str, path: &Path, problems: &mut Vec<String>) {
    if let Err(e) = std::fs::read(path) {
        problems.push(format!("{field}: {}: {e}", path.display()));
    }
}

/// Checks a loaded (parsed and validated) configuration as `run` would use it.
pub fn check(cfg: &Config) -> Preflight {
    let mut out = Preflight::default();
    if !cfg.policy.paths.is_empty() {
        match crate::policy::load(&cfg.policy.paths) {
            Ok(set) => {
                out.policy_version = Some(set.version.clone());
                out.warnings
                    .extend(set.warnings.items.iter().map(|d| d.to_string()));
            }
            Err(e) => out
                .problems
                .extend(e.diagnostics.items.iter().map(|d| d.to_string())),
        }
    }
    if let Err(e) = crate::tls::server_config(&cfg.tls) {
        out.problems.push(format!("tls: {e}"));
    }
    if let Err(e) = crate::tls::upstream_config(&cfg.upstream) {
        out.problems.push(format!("upstream.tls: {e}"));
    }
    let up = &cfg.upstream;
    if up.service_user.is_some() {
        match &up.service_password_file {
            Some(p) => readable("upstream.service_password_file", p, &mut out.problems),
            None if std::env::var_os(&up.service_password_env).is_none() => {
                out.warnings.push(format!(
                    "upstream.service_password_env: {} is not set; the service user logs in without a password",
                    up.service_password_env
                ))
            }
            None => {}
        }
    }
    if let Some(audit) = &cfg.audit {
        if let Err(errors) = Keys::load(audit) {
            out.problems.extend(errors.iter().map(|e| e.to_string()));
        }
        if let Some(dir) = &audit.dir {
            audit_dir(dir, &mut out.problems);
        }
        if let Some(t) = &audit.postgres {
            if let Some(p) = &t.password_file {
                readable("audit.postgres.password_file", p, &mut out.problems);
            }
            if let Some(p) = &t.ca_file {
                readable("audit.postgres.ca_file", p, &mut out.problems);
            }
        }
    }
    out
}

/// The audit directory must be a directory pgvakt can write, or one it can create.
fn audit_dir(dir: &Path, problems: &mut Vec<String>) {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            problems.push(format!("audit.dir: {} is not a directory", dir.display()))
        }
        Ok(_) => {
            if let Err(e) = tempfile::tempfile_in(dir) {
                problems.push(format!("audit.dir: {} is not writable: {e}", dir.display()));
            }
        }
        Err(_) => {
            // `run` creates it with its parents: the nearest existing ancestor must be a
            // directory.
            let existing = dir.ancestors().skip(1).find(|a| a.exists());
            if existing.is_some_and(|a| !a.is_dir()) {
                problems.push(format!(
                    "audit.dir: {} cannot be created under a file",
                    dir.display()
                ));
            }
        }
    }
}
