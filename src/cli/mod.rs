//! The `pgvakt` command line: the commands and their options, and the dispatch to the library.
//! One file per group of subcommands: `policy.rs` (policy tools), `admin.rs` (lockouts), `serve.rs` (`run`, `demo`:
//! logging, runtime and signals). The only place that uses `anyhow`.

mod admin;
mod policy;
mod serve;
mod subject;

#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use pgvakt::config::Config;
#[cfg(feature = "demo")]
use pgvakt::demo::run::DemoOptions;

use policy::PolicyCommand;

#[derive(Parser)]
#[command(
    name = "pgvakt",
    version,
    about = "PostgreSQL proxy that enforces data-protection policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    #[command(after_help = "Examples:
  pgvakt run --config /etc/pgvakt/pgvakt.yaml
  RUST_LOG=debug pgvakt run --config pgvakt.yaml   # more detail than log.level")]
    Run {
        /// Configuration file (YAML), e.g. `--config /etc/pgvakt/pgvakt.yaml`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file and everything `run` reads with it (policy, certificates,
    /// keys, audit directory) without starting; exits 1 when `run` would not start.
    #[command(after_help = "Examples:
  pgvakt check-config --config /etc/pgvakt/pgvakt.yaml")]
    CheckConfig {
        /// Configuration file (YAML), e.g. `--config /etc/pgvakt/pgvakt.yaml`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with the demo CRM and pgvakt in front of it.
    #[cfg(feature = "demo")]
    #[command(after_help = "Examples:
  pgvakt demo
  pgvakt demo --dir /tmp/pgvakt-demo --contacts 1000 --listen 127.0.0.1:7432
  cp policies/crm.yaml /tmp/try.yaml && pgvakt demo --policy /tmp/try.yaml   # edit it while it runs")]
    Demo {
        /// Address clients connect to.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: SocketAddr,
        /// Address of the /metrics, /healthz and /readyz endpoints.
        #[arg(long, default_value = "127.0.0.1:9187")]
        metrics_listen: SocketAddr,
        /// Number of generated contacts.
        #[arg(long, default_value_t = pgvakt::demo::DEFAULT_CONTACTS)]
        contacts: usize,
        /// Directory for the cluster, certificates, configuration and audit log; kept at exit.
        /// Default: a temporary directory, removed at exit.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Policy file to enforce instead of `policies/crm.yaml`, e.g. a copy to experiment
        /// with: changes to it are reloaded while the demo runs.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Policy tools: check, explain, test, snapshot, grants, record.
    #[command(after_help = "Examples:
  pgvakt policy check policies/ --strict
  pgvakt policy explain --role secretary --snapshot policies/schema/crm-snapshot.json \"SELECT * FROM contacts\"
  pgvakt policy test policies/tests/
  pgvakt policy grants --expiring 14d
  pgvakt policy record --format html --out ropa.html")]
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Store the policy's pseudonym key upstream, with the function the `pseudonym` mask calls,
    /// and create the state replicas share (schema `pgvakt`); run as the database owner, into
    /// the service database. Re-run to rotate the key or bring the schema up to date.
    #[command(after_help = "Examples:
  pgvakt install --upstream \"host=db.internal dbname=crm user=crm_owner\" --policy /etc/pgvakt/policies \\
      --service-user pgvakt --ca-file /etc/pgvakt/db-ca.pem
  PGVAKT_PSEUDONYM_KEY=... pgvakt install --upstream \"host=db dbname=crm user=crm_owner sslmode=verify-full\"")]
    Install {
        /// Database to install into (libpq connection string), e.g. "host=db dbname=crm user=owner".
        #[arg(long)]
        upstream: String,
        /// Policy files or directories whose `pseudonym:` section names the key.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// Connect with TLS, verifying the server against these CA certificates (PEM).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// pgvakt's service user (`upstream.service_user`), which gets the shared state
        /// (lockout counts) as its own. Default: the user install connects as.
        #[arg(long)]
        service_user: Option<String>,
    },
    /// Operator commands on the state replicas share (lockouts, read-limit blocks).
    #[command(after_help = "Examples:
  pgvakt admin lockouts --config /etc/pgvakt/pgvakt.yaml
  pgvakt admin unlock --config /etc/pgvakt/pgvakt.yaml alice
  pgvakt admin reset-limits --config /etc/pgvakt/pgvakt.yaml alice")]
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Data-subject rights from the inventory (run by the DPO).
    #[command(after_help = "Examples:
  pgvakt subject export 42 --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" --out subject-42.zip
  pgvakt subject erase 42 --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" --dry-run")]
    Subject {
        #[command(subcommand)]
        command: subject::SubjectCommand,
    },
    /// Retention periods from the inventory (scheduled by a timer or CronJob).
    #[command(after_help = "Examples:
  pgvakt retention run --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" --dry-run")]
    Retention {
        #[command(subcommand)]
        command: subject::RetentionCommand,
    },
    /// Audit trail tools: verify the chain, search records, the login history.
    #[command(after_help = "Examples:
  pgvakt audit verify --key-file chain.key /var/log/pgvakt/audit
  pgvakt audit search --subject 42 --since 7d --key-file subject.key /var/log/pgvakt/audit
  pgvakt audit logins --failed --since 1h /var/log/pgvakt/audit")]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the HMAC chain; exits 1 at the first broken record, 2 if it cannot check.
    #[command(after_help = "Examples:
  pgvakt audit verify --key-file /etc/pgvakt/audit-chain.key /var/log/pgvakt/audit
  pgvakt audit verify --from-db \"host=audit-db dbname=audit user=dpo\" --db-ca-file ca.pem --key-file chain.key")]
    Verify(pgvakt::audit::verify::VerifyArgs),
    /// Find the records that concern a data subject, a user, a period or an outcome.
    #[command(after_help = "Examples:
  pgvakt audit search --subject 42 --since 7d --key-file subject.key /var/log/pgvakt/audit
  pgvakt audit search --user secretary --outcome refused --since 1h /var/log/pgvakt/audit
  pgvakt audit search --column contacts.bank_account --format json /var/log/pgvakt/audit")]
    Search(pgvakt::audit::search::SearchArgs),
    /// The login history: time, user, client, TLS, outcome, reason.
    #[command(after_help = "Examples:
  pgvakt audit logins --user alice --since 7d /var/log/pgvakt/audit
  pgvakt audit logins --failed --since 1h /var/log/pgvakt/audit")]
    Logins(pgvakt::audit::logins::LoginsArgs),
    /// Create the audit table (audit.sink: postgres) with INSERT-only rights for pgvakt.
    #[command(after_help = "Examples:
  pgvakt audit install-table --from-db \"host=audit-db dbname=audit user=audit_owner\" \\
      --writer pgvakt_audit_writer --reader dpo --db-ca-file ca.pem")]
    InstallTable(pgvakt::audit::table_read::InstallTableArgs),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            serve::init_logging(&cfg.log.level, cfg.log.format);
            runtime()?.block_on(serve::run(cfg))
        }
        Command::CheckConfig { config } => check_config(&config),
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            metrics_listen,
            contacts,
            dir,
            policy,
        } => {
            serve::init_logging("info", pgvakt::config::LogFormat::Text);
            let opts = DemoOptions {
                listen,
                metrics_listen,
                contacts,
                dir,
                policy,
            };
            runtime()?.block_on(serve::run_demo(opts))
        }
        Command::Install {
            upstream,
            policy,
            ca_file,
            service_user,
        } => {
            let rt = runtime()?;
            let report = rt.block_on(pgvakt::install::run(
                &upstream,
                &policy,
                ca_file.as_deref(),
                service_user.as_deref(),
            ))?;
            print!("{report}");
            Ok(())
        }
        Command::Admin { command } => exit_after(|| admin::run(command)),
        Command::Subject { command } => exit_after(|| subject::run(command)),
        Command::Retention { command } => exit_after(|| subject::retention(command)),
        Command::Audit { command } => std::process::exit(match command {
            AuditCommand::Verify(args) => pgvakt::audit::verify::run(&args),
            AuditCommand::Search(args) => pgvakt::audit::search::run(&args),
            AuditCommand::Logins(args) => pgvakt::audit::logins::run(&args),
            AuditCommand::InstallTable(args) => pgvakt::audit::table_read::install_table(&args),
        }),
        Command::Policy { command } => policy_command(command),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the runtime")
}

