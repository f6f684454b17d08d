//! The admin console, as PgBouncer's: a client that connects to the pseudo-database `pgvakt`
//! is answered by pgvakt itself, never by PostgreSQL, and only if `admin.users` names its login
//! user (whose password PostgreSQL checked, as for any login: `session` does that before it
//! hands the client over here).
//!
//! Commands come over the simple query protocol (psql, `simple_query` in drivers) and are
//! answered as ordinary results, so psql prints tables:
//! - [`command`]: the commands as typed (pure).
//! - [`answer`]: what each does: `SHOW SESSIONS | POLICY | GRANTS | LOCKOUTS | HELP`, `KILL`,
//!   `RELOAD`.
//! - [`table`]: results as RowDescription, DataRows and CommandComplete.
//!
//! Every command is recorded as an `admin` audit record with the user, the command and its
//! outcome.

pub mod answer;
pub mod command;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::audit::record::{EventType, Outcome, Record, Statement, StatementClass};
use crate::protocol::{message, FrameReader, PgError};
use crate::proxy::{Phase, Proxy};
use crate::registry::{wait_ended, Ended, Kind, Live, Opened, Registered};
use crate::stream::BoxStream;
use answer::Answer;
use command::Command;

pub use crate::config::CONSOLE_DATABASE as DATABASE;

/// Console commands are short; a larger message is not one.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A logged-in console client.
#[derive(Debug, Clone)]
pub struct Console {
    pub id: u64,
    pub user: String,
    pub client: SocketAddr,
    pub tls_version: Option<String>,
    pub application_name: Option<String>,
}

/// Serve console commands until the client leaves, is ended with `KILL`, or pgvakt stops.
/// `buf` holds what the client sent after its login. The client has had everything up to its
/// first ReadyForQuery, which is sent here.
pub async fn serve(
    stream: &mut BoxStream,
    mut buf: BytesMut,
    console: Console,
    proxy: &Arc<Proxy>,
) -> Result<(), ConsoleError> {
    let registered = register(&console, proxy);
    let live = registered.live.clone();
    let mut ended = live.ended();
    let mut phase = proxy.phase.subscribe();
    let since = Instant::now();
    write(proxy, base(&console, EventType::Login, Outcome::Ok)).await;
    tracing::info!(user = %console.user, "admin console login");
    let mut exchange = Exchange {
        console: &console,
        proxy,
        live: &live,
        reader: FrameReader::new(MAX_MESSAGE),
        discarding: false,
        out: BytesMut::new(),
    };
    table::ready(&mut exchange.out);
    let result = loop {
        let frames = exchange.answer(&mut buf).await;
        exchange.send(stream).await?;
        match frames {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        buf.reserve(4096);
        if !more_input(stream, &mut buf, &mut ended, &mut phase).await? {
            break Ok(());
        }
    };
    if let Err(e) = &result {
        let pg = PgError::protocol_violation(format!("pgvakt: {e}"));
        let _ = stream.write_all(&pg.to_bytes()).await;
    }
    let _ = stream.flush().await;
    let mut r = base(&console, EventType::Disconnect, Outcome::Ok);
    r.duration_ms = Some(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX));
    write(proxy, r).await;
    result
}

/// Lists the console client among the sessions, so `SHOW SESSIONS` shows it and `KILL` and
/// shutdown can end it like any other client.
fn register<'p>(console: &Console, proxy: &'p Proxy) -> Registered<'p> {
    proxy.sessions.register(Opened {
        id: console.id,
        user: console.user.clone(),
        database: DATABASE.into(),
        client: console.client,
        application_name: console.application_name.clone(),
        tls_version: console.tls_version.clone(),
        kind: Kind::Console,
        upstream: None,
    })
}

/// What the message loop carries from one read of the client to the next.
struct Exchange<'a> {
    console: &'a Console,
    proxy: &'a Arc<Proxy>,
    live: &'a Live,
    reader: FrameReader,
    /// After an extended-protocol message, the rest up to Sync is discarded (one error each).
    discarding: bool,
    /// Answers collected over a batch of messages, sent together.
    out: BytesMut,
}

