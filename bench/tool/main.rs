//! Helper for `bench/run`: the steps that are easier in Rust than in a shell script.
//!
//! - `certs`: a throwaway CA and a server certificate for PostgreSQL, PgBouncer and pgvakt.
//! - `load`: the demo CRM (schema, roles, generated contacts) into a running server.
//! - `idle`: opens many idle TLS sessions at once and reports the connect rate and how much the
//!   server process's resident memory grew per session. libpq clients (psql) would each cost a
//!   process, which would measure the client rather than the server.
//! - `storm`: query latency of established sessions while thousands of sessions connect at
//!   once, direct and through pgvakt (`storm.rs`).

mod storm;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Parser)]
#[command(
    name = "bench-tool",
    about = "Helpers for pgvakt's end-to-end benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write ca.pem, server.pem and server.key into DIR.
    Certs { dir: PathBuf },
    /// Install the demo CRM through a superuser connection string.
    Load {
        #[arg(long)]
        dsn: String,
        #[arg(long)]
        contacts: usize,
    },
    /// Open idle TLS sessions and print one JSON object with the results.
    Idle {
        /// libpq-style connection string (without sslmode; TLS is always required).
        #[arg(long)]
        dsn: String,
        /// CA that signed the server certificate.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        sessions: usize,
        /// Connection attempts in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Process whose VmRSS is read before and after (the proxy or the pooler).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Start a throwaway cluster and pgvakt, then connect SESSIONS sessions at once to each,
    /// measuring PROBES established sessions' query latency meanwhile; prints one JSON object.
    Storm {
        /// The pgvakt binary to measure.
        #[arg(long)]
        pgvakt: PathBuf,
        #[arg(long, default_value_t = 2000)]
        sessions: usize,
        #[arg(long, default_value_t = 4)]
        probes: usize,
        #[arg(long, default_value_t = 1000)]
        contacts: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Certs { dir } => {
            pgvakt::certs::generate(&dir, "bench-client")?;
        }
        Command::Load { dsn, contacts } => {
            let config = tokio_postgres::Config::from_str(&dsn)?;
            let summary = runtime.block_on(pgvakt::demo::install(&config, contacts))?;
            eprintln!(
                "loaded {} contacts in {:.1} s",
                summary.rows.contacts,
                summary.elapsed.as_secs_f64()
            );
        }
        Command::Idle {
            dsn,
            ca,
            sessions,
            concurrency,
            pid,
        } => {
            let report = runtime.block_on(idle(&dsn, &ca, sessions, concurrency, pid))?;
            println!("{report}");
        }
        Command::Storm {
            pgvakt,
            sessions,
            probes,
            contacts,
        } => {
            let report = runtime.block_on(storm::storm(storm::Storm {
                pgvakt,
                sessions,
                probes,
                contacts,
            }))?;
            println!("{report}");
        }
    }
    Ok(())
}

async fn idle(
    dsn: &str,
    ca: &PathBuf,
    sessions: usize,
    concurrency: usize,
    pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    let mut config = tokio_postgres::Config::from_str(dsn)?;
    config.ssl_mode(SslMode::Require);
    let tls = MakeRustlsConnect::new(client_tls(ca)?);
    let rss_before = pid.and_then(vm_rss_kib);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (config, tls, gate) = (config.clone(), tls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let (client, connection) = config.connect(tls).await?;
            let driver = tokio::spawn(connection);
            anyhow::Ok((client, driver))
        }));
    }
    let mut open = Vec::with_capacity(sessions);
    for task in tasks {
        open.push(task.await??);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // A query on the last session proves the sessions are usable, not half-open.
    if let Some((client, _)) = open.last() {
        client.simple_query("SELECT 1").await?;
    }
    // Let the server settle (buffers shrink, handshake state is dropped) before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = pid.and_then(vm_rss_kib);
    let per_session = match (rss_before, rss_after) {
        (Some(b), Some(a)) if sessions > 0 => Some((a as f64 - b as f64) / sessions as f64),
        _ => None,
    };
    for (client, driver) in open {
        drop(client);
        let _ = driver.await;
    }
    Ok(serde_json::json!({
        "sessions": sessions,
        "connect_seconds": connect_seconds,
        "connect_rate_per_s": sessions as f64 / connect_seconds,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_session_kib": per_session,
    }))
}

fn client_tls(ca: &PathBuf) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
