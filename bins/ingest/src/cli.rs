//! The command line: subcommands and their configuration (flags and environment).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::config::{DatabaseArgs, TelemetryArgs, TopicArgs};
use sqlx::MySql;
use sqlx::migrate::MigrateDatabase;

use crate::{dry_run, store};

/// Consumes the portal's Kafka topics and turns events into per-user notifications.
#[derive(Debug, Parser)]
#[command(name = "ingest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply the schema migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Dry run: read one event JSON on stdin and print the notification it would store.
    /// Exit 0 when valid, 2 (reason on stderr) when it would be dead-lettered.
    Convert {
        /// The topic the event would arrive on.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        topics: TopicArgs,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Migrate { database } => {
            migrate(&database).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert { topic, topics } => {
            let map = topics.topic_map().map_err(anyhow::Error::msg)?;
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            let stderr = std::io::stderr().lock();
            Ok(dry_run::convert(&map, &topic, stdin, stdout, stderr))
        }
    }
}

/// Creates the database when it does not exist, then applies pending migrations.
pub async fn migrate(database: &DatabaseArgs) -> anyhow::Result<()> {
    if !MySql::database_exists(&database.url).await? {
        tracing::info!("creating the database");
        MySql::create_database(&database.url).await?;
    }
    let pool = store::connect(&database.url, 1).await?;
    store::MIGRATOR.run(&pool).await?;
    tracing::info!(
        migrations = store::MIGRATOR.iter().count(),
        "schema is up to date"
    );
    pool.close().await;
    Ok(())
}
