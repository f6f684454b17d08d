//! `pgvakt subject`: the DPO's commands for data-subject rights.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum SubjectCommand {
    /// Every row of the subject in every inventory table, and who received it, as a ZIP of
    /// JSON and a self-contained HTML page.
    #[command(after_help = "Examples:
  pgvakt subject export 42 --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" \\
      --audit /var/log/pgvakt/audit --key-file /etc/pgvakt/audit-subject.key --out subject-42.zip")]
    Export(pgvakt::subject::export::ExportArgs),
    /// Erase the subject by anonymisation as the inventory declares, in one transaction.
    #[command(after_help = "Examples:
  pgvakt subject erase 42 --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" --dry-run
  pgvakt subject erase 42 --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\"")]
    Erase(pgvakt::subject::erase::EraseArgs),
}

/// Exit status: 0 done, 2 could not (nothing was changed).
pub async fn run(command: SubjectCommand) -> i32 {
    let result = match &command {
        SubjectCommand::Export(a) => pgvakt::subject::export::run(a).await,
        SubjectCommand::Erase(a) => pgvakt::subject::erase::run(a).await,
    };
    match result {
        Ok(report) => {
            print!("{report}");
            0
        }
        Err(e) => {
            eprintln!("pgvakt subject: {e}");
            2
        }
    }
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Anonymise (or delete) what is past the inventory's retention periods; exit 0 when
    /// nothing is left overdue, 1 when a dry run finds something, 2 on failure.
    #[command(after_help = "Examples:
  pgvakt retention run --upstream \"host=pgvakt port=6432 user=dpo dbname=crm sslmode=require\" --dry-run
  pgvakt retention run --upstream \"...\" --metrics-file /var/lib/prometheus/node-exporter/pgvakt_retention.prom
  pgvakt retention run --upstream \"...\" --now 2036-06-01 --dry-run   # what will be due then")]
    Run(pgvakt::subject::retention::RetentionArgs),
}

pub async fn retention(command: RetentionCommand) -> i32 {
    let RetentionCommand::Run(args) = command;
    let (code, report) = pgvakt::subject::retention::run(&args).await;
    if code == 2 {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    code
}
