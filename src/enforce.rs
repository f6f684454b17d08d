//! Per-statement policy decisions for a session: which role applies and what is forwarded.

use crate::protocol::PgError;

/// What the session does with one statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the client's bytes unchanged.
    Forward,
    /// Forward this text instead (the rendering of the analysed, rewritten statement).
    Rewrite(String),
    /// Do not forward; the client gets this error.
    Refuse(PgError),
}

/// Builds the per-session view of the policy.
#[derive(Default)]
pub struct Enforcer {}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("policy: {0}")]
    Policy(String),
    #[error("catalog: {0}")]
    Catalog(String),
}

impl Enforcer {
    pub fn new() -> Self {
        Enforcer {}
    }

    /// Load the policy files and the upstream catalog named by the configuration.
    pub async fn load(_config: &crate::config::Config) -> Result<Enforcer, EnforceError> {
        Ok(Enforcer::new())
    }

    /// The policy view for a new session of `user`.
    pub fn session(&self, user: &str, database: &str) -> SessionPolicy {
        SessionPolicy {
            user: user.to_owned(),
            database: database.to_owned(),
        }
    }
}

/// The policy as one session sees it, with the session state analysis depends on.
#[derive(Debug)]
pub struct SessionPolicy {
    pub user: String,
    pub database: String,
}

impl SessionPolicy {
    /// True when statements must be analysed before they are forwarded.
    pub fn is_restricted(&self) -> bool {
        false
    }

    /// Decide a simple-protocol query or a statement to prepare.
    pub fn check(&mut self, _sql: &str) -> Verdict {
        Verdict::Forward
    }

    /// Startup parameters that would change identity or parsing are refused for restricted roles.
    pub fn check_startup_options(&self, _params: &[(String, String)]) -> Result<(), PgError> {
        Ok(())
    }
}
