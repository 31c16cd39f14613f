//! MariaDB and Redis for the stack: a server already answering on the port is used and
//! left alone; otherwise devstack starts a private one on that port, as the current user,
//! with its data under the data directory, and stops it (and waits for it) at the end.
//!
//! Private servers run in their own process group, so the terminal's Ctrl-C reaches only
//! devstack, which stops them in order: after ingest and the gateway let go of them.
//! Each is stopped through its own protocol (`SHUTDOWN`; Redis `SHUTDOWN NOSAVE`), and
//! killed if it has not exited within [`STOP_TIMEOUT`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, MySqlConnection};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest wait for a private server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for a private database's files to be created.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for a private server to exit once asked to.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one connection attempt while probing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest Unix socket path the kernel takes, less a margin.
const MAX_SOCKET_PATH: usize = 100;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MariaDb,
    Redis,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::MariaDb => "MariaDB",
            Kind::Redis => "Redis",
        }
    }

    /// The program that runs a private server.
    fn program(self) -> &'static str {
        match self {
            Kind::MariaDb => "mariadbd",
            Kind::Redis => "redis-server",
        }
    }

    /// The Debian package that brings it.
    pub fn package(self) -> &'static str {
        match self {
            Kind::MariaDb => "mariadb-server",
            Kind::Redis => "redis-server",
        }
    }
}

/// A server the stack uses.
pub struct Service {
    pub kind: Kind,
    pub port: u16,
    /// Set when devstack started it: the process, and where its data and log are.
    owned: Option<(Child, PathBuf)>,
}

/// What a look at a port found.
pub enum Probe {
    /// A server of the kind answers: use it.
    Running,
    /// Nothing listens: a private server can start there.
    Free,
}

/// Looks at `port`: a working server of `kind`, nothing, or (an error) something else.
pub async fn probe(kind: Kind, port: u16) -> anyhow::Result<Probe> {
    let answered = match kind {
        Kind::MariaDb => tokio::time::timeout(PROBE_TIMEOUT, mysql_connect(port))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map(drop),
        Kind::Redis => tokio::time::timeout(PROBE_TIMEOUT, redis_ping(port))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r),
    };
    match answered {
        Ok(()) => Ok(Probe::Running),
        Err(err) => {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                let what = match kind {
                    Kind::MariaDb => {
                        "a MariaDB/MySQL server that lets root in from 127.0.0.1 without a password"
                    }
                    Kind::Redis => "a Redis server without a password",
                };
                bail!(
                    "127.0.0.1:{port} is in use, but not by {what} ({err:#}); pass another port \
                     (--{}-port) and devstack starts its own there",
                    match kind {
                        Kind::MariaDb => "mysql",
                        Kind::Redis => "redis",
                    }
                );
            }
            Ok(Probe::Free)
        }
    }
}

/// The programs a private server of `kind` needs that cannot be found.
pub fn missing_programs(kind: Kind) -> Vec<&'static str> {
    let mut needed = vec![kind.program()];
    if kind == Kind::MariaDb {
        needed.push("mariadb-install-db");
    }
    needed
        .into_iter()
        .filter(|program| find_program(program).is_none())
        .collect()
}

