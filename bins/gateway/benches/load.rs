//! Gateway load, against the real `gateway` binary in its own process, side by side with
//! RabbitMQ's Web-STOMP plugin (the broker a Spring STOMP relay would use):
//!
//! 1. idle sessions: N STOMP sessions (CONNECT, SUBSCRIBE to the user's queue), opened by
//!    worker processes (each process may hold 20 000 descriptors here), over raw WebSocket
//!    and over SockJS-websocket; reports the server's RSS growth per session;
//! 2. deliveries: K subscribed sessions (one user each) receive M notifications; the
//!    gateway's are published to Redis, RabbitMQ's are SENT to `/exchange/amq.direct/{user}`
//!    over Web-STOMP; reports deliveries/s and p50/p99 publish→receive latency;
//! 3. the ratios.
//!
//! Run: `cargo bench -p gateway --bench load -- --sessions 19900 --rabbit-sessions 10000`.
//! RabbitMQ must run with Web-STOMP on (`rabbitmq-plugins enable rabbitmq_web_stomp`) and
//! a descriptor limit above its session count; `--rabbit ''` skips it.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use gateway::auth::sign_hs256;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "load-benchmark-secret-of-32-bytes-or-more";
/// Sessions one worker process opens (the descriptor limit is 20 000 per process here).
const PER_WORKER: usize = 9_000;

#[derive(Parser, Clone)]
struct Args {
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

    // Worker mode (the bench runs itself): open sessions, report, hold them until stdin ends.
    #[arg(long, hide = true)]
    worker: Option<Kind>,
    #[arg(long, hide = true, default_value = "")]
    url: String,
    #[arg(long, hide = true, default_value_t = 0)]
    first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

/// What a session talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// The gateway's raw WebSocket, JWT on CONNECT.
    Raw,
    /// The gateway's SockJS `websocket` transport (SockJS framing around STOMP).
    Sockjs,
    /// RabbitMQ Web-STOMP (guest login, a queue bound to amq.direct per user).
    Rabbit,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

/// Sends one STOMP frame in the session's framing.
async fn send_frame(ws: &mut Ws, kind: Kind, frame: &str) -> anyhow::Result<()> {
    let text = match kind {
        Kind::Sockjs => serde_json::to_string(&[frame])?,
        Kind::Raw | Kind::Rabbit => frame.to_owned(),
    };
    ws.send(Message::Text(text.into())).await?;
    Ok(())
}

/// The next STOMP text from the server (SockJS frames unwrapped, heart-beats skipped).
async fn next_text(ws: &mut Ws, kind: Kind) -> anyhow::Result<String> {
    loop {
        let Some(message) = ws.next().await else {
            anyhow::bail!("closed")
        };
        let Message::Text(text) = message? else {
            continue;
        };
        match kind {
            Kind::Raw | Kind::Rabbit => return Ok(text.to_string()),
            Kind::Sockjs => {
                if let Some(array) = text.strip_prefix('a') {
                    let items: Vec<String> = serde_json::from_str(array)?;
                    return Ok(items.concat());
                }
                if text.starts_with('c') {
                    anyhow::bail!("closed: {text}");
                }
            }
        }
    }
}

fn token(user: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    sign_hs256(
        SECRET.as_bytes(),
        Some("k"),
        &serde_json::json!({"sub": user, "exp": exp}),
    )
}

/// Opens one subscribed session for `user`.
async fn open_session(url: &str, kind: Kind, user: &str) -> anyhow::Result<Ws> {
    let url = match kind {
        Kind::Sockjs => format!("{url}/000/{user}/websocket"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request()?;
    if kind != Kind::Sockjs {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "v12.stomp".parse()?);
    }
    // Small client buffers: thousands of clients share the machine with the server.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    if kind == Kind::Sockjs {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t == "o" => {}
            other => anyhow::bail!("no SockJS open frame: {other:?}"),
        }
    }
    let (credentials, destination) = match kind {
        Kind::Rabbit => (
            "host:/\nlogin:guest\npasscode:guest".to_owned(),
            format!("/exchange/amq.direct/{user}"),
        ),
        _ => (
            format!("Authorization:Bearer {}", token(user)),
            "/user/queue/notifications".to_owned(),
        ),
    };
    let connect = format!("CONNECT\naccept-version:1.2\nheart-beat:0,0\n{credentials}\n\n\0");
    send_frame(&mut ws, kind, &connect).await?;
    let reply = next_text(&mut ws, kind).await?;
    anyhow::ensure!(reply.starts_with("CONNECTED"), "no CONNECTED: {reply}");
    let subscribe = format!("SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:r\n\n\0");
    send_frame(&mut ws, kind, &subscribe).await?;
    let receipt = next_text(&mut ws, kind).await?;
    anyhow::ensure!(receipt.starts_with("RECEIPT"), "no RECEIPT: {receipt}");
    Ok(ws)
}

