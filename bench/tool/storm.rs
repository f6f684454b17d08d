//! `storm`: query latency of a few established sessions while many sessions connect at once,
//! against direct PostgreSQL (TLS) and a pgvakt binary in front of the same throwaway cluster
//! (demo CRM and policy, TLS to clients), one after the other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgvakt::cluster::{Cluster, ClusterOptions, ServerTls};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub struct Storm {
    pub pgvakt: PathBuf,
    pub sessions: usize,
    pub probes: usize,
    pub contacts: usize,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn pgvakt_config(
    dir: &Path,
    cluster: &Cluster,
    certs: &pgvakt::certs::GeneratedCerts,
    port: u16,
) -> anyhow::Result<PathBuf> {
    let password = dir.join("service-password");
    std::fs::write(&password, "admin\n")?;
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: admin\n  service_password_file: {}\n  service_database: crm\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:{}\npolicy:\n  paths: [{}]\nlog:\n  level: warn\n",
        cluster.port(),
        password.display(),
        certs.server_cert.display(),
        certs.server_key.display(),
        free_port()?,
        policy.display(),
    );
    let path = dir.join("pgvakt.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Logins without a password: SCRAM's key derivation runs in the client, and thousands of
/// them at once would measure this tool (built without optimisations in a debug build) rather
/// than the servers. Both paths are measured the same way.
async fn trust_loopback(cluster: &Cluster) -> anyhow::Result<()> {
    let hba = cluster.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba)?;
    std::fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{old}"))?;
    cluster
        .connect("postgres")
        .await?
        .batch_execute("SELECT pg_reload_conf()")
        .await?;
    Ok(())
}

pub async fn storm(args: Storm) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let certs = pgvakt::certs::generate(dir.path(), "bench-client")?;
    let cluster = Cluster::start_async(ClusterOptions {
        max_connections: (args.sessions + args.probes + 50) as u32,
        tls: Some(ServerTls {
            cert_pem: certs.server_cert.clone(),
            key_pem: certs.server_key.clone(),
        }),
        settings: vec![("fsync".into(), "off".into())],
        ..Default::default()
    })
    .await?;
    pgvakt::demo::install(&cluster.superuser_config("postgres"), args.contacts).await?;
    trust_loopback(&cluster).await?;
    let port = free_port()?;
    let config = pgvakt_config(dir.path(), &cluster, &certs, port)?;
    let _proxy = tokio::process::Command::new(&args.pgvakt)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .spawn()?;
    wait_port(port).await?;
    let tls = MakeRustlsConnect::new(super::client_tls(&certs.ca_cert)?);
    let mut report = serde_json::Map::new();
    for (name, port) in [("direct", cluster.port()), ("pgvakt", port)] {
        let r = run(port, &tls, args.sessions, args.probes).await?;
        eprintln!("{name}: {r}");
        report.insert(name.into(), r);
        // Let the sessions' backends end before the next path.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    report.insert("sessions".into(), args.sessions.into());
    report.insert("probes".into(), args.probes.into());
    Ok(report.into())
}

fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
            .copied()
    };
    serde_json::json!({"n": ms.len(), "p50": at(0.50), "p99": at(0.99), "max": ms.last()})
}

/// Probes (established sessions) query in a loop; one second alone, then while `sessions`
/// clients connect at once, each running one query.
async fn run(
    port: u16,
    tls: &MakeRustlsConnect,
    sessions: usize,
    probes: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("secretary")
        .password("secretary")
        .dbname("crm")
        .connect_timeout(Duration::from_secs(60))
        .ssl_mode(SslMode::Require);
    let storming = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut probe_tasks = Vec::new();
    for _ in 0..probes {
        let (client, conn) = config.connect(tls.clone()).await?;
        tokio::spawn(conn);
        let (storming, stop) = (storming.clone(), stop.clone());
        probe_tasks.push(tokio::spawn(async move {
            let (mut calm, mut storm) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                client
                    .simple_query("SELECT first_name FROM contacts WHERE id = 1")
                    .await?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if storming.load(Ordering::Relaxed) {
                    storm.push(ms)
                } else {
                    calm.push(ms)
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok((calm, storm))
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    storming.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (config, tls) = (config.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (client, conn) = config.connect(tls).await?;
            let driver = tokio::spawn(conn);
            client.simple_query("SELECT 1").await?;
            anyhow::Ok((t.elapsed().as_secs_f64() * 1e3, client, driver))
        }));
    }
    let (mut connect_ms, mut open, mut failures) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        match t.await? {
            Ok((ms, client, driver)) => {
                connect_ms.push(ms);
                open.push((client, driver));
            }
            Err(e) => {
                failures += 1;
                eprintln!("session failed: {e:#}");
            }
        }
    }
    let storm_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut calm, mut storm) = (Vec::new(), Vec::new());
    for p in probe_tasks {
        let (c, s) = p.await??;
        calm.extend(c);
        storm.extend(s);
    }
    for (client, driver) in open {
        drop(client);
        let _ = driver.await;
    }
    Ok(serde_json::json!({
        "probe_ms_before": percentiles(calm),
        "probe_ms_during": percentiles(storm),
        "connect_and_first_query_ms": percentiles(connect_ms),
        "failures": failures,
        "storm_seconds": storm_seconds,
    }))
}
