//! The processes the benchmark runs and measures: the release `ingest` and `gateway`
//! binaries (built first), a tansu broker, and the CPU time of any process by pid.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Longest wait for a started process to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed and reaped on drop.
pub struct Proc {
    child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited at start: {status}", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `ingest` and `gateway` binaries, built by cargo next to this benchmark
/// (`cargo bench` builds the bench profile into `target/release`).
pub struct Binaries {
    pub ingest: PathBuf,
    pub gateway: PathBuf,
    /// `target/`: where results and private data go.
    pub target_dir: PathBuf,
}

/// Builds (when `build`) and finds the release binaries.
pub fn binaries(build: bool) -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe()?;
    // target/release/deps/e2e-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the target directory from the benchmark's path")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .context("no target directory")?
        .to_path_buf();
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "ingest",
                "-p",
                "gateway",
                "--bins",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .context("cannot run cargo build")?;
        anyhow::ensure!(status.success(), "cargo build of ingest and gateway failed");
    }
    let binaries = Binaries {
        ingest: profile_dir.join("ingest"),
        gateway: profile_dir.join("gateway"),
        target_dir,
    };
    for bin in [&binaries.ingest, &binaries.gateway] {
        anyhow::ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    Ok(binaries)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts connections (or the process exits).
pub async fn wait_listening(proc: &mut Proc, addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        proc.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not listen on {addr} within {START_TIMEOUT:?}",
            proc.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .with_context(|| format!("cannot create {name}.log in {}", dir.display()))
}

/// Starts a tansu broker with memory storage on a free loopback port; returns it and its
/// bootstrap address.
pub async fn start_tansu(bin: &str, log_dir: &Path) -> anyhow::Result<(Proc, String)> {
    let bootstrap = format!("127.0.0.1:{}", free_port()?);
    let url = format!("tcp://{bootstrap}");
    let log = log_file(log_dir, "tansu")?;
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {bin}: install it with `cargo install tansu --version 0.6.0 --locked --features dynostore`, or pass --tansu"
            )
        })?;
    let mut proc = Proc {
        child,
        name: "tansu",
    };
    wait_listening(&mut proc, &bootstrap).await?;
    Ok((proc, bootstrap))
}

/// What an ingest process is started with.
pub struct IngestEnv<'a> {
    pub bootstrap: &'a str,
    pub database_url: &'a str,
    pub redis_url: &'a str,
    pub prefix: &'a str,
    /// `KAFKA_PROPERTIES`; empty: the shipped defaults.
    pub kafka_properties: &'a str,
}

/// Starts `ingest run`; returns it and its admin address.
pub async fn start_ingest(
    bin: &Path,
    env: &IngestEnv<'_>,
    log_dir: &Path,
) -> anyhow::Result<(Proc, String)> {
    let admin = format!("127.0.0.1:{}", free_port()?);
    let log = log_file(log_dir, "ingest")?;
    let mut command = Command::new(bin);
    command
        .arg("run")
        .env("KAFKA_BOOTSTRAP_SERVERS", env.bootstrap)
        .env("KAFKA_GROUP_ID", "e2e-bench")
        .env("DATABASE_URL", env.database_url)
        .env("REDIS_URL", env.redis_url)
        .env("REDIS_CHANNEL_PREFIX", env.prefix)
        .env("ADMIN_ADDR", &admin)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("KAFKA_PROPERTIES")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if !env.kafka_properties.is_empty() {
        command.env("KAFKA_PROPERTIES", env.kafka_properties);
    }
    let mut proc = Proc {
        child: command.spawn().context("cannot start ingest")?,
        name: "ingest",
    };
    wait_listening(&mut proc, &admin).await?;
    Ok((proc, admin))
}

/// Starts the gateway (JWT auth with `jwt_keys`, no store); returns it, its public and
/// its admin address.
pub async fn start_gateway(
    bin: &Path,
    redis_url: &str,
    prefix: &str,
    jwt_keys: &str,
    log_dir: &Path,
) -> anyhow::Result<(Proc, String, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let log = log_file(log_dir, "gateway")?;
    let child = Command::new(bin)
        .env("LISTEN_ADDR", &addr)
        .env("ADMIN_ADDR", &admin)
        .env("REDIS_URL", redis_url)
        .env("REDIS_CHANNEL_PREFIX", prefix)
        .env("JWT_KEYS", jwt_keys)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the gateway")?;
    let mut proc = Proc {
        child,
        name: "gateway",
    };
    wait_listening(&mut proc, &addr).await?;
    wait_listening(&mut proc, &admin).await?;
    Ok((proc, addr, admin))
}

/// Runs `ingest migrate` on `database_url` (the database is created when missing).
pub fn migrate(bin: &Path, database_url: &str) -> anyhow::Result<()> {
    let output = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .context("cannot run ingest migrate")?;
    anyhow::ensure!(
        output.status.success(),
        "ingest migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// CPU seconds a process has used (user + system), 0 when it is gone.
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

/// The first process whose command name is `name`.
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == name).then_some(pid)
        })
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
