//! `ingest` entry point: parse the command line, start logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use ingest::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::telemetry::init(cli.log_format());
    match cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
