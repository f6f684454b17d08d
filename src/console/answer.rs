//! What each console command does and answers: tables of the proxy's state, ending a session,
//! reloading the policy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::command::{Command, HELP};
use super::table::Table;
use super::Console;
use crate::policy::expiry;
use crate::policy::grants::unix_seconds;
use crate::protocol::PgError;
use crate::proxy::Proxy;
use crate::registry::{Ended, Kind};

/// How long `KILL` waits for the session to be gone before it answers.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// A command's result: what the client gets, and the outcome for the audit record.
pub enum Answer {
    /// Rows, with the command tag.
    Rows(Table, &'static str),
    /// No rows: the command tag, and what was done (for the audit record).
    Done(&'static str, String),
    Error(PgError),
}

impl Answer {
    /// A short account of the outcome for the audit record (no row contents).
    pub fn summary(&self) -> String {
        match self {
            Answer::Rows(t, _) => format!("{} rows", t.rows.len()),
            Answer::Done(_, note) => note.clone(),
            Answer::Error(e) => e.message.clone(),
        }
    }
}

pub async fn run(command: &Command, console: &Console, proxy: &Arc<Proxy>) -> Answer {
    match command {
        Command::ShowSessions => Answer::Rows(sessions(proxy), "SHOW"),
        Command::ShowPolicy => Answer::Rows(policy(proxy), "SHOW"),
        Command::ShowGrants => Answer::Rows(grants(proxy), "SHOW"),
        Command::ShowLockouts => Answer::Rows(lockouts(proxy).await, "SHOW"),
        Command::ShowHelp => {
            let mut t = Table::new(&["command", "description"]);
            for (c, d) in HELP {
                t.push(vec![Some((*c).into()), Some((*d).into())]);
            }
            Answer::Rows(t, "SHOW")
        }
        Command::Kill(id) => kill(*id, console, proxy).await,
        Command::Reload => reload(proxy).await,
    }
}

fn time(t: SystemTime) -> String {
    expiry::rfc3339(unix_seconds(t))
}

fn sessions(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "id",
        "user",
        "role",
        "database",
        "client",
        "application_name",
        "tls",
        "state",
        "statements",
        "since",
    ]);
    for s in proxy.sessions.list() {
        let role = match &s.kind {
            Kind::Relay { groups } => proxy.enforcer.role_of(&s.user, groups),
            Kind::Console => Some("(console)".into()),
        };
        t.push(vec![
            Some(s.id.to_string()),
            Some(s.user.clone()),
            role,
            Some(s.database.clone()),
            Some(s.client.to_string()),
            s.application_name.clone(),
            s.tls_version.clone(),
            Some(s.state().as_str().into()),
            Some(s.statements().to_string()),
            Some(time(s.since)),
        ]);
    }
    t
}

fn policy(proxy: &Proxy) -> Table {
    let mut t = Table::new(&["version", "files", "loaded_at", "roles", "default_role"]);
    if let Some((set, loaded)) = proxy.enforcer.policy_in_force() {
        t.push(vec![
            Some(set.version.clone()),
            Some(set.files.join(", ")),
            Some(time(loaded)),
            Some(set.roles.keys().cloned().collect::<Vec<_>>().join(", ")),
            Some(set.default_role.name.clone()),
        ]);
    }
    t
}

fn grants(proxy: &Proxy) -> Table {
    let now = unix_seconds(SystemTime::now());
    let mut t = Table::new(&[
        "grantee",
        "role",
        "valid_from",
        "valid_until",
        "state",
        "reason",
    ]);
    for g in proxy.enforcer.grants() {
        t.push(vec![
            Some(expiry::grantee(&g.grantee)),
            Some(g.role.clone()),
            g.valid_from.map(expiry::rfc3339),
            g.valid_until.map(expiry::rfc3339),
            Some(expiry::state(&g, now, expiry::SOON)),
            g.reason.clone(),
        ]);
    }
    t
}

