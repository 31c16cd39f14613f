//! Kafka for tests: librdkafka's in-process mock cluster (real TCP on loopback), a producer,
//! and a reader of dead-letter topics and committed offsets.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shared::event::TopicMap;

/// Partitions of every input topic in tests (the producers use 3).
pub const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A mock cluster with every input topic created. Not `Send`: keep it in the test body.
pub struct MockKafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

impl MockKafka {
    pub fn new(topics: &TopicMap) -> MockKafka {
        let cluster = MockCluster::new(1).expect("mock cluster");
        for topic in topics.topics() {
            cluster
                .create_topic(topic, PARTITIONS, 1)
                .expect("create topic");
        }
        let bootstrap = cluster.bootstrap_servers();
        MockKafka { cluster, bootstrap }
    }
}

/// A producer to `bootstrap`.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "33554432")
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

/// Produces one record (key, value) and waits for its acknowledgement.
pub async fn produce(producer: &FutureProducer, topic: &str, key: Option<&str>, value: &[u8]) {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, TIMEOUT)
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_text(&self, key: &str) -> Option<String> {
        self.header(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record currently in `topic` (blocking; call from spawn_blocking or a test thread).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), TIMEOUT) else {
        return Vec::new();
    };
    let Some(meta) = metadata.topics().first().filter(|t| t.error().is_none()) else {
        return Vec::new();
    };
    let mut list = TopicPartitionList::new();
    let mut remaining = 0;
    for p in meta.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT).unwrap();
        if high > low {
            list.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .unwrap();
            remaining += high - low;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return out;
    }
    consumer.assign(&list).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while (out.len() as i64) < remaining && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    out
}

/// The committed offset of `group` on each partition of `topic` (-1001 when none).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, TIMEOUT)
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1001,
            },
        )
        .collect()
}
