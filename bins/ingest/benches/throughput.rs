//! Ingest throughput against the machine's physical limit, in one run:
//!
//! 1. produces N events (mixed topics, ~10% duplicates) into the broker (not timed);
//! 2. runs ingest in-process until every record is processed (stored, deduplicated or
//!    skipped) — timed from the first stored record to the last, so the consumer-group
//!    join is not counted;
//! 3. baseline: the same N rows written straight into MariaDB with multi-row
//!    `INSERT IGNORE` (500 rows a statement, autocommit) into a fresh table;
//! 4. the store alone: the same rows through `Store::store_batch`, batches split over
//!    `--store-parallelism` concurrent transactions as ingest splits them.
//!
//! Prints events/s for each, ingest's store conflicts, and the ratio of ingest to the
//! baseline, and writes them to `target/bench-results/throughput.json` (read by
//! `scripts/scaling.py`). Run: `cargo bench -p ingest --bench throughput` (`-- --store-parallelism 1`
//! to store each batch in one transaction instead of ingest's default two; `-- --events 200000 --bootstrap
//! 127.0.0.1:9092` for an external broker such as tansu).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::future::join_all;
use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use ingest::store::{Incoming, SourceRecord, Store};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared::channel::Channels;
use shared::convert::convert;
use shared::event::{EventKind, TopicMap};
use sqlx::{Connection, Executor, MySqlConnection, QueryBuilder};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
/// Partitions over all 12 topics.
const PARTITIONS_TOTAL: usize = 12 * PARTITIONS as usize;
const BASELINE_ROWS_PER_STATEMENT: usize = 500;

