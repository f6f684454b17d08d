//! The console's commands as typed: a Query text split at `;` into commands, each read
//! case-insensitively word by word. Pure; no IO.

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowSessions,
    ShowPolicy,
    ShowGrants,
    ShowLockouts,
    ShowHelp,
    Kill(u64),
    Reload,
}

/// A text the console does not understand, with what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub message: String,
}

/// Every command and what it does, for `SHOW HELP` and error hints.
pub const HELP: &[(&str, &str)] = &[
    (
        "SHOW SESSIONS",
        "open sessions: id, user, policy role, database, client, application_name, state, statements, since",
    ),
    (
        "SHOW POLICY",
        "the policy in force: version, files, loaded at, roles, default role",
    ),
    (
        "SHOW GRANTS",
        "grants of policy roles: grantee, role, valid_from, valid_until, state, reason",
    ),
    (
        "SHOW LOCKOUTS",
        "users and client addresses locked after failed logins",
    ),
    (
        "KILL <session id>",
        "end that session (its client is told why; its PostgreSQL backend ends too)",
    ),
    (
        "RELOAD",
        "as SIGHUP: reload the policy files, the TLS certificate and the catalog (an invalid policy keeps the old one)",
    ),
    ("SHOW HELP", "this list"),
];

impl Command {
    /// The command as written in the audit trail and the command tag.
    pub fn text(&self) -> String {
        match self {
            Command::ShowSessions => "SHOW SESSIONS".into(),
            Command::ShowPolicy => "SHOW POLICY".into(),
            Command::ShowGrants => "SHOW GRANTS".into(),
            Command::ShowLockouts => "SHOW LOCKOUTS".into(),
            Command::ShowHelp => "SHOW HELP".into(),
            Command::Kill(id) => format!("KILL {id}"),
            Command::Reload => "RELOAD".into(),
        }
    }

    /// The first word, as PostgreSQL's command tags go.
    pub fn tag(&self) -> &'static str {
        match self {
            Command::Kill(_) => "KILL",
            Command::Reload => "RELOAD",
            _ => "SHOW",
        }
    }
}

/// The commands of one Query text, in order; an empty text has none. Each entry is the
/// command's text and the command, or why it was not understood.
pub fn split(text: &str) -> Vec<(&str, Result<Command, Unknown>)> {
    text.split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| (c, parse(c)))
        .collect()
}

/// One command's text (no `;`).
pub fn parse(text: &str) -> Result<Command, Unknown> {
    let words: Vec<String> = text
        .split_ascii_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", "SESSIONS"] => Ok(Command::ShowSessions),
        ["SHOW", "POLICY"] => Ok(Command::ShowPolicy),
        ["SHOW", "GRANTS"] => Ok(Command::ShowGrants),
        ["SHOW", "LOCKOUTS"] => Ok(Command::ShowLockouts),
        ["SHOW", "HELP"] | ["HELP"] => Ok(Command::ShowHelp),
        ["RELOAD"] => Ok(Command::Reload),
        ["KILL", id] => id.parse::<u64>().map(Command::Kill).map_err(|_| Unknown {
            message: format!(
                "KILL takes a session id (a number from SHOW SESSIONS), not {:?}",
                shorten(id)
            ),
        }),
        ["KILL"] => Err(Unknown {
            message: "KILL takes a session id (a number from SHOW SESSIONS)".into(),
        }),
        ["SHOW", what] => Err(Unknown {
            message: format!("the console cannot show {:?}", shorten(what)),
        }),
        _ => Err(Unknown {
            message: format!(
                "the console does not understand {:?}",
                shorten(words.first().copied().unwrap_or_default())
            ),
        }),
    }
}

/// The start of a word typed by the user, so an error message stays short.
fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_case_insensitively_with_any_spacing() {
        assert_eq!(parse("show sessions"), Ok(Command::ShowSessions));
        assert_eq!(parse("  Show\n\tPolicy "), Ok(Command::ShowPolicy));
        assert_eq!(parse("kill 42"), Ok(Command::Kill(42)));
        assert_eq!(parse("RELOAD"), Ok(Command::Reload));
        assert_eq!(parse("help"), Ok(Command::ShowHelp));
        assert_eq!(
            split("SHOW GRANTS; show lockouts;"),
            vec![
                ("SHOW GRANTS", Ok(Command::ShowGrants)),
                ("show lockouts", Ok(Command::ShowLockouts))
            ]
        );
        assert!(split(" ; ;").is_empty());
    }

    #[test]
    fn anything_else_is_not_understood_and_says_what() {
        let msg = |t: &str| parse(t).unwrap_err().message;
        assert!(msg("SELECT 1").contains("\"SELECT\""));
        assert!(msg("KILL me").contains("session id"));
        assert!(msg("KILL -1").contains("session id"));
        assert!(msg("KILL").contains("session id"));
        assert!(msg("SHOW users").contains("\"USERS\""));
        assert!(msg("RELOAD now").contains("\"RELOAD\""));
        assert_eq!(
            parse(""),
            Err(Unknown {
                message: "the console does not understand \"\"".into()
            })
        );
    }

    #[test]
    fn every_command_is_in_the_help() {
        for c in [
            Command::ShowSessions,
            Command::ShowPolicy,
            Command::ShowGrants,
            Command::ShowLockouts,
            Command::ShowHelp,
            Command::Kill(1),
            Command::Reload,
        ] {
            let first = c.text();
            let head = first.split(' ').take(2).collect::<Vec<_>>().join(" ");
            assert!(
                HELP.iter()
                    .any(|(h, _)| h.starts_with(head.trim_end_matches(" 1"))),
                "{first}"
            );
        }
    }
}
