//! `devstack` entry point: parse the command line, start logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use devstack::cli::{Cli, Command};
use shared::telemetry::LogFormat;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::telemetry::init(LogFormat::Text);
    let outcome = match cli.command {
        None => devstack::stack::run(cli.run).await,
        Some(Command::Run(args)) => devstack::stack::run(args).await,
        Some(Command::Produce(args)) => devstack::produce::command(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
