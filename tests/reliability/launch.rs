//! `ingest` and `gateway` as processes of their own, started the way a case needs them: the
//! release binaries (the runner), or this test binary run again with one ignored test
//! selected whose body is [`child_main`] (the fast test, so `cargo test` builds nothing
//! more). Either way a process runs what the binary's `main` runs (`ingest run`, or the
//! gateway), configured by the environment only.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use devstack::procs::{self, Proc};

/// The variable that tells a test binary run again which program to be.
const CHILD_PROGRAM: &str = "RELIABILITY_CHILD";

/// How `ingest` and `gateway` processes are started.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// The release binaries.
    Release { ingest: PathBuf, gateway: PathBuf },
    /// This test binary with `child_test` (an ignored test running [`child_main`]).
    SelfExec { exe: PathBuf, child_test: String },
}

impl Launcher {
    /// This test binary, running `child_test` as the child.
    pub fn this_test(child_test: &str) -> anyhow::Result<Launcher> {
        Ok(Launcher::SelfExec {
            exe: std::env::current_exe()?,
            child_test: child_test.to_owned(),
        })
    }

    /// What a report says about the ingest processes.
    pub fn describe(&self) -> String {
        match self {
            Launcher::Release { .. } => "the release `ingest` binary".to_owned(),
            Launcher::SelfExec { .. } => {
                "`ingest run` in a process of its own (the debug test binary)".to_owned()
            }
        }
    }

    /// What a report says about the gateway processes.
    pub fn describe_gateway(&self) -> String {
        match self {
            Launcher::Release { .. } => "the release `gateway` binary".to_owned(),
            Launcher::SelfExec { .. } => {
                "a process of its own running the gateway from the debug test binary".to_owned()
            }
        }
    }

    /// The command of `ingest run` with an empty environment (but `PATH`).
    fn ingest_command(&self) -> Command {
        match self {
            Launcher::Release { ingest, .. } => {
                let mut command = bare_command(ingest);
                command.arg("run");
                command
            }
            Launcher::SelfExec { exe, child_test } => self_exec(exe, child_test, "ingest"),
        }
    }

    /// The command of the gateway with an empty environment (but `PATH`).
    fn gateway_command(&self) -> Command {
        match self {
            Launcher::Release { gateway, .. } => bare_command(gateway),
            Launcher::SelfExec { exe, child_test } => self_exec(exe, child_test, "gateway"),
        }
    }
}

