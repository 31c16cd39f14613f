//! The processes the benchmark measures: the gateway binary it starts, and the CPU and
//! memory of any process by pid; clocks and percentiles.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::SECRET;

/// Longest wait for a gateway process to listen.
const GATEWAY_START: Duration = Duration::from_secs(30);

pub struct Gateway {
    pub child: Child,
    pub addr: String,
    /// The admin listener (`/metrics`).
    pub admin: String,
    pub prefix: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the gateway binary on free ports, with the notification store at `database`.
/// `GATEWAY_BIN` names another build of it (another commit's, for runs that alternate
/// builds); by default it is this workspace's.
pub async fn start_gateway(redis: &str, database: Option<&str>) -> anyhow::Result<Gateway> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", free_port()?);
    let prefix = format!("bench{}-{port}:notification:", std::process::id());
    let binary =
        std::env::var_os("GATEWAY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gateway").into());
    let mut command = Command::new(binary);
    command
        .env("LISTEN_ADDR", &addr)
        .env("ADMIN_ADDR", &admin)
        .env("REDIS_URL", redis)
        .env("REDIS_CHANNEL_PREFIX", &prefix)
        .env("JWT_KEYS", format!("k={SECRET}"))
        .env("RUST_LOG", "warn")
        // The benchmark's clients all come from 127.0.0.1 and open hundreds of sessions
        // at once: the per-address limit on unauthenticated connections is for strangers.
        .env("WS_MAX_PENDING_PER_IP", "0")
        // Nor may the cap on one address's connections before their first request head
        // (64) close the clients' handshakes, 250 of which start at once.
        .env("HTTP_MAX_UNFINISHED_PER_IP", "0")
        .env_remove("DATABASE_URL");
    if let Some(database) = database {
        command.env("DATABASE_URL", database);
    }
    let child = command.spawn()?;
    let gateway = Gateway {
        child,
        addr,
        admin,
        prefix,
    };
    // A loaded machine may take seconds to start it.
    let deadline = Instant::now() + GATEWAY_START;
    while tokio::net::TcpStream::connect(&gateway.addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not listen within {GATEWAY_START:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(gateway)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds a process has used (user + system).
pub fn cpu_seconds(pid: u32) -> f64 {
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

pub fn rabbit_pid() -> Option<u32> {
    pid_of("beam.smp")
}

/// The `redis-server` serving `url` (by its port: other Redis servers may run beside it).
pub fn redis_pid(url: &str) -> Option<u32> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let port = authority.rsplit_once(':').map_or("6379", |(_, port)| port);
    pid_of(&format!("redis-server [^ ]*:{port}( |$)"))
}

/// The first process whose command line matches the extended regular expression `pattern`.
pub fn pid_of(pattern: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", pattern]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
