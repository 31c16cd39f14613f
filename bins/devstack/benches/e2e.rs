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
#[path = "e2e/ws.rs"]
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use devstack::services::{self, Kind, Probe, Service};
use rdkafka::producer::FutureProducer;
use sqlx::{Connection, Executor, MySqlConnection};
use tokio_util::sync::CancellationToken;

use load::Tracker;
use procs::{Binaries, Proc};
use report::{Step, Target};

/// Longest wait for the warm-up events (the consumer group forms meanwhile).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between steps.
const BETWEEN_STEPS: Duration = Duration::from_secs(1);

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

/// What lives for the whole run.
struct Bench {
    args: Args,
    bins: Binaries,
    log_dir: PathBuf,
    tracker: Arc<Tracker>,
    users: Vec<String>,
    next_seq: usize,
    database_url: String,
    redis_url: String,
    prefix: String,
    gateway: Proc,
    gateway_admin: String,
}

/// One configuration's broker and ingest.
struct Pipeline {
    tansu: Proc,
    ingest: Proc,
    ingest_admin: String,
    producer: FutureProducer,
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

impl Bench {
    /// Runs `rates` (and the search when `search`) with `properties`, each step on a fresh
    /// broker and ingest.
    async fn configuration(
        &mut self,
        properties: &str,
        rates: &[u64],
        search: bool,
    ) -> anyhow::Result<Target> {
        let name = report::config_name(properties);
        println!("\ne2e: configuration {name}");
        let idle = self.idle(properties).await?;
        let mut steps = Vec::new();
        for rate in rates {
            steps.push(self.step(properties, *rate).await?);
        }
        if search && self.args.max_rate > 0 {
            self.search(properties, &mut steps).await?;
        }
        Ok(Target::new(properties, steps, idle))
    }

