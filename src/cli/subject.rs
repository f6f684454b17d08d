//! `pgvakt subject`: the DPO's commands for data-subject rights.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum SubjectCommand {
    /// Every row of the subject in every inventory table, and who received it, as a ZIP of
    /// JSON and a self-contained HTML page.
    Export(pgvakt::subject::export::ExportArgs),
    /// Erase the subject by anonymisation as the inventory declares, in one transaction.
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
