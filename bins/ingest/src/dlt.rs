//! Dead letters (SPEC 2.4): a record that can never become a notification goes to
//! `{topic}.DLT` with its original key and value bytes, on the same partition number when the
//! DLT has it, with Spring's `kafka_dlt-*` headers (partition as a 4-byte and offset and
//! timestamp as 8-byte big-endian integers, the rest UTF-8), so Spring tooling reads them too.
//!
//! The partition count of each DLT is cached. A letter from a partition the cache does not
//! know in its DLT (the DLT appeared or grew since it was read, or has fewer partitions than
//! its source) re-reads that DLT's metadata first, at most once per
//! [`REFRESH_MIN_INTERVAL`] per topic, so letters land on their source's partition number as
//! soon as the DLT has it; until then the producer's partitioner chooses.
//!
//! Send failures come back classified ([`DltError`]): permanent ones (a letter too large for
//! the cluster, an unknown topic that cannot be created) are the caller's to log and skip,
//! the rest are an outage to wait out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::kafka_log::{KafkaLog, QuietContext};

use crate::error::DltError;
use crate::record::DeadLetter;

/// Suffix of a dead-letter topic.
pub const DLT_SUFFIX: &str = ".DLT";
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two metadata reads of one DLT for letters it has no partition for.
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(1);

pub const H_TOPIC: &str = "kafka_dlt-original-topic";
pub const H_PARTITION: &str = "kafka_dlt-original-partition";
pub const H_OFFSET: &str = "kafka_dlt-original-offset";
pub const H_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
pub const H_GROUP: &str = "kafka_dlt-original-consumer-group";
pub const H_FQCN: &str = "kafka_dlt-exception-fqcn";
pub const H_MESSAGE: &str = "kafka_dlt-exception-message";

/// The DLT of a topic.
pub fn dlt_topic(topic: &str) -> String {
    format!("{topic}{DLT_SUFFIX}")
}

/// Produces dead letters; caches each DLT's partition count.
pub struct DltProducer {
    producer: FutureProducer<QuietContext>,
    /// The process's Kafka log throttle, shared with the consumer.
    log: Arc<KafkaLog>,
    group_id: String,
    partitions: Mutex<PartitionCounts>,
}

/// A producer config for writing records back (DLT, replay): idempotent, all acks, records
/// up to 32 MiB (unless the extra Kafka properties set `message.max.bytes`).
pub fn producer_config(bootstrap: &str, properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "33554432")
        .set("linger.ms", "1");
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

impl DltProducer {
    pub fn new(
        bootstrap: &str,
        properties: &[(String, String)],
        group_id: &str,
    ) -> Result<Self, KafkaError> {
        let log = Arc::new(KafkaLog::new(bootstrap));
        Ok(DltProducer {
            producer: producer_config(bootstrap, properties)
                .create_with_context(QuietContext(log.clone()))?,
            log,
            group_id: group_id.to_owned(),
            partitions: Mutex::new(PartitionCounts::default()),
        })
    }

    /// The Kafka log throttle the process's other Kafka clients should share.
    pub fn kafka_log(&self) -> Arc<KafkaLog> {
        self.log.clone()
    }

