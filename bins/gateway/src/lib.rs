//! `gateway`: delivers notifications to browsers over STOMP (SockJS and raw WebSocket) and
//! serves the inbox REST API. This is the application seam: [`Gateway::bind`] binds the
//! listener (port 0 in tests), [`Gateway::run`] serves until the shutdown token fires.
//!
//! Modules: [`stomp`] — the STOMP frame codec; [`session`] — the STOMP session state
//! machine (both pure).

pub mod auth;
pub mod session;
pub mod stomp;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long open connections may take to finish after shutdown begins.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Gateway configuration.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address of the public listener (WebSocket, SockJS, REST).
    #[arg(
        long = "listen-addr",
        env = "LISTEN_ADDR",
        default_value = "0.0.0.0:8084"
    )]
    pub listen_addr: SocketAddr,
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
}

impl Gateway {
    /// Binds the public listener.
    pub async fn bind(config: &GatewayConfig) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(config.listen_addr).await?;
        Ok(Gateway { listener })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains for at most the shutdown deadline.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        tracing::info!(addr = %self.local_addr()?, "gateway listening");
        let graceful = shutdown.clone();
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { graceful.cancelled().await });
        match shared::shutdown::drain(&shutdown, SHUTDOWN_DEADLINE, serve.into_future()).await {
            Some(result) => result,
            None => {
                tracing::warn!("connections still open at the shutdown deadline; closing them");
                Ok(())
            }
        }
    }
}
