//! Sharded Pub/Sub throughput: one Redis node against a Redis Cluster of three masters
//! (a replica each), in one run, on loopback:
//!
//! 1. a private standalone `redis-server` on a free port, and a private cluster
//!    ([`devstack::redis_cluster`]);
//! 2. `--users` channels `notification:{userId}`, each with one subscriber: `SUBSCRIBE` on
//!    the node, `SSUBSCRIBE` on the master that owns the channel's slot, over plain RESP3
//!    connections (`--subscribers-per-server` per node or master, driven by a thread of
//!    their own) that count each message as it arrives;
//! 3. per target, `--publishers` tasks, each with its own `shared::redis_link::RedisConn`,
//!    publish batches of `--batch` notification JSONs (about 350 bytes) to random users
//!    with `publish_all`, as ingest does: one `PUBLISH` pipeline on the node, `SPUBLISH`
//!    with one pipeline per slot on the cluster. A publisher pauses while more than
//!    `--window` messages are published and not yet received, so the figure is what the
//!    subscribers got, not what Redis accepted (and no subscriber's output buffer grows
//!    towards Redis's Pub/Sub limit);
//! 4. after a warm-up second, `--phase-secs` are measured: messages published and received
//!    per second, per shard, each master's share, and the CPU time per message of every
//!    `redis-server` process (from `/proc/<pid>/stat`), of the publishers and of the
//!    subscribers' thread.
//!
//! Prints a table and writes `target/bench-results/pubsub.json`.
//! Run: `cargo bench -p devstack --bench pubsub` (about 25 s here, after the build).

#![allow(clippy::print_stdout)]

#[path = "pubsub/load.rs"]
mod load;
#[path = "pubsub/report.rs"]
mod report;
#[path = "pubsub/subscribers.rs"]
mod subscribers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use devstack::redis_cluster::RedisCluster;
use redis::aio::MultiplexedConnection;
use shared::redis_link::RedisTarget;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use load::{Counters, Load, Publisher};
use report::{Measured, ShardFigures};
use subscribers::{SubscriberThread, cpu_seconds};

/// Publishing before the measured phase starts (connections made, caches warm).
const WARM_UP: Duration = Duration::from_secs(1);
/// After the phase, the longest wait for messages still on their way.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest wait for a publisher's last batch.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the private node to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Clone)]
struct Args {
    /// Users, one channel each, every channel subscribed.
    #[arg(long, default_value_t = 30_000)]
    users: usize,
    /// Publisher tasks, each with its own connection (as many ingest instances).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Messages per `publish_all` call (ingest publishes one batch per poll).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds measured per target, after a warm-up second.
    #[arg(long, default_value_t = 10)]
    phase_secs: u64,
    /// Subscriber connections per node and per cluster master.
    #[arg(long, default_value_t = 2)]
    subscribers_per_server: usize,
    /// Most messages published and not yet received before publishers pause.
    #[arg(long, default_value_t = 20_000)]
    window: u64,
    /// The results file (default: target/bench-results/pubsub.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Cargo passes --bench; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A `redis-server` process whose CPU time is read.
struct Process {
    role: &'static str,
    port: u16,
    pid: u32,
}

/// What one shard (the node is one) carries: its processes and its subscribers' count.
struct Shard {
    port: u16,
    processes: Vec<Process>,
    received: Arc<AtomicU64>,
}

/// A Redis under measure.
struct Target {
    /// The results key.
    key: &'static str,
    name: &'static str,
    /// What publishers connect to (`RedisTarget::parse`).
    address: String,
    shards: Vec<Shard>,
    /// Kept open: the subscriber connections.
    _subscribers: Vec<MultiplexedConnection>,
}

impl Target {
    /// The node, every channel subscribed on it.
    async fn node(
        port: u16,
        pid: u32,
        load: &Load,
        subscribers: &SubscriberThread,
        args: &Args,
    ) -> anyhow::Result<Target> {
        let shard = Shard {
            port,
            processes: vec![Process {
                role: "node",
                port,
                pid,
            }],
            received: Arc::new(AtomicU64::new(0)),
        };
        let connections = subscribers
            .subscribe(
                port,
                "SUBSCRIBE",
                load.channels.clone(),
                args.subscribers_per_server,
                shard.received.clone(),
            )
            .await?;
        Ok(Target {
            key: "single_node",
            name: "single node",
            address: format!("redis://127.0.0.1:{port}/"),
            shards: vec![shard],
            _subscribers: connections,
        })
    }

