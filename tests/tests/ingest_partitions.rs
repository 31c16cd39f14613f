//! `ingest` scaled out: instances of one consumer group share the 14 input topics of 12
//! partitions each while a steady stream of events flows; mid-stream a fourth instance
//! joins, one of the first three stops with SIGTERM and another is killed with SIGKILL.
//! Every instance is a process of its own (`support::ingest_process`), so the group sees
//! real joins, a LeaveGroup and a session timeout, as with pods.
//!
//! What ingest guarantees across those rebalances, and what is asserted (each key's events
//! go to one partition):
//! - every event is stored exactly once: one row per event, none missing;
//! - every row is published at least once, with its id, on its user's channel (records a
//!   partition's next owner reads again, because their offsets were not committed when the
//!   partition moved, are published again);
//! - per partition, the rows' ids follow the offsets: an instance stores a partition's
//!   records batch after batch, each batch's rows inserted in offset order, and a revoked
//!   partition's last batch is stored long before its next owner has fetched (the group
//!   takes seconds to settle, a batch milliseconds);
//! - per partition, the first publication of each notification follows the offsets: an
//!   instance publishes its batches in order, and commits a batch only after publishing it,
//!   so a partition's next owner starts after notifications already published. Only copies
//!   (the same id again) may come later;
//! - the last instances' clean stop leaves every partition committed to its end, and no
//!   instance logs an ERROR (nothing is dead-lettered).
//!
//! The stream and the group's changes are timed and printed (`--nocapture`).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use shared::event::{EventKind, TopicMap};
use sqlx::Row;
use support::ingest_process::{self, ChildConfig, IngestProcess};
use support::{TestDb, kafka, redis_sub, text, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

/// Partitions of every input topic.
const PARTITIONS: i32 = 12;
/// Keys on each partition of each topic: their events interleave in the partition.
const KEYS_PER_PARTITION: usize = 2;
/// The stream: this many events every tick (200 events/s), over the 13 per-user topics.
const EVENTS_PER_TICK: usize = 4;
const TICK: Duration = Duration::from_millis(20);
/// How long the group works undisturbed between two changes.
const STEADY: Duration = Duration::from_secs(3);
/// The instances' `session.timeout.ms`: a killed instance is noticed after it, and the mock
/// cluster waits for members to rejoin a rebalance for this less one second.
const SESSION_TIMEOUT_MS: u64 = 4000;
const STORE_PARALLELISM: usize = 2;
/// Bounds of the waits: a rebalance, and the stream's tail after the last change.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The ignored test below that each instance's process runs.
const CHILD_TEST: &str = "ingest_child_process";

/// The topics with a row per event (the time deal makes none, so it gets no events).
fn kinds() -> Vec<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|k| *k != EventKind::TimeDealStarted)
        .collect()
}

/// Event number `n` of `kind` for `user`; its number is its reference (a task's id), or
/// for a signup its user id (one welcome per user).
fn event(kind: EventKind, n: usize, user: &str) -> String {
    let tag = format!("E{n:06}");
    match kind {
        EventKind::UserSignedUp => json!({"userId": tag, "name": "가입자"}),
        EventKind::OrderCreated => {
            json!({"orderNumber": tag, "userId": user, "totalAmount": 59000, "itemCount": 2})
        }
        EventKind::OrderCancelled => {
            json!({"orderNumber": tag, "userId": user, "cancelReason": "고객 요청"})
        }
        EventKind::PaymentCompleted => {
            json!({"paymentNumber": tag, "orderNumber": "ORD-1", "userId": user, "amount": 1234.5})
        }
        EventKind::PaymentFailed => {
            json!({"paymentNumber": tag, "orderNumber": "ORD-1", "userId": user, "failureReason": "잔액 부족"})
        }
        EventKind::DeliveryShipped => {
            json!({"trackingNumber": tag, "orderNumber": "ORD-1", "userId": user, "carrier": "CJ대한통운"})
        }
        EventKind::CouponIssued => {
            json!({"userId": user, "couponCode": tag, "couponName": "쿠폰", "discountType": "PERCENTAGE", "discountValue": 15})
        }
        EventKind::PostLiked => {
            json!({"likeId": tag, "postId": "p-1", "postTitle": "글", "authorId": user, "likerName": "민수"})
        }
        EventKind::PostCommented => {
            json!({"commentId": tag, "postId": "p-1", "postTitle": "글", "authorId": user, "commenterName": "지수", "content": "좋은 글"})
        }
        EventKind::CommentReplied => {
            json!({"replyId": tag, "postId": "p-1", "parentCommentId": "c-1", "parentCommentAuthorId": user, "replierName": "영희", "content": "감사"})
        }
        EventKind::UserFollowed => {
            json!({"followId": tag, "followeeId": user, "followerName": "철수"})
        }
        EventKind::TaskCompleted => {
            json!({"taskId": n, "boardId": 1, "userId": user, "title": "요약"})
        }
        EventKind::TaskFailed => {
            json!({"taskId": n, "boardId": 1, "userId": user, "title": "번역", "errorMessage": "timeout"})
        }
        EventKind::TimeDealStarted => unreachable!("no time deals in the stream"),
    }
    .to_string()
}

