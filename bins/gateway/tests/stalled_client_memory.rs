//! The `gateway` binary in its own process: a client that stops reading under a flood is
//! closed, others keep receiving, and the process's memory stays within its limits.
//!
//! This test lives here, not in the `tests` crate, because only the gateway package's own
//! tests are given the binary (`CARGO_BIN_EXE_gateway`, built by cargo before they run);
//! from another crate the path would be a guess that can point at a stale or missing build.
//! Its own process is the point: the RSS of a test process also holds whatever the other
//! tests running in parallel allocate.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Longest wait for any one step (the binary's start, a frame, a metric).
const WAIT: Duration = Duration::from_secs(20);
/// Pause between two polls of a condition (bounded by `WAIT`).
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The gateway's limits in this test.
const SESSION_QUEUE: usize = 256;
const SEND_BUFFER_BYTES: usize = 256 * 1024;
/// Size of each flooding notification.
const PAYLOAD_BYTES: usize = 4096;
/// Notifications published between two probes (one Redis pipeline).
const BATCH: usize = 100;
/// What the stalled session may hold at most: a full hub queue of notifications, a full
/// send buffer of MESSAGE frames, and one coalesced write of at most a send buffer on its
/// way to the socket. (Kernel socket buffers are not the process's RSS.)
const HELD_BYTES: usize = SESSION_QUEUE * PAYLOAD_BYTES + 2 * SEND_BUFFER_BYTES;
/// Growth that does not depend on the flood: allocator arenas and fragmentation, the Redis
/// connection's read buffer, one batch in the relay, the WebSocket codecs' buffers.
/// Measured total growth here: 1.3 to 1.7 MiB (debug build, 2 cores, paced as below).
const FIXED_ALLOWANCE_BYTES: usize = 4 * 1024 * 1024;
/// The bound on RSS growth: 5.5 MiB, against a flood of `FLOOD_BYTES`.
const GROWTH_BOUND_KIB: u64 = ((HELD_BYTES + FIXED_ALLOWANCE_BYTES) / 1024) as u64;
/// Published to the stalled user: far past the bound plus the kernel's socket buffers
/// (up to 4 MiB sending here), so a gateway that kept it would exceed the bound.
const FLOOD_BYTES: usize = 64 * 1024 * 1024;
/// Longest time a probe may take to reach the healthy user during the flood.
const PROBE_LATENCY: Duration = Duration::from_secs(2);

