//! A session's PostgreSQL groups, looked up again while it runs.
//!
//! PostgreSQL applies a revoked group membership to open sessions at once; pgvakt's role for
//! a session follows within [`GROUPS_FRESH`]: before a statement (Query, Parse, Bind,
//! Execute) whose session's groups are older than that, they are looked up again through the
//! service connection. When the lookup fails, the statement is refused: a role chosen from
//! groups that may have changed could be wider than the one they would choose now. Prepared
//! statements and portals then follow the new role as they follow a reload (`epoch`).

use std::time::{Duration, Instant};

use super::SessionPolicy;
use crate::protocol::PgError;

/// How long a session's looked-up groups decide its role.
pub const GROUPS_FRESH: Duration = Duration::from_secs(2);

impl SessionPolicy {
    /// Looks the session's groups up again when the policy grants roles to groups and they
    /// are older than [`GROUPS_FRESH`]; an error refuses the statement about to run.
    pub async fn refresh_groups(&mut self) -> Result<(), PgError> {
        let Some(inner) = self.inner.clone() else {
            return Ok(());
        };
        if !inner.store.current().has_group_grants() {
            return Ok(());
        }
        if self.groups_at.is_some_and(|at| at.elapsed() < GROUPS_FRESH) {
            return Ok(());
        }
        let lookup = match inner.service.as_ref() {
            Some(s) => s.member_groups(&self.user).await,
            None => Err("no upstream.service_user is configured".to_owned()),
        };
        match lookup {
            Ok(groups) => {
                self.groups = groups;
                self.groups_at = Some(Instant::now());
                Ok(())
            }
            Err(e) => Err(PgError::error(
                "42501",
                format!(
                    "pgvakt: the policy role of user {} depends on its PostgreSQL groups, which cannot be looked up now ({e}); the statement is refused",
                    self.user
                ),
            )
            .with_hint("Try again shortly; pgvakt reconnects to PostgreSQL on its own.")),
        }
    }
}
