//! `ingest dlt replay`: re-publishes dead letters to their original topic (from the
//! `kafka_dlt-original-topic` header), with their original key and value, after the cause
//! was fixed. Reads the DLT by assigning its partitions (no group membership, nothing
//! committed), from an offset, up to a limit.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka_log::{KafkaLog, QuietContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::dlt::{self, DLT_SUFFIX, H_PARTITION, H_TOPIC};

const POLL: Duration = Duration::from_millis(500);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub bootstrap_servers: String,
    pub properties: Vec<(String, String)>,
    pub dlt_topic: String,
    /// First offset to replay in every partition (default: the earliest kept).
    pub from_offset: Option<i64>,
    /// Replay at most this many records.
    pub limit: Option<u64>,
}

/// Replays the dead letters; returns how many were re-published.
pub async fn replay(request: &ReplayRequest) -> anyhow::Result<u64> {
    anyhow::ensure!(
        request.dlt_topic.ends_with(DLT_SUFFIX),
        "{:?} is not a dead-letter topic (expected a name ending in {DLT_SUFFIX})",
        request.dlt_topic
    );
    let log = std::sync::Arc::new(KafkaLog::new(&request.bootstrap_servers));
    let producer: FutureProducer<QuietContext> =
        dlt::producer_config(&request.bootstrap_servers, &request.properties)
            .create_with_context(QuietContext(log))?;
    let request = request.clone();
    // The consumer side is blocking; run it on a blocking thread and send from here.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(String, Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>)>(256);
    let reader = tokio::task::spawn_blocking(move || read_dlt(&request, tx));
    let mut replayed = 0;
    let counts = dlt::partition_counts(&producer).await;
    while let Some((topic, partition, key, value)) = rx.recv().await {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic);
        if let Some(p) = partition.filter(|p| counts.get(&topic).is_some_and(|n| p < n)) {
            record = record.partition(p);
        }
        if let Some(key) = &key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &value {
            record = record.payload(value.as_slice());
        }
        producer
            .send(record, SEND_TIMEOUT)
            .await
            .map_err(|(err, _)| anyhow::anyhow!("re-publishing to {topic}: {err}"))?;
        replayed += 1;
    }
    reader.await??;
    Ok(replayed)
}

type Replayable = (String, Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>);

fn read_dlt(
    request: &ReplayRequest,
    tx: tokio::sync::mpsc::Sender<Replayable>,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &request.bootstrap_servers)
        .set("group.id", "notification-dlt-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (key, value) in &request.properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(&request.dlt_topic), METADATA_TIMEOUT)?;
    let topic = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| anyhow::anyhow!("topic {:?} does not exist", request.dlt_topic))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in topic.partitions() {
        let (low, high) =
            consumer.fetch_watermarks(&request.dlt_topic, partition.id(), METADATA_TIMEOUT)?;
        let start = request.from_offset.unwrap_or(low).max(low);
        if start < high {
            assignment.add_partition_offset(
                &request.dlt_topic,
                partition.id(),
                Offset::Offset(start),
            )?;
            ends.push((partition.id(), high));
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment)?;
    let mut sent = 0u64;
    while !ends.is_empty() && request.limit.is_none_or(|limit| sent < limit) {
        let Some(message) = consumer.poll(POLL) else {
            continue;
        };
        let message = message?;
        let headers = message.headers();
        let original = headers
            .and_then(|h| dlt::header_text(h, H_TOPIC))
            .unwrap_or_else(|| request.dlt_topic.trim_end_matches(DLT_SUFFIX).to_owned());
        let partition = headers
            .and_then(|h| dlt::header_int(h, H_PARTITION))
            .map(|p| p as i32);
        let item = (
            original,
            partition,
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
        );
        if tx.blocking_send(item).is_err() {
            break;
        }
        sent += 1;
        let (id, offset) = (message.partition(), message.offset());
        ends.retain(|(p, high)| !(*p == id && offset + 1 >= *high));
    }
    Ok(())
}