    /// The cluster, each channel subscribed on the master that owns its slot.
    async fn cluster(
        cluster: &RedisCluster,
        load: &Load,
        subscribers: &SubscriberThread,
        args: &Args,
    ) -> anyhow::Result<Target> {
        let masters = cluster.masters().await?;
        ensure!(masters.len() == 3, "expected 3 masters, found {masters:?}");
        let mut pipe = redis::pipe();
        for channel in &load.channels {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(channel);
        }
        let slots: Vec<u16> = pipe
            .query_async(&mut cluster.node(masters[0].port).await?)
            .await?;
        let mut shards = Vec::new();
        let mut connections = Vec::new();
        for master in &masters {
            let pid = |port: u16| {
                cluster
                    .pid(port)
                    .with_context(|| format!("no process for node :{port}"))
            };
            let mut processes = vec![Process {
                role: "master",
                port: master.port,
                pid: pid(master.port)?,
            }];
            for &replica in &master.replicas {
                processes.push(Process {
                    role: "replica",
                    port: replica,
                    pid: pid(replica)?,
                });
            }
            let owned: Vec<String> = load
                .channels
                .iter()
                .zip(&slots)
                .filter(|(_, slot)| master.serves(**slot))
                .map(|(channel, _)| channel.clone())
                .collect();
            let received = Arc::new(AtomicU64::new(0));
            let subscribed = subscribers.subscribe(
                master.port,
                "SSUBSCRIBE",
                owned,
                args.subscribers_per_server,
                received.clone(),
            );
            connections.extend(subscribed.await?);
            shards.push(Shard {
                port: master.port,
                processes,
                received,
            });
        }
        Ok(Target {
            key: "cluster_3_shards",
            name: "cluster, 3 shards",
            address: cluster.address(),
            shards,
            _subscribers: connections,
        })
    }

    fn received(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum()
    }

    fn snapshot(&self, published: &AtomicU64, subscribers: &SubscriberThread) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            published: published.load(Ordering::Relaxed),
            received: self
                .shards
                .iter()
                .map(|s| s.received.load(Ordering::Relaxed))
                .collect(),
            cpu: self
                .shards
                .iter()
                .map(|s| s.processes.iter().map(|p| cpu_seconds(p.pid)).collect())
                .collect(),
            own_cpu: cpu_seconds(std::process::id()),
            subscribers_cpu: subscribers.cpu_seconds(),
        }
    }

    /// Publishes for the warm-up and the phase; the figures of the phase.
    async fn measure(
        &self,
        load: &Arc<Load>,
        subscribers: &SubscriberThread,
        args: &Args,
    ) -> anyhow::Result<Measured> {
        let counters = Counters::default();
        let received: Vec<Arc<AtomicU64>> =
            self.shards.iter().map(|s| s.received.clone()).collect();
        let stop = CancellationToken::new();
        let mut publishers = JoinSet::new();
        for _ in 0..args.publishers {
            let connection = RedisTarget::parse(&self.address)
                .map_err(anyhow::Error::msg)?
                .connect_lazy()?;
            let publisher = Publisher {
                connection,
                load: load.clone(),
                batch: args.batch,
                window: args.window,
                counters: counters.clone(),
                received: received.clone(),
            };
            publishers.spawn(publisher.run(stop.clone()));
        }
        tokio::time::sleep(WARM_UP).await;
        let before = self.snapshot(&counters.published, subscribers);
        tokio::time::sleep(Duration::from_secs(args.phase_secs)).await;
        let after = self.snapshot(&counters.published, subscribers);
        stop.cancel();
        tokio::time::timeout(STOP_TIMEOUT, publishers.join_all())
            .await
            .context("a publisher did not stop")?;
        let total = counters.published.load(Ordering::Relaxed);
        let deadline = Instant::now() + DRAIN;
        while self.received() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let shards = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, shard)| ShardFigures {
                port: shard.port,
                delivered: after.received[i] - before.received[i],
                processes: shard
                    .processes
                    .iter()
                    .zip(after.cpu[i].iter().zip(&before.cpu[i]))
                    .map(|(p, (a, b))| (p.role, p.port, a - b))
                    .collect(),
            })
            .collect();
        Ok(Measured {
            key: self.key,
            name: self.name,
            secs: after.at.duration_since(before.at).as_secs_f64(),
            published: after.published - before.published,
            lost: total.saturating_sub(self.received()),
            failed: counters.failed.load(Ordering::Relaxed),
            subscribers_cpu_secs: after.subscribers_cpu - before.subscribers_cpu,
            publishers_cpu_secs: (after.own_cpu - after.subscribers_cpu)
                - (before.own_cpu - before.subscribers_cpu),
            shards,
        })
    }
}

