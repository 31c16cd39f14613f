//! `ingest` end to end against real components: the librdkafka mock cluster (real Kafka
//! protocol on loopback TCP), MariaDB and Redis. Each test has its own cluster, database,
//! consumer group and Redis channel prefix.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use ingest::metrics::Metrics;
use shared::channel::Channels;
use shared::convert::convert;
use shared::event::{EventKind, TopicMap};
use shared::notification::{Notification, Status};
use shared::time::Zone;
use sqlx::Row;
use support::kafka::{self, MockKafka};
use support::proxy::Proxy;
use support::{TestDb, redis_sub, text, unique_name, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(60);
/// After the expected work is seen, how long to watch for anything extra (duplicates).
const QUIET: Duration = Duration::from_millis(1500);
/// How long the outage tests keep a dependency cut.
const OUTAGE: Duration = Duration::from_secs(10);

/// One event per topic, with the exact text each must produce.
fn sample_events() -> Vec<(EventKind, String)> {
    vec![
        (EventKind::UserSignedUp, r#"{"userId":"u-signup","email":"a@b.c","name":"라제"}"#.into()),
        (EventKind::OrderCreated, r#"{"orderNumber":"ORD-1","userId":"u-shop","totalAmount":59000.00,"itemCount":3,"createdAt":[2026,2,6,10,0,0,123456789]}"#.into()),
        (EventKind::OrderCancelled, r#"{"orderNumber":"ORD-1","userId":"u-shop","cancelReason":"고객 요청"}"#.into()),
        (EventKind::PaymentCompleted, r#"{"paymentNumber":"PAY-1","orderNumber":"ORD-1","userId":"u-shop","amount":1234.5}"#.into()),
        (EventKind::PaymentFailed, r#"{"paymentNumber":"PAY-2","orderNumber":"ORD-1","userId":"u-shop","failureReason":"E001: 카드 잔액 부족"}"#.into()),
        (EventKind::DeliveryShipped, r#"{"trackingNumber":"TRK-1","orderNumber":"ORD-1","userId":"u-shop","carrier":"CJ대한통운"}"#.into()),
        (EventKind::CouponIssued, r#"{"userId":100,"couponCode":"C-1","couponName":"여름 세일 쿠폰","discountType":"PERCENTAGE","discountValue":15}"#.into()),
        (EventKind::TimeDealStarted, r#"{"timeDealId":7,"timeDealName":"특가"}"#.into()),
        (EventKind::PostLiked, r#"{"likeId":"like-1","postId":"post-1","postTitle":"러스트 😀","authorId":"u-blog","likerName":"민수"}"#.into()),
        (EventKind::PostCommented, r#"{"commentId":"cm-1","postId":"post-1","postTitle":"러스트","authorId":"u-blog","commenterName":"지수","content":"좋은 글"}"#.into()),
        (EventKind::CommentReplied, r#"{"replyId":"r-1","postId":"post-1","parentCommentId":"cm-1","parentCommentAuthorId":"u-reader","replierName":"영희","content":"감사"}"#.into()),
        (EventKind::UserFollowed, r#"{"followId":"f-1","followeeId":"u-blog","followerName":"철수"}"#.into()),
        (EventKind::TaskCompleted, r#"{"taskId":42,"boardId":10,"userId":"u-ai","title":"요약","status":"IN_REVIEW","timestamp":"2026-02-06T01:00:00.000Z"}"#.into()),
        (EventKind::TaskFailed, r#"{"taskId":43,"boardId":10,"userId":"u-ai","title":"번역","errorMessage":"timeout","timestamp":"2026-02-06T01:00:00.000Z"}"#.into()),
    ]
}

struct Env {
    kafka: MockKafka,
    db: TestDb,
    prefix: String,
    topics: TopicMap,
    group: String,
}

impl Env {
    async fn new() -> Env {
        let topics = TopicMap::default();
        Env {
            kafka: MockKafka::new(&topics),
            db: TestDb::new().await,
            prefix: format!("{}:notification:", unique_name("redis")),
            topics,
            group: unique_name("group"),
        }
    }

    fn config(&self) -> IngestConfig {
        let mut config =
            IngestConfig::new(&self.kafka.bootstrap, &self.db.url, &support::redis_url());
        config.group_id = self.group.clone();
        config.channels = Channels::new(self.prefix.clone());
        config.zone = "Asia/Seoul".parse::<Zone>().unwrap();
        config.retry_interval = Duration::from_millis(50);
        config.shutdown_deadline = Duration::from_secs(5);
        config.kafka_properties = vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("heartbeat.interval.ms".into(), "500".into()),
        ];
        config
    }

    async fn start(&self, mut config: IngestConfig) -> Running {
        config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        let ingest = Ingest::new(config).await.expect("ingest starts");
        let metrics = ingest.metrics();
        let health = ingest.health();
        let shutdown = CancellationToken::new();
        let admin = ingest
            .serve_admin(&shutdown)
            .await
            .expect("admin listener")
            .expect("admin address");
        let task = tokio::spawn(ingest.run(shutdown.clone()));
        Running {
            metrics,
            health,
            admin,
            shutdown,
            task,
        }
    }

    async fn subscribe(&self) -> (redis_sub::Received, JoinHandle<()>) {
        redis_sub::subscribe(&support::redis_url(), &self.prefix).await
    }

    async fn produce_all(&self, events: &[(EventKind, String)]) {
        let producer = kafka::producer(&self.kafka.bootstrap);
        for (kind, value) in events {
            kafka::produce(
                &producer,
                self.topics.topic(*kind),
                Some("k"),
                value.as_bytes(),
            )
            .await;
        }
    }

    fn dlt(&self, kind: EventKind) -> Vec<kafka::ReadRecord> {
        kafka::read_all(
            &self.kafka.bootstrap,
            &format!("{}.DLT", self.topics.topic(kind)),
        )
    }
}

struct Running {
    metrics: Metrics,
    health: std::sync::Arc<ingest::admin::Health>,
    admin: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "ingest did not stop cleanly: {result:?}"
        );
    }

    fn total(&self, outcome: &str) -> u64 {
        self.metrics.total(outcome)
    }

    /// Rebalance events seen so far: (assign, revoke).
    fn rebalances(&self) -> (u64, u64) {
        let count = |event: &str| self.metrics.rebalances.with_label_values(&[event]).get();
        (count("assign"), count("revoke"))
    }
}

async fn stored_notifications(db: &TestDb) -> Vec<Notification> {
    let rows = sqlx::query("SELECT * FROM notifications ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    rows.iter()
        .map(|row| Notification {
            id: row.get("id"),
            user_id: text(row, "user_id"),
            kind: text::<String>(row, "type").parse().unwrap(),
            title: text(row, "title"),
            message: text(row, "message"),
            link: text(row, "link"),
            status: text::<String>(row, "status").parse().unwrap(),
            reference_id: text(row, "reference_id"),
            reference_type: text(row, "reference_type"),
            created_at: row.get::<chrono::NaiveDateTime, _>("created_at").and_utc(),
            read_at: row
                .get::<Option<chrono::NaiveDateTime>, _>("read_at")
                .map(|t| t.and_utc()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_is_stored_and_published_exactly() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let running = env.start(env.config()).await;
    let events = sample_events();

    env.produce_all(&events).await;

    wait_until("13 rows", SETTLE, || async { env.db.count().await == 13 }).await;
    wait_until(
        "13 notifications and 1 time deal published",
        SETTLE,
        || async { received.len() == 14 },
    )
    .await;
    wait_until("timedeal committed", SETTLE, || async {
        running.total("broadcast") == 1
    })
    .await;
    // The time deal: no row, one broadcast on its channel.
    let (_, deal) = events
        .iter()
        .find(|(k, _)| *k == EventKind::TimeDealStarted)
        .unwrap();
    let broadcast = shared::broadcast::time_deal(deal.as_bytes()).unwrap();
    assert!(
        received.all().contains(&(
            format!("{}broadcast:timedeals", env.prefix),
            broadcast.clone()
        )),
        "{broadcast} on the broadcast channel"
    );
    assert!(broadcast.contains(r#""message":"특가 타임딜이 시작되었습니다""#));
    let zone: Zone = "Asia/Seoul".parse().unwrap();
    let stored = stored_notifications(&env.db).await;
    let published: HashMap<String, String> =
        received.all().into_iter().map(|(c, p)| (p, c)).collect();
    for (kind, value) in events
        .iter()
        .filter(|(k, _)| *k != EventKind::TimeDealStarted)
    {
        let expected = convert(*kind, value.as_bytes()).unwrap().unwrap();
        let row = stored
            .iter()
            .find(|n| n.kind == expected.kind)
            .unwrap_or_else(|| panic!("no row for {kind}"));
        assert_eq!(
            (
                &row.user_id,
                &row.title,
                &row.message,
                &row.link,
                &row.reference_id,
                &row.reference_type
            ),
            (
                &expected.user_id,
                &expected.title,
                &expected.message,
                &expected.link,
                &expected.reference_id,
                &expected.reference_type
            ),
            "{kind}: stored row"
        );
        assert_eq!(row.status, Status::Unread);
        let json = row.to_json(&zone);
        let channel = published
            .get(&json)
            .unwrap_or_else(|| panic!("{kind}: {json} was not published"));
        assert_eq!(
            channel,
            &format!("{}{}", env.prefix, row.user_id),
            "{kind}: channel"
        );
    }
    // Spot-check the byte-exact payload of one notification (SPEC 2.5 shape, Seoul time).
    let order = stored
        .iter()
        .find(|n| n.kind.as_str() == "ORDER_CREATED")
        .unwrap();
    let expected_json = format!(
        r#"{{"id":{},"userId":"u-shop","type":"ORDER_CREATED","title":"주문이 접수되었습니다","message":"3개 상품, 59,000원 결제 대기중","link":"/shopping/orders/ORD-1","status":"UNREAD","referenceId":"ORD-1","referenceType":"order","createdAt":"{}","readAt":null}}"#,
        order.id,
        zone.format(order.created_at)
    );
    assert!(published.contains_key(&expected_json), "{expected_json}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_is_stored_once_and_published_once() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let running = env.start(env.config()).await;
    let created = (
        EventKind::OrderCreated,
        r#"{"orderNumber":"ORD-9","userId":"u9","totalAmount":1000,"itemCount":1}"#.to_owned(),
    );
    let cancelled = (
        EventKind::OrderCancelled,
        r#"{"orderNumber":"ORD-9","userId":"u9"}"#.to_owned(),
    );

    env.produce_all(&[created.clone(), created, cancelled])
        .await;

    wait_until("two rows", SETTLE, || async { env.db.count().await == 2 }).await;
    wait_until("duplicate counted", SETTLE, || async {
        running.total("duplicate") == 1
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let messages = received.all();
    assert_eq!(
        messages.len(),
        2,
        "one publish per stored row: {messages:?}"
    );
    assert!(messages.iter().any(|(_, p)| p.contains("ORDER_CREATED")));
    assert!(messages.iter().any(|(_, p)| p.contains("ORDER_CANCELLED")));
    running.stop().await;
    // A graceful stop leaves every processed record committed.
    let (bootstrap, group) = (env.kafka.bootstrap.clone(), env.group.clone());
    let created = env.topics.topic(EventKind::OrderCreated).to_owned();
    let cancelled = env.topics.topic(EventKind::OrderCancelled).to_owned();
    let (created, cancelled) = tokio::task::spawn_blocking(move || {
        let total = |topic: &str| -> i64 {
            kafka::committed(&bootstrap, &group, topic, kafka::PARTITIONS)
                .into_iter()
                .filter(|o| *o >= 0)
                .sum()
        };
        (total(&created), total(&cancelled))
    })
    .await
    .unwrap();
    assert_eq!((created, cancelled), (2, 1), "committed offsets after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlt_and_the_stream_moves_on() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let running = env.start(env.config()).await;
    let topic = env.topics.topic(EventKind::OrderCreated).to_owned();
    let producer = kafka::producer(&env.kafka.bootstrap);
    let big = format!(
        r#"{{"userId":"u","orderNumber":"O","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not-json", b"this is not json".to_vec()),
        ("no-user", br#"{"orderNumber":"ORD-P"}"#.to_vec()),
        ("too-big", big.into_bytes()),
        (
            "wrong-type",
            br#"{"userId":"u","orderNumber":"ORD-W","itemCount":"three"}"#.to_vec(),
        ),
    ];
    // All on one partition (same key), followed by a good record.
    for (_, value) in &poison {
        kafka::produce(&producer, &topic, Some("same-key"), value).await;
    }
    let good = br#"{"userId":"u-good","orderNumber":"ORD-G","totalAmount":10,"itemCount":1}"#;
    kafka::produce(&producer, &topic, Some("same-key"), good).await;

    wait_until("the good record stored", SETTLE, || async {
        env.db.count().await == 1
    })
    .await;
    wait_until("4 dead letters counted", SETTLE, || async {
        running.total("dead_lettered") == 4
    })
    .await;
    let bootstrap = env.kafka.bootstrap.clone();
    let dlt_topic = format!("{topic}.DLT");
    let letters = tokio::task::spawn_blocking(move || kafka::read_all(&bootstrap, &dlt_topic))
        .await
        .unwrap();
    assert_eq!(letters.len(), 4, "every poison record is in the DLT");
    let mut letters = letters;
    letters.sort_by_key(|l| {
        i64::from_be_bytes(
            l.header("kafka_dlt-original-offset")
                .unwrap()
                .try_into()
                .unwrap(),
        )
    });
    let source_partition = i32::from_be_bytes(
        letters[0]
            .header("kafka_dlt-original-partition")
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let expected_kinds = [
        "InvalidEvent.MalformedJson",
        "InvalidEvent.MissingField",
        "InvalidEvent.TooLarge",
        "InvalidEvent.MalformedJson",
    ];
    for (i, (letter, (_, value))) in letters.iter().zip(&poison).enumerate() {
        assert_eq!(
            letter.value.as_deref(),
            Some(value.as_slice()),
            "original value bytes unchanged"
        );
        assert_eq!(
            letter.key.as_deref(),
            Some(b"same-key".as_slice()),
            "original key"
        );
        assert_eq!(letter.partition, source_partition, "same partition number");
        assert_eq!(
            letter.header_text("kafka_dlt-original-topic").as_deref(),
            Some(topic.as_str())
        );
        assert_eq!(
            letter
                .header_text("kafka_dlt-original-consumer-group")
                .as_deref(),
            Some(env.group.as_str())
        );
        assert_eq!(
            letter.header_text("kafka_dlt-exception-fqcn").as_deref(),
            Some(expected_kinds[i])
        );
        assert!(
            !letter
                .header_text("kafka_dlt-exception-message")
                .unwrap()
                .is_empty()
        );
        let ts = i64::from_be_bytes(
            letter
                .header("kafka_dlt-original-timestamp")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert!(ts > 1_600_000_000_000, "original timestamp in ms: {ts}");
    }
    let offsets: Vec<i64> = letters
        .iter()
        .map(|l| {
            i64::from_be_bytes(
                l.header("kafka_dlt-original-offset")
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3]);
    // The group's committed offset moved past the poison and the good record.
    let (bootstrap, group, t) = (
        env.kafka.bootstrap.clone(),
        env.group.clone(),
        topic.clone(),
    );
    wait_until("offset committed past the poison", SETTLE, || {
        let (bootstrap, group, t) = (bootstrap.clone(), group.clone(), t.clone());
        async move {
            let committed = tokio::task::spawn_blocking(move || {
                kafka::committed(&bootstrap, &group, &t, kafka::PARTITIONS)
            })
            .await
            .unwrap();
            committed[source_partition as usize] == 5
        }
    })
    .await;
    assert_eq!(received.len(), 1, "only the good record was published");
    running.stop().await;
}

/// Produces `n` distinct order events spread over all partitions.
async fn produce_orders(env: &Env, from: usize, n: usize) -> Vec<String> {
    let producer = kafka::producer(&env.kafka.bootstrap);
    let topic = env.topics.topic(EventKind::OrderCreated);
    let mut orders = Vec::with_capacity(n);
    let mut pending = Vec::with_capacity(n);
    for i in from..from + n {
        let order = format!("ORD-{i:06}");
        let value = format!(
            r#"{{"orderNumber":"{order}","userId":"user-{}","totalAmount":{i},"itemCount":1}}"#,
            i % 50
        );
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(order.as_str())
            .payload(value.as_str());
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        orders.push(order);
    }
    for delivery in pending {
        delivery
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    orders
}

async fn assert_each_order_stored_once(db: &TestDb, orders: &[String]) {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(reference_id AS CHAR) FROM notifications WHERE type = 'ORDER_CREATED'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), orders.len(), "one row per event");
    let distinct: HashSet<&String> = rows.iter().collect();
    assert_eq!(distinct.len(), orders.len(), "no order stored twice");
    for order in orders {
        assert!(distinct.contains(order), "{order} is missing");
    }
}

fn published_orders(received: &redis_sub::Received) -> HashSet<String> {
    received
        .all()
        .iter()
        .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["referenceId"].as_str().map(str::to_owned))
        .collect()
}

fn redis_addr() -> std::net::SocketAddr {
    "127.0.0.1:6379".parse().unwrap()
}

fn mysql_addr() -> std::net::SocketAddr {
    "127.0.0.1:3306".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_and_doubles_nothing() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let proxy = Proxy::start(mysql_addr()).await;
    let mut config = env.config();
    config.database_url = env
        .db
        .url
        .replace("127.0.0.1:3306", &proxy.addr.to_string());
    config.batch_size = 200;
    let running = env.start(config).await;

    let mut orders = produce_orders(&env, 0, 2500).await;
    wait_until("some rows before the outage", SETTLE, || async {
        env.db.count().await > 0
    })
    .await;
    proxy.cut();
    orders.extend(produce_orders(&env, 2500, 2500).await);
    wait_until("readiness lost", SETTLE, || async {
        !running.health.ready()
    })
    .await;
    // What an outage means: not one row gets through while the proxy is cut, and the
    // admin port says "not ready" the whole time.
    let at_cut = env.db.count().await;
    let cut_until = std::time::Instant::now() + OUTAGE;
    while std::time::Instant::now() < cut_until {
        assert_eq!(
            env.db.count().await,
            at_cut,
            "rows written through a cut proxy"
        );
        let readyz = http_get(running.admin, "/readyz").await;
        assert!(
            readyz.starts_with("HTTP/1.1 503"),
            "ready while MySQL is cut: {readyz}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(at_cut < 5000, "the cut came before the end of the stream");
    proxy.restore();

    wait_until("5000 rows", Duration::from_secs(120), || async {
        env.db.count().await == 5000
    })
    .await;
    assert_each_order_stored_once(&env.db, &orders).await;
    wait_until("all published", SETTLE, || async {
        published_orders(&received).len() == 5000
    })
    .await;
    assert_eq!(running.total("dead_lettered"), 0);
    assert!(
        env.dlt(EventKind::OrderCreated).is_empty(),
        "nothing dead-lettered for an outage"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_delays_publishes_but_loses_none() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let proxy = Proxy::start(redis_addr()).await;
    let mut config = env.config();
    config.redis_url = format!("redis://{}/", proxy.addr);
    config.batch_size = 200;
    let running = env.start(config).await;

    let mut orders = produce_orders(&env, 0, 1000).await;
    wait_until("first publishes", SETTLE, || async {
        !received.all().is_empty()
    })
    .await;
    proxy.cut();
    orders.extend(produce_orders(&env, 1000, 1000).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();

    wait_until(
        "every order published",
        Duration::from_secs(120),
        || async { published_orders(&received).len() == 2000 },
    )
    .await;
    assert_each_order_stored_once(&env.db, &orders).await;
    assert_eq!(running.total("dead_lettered"), 0);
    running.stop().await;
}

/// How many times the independent subscriber saw each order published.
fn publishes_per_order(received: &redis_sub::Received) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, payload) in received.all() {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&payload)
            && let Some(order) = json["referenceId"].as_str()
        {
            *counts.entry(order.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// A `max.poll.interval.ms` far below the default 300 s, so an outage can outlast it
/// (librdkafka requires it to be at least `session.timeout.ms`, 6 s in these tests).
const SHORT_POLL_INTERVAL: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_max_poll_interval_keeps_the_group_and_publishes_each_once() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let proxy = Proxy::start(mysql_addr()).await;
    let mut config = env.config();
    config.database_url = env
        .db
        .url
        .replace("127.0.0.1:3306", &proxy.addr.to_string());
    config.batch_size = 100;
    config.kafka_properties.push((
        "max.poll.interval.ms".into(),
        SHORT_POLL_INTERVAL.as_millis().to_string(),
    ));
    let running = env.start(config).await;
    let mut orders = produce_orders(&env, 0, 500).await;
    wait_until("500 rows before the outage", SETTLE, || async {
        env.db.count().await == 500
    })
    .await;
    wait_until("500 publishes before the outage", SETTLE, || async {
        published_orders(&received).len() == 500
    })
    .await;

    let rebalances_before = running.rebalances();

    proxy.cut();
    orders.extend(produce_orders(&env, 500, 1500).await);
    wait_until("readiness lost", SETTLE, || async {
        !running.health.ready()
    })
    .await;
    wait_until("fetching paused", SETTLE, || async {
        running.metrics.consumer_paused.get() == 1
    })
    .await;
    // The outage itself: two and a half poll intervals without the database.
    tokio::time::sleep(SHORT_POLL_INTERVAL * 5 / 2).await;
    proxy.restore();

    wait_until("2000 rows", Duration::from_secs(120), || async {
        env.db.count().await == 2000
    })
    .await;
    assert_each_order_stored_once(&env.db, &orders).await;
    wait_until("every order published", SETTLE, || async {
        published_orders(&received).len() == 2000
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let counts = publishes_per_order(&received);
    let mut repeated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    repeated.sort();
    assert!(
        repeated.is_empty(),
        "{} orders were published more than once (consumed again after the group was left), e.g. {:?}",
        repeated.len(),
        repeated.first()
    );
    assert_eq!(running.total("replayed"), 0, "no record was consumed twice");
    assert_eq!(
        running.rebalances(),
        rebalances_before,
        "the group kept this member through the outage"
    );
    assert_eq!(running.metrics.consumer_paused.get(), 0, "fetching resumed");
    running.stop().await;
}

/// Waits until `running` has paused fetching.
async fn wait_paused(running: &Running, who: &str) {
    wait_until(&format!("{who} paused"), SETTLE, || async {
        running.metrics.consumer_paused.get() == 1
    })
    .await;
}

/// For a few seconds, `running` stays paused and buffers at most about one batch.
async fn assert_stays_paused(running: &Running, batch_size: i64) {
    let watch_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watch_until {
        assert_eq!(running.metrics.consumer_paused.get(), 1, "still paused");
        let buffered = running.metrics.pending_records.get();
        assert!(
            buffered <= 2 * batch_size,
            "{buffered} records buffered while paused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_during_and_after_a_pause_pause_and_resume_the_right_partitions() {
    const BATCH: usize = 50;
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let proxy = Proxy::start(mysql_addr()).await;
    let mut config = env.config();
    config.database_url = env
        .db
        .url
        .replace("127.0.0.1:3306", &proxy.addr.to_string());
    config.batch_size = BATCH;
    config.kafka_properties.push((
        "max.poll.interval.ms".into(),
        SHORT_POLL_INTERVAL.as_millis().to_string(),
    ));
    let a = env.start(config.clone()).await;
    let b = env.start(config.clone()).await;
    let mut orders = Vec::new();
    for round in 0..60 {
        orders.extend(produce_orders(&env, round * 100, 100).await);
        if a.total("stored") > 0 && b.total("stored") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before_outage = orders.len();
    wait_until("rows before the outage", SETTLE, || async {
        env.db.count().await == before_outage as i64
    })
    .await;

    proxy.cut();
    orders.extend(produce_orders(&env, 10_000, 1500).await);
    wait_paused(&a, "the first member").await;
    wait_paused(&b, "the second member").await;
    // The second member leaves mid-outage: the first gets partitions it never had, and
    // must pause them at once.
    let (assigned, _) = a.rebalances();
    b.stop().await;
    wait_until("the first member took over", SETTLE, || async {
        a.rebalances().0 > assigned
    })
    .await;
    assert_stays_paused(&a, BATCH as i64).await;
    // A third member joins mid-outage: the first gives up some of the partitions it paused.
    let (assigned, _) = a.rebalances();
    let c = env.start(config).await;
    wait_until("the third member joined", SETTLE, || async {
        a.rebalances().0 > assigned
    })
    .await;
    assert_stays_paused(&a, BATCH as i64).await;
    proxy.restore();

    let total = orders.len() as i64;
    wait_until(
        "every row after the outage",
        Duration::from_secs(120),
        || async { env.db.count().await == total },
    )
    .await;
    // The third member leaves after the outage: the first gets back partitions it had
    // paused before losing them, and must fetch them.
    let (assigned, _) = a.rebalances();
    c.stop().await;
    wait_until("the first member took over again", SETTLE, || async {
        a.rebalances().0 > assigned
    })
    .await;
    orders.extend(produce_orders(&env, 20_000, 600).await);
    let total = orders.len() as i64;
    wait_until(
        "every row, all partitions fetched",
        Duration::from_secs(60),
        || async { env.db.count().await == total },
    )
    .await;
    assert_each_order_stored_once(&env.db, &orders).await;
    wait_until("every order published", SETTLE, || async {
        published_orders(&received).len() == orders.len()
    })
    .await;
    assert_eq!(a.metrics.consumer_paused.get(), 0, "fetching resumed");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_dlt_refuses_for_good_is_skipped_and_the_partition_moves_on() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let mut config = env.config();
    // The producer's own size limit refuses letters over 1 MB (MsgSizeTooLarge, permanent),
    // while the input topic took a 2 MiB record.
    config
        .kafka_properties
        .push(("message.max.bytes".into(), "1000000".into()));
    let running = env.start(config).await;
    let topic = env.topics.topic(EventKind::OrderCreated).to_owned();
    let producer = kafka::producer(&env.kafka.bootstrap);
    let big = format!(
        r#"{{"userId":"u","orderNumber":"O","pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    // All on one partition (same key): the refused letter, a letter the DLT takes, a good record.
    kafka::produce(&producer, &topic, Some("same-key"), big.as_bytes()).await;
    kafka::produce(
        &producer,
        &topic,
        Some("same-key"),
        br#"{"orderNumber":"ORD-P"}"#,
    )
    .await;
    let good = br#"{"userId":"u-good","orderNumber":"ORD-G","totalAmount":10,"itemCount":1}"#;
    kafka::produce(&producer, &topic, Some("same-key"), good).await;

    wait_until(
        "the record behind the refused letter stored",
        SETTLE,
        || async { env.db.count().await == 1 },
    )
    .await;
    wait_until("its publish", SETTLE, || async { received.len() == 1 }).await;
    let (bootstrap, group, t) = (
        env.kafka.bootstrap.clone(),
        env.group.clone(),
        topic.clone(),
    );
    wait_until("all three offsets committed", SETTLE, || {
        let (bootstrap, group, t) = (bootstrap.clone(), group.clone(), t.clone());
        async move {
            let committed = tokio::task::spawn_blocking(move || {
                kafka::committed(&bootstrap, &group, &t, kafka::PARTITIONS)
            })
            .await
            .unwrap();
            committed.contains(&3)
        }
    })
    .await;
    let letters = env.dlt(EventKind::OrderCreated);
    assert_eq!(
        letters.len(),
        1,
        "only the small poison record is in the DLT"
    );
    assert_eq!(
        letters[0].value.as_deref(),
        Some(br#"{"orderNumber":"ORD-P"}"#.as_slice())
    );
    assert_eq!(running.total("dead_lettered"), 1);
    assert_eq!(
        running.total("dead_letter_failed"),
        1,
        "the lost letter is counted"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_their_partition_when_the_dlt_grows_after_start() {
    let env = Env::new().await;
    let running = env.start(env.config()).await;
    let topic = env.topics.topic(EventKind::OrderCreated).to_owned();
    env.produce_all(&[(
        EventKind::OrderCreated,
        r#"{"orderNumber":"ORD-1","userId":"u","totalAmount":1}"#.to_owned(),
    )])
    .await;
    wait_until("consuming", SETTLE, || async { env.db.count().await == 1 }).await;

    // librdkafka's mock cluster cannot add partitions to a topic (no CreatePartitions), so the
    // DLT grows from nothing (unknown to ingest at start) to as many partitions as its source.
    env.kafka
        .cluster
        .create_topic(&format!("{topic}.DLT"), kafka::PARTITIONS, 1)
        .expect("the DLT did not exist yet");
    let producer = kafka::producer(&env.kafka.bootstrap);
    for partition in 0..kafka::PARTITIONS {
        // One key for all: a partitioner would put every letter on the same DLT partition.
        let record = rdkafka::producer::FutureRecord::to(&topic)
            .partition(partition)
            .key("one-key")
            .payload("not json");
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    wait_until("three dead letters", SETTLE, || async {
        running.total("dead_lettered") == 3
    })
    .await;
    let letters = env.dlt(EventKind::OrderCreated);
    assert_eq!(letters.len(), 3);
    for letter in &letters {
        let original = i32::from_be_bytes(
            letter
                .header("kafka_dlt-original-partition")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            letter.partition, original,
            "a letter is on its source's partition number"
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_survive_losing_one() {
    let env = Env::new().await;
    let (received, _sub) = env.subscribe().await;
    let mut config = env.config();
    config.batch_size = 50;
    let a = env.start(config.clone()).await;
    let b = env.start(config).await;
    // Keep producing until the group has settled on both members and each has stored some.
    let mut orders = Vec::new();
    for round in 0..60 {
        orders.extend(produce_orders(&env, round * 100, 100).await);
        if a.total("stored") > 0 && b.total("stored") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        a.total("stored") > 0 && b.total("stored") > 0,
        "both instances got partitions"
    );
    let before_kill = orders.len();
    b.task.abort();
    let _ = b.task.await;
    orders.extend(produce_orders(&env, 10_000, 1000).await);
    let total = (before_kill + 1000) as i64;

    wait_until("every row", Duration::from_secs(120), || async {
        env.db.count().await == total
    })
    .await;
    assert_each_order_stored_once(&env.db, &orders).await;
    wait_until("all published", SETTLE, || async {
        published_orders(&received).len() == total as usize
    })
    .await;
    a.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_reports_health_readiness_and_metrics() {
    let env = Env::new().await;
    let mut config = env.config();
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let ingest = Ingest::new(config).await.unwrap();
    let admin_shutdown = CancellationToken::new();
    let addr = ingest.serve_admin(&admin_shutdown).await.unwrap().unwrap();
    assert!(
        http_get(addr, "/readyz").await.starts_with("HTTP/1.1 503"),
        "not ready before consuming"
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));
    env.produce_all(&[(
        EventKind::OrderCreated,
        r#"{"orderNumber":"ORD-M","userId":"u","totalAmount":1}"#.to_owned(),
    )])
    .await;

    wait_until("stored", SETTLE, || async { env.db.count().await == 1 }).await;
    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    // The row is committed before the notification is published and counted: wait for both.
    let stored = r#"ingest_records_total{outcome="stored",topic="shopping.order.created"} 1"#;
    let published = "ingest_kafka_to_publish_seconds_count 1";
    wait_until("the batch's metrics", SETTLE, || async {
        let metrics = http_get(addr, "/metrics").await;
        metrics.contains(stored) && metrics.contains(published)
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    admin_shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt_replay_republishes_dead_letters_to_their_original_topic() {
    let env = Env::new().await;
    let topic = env.topics.topic(EventKind::PaymentFailed).to_owned();
    let dlt = ingest::dlt::DltProducer::new(&env.kafka.bootstrap, &[], &env.group).unwrap();
    dlt.ensure_topics(&env.kafka.bootstrap, &[], &[topic.as_str()], 1)
        .await;
    for (partition, offset, value) in [(2, 7, "first"), (1, 8, "second"), (2, 9, "third")] {
        let letter = ingest::record::DeadLetter {
            record: ingest::record::Record {
                topic: topic.clone(),
                partition,
                offset,
                timestamp_ms: Some(1_770_000_000_000),
                key: Some(format!("key-{offset}").into_bytes()),
                value: Some(value.as_bytes().to_vec()),
            },
            error_kind: "InvalidEvent.MissingField".into(),
            error_message: "required field `userId` is missing or blank".into(),
        };
        dlt.send(&letter).await.unwrap();
    }

    let request = ingest::replay::ReplayRequest {
        bootstrap_servers: env.kafka.bootstrap.clone(),
        properties: Vec::new(),
        dlt_topic: format!("{topic}.DLT"),
        from_offset: None,
        limit: Some(2),
    };
    let replayed = ingest::replay::replay(&request).await.unwrap();

    assert_eq!(replayed, 2, "the limit is honoured");
    let bootstrap = env.kafka.bootstrap.clone();
    let t = topic.clone();
    let back = tokio::task::spawn_blocking(move || kafka::read_all(&bootstrap, &t))
        .await
        .unwrap();
    assert_eq!(back.len(), 2);
    for record in &back {
        let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
        let (partition, offset) = match value.as_str() {
            "first" => (2, 7),
            "second" => (1, 8),
            "third" => (2, 9),
            other => panic!("unexpected {other}"),
        };
        assert_eq!(
            record.partition, partition,
            "back on its original partition"
        );
        assert_eq!(
            record.key.as_deref(),
            Some(format!("key-{offset}").as_bytes())
        );
    }
    let mut bad = request.clone();
    bad.dlt_topic = topic;
    assert!(
        ingest::replay::replay(&bad).await.is_err(),
        "only DLT topics are replayed"
    );
}
