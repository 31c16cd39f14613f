//! Gateway load, against the real `gateway` binary in its own process, side by side with
//! RabbitMQ's Web-STOMP plugin (the broker a Spring STOMP relay would use):
//!
//! 1. idle sessions: N STOMP sessions (CONNECT, SUBSCRIBE to the user's queue), opened by
//!    worker processes (each process may hold 20 000 descriptors here), over raw WebSocket
//!    and over SockJS-websocket; reports the server's RSS growth per session;
//! 2. deliveries: K subscribed sessions (one user each) receive M notifications; the
//!    gateway's are published to Redis, RabbitMQ's are SENT to `/exchange/amq.direct/{user}`
//!    over Web-STOMP; reports deliveries/s and p50/p99 publish→receive latency;
//! 3. broadcast ([`sync`]): one time deal to S sessions, and personal-notification latency
//!    with and without a series of broadcasts;
//! 4. recovery ([`recovery`]): a SUBSCRIBE with `last-id` answered from a MariaDB store;
//! 5. the ratios.
//!
//! Run: `cargo bench -p gateway --bench load -- --sessions 19900 --rabbit-sessions 10000`;
//! `--phases broadcast,recovery` picks phases. RabbitMQ must run with Web-STOMP on
//! (`rabbitmq-plugins enable rabbitmq_web_stomp`) and a descriptor limit above its session
//! count; `--rabbit ''` skips it.

#![allow(clippy::print_stdout)]

#[path = "load/arrivals.rs"]
mod arrivals;
#[path = "load/client.rs"]
mod client;
#[path = "load/process.rs"]
mod process;
#[path = "load/recovery.rs"]
mod recovery;
#[path = "load/sync.rs"]
mod sync;
#[path = "load/workers.rs"]
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::SinkExt;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use client::{Kind, Subscribe, Ws, connect, next_text, open_many, open_session};
use process::{
    Gateway, cpu_seconds, now_micros, percentile, pid_of, rabbit_pid, rss_kib, start_gateway,
};
use workers::{start_workers, stop_workers, worker};

const SECRET: &str = "load-benchmark-secret-of-32-bytes-or-more";

#[derive(Parser, Clone)]
struct Args {
    /// Phases to run, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,deliveries,broadcast,recovery"
    )]
    phases: Vec<Phase>,
    /// Idle sessions on the gateway (its process holds at most ~19 990 sockets here).
    #[arg(long, default_value_t = 19_900)]
    sessions: usize,
    /// Idle SockJS-websocket sessions on the gateway (0: skip).
    #[arg(long, default_value_t = 10_000)]
    sockjs_sessions: usize,
    /// Idle sessions on RabbitMQ.
    #[arg(long, default_value_t = 10_000)]
    rabbit_sessions: usize,
    /// Subscribed sessions receiving the delivery load.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Notifications to deliver (RabbitMQ gets the same number).
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Offered load of a second, paced delivery run (5 s), for latency below saturation; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    paced_rate: u64,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// RabbitMQ Web-STOMP endpoint; empty to skip the comparison.
    #[arg(long, default_value = "ws://127.0.0.1:15674/ws")]
    rabbit: String,
    #[command(flatten)]
    sync: sync::SyncArgs,
    #[command(flatten)]
    recovery: recovery::RecoveryArgs,

    // Worker mode (the bench runs itself): open sessions, report, hold them until stdin ends.
    #[arg(long, hide = true)]
    worker: Option<Kind>,
    #[arg(long, hide = true, default_value = "")]
    url: String,
    #[arg(long, hide = true, default_value_t = 0)]
    first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    /// Worker sessions subscribe to `/topic/timedeals` and report each broadcast's arrivals.
    #[arg(long, hide = true)]
    timedeals: bool,
    #[arg(long, hide = true)]
    bench: bool,
}

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Idle sessions: memory per session (raw WebSocket, SockJS, RabbitMQ).
    Idle,
    /// Notifications to 1 000 sessions: deliveries/s, latency, CPU (and RabbitMQ's).
    Deliveries,
    /// A time deal to thousands of sessions; personal latency beside broadcasts.
    Broadcast,
    /// Recovery of missed notifications from the store on SUBSCRIBE.
    Recovery,
}

/// Idle-session cost on the server `pid`: KB of RSS per session.
async fn measure_idle(pid: u32, url: &str, kind: Kind, total: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let workers = start_workers(url, kind, total, false)?;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let per_session = after.saturating_sub(before) as f64 * 1.024 / total as f64;
    println!(
        "idle {kind:?}: {total} sessions in {:.1}s; server RSS {before} KiB -> {after} KiB: {per_session:.1} KB per session",
        opened_in.as_secs_f64()
    );
    stop_workers(workers.into_iter().map(|w| w.child));
    Ok(per_session)
}