    /// Creates the DLT of every source topic that lacks one (as many partitions as the
    /// source), and learns the partition counts. Failures are logged, not fatal: a DLT
    /// may also be auto-created by the broker.
    pub async fn ensure_topics(
        &self,
        bootstrap: &str,
        properties: &[(String, String)],
        sources: &[&str],
        replication: i32,
    ) {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (key, value) in properties {
            config.set(key, value);
        }
        let admin: AdminClient<DefaultClientContext> = match config.create() {
            Ok(admin) => admin,
            Err(err) => {
                tracing::warn!(%err, "cannot create a Kafka admin client; DLTs not created");
                return;
            }
        };
        let counts = partition_counts(&self.producer).await;
        let wanted: Vec<(String, i32)> = sources
            .iter()
            .map(|t| (dlt_topic(t), counts.get(*t).copied().unwrap_or(1).max(1)))
            .filter(|(dlt, _)| !counts.contains_key(dlt))
            .collect();
        if !wanted.is_empty() {
            let topics: Vec<NewTopic<'_>> = wanted
                .iter()
                .map(|(name, partitions)| {
                    NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
                })
                .collect();
            match admin
                .create_topics(
                    &topics,
                    &AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)),
                )
                .await
            {
                Ok(results) => {
                    for result in results {
                        match result {
                            Ok(name) => tracing::info!(topic = %name, "created dead-letter topic"),
                            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                                tracing::debug!(topic = %name, "dead-letter topic exists")
                            }
                            Err((name, code)) => {
                                tracing::warn!(topic = %name, ?code, "cannot create dead-letter topic")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot create dead-letter topics"),
            }
        }
        let counts = partition_counts(&self.producer).await;
        let mut known = self.partitions.lock().expect("partition map");
        for source in sources {
            let dlt = dlt_topic(source);
            if let Some(count) = counts.get(&dlt) {
                known.learn(&dlt, *count);
            }
        }
    }

    /// Sends one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, letter: &DeadLetter) -> Result<(), DltError> {
        let topic = dlt_topic(&letter.record.topic);
        let partition = self.partition_for(&topic, letter.record.partition).await;
        match self.produce(letter, &topic, partition).await {
            // The cached count was stale (the DLT was re-created smaller): read it again.
            Err(err)
                if partition.is_some()
                    && err.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) =>
            {
                self.partitions
                    .lock()
                    .expect("partition map")
                    .forget(&topic);
                let partition = self.partition_for(&topic, letter.record.partition).await;
                Ok(self.produce(letter, &topic, partition).await?)
            }
            result => Ok(result?),
        }
    }

    /// The DLT partition for a letter from source partition `partition`: the same number
    /// when the DLT has it (re-reading the DLT's metadata when the cache does not know it),
    /// otherwise `None` (the partitioner chooses).
    async fn partition_for(&self, topic: &str, partition: i32) -> Option<i32> {
        let target =
            self.partitions
                .lock()
                .expect("partition map")
                .target(topic, partition, Instant::now());
        match target {
            Target::Partition(p) => Some(p),
            Target::Any => None,
            Target::Refresh => {
                let count = topic_partition_count(&self.producer, topic).await;
                tracing::debug!(
                    topic,
                    ?count,
                    "re-read the dead-letter topic's partition count"
                );
                let mut known = self.partitions.lock().expect("partition map");
                known.refreshed(topic, count, Instant::now());
                match known.target(topic, partition, Instant::now()) {
                    Target::Partition(p) => Some(p),
                    Target::Any | Target::Refresh => None,
                }
            }
        }
    }

    async fn produce(
        &self,
        letter: &DeadLetter,
        topic: &str,
        partition: Option<i32>,
    ) -> Result<(), KafkaError> {
        let original = &letter.record;
        let headers = OwnedHeaders::new()
            .insert(header(H_TOPIC, original.topic.as_bytes()))
            .insert(header(H_PARTITION, &original.partition.to_be_bytes()))
            .insert(header(H_OFFSET, &original.offset.to_be_bytes()))
            .insert(header(
                H_TIMESTAMP,
                &original.timestamp_ms.unwrap_or(-1).to_be_bytes(),
            ))
            .insert(header(H_GROUP, self.group_id.as_bytes()))
            .insert(header(H_FQCN, letter.error_kind.as_bytes()))
            .insert(header(H_MESSAGE, letter.error_message.as_bytes()));
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = &original.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &original.value {
            record = record.payload(value.as_slice());
        }
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(err, _)| err)
    }
}

/// Where a letter goes, as far as the cache knows.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// The DLT has the source's partition number.
    Partition(i32),
    /// It does not, and was re-read too recently to ask again: the partitioner chooses.
    Any,
    /// Read the DLT's partition count again before choosing.
    Refresh,
}

/// Known partition counts of the DLTs, and when each was last re-read for a letter.
#[derive(Debug, Default)]
struct PartitionCounts {
    counts: HashMap<String, i32>,
    refreshed: HashMap<String, Instant>,
}

impl PartitionCounts {
    /// Records a count read at start (it does not delay the first re-read).
    fn learn(&mut self, topic: &str, count: i32) {
        self.counts.insert(topic.to_owned(), count);
    }

