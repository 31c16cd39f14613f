//! Deliveries phase: subscribed sessions (one user each) receive notifications published to
//! Redis for the gateway, or SENT over Web-STOMP to RabbitMQ; deliveries/s, publish→receive
//! latency from the `"t"` stamp in each body, and the CPU each process used.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::Args;
use crate::client::{Kind, Subscribe, Ws, next_text, open_many, open_session};
use crate::process::{Gateway, cpu_seconds, now_micros, percentile, redis_pid};
use crate::results::round2;

/// CPU seconds each process used during a delivery run.
pub struct DeliveryCpu {
    pub gateway: f64,
    pub redis: f64,
    pub clients: f64,
    /// The gateway's CPU per notification sent, µs.
    pub gateway_us_per_delivery: f64,
}

/// What one delivery run measured.
pub struct Deliveries {
    /// The offered rate of a paced run (None: one burst).
    pub offered_per_sec: Option<u64>,
    pub expected: usize,
    pub delivered: u64,
    pub elapsed_secs: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The gateway's runs only.
    pub cpu: Option<DeliveryCpu>,
}

impl Deliveries {
    pub fn json(&self) -> Value {
        let mut figures = json!({
            "offered_per_sec": self.offered_per_sec,
            "expected": self.expected,
            "delivered": self.delivered,
            "elapsed_secs": round2(self.elapsed_secs),
            "deliveries_per_sec": self.per_second.round(),
            "p50_ms": round2(self.p50_ms),
            "p99_ms": round2(self.p99_ms),
        });
        if let Some(cpu) = &self.cpu {
            figures["gateway_cpu_secs"] = json!(round2(cpu.gateway));
            figures["redis_cpu_secs"] = json!(round2(cpu.redis));
            figures["clients_cpu_secs"] = json!(round2(cpu.clients));
            figures["gateway_cpu_us_per_delivery"] = json!(round2(cpu.gateway_us_per_delivery));
        }
        figures
    }
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
        offered_per_sec: None,
        expected,
        delivered: got,
        elapsed_secs: elapsed.as_secs_f64(),
        per_second: got as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&lat, 0.99) as f64 / 1000.0,
        cpu: None,
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
pub async fn gateway_deliveries(
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
    let redis_pid = redis_pid(&args.redis);
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
    let mut result = await_deliveries(messages, started, &received, &latencies, readers).await;
    let cpu = cpu_seconds(gw.child.id()) - cpu_before.0;
    let redis_cpu = redis_pid.map_or(0.0, cpu_seconds) - cpu_before.1;
    let clients_cpu = cpu_seconds(me) - cpu_before.2;
    println!(
        "  CPU: gateway {cpu:.2} s ({:.1} µs per delivery), Redis {redis_cpu:.2} s, clients {clients_cpu:.2} s",
        cpu * 1e6 / messages as f64
    );
    result.offered_per_sec = rate;
    result.cpu = Some(DeliveryCpu {
        gateway: cpu,
        redis: redis_cpu,
        clients: clients_cpu,
        gateway_us_per_delivery: cpu * 1e6 / messages as f64,
    });
    Ok(result)
}

pub async fn rabbit_deliveries(args: &Args) -> anyhow::Result<Deliveries> {
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
