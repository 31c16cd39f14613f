//! `ingest` as a real process, killed with SIGKILL and started again: every event is stored
//! exactly once and published at least once. Nothing of a killed process runs after the
//! signal (no drain, no final commit, no publisher task). The first kill comes in the middle
//! of a healthy stream; the second while the process cannot reach Redis, so the rows it
//! stored were neither published nor committed: the next run must publish them again.
//!
//! Why this file lives in the `ingest` package: Cargo builds a package's binaries before its
//! integration tests and gives them the path (`CARGO_BIN_EXE_ingest`), on any machine and
//! under `cargo test --workspace`; the workspace's `tests` crate gets no such guarantee. The
//! little support the test needs (a fresh database, the mock cluster, a Redis subscriber) is
//! written out below.

use std::collections::HashSet;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared::event::{EventKind, TopicMap};
use sqlx::mysql::MySqlPool;
use sqlx::{Connection, Executor, MySqlConnection};

/// Orders produced before the first kill, and after it.
const BEFORE_KILL: usize = 20_000;
const AFTER_KILL: usize = 2_000;
/// The first kill comes once this many rows are stored: well inside the first stream.
const KILL_AT_ROWS: i64 = 1_000;
const BATCH_SIZE: i64 = 100;
const SETTLE: Duration = Duration::from_secs(120);

fn mysql_server_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn unique(kind: &str) -> String {
    format!(
        "nt_{kind}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A migrated database of its own, dropped at the end even when the test fails.
struct TestDb {
    name: String,
    url: String,
    pool: MySqlPool,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = unique("crash");
        let mut admin = MySqlConnection::connect(&mysql_server_url())
            .await
            .expect("MariaDB/MySQL must be running (see README: Testing)");
        admin
            .execute(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4").as_str())
            .await
            .expect("create the test database");
        let url = format!("{}/{name}", mysql_server_url());
        let pool = ingest::store::connect(&url, 2).await.expect("connect");
        ingest::store::MIGRATOR.run(&pool).await.expect("migrate");
        TestDb { name, url, pool }
    }

    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (mysql_server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = MySqlConnection::connect(&server).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// A Redis URL where nothing listens (connections are refused).
fn dead_redis() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("address").port();
    drop(probe);
    format!("redis://127.0.0.1:{port}/")
}

/// A running `ingest run` process, SIGKILLed on drop.
struct IngestProcess {
    child: Child,
    log: String,
}

impl IngestProcess {
    fn start(
        bootstrap: &str,
        db: &TestDb,
        redis: &str,
        prefix: &str,
        group: &str,
        run: u32,
    ) -> Self {
        let log = format!("{}/{group}-run{run}.log", env!("CARGO_TARGET_TMPDIR"));
        let output = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
            .arg("run")
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("KAFKA_GROUP_ID", group)
            .env(
                "KAFKA_PROPERTIES",
                "session.timeout.ms=6000,heartbeat.interval.ms=500",
            )
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis)
            .env("REDIS_CHANNEL_PREFIX", prefix)
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("INGEST_BATCH_SIZE", BATCH_SIZE.to_string())
            .env("RUST_LOG", "info")
            .env_remove("TOPIC_RENAMES")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .expect("start the ingest binary");
        IngestProcess { child, log }
    }

    /// Panics (with the log's path) if the process is no longer running.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("ingest exited early ({status}); see {}", self.log);
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Records the order numbers published on `prefix*` until the task is aborted.
async fn subscribe(prefix: &str) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("Redis must be running");
    pubsub.psubscribe(format!("{prefix}*")).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload: String = message.get_payload().unwrap_or_default();
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&payload)
                && let Some(order) = json["referenceId"].as_str()
            {
                sink.lock().unwrap().push(order.to_owned());
            }
        }
    });
    (seen, task)
}

async fn produce_orders(producer: &FutureProducer, topic: &str, range: std::ops::Range<usize>) {
    let mut deliveries = Vec::with_capacity(range.len());
    for i in range {
        let order = format!("ORD-{i:06}");
        let value = format!(
            r#"{{"orderNumber":"{order}","userId":"user-{}","totalAmount":{i},"itemCount":1}}"#,
            i % 50
        );
        let record = FutureRecord::to(topic)
            .key(order.as_str())
            .payload(value.as_str());
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for delivery in deliveries {
        delivery
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `db` holds `rows` rows while `process` keeps running.
async fn wait_for_rows(db: &TestDb, process: &mut IngestProcess, rows: i64, what: &str) {
    let deadline = Instant::now() + SETTLE;
    while db.count().await < rows {
        process.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out after {SETTLE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// The test prints what happened (kill points, publishes) for `--nocapture` readers.
#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_process_killed_with_sigkill_resumes_without_loss_or_double_rows() {
    let topics = TopicMap::default();
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in topics.topics() {
        cluster.create_topic(topic, 3, 1).expect("create topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let topic = topics.topic(EventKind::OrderCreated);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let db = TestDb::new().await;
    let prefix = format!("{}:notification:", unique("redis"));
    let group = unique("group");
    let (published, _subscriber) = subscribe(&prefix).await;
    produce_orders(&producer, topic, 0..BEFORE_KILL).await;

    let redis = redis_url();
    let mut first = IngestProcess::start(&bootstrap, &db, &redis, &prefix, &group, 1);
    wait_for_rows(&db, &mut first, KILL_AT_ROWS, "progress before the kill").await;
    first.kill();
    let at_first_kill = db.count().await;
    assert!(
        at_first_kill < BEFORE_KILL as i64,
        "the kill came after the whole stream ({at_first_kill} rows): nothing was interrupted"
    );

    // A run that stores but cannot publish (nothing listens on its Redis port): killed once
    // it stored two batches beyond where it started, none of them published or committed.
    produce_orders(&producer, topic, BEFORE_KILL..BEFORE_KILL + AFTER_KILL).await;
    let mut unpublished = IngestProcess::start(&bootstrap, &db, &dead_redis(), &prefix, &group, 2);
    let stored_before = db.count().await;
    let target = stored_before + 2 * BATCH_SIZE;
    wait_for_rows(&db, &mut unpublished, target, "rows stored without Redis").await;
    unpublished.kill();
    let at_second_kill = db.count().await;

    let mut last = IngestProcess::start(&bootstrap, &db, &redis, &prefix, &group, 3);
    let total = (BEFORE_KILL + AFTER_KILL) as i64;
    wait_for_rows(&db, &mut last, total, "every row after the restarts").await;

    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT reference_id) FROM notifications WHERE type = 'ORDER_CREATED'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (rows, distinct),
        (total, total),
        "each order stored exactly once"
    );
    let expected: HashSet<String> = (0..BEFORE_KILL + AFTER_KILL)
        .map(|i| format!("ORD-{i:06}"))
        .collect();
    wait_until("every order published", SETTLE, || async {
        let seen: HashSet<String> = published.lock().unwrap().iter().cloned().collect();
        expected.is_subset(&seen)
    })
    .await;
    let publishes = published.lock().unwrap().len();
    eprintln!(
        "killed at {at_first_kill} rows, then at {at_second_kill} rows (unpublished); \
         {total} orders, {publishes} publishes ({} published twice)",
        publishes - total as usize
    );
    last.kill();
}