    fn target(&self, topic: &str, partition: i32, now: Instant) -> Target {
        match self.counts.get(topic) {
            Some(count) if partition < *count => Target::Partition(partition),
            _ if self
                .refreshed
                .get(topic)
                .is_some_and(|at| now.duration_since(*at) < REFRESH_MIN_INTERVAL) =>
            {
                Target::Any
            }
            _ => Target::Refresh,
        }
    }

    /// Records a re-read: the count, when the topic exists.
    fn refreshed(&mut self, topic: &str, count: Option<i32>, now: Instant) {
        if let Some(count) = count {
            self.counts.insert(topic.to_owned(), count);
        }
        self.refreshed.insert(topic.to_owned(), now);
    }

    /// Drops what is known of `topic`, so the next letter re-reads it.
    fn forget(&mut self, topic: &str) {
        self.counts.remove(topic);
        self.refreshed.remove(topic);
    }
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}

/// Partition count of every topic in the cluster (empty when metadata is unavailable).
pub async fn partition_counts(producer: &FutureProducer<QuietContext>) -> HashMap<String, i32> {
    let producer = producer.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
                    .collect::<HashMap<_, _>>()
            })
    })
    .await;
    match metadata {
        Ok(Ok(counts)) => counts,
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot read Kafka metadata");
            HashMap::new()
        }
        Err(err) => {
            tracing::warn!(%err, "metadata task failed");
            HashMap::new()
        }
    }
}

/// The partition count of one topic (`None` when it does not exist or metadata is unavailable).
async fn topic_partition_count(
    producer: &FutureProducer<QuietContext>,
    topic: &str,
) -> Option<i32> {
    let (producer, name) = (producer.clone(), topic.to_owned());
    let metadata = tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
        Ok::<_, KafkaError>(
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32),
        )
    })
    .await;
    match metadata {
        Ok(Ok(count)) => count,
        Ok(Err(err)) => {
            tracing::warn!(%err, topic, "cannot read Kafka metadata");
            None
        }
        Err(err) => {
            tracing::warn!(%err, "metadata task failed");
            None
        }
    }
}

/// The header value of `key` as UTF-8 text.
pub fn header_text(headers: &impl Headers, key: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The header value of `key` as a big-endian integer (4 or 8 bytes).
pub fn header_int(headers: &impl Headers, key: &str) -> Option<i64> {
    let value = headers.iter().find(|h| h.key == key)?.value?;
    match value.len() {
        4 => Some(i32::from_be_bytes(value.try_into().ok()?) as i64),
        8 => Some(i64::from_be_bytes(value.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DLT: &str = "orders.DLT";

    #[test]
    fn a_partition_the_cache_does_not_know_is_read_again_and_found_after_growth() {
        let start = Instant::now();
        let mut counts = PartitionCounts::default();
        counts.learn(DLT, 1);
        assert_eq!(counts.target(DLT, 0, start), Target::Partition(0));
        assert_eq!(
            counts.target(DLT, 2, start),
            Target::Refresh,
            "read at start only"
        );

        counts.refreshed(DLT, Some(3), start);

        assert_eq!(counts.target(DLT, 2, start), Target::Partition(2));
    }

    #[test]
    fn a_dlt_still_too_small_is_read_again_only_after_the_interval() {
        let start = Instant::now();
        let mut counts = PartitionCounts::default();
        assert_eq!(
            counts.target(DLT, 1, start),
            Target::Refresh,
            "unknown topic"
        );
        counts.refreshed(DLT, Some(1), start);

        assert_eq!(counts.target(DLT, 1, start), Target::Any);
        let later = start + REFRESH_MIN_INTERVAL;
        assert_eq!(counts.target(DLT, 1, later), Target::Refresh);
        assert_eq!(counts.target(DLT, 0, start), Target::Partition(0));
    }

    #[test]
    fn a_forgotten_topic_is_read_again_at_once() {
        let start = Instant::now();
        let mut counts = PartitionCounts::default();
        counts.refreshed(DLT, Some(3), start);
        counts.forget(DLT);
        assert_eq!(counts.target(DLT, 2, start), Target::Refresh);
    }
}