#[derive(Parser)]
struct Args {
    /// Events to produce.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// External broker; the in-process librdkafka mock cluster when absent.
    #[arg(long)]
    bootstrap: Option<String>,
    /// MySQL server URL (no database).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// Ingest batch size.
    #[arg(long, default_value_t = 4000)]
    batch_size: usize,
    /// Concurrent store transactions per batch (`INGEST_STORE_PARALLELISM`), for ingest and
    /// for the store alone.
    #[arg(long, default_value_t = 2)]
    store_parallelism: usize,
    /// Results file; `target/bench-results/throughput.json` when absent.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Cargo passes --bench; ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One event per kind that makes a notification; `i` makes it unique.
fn event(i: usize) -> (EventKind, String) {
    let user = format!("user-{}", i % 5000);
    match i % 12 {
        0 => (
            EventKind::OrderCreated,
            format!(
                r#"{{"orderNumber":"ORD-{i}","userId":"{user}","totalAmount":59000.00,"itemCount":3,"createdAt":[2026,2,6,10,0,0]}}"#
            ),
        ),
        1 => (
            EventKind::OrderCancelled,
            format!(r#"{{"orderNumber":"ORD-{i}","userId":"{user}","cancelReason":"고객 요청"}}"#),
        ),
        2 => (
            EventKind::PaymentCompleted,
            format!(
                r#"{{"paymentNumber":"PAY-{i}","orderNumber":"ORD-{i}","userId":"{user}","amount":1234.5}}"#
            ),
        ),
        3 => (
            EventKind::PaymentFailed,
            format!(
                r#"{{"paymentNumber":"PAY-{i}","orderNumber":"ORD-{i}","userId":"{user}","failureReason":"E001: 카드 잔액 부족"}}"#
            ),
        ),
        4 => (
            EventKind::DeliveryShipped,
            format!(
                r#"{{"trackingNumber":"TRK-{i}","orderNumber":"ORD-{i}","userId":"{user}","carrier":"CJ대한통운"}}"#
            ),
        ),
        5 => (
            EventKind::CouponIssued,
            format!(
                r#"{{"userId":"{user}","couponCode":"C-{i}","couponName":"여름 세일 쿠폰","discountType":"PERCENTAGE","discountValue":15}}"#
            ),
        ),
        6 => (
            EventKind::PostLiked,
            format!(
                r#"{{"likeId":"like-{i}","postId":"post-{i}","postTitle":"러스트로 만드는 알림 파이프라인","authorId":"{user}","likerName":"민수"}}"#
            ),
        ),
        7 => (
            EventKind::PostCommented,
            format!(
                r#"{{"commentId":"cm-{i}","postId":"post-{i}","postTitle":"러스트","authorId":"{user}","commenterName":"지수","content":"좋은 글 감사합니다"}}"#
            ),
        ),
        8 => (
            EventKind::CommentReplied,
            format!(
                r#"{{"replyId":"r-{i}","postId":"p-{i}","parentCommentId":"c-{i}","parentCommentAuthorId":"{user}","replierName":"영희","content":"감사"}}"#
            ),
        ),
        9 => (
            EventKind::UserFollowed,
            format!(r#"{{"followId":"f-{i}","followeeId":"{user}","followerName":"철수"}}"#),
        ),
        10 => (
            EventKind::TaskCompleted,
            format!(
                r#"{{"taskId":{i},"boardId":10,"userId":"{user}","title":"요약","agentName":"Claude"}}"#
            ),
        ),
        _ => (
            EventKind::TaskFailed,
            format!(
                r#"{{"taskId":{i},"boardId":10,"userId":"{user}","title":"번역","errorMessage":"timeout"}}"#
            ),
        ),
    }
}

/// N events where about every tenth repeats an earlier one (same topic and value).
fn workload(n: usize) -> Vec<(EventKind, String)> {
    (0..n)
        .map(|i| if i % 10 == 9 { event(i - 5) } else { event(i) })
        .collect()
}

async fn fresh_database(server: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = MySqlConnection::connect(server).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4").as_str())
        .await?;
    let url = format!("{server}/{name}");
    let pool = ingest::store::connect(&url, 1).await?;
    ingest::store::MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(url)
}

async fn drop_database(server: &str, name: &str) {
    if let Ok(mut admin) = MySqlConnection::connect(server).await {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
            .await;
    }
}

async fn produce(
    bootstrap: &str,
    topics: &TopicMap,
    events: &[(EventKind, String)],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut pending = Vec::with_capacity(10_000);
    for (i, (kind, value)) in events.iter().enumerate() {
        let key = i.to_string();
        let record = FutureRecord::to(topics.topic(*kind))
            .key(key.as_str())
            .payload(value.as_str());
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() == 10_000 {
            for delivery in pending.drain(..) {
                delivery.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn run_ingest(
    args: &Args,
    bootstrap: &str,
    topics: &TopicMap,
    database_url: &str,
    n: usize,
) -> anyhow::Result<(f64, Duration)> {
    let mut config = IngestConfig::new(bootstrap, database_url, &args.redis);
    config.group_id = format!("bench-{}", rand::random::<u32>());
    config.topics = topics.clone();
    config.channels = Channels::new(format!("bench-{}:notification:", rand::random::<u32>()));
    config.batch_size = args.batch_size;
    config.store_parallelism = args.store_parallelism;
    let ingest = Ingest::new(config).await?;
    let metrics = ingest.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));
    let processed = || {
        [
            "stored",
            "duplicate",
            "replayed",
            "skipped",
            "dead_lettered",
        ]
        .iter()
        .map(|o| metrics.total(o))
        .sum::<u64>() as usize
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let (start, at_start) = loop {
        let done = processed();
        if done > 0 {
            break (Instant::now(), done);
        }
        anyhow::ensure!(Instant::now() < deadline, "ingest processed nothing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    while processed() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "ingest did not finish: {} of {n}",
            processed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let batches = metrics.batch_size.get_sample_count();
    println!(
        "          {batches} batches, {:.0} records a batch on average",
        metrics.batch_size.get_sample_sum() / batches.max(1) as f64
    );
    let conflicts = counts(&metrics.store_conflicts);
    let outages = counts(&metrics.outage_waits);
    println!("          store conflicts: {conflicts}; outage waits: {outages}");
    shutdown.cancel();
    task.await??;
    let rate = (n - at_start) as f64 / elapsed.as_secs_f64();
    Ok((rate, elapsed))
}

/// A counter family as `label=value` pairs ("none" when empty).
fn counts(family: &prometheus::IntCounterVec) -> String {
    use prometheus::core::Collector;
    let pairs: Vec<String> = family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let label = m.get_label().first().map_or("", |l| l.value());
            format!("{label}={}", m.get_counter().get_value())
        })
        .collect();
    if pairs.is_empty() {
        "none".to_owned()
    } else {
        pairs.join(", ")
    }
}

async fn baseline(server: &str, events: &[(EventKind, String)]) -> anyhow::Result<(f64, Duration)> {
    let name = format!("bench_raw_{}", rand::random::<u32>());
    let url = fresh_database(server, &name).await?;
    let rows: Vec<_> = events
        .iter()
        .map(|(k, v)| convert(*k, v.as_bytes()).unwrap().unwrap())
        .collect();
    let mut conn = MySqlConnection::connect(&url).await?;
    let created_at = chrono::Utc::now().naive_utc();
    let start = Instant::now();
    for chunk in rows.chunks(BASELINE_ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<sqlx::MySql>::new(
            "INSERT IGNORE INTO notifications (user_id, type, title, message, link, status, reference_id, reference_type, created_at, dedup_key, source_record, write_batch) ",
        );
        insert.push_values(chunk, |mut row, n| {
            row.push_bind(n.user_id.as_str())
                .push_bind(n.kind.as_str())
                .push_bind(n.title.as_str())
                .push_bind(n.message.as_str())
                .push_bind(n.link.as_deref())
                .push_bind("UNREAD")
                .push_bind(n.reference_id.as_deref())
                .push_bind(n.reference_type.as_deref())
                .push_bind(created_at)
                .push_bind(n.dedup_key().to_vec())
                .push_bind(None::<String>)
                .push_bind(0i64);
        });
        insert.build().execute(&mut conn).await?;
    }
    let elapsed = start.elapsed();
    conn.close().await?;
    drop_database(server, &name).await;
    Ok((events.len() as f64 / elapsed.as_secs_f64(), elapsed))
}

/// The store alone (no Kafka, no Redis): the same rows in batches of `batch_size`, each
/// batch split over `parallelism` concurrent transactions as ingest splits it (by
/// partition, here `i % PARTITIONS_TOTAL`, each key written by one transaction, the rest
/// held back for a last one).
async fn store_only(
    server: &str,
    events: &[(EventKind, String)],
    batch_size: usize,
    parallelism: usize,
) -> anyhow::Result<(f64, Duration, String)> {
    let name = format!("bench_store_{}", rand::random::<u32>());
    let url = fresh_database(server, &name).await?;
    let connections = u32::try_from(parallelism.max(1))?;
    let conflicts = ingest::metrics::Metrics::new().store_conflicts;
    let store = Store::new(ingest::store::connect(&url, connections).await?)
        .with_conflict_counter(conflicts.clone());
    let incoming: Vec<Incoming> = events
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Incoming {
            notification: convert(*k, v.as_bytes()).unwrap().unwrap(),
            source: Some(SourceRecord {
                topic: "bench".into(),
                partition: (i % PARTITIONS_TOTAL) as i32,
                offset: i as i64,
            }),
        })
        .collect();
    let start = Instant::now();
    for batch in incoming.chunks(batch_size) {
        let inputs = batch.iter().map(|i| {
            let source = i.source.as_ref().expect("source");
            (
                source.topic.as_str(),
                source.partition,
                i.notification.dedup_key(),
            )
        });
        let split = ingest::parallel::split(inputs, parallelism);
        let part = |positions: &[usize]| -> Vec<Incoming> {
            positions.iter().map(|p| batch[*p].clone()).collect()
        };
        let parts: Vec<Vec<Incoming>> = split.groups.iter().map(|g| part(g)).collect();
        for stored in join_all(parts.iter().map(|p| store.store_batch(p))).await {
            stored?;
        }
        store.store_batch(&part(&split.held_back)).await?;
    }
    let elapsed = start.elapsed();
    store.pool().close().await;
    drop_database(server, &name).await;
    let rate = events.len() as f64 / elapsed.as_secs_f64();
    Ok((rate, elapsed, counts(&conflicts)))
}

fn create_topics_external(bootstrap: &str, topics: &TopicMap) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let names = topics.topics();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(admin.create_topics(&new, &AdminOptions::new())))
            .join()
    })
    .map_err(|_| anyhow::anyhow!("admin thread panicked"))??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Start::now();
    shared::telemetry::init(shared::telemetry::LogFormat::Text);
    let run = rand::random::<u32>();
    let mut topics = TopicMap::default();
    for kind in EventKind::ALL {
        topics.set(kind, format!("bench{run}.{}", kind.default_topic()));
    }
    let mock;
    let (bootstrap, broker) = match &args.bootstrap {
        Some(b) => {
            create_topics_external(b, &topics)?;
            (b.clone(), format!("external broker at {b}"))
        }
        None => {
            mock = MockCluster::new(1)?;
            for topic in topics.topics() {
                mock.create_topic(topic, PARTITIONS, 1)?;
                mock.create_topic(&format!("{topic}.DLT"), PARTITIONS, 1)?;
            }
            (
                mock.bootstrap_servers(),
                "librdkafka mock cluster (in-process)".to_owned(),
            )
        }
    };
    let events = workload(args.events);
    let duplicates = args.events / 10;
    println!(
        "workload: {} events over 12 topics, ~{duplicates} duplicates; broker: {broker}",
        events.len()
    );

    let produce_start = Instant::now();
    produce(&bootstrap, &topics, &events).await?;
    println!("produced in {:.1}s", produce_start.elapsed().as_secs_f64());

    let db_name = format!("bench_ingest_{run}");
    let database_url = fresh_database(&args.mysql, &db_name).await?;
    let (ingest_rate, ingest_time) =
        run_ingest(&args, &bootstrap, &topics, &database_url, events.len()).await?;
    drop_database(&args.mysql, &db_name).await;
    println!(
        "ingest:   {ingest_rate:>9.0} events/s  ({:.2}s, batch size {})",
        ingest_time.as_secs_f64(),
        args.batch_size
    );

    let (raw_rate, raw_time) = baseline(&args.mysql, &events).await?;
    println!(
        "baseline: {raw_rate:>9.0} rows/s    ({:.2}s, INSERT IGNORE x{BASELINE_ROWS_PER_STATEMENT}, autocommit)",
        raw_time.as_secs_f64()
    );
    let (store_rate, store_time, store_conflicts) = store_only(
        &args.mysql,
        &events,
        args.batch_size,
        args.store_parallelism,
    )
    .await?;
    println!(
        "store:    {store_rate:>9.0} rows/s    ({:.2}s, Store::store_batch alone, {} concurrent; conflicts: {store_conflicts})",
        store_time.as_secs_f64(),
        args.store_parallelism
    );
    let ratio = ingest_rate / raw_rate;
    println!("ratio:    {ratio:.2}");
    let results = serde_json::json!({
        "events": events.len(),
        "batch_size": args.batch_size,
        "store_parallelism": args.store_parallelism,
        "broker": if args.bootstrap.is_some() { "external" } else { "mock" },
        "ingest_events_per_sec": ingest_rate.round(),
        "raw_insert_rows_per_sec": raw_rate.round(),
        "store_only_rows_per_sec": store_rate.round(),
        "ratio": (ratio * 100.0).round() / 100.0,
    });
    let path = write_results(&args, &start, results)?;
    println!("results written to {}", path.display());
    Ok(())
}

/// What the run records about itself before it starts.
struct Start {
    date: String,
    load_average: f64,
}

impl Start {
    fn now() -> Start {
        Start {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// Writes `results` to `--out`, or `target/bench-results/throughput.json`, in the envelope
/// every benchmark of this repository writes (read by `scripts/scaling.py`).
fn write_results(
    args: &Args,
    start: &Start,
    results: serde_json::Value,
) -> anyhow::Result<std::path::PathBuf> {
    let path = match &args.out {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .ancestors()
            .nth(3)
            .ok_or_else(|| anyhow::anyhow!("cannot tell the target directory"))?
            .join("bench-results")
            .join("throughput.json"),
    };
    let passed: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let mut command = "cargo bench -p ingest --bench throughput".to_owned();
    if !passed.is_empty() {
        command = format!("{command} -- {}", passed.join(" "));
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let document = serde_json::json!({
        "bench": "throughput",
        "command": command,
        "date": start.date,
        "commit": commit,
        "what": "ingest events/s (Kafka → MySQL → Redis) against raw batch INSERTs into the same MariaDB",
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_at_start": start.load_average,
        },
        "results": results,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(path)
}
