//! `ingest` in a process of its own, for tests that stop it with SIGTERM or kill it with
//! SIGKILL. The test binary runs itself again with one ignored test selected (its body is
//! [`run_child`]), which runs what `ingest run` runs: the signal handler, `Ingest::new`, the
//! admin listener and the run loop, on a runtime of its own. Nothing of a killed child runs
//! after the signal: no drain, no commit, no LeaveGroup, so the group notices only when the
//! session times out, as with a crashed pod.
//!
//! The child logs JSON to stderr; a thread copies it into a log file and records, as the
//! lines arrive, the consumer group's assignments and revocations and any ERROR line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use serde_json::{Value, json};
use shared::channel::Channels;

/// The variable that carries the child's configuration (JSON); only children have it.
const CHILD_CONFIG: &str = "NT_INGEST_CHILD_CONFIG";

/// What a child instance is configured with (the rest are `IngestConfig::new`'s defaults).
#[derive(Debug, Clone)]
pub struct ChildConfig {
    pub bootstrap: String,
    pub group: String,
    pub database_url: String,
    pub redis_url: String,
    pub channel_prefix: String,
    pub kafka_properties: Vec<(String, String)>,
    pub store_parallelism: usize,
    pub shutdown_deadline: Duration,
}

impl ChildConfig {
    fn to_json(&self) -> String {
        json!({
            "bootstrap": self.bootstrap,
            "group": self.group,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "channel_prefix": self.channel_prefix,
            "kafka_properties": self.kafka_properties,
            "store_parallelism": self.store_parallelism,
            "shutdown_deadline_ms": self.shutdown_deadline.as_millis() as u64,
        })
        .to_string()
    }

    fn ingest_config(json: &str) -> IngestConfig {
        let v: Value = serde_json::from_str(json).expect("child configuration");
        let text = |key: &str| v[key].as_str().expect(key).to_owned();
        let mut config = IngestConfig::new(
            &text("bootstrap"),
            &text("database_url"),
            &text("redis_url"),
        );
        config.group_id = text("group");
        config.channels = Channels::new(text("channel_prefix"));
        config.kafka_properties =
            serde_json::from_value(v["kafka_properties"].clone()).expect("kafka_properties");
        config.store_parallelism = v["store_parallelism"].as_u64().expect("parallelism") as usize;
        config.shutdown_deadline =
            Duration::from_millis(v["shutdown_deadline_ms"].as_u64().expect("deadline"));
        config.admin_addr = Some("127.0.0.1:0".parse().expect("address"));
        config
    }
}

/// The body of the child's test: runs ingest until SIGTERM, as `ingest run` does.
pub async fn run_child() {
    let json = std::env::var(CHILD_CONFIG)
        .expect("this test is a child process of IngestProcess::spawn, not a test of its own");
    let config = ChildConfig::ingest_config(&json);
    shared::telemetry::init(shared::telemetry::LogFormat::Json);
    let shutdown = shared::shutdown::on_signal();
    let ingest = Ingest::new(config).await.expect("ingest starts");
    ingest.serve_admin(&shutdown).await.expect("admin listener");
    ingest
        .run(shutdown)
        .await
        .expect("ingest stops without error");
}

/// A consumer group event of one instance, as its log reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEvent {
    Assigned(usize),
    Revoked(usize),
}

#[derive(Default)]
struct Seen {
    group: Vec<(Instant, GroupEvent)>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// A running child instance; SIGKILLed on drop.
pub struct IngestProcess {
    pub name: String,
    pub log: PathBuf,
    pub started: Instant,
    child: Child,
    seen: Arc<Mutex<Seen>>,
}

impl IngestProcess {
    /// Starts the test binary's `child_test` (an ignored test whose body is [`run_child`])
    /// as instance `name`; its log goes to `target/tmp/{group}-{name}.log`.
    pub fn spawn(child_test: &str, name: &str, config: &ChildConfig) -> Self {
        let log = PathBuf::from(format!(
            "{}/{}-{name}.log",
            env!("CARGO_TARGET_TMPDIR"),
            config.group
        ));
        File::create(&log).expect("log file");
        let append = || {
            OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("log file")
        };
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .args([child_test, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env_clear()
            .env(CHILD_CONFIG, config.to_json())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(append())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("start the child instance");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (sink, mut file) = (seen.clone(), append());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                record(&sink, &line);
            }
        });
        IngestProcess {
            name: name.to_owned(),
            log,
            started,
            child,
            seen,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The group events so far, with the time each line was read.
    pub fn group_events(&self) -> Vec<(Instant, GroupEvent)> {
        self.seen.lock().expect("log state").group.clone()
    }

    /// The partitions this instance holds now, by its log.
    pub fn assigned(&self) -> usize {
        self.group_events()
            .iter()
            .fold(0, |held, (_, event)| match event {
                GroupEvent::Assigned(n) => held + n,
                GroupEvent::Revoked(n) => held.saturating_sub(*n),
            })
    }

    /// The ERROR lines logged so far.
    pub fn errors(&self) -> Vec<String> {
        self.seen.lock().expect("log state").errors.clone()
    }

    /// The WARN messages logged so far.
    pub fn warnings(&self) -> Vec<String> {
        self.seen.lock().expect("log state").warnings.clone()
    }

    /// Asks the instance to stop (SIGTERM): it finishes its batches, commits and leaves.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "SIGTERM to {}", self.name);
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics, naming the log, if the instance has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
    }

    /// Waits for the instance to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; see {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Notes what one log line says about the group, or an error or warning.
fn record(seen: &Mutex<Seen>, line: &str) {
    let Ok(json) = serde_json::from_str::<Value>(line) else {
        return;
    };
    let partitions = || json["partitions"].as_u64().unwrap_or(0) as usize;
    let event = match json["message"].as_str() {
        Some("partitions assigned") => Some(GroupEvent::Assigned(partitions())),
        Some("partitions revoked") => Some(GroupEvent::Revoked(partitions())),
        _ => None,
    };
    let mut seen = seen.lock().expect("log state");
    if let Some(event) = event {
        seen.group.push((Instant::now(), event));
    }
    match json["level"].as_str() {
        Some("ERROR") => seen.errors.push(line.to_owned()),
        Some("WARN") => seen
            .warnings
            .push(json["message"].as_str().unwrap_or(line).to_owned()),
        _ => {}
    }
}
