//! The `admin:` section of the configuration: who may open the admin console.

use serde::Deserialize;

/// The pseudo-database of the admin console.
pub const CONSOLE_DATABASE: &str = "pgvakt";

/// Who may use the admin console: clients that connect to the pseudo-database `pgvakt` are
/// answered by pgvakt itself (`SHOW SESSIONS`, `KILL`, `RELOAD`, ...), never by PostgreSQL.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Login users allowed on the console. Their passwords are checked by the upstream
    /// PostgreSQL, as for any login. Default none: the console refuses everyone.
    #[serde(default)]
    pub users: Vec<String>,
    /// Database the console users' logins are checked against upstream (they need CONNECT on
    /// it). Default: `upstream.service_database`.
    #[serde(default)]
    pub auth_database: Option<String>,
}

impl AdminConfig {
    pub fn allows(&self, user: &str) -> bool {
        self.users.iter().any(|u| u == user)
    }

    /// Semantic problems, each naming its field.
    pub fn problems(&self, out: &mut Vec<String>) {
        for (i, u) in self.users.iter().enumerate() {
            if u.is_empty() {
                out.push(format!("admin.users[{i}]: must not be empty"));
            }
        }
        if self.auth_database.as_deref() == Some(CONSOLE_DATABASE) {
            out.push(format!(
                "admin.auth_database: must be a PostgreSQL database, not {}",
                CONSOLE_DATABASE
            ));
        }
    }
}
