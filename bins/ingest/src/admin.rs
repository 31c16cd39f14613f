//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (consuming, with every dependency reachable).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The dependencies whose loss makes the instance not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Redis,
    Kafka,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Redis => "redis",
            Dependency::Kafka => "kafka",
        }
    }
}

/// Readiness: consuming has started and no dependency is known to be down.
#[derive(Debug, Default)]
pub struct Health {
    consuming: AtomicBool,
    database_down: AtomicBool,
    redis_down: AtomicBool,
    kafka_down: AtomicBool,
}

impl Health {
    fn flag(&self, dependency: Dependency) -> &AtomicBool {
        match dependency {
            Dependency::Database => &self.database_down,
            Dependency::Redis => &self.redis_down,
            Dependency::Kafka => &self.kafka_down,
        }
    }

    pub fn set_down(&self, dependency: Dependency, down: bool) {
        self.flag(dependency).store(down, Ordering::Relaxed);
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
            && [Dependency::Database, Dependency::Redis, Dependency::Kafka]
                .iter()
                .all(|d| !self.flag(*d).load(Ordering::Relaxed))
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    health: Arc<Health>,
}

/// Binds the admin listener and serves it until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, health });
    tokio::spawn(async move {
        let stop = shutdown.cancelled_owned();
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%err, "admin listener failed");
        }
    });
    tracing::info!(addr = %local, "admin listening");
    Ok(local)
}

async fn metrics_text(State(state): State<AdminState>) -> String {
    state.metrics.render()
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.health.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