/// `program` with an empty environment but `PATH`: a case's settings are all it sees.
fn bare_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// This test binary running only `child_test`, which becomes `program`.
fn self_exec(exe: &Path, child_test: &str, program: &str) -> Command {
    let mut command = bare_command(exe);
    command
        .args([child_test, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_PROGRAM, program);
    command
}

/// The gateway binary's command line, read here from the environment only.
#[derive(Parser)]
struct GatewayCli {
    #[command(flatten)]
    gateway: gateway::GatewayConfig,
    #[command(flatten)]
    telemetry: shared::config::TelemetryArgs,
}

/// The body of the test binary's ignored child test: `ingest run` or the gateway when the
/// runner started this process as a child, nothing otherwise (`cargo test -- --ignored`
/// passes it).
#[allow(clippy::print_stderr)]
pub async fn child_main() {
    match std::env::var(CHILD_PROGRAM).as_deref() {
        Ok("gateway") => {
            if let Err(err) = gateway_main().await {
                eprintln!("gateway failed: {err:#}");
                std::process::exit(1);
            }
        }
        Ok("ingest") => {
            let cli = ingest::cli::Cli::parse_from(["ingest", "run"]);
            shared::telemetry::init(cli.log_format());
            match ingest::cli::run(cli).await {
                Ok(code) if code == ExitCode::SUCCESS => {}
                Ok(_) => std::process::exit(1),
                Err(err) => {
                    eprintln!("ingest failed: {err:#}");
                    std::process::exit(1);
                }
            }
        }
        Ok(other) => panic!("{CHILD_PROGRAM}={other}: not a program this test can be"),
        Err(_) => {}
    }
}

/// What the gateway binary's `main` runs, except raising the descriptor limit (the soft
/// limit of a test run is enough for the quick cases' connections).
async fn gateway_main() -> anyhow::Result<()> {
    let cli = GatewayCli::parse_from(["gateway"]);
    shared::telemetry::init(cli.telemetry.log_format);
    let shutdown = shared::shutdown::on_signal();
    let gateway = gateway::Gateway::bind(&cli.gateway, shutdown).await?;
    gateway.run().await?;
    Ok(())
}

/// What every ingest instance of a case shares.
#[derive(Debug, Clone)]
pub struct IngestSpec {
    pub bootstrap: String,
    pub group: String,
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
    /// `KAFKA_PROPERTIES` (empty: the shipped defaults).
    pub kafka_properties: String,
    pub log_dir: PathBuf,
}

/// A running `ingest run`; SIGKILLed when dropped.
pub struct Instance {
    proc: Proc,
    pub name: String,
    /// Its admin listener (`/metrics`, `/readyz`).
    pub admin: String,
    pub started: Instant,
}

impl Instance {
    /// Starts instance `name` (its log: `{log_dir}/{name}.log`) and waits until its admin
    /// listener answers.
    pub async fn start(launcher: &Launcher, spec: &IngestSpec, name: &str) -> anyhow::Result<Self> {
        let admin = format!("127.0.0.1:{}", procs::free_port()?);
        let log = procs::log_file(&spec.log_dir, name)?;
        let mut command = launcher.ingest_command();
        command
            .env("KAFKA_BOOTSTRAP_SERVERS", &spec.bootstrap)
            .env("KAFKA_GROUP_ID", &spec.group)
            .env("DATABASE_URL", &spec.database_url)
            .env("REDIS_URL", &spec.redis_url)
            .env("REDIS_CHANNEL_PREFIX", &spec.prefix)
            .env("ADMIN_ADDR", &admin)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !spec.kafka_properties.is_empty() {
            command.env("KAFKA_PROPERTIES", &spec.kafka_properties);
        }
        let started = Instant::now();
        let mut proc = Proc::spawn(format!("ingest {name}"), command)?;
        procs::wait_listening(&mut proc, &admin)
            .await
            .with_context(|| format!("see {}", log_path(&spec.log_dir, name).display()))?;
        Ok(Instance {
            proc,
            name: name.to_owned(),
            admin,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL: nothing of it runs after this returns (no drain, no commit, no leave).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM, then waits for the exit (at most `timeout`).
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.proc.terminate()?;
        self.proc.wait_exit(timeout).await
    }

    /// Waits until `/readyz` answers 200 (the instance has joined its group), at most
    /// `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = procs::http_get(&self.admin, "/readyz", Duration::from_secs(1)).await;
            if matches!(answer, Some((200, _))) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "ingest {} was not ready within {timeout:?}: {answer:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit status, when it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exit_status()
    }
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// What every gateway instance of a case shares.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The notification store, for `last-id` recovery and the REST inbox (`None`: neither).
    pub database_url: Option<String>,
    pub redis_url: String,
    /// `REDIS_CHANNEL_PREFIX`, the one ingest publishes under.
    pub prefix: String,
    /// `JWT_KEYS` (`kid=secret` pairs; empty: WebSocket tickets only).
    pub jwt_keys: String,
    /// `WS_TICKET_PREFIX`, so that a case's tickets are its own.
    pub ticket_prefix: String,
    /// Any other setting, as environment variables (`WS_MAX_CONNECTIONS`, say).
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
}

/// A running gateway; SIGKILLed when dropped.
pub struct GatewayInstance {
    proc: Proc,
    pub name: String,
    /// Its public listener (SockJS under `/ws`, raw WebSocket, REST).
    pub addr: String,
    /// Its admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: String,
    pub started: Instant,
}

impl GatewayInstance {
    /// Starts gateway `name` (its log: `{log_dir}/{name}.log`) on free loopback ports and
    /// waits until both its listeners accept connections.
    pub async fn start(
        launcher: &Launcher,
        spec: &GatewaySpec,
        name: &str,
    ) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", procs::free_port()?);
        let admin = format!("127.0.0.1:{}", procs::free_port()?);
        let log = procs::log_file(&spec.log_dir, name)?;
        let mut command = launcher.gateway_command();
        command
            .env("LISTEN_ADDR", &addr)
            .env("ADMIN_ADDR", &admin)
            .env("REDIS_URL", &spec.redis_url)
            .env("REDIS_CHANNEL_PREFIX", &spec.prefix)
            .env("JWT_KEYS", &spec.jwt_keys)
            .env("WS_TICKET_PREFIX", &spec.ticket_prefix)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = &spec.database_url {
            command.env("DATABASE_URL", url);
        }
        let started = Instant::now();
        let mut proc = Proc::spawn(format!("gateway {name}"), command)?;
        let see = || format!("see {}", log_path(&spec.log_dir, name).display());
        procs::wait_listening(&mut proc, &addr)
            .await
            .with_context(see)?;
        procs::wait_listening(&mut proc, &admin)
            .await
            .with_context(see)?;
        Ok(GatewayInstance {
            proc,
            name: name.to_owned(),
            addr,
            admin,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL: its connections are reset by the kernel, nothing of it runs after this.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM, then waits for the exit (at most `timeout`; the gateway gives open
    /// connections 10 s).
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.proc.terminate()?;
        self.proc.wait_exit(timeout).await
    }

    /// The exit status, when it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exit_status()
    }
}