/// Runs a command whose result is an exit status. The runtime is dropped before
/// `process::exit`, which runs no destructors, so the command's tasks are dropped first.
fn exit_after<F: std::future::Future<Output = i32>>(
    command: impl FnOnce() -> F,
) -> anyhow::Result<()> {
    let rt = runtime()?;
    let code = rt.block_on(command());
    drop(rt);
    std::process::exit(code)
}

/// `pgvakt policy`: exit status 2 with the error when a tool could not do its work, so scripts
/// tell that apart from a check that ran and found problems (its own status).
fn policy_command(command: PolicyCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    let code = rt.block_on(policy::run(command));
    drop(rt);
    match code {
        Ok(0) => Ok(()),
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("pgvakt: {e}");
            std::process::exit(2)
        }
    }
}

/// `pgvakt check-config`: every warning and problem is printed before the verdict, and the
/// exit status is 1 when `run` would not start, so a deployment script can stop there.
fn check_config(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let report = pgvakt::preflight::check(&cfg);
    for w in &report.warnings {
        println!("warning: {w}");
    }
    for p in &report.problems {
        println!("error: {p}");
    }
    if !report.ok() {
        println!(
            "{}: {} problem(s); `pgvakt run` would not start",
            config.display(),
            report.problems.len()
        );
        std::process::exit(1);
    }
    match &report.policy_version {
        Some(v) => println!("{}: ok (policy {v})", config.display()),
        None => println!(
            "{}: ok (no policy: every statement passes through)",
            config.display()
        ),
    }
    Ok(())
}