impl Exchange<'_> {
    /// Answers every complete message in `buf`. Ok(true): more input is needed; Ok(false): the
    /// client said goodbye (Terminate).
    async fn answer(&mut self, buf: &mut BytesMut) -> Result<bool, ConsoleError> {
        loop {
            match self.reader.next(buf) {
                Ok(Some(frame)) => match frame.tag {
                    b'Q' => {
                        self.live.statement();
                        query(&frame, self.console, self.proxy, &mut self.out).await;
                        table::ready(&mut self.out);
                        self.live.set_state(crate::registry::State::Idle);
                    }
                    b'X' => return Ok(false),
                    b'S' => {
                        self.discarding = false;
                        table::ready(&mut self.out);
                    }
                    b'P' | b'B' | b'D' | b'E' | b'C' => {
                        if !self.discarding {
                            self.discarding = true;
                            simple_only().encode(&mut self.out);
                        }
                    }
                    b'F' => {
                        simple_only().encode(&mut self.out);
                        table::ready(&mut self.out);
                    }
                    // Flush, and COPY data outside COPY (PostgreSQL ignores those too).
                    b'H' | b'd' | b'c' | b'f' => {}
                    other => {
                        return Err(ConsoleError::Protocol(format!(
                            "unexpected message type {:?}",
                            other as char
                        )))
                    }
                },
                Ok(None) => return Ok(true),
                Err(e) => return Err(ConsoleError::Protocol(e.to_string())),
            }
        }
    }

    /// Sends the collected answers, also those before a protocol error, so the client sees
    /// every command it sent answered up to the point where the console gave up.
    async fn send(&mut self, stream: &mut BoxStream) -> Result<(), ConsoleError> {
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Waits for the client's next bytes; false when the session is over: the client closed the
/// connection, it was ended with `KILL`, or pgvakt is stopping (both told to the client first).
async fn more_input(
    stream: &mut BoxStream,
    buf: &mut BytesMut,
    ended: &mut watch::Receiver<Option<Ended>>,
    phase: &mut watch::Receiver<Phase>,
) -> Result<bool, ConsoleError> {
    tokio::select! {
        r = stream.read_buf(buf) => {
            if r? == 0 {
                return Ok(false);
            }
        }
        e = wait_ended(ended) => {
            let _ = stream.write_all(&e.error().to_bytes()).await;
            return Ok(false);
        }
        _ = async { phase.wait_for(|p| *p == Phase::Terminating).await.map(|_| ()) } => {
            let _ = stream.write_all(&PgError::admin_shutdown().to_bytes()).await;
            return Ok(false);
        }
    }
    Ok(true)
}

fn simple_only() -> PgError {
    PgError::error(
        "0A000",
        "pgvakt: the admin console speaks the simple query protocol only",
    )
    .with_hint("Use psql, or your driver's simple-query call (e.g. simple_query).")
}

/// Answer one Query message: each command in it, in order, until one fails.
async fn query(
    frame: &crate::protocol::Frame,
    console: &Console,
    proxy: &Arc<Proxy>,
    out: &mut BytesMut,
) {
    let text = match message::decode_query(frame) {
        Ok(t) => t,
        Err(e) => {
            e.to_pg_error().encode(out);
            return;
        }
    };
    let commands = command::split(text);
    if commands.is_empty() {
        table::empty_query(out);
        return;
    }
    for (text, c) in commands {
        let (answer, audited) = match c {
            Ok(c) => (answer::run(&c, console, proxy).await, Audited::Known(c)),
            Err(u) => (
                Answer::Error(
                    PgError::error("42601", format!("pgvakt: {}", u.message))
                        .with_hint("SHOW HELP lists the console's commands."),
                ),
                Audited::Unknown(text),
            ),
        };
        write(proxy, command_record(console, &audited, &answer)).await;
        match answer {
            Answer::Rows(t, tag) => t.encode(tag, out),
            Answer::Done(tag, _) => table::command_complete(tag, out),
            Answer::Error(e) => {
                e.encode(out);
                return;
            }
        }
    }
}

/// The command an audit record is about.
enum Audited<'a> {
    Known(Command),
    /// Not a console command: recorded normalised (constants removed), as statements are.
    Unknown(&'a str),
}

fn command_record(console: &Console, audited: &Audited<'_>, answer: &Answer) -> Record {
    let outcome = match answer {
        Answer::Error(_) => Outcome::Refused,
        _ => Outcome::Ok,
    };
    let mut r = base(console, EventType::Admin, outcome);
    if let Answer::Error(e) = answer {
        r.sqlstate = Some(e.code.to_owned());
    }
    let (command, text, message) = match audited {
        Audited::Known(c) => (c.tag().to_owned(), c.text(), answer.summary()),
        Audited::Unknown(t) => {
            let (_, normalized) = crate::analysis::normalize_text(t);
            let first = normalized.split_whitespace().next().unwrap_or_default();
            (
                first.to_ascii_uppercase(),
                normalized,
                "not a console command".into(),
            )
        }
    };
    let (fingerprint, _) = crate::analysis::normalize_text(&text);
    r.message = Some(format!("{text}: {message}"));
    r.statement = Some(Statement {
        class: StatementClass::Utility,
        command,
        fingerprint,
        normalized: text,
    });
    r
}

fn base(console: &Console, event: EventType, outcome: Outcome) -> Record {
    let mut r = Record::new(event, outcome);
    r.user = Some(console.user.clone());
    r.session_id = Some(console.id.to_string());
    r.client_addr = Some(console.client.to_string());
    r.application_name = console.application_name.clone();
    r.tls_version = console.tls_version.clone();
    r.database = Some(DATABASE.into());
    r
}

async fn write(proxy: &Proxy, r: Record) {
    if let Some(h) = &proxy.audit {
        if let Err(e) = h.record(r).await {
            tracing::error!(error = %e, "audit record of the admin console not written");
        }
    }
}
