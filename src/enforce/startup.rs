//! Startup parameters of restricted roles: only those that cannot change how statement text is
//! read or whose identity a statement runs as are passed on.

use super::SessionPolicy;
use crate::protocol::PgError;

impl SessionPolicy {
    /// Startup parameters that would change identity or parsing are refused for restricted roles.
    pub fn check_startup_options(&self, params: &[(String, String)]) -> Result<(), PgError> {
        let Some((role, true)) = self.role() else {
            return Ok(());
        };
        for (k, v) in params {
            let lower = v.to_ascii_lowercase();
            let bad = match k.to_ascii_lowercase().as_str() {
                // PostgreSQL reads `-c name=value` and `--name=value`, with `-` in names read
                // as `_` and backslash escapes: compare the folded text.
                "options" => {
                    let folded: String = lower
                        .chars()
                        .filter(|c| *c != '\\')
                        .map(|c| if c == '-' { '_' } else { c })
                        .collect();
                    [
                        "role",
                        "session_authorization",
                        "search_path",
                        "standard_conforming_strings",
                        "client_encoding",
                        "escape_string_warning",
                        "backslash_quote",
                    ]
                    .iter()
                    .any(|s| folded.contains(s))
                }
                // PostgreSQL drops every non-alphanumeric character of an encoding name
                // (asyncpg sends 'utf-8' with the quotes), so the same spellings pass here.
                "client_encoding" => {
                    let name: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
                    !matches!(name.as_str(), "utf8" | "unicode")
                }
                "replication" => {
                    lower != "false" && lower != "0" && lower != "off" && lower != "no"
                }
                // Any other setting can be given at startup; only ones that cannot change how
                // a statement is read or whose identity it runs as are let through.
                other => !STARTUP_ALLOWED.contains(&other),
            };
            if bad {
                return Err(PgError::fatal(
                    "42501",
                    format!("pgvakt: startup parameter {k}={v} is not allowed for role {role}"),
                ));
            }
        }
        Ok(())
    }
}

/// Startup parameters restricted roles may send besides `options`, `client_encoding` and
/// `replication` (checked above): identity, naming and display settings drivers send.
const STARTUP_ALLOWED: &[&str] = &[
    "user",
    "database",
    "application_name",
    "fallback_application_name",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "geqo",
    "jit",
    "work_mem",
];
