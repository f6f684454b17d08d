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

/// Certificates this close to their end are worth a warning (the alert fires at the same).
const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// Why the served certificate's validity deserves a look: expired, ending soon, or unreadable.
/// `run` still starts (renewal is a SIGHUP away), so this is a warning.
fn expiry_warning(
    not_after: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
) -> Option<String> {
    let Some(end) = not_after else {
        return Some("its notAfter could not be read".into());
    };
    let secs = end
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let at = crate::policy::expiry::rfc3339(secs);
    match end.duration_since(now) {
        Err(_) => Some(format!(
            "the certificate expired at {at}; clients that verify it fail"
        )),
        Ok(left) if left < EXPIRY_WARNING => Some(format!(
            "the certificate expires at {at}, in {} days",
            left.as_secs() / 86_400
        )),
        Ok(_) => None,
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
    match crate::tls::server_tls(&cfg.tls) {
        Ok(served) => {
            if let Some(w) = expiry_warning(served.not_after, std::time::SystemTime::now()) {
                out.warnings.push(format!(
                    "tls.cert_file {}: {w}",
                    cfg.tls.cert_file.display()
                ));
            }
        }
        Err(e) => out.problems.push(format!("tls: {e}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn certificates_near_or_past_their_end_are_warned_about() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(expiry_warning(Some(now + 30 * day), now), None);
        assert_eq!(
            expiry_warning(Some(now + 3 * day), now).as_deref(),
            Some("the certificate expires at 2027-01-18T08:00:00Z, in 3 days")
        );
        assert_eq!(
            expiry_warning(Some(now - day), now).as_deref(),
            Some("the certificate expired at 2027-01-14T08:00:00Z; clients that verify it fail")
        );
        assert!(expiry_warning(None, now).is_some());
    }
}
