//! The sessions that are open now, as the admin console lists and ends them: who, from where,
//! doing what since when, and a handle that ends the session.
//!
//! Each session registers when its login completes and is removed when it ends (the
//! [`Registered`] guard). The relay keeps the entry's state and statement count current with a
//! few atomic stores; ending a session is a signal the session itself acts on (it tells its
//! client why, closes its upstream connection), so nothing is torn down from outside.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::cancel::CancelTarget;

/// What kind of session an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A client relayed to PostgreSQL; its policy role follows from its user and the PostgreSQL
    /// groups looked up at login.
    Relay { groups: Vec<String> },
    /// An admin console session (database `pgvakt`).
    Console,
}

/// What a session is doing, as `SHOW SESSIONS` says it (PostgreSQL's `pg_stat_activity` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Active,
    IdleInTransaction,
    IdleInFailedTransaction,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Active => "active",
            State::IdleInTransaction => "idle in transaction",
            State::IdleInFailedTransaction => "idle in transaction (aborted)",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> State {
        match c {
            1 => State::Active,
            2 => State::IdleInTransaction,
            3 => State::IdleInFailedTransaction,
            _ => State::Idle,
        }
    }

    /// The state a ReadyForQuery transaction status stands for.
    pub fn from_ready(status: u8) -> State {
        match status {
            b'T' => State::IdleInTransaction,
            b'E' => State::IdleInFailedTransaction,
            _ => State::Idle,
        }
    }
}

/// Why a session was ended from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The console user who ended it.
    pub by: String,
    /// The console session that ended it.
    pub from_session: u64,
}

impl Ended {
    /// What the ended session's client is told (PostgreSQL's code for `pg_terminate_backend`).
    pub fn error(&self) -> crate::protocol::PgError {
        crate::protocol::PgError::fatal(
            "57P01",
            format!(
                "pgvakt: terminating connection: ended by admin console user {} (KILL)",
                self.by
            ),
        )
    }
}

/// One open session.
#[derive(Debug)]
pub struct Live {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub client: SocketAddr,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub since: SystemTime,
    pub kind: Kind,
    /// The upstream backend, for interrupting a statement it runs when the session is ended.
    pub upstream: Option<CancelTarget>,
    statements: AtomicU64,
    state: AtomicU8,
    end: watch::Sender<Option<Ended>>,
}

/// The facts a session registers with.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub client: SocketAddr,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub kind: Kind,
    pub upstream: Option<CancelTarget>,
}

impl Live {
    /// A statement (simple Query or Execute) arrived.
    pub fn statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.state.store(State::Active.code(), Ordering::Relaxed);
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state.code(), Ordering::Relaxed);
    }

    pub fn state(&self) -> State {
        State::from_code(self.state.load(Ordering::Relaxed))
    }

    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Resolves once the session is asked to end, with who asked.
    pub fn ended(&self) -> watch::Receiver<Option<Ended>> {
        self.end.subscribe()
    }
}

/// Waits until `rx` says the session is to end; pending forever if its sender is gone.
pub async fn wait_ended(rx: &mut watch::Receiver<Option<Ended>>) -> Ended {
    loop {
        if let Some(e) = rx.borrow_and_update().clone() {
            return e;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Every open session, by session id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: DashMap<u64, Arc<Live>>,
}

/// Removes its session from the registry when dropped (the session ended, however it ended).
pub struct Registered<'a> {
    registry: &'a Registry,
    pub live: Arc<Live>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.live.id);
    }
}

impl Registry {
    pub fn register(&self, o: Opened) -> Registered<'_> {
        let live = Arc::new(Live {
            id: o.id,
            user: o.user,
            database: o.database,
            client: o.client,
            application_name: o.application_name,
            tls_version: o.tls_version,
            since: SystemTime::now(),
            kind: o.kind,
            upstream: o.upstream,
            statements: AtomicU64::new(0),
            state: AtomicU8::new(State::Idle.code()),
            end: watch::channel(None).0,
        });
        self.sessions.insert(o.id, live.clone());
        Registered {
            registry: self,
            live,
        }
    }

    /// The open sessions, by id.
    pub fn list(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<Arc<Live>> = self.sessions.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|l| l.id);
        all
    }

    pub fn get(&self, id: u64) -> Option<Arc<Live>> {
        self.sessions.get(&id).map(|e| e.value().clone())
    }

    /// Ask session `id` to end; the session it was, if it is open.
    pub fn end(&self, id: u64, why: Ended) -> Option<Arc<Live>> {
        let live = self.get(id)?;
        live.end.send_replace(Some(why));
        Some(live)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(id: u64) -> Opened {
        Opened {
            id,
            user: format!("u{id}"),
            database: "crm".into(),
            client: "127.0.0.1:5000".parse().expect("addr"),
            application_name: None,
            tls_version: None,
            kind: Kind::Console,
            upstream: None,
        }
    }

    #[tokio::test]
    async fn sessions_are_listed_while_registered_and_told_when_ended() {
        let reg = Registry::default();
        let a = reg.register(opened(2));
        let b = reg.register(opened(1));
        assert_eq!(
            reg.list().iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        b.live.statement();
        assert_eq!(b.live.state(), State::Active);
        assert_eq!(b.live.statements(), 1);
        b.live.set_state(State::from_ready(b'T'));
        assert_eq!(b.live.state().as_str(), "idle in transaction");

        let mut rx = a.live.ended();
        let why = Ended {
            by: "ops".into(),
            from_session: 9,
        };
        assert!(reg.end(2, why.clone()).is_some());
        assert_eq!(wait_ended(&mut rx).await, why);
        assert!(reg.end(3, why).is_none(), "no such session");

        drop(a);
        assert_eq!(reg.list().len(), 1);
        drop(b);
        assert!(reg.is_empty());
    }
}
