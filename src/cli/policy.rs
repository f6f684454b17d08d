//! `pgvakt policy`: check, explain, test and snapshot.

use std::path::PathBuf;

use clap::Subcommand;

use pgvakt::policy_cli::{self, SchemaSource};

#[derive(Subcommand)]
pub enum PolicyCommand {
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
    /// Every grant: grantee, role, valid_from, valid_until, state and reason.
    Grants {
        /// Policy files or directories.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// Only grants that end within this span (`14d`, `12h`, `2w`) or have ended.
        #[arg(long)]
        expiring: Option<String>,
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
pub struct SchemaArgs {
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

pub async fn run(command: PolicyCommand) -> Result<i32, String> {
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
        PolicyCommand::Grants { policy, expiring } => grants(&policy, expiring.as_deref()),
        PolicyCommand::Snapshot { upstream, out } => {
            policy_cli::snapshot_command(&upstream, out.as_deref()).await
        }
    }
}

/// `policy grants`: the table; exit status 0.
fn grants(policy: &[PathBuf], expiring: Option<&str>) -> Result<i32, String> {
    let set = pgvakt::policy::load(policy).map_err(|e| e.to_string())?;
    let now = pgvakt::audit::search::now_unix();
    let within = match expiring {
        None => None,
        Some(s) if s.ends_with(['s', 'm', 'h', 'd', 'w']) => {
            let at = pgvakt::audit::search::parse_time(s, false, now)
                .map_err(|e| format!("--expiring: {e}"))?;
            Some(now - at)
        }
        Some(s) => {
            return Err(format!(
                "--expiring: '{s}' is not a span such as 14d, 12h or 2w"
            ))
        }
    };
    print!(
        "{}",
        pgvakt::policy::expiry::table(&set.grants, now, within)
    );
    Ok(0)
}
