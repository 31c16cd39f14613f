//! The Kafka side: the consumer group, batching, and offset commits.
//!
//! Records are taken in batches (up to `batch_size`, waiting at most `batch_linger` after
//! the first). Two stages run concurrently, each strictly in batch order, so the order within
//! each partition is kept: this task stores batch N+1 while a publisher task publishes batch
//! N. The hand-over queue holds one batch (backpressure: storing waits for publishing).
//! After a batch is published, each partition's offset is committed past the batch's
//! highest offset there — never past a record still in flight. Auto-commit and the offset
//! store are off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::config::IngestConfig;
use crate::dlt::DltProducer;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Record, Staged};
use crate::publish::Publisher;
use crate::store::{self, Store};

/// Pause after a consumer error before polling again.
const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Consumer callbacks: statistics → the consumer-lag gauge.
pub struct IngestContext {
    metrics: Metrics,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.metrics.consumer_lag.set(lag);
    }
}

impl ConsumerContext for IngestContext {}

/// A configured ingest instance, ready to run.
pub struct Ingest {
    config: IngestConfig,
    consumer: Arc<StreamConsumer<IngestContext>>,
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
    health: Arc<Health>,
}

impl Ingest {
    /// Builds the clients. Database and Redis connect lazily, so an outage at start only
    /// delays the first batch (and keeps `/readyz` false).
    pub async fn new(config: IngestConfig) -> anyhow::Result<Ingest> {
        let metrics = Metrics::new();
        let health = Arc::new(Health::default());
        let pool = store::connect_lazy(&config.database_url, config.database_max_connections)?;
        let publisher = Publisher::new(&config.redis_url, config.channels.clone())?;
        let dlt = DltProducer::new(
            &config.bootstrap_servers,
            &config.kafka_properties,
            &config.group_id,
        )?;
        let topics = config.topics.topics();
        dlt.ensure_topics(
            &config.bootstrap_servers,
            &config.kafka_properties,
            &topics,
            config.dlt_replication_factor,
        )
        .await;

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000");
        for (key, value) in &config.kafka_properties {
            client.set(key, value);
        }
        let consumer: StreamConsumer<IngestContext> =
            client.create_with_context(IngestContext {
                metrics: metrics.clone(),
            })?;
        consumer.subscribe(&topics)?;

        let pipeline = Pipeline {
            store: Store::new(pool),
            publisher,
            dlt,
            topics: config.topics.clone(),
            zone: config.zone,
            metrics: metrics.clone(),
            health: health.clone(),
            retry_interval: config.retry_interval,
            retry_max_attempts: config.retry_max_attempts,
            max_event_bytes: config.max_event_bytes,
            store_parallelism: config.store_parallelism,
        };
        Ok(Ingest {
            config,
            consumer: Arc::new(consumer),
            pipeline: Arc::new(pipeline),
            metrics,
            health,
        })
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Starts the admin listener, if configured; returns its address.
    pub async fn serve_admin(
        &self,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Option<SocketAddr>> {
        match self.config.admin_addr {
            Some(addr) => admin::serve(
                addr,
                self.metrics.clone(),
                self.health.clone(),
                shutdown.clone(),
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    }

    /// Consumes until `shutdown`; then finishes the batches in flight (bounded by the
    /// shutdown deadline), commits, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let batch_size = self.config.batch_size;
        let deadline = self.config.shutdown_deadline;
        let (to_publish, mut staged_batches) = mpsc::channel::<Staged>(1);
        let publisher = {
            let pipeline = self.pipeline.clone();
            let consumer = self.consumer.clone();
            tokio::spawn(async move {
                let mut last = Vec::new();
                while let Some(staged) = staged_batches.recv().await {
                    pipeline.publish_stage(&staged).await;
                    commit(&consumer, &staged.records, CommitMode::Async);
                    last = staged.records;
                }
                // Input is over: make the last commit durable before the group is left.
                if !last.is_empty() {
                    commit(&consumer, &last, CommitMode::Sync);
                }
            })
        };
        self.health.set_consuming(true);
        tracing::info!(group = %self.config.group_id, topics = self.config.topics.topics().len(), "consuming");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let mut records = Vec::with_capacity(batch_size);
            match first {
                Ok(message) => records.push(to_record(&message)),
                Err(err) => {
                    // librdkafka reconnects by itself; do not spin on a persistent error.
                    tracing::warn!(%err, "Kafka consumer error");
                    tokio::time::sleep(CONSUMER_ERROR_PAUSE).await;
                    continue;
                }
            }
            let linger = tokio::time::sleep(self.config.batch_linger);
            tokio::pin!(linger);
            while records.len() < batch_size {
                tokio::select! {
                    biased;
                    message = self.consumer.recv() => match message {
                        Ok(message) => records.push(to_record(&message)),
                        Err(err) => {
                            tracing::warn!(%err, "Kafka consumer error");
                            break;
                        }
                    },
                    _ = &mut linger => break,
                }
            }

            let count = records.len();
            let stored = async {
                let staged = self.pipeline.store_stage(records).await;
                to_publish.send(staged).await.is_ok()
            };
            match shared::shutdown::drain(&shutdown, deadline, stored).await {
                Some(true) => {}
                Some(false) => anyhow::bail!("the publisher stage stopped"),
                None => {
                    tracing::warn!(
                        records = count,
                        "shutdown deadline passed; the batch in flight is left uncommitted and will be consumed again"
                    );
                    break;
                }
            }
        }
        self.health.set_consuming(false);
        drop(to_publish);
        let abort = publisher.abort_handle();
        if tokio::time::timeout(deadline, publisher).await.is_err() {
            abort.abort();
            tracing::warn!(
                "shutdown deadline passed while publishing; unpublished batches stay uncommitted"
            );
        }
        tracing::info!("ingest stopped");
        Ok(())
    }
}

/// Commits, per partition, the offset after the batch's highest record there.
fn commit(consumer: &StreamConsumer<IngestContext>, records: &[Record], mode: CommitMode) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for record in records {
        let entry = next.entry((&record.topic, record.partition)).or_insert(0);
        *entry = (*entry).max(record.offset + 1);
    }
    let mut list = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        if let Err(err) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(%err, "cannot build the offset commit");
            return;
        }
    }
    if let Err(err) = consumer.commit(&list, mode) {
        // After a rebalance the partition's new owner consumes these records again;
        // dedup makes that harmless.
        tracing::warn!(%err, "offset commit failed");
    }
}

fn to_record(message: &impl Message) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
    }
}
