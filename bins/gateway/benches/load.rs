//! Gateway load, against the real `gateway` binary in its own process:
//!
//! 1. idle sessions: opens N STOMP sessions over raw WebSocket (CONNECT with a JWT,
//!    SUBSCRIBE) and reports the gateway's RSS growth per session;
//! 2. deliveries: K subscribed sessions (one user each) receive M notifications published to
//!    Redis in pipelines; reports deliveries/s and p50/p99 publish→receive latency.
//!
//! Run: `cargo bench -p gateway --bench load -- --sessions 10000 --subscribers 1000 --messages 200000`.
//! One process may hold 20 000 descriptors here: keep `--sessions` under ~19 000.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gateway::auth::sign_hs256;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "load-benchmark-secret-of-32-bytes-or-more";

#[derive(Parser)]
struct Args {
    /// Idle sessions to open.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Subscribed sessions receiving the delivery load.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Notifications to deliver.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    #[arg(long, hide = true)]
    bench: bool,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_session(addr: &str, user: &str, heartbeat: &str) -> anyhow::Result<Ws> {
    let mut request = format!("ws://{addr}/ws/notifications/websocket").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let exp = chrono::Utc::now().timestamp() + 3600;
    let token = sign_hs256(
        SECRET.as_bytes(),
        Some("k"),
        &serde_json::json!({"sub": user, "exp": exp}),
    );
    let connect = format!(
        "CONNECT\naccept-version:1.2\nheart-beat:{heartbeat}\nAuthorization:Bearer {token}\n\n\0"
    );
    ws.send(Message::Text(connect.into())).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.starts_with("CONNECTED") => {}
        other => anyhow::bail!("no CONNECTED: {other:?}"),
    }
    let subscribe = "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\n\n\0";
    ws.send(Message::Text(subscribe.into())).await?;
    Ok(ws)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let prefix = format!("bench{}:notification:", std::process::id());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("LISTEN_ADDR", &addr)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("REDIS_URL", &args.redis)
        .env("REDIS_CHANNEL_PREFIX", &prefix)
        .env("JWT_KEYS", format!("k={SECRET}"))
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = child.id();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = run(&args, &addr, &prefix, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(args: &Args, addr: &str, prefix: &str, pid: u32) -> anyhow::Result<()> {
    // 1. Idle sessions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(args.sessions);
    let started = Instant::now();
    for chunk in (0..args.sessions).collect::<Vec<_>>().chunks(500) {
        let users: Vec<String> = chunk.iter().map(|i| format!("idle-{i}")).collect();
        let opened =
            futures_util::future::join_all(users.iter().map(|u| open_session(addr, u, "0,0")))
                .await;
        for ws in opened {
            idle.push(ws?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / args.sessions as f64;
    println!(
        "idle:       {} sessions opened in {:.1}s; gateway RSS {} KiB -> {} KiB: {:.1} KB per session",
        args.sessions,
        started.elapsed().as_secs_f64(),
        before,
        after,
        per_session / 1000.0
    );

    // 2. Deliveries.
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.messages)));
    let mut readers = Vec::new();
    for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(500) {
        let users: Vec<String> = chunk.iter().map(|i| format!("sub-{i}")).collect();
        let opened =
            futures_util::future::join_all(users.iter().map(|u| open_session(addr, u, "0,0")))
                .await;
        for ws in opened {
            let mut ws = ws?;
            let received = received.clone();
            let latencies = latencies.clone();
            readers.push(tokio::spawn(async move {
                let mut local = Vec::new();
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        // The body ends with "t":<publish time in µs>}
                        if let Some(start) = text.rfind("\"t\":") {
                            let end = text[start..]
                                .find('}')
                                .map(|e| start + e)
                                .unwrap_or(text.len());
                            if let Ok(t) = text[start + 4..end].parse::<u64>() {
                                local.push(now_micros().saturating_sub(t));
                            }
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if local.len() >= 16 {
                        latencies.lock().await.append(&mut local);
                    }
                }
                latencies.lock().await.append(&mut local);
            }));
        }
    }
    // Let the relay subscribe every user.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = redis::Client::open(args.redis.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.messages {
        let mut pipe = redis::pipe();
        for i in sent..(sent + 500).min(args.messages) {
            let user = i % args.subscribers;
            pipe.cmd("PUBLISH")
                .arg(format!("{prefix}sub-{user}"))
                .arg(format!(
                    "{{\"id\":{i},\"userId\":\"sub-{user}\",\"t\":{}}}",
                    now_micros()
                ))
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
        sent = (sent + 500).min(args.messages);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (received.load(Ordering::Relaxed) as usize) < args.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed);
    for reader in &readers {
        reader.abort();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = latencies.lock().await.clone();
    lat.sort_unstable();
    println!(
        "deliveries: {got}/{} to {} sessions in {:.2}s: {:.0} deliveries/s; latency p50 {:.1} ms, p99 {:.1} ms",
        args.messages,
        args.subscribers,
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0
    );
    drop(idle);
    Ok(())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