struct Deliveries {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Reads each subscriber's messages, recording publish→receive latency from `"t":µs`.
fn spawn_readers(
    sessions: Vec<Ws>,
    kind: Kind,
    received: &Arc<AtomicU64>,
    latencies: &Arc<Mutex<Vec<u64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    sessions
        .into_iter()
        .map(|mut ws| {
            let received = received.clone();
            let latencies = latencies.clone();
            tokio::spawn(async move {
                let mut local = Vec::new();
                while let Ok(text) = next_text(&mut ws, kind).await {
                    // Several frames may share one text; each body ends with "t":<µs>}
                    for part in text.split("\"t\":").skip(1) {
                        let end = part.find('}').unwrap_or(part.len());
                        if let Ok(t) = part[..end].parse::<u64>() {
                            local.push(now_micros().saturating_sub(t));
                        }
                    }
                    // Recorded before counted: the run ends when the count is complete.
                    let n = local.len() as u64;
                    latencies.lock().await.append(&mut local);
                    received.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

async fn await_deliveries(
    expected: usize,
    started: Instant,
    received: &AtomicU64,
    latencies: &Mutex<Vec<u64>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
) -> Deliveries {
    let deadline = Instant::now() + Duration::from_secs(180);
    while (received.load(Ordering::Relaxed) as usize) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed);
    for reader in &readers {
        reader.abort();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    let result = Deliveries {
        per_second: got as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&lat, 0.99) as f64 / 1000.0,
    };
    println!(
        "  {got}/{expected} delivered in {:.2}s: {:.0} deliveries/s; latency p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        result.per_second,
        result.p50_ms,
        result.p99_ms
    );
    result
}

fn payload(i: usize, user: usize) -> String {
    format!(
        "{{\"id\":{i},\"userId\":\"sub-{user}\",\"t\":{}}}",
        now_micros()
    )
}

/// Delivers `messages` through the gateway: as fast as Redis takes them (`rate` None), or
/// paced at `rate` per second in batches of 100.
async fn gateway_deliveries(
    args: &Args,
    gw: &Gateway,
    messages: usize,
    rate: Option<u64>,
) -> anyhow::Result<Deliveries> {
    match rate {
        None => println!(
            "deliveries Raw: {messages} messages to {} sessions, one burst",
            args.subscribers
        ),
        Some(rate) => println!(
            "deliveries Raw: {messages} messages to {} sessions at {rate}/s",
            args.subscribers
        ),
    }
    let url = format!("ws://{}/ws/notifications/websocket", gw.addr);
    let sessions = open_many(&url, Kind::Raw, "sub-", 0, args.subscribers, Subscribe::Own).await?;
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let readers = spawn_readers(sessions, Kind::Raw, &received, &latencies);
    let client = redis::Client::open(args.redis.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let redis_pid = pid_of("redis-server");
    let me = std::process::id();
    let cpu_before = (
        cpu_seconds(gw.child.id()),
        redis_pid.map_or(0.0, cpu_seconds),
        cpu_seconds(me),
    );
    let started = Instant::now();
    let batch = if rate.is_some() { 100 } else { 500 };
    let mut sent = 0;
    while sent < messages {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut pipe = redis::pipe();
        for i in sent..(sent + batch).min(messages) {
            let user = i % args.subscribers;
            pipe.cmd("PUBLISH")
                .arg(format!("{}sub-{user}", gw.prefix))
                .arg(payload(i, user))
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
        sent = (sent + batch).min(messages);
    }
    let result = await_deliveries(messages, started, &received, &latencies, readers).await;
    let cpu = cpu_seconds(gw.child.id()) - cpu_before.0;
    let redis_cpu = redis_pid.map_or(0.0, cpu_seconds) - cpu_before.1;
    let clients_cpu = cpu_seconds(me) - cpu_before.2;
    println!(
        "  CPU: gateway {cpu:.2} s ({:.1} µs per delivery), Redis {redis_cpu:.2} s, clients {clients_cpu:.2} s",
        cpu * 1e6 / messages as f64
    );
    Ok(result)
}

async fn rabbit_deliveries(args: &Args) -> anyhow::Result<Deliveries> {
    println!(
        "deliveries Rabbit: {} messages to {} sessions",
        args.messages, args.subscribers
    );
    let sessions = open_many(
        &args.rabbit,
        Kind::Rabbit,
        "sub-",
        0,
        args.subscribers,
        Subscribe::Own,
    )
    .await?;
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.messages)));
    let readers = spawn_readers(sessions, Kind::Rabbit, &received, &latencies);
    // Publishers: four Web-STOMP connections, frames written back to back.
    const PUBLISHERS: usize = 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let url = args.rabbit.clone();
        let (messages, subscribers) = (args.messages, args.subscribers);
        tasks.push(tokio::spawn(async move {
            let mut ws = open_session(&url, Kind::Rabbit, &format!("publisher-{p}"), Subscribe::Own).await?;
            for i in (p..messages).step_by(PUBLISHERS) {
                let user = i % subscribers;
                let frame = format!(
                    "SEND\ndestination:/exchange/amq.direct/sub-{user}\ncontent-type:application/json\n\n{}\0",
                    payload(i, user)
                );
                ws.feed(Message::Text(frame.into())).await?;
                if i % 256 == p {
                    ws.flush().await?;
                }
            }
            ws.flush().await?;
            // Keep the connection until everything is routed.
            tokio::time::sleep(Duration::from_secs(1)).await;
            anyhow::Ok(ws)
        }));
    }
    let result = await_deliveries(args.messages, started, &received, &latencies, readers).await;
    for task in tasks {
        let _ = task.await?;
    }
    Ok(result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(kind) = args.worker {
        return worker(&args, kind).await;
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runs = |phase| args.phases.contains(&phase);
    let rabbit_wanted = !args.rabbit.is_empty() && (runs(Phase::Idle) || runs(Phase::Deliveries));
    if rabbit_wanted {
        // Fail now rather than after the gateway's phases.
        anyhow::ensure!(
            rabbit_pid().is_some(),
            "RabbitMQ (beam.smp) is not running; pass --rabbit '' to skip it"
        );
        connect(&args.rabbit, Kind::Rabbit, "probe")
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "RabbitMQ Web-STOMP at {} does not answer ({err}); enable rabbitmq_web_stomp or pass --rabbit ''",
                    args.rabbit
                )
            })?;
    }

    let mut raw_idle = None;
    if runs(Phase::Idle) {
        let gw = start_gateway(&args.redis, None).await?;
        let raw_url = format!("ws://{}/ws/notifications/websocket", gw.addr);
        raw_idle = Some(measure_idle(gw.child.id(), &raw_url, Kind::Raw, args.sessions).await?);
        drop(gw);
        if args.sockjs_sessions > 0 {
            let gw = start_gateway(&args.redis, None).await?;
            let url = format!("ws://{}/ws/notifications", gw.addr);
            measure_idle(gw.child.id(), &url, Kind::Sockjs, args.sockjs_sessions).await?;
        }
    }
    let mut ours = None;
    if runs(Phase::Deliveries) {
        let gw = start_gateway(&args.redis, None).await?;
        ours = Some(gateway_deliveries(&args, &gw, args.messages, None).await?);
        if args.paced_rate > 0 {
            let paced = (args.paced_rate * 5) as usize;
            gateway_deliveries(&args, &gw, paced, Some(args.paced_rate)).await?;
        }
    }
    if runs(Phase::Broadcast) {
        sync::run(&args).await?;
    }
    if runs(Phase::Recovery) {
        recovery::run(&args).await?;
    }

    if !rabbit_wanted {
        return Ok(());
    }
    let Some(pid) = rabbit_pid() else {
        anyhow::bail!("RabbitMQ (beam.smp) is not running; pass --rabbit '' to skip it")
    };
    if let Some(raw_idle) = raw_idle {
        let rabbit_idle =
            measure_idle(pid, &args.rabbit, Kind::Rabbit, args.rabbit_sessions).await?;
        println!(
            "ratio: idle memory RabbitMQ/gateway {:.1}x ({rabbit_idle:.1} KB vs {raw_idle:.1} KB per session)",
            rabbit_idle / raw_idle
        );
    }
    if let Some(ours) = ours {
        let rabbit = rabbit_deliveries(&args).await?;
        println!(
            "ratio: deliveries gateway/RabbitMQ {:.1}x ({:.0}/s vs {:.0}/s); p99 {:.1} ms vs {:.1} ms",
            ours.per_second / rabbit.per_second,
            ours.per_second,
            rabbit.per_second,
            ours.p99_ms,
            rabbit.p99_ms
        );
    }
    Ok(())
}
