//! The results file of a gateway benchmark, `target/bench-results/<bench>.json`: the envelope
//! every benchmark of this repository writes (bench, command, date, commit, what, machine)
//! around the run's figures (`results`). `scripts/scaling.py` reads these files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

/// What a run records about itself: at its start, and once its gateway runs.
pub struct Envelope {
    bench: &'static str,
    what: &'static str,
    command: String,
    /// RFC 3339, when the run started.
    date: String,
    commit: Option<String>,
    load_average: f64,
    /// `Max open files` of the first gateway process the run started: soft, hard.
    gateway_fd_limit: Option<(Value, Value)>,
}

impl Envelope {
    /// Records the start of a run of `bench` and prints the machine's load.
    pub fn start(bench: &'static str, what: &'static str) -> Envelope {
        let envelope = Envelope {
            bench,
            what,
            command: command(bench),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            commit: git_commit(),
            load_average: load_average(),
            gateway_fd_limit: None,
        };
        println!(
            "{bench}: load average {:.2} at start, {} CPUs",
            envelope.load_average,
            cpus()
        );
        envelope
    }

    /// Reads the descriptor limit of the gateway process `pid` (the first one only: every
    /// gateway of a run is started alike).
    pub fn gateway(&mut self, pid: u32) {
        if self.gateway_fd_limit.is_none() {
            self.gateway_fd_limit = open_files_limit(pid);
        }
    }

    /// Writes `results` in the envelope to `out`, or to `target/bench-results/<bench>.json`.
    pub fn write(&self, out: Option<&Path>, results: Value) -> anyhow::Result<PathBuf> {
        let path = match out {
            Some(path) => path.to_owned(),
            None => target_dir()?
                .join("bench-results")
                .join(format!("{}.json", self.bench)),
        };
        let (soft, hard) = self
            .gateway_fd_limit
            .clone()
            .unwrap_or((Value::Null, Value::Null));
        let file_max = std::fs::read_to_string("/proc/sys/fs/file-max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let document = json!({
            "bench": self.bench,
            "command": self.command,
            "date": self.date,
            "commit": self.commit,
            "what": self.what,
            "machine": {
                "cpus": cpus(),
                "load_average_at_start": self.load_average,
                "gateway_fd_limit": { "soft": soft, "hard": hard },
                "file_max": file_max,
            },
            "results": results,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("results written to {}", path.display());
        Ok(path)
    }
}

/// Rounds to two decimals, for figures in the results file.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The command that reproduces this run: cargo's `--bench` flag left out, the rest quoted
/// for a shell.
fn command(bench: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=@".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect();
    let mut command = format!("cargo bench -p gateway --bench {bench}");
    if !args.is_empty() {
        command.push_str(" -- ");
        command.push_str(&args.join(" "));
    }
    command
}

/// `Max open files` of process `pid`: soft and hard, a number or `"unlimited"`.
fn open_files_limit(pid: u32) -> Option<(Value, Value)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)));
    Some((values.next()?, values.next()?))
}

/// `target/`, from this benchmark's path (`target/release/deps/<bench>-<hash>`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("cannot tell the target directory from the benchmark's path")
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
