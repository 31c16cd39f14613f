//! The benchmark's figures: one [`Step`] per rate, grouped by configuration, printed and
//! written as JSON (`target/bench-results/e2e.json`) for tools that read bench output.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Args;
use crate::load::Produced;
use crate::prom::Histogram;

/// Ingest's histogram: record timestamp → Redis publish.
pub const INGEST_HISTOGRAM: &str = "ingest_kafka_to_publish_seconds";
/// The gateway's histogram: Redis message → MESSAGE queued to the socket.
pub const GATEWAY_HISTOGRAM: &str = "gateway_delivery_latency_seconds";
/// A step keeps its offered rate when it sends at least this share of it.
const RATE_KEPT: f64 = 0.95;

/// What one step at one rate measured.
pub struct Step {
    pub rate: u64,
    /// Events per second actually handed to the producer.
    pub offered: f64,
    pub sent: usize,
    pub failed: usize,
    pub expected: usize,
    pub delivered: usize,
    /// Produce → MESSAGE, of the delivered events (milliseconds).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub duplicates: u64,
    /// From the last send until every event arrived (or the drain timeout).
    pub drain: Duration,
    pub ingest: Histogram,
    pub gateway: Histogram,
    /// CPU seconds each process used during the step.
    pub cpu: Vec<(&'static str, f64)>,
    /// Every event acknowledged and delivered within the drain time, the rate kept.
    pub kept_up: bool,
    /// Kept up, with p99 within the bound.
    pub sustainable: bool,
}

impl Step {
    /// A step from its sends and its sorted latencies (µs); `bound_ms` decides whether it
    /// is sustainable.
    pub fn new(rate: u64, produced: &Produced, latencies: &[u32], bound_ms: u64) -> Step {
        let ms = |micros: u32| f64::from(micros) / 1000.0;
        let at = |q: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
                .map_or(0.0, |l| ms(*l))
        };
        let expected = produced.sent - produced.failed;
        let delivered = latencies.len();
        let offered = produced.sent as f64 / produced.elapsed.as_secs_f64().max(1e-3);
        let p99_ms = at(0.99);
        let kept_up =
            produced.failed == 0 && delivered >= expected && offered >= rate as f64 * RATE_KEPT;
        let sustainable = kept_up && p99_ms <= bound_ms as f64;
        Step {
            rate,
            offered,
            sent: produced.sent,
            failed: produced.failed,
            expected,
            delivered,
            p50_ms: at(0.5),
            p99_ms,
            max_ms: latencies.last().map_or(0.0, |l| ms(*l)),
            mean_ms: latencies.iter().map(|l| ms(*l)).sum::<f64>() / delivered.max(1) as f64,
            duplicates: 0,
            drain: Duration::ZERO,
            ingest: Histogram::default(),
            gateway: Histogram::default(),
            cpu: Vec::new(),
            kept_up,
            sustainable,
        }
    }

    /// The step on a few lines, as it ends.
    pub fn line(&self) -> String {
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.2}"))
            .collect();
        format!(
            "  {:>6}/s (offered {:.0}/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; delivered {}/{}{}{}{}\n\
             \x20   ingest {INGEST_HISTOGRAM}: {}\n\
             \x20   gateway {GATEWAY_HISTOGRAM}: {}\n\
             \x20   CPU s: {}",
            self.rate,
            self.offered,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.delivered,
            self.expected,
            if self.failed > 0 {
                format!(", {} not acknowledged by Kafka", self.failed)
            } else {
                String::new()
            },
            if self.duplicates > 0 {
                format!(", {} duplicates", self.duplicates)
            } else {
                String::new()
            },
            match (self.kept_up, self.sustainable) {
                (_, true) => "",
                (true, false) => "  [p99 over the bound]",
                (false, _) => "  [fell behind]",
            },
            self.ingest.line(),
            self.gateway.line(),
            cpu.join(", "),
        )
    }

    fn json(&self) -> Value {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let cpu: serde_json::Map<String, Value> = self
            .cpu
            .iter()
            .map(|(name, secs)| ((*name).to_owned(), json!(round(*secs))))
            .collect();
        let per_event: serde_json::Map<String, Value> = self
            .cpu
            .iter()
            .map(|(name, secs)| {
                let micros = secs * 1e6 / self.delivered.max(1) as f64;
                ((*name).to_owned(), json!(round(micros)))
            })
            .collect();
        json!({
            "rate_per_sec": self.rate,
            "offered_per_sec": round(self.offered),
            "sent": self.sent,
            "failed": self.failed,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "p50_ms": round(self.p50_ms),
            "p99_ms": round(self.p99_ms),
            "max_ms": round(self.max_ms),
            "mean_ms": round(self.mean_ms),
            "drain_secs": round(self.drain.as_secs_f64()),
            "kept_up": self.kept_up,
            "sustainable": self.sustainable,
            INGEST_HISTOGRAM: self.ingest.summary(),
            GATEWAY_HISTOGRAM: self.gateway.summary(),
            "cpu_secs": cpu,
            "cpu_us_per_event": per_event,
        })
    }
}

