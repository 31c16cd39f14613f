//! The benchmark's figures: one [`Measured`] per target, printed as a table and written as
//! JSON (`target/bench-results/pubsub.json`, in the shape of `e2e.json`).

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

/// What one shard (or the node) carried during the phase.
pub struct ShardFigures {
    /// The master's (or the node's) port.
    pub port: u16,
    /// Messages its subscribers received.
    pub delivered: u64,
    /// Each `redis-server` process of the shard: role, port, CPU seconds used.
    pub processes: Vec<(&'static str, u16, f64)>,
}

impl ShardFigures {
    /// CPU seconds of `cpu` per million messages of this shard (= µs per message).
    fn per_million(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.delivered.max(1) as f64
    }
}

/// The phase of one target.
pub struct Measured {
    /// The results key: `single_node` or `cluster_3_shards`.
    pub key: &'static str,
    pub name: &'static str,
    pub secs: f64,
    pub published: u64,
    /// Published (over the whole run) and not received within the drain time.
    pub lost: u64,
    /// Messages of batches Redis refused.
    pub failed: u64,
    /// CPU seconds of the subscribers' thread, and of the rest of this process (the
    /// publishers).
    pub subscribers_cpu_secs: f64,
    pub publishers_cpu_secs: f64,
    pub shards: Vec<ShardFigures>,
}

impl Measured {
    pub fn delivered(&self) -> u64 {
        self.shards.iter().map(|s| s.delivered).sum()
    }

    fn rate(&self, messages: u64) -> f64 {
        messages as f64 / self.secs.max(1e-3)
    }

    fn redis_cpu_us_per_message(&self) -> f64 {
        let cpu: f64 = self
            .shards
            .iter()
            .flat_map(|s| &s.processes)
            .map(|(_, _, cpu)| cpu)
            .sum();
        cpu * 1e6 / self.delivered().max(1) as f64
    }

    fn us_per_message(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e6 / self.delivered().max(1) as f64
    }

    fn share(&self, shard: &ShardFigures) -> f64 {
        shard.delivered as f64 / self.delivered().max(1) as f64
    }

    /// Messages/s one core would carry at the busiest master's CPU cost per message.
    fn master_core_capacity(&self) -> f64 {
        let worst = self
            .shards
            .iter()
            .filter_map(|s| s.processes.first().map(|(_, _, cpu)| s.per_million(*cpu)))
            .fold(0.0, f64::max);
        1e6 / worst.max(1e-3)
    }

    /// The target on one line, as its phase ends.
    pub fn line(&self) -> String {
        format!(
            "  {}: published {}/s, delivered {}/s over {:.1} s, Redis CPU {:.2} µs/message{}{}",
            self.name,
            grouped(self.rate(self.published)),
            grouped(self.rate(self.delivered())),
            self.secs,
            self.redis_cpu_us_per_message(),
            if self.lost > 0 {
                format!(", {} not received", self.lost)
            } else {
                String::new()
            },
            if self.failed > 0 {
                format!(", {} refused", self.failed)
            } else {
                String::new()
            },
        )
    }

    fn json(&self) -> Value {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|shard| {
                let processes: Vec<Value> = shard
                    .processes
                    .iter()
                    .map(|(role, port, cpu)| {
                        json!({
                            "role": role,
                            "port": port,
                            "cpu_secs": round(*cpu),
                            "cpu_secs_per_million_messages": round(shard.per_million(*cpu)),
                        })
                    })
                    .collect();
                json!({
                    "port": shard.port,
                    "delivered_per_sec": self.rate(shard.delivered).round(),
                    "share": (self.share(shard) * 1000.0).round() / 1000.0,
                    "processes": processes,
                })
            })
            .collect();
        let mut figures = json!({
            "delivered_per_sec": self.rate(self.delivered()).round(),
            "published_per_sec": self.rate(self.published).round(),
            "redis_cpu_us_per_message": round(self.redis_cpu_us_per_message()),
            "publishers_cpu_us_per_message": round(self.us_per_message(self.publishers_cpu_secs)),
            "subscribers_cpu_us_per_message": round(self.us_per_message(self.subscribers_cpu_secs)),
            "master_core_capacity_per_sec_estimate": self.master_core_capacity().round(),
            "measured_secs": round(self.secs),
            "delivered": self.delivered(),
            "lost": self.lost,
            "failed": self.failed,
            "shards": shards,
        });
        if self.shards.len() > 1 {
            figures["per_shard_delivered_per_sec"] = self
                .shards
                .iter()
                .map(|s| self.rate(s.delivered).round())
                .collect();
            figures["shard_share"] = self
                .shards
                .iter()
                .map(|s| (self.share(s) * 1000.0).round() / 1000.0)
                .collect();
        }
        figures
    }
}

