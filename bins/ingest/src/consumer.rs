//! The Kafka side of ingest: the consumer group, batching, flow control and offset commits.
//!
//! Records are taken in batches (up to `batch_size`, waiting at most `batch_linger` after
//! the first). Two stages run concurrently, each strictly in batch order, so the order within
//! each partition is kept: the run loop stores batch N+1 while a publisher task publishes
//! batch N. The hand-over queue holds one batch (backpressure: storing waits for publishing).
//! After a batch is published, each partition's offset is committed past the batch's
//! highest offset there — never past a record still in flight. Auto-commit and the offset
//! store are off.
//!
//! The run loop never stops polling the consumer, however long a batch takes: while the
//! store stage works it gathers the next batch ([`Pending`]); when that batch is full and
//! the stage is still busy a quarter of `max.poll.interval.ms` later (at most 1 s), it
//! pauses fetching on every assigned partition and keeps polling, so the group keeps this
//! member through an outage longer than `max.poll.interval.ms`: no rebalance, no
//! re-consumption, no storm of republishes when the dependency returns. Fetching resumes
//! when the stage is free again. Rebalances meanwhile are handled as usual: records waiting
//! for revoked partitions are forgotten (their new owner reads them from the committed
//! offset), and newly assigned partitions take the loop's state at once (see
//! [`crate::group`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use shared::backoff::Backoff;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::config::{IngestConfig, consumer_properties};
use crate::dlt::DltProducer;
use crate::group::{self, IngestConsumer, IngestContext};
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::pipeline::{Pipeline, Staged};
use crate::publish::Publisher;
use crate::record::Record;
use crate::store::{self, Store};

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// The longest the run loop stops taking records before it pauses fetching instead.
const PAUSE_AFTER_MAX: Duration = Duration::from_secs(1);
/// Pauses after a consumer error before polling again (librdkafka reconnects by itself);
/// short enough to keep polling well within any sensible `max.poll.interval.ms`.
const CONSUMER_ERROR_BACKOFF_START: Duration = Duration::from_millis(200);
const CONSUMER_ERROR_BACKOFF_CAP: Duration = Duration::from_secs(1);
/// librdkafka's statistics interval: the lag gauge's refresh, and how soon readiness sees
/// a broker answer again after an outage ([`crate::group::Reachability`]).
const STATISTICS_INTERVAL_MS: &str = "1000";

/// The store stage of one batch: stores it, then hands it to the publisher (false when the
/// publisher is gone).
type StageFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// How long a full [`Pending`] buffer may wait for a busy store stage before fetching is
/// paused: a quarter of `max.poll.interval.ms`, at most [`PAUSE_AFTER_MAX`].
fn pause_after(kafka_properties: &[(String, String)]) -> Duration {
    let max_poll = kafka_properties
        .iter()
        .rev()
        .find(|(key, _)| key == "max.poll.interval.ms")
        .and_then(|(_, value)| value.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_MAX_POLL_INTERVAL);
    (max_poll / 4).min(PAUSE_AFTER_MAX)
}