/// The test Redis; `TEST_REDIS_URL` overrides the local default.
fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The `gateway` binary running in a child process (killed on drop).
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    name: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released: the binary takes it right after).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the binary and waits until it reports ready (relay connected to Redis). Another
/// process may take a released port first: then the child exits and we try new ports.
async fn start_gateway() -> GatewayProcess {
    let name = format!("gwmem_{}_{:08x}", std::process::id(), rand::random::<u32>());
    for _attempt in 0..3 {
        let (addr, admin) = (free_port(), free_port());
        // A clean environment: only what is set here configures it.
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("LISTEN_ADDR", addr.to_string())
            .env("ADMIN_ADDR", admin.to_string())
            .env("REDIS_URL", redis_url())
            .env("REDIS_CHANNEL_PREFIX", format!("{name}:notification:"))
            .env("WS_TICKET_PREFIX", format!("{name}:ws-ticket:"))
            .env("WS_SESSION_QUEUE", SESSION_QUEUE.to_string())
            .env("WS_SEND_BUFFER_BYTES", SEND_BUFFER_BYTES.to_string())
            .env("WS_SEND_TIMEOUT_MS", "2000")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("the gateway binary starts");
        let mut gateway = GatewayProcess {
            child,
            addr,
            admin,
            name: name.clone(),
        };
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if gateway.child.try_wait().unwrap().is_some() {
                break; // exited: a port was taken
            }
            if http_get(admin, "/readyz").await.starts_with("HTTP/1.1 200") {
                return gateway;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    panic!("the gateway binary did not become ready");
}

/// One GET on a new connection; the whole answer (empty when nothing listens).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await;
    response
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the gateway process is alive")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next STOMP frame (text), skipping heart-beats.
async fn next_frame(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time");
        match message {
            Some(Ok(Message::Text(text))) if text.as_str() != "\n" => return text.to_string(),
            Some(Ok(Message::Text(_) | Message::Ping(_))) => continue,
            other => return format!("<{other:?}>"),
        }
    }
}

/// A session of `user` (ticket authentication) subscribed to its queue; the RECEIPT has
/// arrived, so everything published for the user from now on reaches it.
async fn subscribed_session(gateway: &GatewayProcess, user: &str) -> Ws {
    let ticket = format!("{:032x}", rand::random::<u128>());
    let _: () = redis::cmd("SET")
        .arg(format!("{}:ws-ticket:{ticket}", gateway.name))
        .arg(user)
        .arg("EX")
        .arg(30)
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let mut request = format!("ws://{}/ws/notifications/websocket", gateway.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let frames = [
        format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0"),
        "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:r\n\n\0".to_owned(),
    ];
    for (frame, expected) in frames.into_iter().zip(["CONNECTED\n", "RECEIPT\n"]) {
        ws.send(Message::Text(frame.into())).await.unwrap();
        let answer = next_frame(&mut ws).await;
        assert!(answer.starts_with(expected), "{answer}");
    }
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_closed_and_the_gateway_memory_stays_bounded() {
    let gateway = start_gateway().await;
    let stalled = subscribed_session(&gateway, "stalled").await;
    let mut healthy = subscribed_session(&gateway, "healthy").await;
    let rss_before = rss_kib(gateway.child.id());

    // Flood the stalled user (it never reads) in batches, each followed by a probe for the
    // healthy user. The relay hands messages over in order, so a probe's arrival means the
    // relay has taken every notification published before it: what the gateway then holds
    // is what it keeps for the stalled session, which its limits bound. Unpaced, a burst
    // also shows what the relay has read from Redis and not handled yet, which waits in the
    // Redis client's unbounded channel (redis-rs `aio::PubSub`), outside these limits.
    let big = format!(
        r#"{{"id":1,"message":"{}"}}"#,
        "x".repeat(PAYLOAD_BYTES - 24)
    );
    let mut r = redis().await;
    let mut slowest = Duration::ZERO;
    for probe in 0..FLOOD_BYTES / (BATCH * PAYLOAD_BYTES) {
        let mut pipe = redis::pipe();
        for _ in 0..BATCH {
            pipe.cmd("PUBLISH")
                .arg(format!("{}:notification:stalled", gateway.name))
                .arg(&big)
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(format!("{}:notification:healthy", gateway.name))
            .arg(format!(r#"{{"probe":{probe}}}"#))
            .ignore();
        let published = Instant::now();
        let _: () = pipe.query_async(&mut r).await.unwrap();
        // The healthy user gets every probe, once and in order, while the flood goes on.
        let message = next_frame(&mut healthy).await;
        assert!(
            message.starts_with("MESSAGE\n")
                && message.ends_with(&format!("{{\"probe\":{probe}}}\0")),
            "probe {probe}: {message}"
        );
        slowest = slowest.max(published.elapsed());
    }
    assert!(slowest < PROBE_LATENCY, "slowest probe {slowest:?}");

    // The stalled session is closed as slow (queue full) or by the send timeout.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = http_get(gateway.admin, "/metrics").await;
        if metrics.contains("gateway_closes_total{reason=\"slow_consumer\"}")
            || metrics.contains("gateway_closes_total{reason=\"send_timeout\"}")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stalled session not closed: {metrics}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    let grown = rss_kib(gateway.child.id()).saturating_sub(rss_before);
    assert!(
        grown < GROWTH_BOUND_KIB,
        "the gateway's RSS grew {grown} KiB under a {} MiB flood (bound {GROWTH_BOUND_KIB} KiB)",
        FLOOD_BYTES >> 20
    );
    let more = tokio::time::timeout(Duration::from_millis(400), healthy.next()).await;
    assert!(more.is_err(), "the healthy user got more: {more:?}");
    drop(stalled);
}