/// How the run was made.
pub struct Context {
    pub users: usize,
    pub publishers: usize,
    pub batch: usize,
    pub phase_secs: u64,
    pub subscribers_per_server: usize,
    pub window: u64,
    pub payload_bytes: usize,
    pub load_at_start: f64,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// What the figures mean on this machine.
fn note() -> String {
    format!(
        "{} CPUs here: the cluster's six redis-server processes and the load generator \
         (publishers and subscribers, in this process) share them, so the cluster's total \
         cannot show three shards' worth of cores; the per-shard rates, each master's share \
         and the Redis CPU per message are what carry over to shards with a core each.",
        cpus()
    )
}

/// The summary table.
pub fn print(measured: &[Measured], context: &Context) {
    println!(
        "\npubsub summary: {} users (one subscribed channel each), {} publishers x {}-message \
         publish_all batches, {}-byte payloads on average, {} s measured per target",
        context.users, context.publishers, context.batch, context.payload_bytes, context.phase_secs
    );
    println!(
        "{:<20} {:>12} {:>12} {:>5}   CPU µs per message: {:>6} {:>11} {:>12}",
        "target", "published/s", "delivered/s", "lost", "Redis", "publishers", "subscribers"
    );
    for m in measured {
        println!(
            "{:<20} {:>12} {:>12} {:>5}   {:>25.2} {:>11.2} {:>12.2}",
            m.name,
            grouped(m.rate(m.published)),
            grouped(m.rate(m.delivered())),
            m.lost,
            m.redis_cpu_us_per_message(),
            m.us_per_message(m.publishers_cpu_secs),
            m.us_per_message(m.subscribers_cpu_secs)
        );
    }
    println!(
        "\n{:<20} {:>12} {:>7}   CPU s per million messages of the shard",
        "shard", "delivered/s", "share"
    );
    for m in measured {
        for shard in &m.shards {
            let processes: Vec<String> = shard
                .processes
                .iter()
                .map(|(role, port, cpu)| format!("{role} :{port} {:.2}", shard.per_million(*cpu)))
                .collect();
            println!(
                "{:<20} {:>12} {:>6.1}%   {}",
                format!(
                    "{} :{}",
                    if m.shards.len() > 1 { "master" } else { "node" },
                    shard.port
                ),
                grouped(m.rate(shard.delivered)),
                m.share(shard) * 100.0,
                processes.join(", ")
            );
        }
        println!(
            "{:<20} one core at the busiest master's cost carries about {}/s",
            m.name,
            grouped(m.master_core_capacity())
        );
    }
    println!("\nnote: {}", note());
}

/// Writes the results file.
pub fn write(path: &Path, measured: &[Measured], context: &Context) -> anyhow::Result<()> {
    let results: serde_json::Map<String, Value> = measured
        .iter()
        .map(|m| (m.key.to_owned(), m.json()))
        .collect();
    let document = json!({
        "bench": "pubsub",
        "command": "cargo bench -p devstack --bench pubsub",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "commit": git_commit(),
        "what": "Redis Pub/Sub throughput of notification JSON to many user channels, delivered \
                 to subscribers: PUBLISH/SUBSCRIBE on one node vs SPUBLISH/SSUBSCRIBE on a \
                 3-master, 3-replica Redis Cluster, published with shared::redis_link \
                 publish_all (one pipeline per slot on the cluster), loopback",
        "machine": {
            "cpus": cpus(),
            "load_average_at_start": context.load_at_start,
        },
        "params": {
            "users": context.users,
            "publishers": context.publishers,
            "batch": context.batch,
            "phase_secs": context.phase_secs,
            "subscribers_per_server": context.subscribers_per_server,
            "window": context.window,
            "payload_bytes": context.payload_bytes,
        },
        "note": note(),
        "results": results,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `123 456`: a rate rounded, its thousands apart.
fn grouped(value: f64) -> String {
    let digits = (value.max(0.0).round() as u64).to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// The checkout's commit, when git can tell.
fn git_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
