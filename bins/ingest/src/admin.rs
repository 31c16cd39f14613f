//! Ingest's admin listener: the shared `/metrics`, `/healthz`, `/readyz` router
//! ([`shared::admin`]) over ingest's metrics and its readiness: consuming, with every
//! dependency reachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The dependencies whose loss makes the instance not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Redis,
    /// The Kafka cluster as the consumer sees it: no broker connection up (see
    /// [`crate::group::Reachability`]).
    Kafka,
    /// The dead-letter producer cannot write a letter for now.
    DltProducer,
}

impl Dependency {
    /// Every dependency, in the order `/readyz` names them.
    pub const ALL: [Dependency; 4] = [
        Dependency::Database,
        Dependency::Redis,
        Dependency::Kafka,
        Dependency::DltProducer,
    ];

    /// The dependency's metric label.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Redis => "redis",
            Dependency::Kafka => "kafka",
            Dependency::DltProducer => "dlt_producer",
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
    dlt_producer_down: AtomicBool,
}

impl Health {
    fn flag(&self, dependency: Dependency) -> &AtomicBool {
        match dependency {
            Dependency::Database => &self.database_down,
            Dependency::Redis => &self.redis_down,
            Dependency::Kafka => &self.kafka_down,
            Dependency::DltProducer => &self.dlt_producer_down,
        }
    }

    /// Marks `dependency` unavailable (`true`) or back (`false`).
    pub fn set_down(&self, dependency: Dependency, down: bool) {
        self.flag(dependency).store(down, Ordering::Relaxed);
    }

    /// Marks the consumer loop as running or stopped.
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// `/readyz`'s answer: ready, or what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        let down: Vec<&str> = Dependency::ALL
            .iter()
            .filter(|d| self.flag(**d).load(Ordering::Relaxed))
            .map(|d| d.name())
            .collect();
        if !down.is_empty() {
            return Err(format!("{} unreachable", down.join(", ")));
        }
        if !self.consuming.load(Ordering::Relaxed) {
            return Err("not consuming yet (joining the consumer group)".into());
        }
        Ok(())
    }
}

/// Binds the admin listener and serves it until `shutdown`; returns its address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = shared::admin::router(move || metrics.render(), move || health.readiness());
    tokio::spawn(async move {
        if let Err(err) = shared::admin::serve(listener, router, shutdown).await {
            tracing::error!(%err, "admin listener failed");
        }
    });
    tracing::info!(addr = %local, "admin listening");
    Ok(local)
}
