//! Dead letters (SPEC 2.4): a record that can never become a notification goes to
//! `{topic}.DLT` with its original key and value bytes, on the same partition number when the
//! DLT has it, with Spring's `kafka_dlt-*` headers (partition as a 4-byte and offset and
//! timestamp as 8-byte big-endian integers, the rest UTF-8), so Spring tooling reads them too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::pipeline::Record;

/// Suffix of a dead-letter topic.
pub const DLT_SUFFIX: &str = ".DLT";
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A record to dead-letter, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub error_kind: String,
    pub error_message: String,
}

/// Produces dead letters; knows each DLT's partition count.
pub struct DltProducer {
    producer: FutureProducer,
    group_id: String,
    partitions: Mutex<HashMap<String, i32>>,
}

/// A producer config for writing records back (DLT, replay): idempotent, all acks, large
/// enough for any record the source topic accepted.
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
        Ok(DltProducer {
            producer: producer_config(bootstrap, properties).create()?,
            group_id: group_id.to_owned(),
            partitions: Mutex::new(HashMap::new()),
        })
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
                known.insert(dlt, *count);
            }
        }
    }

    /// Sends one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, letter: &DeadLetter) -> Result<(), KafkaError> {
        let original = &letter.record;
        let topic = dlt_topic(&original.topic);
        let same_partition = {
            let known = self.partitions.lock().expect("partition map");
            known
                .get(&topic)
                .is_some_and(|count| original.partition < *count)
        };
        let partition = same_partition.then_some(original.partition);
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
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
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

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}

/// Partition count of every topic in the cluster (empty when metadata is unavailable).
pub async fn partition_counts(producer: &FutureProducer) -> HashMap<String, i32> {
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