/// Opens `count` sessions, 250 at a time.
async fn open_many(
    url: &str,
    kind: Kind,
    prefix: &str,
    first: usize,
    count: usize,
) -> anyhow::Result<Vec<Ws>> {
    let mut sessions = Vec::with_capacity(count);
    let ids: Vec<usize> = (first..first + count).collect();
    for chunk in ids.chunks(250) {
        let users: Vec<String> = chunk.iter().map(|i| format!("{prefix}{i}")).collect();
        let opened =
            futures_util::future::join_all(users.iter().map(|u| open_session(url, kind, u))).await;
        for ws in opened {
            sessions.push(ws?);
        }
    }
    Ok(sessions)
}

/// Worker mode: open, say how many, hold until the parent closes stdin.
async fn worker(args: &Args, kind: Kind) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let sessions = open_many(&args.url, kind, "idle-", args.first, args.count).await?;
    println!("ready {}", sessions.len());
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    drop(sessions);
    Ok(())
}

/// Opens `total` idle sessions from worker processes; returns them (drop to close).
fn start_workers(url: &str, kind: Kind, total: usize) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut first = 0;
    while first < total {
        let count = PER_WORKER.min(total - first);
        let child = Command::new(&exe)
            .arg("--worker")
            .arg(format!("{kind:?}").to_lowercase())
            .args(["--url", url])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
        first += count;
    }
    for child in &mut children {
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("ready"), "a worker failed: {line:?}");
    }
    Ok(children)
}

fn stop_workers(children: Vec<Child>) {
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// Idle-session cost on the server `pid`: KB of RSS per session.
async fn measure_idle(pid: u32, url: &str, kind: Kind, total: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let workers = start_workers(url, kind, total)?;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let per_session = after.saturating_sub(before) as f64 * 1.024 / total as f64;
    println!(
        "idle {kind:?}: {total} sessions in {:.1}s; server RSS {before} KiB -> {after} KiB: {per_session:.1} KB per session",
        opened_in.as_secs_f64()
    );
    stop_workers(workers);
    Ok(per_session)
}

struct Gateway {
    child: Child,
    addr: String,
    prefix: String,
}

async fn start_gateway(redis: &str) -> anyhow::Result<Gateway> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let prefix = format!("bench{}-{port}:notification:", std::process::id());
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("LISTEN_ADDR", &addr)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("REDIS_URL", redis)
        .env("REDIS_CHANNEL_PREFIX", &prefix)
        .env("JWT_KEYS", format!("k={SECRET}"))
        .env("RUST_LOG", "warn")
        .spawn()?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Gateway {
        child,
        addr,
        prefix,
    })
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    (ticks(11) + ticks(12)) / 100.0
}

fn rabbit_pid() -> Option<u32> {
    pid_of("beam.smp")
}

fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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
    let sessions = open_many(&url, Kind::Raw, "sub-", 0, args.subscribers).await?;
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
    let sessions = open_many(&args.rabbit, Kind::Rabbit, "sub-", 0, args.subscribers).await?;
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
            let mut ws = open_session(&url, Kind::Rabbit, &format!("publisher-{p}")).await?;
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

    let gw = start_gateway(&args.redis).await?;
    let raw_url = format!("ws://{}/ws/notifications/websocket", gw.addr);
    let raw_idle = measure_idle(gw.child.id(), &raw_url, Kind::Raw, args.sessions).await?;
    drop(gw);
    if args.sockjs_sessions > 0 {
        let gw = start_gateway(&args.redis).await?;
        let url = format!("ws://{}/ws/notifications", gw.addr);
        measure_idle(gw.child.id(), &url, Kind::Sockjs, args.sockjs_sessions).await?;
    }
    let gw = start_gateway(&args.redis).await?;
    let ours = gateway_deliveries(&args, &gw, args.messages, None).await?;
    if args.paced_rate > 0 {
        let paced = (args.paced_rate * 5) as usize;
        gateway_deliveries(&args, &gw, paced, Some(args.paced_rate)).await?;
    }
    drop(gw);

    if args.rabbit.is_empty() {
        return Ok(());
    }
    let Some(pid) = rabbit_pid() else {
        anyhow::bail!("RabbitMQ (beam.smp) is not running; pass --rabbit '' to skip it")
    };
    let rabbit_idle = measure_idle(pid, &args.rabbit, Kind::Rabbit, args.rabbit_sessions).await?;
    let rabbit = rabbit_deliveries(&args).await?;
    println!(
        "ratios: idle memory RabbitMQ/gateway {:.1}x ({:.1} KB vs {:.1} KB per session); deliveries gateway/RabbitMQ {:.1}x ({:.0}/s vs {:.0}/s); p99 {:.1} ms vs {:.1} ms",
        rabbit_idle / raw_idle,
        rabbit_idle,
        raw_idle,
        ours.per_second / rabbit.per_second,
        ours.per_second,
        rabbit.per_second,
        ours.p99_ms,
        rabbit.p99_ms
    );
    Ok(())
}
