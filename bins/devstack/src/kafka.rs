//! Kafka for the stack: librdkafka's mock cluster (the real protocol on loopback TCP, in
//! memory) with every input topic and its dead-letter topic, or a real broker; and the
//! producer that sends sample events.
//!
//! The mock cluster always listens on a port the kernel picks, so a forwarder on the fixed
//! bootstrap port (`--kafka-port`, 19092) passes connections on to it: clients bootstrap
//! there, then reach the broker at the address its metadata names (also on loopback).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Partitions of every topic devstack creates.
pub const PARTITIONS: i32 = 3;
/// Longest wait for one record's acknowledgement or one admin request.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// The input topics and their dead-letter topics.
pub fn all_topics() -> Vec<String> {
    shared::event::EventKind::ALL
        .into_iter()
        .flat_map(|kind| {
            let topic = kind.default_topic();
            [topic.to_owned(), format!("{topic}.DLT")]
        })
        .collect()
}

/// The embedded cluster. Not `Send`: it stays in the task that runs the stack, and is
/// dropped (destroyed) after every client of it has stopped.
pub struct Embedded {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    /// The broker's own address, for clients inside this process.
    pub direct: String,
}

impl Embedded {
    /// Starts a one-broker cluster with every topic created.
    pub fn start() -> anyhow::Result<Embedded> {
        let cluster = MockCluster::new(1).context("cannot start the embedded Kafka")?;
        for topic in all_topics() {
            cluster
                .create_topic(&topic, PARTITIONS, 1)
                .with_context(|| format!("cannot create topic {topic}"))?;
        }
        let direct = cluster.bootstrap_servers();
        Ok(Embedded {
            _cluster: cluster,
            direct,
        })
    }
}

/// Binds the fixed bootstrap port, then forwards every connection to `target` until
/// `shutdown`.
pub async fn forward(
    port: u16,
    target: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("port {port} (Kafka bootstrap) is taken: pass --kafka-port"))?;
    let addr = listener.local_addr()?;
    let target = target.to_owned();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(%err, "Kafka forwarder: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let target = target.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    Ok(addr)
}

/// Creates every input and dead-letter topic on a real broker (existing ones are kept).
pub async fn create_topics(bootstrap: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let names = all_topics();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .with_context(|| format!("cannot create the topics on the Kafka at {bootstrap}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A producer to `bootstrap`.
pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("message.timeout.ms", "15000")
        .create()?)
}

/// Produces one record and waits for its acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            KAFKA_TIMEOUT,
        )
        .await
        .map_err(|(err, _)| err)
        .with_context(|| format!("cannot produce to {topic}"))?;
    Ok(())
}
