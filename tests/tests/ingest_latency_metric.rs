//! `ingest_kafka_to_publish_seconds`: one sample per published message, measured from the
//! record's Kafka timestamp, against the librdkafka mock cluster, MariaDB and Redis.

mod support;

use std::time::Duration;

use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use ingest::metrics::Metrics;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared::channel::Channels;
use shared::event::{EventKind, TopicMap};
use support::kafka::{self, MockKafka};
use support::{TestDb, redis_sub, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(60);
/// How far in the past the test's producer dates its records.
const AGE: Duration = Duration::from_secs(3);
/// A record timestamp librdkafka passes on as it is, and consumers read as "none".
const NO_TIMESTAMP: i64 = -1;

fn order(number: &str) -> String {
    format!(r#"{{"orderNumber":"{number}","userId":"u-latency","totalAmount":1000,"itemCount":1}}"#)
}

/// Produces `value` to `topic` with the record timestamp `timestamp_ms`.
async fn produce_at(producer: &FutureProducer, topic: &str, value: &str, timestamp_ms: i64) {
    let record = FutureRecord::to(topic)
        .key("u-latency")
        .payload(value)
        .timestamp(timestamp_ms);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(err, _)| err)
        .expect("produce");
}

fn samples(metrics: &Metrics) -> (u64, f64) {
    let histogram = &metrics.kafka_to_publish_seconds;
    (histogram.get_sample_count(), histogram.get_sample_sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_latency_is_observed_once_per_published_message_from_its_kafka_timestamp() {
    let topics = TopicMap::default();
    let cluster = MockKafka::new(&topics);
    let db = TestDb::new().await;
    let prefix = format!("{}:notification:", unique_name("redis"));
    let (received, subscriber) = redis_sub::subscribe(&support::redis_url(), &prefix).await;
    let mut config = IngestConfig::new(&cluster.bootstrap, &db.url, &support::redis_url());
    config.group_id = unique_name("group");
    config.channels = Channels::new(prefix);
    config.shutdown_deadline = Duration::from_secs(5);
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let metrics = ingest.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));
    let producer = kafka::producer(&cluster.bootstrap);
    let orders = topics.topic(EventKind::OrderCreated);
    let aged = chrono::Utc::now().timestamp_millis() - AGE.as_millis() as i64;

    // Four new notifications dated AGE ago; a duplicate and an invalid record publish nothing.
    for number in ["ORD-L1", "ORD-L2", "ORD-L3", "ORD-L4", "ORD-L1"] {
        produce_at(&producer, orders, &order(number), aged).await;
    }
    produce_at(&producer, orders, r#"{"orderNumber":"ORD-L5"}"#, aged).await;
    wait_until("the first records processed", SETTLE, || async {
        metrics.total("stored") == 4
            && metrics.total("duplicate") == 1
            && metrics.total("dead_lettered") == 1
    })
    .await;
    let (count, sum) = samples(&metrics);
    assert_eq!(count, 4, "one sample per published message");
    assert!(
        sum >= 4.0 * AGE.as_secs_f64(),
        "each sample counts from the record's timestamp: sum {sum}"
    );
    assert!(sum < 4.0 * (AGE.as_secs_f64() + 60.0), "sum {sum}");

    // Two more, dated now: the count grows by two, the sum by far less than AGE each.
    let now = chrono::Utc::now().timestamp_millis();
    for number in ["ORD-L6", "ORD-L7"] {
        produce_at(&producer, orders, &order(number), now).await;
    }
    wait_until("the next records published", SETTLE, || async {
        metrics.total("stored") == 6 && received.len() == 6
    })
    .await;
    let (count, later_sum) = samples(&metrics);
    assert_eq!(count, 6);
    assert!(
        later_sum - sum < 2.0 * AGE.as_secs_f64(),
        "{later_sum} - {sum}"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
    subscriber.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_timestamp_is_published_but_not_observed() {
    let topics = TopicMap::default();
    let cluster = MockKafka::new(&topics);
    let db = TestDb::new().await;
    let prefix = format!("{}:notification:", unique_name("redis"));
    let (received, subscriber) = redis_sub::subscribe(&support::redis_url(), &prefix).await;
    let mut config = IngestConfig::new(&cluster.bootstrap, &db.url, &support::redis_url());
    config.group_id = unique_name("group");
    config.channels = Channels::new(prefix);
    config.shutdown_deadline = Duration::from_secs(5);
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let metrics = ingest.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));
    let producer = kafka::producer(&cluster.bootstrap);
    let orders = topics.topic(EventKind::OrderCreated);

    produce_at(&producer, orders, &order("ORD-N1"), NO_TIMESTAMP).await;
    let now = chrono::Utc::now().timestamp_millis();
    produce_at(&producer, orders, &order("ORD-N2"), now).await;
    wait_until("both published", SETTLE, || async {
        metrics.total("stored") == 2 && received.len() == 2
    })
    .await;
    assert_eq!(samples(&metrics).0, 1, "only the record with a timestamp");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    subscriber.abort();
}
