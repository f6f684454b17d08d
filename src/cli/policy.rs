//! `pgvakt policy`: check, explain, test and snapshot.

use std::path::PathBuf;

use clap::Subcommand;

use pgvakt::policy_cli::{self, SchemaSource};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The record of processing activities (GDPR Art. 30) generated from the policy.
    #[command(after_help = "Examples:
  pgvakt policy record --policy policies/ > ropa.md
  pgvakt policy record --format html --out ropa.html")]
    Record {
        /// Policy files or directories, e.g. `--policy /etc/pgvakt/policies`.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// `markdown` or `html`.
        #[arg(long, default_value = "markdown")]
        format: String,
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate policy files or directories (file:line:column for each problem); with a
    /// schema, also the inventory and every mask against the tables; exits 1 on errors.
    #[command(after_help = "Examples:
  pgvakt policy check                                   # the files in policies/
  pgvakt policy check policies/crm.yaml --strict        # warnings fail too (CI)
  pgvakt policy check --snapshot schema.json            # offline: table and column typos, mask types
  pgvakt policy check --upstream \"host=db dbname=crm user=pgvakt sslmode=verify-full sslrootcert=ca.pem\"")]
    Check {
        /// Policy files or directories of *.yaml, e.g. `policies/` or `policies/crm.yaml`.
        #[arg(default_value = "policies")]
        paths: Vec<PathBuf>,
        /// Also check against this live database (libpq connection string, e.g. "host=db
        /// dbname=crm user=pgvakt"): unknown and unlisted tables and columns, columns that look
        /// personal by name or values, and every mask prepared by PostgreSQL on its columns.
        #[arg(long, conflicts_with = "snapshot")]
        upstream: Option<String>,
        /// Also check against a schema snapshot (`pgvakt policy snapshot`), offline, e.g.
        /// `policies/schema/crm-snapshot.json`: unknown and unlisted tables and columns, and
        /// built-in masks on column types they cannot mask.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// Exit 1 on warnings too, e.g. in CI: `pgvakt policy check --strict`.
        #[arg(long)]
        strict: bool,
    },
    /// Show what the proxy does with a statement for a role or user: decision, each column
    /// read with category, action and rule, and the SQL forwarded.
    #[command(after_help = "Examples:
  pgvakt policy explain --role secretary --snapshot policies/schema/crm-snapshot.json \\
      \"SELECT first_name, bank_account FROM contacts WHERE id = 42\"
  pgvakt policy explain --user anna --upstream \"host=db dbname=crm user=pgvakt\" \"SELECT * FROM contacts\"")]
    Explain {
        /// Policy files or directories, e.g. `--policy policies/crm.yaml`.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// Policy role to explain for, e.g. `--role secretary`.
        #[arg(long)]
        role: Option<String>,
        /// Login user, its role resolved as at login (grants, valid_from/valid_until; groups
        /// need --upstream), e.g. `--user anna`.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        schema: SchemaArgs,
        /// search_path as a comma-separated list, e.g. `--search-path crm,public`. Default:
        /// `$user`, each policy file's `schema:`, then public; with --upstream too (a
        /// search_path set upstream with ALTER ROLE or ALTER DATABASE is not read: give it here).
        #[arg(long)]
        search_path: Option<String>,
        /// The statement, e.g. "SELECT bank_account FROM contacts".
        sql: String,
    },
    /// Run policy test cases (YAML files, or directories of them) and print `N passed, M
    /// failed`, with what actually happened for each failure; exits 1 on failures.
    #[command(after_help = "Examples:
  pgvakt policy test policies/tests/crm.yaml
  pgvakt policy test policies/tests/ --policy policies/ --snapshot policies/schema/crm-snapshot.json")]
    Test {
        /// Test files or directories of *.yaml, e.g. `policies/tests/`.
        files: Vec<PathBuf>,
        /// Policy files (default: what each test file names with `policy:`), e.g.
        /// `--policy policies/crm.yaml`.
        #[arg(long)]
        policy: Vec<PathBuf>,
        #[command(flatten)]
        schema: SchemaArgs,
    },
    /// Every grant: grantee, role, valid_from, valid_until, state and reason.
    #[command(after_help = "Examples:
  pgvakt policy grants
  pgvakt policy grants --policy /etc/pgvakt/policies --expiring 14d")]
    Grants {
        /// Policy files or directories.
        #[arg(long, default_value = "policies")]
        policy: Vec<PathBuf>,
        /// Only grants that end within this span (`14d`, `12h`, `2w`) or have ended.
        #[arg(long)]
        expiring: Option<String>,
    },
    /// Save the live schema as a snapshot for offline `check`, `explain` and `test`.
    #[command(after_help = "Examples:
  pgvakt policy snapshot --upstream \"host=db dbname=crm user=pgvakt\" --out policies/schema/crm-snapshot.json")]
    Snapshot {
        /// Database to read (libpq connection string), e.g. "host=db dbname=crm user=pgvakt
        /// sslmode=require".
        #[arg(long)]
        upstream: String,
        /// Output file (default stdout), e.g. `--out schema.json`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct SchemaArgs {
    /// Schema snapshot written by `pgvakt policy snapshot`, e.g. `--snapshot
    /// policies/schema/crm-snapshot.json`.
    // `--schema`, the older name, is still accepted (hidden: a policy's `schema:` is a
    // database schema, not this file).
    #[arg(long, alias = "schema", conflicts_with = "upstream")]
    snapshot: Option<PathBuf>,
    /// Live database to read the schema from (libpq connection string), e.g. "host=db
    /// dbname=crm user=pgvakt".
    #[arg(long)]
    upstream: Option<String>,
}

impl SchemaArgs {
    fn source(self) -> Option<SchemaSource> {
        match (self.snapshot, self.upstream) {
            (Some(p), _) => Some(SchemaSource::Snapshot(p)),
            (None, Some(d)) => Some(SchemaSource::Upstream(d)),
            (None, None) => None,
        }
    }
}

pub async fn run(command: PolicyCommand) -> Result<i32, String> {
    match command {
        PolicyCommand::Record {
            policy,
            format,
            out,
        } => {
            let set = pgvakt::policy::load(&policy).map_err(|e| e.to_string())?;
            let text = match format.as_str() {
                "markdown" | "md" => pgvakt::policy::record::markdown(&set),
                "html" => pgvakt::policy::record::html(&set),
                other => return Err(format!("--format {other}: markdown or html")),
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => print!("{text}"),
            }
            Ok(0)
        }
        PolicyCommand::Check {
            paths,
            upstream,
            snapshot,
            strict,
        } => {
            let mut report = pgvakt::policy::check::check(&paths);
            let source = match (upstream, snapshot) {
                (Some(dsn), _) => Some(SchemaSource::Upstream(dsn)),
                (None, Some(p)) => Some(SchemaSource::Snapshot(p)),
                (None, None) => None,
            };
            if let (Some(source), true) = (source, report.ok()) {
                let set = pgvakt::policy::load(&paths).map_err(|e| e.to_string())?;
                let found = policy_cli::check_schema(&set, &source).await?;
                report.diagnostics.extend(found);
                report.diagnostics = report.diagnostics.sorted();
            }
            report.strict = strict;
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
                .ok_or("give --snapshot FILE or --upstream DSN")?;
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
