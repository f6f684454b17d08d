//! The `pgvakt` binary; the command line is in `cli/`.

mod cli;

fn main() -> anyhow::Result<()> {
    cli::main()
}