/// Counters and CPU times at one instant of a phase.
struct Snapshot {
    at: Instant,
    published: u64,
    received: Vec<u64>,
    cpu: Vec<Vec<f64>>,
    /// This process, and its subscribers' thread.
    own_cpu: f64,
    subscribers_cpu: f64,
}

/// `target/`, from this benchmark's path (`target/release/deps/pubsub-<hash>`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("cannot tell the target directory from the benchmark's path")
}

/// Starts the private node; returns it and its port once it listens.
async fn start_node(dir: &Path) -> anyhow::Result<(tokio::process::Child, u16)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = devstack::launch::spawn_redis(port, dir)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            child.try_wait()?.is_none() && Instant::now() < deadline,
            "redis-server on :{port} did not start: {}",
            devstack::launch::log_tail(&dir.join("redis.log"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, port))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // On Ctrl-C the run is dropped, and with it every server it started.
    tokio::select! {
        outcome = run(Args::parse()) => outcome,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.users > 0 && args.publishers > 0 && args.batch > 0 && args.phase_secs > 0,
        "--users, --publishers, --batch and --phase-secs must be at least 1"
    );
    ensure!(
        args.subscribers_per_server > 0,
        "--subscribers-per-server must be at least 1"
    );
    let started = Instant::now();
    let load_at_start = report::load_average();
    let target_dir = target_dir()?;
    let load = Arc::new(Load::new(args.users));
    let (mut node, node_port) = start_node(&target_dir.join("pubsub-bench")).await?;
    let node_pid = node.id().context("the node has exited")?;
    let cluster = RedisCluster::start().await?;
    let subscribers = SubscriberThread::start()?;
    println!(
        "pubsub: a node on :{node_port} and a cluster on {}; subscribing {} channels on each",
        cluster.nodes(),
        args.users
    );
    let single = Target::node(node_port, node_pid, &load, &subscribers, &args).await?;
    let sharded = Target::cluster(&cluster, &load, &subscribers, &args).await?;
    let mut measured = Vec::new();
    for target in [&single, &sharded] {
        let figures = target.measure(&load, &subscribers, &args).await?;
        println!("{}", figures.line());
        measured.push(figures);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir.join("bench-results").join("pubsub.json"));
    let context = report::Context {
        users: args.users,
        publishers: args.publishers,
        batch: args.batch,
        phase_secs: args.phase_secs,
        subscribers_per_server: args.subscribers_per_server,
        window: args.window,
        payload_bytes: load.mean_payload_bytes(),
        load_at_start,
    };
    report::print(&measured, &context);
    report::write(&out, &measured, &context)?;
    drop(single);
    drop(sharded);
    drop(subscribers);
    node.kill().await?;
    drop(cluster);
    println!(
        "pubsub: results written to {} ({:.0} s in all)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
