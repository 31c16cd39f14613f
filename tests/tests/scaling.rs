//! `scripts/scaling.py`, the capacity model's generator, run with `python3` on results files
//! this test writes (the shapes the benches write) into a fresh directory: the figures it
//! computes from them, and its refusal when a file or a figure is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

/// The assumptions the expected figures below are computed with, pinned so that a change of
/// the script's defaults does not change what this test checks.
const ASSUME: [&str; 11] = [
    "SESSIONS_PER_USER=1.5",
    "GATEWAY_POD_CORES=2",
    "GATEWAY_POD_MEMORY_MIB=4096",
    "MEMORY_HEADROOM=0.7",
    "POD_FD_LIMIT=1048576",
    "FD_HEADROOM=0.8",
    "CPU_HEADROOM=0.6",
    "BROADCAST_DEADLINE_SECS=10",
    "MYSQL_HEADROOM=0.6",
    "REDIS_HEADROOM=0.6",
    "SPARE_PODS=1",
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/scaling.py")
}

/// A directory of its own for one test, removed when dropped.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    /// Writes the five results files, `edit` applied to each document first.
    fn new(name: &str, edit: impl Fn(&str, &mut Value)) -> Fixture {
        let dir = std::env::temp_dir().join(format!("scaling-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("results")).expect("temp dir");
        for (bench, mut document) in documents() {
            edit(bench, &mut document);
            if !document.is_null() {
                let path = dir.join("results").join(format!("{bench}.json"));
                std::fs::write(path, document.to_string()).expect("fixture file");
            }
        }
        Fixture { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("SCALING.md")
    }

    fn run(&self) -> Output {
        let mut command = Command::new("python3");
        command
            .arg(script())
            .arg("--results")
            .arg(self.dir.join("results"))
            .arg("--out")
            .arg(self.out());
        for assumption in ASSUME {
            command.args(["--assume", assumption]);
        }
        command.output().expect("python3 runs")
    }

    /// Runs the script, which must succeed, and returns the document it wrote.
    fn model(&self) -> String {
        let output = self.run();
        assert!(
            output.status.success(),
            "scaling.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(self.out()).expect("SCALING.md written")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn envelope(bench: &str, results: Value) -> Value {
    json!({
        "bench": bench,
        "command": format!("cargo bench --bench {bench}"),
        "date": "2026-01-02T03:04:05Z",
        "commit": "abc1234",
        "what": "fixture",
        "machine": {
            "cpus": 2,
            "load_average_at_start": 1.5,
            "gateway_fd_limit": { "soft": 20000, "hard": 20000 },
            "file_max": 2466093,
        },
        "results": results,
    })
}

/// The five results files, with round figures.
fn documents() -> Vec<(&'static str, Value)> {
    let load = envelope(
        "load",
        json!({
            "idle": {
                "gateway_rss_at_start_kib": 10240,
                "raw": { "sessions": 19900, "kb_per_session": 10.0 },
                "sockjs": { "sessions": 10000, "kb_per_session": 12.0 },
            },
            "deliveries": {
                "subscribers": 1000,
                "burst": { "deliveries_per_sec": 50000.0, "gateway_cpu_us_per_delivery": 15.0, "p99_ms": 900.0 },
                "paced": {
                    "offered_per_sec": 10000, "gateway_cpu_us_per_delivery": 20.0,
                    "p50_ms": 3.0, "p99_ms": 6.0,
                },
            },
            "broadcast": {
                "sessions": 19000,
                "single": {
                    "publish_to_last_median_ms": 400.0,
                    "deliveries_per_sec_median": 50000,
                    "gateway_cpu_us_per_delivery_median": 20.0,
                },
                "personal_without_broadcasts": { "p99_ms": 5.0 },
                "personal_with_broadcasts": { "p99_ms": 900.0, "broadcast_every_ms": 100 },
            },
            "recovery": { "recovered": 500, "to_last_message_median_ms": 3.0 },
        }),
    );
    let inbox = envelope(
        "inbox",
        json!({
            "table": { "bytes_per_row": 400.0 },
            "endpoints": [{
                "endpoint": "page",
                "label": "list page 1, random users",
                "rest": { "req_per_sec": 3000.0, "cpu_us_per_request": { "gateway": 100.0 } },
                "direct": { "req_per_sec": 4000.0 },
            }],
        }),
    );
    let pubsub = envelope(
        "pubsub",
        json!({
            "single_node": {
                "delivered_per_sec": 200000.0, "published_per_sec": 200000.0,
                "redis_cpu_us_per_message": 4.0,
            },
            "cluster_3_shards": {
                "delivered_per_sec": 300000.0,
                "per_shard_delivered_per_sec": [120000.0, 100000.0, 80000.0],
                "redis_cpu_us_per_message": 5.0,
                "shard_share": [0.4, 0.333, 0.267],
            },
        }),
    );
    let throughput = envelope(
        "throughput",
        json!({
            "ingest_events_per_sec": 25000.0, "raw_insert_rows_per_sec": 40000.0,
            "ratio": 0.62, "store_parallelism": 1, "broker": "mock",
        }),
    );
    let mut e2e = envelope("e2e", Value::Null);
    e2e["configurations"] = json!([{
        "name": "shipped defaults",
        "kafka_properties": "",
        "figures": { "highest_sustainable": {
            "rate_per_sec": 20000, "p50_ms": 5.0, "p99_ms": 40.0,
            "cpu_us_per_event": { "ingest": 30.0, "gateway": 15.0, "mariadb": 25.0, "redis": 4.0 },
        } },
    }]);
    vec![
        ("load", load),
        ("inbox", inbox),
        ("pubsub", pubsub),
        ("throughput", throughput),
        ("e2e", e2e),
    ]
}

/// The value column of the model's row named `what`.
fn value(model: &str, what: &str) -> String {
    let prefix = format!("| {what} |");
    let row = model
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {what:?} in:\n{model}"));
    let cells: Vec<&str> = row.trim_end_matches('|').rsplit('|').collect();
    cells[0].trim().to_owned()
}

#[test]
fn gateway_pods_follow_memory_per_session() {
    let fixture = Fixture::new("gateway", |_, _| {});
    let model = fixture.model();
    // (4096 MiB × 0.7 − 10 240 KiB) ÷ 12 000 B (SockJS, the larger) = 249 665.9 sessions.
    assert_eq!(value(&model, "sessions per gateway pod, memory"), "249 665");
    // 1 000 000 users × 1.5 = 1 500 000 sessions ÷ 249 665 = 6.01 → 7, memory binds: + 1 spare.
    assert_eq!(value(&model, "gateway pods for memory"), "7");
    // 10 s × 50 000/s × 0.6 = 300 000 sessions per pod → 5 pods.
    assert_eq!(value(&model, "gateway pods for the broadcast"), "5");
    // 75 000 deliveries/s ÷ (2 × 10⁶ µs × 0.6 ÷ 20 µs, the paced run's) = 1.25 → 2.
    assert_eq!(value(&model, "gateway pods for CPU at peak"), "2");
    assert_eq!(value(&model, "gateway pods"), "8");
    assert!(
        model.contains("- gateway pods: **8** (bound by memory)"),
        "{model}"
    );

    // Twice the memory per session: twice the pods for memory.
    let heavier = Fixture::new("gateway-heavier", |bench, doc| {
        if bench == "load" {
            doc["results"]["idle"]["sockjs"]["kb_per_session"] = json!(24.0);
        }
    });
    let model = heavier.model();
    assert_eq!(value(&model, "sessions per gateway pod, memory"), "124 832");
    assert_eq!(value(&model, "gateway pods for memory"), "13");
    assert_eq!(value(&model, "gateway pods"), "14");
}

#[test]
fn mysql_redis_and_ingest_follow_their_measured_rates() {
    let fixture = Fixture::new("backends", |_, _| {});
    let model = fixture.model();
    // One primary takes 40 000 × 0.6 = 24 000 rows/s: the 50 000/s peak needs 3.
    assert_eq!(value(&model, "rows/s one primary takes"), "24 000");
    assert_eq!(value(&model, "primaries at peak"), "3");
    assert_eq!(
        value(&model, "users from which the peak outgrows one primary"),
        "480 000"
    );
    assert!(model.contains("bottleneck: **MySQL primary**"), "{model}");
    // 10⁶ ÷ 4 µs × 0.6 = 150 000 messages/s on one node; the peak delivers 75 000.
    assert_eq!(
        value(&model, "delivered messages/s one node takes"),
        "150 000"
    );
    assert_eq!(value(&model, "Redis shards"), "1");
    // 25 000 events/s × 0.6 = 15 000 per pod: ⌈50 000 ÷ 15 000⌉ + 1.
    assert_eq!(value(&model, "ingest pods"), "5");
    // Every figure names its bench and date.
    assert!(model.contains("| load 2026-01-02 | `results.idle.sockjs.kb_per_session` |"));
    assert!(model.contains("| throughput 2026-01-02 | `results.raw_insert_rows_per_sec` |"));
}

#[test]
fn a_missing_results_file_names_the_bench_to_run() {
    let fixture = Fixture::new("missing", |bench, doc| {
        if bench == "throughput" {
            *doc = Value::Null;
        }
    });
    let output = fixture.run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "succeeded without throughput.json"
    );
    assert!(stderr.contains("throughput.json is missing"), "{stderr}");
    assert!(
        stderr.contains("cargo bench -p ingest --bench throughput"),
        "{stderr}"
    );
    assert!(!fixture.out().exists(), "a model was written anyway");
}

#[test]
fn a_missing_figure_names_its_key_and_bench() {
    let fixture = Fixture::new("no-broadcast", |bench, doc| {
        if bench == "load" {
            doc["results"]
                .as_object_mut()
                .expect("results")
                .remove("broadcast");
        }
    });
    let output = fixture.run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "succeeded without the broadcast figures"
    );
    assert!(stderr.contains("results.broadcast.sessions"), "{stderr}");
    assert!(
        stderr.contains("cargo bench -p gateway --bench load"),
        "{stderr}"
    );
    assert!(!fixture.out().exists(), "a model was written anyway");
}