/// A program on `PATH` or in the system directories (`mariadbd` lives in /usr/sbin, which
/// an ordinary user's `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Service {
    /// A server found running (left alone at the end).
    pub fn found(kind: Kind, port: u16) -> Service {
        Service {
            kind,
            port,
            owned: None,
        }
    }

    /// Whether devstack started this server.
    pub fn is_private(&self) -> bool {
        self.owned.is_some()
    }

    /// Where a private server keeps its data.
    pub fn data_dir(&self) -> Option<&Path> {
        self.owned.as_ref().map(|(_, dir)| dir.as_path())
    }

    /// Starts a private server on `port` with its data in `data_dir/<kind>-<port>`; returns
    /// once it accepts connections (or fails, or `shutdown` fires, stopping it again).
    pub async fn start(
        kind: Kind,
        port: u16,
        data_dir: &Path,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Service> {
        let dir = data_dir.join(format!(
            "{}-{port}",
            match kind {
                Kind::MariaDb => "mariadb",
                Kind::Redis => "redis",
            }
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let child = match kind {
            Kind::MariaDb => spawn_mariadb(port, &dir, shutdown).await?,
            Kind::Redis => spawn_redis(port, &dir)?,
        };
        let mut service = Service {
            kind,
            port,
            owned: Some((child, dir)),
        };
        match service.wait_ready(shutdown).await {
            Ok(()) => Ok(service),
            Err(err) => {
                service.stop().await;
                Err(err)
            }
        }
    }

    async fn wait_ready(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = match self.kind {
                Kind::MariaDb => mysql_connect(self.port).await.is_ok(),
                Kind::Redis => redis_ping(self.port).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if let Some((child, dir)) = &mut self.owned
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the private {} exited at start ({status}); its log:\n{}",
                    self.kind.name(),
                    log_tail(&dir.join(log_name(self.kind)))
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the private {} did not accept connections within {START_TIMEOUT:?}",
                    self.kind.name()
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => bail!("stopped while {} was starting", self.kind.name()),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// The process id of a private server.
    pub fn pid(&self) -> Option<u32> {
        self.owned.as_ref().and_then(|(child, _)| child.id())
    }

    /// Stops a private server and waits for it; a found one is left running.
    pub async fn stop(&mut self) {
        let Some((mut child, _)) = self.owned.take() else {
            return;
        };
        let asked = match self.kind {
            Kind::MariaDb => match mysql_connect(self.port).await {
                // The server closes the connection as it goes down: the answer does not matter.
                Ok(mut conn) => {
                    let _ = conn.execute("SHUTDOWN").await;
                    true
                }
                Err(_) => false,
            },
            Kind::Redis => redis_shutdown(self.port).await,
        };
        let exited = asked
            && tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_ok();
        if !exited {
            tracing::warn!(
                server = self.kind.name(),
                "did not stop when asked; killing it"
            );
            let _ = child.kill().await;
        }
        tracing::info!(server = self.kind.name(), port = self.port, "stopped");
    }
}

fn log_name(kind: Kind) -> &'static str {
    match kind {
        Kind::MariaDb => "error.log",
        Kind::Redis => "redis.log",
    }
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn program(kind_program: &str, package: &str) -> anyhow::Result<PathBuf> {
    find_program(kind_program).with_context(|| {
        format!(
            "{kind_program} is not installed: {}",
            install_command(&[package])
        )
    })
}

/// The exact command that installs Debian packages, as this user would type it.
pub fn install_command(packages: &[&str]) -> String {
    let sudo = if running_as_root() { "" } else { "sudo " };
    format!("{sudo}apt-get install -y {}", packages.join(" "))
}

async fn spawn_mariadb(
    port: u16,
    dir: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<Child> {
    let mariadbd = program("mariadbd", Kind::MariaDb.package())?;
    let data = dir.join("data");
    let root = running_as_root();
    if !data.join("mysql").is_dir() {
        let install_db = program("mariadb-install-db", Kind::MariaDb.package())?;
        let _ = std::fs::remove_dir_all(&data);
        tracing::info!(dir = %data.display(), "creating a private MariaDB data directory");
        let log = std::fs::File::create(dir.join("install.log"))?;
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        if root {
            install.arg("--user=root");
        }
        let mut child = install.spawn()?;
        let status = tokio::select! {
            _ = shutdown.cancelled() => bail!("stopped while MariaDB's data directory was being created"),
            status = tokio::time::timeout(INSTALL_TIMEOUT, child.wait()) => status,
        };
        match status {
            Ok(Ok(status)) if status.success() => {}
            _ => {
                let _ = child.kill().await;
                let _ = std::fs::remove_dir_all(&data);
                bail!(
                    "mariadb-install-db failed; its log:\n{}",
                    log_tail(&dir.join("install.log"))
                );
            }
        }
    }
    let mut socket = dir.join("mariadbd.sock");
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        socket = std::env::temp_dir().join(format!("devstack-mariadb-{port}.sock"));
    }
    let mut command = Command::new(mariadbd);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .args([
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--innodb-buffer-pool-size=64M",
            "--skip-name-resolve",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if root {
        command.arg("--user=root");
    }
    Ok(command.spawn()?)
}

fn spawn_redis(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let redis_server = program("redis-server", Kind::Redis.package())?;
    Ok(Command::new(redis_server)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?)
}

/// The server URL (no database) of the MariaDB on `port`.
pub fn mysql_server_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}")
}

/// The URL of the Redis on `port`.
pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

async fn mysql_connect(port: u16) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnection::connect(&mysql_server_url(port)).await
}

async fn redis_connection(port: u16) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis_url(port))?
        .get_multiplexed_async_connection()
        .await?)
}

async fn redis_ping(port: u16) -> anyhow::Result<()> {
    let mut conn = redis_connection(port).await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

/// Asks the Redis on `port` to exit without saving; false when it cannot be reached.
async fn redis_shutdown(port: u16) -> bool {
    let Ok(Ok(mut conn)) = tokio::time::timeout(PROBE_TIMEOUT, redis_connection(port)).await else {
        return false;
    };
    // Redis answers by closing the connection.
    let _ = tokio::time::timeout(
        PROBE_TIMEOUT,
        redis::cmd("SHUTDOWN")
            .arg("NOSAVE")
            .query_async::<()>(&mut conn),
    )
    .await;
    true
}
