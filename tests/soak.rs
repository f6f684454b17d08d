//! Soak and fault suite: sessions of every demo role read personal data through the real
//! `pgvakt` binary while PostgreSQL restarts, pgvakt is stopped with SIGTERM and with SIGKILL
//! and started again, the audit disk fills up, the policy reloads and an administrator sends a
//! 900 KB statement. Afterwards `pgvakt audit verify` passes, every read a client received has
//! its record (its intent record when pgvakt was killed), no backend is left in PostgreSQL,
//! pgvakt never panicked and its memory stayed bounded.
//!
//! By default one round of every fault runs (about 30 s of load). `PGVAKT_SOAK_SECONDS=N`
//! repeats the rounds for N seconds; `scripts/soak.sh --minutes N` does that.

use crate::common;

mod load;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::faults::AuditDisk;
use common::process::PgvaktProcess;
use common::{trail, Env};
use load::{Load, Tally, ROLES};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::watch;

const CONTACTS: usize = 60;
const WORKERS_PER_ROLE: usize = 3;
/// Peak resident memory any pgvakt process may reach during the run.
const PEAK_RSS_LIMIT: u64 = 512 << 20;
/// Resident memory after the 900 KB statement has been answered.
const RSS_AFTER_LARGE_LIMIT: u64 = 256 << 20;
const SETTLE: Duration = Duration::from_millis(2000);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Term,
    Kill,
}

/// What is known about one pgvakt process once it has ended.
struct Ended {
    end: End,
    peak_rss: u64,
    /// `pgvakt_audit_records_dropped_total` just before it was stopped (unknown after SIGKILL).
    dropped: f64,
}

struct Run {
    env: Env,
    disk: AuditDisk,
    yaml: String,
    policy: PathBuf,
    proxy: PgvaktProcess,
    generation: u32,
    ended: HashMap<u32, Ended>,
    other_output: Vec<Arc<Mutex<Vec<String>>>>,
    target: watch::Sender<(u32, u16)>,
    load: Arc<Load>,
    reloads: u32,
    rss_after_large: Vec<u64>,
}

fn config(env: &Env, disk: &AuditDisk, policy: &Path) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream:\n  host: 127.0.0.1\n  port: {}\n  service_user: admin\n  service_password_file: {}\n  service_database: crm\ntls:\n  cert_file: {}\n  key_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  shutdown_grace_ms: 500\npolicy:\n  paths: [{}]\n  watch_interval_ms: 0\nlog:\n  level: info\n  format: json\n{}",
        env.cluster.port(),
        env.dir.path().join("service-password").display(),
        env.certs.server_cert.display(),
        env.certs.server_key.display(),
        policy.display(),
        common::audit_yaml(disk.root()),
    )
}

/// The demo policy, or the variant where marketing sees e-mail addresses masked.
fn policy_text(variant: bool) -> String {
    let text = common::policy_files::demo_policy();
    if !variant {
        return text;
    }
    let changed = text.replacen("contacts.email: allow", "contacts.email: {mask: redact}", 1);
    assert_ne!(changed, text, "the demo policy lets marketing read e-mail");
    changed
}

impl Run {
    async fn metric(&self, series: &str) -> f64 {
        let text = common::http_get(self.proxy.metrics_addr, "/metrics").await;
        common::metric(&text, series)
    }

