//! The load of a soak run: sessions of every demo role reading personal columns of contacts in
//! a loop, reconnecting to whichever pgvakt is running, and counting what each connection
//! actually received.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Each demo role with personal columns it may read (allowed or masked for it).
pub const ROLES: [(&str, &str); 5] = [
    ("admin", "first_name, email, bank_account"),
    ("secretary", "first_name, email, bank_account"),
    ("sales", "last_name, phone, bank_account"),
    ("marketing", "first_name, email"),
    ("dpo", "first_name, date_of_birth, bank_account"),
];
pub const ROWS_PER_READ: i64 = 5;
/// A statement not answered within this is stuck; the run fails.
const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

/// What one connection (one application_name) sent and received.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub role: &'static str,
    /// The pgvakt process (generation) the connection went to.
    pub generation: u32,
    pub attempts: u64,
    /// Reads whose complete result the client received.
    pub reads: u64,
    /// Rows of personal columns in those results.
    pub rows: u64,
    /// Reads refused because the audit trail could not be written.
    pub audit_refusals: u64,
}

pub struct Load {
    /// (generation, port) of the pgvakt clients connect to.
    pub target: watch::Receiver<(u32, u16)>,
    pub stop: AtomicBool,
    pub tallies: Mutex<HashMap<String, Tally>>,
    pub stuck: Mutex<Vec<String>>,
    pub tls: MakeRustlsConnect,
    pub contacts: i64,
}

impl Load {
    fn update(&self, app: &str, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut t) = self.tallies.lock() {
            if let Some(t) = t.get_mut(app) {
                f(t)
            }
        }
    }

    /// Sums over every connection: (reads, audit refusals).
    pub fn totals(&self) -> (u64, u64) {
        let t = self.tallies.lock().expect("tallies");
        t.values()
            .fold((0, 0), |(r, a), t| (r + t.reads, a + t.audit_refusals))
    }
}

async fn connect(load: &Load, user: &str, port: u16, app: &str) -> Option<Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(user)
        .dbname("crm")
        .application_name(app)
        .connect_timeout(Duration::from_secs(5))
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let attempt = tokio::time::timeout(Duration::from_secs(10), cfg.connect(load.tls.clone()));
    let (client, conn) = attempt.await.ok()?.ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// One read of `ROWS_PER_READ` contacts; the number of rows received.
async fn read(client: &Client, cols: &str, lo: i64, simple: bool) -> Result<u64, String> {
    if simple {
        let hi = lo + ROWS_PER_READ - 1;
        let sql = format!("SELECT id, {cols} FROM contacts WHERE id BETWEEN {lo} AND {hi}");
        let msgs = client
            .simple_query(&sql)
            .await
            .map_err(|e| error_text(&e))?;
        Ok(msgs
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count() as u64)
    } else {
        let sql = format!("SELECT id, {cols} FROM contacts WHERE id BETWEEN $1 AND $1 + 4");
        let rows = client
            .query(&sql, &[&lo])
            .await
            .map_err(|e| error_text(&e))?;
        Ok(rows.len() as u64)
    }
}

fn error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!("{}: {}", d.code().code(), d.message()))
        .unwrap_or_else(|| e.to_string())
}

/// Read as `role` until the run stops, over new connections whenever one ends.
pub async fn worker(load: Arc<Load>, role: &'static str, cols: &'static str, n: usize) {
    let mut conn_no = 0u32;
    let mut i = n as i64;
    while !load.stop.load(Ordering::Relaxed) {
        let (generation, port) = *load.target.borrow();
        conn_no += 1;
        let app = format!("soak-{role}-{n}-g{generation}-c{conn_no}");
        let Some(client) = connect(&load, role, port, &app).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        load.tallies.lock().expect("tallies").insert(
            app.clone(),
            Tally {
                role,
                generation,
                ..Default::default()
            },
        );
        while !load.stop.load(Ordering::Relaxed) {
            i += 1;
            let lo = 1 + i % (load.contacts - ROWS_PER_READ);
            load.update(&app, |t| t.attempts += 1);
            let answer = tokio::time::timeout(STATEMENT_LIMIT, read(&client, cols, lo, i % 2 == 0));
            match answer.await {
                Err(_) => {
                    load.stuck.lock().expect("stuck").push(app);
                    return;
                }
                Ok(Ok(rows)) => load.update(&app, |t| {
                    t.reads += 1;
                    t.rows += rows;
                }),
                Ok(Err(e)) => {
                    if e.contains("audit trail") {
                        load.update(&app, |t| t.audit_refusals += 1);
                    }
                    if client.is_closed() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