/// The event number a notification came from (see [`event`]).
fn event_number(kind: &str, user_id: &str, reference_id: Option<&str>) -> usize {
    let tag = if kind == "SYSTEM" {
        user_id
    } else {
        reference_id.expect("a reference")
    };
    tag.trim_start_matches('E')
        .parse()
        .unwrap_or_else(|_| panic!("{tag} is none of the test's events"))
}

/// One produced event and where it landed.
#[derive(Debug, Clone)]
struct Produced {
    /// The event's number (its index in the stream).
    n: usize,
    key: usize,
    /// Its place among its key's events.
    seq: usize,
    topic: String,
    partition: i32,
    offset: i64,
    sent_ms: i64,
}

impl Produced {
    fn partition(&self) -> (String, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// Produces EVENTS_PER_TICK events every TICK until `stop`; event `n` has key `n % keys`.
/// A key stays on one topic and one partition (set explicitly, two keys per partition).
async fn produce_steadily(
    bootstrap: String,
    topics: TopicMap,
    stop: CancellationToken,
) -> Vec<Produced> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .expect("producer");
    let kinds = kinds();
    let keys = kinds.len() * PARTITIONS as usize * KEYS_PER_PARTITION;
    let mut produced = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    let mut n = 0;
    while !stop.is_cancelled() {
        tick.tick().await;
        let mut deliveries = Vec::with_capacity(EVENTS_PER_TICK);
        for _ in 0..EVENTS_PER_TICK {
            let key = n % keys;
            let kind = kinds[key % kinds.len()];
            let partition = ((key / kinds.len()) % PARTITIONS as usize) as i32;
            let (key_text, value) = (format!("k{key:03}"), event(kind, n, &format!("u{key:03}")));
            let record = FutureRecord::to(topics.topic(kind))
                .partition(partition)
                .key(&key_text)
                .payload(&value);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue");
            deliveries.push((n, kind, Utc::now().timestamp_millis(), delivery));
            n += 1;
        }
        for (n, kind, sent_ms, delivery) in deliveries {
            let delivery = delivery
                .await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("produce");
            produced.push(Produced {
                n,
                key: n % keys,
                seq: n / keys,
                topic: topics.topic(kind).to_owned(),
                partition: delivery.partition,
                offset: delivery.offset,
                sent_ms,
            });
        }
    }
    produced
}

/// Waits until `members` hold every partition: each one's newest group event is an
/// assignment after `since`, and their assignments add up to `total`. Returns when the last
/// of those assignments was logged.
async fn wait_settled(members: &mut [&mut IngestProcess], since: Instant, total: usize) -> Instant {
    let deadline = Instant::now() + REBALANCE_TIMEOUT;
    loop {
        let mut last = since;
        let mut settled = true;
        for member in members.iter_mut() {
            member.assert_running();
            match member.group_events().last() {
                Some((at, ingest_process::GroupEvent::Assigned(_))) if *at >= since => {
                    last = last.max(*at);
                }
                _ => settled = false,
            }
        }
        if settled && members.iter().map(|m| m.assigned()).sum::<usize>() == total {
            return last;
        }
        let held: Vec<String> = members
            .iter()
            .map(|m| format!("{} {}", m.name, m.assigned()))
            .collect();
        assert!(
            Instant::now() < deadline,
            "the group did not settle within {REBALANCE_TIMEOUT:?}: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One change of the group and how long the group took to settle after it.
struct Change {
    what: &'static str,
    from: Instant,
    settled: Instant,
    held: Vec<(String, usize)>,
}

/// Notes a settled change; asserts the range assignor's even split (12 partitions of each
/// topic divide evenly among 2, 3 or 4 instances).
fn settled(
    what: &'static str,
    from: Instant,
    settled: Instant,
    members: &[&IngestProcess],
    total: usize,
) -> Change {
    let held: Vec<(String, usize)> = members
        .iter()
        .map(|m| (m.name.clone(), m.assigned()))
        .collect();
    for (name, n) in &held {
        assert_eq!(
            *n,
            total / members.len(),
            "{what}: {name}'s share of the partitions ({held:?})"
        );
    }
    Change {
        what,
        from,
        settled,
        held,
    }
}

/// A stored row: its id, the event it came from, its user, when it was stored.
struct StoredRow {
    id: i64,
    n: usize,
    created_ms: i64,
}

async fn stored_rows(db: &TestDb) -> Vec<StoredRow> {
    sqlx::query("SELECT id, user_id, type, reference_id, created_at FROM notifications")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| StoredRow {
            id: row.get("id"),
            n: event_number(
                &text::<String>(row, "type"),
                &text::<String>(row, "user_id"),
                text::<Option<String>>(row, "reference_id").as_deref(),
            ),
            created_ms: row
                .get::<chrono::NaiveDateTime, _>("created_at")
                .and_utc()
                .timestamp_millis(),
        })
        .collect()
}

/// A published notification: its id and event number, in arrival order.
fn published(received: &redis_sub::Received, prefix: &str) -> Vec<(i64, usize)> {
    received
        .all()
        .iter()
        .map(|(channel, payload)| {
            let json: Value = serde_json::from_str(payload).expect("notification JSON");
            let user = json["userId"].as_str().expect("userId");
            assert_eq!(channel, &format!("{prefix}{user}"), "the user's channel");
            let n = event_number(
                json["type"].as_str().expect("type"),
                user,
                json["referenceId"].as_str(),
            );
            (json["id"].as_i64().expect("id"), n)
        })
        .collect()
}

/// Pairs (offset, value) of one partition whose values do not rise with the offsets.
fn out_of_order(mut pairs: Vec<(i64, i64)>) -> Vec<((i64, i64), (i64, i64))> {
    pairs.sort_unstable();
    pairs
        .windows(2)
        .filter(|w| w[1].1 <= w[0].1)
        .map(|w| (w[0], w[1]))
        .collect()
}

// The test prints the group's changes and the totals for `--nocapture` readers.
#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_instances_without_loss_duplicates_or_reordering() {
    let topics = TopicMap::default();
    let cluster = MockCluster::new(1).expect("mock cluster");
    // The dead-letter topics too: the mock cluster does not answer CreateTopics, and an
    // instance would wait 10 s for ingest's attempt to create them before it joins.
    for topic in topics.topics() {
        for name in [topic.to_owned(), format!("{topic}.DLT")] {
            cluster
                .create_topic(&name, PARTITIONS, 1)
                .expect("create topic");
        }
    }
    let total = topics.topics().len() * PARTITIONS as usize;
    let bootstrap = cluster.bootstrap_servers();
    let db = TestDb::new().await;
    let prefix = format!("{}:notification:", unique_name("redis"));
    let group = unique_name("group");
    let (received, _subscriber) = redis_sub::subscribe(&support::redis_url(), &prefix).await;
    let config = ChildConfig {
        bootstrap: bootstrap.clone(),
        group: group.clone(),
        database_url: db.url.clone(),
        redis_url: support::redis_url(),
        channel_prefix: prefix.clone(),
        kafka_properties: vec![
            ("session.timeout.ms".into(), SESSION_TIMEOUT_MS.to_string()),
            ("heartbeat.interval.ms".into(), "500".into()),
        ],
        store_parallelism: STORE_PARALLELISM,
        shutdown_deadline: Duration::from_secs(10),
    };
    let spawn = |name: &str| IngestProcess::spawn(CHILD_TEST, name, &config);
    let (start_wall_ms, start) = (Utc::now().timestamp_millis(), Instant::now());
    let wall_ms = |at: Instant| start_wall_ms + (at - start).as_millis() as i64;
    let mut changes = Vec::new();

    // Three instances, then the stream.
    let (mut a, mut b, mut c) = (spawn("a"), spawn("b"), spawn("c"));
    let stop = CancellationToken::new();
    let stream = tokio::spawn(produce_steadily(
        bootstrap.clone(),
        topics.clone(),
        stop.clone(),
    ));
    let at = wait_settled(&mut [&mut a, &mut b, &mut c], start, total).await;
    changes.push(settled("a, b, c start", start, at, &[&a, &b, &c], total));
    tokio::time::sleep(STEADY).await;

    // A fourth joins.
    let from = Instant::now();
    let mut d = spawn("d");
    let at = wait_settled(&mut [&mut a, &mut b, &mut c, &mut d], from, total).await;
    changes.push(settled("d joins", from, at, &[&a, &b, &c, &d], total));
    tokio::time::sleep(STEADY).await;

    // One leaves cleanly: it finishes its batches, commits and leaves the group.
    let from = Instant::now();
    b.terminate();
    let status = b.wait_exit(REBALANCE_TIMEOUT).await;
    assert!(status.success(), "b stopped cleanly: {status}");
    let b_exited = from.elapsed();
    let at = wait_settled(&mut [&mut a, &mut c, &mut d], from, total).await;
    changes.push(settled("b stops (SIGTERM)", from, at, &[&a, &c, &d], total));
    tokio::time::sleep(STEADY).await;

    // One is killed: no drain, no commit, no goodbye; the group waits out its session.
    let from = Instant::now();
    c.kill();
    let at = wait_settled(&mut [&mut a, &mut d], from, total).await;
    changes.push(settled("c killed (SIGKILL)", from, at, &[&a, &d], total));
    tokio::time::sleep(STEADY).await;

    stop.cancel();
    let produced = stream.await.expect("the stream");
    let events = produced.len();
    assert!(
        produced.iter().enumerate().all(|(i, p)| p.n == i),
        "events listed by number"
    );
    let drain_from = Instant::now();
    while db.count().await < events as i64 {
        a.assert_running();
        d.assert_running();
        assert!(
            drain_from.elapsed() < DRAIN_TIMEOUT,
            "timed out after {DRAIN_TIMEOUT:?} waiting for a row per event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("every event published", DRAIN_TIMEOUT, || async {
        let seen: HashSet<usize> = published(&received, &prefix)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        seen.len() >= events
    })
    .await;
    let drained = drain_from.elapsed();
    for survivor in [&mut a, &mut d] {
        survivor.terminate();
        let status = survivor.wait_exit(REBALANCE_TIMEOUT).await;
        assert!(
            status.success(),
            "{} stopped cleanly: {status}",
            survivor.name
        );
    }

    // What the group changes were like.
    let rows = stored_rows(&db).await;
    let row_of: HashMap<usize, &StoredRow> = rows.iter().map(|r| (r.n, r)).collect();
    eprintln!(
        "{events} events over {} topics × {PARTITIONS} partitions, {} keys, at {} events/s; \
         store parallelism {STORE_PARALLELISM}, session timeout {SESSION_TIMEOUT_MS} ms",
        kinds().len(),
        kinds().len() * PARTITIONS as usize * KEYS_PER_PARTITION,
        EVENTS_PER_TICK as u128 * 1000 / TICK.as_millis()
    );
    for change in &changes {
        let (from_ms, to_ms) = (wall_ms(change.from), wall_ms(change.settled));
        let during: Vec<&Produced> = produced
            .iter()
            .filter(|p| p.sent_ms >= from_ms && p.sent_ms <= to_ms)
            .collect();
        let longest = during
            .iter()
            .filter_map(|p| row_of.get(&p.n).map(|r| r.created_ms - p.sent_ms))
            .max()
            .unwrap_or(0);
        eprintln!(
            "{:<20} settled after {:>5.2} s, partitions held {:?}; {} events produced meanwhile, \
             the longest produce→row wait among them {:.2} s",
            change.what,
            (change.settled - change.from).as_secs_f64(),
            change.held,
            during.len(),
            longest as f64 / 1000.0
        );
    }
    eprintln!(
        "b exited {:.2} s after SIGTERM; the stream's tail drained {:.2} s after the last change",
        b_exited.as_secs_f64(),
        drained.as_secs_f64()
    );

    // Every event stored exactly once.
    let distinct: HashSet<usize> = rows.iter().map(|r| r.n).collect();
    let missing = (0..events).filter(|n| !distinct.contains(n)).count();
    let unknown = distinct.iter().filter(|n| **n >= events).count();
    let messages = published(&received, &prefix);
    let first_published: HashSet<usize> = messages.iter().map(|(_, n)| *n).collect();
    eprintln!(
        "rows {} for {events} events: {} duplicates, {missing} missing; {} publishes, \
         {} notifications published, {} publishes were copies",
        rows.len(),
        rows.len() - distinct.len(),
        messages.len(),
        first_published.len(),
        messages.len() - first_published.len()
    );
    assert_eq!(rows.len(), distinct.len(), "an event stored twice");
    assert_eq!((missing, unknown), (0, 0), "events missing, rows unknown");

    // Every row published at least once, with its id.
    for row in &rows {
        assert!(
            messages.contains(&(row.id, row.n)),
            "row {} (event {}) was never published",
            row.id,
            row.n
        );
    }
    for (id, n) in &messages {
        assert_eq!(row_of[n].id, *id, "event {n} published with another id");
    }

    // Produce order per key is its partition's offset order (the precondition).
    let mut by_key: BTreeMap<usize, Vec<(i64, i64)>> = BTreeMap::new();
    for p in &produced {
        by_key
            .entry(p.key)
            .or_default()
            .push((p.seq as i64, p.offset));
    }
    for (key, pairs) in by_key {
        assert_eq!(
            out_of_order(pairs),
            [],
            "key {key}: produce order vs offsets"
        );
    }

    // Per partition: ids follow offsets; first publications follow offsets.
    let mut ids: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
    for row in &rows {
        let p = &produced[row.n];
        ids.entry(p.partition())
            .or_default()
            .push((p.offset, row.id));
    }
    let mut firsts: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (arrival, (_, n)) in messages.iter().enumerate() {
        if seen.insert(*n) {
            let p = &produced[*n];
            firsts
                .entry(p.partition())
                .or_default()
                .push((p.offset, arrival as i64));
        }
    }
    let id_violations: Vec<_> = ids
        .into_iter()
        .flat_map(|(partition, pairs)| {
            out_of_order(pairs)
                .into_iter()
                .map(move |w| (partition.clone(), w))
        })
        .collect();
    let publish_violations: Vec<_> = firsts
        .into_iter()
        .flat_map(|(partition, pairs)| {
            out_of_order(pairs)
                .into_iter()
                .map(move |w| (partition.clone(), w))
        })
        .collect();
    eprintln!(
        "per partition: {} rows out of offset order by id, {} first publications out of offset order",
        id_violations.len(),
        publish_violations.len()
    );
    assert_eq!(
        id_violations.first(),
        None,
        "ids against offsets ((offset, id) pairs)"
    );
    assert_eq!(
        publish_violations.first(),
        None,
        "first publications against offsets ((offset, arrival) pairs)"
    );

    // A clean stop of the last members commits everything: nothing would be read again.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for p in &produced {
        let end = ends.entry(p.partition()).or_default();
        *end = (*end).max(p.offset + 1);
    }
    let (bootstrap_, group_) = (bootstrap.clone(), group.clone());
    let committed = tokio::task::spawn_blocking(move || {
        kinds()
            .into_iter()
            .map(|kind| {
                let topic = TopicMap::default().topic(kind).to_owned();
                let offsets = kafka::committed(&bootstrap_, &group_, &topic, PARTITIONS);
                (topic, offsets)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (topic, offsets) in committed {
        for (partition, offset) in offsets.into_iter().enumerate() {
            let end = ends[&(topic.clone(), partition as i32)];
            assert_eq!(
                offset, end,
                "{topic}/{partition}: committed offset after the last stop"
            );
        }
    }

    // The instances' own view: no ERROR; the warnings, counted.
    let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
    for instance in [&a, &b, &c, &d] {
        assert_eq!(
            instance.errors(),
            Vec::<String>::new(),
            "{} logged errors",
            instance.name
        );
        for warning in instance.warnings() {
            // One entry per kind: digits (partitions, offsets) masked, the tail cut.
            let kind: String = warning
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .take(90)
                .collect();
            *warnings.entry(kind).or_default() += 1;
        }
    }
    eprintln!("warnings of the instances, by kind: {warnings:#?}");
}

/// Each instance's process (see `support::ingest_process`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the process of one ingest instance, started by the test above"]
async fn ingest_child_process() {
    ingest_process::run_child().await;
}