    async fn reads_resume(&self, after: &str) {
        let (before, _) = self.load.totals();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.load.totals().0 < before + 10 {
            assert!(
                Instant::now() < deadline,
                "reads did not resume after {after}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn restart_proxy(&mut self, signal: Signal) {
        let (_, peak_rss) = self.proxy.memory().expect("pgvakt memory");
        let dropped = self.metric("pgvakt_audit_records_dropped_total").await;
        self.proxy.signal(signal);
        let exit = self.proxy.wait(Duration::from_secs(20)).await;
        let end = if signal == Signal::SIGKILL {
            End::Kill
        } else {
            assert_eq!(
                exit.code(),
                Some(0),
                "SIGTERM ends pgvakt cleanly: {exit:?}"
            );
            End::Term
        };
        self.ended.insert(
            self.generation,
            Ended {
                end,
                peak_rss,
                dropped,
            },
        );
        self.proxy = PgvaktProcess::start(self.env.dir.path(), &self.yaml).await;
        self.other_output.push(self.proxy.other_output.clone());
        self.generation += 1;
        let _ = self.target.send((self.generation, self.proxy.addr.port()));
        self.reads_resume(&format!("{signal:?}")).await;
    }

    async fn restart_upstream(&mut self) {
        let port = self.env.cluster.port();
        tokio::task::block_in_place(|| self.env.cluster.stop_server()).expect("stop PostgreSQL");
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| self.env.cluster.start_server()).expect("start PostgreSQL");
        assert_eq!(
            self.env.cluster.port(),
            port,
            "PostgreSQL came back on its port"
        );
        self.reads_resume("the upstream restart").await;
    }

    async fn fill_audit_disk(&mut self) {
        let (_, refused_before) = self.load.totals();
        let filled = self.disk.fill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.load.totals().1 < refused_before + 5 {
            assert!(
                Instant::now() < deadline,
                "reads go on with the audit disk full ({})",
                self.disk.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.disk.free(filled);
        self.reads_resume("the audit disk had room again").await;
    }

    async fn reload_policy(&mut self) {
        self.reloads += 1;
        let series = "pgvakt_policy_reloads_total{outcome=\"ok\"}";
        let before = self.metric(series).await;
        std::fs::write(&self.policy, policy_text(self.reloads % 2 == 1)).expect("policy");
        self.proxy.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.metric(series).await <= before {
            assert!(Instant::now() < deadline, "the policy did not reload");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// 900 KB of `SELECT 1;` as admin; pgvakt's resident memory once it is answered.
    async fn large_statement(&mut self) {
        let text = "SELECT 1;".repeat(100_000);
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.proxy.addr.port())
            .user("admin")
            .password("admin")
            .dbname("crm")
            .application_name("soak-large")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, conn) = cfg.connect(self.env.tls()).await.expect("admin connects");
        tokio::spawn(conn);
        client.simple_query(&text).await.expect("900 KB statement");
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, _) = self.proxy.memory().expect("pgvakt memory");
        self.rss_after_large.push(rss);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_under_faults_loses_no_record_and_leaks_nothing() {
    let seconds: u64 = std::env::var("PGVAKT_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Room for the trail of a long run; the fill takes whatever is left.
    let disk = AuditDisk::new(256 + seconds / 60 * 128);
    let mut env = Env::start_demo(CONTACTS).await;
    // Only the binary serves clients here.
    if let Some(server) = env.server.take() {
        server.shutdown().await;
    }
    let policy = env.dir.path().join("crm.yaml");
    std::fs::write(&policy, policy_text(false)).expect("policy");
    let yaml = config(&env, &disk, &policy);
    let proxy = PgvaktProcess::start(env.dir.path(), &yaml).await;
    let (target, rx) = watch::channel((0u32, proxy.addr.port()));
    let load = Arc::new(Load {
        target: rx,
        stop: Default::default(),
        tallies: Default::default(),
        stuck: Default::default(),
        tls: env.tls(),
        contacts: CONTACTS as i64,
    });
    let mut workers = Vec::new();
    for (role, cols) in ROLES {
        for n in 0..WORKERS_PER_ROLE {
            workers.push(tokio::spawn(load::worker(load.clone(), role, cols, n)));
        }
    }
    let mut run = Run {
        other_output: vec![proxy.other_output.clone()],
        env,
        disk,
        yaml,
        policy,
        proxy,
        generation: 0,
        ended: HashMap::new(),
        target,
        load,
        reloads: 0,
        rss_after_large: Vec::new(),
    };
    run.reads_resume("start-up").await;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < Duration::from_secs(seconds) {
        rounds += 1;
        run.reload_policy().await;
        tokio::time::sleep(SETTLE).await;
        run.restart_upstream().await;
        tokio::time::sleep(SETTLE).await;
        run.restart_proxy(Signal::SIGTERM).await;
        tokio::time::sleep(SETTLE).await;
        run.fill_audit_disk().await;
        tokio::time::sleep(SETTLE).await;
        run.large_statement().await;
        run.reload_policy().await;
        tokio::time::sleep(SETTLE).await;
        run.restart_proxy(Signal::SIGKILL).await;
        tokio::time::sleep(SETTLE).await;
    }
    run.load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("every worker ends")
            .expect("worker task");
    }
    let stuck = run.load.stuck.lock().expect("stuck").clone();
    assert!(stuck.is_empty(), "statements never answered: {stuck:?}");
    finish(run, rounds).await;
}

/// Backends still open for the soak's sessions, or for any session of the demo users.
async fn backends(env: &Env, all: bool) -> Vec<String> {
    let c = env.direct().await;
    let filter = if all {
        "usename IN ('admin', 'secretary', 'sales', 'marketing', 'dpo')"
    } else {
        "application_name LIKE 'soak-%'"
    };
    let sql = format!(
        "SELECT usename || ' ' || application_name FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND {filter}"
    );
    c.query(&sql, &[])
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn no_backends_left(env: &Env, all: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = backends(env, all).await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "backends left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn finish(mut run: Run, rounds: u32) {
    // Sessions that ended leave no backend, with pgvakt still running and after it stopped.
    no_backends_left(&run.env, false).await;
    let dropped = run.metric("pgvakt_audit_records_dropped_total").await;
    let (_, peak_rss) = run.proxy.memory().expect("pgvakt memory");
    run.proxy.signal(Signal::SIGTERM);
    let exit = run.proxy.wait(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    run.ended.insert(
        run.generation,
        Ended {
            end: End::Term,
            peak_rss,
            dropped,
        },
    );
    no_backends_left(&run.env, true).await;

    for out in &run.other_output {
        let out = out.lock().expect("output");
        let panics: Vec<&String> = out.iter().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "pgvakt panicked: {panics:?}");
    }
    for (g, e) in &run.ended {
        assert!(
            e.peak_rss < PEAK_RSS_LIMIT,
            "pgvakt {g} peaked at {} MiB",
            e.peak_rss >> 20
        );
    }
    for rss in &run.rss_after_large {
        assert!(
            *rss < RSS_AFTER_LARGE_LIMIT,
            "pgvakt kept {} MiB after a 900 KB statement",
            rss >> 20
        );
    }

    let dir = run.disk.audit_dir();
    let (ok, text) = trail::verify(&run.disk.root().join("chain.key"), &dir);
    assert!(ok, "audit verify: {text}");
    let (recs, torn) = trail::records(&dir);
    let tallies = run.load.tallies.lock().expect("tallies").clone();
    compare(&tallies, &recs, &run.ended);
    let peaks: Vec<u64> = run.ended.values().map(|e| e.peak_rss >> 20).collect();
    let mut by_role: HashMap<&str, (u64, u64)> = HashMap::new();
    for t in tallies.values() {
        let e = by_role.entry(t.role).or_default();
        e.0 += t.reads;
        e.1 += t.rows;
    }
    eprintln!(
        "soak: {rounds} round(s), {} connections, reads/rows by role {by_role:?}, {} records \
         ({torn} torn by SIGKILL), audit disk: {}, peak RSS MiB by process {peaks:?}, RSS MiB \
         after 900 KB statements {:?}",
        tallies.len(),
        recs.len(),
        run.disk.describe(),
        run.rss_after_large
            .iter()
            .map(|r| r >> 20)
            .collect::<Vec<_>>()
    );
}

/// Every read a connection received has its intent record. Unless its pgvakt was killed, it
/// also has its completion record with the rows the client got, save records pgvakt counted
/// as dropped.
fn compare(tallies: &HashMap<String, Tally>, recs: &[Value], ended: &HashMap<u32, Ended>) {
    #[derive(Default)]
    struct Seen {
        intents: u64,
        reads: u64,
        rows: u64,
    }
    let mut seen: HashMap<&str, Seen> = HashMap::new();
    for r in recs {
        let Some(app) = r["application_name"].as_str() else {
            continue;
        };
        let s = seen.entry(app).or_default();
        match r["event"].as_str() {
            Some("statement_intent") => s.intents += 1,
            Some("statement_read") if r["outcome"] == "ok" => {
                s.reads += 1;
                s.rows += r["rows"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    let allowed_drops: f64 = ended
        .values()
        .filter(|e| e.end == End::Term)
        .map(|e| e.dropped)
        .sum();
    let mut missing = 0u64;
    for (app, t) in tallies {
        let s = seen.remove(app.as_str()).unwrap_or_default();
        assert!(
            s.intents >= t.reads && s.intents <= t.attempts,
            "{app}: {} intent records for {} reads received of {} sent",
            s.intents,
            t.reads,
            t.attempts
        );
        let killed = ended.get(&t.generation).map(|e| e.end) == Some(End::Kill);
        if killed {
            continue;
        }
        assert!(
            s.reads <= t.reads,
            "{app}: {} completion records, {} reads received",
            s.reads,
            t.reads
        );
        if s.reads == t.reads {
            assert_eq!(s.rows, t.rows, "{app}: rows recorded and received");
        }
        missing += t.reads - s.reads;
    }
    assert!(
        missing as f64 <= allowed_drops,
        "{missing} received reads have no completion record; pgvakt counted {allowed_drops} \
         dropped records"
    );
}