async fn lockouts(proxy: &Proxy) -> Table {
    let (locks, shared) = proxy.lockout.locks().await;
    let source = if shared { "shared" } else { "this replica" };
    let mut t = Table::new(&["scope", "key", "failures", "remaining_s", "source"]);
    for l in locks {
        t.push(vec![
            Some(l.scope.as_str().into()),
            Some(l.key),
            Some(l.failures.to_string()),
            Some(l.remaining.as_secs().max(1).to_string()),
            Some(source.into()),
        ]);
    }
    t
}

async fn kill(id: u64, console: &Console, proxy: &Proxy) -> Answer {
    if id == console.id {
        return Answer::Error(PgError::error(
            "55000",
            "pgvakt: KILL of your own console session: disconnect instead",
        ));
    }
    let why = Ended {
        by: console.user.clone(),
        from_session: console.id,
    };
    let Some(live) = proxy.sessions.end(id, why) else {
        return Answer::Error(
            PgError::error("42704", format!("pgvakt: no open session {id}"))
                .with_hint("SHOW SESSIONS lists the open sessions."),
        );
    };
    // A statement PostgreSQL is running would go on after the connection closes (until it
    // next talks to the client): interrupt it.
    if let Some(target) = &live.upstream {
        if let Err(e) = proxy
            .upstream
            .cancel(target.upstream_pid, &target.upstream_secret)
            .await
        {
            tracing::warn!(error = %e, session.id = id, "cancel of the ended session's statement failed");
        }
    }
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while proxy.sessions.get(id).is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if proxy.sessions.get(id).is_some() {
        return Answer::Error(PgError::error(
            "57014",
            format!(
                "pgvakt: session {id} was told to end but had not ended after {} s",
                KILL_WAIT.as_secs()
            ),
        ));
    }
    tracing::info!(session.id = id, user = %live.user, by = %console.user, "session ended from the admin console");
    Answer::Done(
        "KILL",
        format!(
            "ended session {id} of user {} from {}",
            live.user, live.client
        ),
    )
}

async fn reload(proxy: &Arc<Proxy>) -> Answer {
    let p = proxy.clone();
    // Reading and compiling policy files and certificates blocks: off the runtime's workers.
    let done = tokio::task::spawn_blocking(move || {
        let tls = p.reload_tls();
        let policy = p.enforcer.reload_policy();
        // As on SIGHUP: DDL made directly upstream is seen now.
        p.enforcer.refresh_catalog();
        (policy, tls)
    })
    .await;
    let Ok((policy, tls)) = done else {
        return Answer::Error(PgError::error("XX000", "pgvakt: the reload did not finish"));
    };
    let tls_text = match &tls {
        Ok(()) => "TLS certificate reloaded".to_owned(),
        Err(e) => format!("TLS certificate not reloaded, the previous one stays: {e}"),
    };
    match policy {
        Some(Err(errors)) => {
            let old = proxy
                .enforcer
                .policy_version()
                .unwrap_or_else(|| "-".into());
            Answer::Error(
                PgError::error(
                    "F0000",
                    format!("pgvakt: policy reload failed; policy {old} stays in force"),
                )
                .with_detail(format!("{errors}\n{tls_text}")),
            )
        }
        _ if tls.is_err() => Answer::Error(PgError::error("F0000", format!("pgvakt: {tls_text}"))),
        Some(Ok(version)) => {
            let mut t = Table::new(&["reloaded", "outcome"]);
            t.push(vec![
                Some("policy".into()),
                Some(format!("version {version}")),
            ]);
            t.push(vec![Some("tls".into()), Some(tls_text)]);
            Answer::Rows(t, "RELOAD")
        }
        None => {
            let mut t = Table::new(&["reloaded", "outcome"]);
            t.push(vec![
                Some("policy".into()),
                Some("no policy configured".into()),
            ]);
            t.push(vec![Some("tls".into()), Some(tls_text)]);
            Answer::Rows(t, "RELOAD")
        }
    }
}
