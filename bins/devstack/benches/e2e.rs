//! End-to-end latency: an event produced into Kafka → a STOMP MESSAGE at the user's
//! session, through the real release `ingest` and `gateway` binaries, all on loopback:
//!
//! 1. MariaDB and Redis found or started as devstack does (a fresh database, dropped at the
//!    end, and a fresh channel prefix), the gateway (JWT auth), and `--users` raw-WebSocket
//!    STOMP sessions, one user each, subscribed to `/user/queue/notifications`;
//! 2. per configuration (the shipped consumer defaults, then `--compare`, librdkafka's old
//!    `fetch.wait.max.ms=500`): first `--idle-secs` without load (the CPU fetching costs at
//!    idle), then steps, each on a fresh tansu broker (memory storage) with devstack's
//!    topics and a fresh `ingest` with that `KAFKA_PROPERTIES`, warmed up with one event
//!    per user;
//! 3. a step: `--step-secs` of `ORDER_CREATED` events at a paced rate, to the users in
//!    turn, each timed from the instant it is handed to the producer to its MESSAGE (the
//!    event's sequence number travels as its order number, the notification's
//!    `referenceId`): p50/p99/max, delivered/expected, what ingest's
//!    `ingest_kafka_to_publish_seconds` and the gateway's `gateway_delivery_latency_seconds`
//!    recorded, and the CPU each process used;
//! 4. the rates: `--rates` (1 000 and 5 000/s), then upward ×1.5 while a step is
//!    sustainable (every event delivered within `--drain-secs`, the offered rate kept, p99
//!    within `--p99-bound-ms`), then bisecting between the highest good and the lowest bad
//!    rate. The comparison configuration runs `--rates` and the highest sustainable rate.
//!
//! Prints the figures and writes them to `target/bench-results/e2e.json`.
//! Run: `cargo bench -p devstack --bench e2e` (about 2 minutes here, after the build).

#![allow(clippy::print_stdout)]

#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/prom.rs"]
mod prom;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/steps.rs"]
mod steps;
#[path = "e2e/ws.rs"]
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use devstack::services::{self, Kind, Probe, Service};
use sqlx::{Connection, Executor, MySqlConnection};
use tokio_util::sync::CancellationToken;

use load::Tracker;
use procs::Binaries;
use steps::Bench;

#[derive(Parser, Clone)]
struct Args {
    /// STOMP sessions, one user each; events go to the users in turn.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Rates always measured, events/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Seconds of producing per step.
    #[arg(long, default_value_t = 5)]
    step_secs: u64,
    /// A step is sustainable when every event arrived, the offered rate was kept, and its
    /// p99 stayed within this.
    #[arg(long, default_value_t = 500)]
    p99_bound_ms: u64,
    /// Highest rate the search tries (0: no search).
    #[arg(long, default_value_t = 40_000)]
    max_rate: u64,
    /// Most steps of the search.
    #[arg(long, default_value_t = 6)]
    search_steps: usize,
    /// After a step's last send, the longest wait for its deliveries.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// `KAFKA_PROPERTIES` of the main configuration (empty: ingest's shipped defaults).
    #[arg(long, default_value = "")]
    kafka_properties: String,
    /// `KAFKA_PROPERTIES` of the comparison configuration (empty: no comparison).
    #[arg(long, default_value = "fetch.wait.max.ms=500")]
    compare: String,
    /// The tansu binary.
    #[arg(long, env = "TANSU_BIN", default_value = "tansu")]
    tansu: String,
    /// MariaDB port: a server there (root, no password) is used, else a private one starts.
    #[arg(long, default_value_t = 3306)]
    mysql_port: u16,
    /// Redis port: a server there is used, else a private one starts.
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// Use the release binaries as they are (no `cargo build --release -p ingest -p gateway`).
    #[arg(long)]
    no_build: bool,
    /// The results file (default: target/bench-results/e2e.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the benchmark's database.
    #[arg(long)]
    keep_db: bool,
    /// Seconds without load after the warm-up, to measure what fetching costs at idle.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Cargo passes --bench; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.users > 0 && args.step_secs > 0,
        "--users and --step-secs must be at least 1"
    );
    let bins = procs::binaries(!args.no_build)?;
    let log_dir = bins.target_dir.join("e2e-bench");
    std::fs::create_dir_all(&log_dir)?;
    let shutdown = CancellationToken::new();
    let mut mysql = server(Kind::MariaDb, args.mysql_port, &log_dir, &shutdown).await?;
    let mut redis = server(Kind::Redis, args.redis_port, &log_dir, &shutdown).await?;
    let database = format!("e2e_bench_{}", std::process::id());
    let server_url = services::mysql_server_url(mysql.port);
    let outcome = run(
        args.clone(),
        bins,
        log_dir,
        &server_url,
        &database,
        redis.port,
    )
    .await;
    if !args.keep_db {
        drop_database(&server_url, &database).await;
    }
    redis.stop().await;
    mysql.stop().await;
    outcome
}

