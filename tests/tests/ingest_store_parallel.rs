//! Several store transactions at once (`INGEST_STORE_PARALLELISM` > 1, or several ingest
//! instances) against the real MariaDB/MySQL, and end to end through the librdkafka mock
//! cluster and Redis. Concurrent batches that share dedup keys and users must never surface
//! an error (ingest would take it for a database outage and turn unready), every key must
//! get exactly one row, inserted for exactly one input, so it is published exactly once.
//! The conflicts each run met and ran again are printed (`--nocapture`).

#![allow(clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::future::join_all;
use ingest::config::IngestConfig;
use ingest::conflict::Conflict;
use ingest::consumer::Ingest;
use ingest::metrics::Metrics;
use ingest::store::{Incoming, Outcome, SourceRecord, Store};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use shared::channel::Channels;
use shared::convert::convert;
use shared::event::{EventKind, TopicMap};
use shared::notification::{DedupKey, NewNotification};
use sqlx::Row;
use support::kafka::{self, MockKafka};
use support::{TestDb, redis_sub, text, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

/// Concurrent writers, and the batches each stores one after the other.
const WRITERS: usize = 4;
const ROUNDS: usize = 6;
const BATCH: usize = 1000;
/// Distinct events the writers draw from, and the users they belong to.
const KEYS: usize = 3000;
const USERS: usize = 40;
/// End to end: distinct events, one copy of every fourth on another partition.
const EVENTS: usize = 3000;
const COPY_EVERY: usize = 4;
const STORE_PARALLELISM: usize = 4;
const INGEST_BATCH: usize = 500;
const SETTLE: Duration = Duration::from_secs(60);
/// After the expected work is seen, how long to watch for anything extra.
const QUIET: Duration = Duration::from_millis(1500);

/// Event `n`: an order of one of `USERS` users; its order number makes its dedup key.
fn order_created(n: usize) -> NewNotification {
    let json = format!(
        r#"{{"userId":"user-{}","orderNumber":"ORD-{n}","itemCount":1,"totalAmount":1000}}"#,
        n % USERS
    );
    convert(EventKind::OrderCreated, json.as_bytes())
        .unwrap()
        .unwrap()
}

/// Every input's (key, outcome) from `WRITERS` writers storing `ROUNDS` batches each at
/// once; `event(writer, round, i)` picks the event of input `i`. Each input has a record of
/// its own. Panics on any error.
async fn store_concurrently(
    store: &Store,
    event: impl Fn(usize, usize, usize) -> usize + Copy + Send + 'static,
) -> HashMap<DedupKey, Vec<Outcome>> {
    let writers = (0..WRITERS).map(|writer| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                let batch: Vec<Incoming> = (0..BATCH)
                    .map(|i| Incoming {
                        notification: order_created(event(writer, round, i)),
                        source: Some(SourceRecord {
                            topic: format!("writer-{writer}"),
                            partition: 0,
                            offset: (round * BATCH + i) as i64,
                        }),
                    })
                    .collect();
                let stored = store
                    .store_batch(&batch)
                    .await
                    .unwrap_or_else(|err| panic!("writer {writer}, batch {round}: {err}"));
                assert_eq!(stored.len(), batch.len(), "one result per input");
                for (input, result) in batch.iter().zip(stored) {
                    outcomes.push((input.notification.dedup_key(), result.outcome));
                }
            }
            outcomes
        })
    });
    let mut by_key: HashMap<DedupKey, Vec<Outcome>> = HashMap::new();
    for writer in join_all(writers).await {
        for (key, outcome) in writer.expect("writer panicked") {
            by_key.entry(key).or_default().push(outcome);
        }
    }
    by_key
}

