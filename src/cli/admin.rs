//! `pgvakt admin`: operator commands on the state every replica shares.

use std::path::PathBuf;

use clap::Subcommand;

use pgvakt::access::Scope;
use pgvakt::config::Config;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Lift the lockout of a user (or, with --client, of a client address) on every replica.
    #[command(after_help = "Examples:
  pgvakt admin unlock --config /etc/pgvakt/pgvakt.yaml alice
  pgvakt admin unlock --config /etc/pgvakt/pgvakt.yaml --client 203.0.113.7")]
    Unlock {
        /// Configuration file (YAML): its service user connects to the shared state.
        #[arg(long)]
        config: PathBuf,
        /// The address is a client IP address, not a user name.
        #[arg(long)]
        client: bool,
        /// User name, or client IP address with --client.
        name: String,
    },
    /// Lift a user's mass-read block and forget its read counts, on every replica.
    #[command(after_help = "Examples:
  pgvakt admin reset-limits --config /etc/pgvakt/pgvakt.yaml alice")]
    ResetLimits {
        /// Configuration file (YAML): its service user connects to the shared state.
        #[arg(long)]
        config: PathBuf,
        /// The login user whose read limits are reset.
        user: String,
    },
    /// List the users and client addresses locked now.
    #[command(after_help = "Examples:
  pgvakt admin lockouts --config /etc/pgvakt/pgvakt.yaml")]
    Lockouts {
        /// Configuration file (YAML): its service user connects to the shared state.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Exit status: 0 done, 2 could not act.
pub async fn run(command: AdminCommand) -> i32 {
    let result = match command {
        AdminCommand::Unlock {
            config,
            client,
            name,
        } => match Config::load(&config) {
            Ok(cfg) => {
                let scope = if client { Scope::Client } else { Scope::User };
                pgvakt::admin::unlock(&cfg, scope, &name).await
            }
            Err(e) => Err(e.to_string()),
        },
        AdminCommand::ResetLimits { config, user } => match Config::load(&config) {
            Ok(cfg) => pgvakt::admin::reset_limits(&cfg, &user).await,
            Err(e) => Err(e.to_string()),
        },
        AdminCommand::Lockouts { config } => match Config::load(&config) {
            Ok(cfg) => pgvakt::admin::lockouts(&cfg).await,
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("pgvakt: {e}");
            2
        }
    }
}