/// The steps of one configuration.
pub struct Target {
    /// `KAFKA_PROPERTIES` (empty: the shipped defaults).
    pub properties: String,
    pub steps: Vec<Step>,
    /// CPU each process used without load, percent of one core.
    pub idle: Vec<(&'static str, f64)>,
}

impl Target {
    pub fn new(properties: &str, steps: Vec<Step>, idle: Vec<(&'static str, f64)>) -> Target {
        Target {
            properties: properties.to_owned(),
            steps,
            idle,
        }
    }

    /// The fastest sustainable step.
    pub fn highest_sustainable(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.sustainable)
            .max_by_key(|s| s.rate)
    }
}

/// How a configuration is named in the output.
pub fn config_name(properties: &str) -> String {
    if properties.is_empty() {
        "shipped defaults".to_owned()
    } else {
        format!("KAFKA_PROPERTIES={properties}")
    }
}

/// The summary table.
pub fn print(targets: &[Target], args: &Args) {
    println!(
        "\ne2e summary: produce → STOMP MESSAGE, {} users, {} s per step, sustainable = all delivered, rate kept, p99 <= {} ms",
        args.users, args.step_secs, args.p99_bound_ms
    );
    println!(
        "{:<40} {:>7} {:>8} {:>8} {:>8} {:>15} {:>8} {:>12}",
        "configuration",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "delivered",
        "kept up",
        "sustainable"
    );
    for target in targets {
        for step in &target.steps {
            println!(
                "{:<40} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>15} {:>8} {:>12}",
                config_name(&target.properties),
                step.rate,
                step.p50_ms,
                step.p99_ms,
                step.max_ms,
                format!("{}/{}", step.delivered, step.expected),
                if step.kept_up { "yes" } else { "no" },
                if step.sustainable { "yes" } else { "no" }
            );
        }
        let idle: Vec<String> = target
            .idle
            .iter()
            .map(|(name, percent)| format!("{name} {percent:.1}%"))
            .collect();
        if !idle.is_empty() {
            println!(
                "{:<40} idle CPU of one core: {}",
                config_name(&target.properties),
                idle.join(", ")
            );
        }
        match target.highest_sustainable() {
            Some(best) => println!(
                "{:<40} highest sustainable rate: {}/s",
                config_name(&target.properties),
                best.rate
            ),
            None => println!(
                "{:<40} no sustainable rate",
                config_name(&target.properties)
            ),
        }
    }
}

/// Writes the results file.
pub fn write(
    path: &Path,
    targets: &[Target],
    args: &Args,
    load_at_start: f64,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let configurations: Vec<Value> = targets
        .iter()
        .map(|target| {
            let mut figures = serde_json::Map::new();
            for rate in &args.rates {
                if let Some(step) = target.steps.iter().find(|s| s.rate == *rate) {
                    figures.insert(format!("rate_{rate}"), step.json());
                }
            }
            figures.insert(
                "highest_sustainable".to_owned(),
                target.highest_sustainable().map_or(Value::Null, Step::json),
            );
            let idle: serde_json::Map<String, Value> = target
                .idle
                .iter()
                .map(|(name, percent)| ((*name).to_owned(), json!((percent * 10.0).round() / 10.0)))
                .collect();
            json!({
                "name": config_name(&target.properties),
                "kafka_properties": target.properties,
                "idle_cpu_percent_of_a_core": idle,
                "figures": figures,
                "steps": target.steps.iter().map(Step::json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let results = json!({
        "bench": "e2e",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "commit": git_commit(),
        "what": "Kafka produce -> STOMP MESSAGE latency through tansu, ingest, Redis and the gateway (release binaries, loopback)",
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_at_start": load_at_start,
        },
        "duration_secs": elapsed.as_secs(),
        "params": {
            "users": args.users,
            "step_secs": args.step_secs,
            "p99_bound_ms": args.p99_bound_ms,
            "drain_secs": args.drain_secs,
            "rates": args.rates,
            "broker": "tansu (memory storage)",
            "topic": shared::event::EventKind::OrderCreated.default_topic(),
            "partitions": devstack::kafka::PARTITIONS,
        },
        "configurations": configurations,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
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