/// The consumer's librdkafka configuration: ingest's settings, then the consumer defaults
/// ([`crate::config::CONSUMER_DEFAULTS`]) and `KAFKA_PROPERTIES`, which override both;
/// except that statistics cannot be turned off (readiness needs them).
fn consumer_config(config: &IngestConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (key, value) in consumer_properties(&config.kafka_properties) {
        client.set(key, value);
    }
    if client.get("statistics.interval.ms") == Some("0") {
        tracing::warn!(
            "statistics.interval.ms=0 ignored: readiness learns from statistics that a \
             Kafka broker answers again after an outage; using {STATISTICS_INTERVAL_MS}"
        );
        client.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
    client
}

/// What woke the run loop.
enum Event {
    Shutdown,
    Stored {
        handed_over: bool,
    },
    Received(Result<Record, KafkaError>),
    /// A timer: a partial batch is due, a full one waited long enough, or an error pause ended.
    Timer,
}

/// A configured ingest instance, ready to run.
pub struct Ingest {
    config: IngestConfig,
    consumer: Arc<IngestConsumer>,
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
    health: Arc<Health>,
}

impl Ingest {
    /// Builds the clients and creates missing DLTs. Database and Redis connect lazily, so an
    /// outage at start only delays the first batch (and keeps `/readyz` false).
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

        let consumer: IngestConsumer = consumer_config(&config).create_with_context(
            IngestContext::new(metrics.clone(), dlt.kafka_log(), health.clone()),
        )?;
        consumer.subscribe(&topics)?;

        let pipeline = Pipeline {
            store: Store::new(pool).with_conflict_counter(metrics.store_conflicts.clone()),
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

    /// The instance's metrics (shared handles).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The instance's readiness.
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

    /// Consumes until `shutdown`; then finishes the batch being stored and the batches
    /// being published (each bounded by the shutdown deadline), commits, and returns.
    /// Records received but not yet in a batch are left uncommitted and consumed again.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let deadline = self.config.shutdown_deadline;
        let pause_after = pause_after(&self.config.kafka_properties);
        let (to_publish, staged_batches) = mpsc::channel::<Staged>(1);
        let publisher = tokio::spawn(publish_stage(
            self.pipeline.clone(),
            self.consumer.clone(),
            staged_batches,
        ));
        let mut pending = Pending::new(self.config.batch_size, self.config.batch_linger);
        let mut storing: Option<StageFuture> = None;
        let mut paused = false;
        let mut errors = Backoff::new(CONSUMER_ERROR_BACKOFF_START, CONSUMER_ERROR_BACKOFF_CAP);
        let mut quiet_until: Option<Instant> = None;
        self.health.set_consuming(true);
        tracing::info!(group = %self.config.group_id, topics = self.config.topics.topics().len(), "consuming");
        loop {
            let now = Instant::now();
            self.forget_revoked(&mut pending, now);
            let mut took_batch = false;
            if storing.is_none() && pending.due().is_some_and(|due| due <= now) {
                storing = Some(self.store_stage(pending.take_batch(now), &to_publish));
                took_batch = true;
            }
            // The stage moved on: fetch again (also when a rebalance emptied the buffer).
            if paused && !pending.is_full() && (took_batch || storing.is_none()) {
                self.set_paused(false);
                paused = false;
            }
            self.metrics.pending_records.set(pending.len() as i64);
            // Take records while the next batch has room, and always while paused: a paused
            // consumer must still be polled to stay in the group.
            let receive = (paused || !pending.is_full()) && quiet_until.is_none();
            let timer = match (&storing, paused) {
                (None, _) => pending.due(),
                (Some(_), false) => pending.full_since().map(|since| since + pause_after),
                (Some(_), true) => None,
            };
            let timer = [timer, quiet_until].into_iter().flatten().min();
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                Some(handed_over) = OptionFuture::from(storing.as_mut()), if storing.is_some() => {
                    Event::Stored { handed_over }
                }
                message = self.consumer.recv(), if receive => {
                    Event::Received(message.map(|m| Record::from_message(&m)))
                }
                _ = tokio::time::sleep_until(timer.unwrap_or(now)), if timer.is_some() => Event::Timer,
            };
            match event {
                Event::Shutdown => break,
                Event::Stored { handed_over } => {
                    storing = None;
                    anyhow::ensure!(handed_over, "the publisher stage stopped");
                }
                Event::Received(Ok(record)) => {
                    errors.reset();
                    self.forget_revoked(&mut pending, Instant::now());
                    pending.push(record, Instant::now());
                    self.take_ready_records(&mut pending, paused);
                }
                Event::Received(Err(err)) => {
                    tracing::warn!(%err, "Kafka consumer error");
                    quiet_until = Some(Instant::now() + errors.next());
                }
                Event::Timer => {
                    let now = Instant::now();
                    if quiet_until.is_some_and(|until| until <= now) {
                        quiet_until = None;
                    }
                    let blocked = pending
                        .full_since()
                        .is_some_and(|since| since + pause_after <= now);
                    if storing.is_some() && !paused && blocked {
                        // Debug only: a slow database pauses now and then under load too;
                        // an outage is logged where it is waited out.
                        tracing::debug!(
                            waiting = pending.len(),
                            "the pipeline is blocked; pausing fetches and polling on"
                        );
                        self.set_paused(true);
                        paused = true;
                    }
                }
            }
        }
        self.health.set_consuming(false);
        if let Some(batch) = storing
            && tokio::time::timeout(deadline, batch).await.is_err()
        {
            tracing::warn!(
                "shutdown deadline passed; the batch being stored is left uncommitted and will be consumed again"
            );
        }
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

    /// The store stage of `batch`, handing it to the publisher when stored.
    fn store_stage(&self, batch: Vec<Record>, to_publish: &mpsc::Sender<Staged>) -> StageFuture {
        let pipeline = self.pipeline.clone();
        let to_publish = to_publish.clone();
        Box::pin(async move {
            let staged = pipeline.store_stage(batch).await;
            to_publish.send(staged).await.is_ok()
        })
    }

    /// Buffers the records the consumer already holds, without waiting, while there is room.
    fn take_ready_records(&self, pending: &mut Pending, paused: bool) {
        while paused || !pending.is_full() {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    let record = Record::from_message(&message);
                    self.forget_revoked(pending, Instant::now());
                    pending.push(record, Instant::now());
                }
                // Errors are left for the next poll of the run loop.
                Some(Err(_)) | None => return,
            }
        }
    }

    /// Drops the buffered records of partitions the group took away.
    fn forget_revoked(&self, pending: &mut Pending, now: Instant) {
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            let dropped = pending.forget(&revoked, now);
            tracing::debug!(dropped, "forgot the buffered records of revoked partitions");
        }
    }

    fn set_paused(&self, paused: bool) {
        match group::set_paused(&self.consumer, paused) {
            Ok(()) if !paused => {
                tracing::debug!("the pipeline took the waiting batch; fetching resumed")
            }
            Ok(()) => {}
            Err(err) => tracing::warn!(%err, paused, "cannot pause or resume fetching"),
        }
    }
}

