//! The processes the benchmark runs and measures: the release `ingest` and `gateway`
//! binaries (built first), a tansu broker, and the CPU time of any process by pid. The
//! general pieces live in [`devstack::procs`]; this file starts ingest and the gateway the
//! way this benchmark configures them.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
pub use devstack::procs::{
    Binaries, Proc, binaries, cpu_seconds, load_average, migrate, pid_of, start_tansu,
};
use devstack::procs::{free_port, log_file, wait_listening};

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
    let mut proc = Proc::spawn("ingest", command).context("cannot start ingest")?;
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
    let mut command = Command::new(bin);
    command
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
        .stderr(log);
    let mut proc = Proc::spawn("gateway", command).context("cannot start the gateway")?;
    wait_listening(&mut proc, &addr).await?;
    wait_listening(&mut proc, &admin).await?;
    Ok((proc, addr, admin))
}
