//! `stint-bench`: parses the command line and runs the library (see its docs and `--help`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stint_bench::cli::run(stint_bench::cli::Args::parse()).await
}