async fn server(
    kind: Kind,
    port: u16,
    data_dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    match services::probe(kind, port).await {
        Probe::Running => Ok(Service::found(kind, port)),
        Probe::Free => Service::start(kind, port, data_dir, shutdown).await,
        Probe::Unusable(why) => anyhow::bail!("{why}"),
    }
}

async fn drop_database(server_url: &str, database: &str) {
    if let Ok(mut conn) = MySqlConnection::connect(server_url).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS `{database}`").as_str())
            .await;
    }
}

async fn run(
    args: Args,
    bins: Binaries,
    log_dir: PathBuf,
    server_url: &str,
    database: &str,
    redis_port: u16,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_at_start = procs::load_average();
    let database_url = format!("{server_url}/{database}");
    procs::migrate(&bins.ingest, &database_url)?;
    let redis_url = services::redis_url(redis_port);
    let prefix = format!("e2e{}:notification:", std::process::id());
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let (gateway, gateway_addr, gateway_admin) = procs::start_gateway(
        &bins.gateway,
        &redis_url,
        &prefix,
        &format!("e2e={secret}"),
        &log_dir,
    )
    .await?;
    let capacity = args.users + 3_000_000;
    let tracker = Arc::new(Tracker::new(capacity));
    let users: Vec<String> = (0..args.users).map(|i| format!("e2e-user-{i}")).collect();
    for user in &users {
        let ws = ws::subscribe(&gateway_addr, &token(&secret, user)).await?;
        load::receive(ws, tracker.clone());
    }
    println!(
        "e2e: {} STOMP sessions subscribed on the gateway at {gateway_addr}; load average {load_at_start:.2}",
        users.len()
    );
    let mut bench = Bench {
        args,
        bins,
        log_dir,
        tracker,
        users,
        next_seq: 0,
        database_url,
        redis_url,
        prefix,
        gateway,
        gateway_admin,
    };

    let main = bench.args.kafka_properties.clone();
    let mut targets = Vec::new();
    targets.push(
        bench
            .configuration(&main, &bench.args.rates.clone(), true)
            .await?,
    );
    let compare = bench.args.compare.clone();
    if !compare.is_empty() {
        let mut rates = bench.args.rates.clone();
        if let Some(best) = targets[0].highest_sustainable() {
            if !rates.contains(&best.rate) {
                rates.push(best.rate);
            }
        }
        targets.push(bench.configuration(&compare, &rates, false).await?);
    }
    let out = bench
        .args
        .out
        .clone()
        .unwrap_or_else(|| bench.bins.target_dir.join("bench-results").join("e2e.json"));
    report::print(&targets, &bench.args);
    report::write(
        &out,
        &targets,
        &bench.args,
        load_at_start,
        started.elapsed(),
    )?;
    println!(
        "e2e: results written to {} ({:.0} s in all)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn token(secret: &str, user: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    gateway::auth::sign_hs256(
        secret.as_bytes(),
        Some("e2e"),
        &serde_json::json!({"sub": user, "exp": exp}),
    )
}