/// The publisher task: publishes stored batches in order and commits each after publishing;
/// when input ends, makes the last commit durable before the group is left.
async fn publish_stage(
    pipeline: Arc<Pipeline>,
    consumer: Arc<IngestConsumer>,
    mut staged_batches: mpsc::Receiver<Staged>,
) {
    let mut last = Vec::new();
    while let Some(staged) = staged_batches.recv().await {
        pipeline.publish_stage(&staged).await;
        group::commit(&consumer, &staged.records, CommitMode::Async);
        last = staged.records;
    }
    if !last.is_empty() {
        group::commit(&consumer, &last, CommitMode::Sync);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property(value: &str) -> Vec<(String, String)> {
        vec![("max.poll.interval.ms".to_owned(), value.to_owned())]
    }

    fn configured(properties: &[(&str, &str)]) -> ClientConfig {
        let mut config = IngestConfig::new("kafka:9092", "mysql://db/n", "redis://cache/");
        config.kafka_properties = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        consumer_config(&config)
    }

    #[test]
    fn the_consumer_fetches_with_the_low_latency_defaults() {
        let client = configured(&[]);
        for (key, value) in crate::config::CONSUMER_DEFAULTS {
            assert_eq!(client.get(key), Some(value), "{key}");
        }
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(
            client.get("statistics.interval.ms"),
            Some(STATISTICS_INTERVAL_MS)
        );
    }

    #[test]
    fn statistics_can_be_slowed_but_not_turned_off() {
        let slower = configured(&[("statistics.interval.ms", "5000")]);
        assert_eq!(slower.get("statistics.interval.ms"), Some("5000"));
        let off = configured(&[("statistics.interval.ms", "0")]);
        assert_eq!(
            off.get("statistics.interval.ms"),
            Some(STATISTICS_INTERVAL_MS)
        );
    }

    #[test]
    fn kafka_properties_override_the_consumer_defaults() {
        let client = configured(&[
            ("fetch.wait.max.ms", "500"),
            ("fetch.min.bytes", "4096"),
            ("security.protocol", "SASL_SSL"),
        ]);
        assert_eq!(client.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(client.get("fetch.min.bytes"), Some("4096"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn a_full_buffer_pauses_fetching_well_within_the_poll_interval() {
        assert_eq!(
            pause_after(&[]),
            PAUSE_AFTER_MAX,
            "librdkafka's 300 s default"
        );
        assert_eq!(pause_after(&property("6000")), PAUSE_AFTER_MAX);
        assert_eq!(pause_after(&property("2000")), Duration::from_millis(500));
        assert_eq!(pause_after(&property("not a number")), PAUSE_AFTER_MAX);
    }
}