    /// CPU each process uses while nothing is produced (percent of one core): the cost of
    /// fetching at idle.
    async fn idle(&mut self, properties: &str) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let secs = self.args.idle_secs;
        if secs == 0 {
            return Ok(Vec::new());
        }
        let pipeline = self.fresh(properties).await?;
        let pids = self.pids(&pipeline);
        let before: Vec<f64> = pids
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid))
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let idle: Vec<(&'static str, f64)> = pids
            .iter()
            .zip(before)
            .map(|((name, pid), before)| {
                (
                    *name,
                    (procs::cpu_seconds(*pid) - before) * 100.0 / secs as f64,
                )
            })
            .collect();
        let shown: Vec<String> = idle.iter().map(|(n, p)| format!("{n} {p:.1}%")).collect();
        println!("  idle for {secs} s, CPU of one core: {}", shown.join(", "));
        Ok(idle)
    }

    /// Upward ×1.5 from the highest good rate while steps are sustainable, then halving
    /// the gap between the highest good and the lowest bad rate (500/s resolution), at most
    /// `--search-steps` steps in all.
    async fn search(&mut self, properties: &str, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        let round = |rate: f64| ((rate / 500.0).round() * 500.0).max(500.0) as u64;
        let good = |steps: &[Step]| steps.iter().filter(|s| s.sustainable).map(|s| s.rate).max();
        let bad = |steps: &[Step], above: u64| {
            steps
                .iter()
                .filter(|s| !s.sustainable && s.rate > above)
                .map(|s| s.rate)
                .min()
        };
        for _ in 0..self.args.search_steps {
            let best = good(steps).unwrap_or(0);
            let next = match bad(steps, best) {
                Some(failed) => {
                    let middle = round((best + failed) as f64 / 2.0);
                    if middle <= best || middle >= failed || steps.iter().any(|s| s.rate == middle)
                    {
                        break;
                    }
                    middle
                }
                None => round(best.max(1000) as f64 * 1.5),
            };
            if next > self.args.max_rate {
                break;
            }
            steps.push(self.step(properties, next).await?);
        }
        Ok(())
    }

    /// A fresh tansu with devstack's topics and a fresh ingest with `properties`, warmed up.
    /// Each step gets its own: tansu's memory storage slows down as it fills (its CPU per
    /// record grew about fourfold over 150 000 records here), which would make a step's
    /// figures depend on the steps before it.
    async fn fresh(&mut self, properties: &str) -> anyhow::Result<Pipeline> {
        let pipeline = self.pipeline(properties).await?;
        self.warm_up(&pipeline).await?;
        Ok(pipeline)
    }

    async fn pipeline(&self, properties: &str) -> anyhow::Result<Pipeline> {
        let (tansu, bootstrap) = procs::start_tansu(&self.args.tansu, &self.log_dir).await?;
        devstack::kafka::create_topics(&bootstrap).await?;
        let env = procs::IngestEnv {
            bootstrap: &bootstrap,
            database_url: &self.database_url,
            redis_url: &self.redis_url,
            prefix: &self.prefix,
            kafka_properties: properties,
        };
        let (ingest, ingest_admin) =
            procs::start_ingest(&self.bins.ingest, &env, &self.log_dir).await?;
        let producer = devstack::kafka::producer(&bootstrap)?;
        Ok(Pipeline {
            tansu,
            ingest,
            ingest_admin,
            producer,
        })
    }

    fn take_seqs(&mut self, count: usize) -> anyhow::Result<std::ops::Range<usize>> {
        let seqs = self.next_seq..self.next_seq + count;
        anyhow::ensure!(
            seqs.end <= self.tracker.capacity(),
            "the run would pass {} events",
            self.tracker.capacity()
        );
        self.next_seq = seqs.end;
        Ok(seqs)
    }

    /// One event per user, until all have arrived (the consumer group forms meanwhile).
    async fn warm_up(&mut self, pipeline: &Pipeline) -> anyhow::Result<()> {
        let started = Instant::now();
        let seqs = self.take_seqs(self.users.len())?;
        let rate = 200.0;
        load::produce(
            &pipeline.producer,
            &self.tracker,
            &self.users,
            seqs.clone(),
            rate,
        )
        .await?;
        let expected = seqs.len();
        let all = wait_for(&self.tracker, seqs, expected, WARM_UP_TIMEOUT).await;
        anyhow::ensure!(
            all,
            "warm-up: not every event arrived within {WARM_UP_TIMEOUT:?} (logs in {})",
            self.log_dir.display()
        );
        let took = started.elapsed();
        if took > Duration::from_secs(10) {
            println!("  (warm-up took {:.1} s)", took.as_secs_f64());
        }
        tokio::time::sleep(BETWEEN_STEPS).await;
        Ok(())
    }

    /// One step at `rate` events/s on a fresh pipeline.
    async fn step(&mut self, properties: &str, rate: u64) -> anyhow::Result<Step> {
        let pipeline = self.fresh(properties).await?;
        let pipeline = &pipeline;
        let seqs = self.take_seqs((rate * self.args.step_secs) as usize)?;
        let pids = self.pids(pipeline);
        let cpu_before: Vec<f64> = pids
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid))
            .collect();
        let ingest_before = prom::scrape(&pipeline.ingest_admin).await;
        let gateway_before = prom::scrape(&self.gateway_admin).await;
        let duplicates_before = self.tracker.duplicates.load(Ordering::Relaxed);

        let produced = load::produce(
            &pipeline.producer,
            &self.tracker,
            &self.users,
            seqs.clone(),
            rate as f64,
        )
        .await?;
        let expected = produced.sent - produced.failed;
        let drain_started = Instant::now();
        wait_for(
            &self.tracker,
            seqs.clone(),
            expected,
            Duration::from_secs(self.args.drain_secs),
        )
        .await;
        let drained = drain_started.elapsed();

        let cpu: Vec<(&'static str, f64)> = pids
            .iter()
            .zip(cpu_before)
            .map(|((name, pid), before)| (*name, procs::cpu_seconds(*pid) - before))
            .collect();
        let ingest = prom::Histogram::parse(
            &prom::scrape(&pipeline.ingest_admin).await,
            report::INGEST_HISTOGRAM,
        )
        .since(&prom::Histogram::parse(
            &ingest_before,
            report::INGEST_HISTOGRAM,
        ));
        let gateway = prom::Histogram::parse(
            &prom::scrape(&self.gateway_admin).await,
            report::GATEWAY_HISTOGRAM,
        )
        .since(&prom::Histogram::parse(
            &gateway_before,
            report::GATEWAY_HISTOGRAM,
        ));
        let latencies = self.tracker.latencies(seqs.clone());
        let mut step = Step::new(rate, &produced, &latencies, self.args.p99_bound_ms);
        step.duplicates = self.tracker.duplicates.load(Ordering::Relaxed) - duplicates_before;
        step.drain = drained;
        step.ingest = ingest;
        step.gateway = gateway;
        step.cpu = cpu;
        println!("{}", step.line());
        Ok(step)
    }

    /// The processes whose CPU a step reports.
    fn pids(&self, pipeline: &Pipeline) -> Vec<(&'static str, u32)> {
        let mut pids = vec![
            ("ingest", pipeline.ingest.pid()),
            ("gateway", self.gateway.pid()),
            ("tansu", pipeline.tansu.pid()),
            ("bench", std::process::id()),
        ];
        for (name, comm) in [("mariadb", "mariadbd"), ("redis", "redis-server")] {
            if let Some(pid) = procs::pid_of(comm) {
                pids.push((name, pid));
            }
        }
        pids
    }
}

/// Waits until `expected` events of `seqs` arrived, at most `timeout`; whether they did.
async fn wait_for(
    tracker: &Tracker,
    seqs: std::ops::Range<usize>,
    expected: usize,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if tracker.delivered(seqs.clone()) >= expected {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