/// Each key: one input inserted its row, every other input is a duplicate of that row
/// from another record (not published again), and the table holds exactly these rows.
async fn assert_each_key_stored_once(db: &TestDb, by_key: &HashMap<DedupKey, Vec<Outcome>>) {
    let rows = sqlx::query("SELECT id, dedup_key FROM notifications")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let table: HashMap<DedupKey, i64> = rows
        .iter()
        .map(|row| {
            let key: Vec<u8> = row.get("dedup_key");
            (key.try_into().unwrap(), row.get("id"))
        })
        .collect();
    assert_eq!(table.len(), rows.len(), "one row per key");
    assert_eq!(
        table.len(),
        by_key.len(),
        "a row for every key stored, no other"
    );
    for (key, outcomes) in by_key {
        let id = table[key];
        let inserted = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Inserted(_)))
            .count();
        assert_eq!(inserted, 1, "exactly one input inserts a key's row");
        let published = outcomes.iter().filter(|o| o.must_publish()).count();
        assert_eq!(published, 1, "a key's row is published once");
        assert!(
            outcomes.iter().all(|o| o.id() == id),
            "every input of a key gets its row's id"
        );
    }
}

/// Conflicts run again so far, by kind.
fn conflicts(metrics: &Metrics) -> BTreeMap<&'static str, u64> {
    Conflict::ALL
        .iter()
        .map(|c| {
            let count = metrics
                .store_conflicts
                .with_label_values(&[c.label()])
                .get();
            (c.label(), count)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_sharing_keys_store_every_key_once_without_errors() {
    let db = TestDb::new().await;
    let metrics = Metrics::new();
    let store = Store::new(db.pool.clone()).with_conflict_counter(metrics.store_conflicts.clone());

    // Every writer draws from all keys in its own random order: batches overlap heavily,
    // new keys meet in crossing orders (deadlocks) and meet uncommitted rows.
    let by_key = store_concurrently(&store, |_, _, _| rand::random_range(0..KEYS)).await;

    assert_each_key_stored_once(&db, &by_key).await;
    eprintln!("conflicts run again: {:?}", conflicts(&metrics));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_of_disjoint_keys_never_conflict() {
    let db = TestDb::new().await;
    let metrics = Metrics::new();
    let store = Store::new(db.pool.clone()).with_conflict_counter(metrics.store_conflicts.clone());

    // Each writer owns every WRITERS-th key and meets its own earlier rows again, among
    // the same users as the others: only the gaps of the indexes are shared.
    let by_key = store_concurrently(&store, |writer, _, _| {
        rand::random_range(0..KEYS / WRITERS) * WRITERS + writer
    })
    .await;

    assert_each_key_stored_once(&db, &by_key).await;
    assert_eq!(
        conflicts(&metrics).values().sum::<u64>(),
        0,
        "disjoint batches block nothing of each other: {:?}",
        conflicts(&metrics)
    );
}

/// Event `n` of the end-to-end stream: one of three kinds (so three topics), `n` its
/// reference.
fn stream_event(n: usize) -> (EventKind, String) {
    let user = format!("user-{}", n % USERS);
    match n % 3 {
        0 => (
            EventKind::OrderCreated,
            format!(r#"{{"orderNumber":"E{n}","userId":"{user}","totalAmount":1,"itemCount":1}}"#),
        ),
        1 => (
            EventKind::CouponIssued,
            format!(
                r#"{{"userId":"{user}","couponCode":"E{n}","couponName":"쿠폰","discountType":"PERCENTAGE","discountValue":5}}"#
            ),
        ),
        _ => (
            EventKind::TaskCompleted,
            format!(r#"{{"taskId":{n},"boardId":1,"userId":"{user}","title":"요약"}}"#),
        ),
    }
}

/// Produces every record (topic, partition, value) at once and waits for the acks.
async fn produce(producer: &FutureProducer, records: &[(String, i32, String)]) {
    let sends = records.iter().map(|(topic, partition, value)| {
        let record: FutureRecord<'_, (), str> = FutureRecord::to(topic)
            .partition(*partition)
            .payload(value.as_str());
        producer.send(record, Duration::from_secs(10))
    });
    for delivery in join_all(sends).await {
        delivery.map_err(|(e, _)| e).expect("produce");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_store_transactions_store_and_publish_each_event_once_in_partition_and_id_order() {
    let topics = TopicMap::default();
    let kafka = MockKafka::new(&topics);
    let db = TestDb::new().await;
    let prefix = format!("{}:notification:", unique_name("redis"));
    let (received, _sub) = redis_sub::subscribe(&support::redis_url(), &prefix).await;
    // Event n on partition n % P; every COPY_EVERY-th event again, later, on the next
    // partition of its topic (a producer that retried with another key).
    let mut records = Vec::new();
    for n in 0..EVENTS {
        let (kind, value) = stream_event(n);
        let topic = topics.topic(kind).to_owned();
        let partition = (n % kafka::PARTITIONS as usize) as i32;
        if n % COPY_EVERY == COPY_EVERY - 1 {
            records.push((
                topic.clone(),
                (partition + 1) % kafka::PARTITIONS,
                value.clone(),
            ));
        }
        records.push((topic, partition, value));
    }
    produce(&kafka::producer(&kafka.bootstrap), &records).await;

    let mut config = IngestConfig::new(&kafka.bootstrap, &db.url, &support::redis_url());
    config.group_id = unique_name("group");
    config.channels = Channels::new(prefix);
    config.batch_size = INGEST_BATCH;
    config.store_parallelism = STORE_PARALLELISM;
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let metrics = ingest.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));
    let processed = || {
        ["stored", "duplicate", "replayed"]
            .map(|o| metrics.total(o))
            .iter()
            .sum::<u64>()
    };
    wait_until("every record processed", SETTLE, || async {
        processed() == records.len() as u64
    })
    .await;
    wait_until("every row published", SETTLE, || async {
        received.len() >= EVENTS
    })
    .await;
    tokio::time::sleep(QUIET).await;
    shutdown.cancel();
    task.await.unwrap().expect("ingest stops cleanly");

    let outcomes = ["stored", "duplicate", "replayed"].map(|o| (o, metrics.total(o)));
    let expected = [
        ("stored", EVENTS as u64),
        ("duplicate", (EVENTS / COPY_EVERY) as u64),
        ("replayed", 0),
    ];
    assert_eq!(
        outcomes, expected,
        "each event inserted once, each copy a duplicate"
    );
    let database_outages = metrics.outage_waits.with_label_values(&["database"]).get();
    assert_eq!(database_outages, 0, "no conflict was taken for an outage");
    eprintln!("conflicts run again: {:?}", conflicts(&metrics));

    let rows = sqlx::query("SELECT id, source_record FROM notifications ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), EVENTS, "one row per event");
    let mut published: HashMap<i64, usize> = HashMap::new();
    let mut newest_of: HashMap<String, i64> = HashMap::new();
    for (channel, payload) in received.all() {
        let json: Value = serde_json::from_str(&payload).unwrap();
        let id = json["id"].as_i64().unwrap();
        *published.entry(id).or_default() += 1;
        // A client resuming with `last-id` (the newest id it holds) relies on this: a
        // user's notifications are published in id order, whichever transaction stored them.
        let newest = newest_of.entry(channel.clone()).or_insert(0);
        assert!(
            id > *newest,
            "{channel}: id {id} published after id {newest}"
        );
        *newest = id;
    }
    assert_eq!(published.len(), EVENTS, "every row published");
    assert!(
        published.values().all(|n| *n == 1),
        "no row published twice"
    );
    // Per partition, the rows' ids follow the offsets of the records that made them.
    let mut by_partition: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for row in &rows {
        let id: i64 = row.get("id");
        assert!(published.contains_key(&id), "row {id} published");
        let source: String = text(row, "source_record");
        let (partition, offset) = source.rsplit_once(':').unwrap();
        by_partition
            .entry(partition.to_owned())
            .or_default()
            .push((offset.parse().unwrap(), id));
    }
    for (partition, mut rows) in by_partition {
        rows.sort_unstable();
        assert!(
            rows.windows(2).all(|w| w[0].1 < w[1].1),
            "{partition}: ids follow offsets"
        );
    }
}
