//! `gateway` entry point: parse configuration, start logging, serve until SIGTERM.

use clap::Parser;
use gateway::{Gateway, GatewayConfig};
use shared::config::TelemetryArgs;

/// Delivers notifications to browsers over STOMP (SockJS and raw WebSocket).
#[derive(Debug, Parser)]
#[command(name = "gateway", version)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init(cli.telemetry.log_format);
    // Every connection is a descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open file limit"),
    }
    let shutdown = shared::shutdown::on_signal();
    let gateway = Gateway::bind(&cli.gateway, shutdown).await?;
    gateway.run().await?;
    tracing::info!("gateway stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
