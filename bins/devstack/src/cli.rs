//! The command line: `devstack [run]` starts the stack, `devstack produce` sends events to it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The bootstrap address of the embedded Kafka when nothing else is said.
pub const DEFAULT_KAFKA_PORT: u16 = 19092;

/// The notification pipeline on one machine, for development: Kafka (embedded), MariaDB,
/// Redis, ingest, gateway and a demo inbox page. Never for production.
#[derive(Debug, Parser)]
#[command(name = "devstack", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start everything and serve until Ctrl-C (the default).
    Run(RunArgs),
    /// Produce sample (or custom) events into the running stack's Kafka.
    Produce(ProduceArgs),
}

/// Ports, names and places of one stack. Every listener is on 127.0.0.1.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Port of the demo page and the dev-only endpoints (token minting, producing).
    #[arg(long, env = "DEVSTACK_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Port of the gateway (SockJS, raw WebSocket, the inbox REST API).
    #[arg(long, env = "DEVSTACK_GATEWAY_PORT", default_value_t = 8084)]
    pub gateway_port: u16,
    /// Port of the gateway's admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "DEVSTACK_GATEWAY_ADMIN_PORT", default_value_t = 9092)]
    pub gateway_admin_port: u16,
    /// Port of ingest's admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "DEVSTACK_INGEST_ADMIN_PORT", default_value_t = 9091)]
    pub ingest_admin_port: u16,
    /// Bootstrap port of the embedded Kafka (ignored when KAFKA_BOOTSTRAP_SERVERS is set).
    #[arg(long, env = "DEVSTACK_KAFKA_PORT", default_value_t = DEFAULT_KAFKA_PORT)]
    pub kafka_port: u16,
    /// A real Kafka broker to use instead of the embedded one.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,
    /// MariaDB/MySQL port: a server already answering there (user root, no password) is
    /// used; otherwise devstack starts a private MariaDB there.
    #[arg(long, env = "DEVSTACK_MYSQL_PORT", default_value_t = 3306)]
    pub mysql_port: u16,
    /// The database (created when missing, then migrated).
    #[arg(long, env = "DEVSTACK_DATABASE", default_value = "notification_db")]
    pub database: String,
    /// Redis port: a server already answering there is used; otherwise devstack starts a
    /// private one there.
    #[arg(long, env = "DEVSTACK_REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,
    /// Where private servers keep their data and logs (default: target/devstack in the
    /// workspace).
    #[arg(long, env = "DEVSTACK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// What `devstack produce` sends.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// The topic (one of the 14 input topics), or `all` for one event of each.
    #[arg(long)]
    pub topic: String,
    /// Events per topic.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// The recipient of sample events.
    #[arg(long, default_value = "user-1")]
    pub user: String,
    /// A record value to send as it is, instead of a sample (not with `--topic all`).
    #[arg(long)]
    pub value: Option<String>,
    /// Kafka bootstrap servers (the running devstack's embedded Kafka by default).
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap: String,
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
    fn no_subcommand_runs_the_stack_on_the_usual_ports() {
        let cli = Cli::try_parse_from(["devstack"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.http_port, 8080);
        assert_eq!(cli.run.gateway_port, 8084);
        assert_eq!(cli.run.kafka_port, DEFAULT_KAFKA_PORT);
        let cli =
            Cli::try_parse_from(["devstack", "produce", "--topic", "all", "--count", "2"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Produce(p)) if p.count == 2));
    }
}
