//! The `pgvakt` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use pgvakt::config::{Config, LogFormat};
use pgvakt::demo::run::{self as demo, DemoOptions};
use pgvakt::enforce::Enforcer;
use pgvakt::listener::Server;
use pgvakt::policy_cli::{self, SchemaSource};

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
    Run {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file without starting.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with the demo CRM and pgvakt in front of it.
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
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Store the policy's pseudonym key upstream, with the function the `pseudonym` mask calls
    /// (schema `pgvakt`); run as the database owner. Re-run to rotate the key.
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
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the HMAC chain; exits 1 at the first broken record, 2 if it cannot check.
    Verify(pgvakt::audit::verify::VerifyArgs),
    /// Find the records that concern a data subject, a user, a period or an outcome.
    Search(pgvakt::audit::search::SearchArgs),
    /// Create the audit table (audit.sink: postgres) with INSERT-only rights for pgvakt.
    InstallTable(pgvakt::audit::table_read::InstallTableArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files or directories; exits 1 when there are errors.
    Check {
        #[arg(default_value = "policies")]
        paths: Vec<PathBuf>,
        /// Also check the inventory against this live database (libpq connection string).
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Show what the proxy does with a statement for a role: decision, columns, rules, SQL.
    Explain {
        /// Policy files or directories.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// Policy role to explain for.
        #[arg(long)]
        role: Option<String>,
        /// Login user (its role is resolved like at login; groups need --upstream).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        schema: SchemaArgs,
        /// search_path as a comma-separated list.
        #[arg(long)]
        search_path: Option<String>,
        sql: String,
    },
    /// Run policy test cases (YAML) and print `N passed, M failed`; exits 1 on failures.
    Test {
        files: Vec<PathBuf>,
        /// Policy files (default: what each test file names).
        #[arg(long)]
        policy: Vec<PathBuf>,
        #[command(flatten)]
        schema: SchemaArgs,
    },
    /// Save the live schema as a snapshot for offline `explain` and `test`.
    Snapshot {
        #[arg(long)]
        upstream: String,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct SchemaArgs {
    /// Schema snapshot written by `pgvakt policy snapshot`.
    #[arg(long, conflicts_with = "upstream")]
    schema: Option<PathBuf>,
    /// Live database (libpq connection string) to read the schema from.
    #[arg(long)]
    upstream: Option<String>,
}

impl SchemaArgs {
    fn source(self) -> Option<SchemaSource> {
        match (self.schema, self.upstream) {
            (Some(p), _) => Some(SchemaSource::Snapshot(p)),
            (None, Some(d)) => Some(SchemaSource::Upstream(d)),
            (None, None) => None,
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logging(&cfg.log.level, cfg.log.format);
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(run(cfg))
        }
        Command::CheckConfig { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Demo {
            listen,
            metrics_listen,
            contacts,
            dir,
        } => {
            init_logging("info", LogFormat::Text);
            let opts = DemoOptions {
                listen,
                metrics_listen,
                contacts,
                dir,
                policy: None,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(run_demo(opts))
        }
        Command::Install {
            upstream,
            policy,
            ca_file,
        } => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let report =
                rt.block_on(pgvakt::install::run(&upstream, &policy, ca_file.as_deref()))?;
            print!("{report}");
            Ok(())
        }
        Command::Audit { command } => std::process::exit(match command {
            AuditCommand::Verify(args) => pgvakt::audit::verify::run(&args),
            AuditCommand::Search(args) => pgvakt::audit::search::run(&args),
            AuditCommand::InstallTable(args) => pgvakt::audit::table_read::install_table(&args),
        }),
        Command::Policy { command } => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let code = rt.block_on(policy_command(command));
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
    }
}

async fn policy_command(command: PolicyCommand) -> Result<i32, String> {
    match command {
        PolicyCommand::Check { paths, upstream } => {
            let mut report = pgvakt::policy::check::check(&paths);
            if let (Some(dsn), true) = (upstream, report.ok()) {
                let set = pgvakt::policy::load(&paths).map_err(|e| e.to_string())?;
                let live = policy_cli::check_upstream(&set, &dsn).await?;
                report.diagnostics.extend(live);
                report.diagnostics = report.diagnostics.sorted();
            }
            print!("{report}");
            Ok(if report.ok() { 0 } else { 1 })
        }
        PolicyCommand::Explain {
            policy,
            role,
            user,
            schema,
            search_path,
            sql,
        } => {
            let schema = schema
                .source()
                .ok_or("give --schema FILE or --upstream DSN")?;
            policy_cli::explain_command(policy_cli::ExplainArgs {
                policy,
                role,
                user,
                schema,
                search_path,
                sql,
            })
            .await
        }
        PolicyCommand::Test {
            files,
            policy,
            schema,
        } => policy_cli::test_command(&files, &policy, schema.source()).await,
        PolicyCommand::Snapshot { upstream, out } => {
            policy_cli::snapshot_command(&upstream, out.as_deref()).await
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let enforcer = Enforcer::load(&cfg).await?;
    let server = Server::start(cfg, enforcer).await?;
    wait_for_signals(&server).await?;
    server.shutdown().await;
    tracing::info!("pgvakt stopped");
    Ok(())
}

async fn run_demo(opts: DemoOptions) -> anyhow::Result<()> {
    let kept = opts.dir.is_some();
    let demo = demo::start(opts).await?;
    print!("{}", demo.instructions());
    println!("press Ctrl-C to stop");
    wait_for_signals(demo.server()).await?;
    let dir = demo.dir().to_path_buf();
    demo.shutdown().await?;
    if kept {
        println!("stopped; kept {}", dir.display());
    } else {
        println!("stopped; removed the demo's PostgreSQL and files");
    }
    Ok(())
}

/// SIGHUP reloads certificates (and policy); SIGTERM/SIGINT start a graceful shutdown.
async fn wait_for_signals(server: &Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // File reads and policy compilation block: off the runtime's workers (the
                // runtime is multi-threaded), so sessions on this worker are not stalled.
                tokio::task::block_in_place(|| {
                    match server.reload_tls() {
                        Ok(()) => tracing::info!("TLS certificates reloaded"),
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates"),
                    }
                    // Logged, counted and recorded by whoever listens to the enforcer's reloads.
                    let _ = server.proxy.enforcer.reload_policy();
                });
            }
        }
    }
}
