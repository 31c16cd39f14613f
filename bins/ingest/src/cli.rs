//! The command line: subcommands and their configuration (flags and environment).
//! Without a subcommand, `ingest` runs the pipeline (`ingest run`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::config::{DatabaseArgs, TelemetryArgs, TopicArgs};
use sqlx::MySql;
use sqlx::migrate::MigrateDatabase;

use crate::config::{IngestConfig, KafkaArgs, RunArgs};
use crate::consumer::Ingest;
use crate::replay::{self, ReplayRequest};
use crate::{dry_run, store};

/// Consumes the portal's Kafka topics and turns events into per-user notifications.
#[derive(Debug, Parser)]
#[command(name = "ingest", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, store and publish until SIGTERM (the default).
    Run(RunArgs),
    /// Create the database if missing and apply the schema migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        telemetry: TelemetryArgs,
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
    /// Dead-letter topics.
    Dlt {
        #[command(subcommand)]
        command: DltCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DltCommand {
    /// Re-publish dead letters to their original topic.
    Replay {
        /// The dead-letter topic, e.g. shopping.order.created.DLT
        #[arg(long)]
        topic: String,
        /// First offset to replay in each partition (default: the earliest kept).
        #[arg(long)]
        from_offset: Option<i64>,
        /// Replay at most this many records.
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

impl Cli {
    /// The log format this invocation asks for.
    pub fn log_format(&self) -> shared::telemetry::LogFormat {
        match &self.command {
            Some(Command::Run(run)) => run.telemetry.log_format,
            Some(Command::Migrate { telemetry, .. }) => telemetry.log_format,
            _ => self.run.telemetry.log_format,
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => run_pipeline(cli.run).await,
        Some(Command::Run(args)) => run_pipeline(args).await,
        Some(Command::Migrate { database, .. }) => {
            migrate(&database).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Convert { topic, topics }) => {
            let map = topics.topic_map().map_err(anyhow::Error::msg)?;
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            let stderr = std::io::stderr().lock();
            Ok(dry_run::convert(&map, &topic, stdin, stdout, stderr))
        }
        Some(Command::Dlt {
            command:
                DltCommand::Replay {
                    topic,
                    from_offset,
                    limit,
                    kafka,
                },
        }) => {
            let request = ReplayRequest {
                bootstrap_servers: kafka.bootstrap_servers,
                properties: kafka.properties,
                dlt_topic: topic,
                from_offset,
                limit,
            };
            let replayed = replay::replay(&request).await?;
            tracing::info!(replayed, topic = %request.dlt_topic, "dead letters re-published");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_pipeline(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = IngestConfig::try_from(args)?;
    let shutdown = shared::shutdown::on_signal();
    let ingest = Ingest::new(config).await?;
    ingest.serve_admin(&shutdown).await?;
    ingest.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_seed_defaults() {
        let cli = Cli::try_parse_from(["ingest"]).unwrap();
        assert!(cli.command.is_none());
        let config = IngestConfig::try_from(cli.run).unwrap();
        assert_eq!(config.group_id, "notification-group");
        assert_eq!(config.bootstrap_servers, "localhost:9092");
        assert_eq!(config.retry_max_attempts, 3);
        assert_eq!(
            config.retry_interval,
            std::time::Duration::from_millis(1000)
        );
        assert_eq!(config.topics.topics().len(), 14);
    }
}
