//! MariaDB and Redis for the stack: a server already answering on the port is used and
//! left alone; otherwise devstack starts a private one on that port, as the current user,
//! with its data under the data directory, and stops it (and waits for it) at the end.
//!
//! Private servers run in their own process group, so the terminal's Ctrl-C reaches only
//! devstack, which stops them in order: after ingest and the gateway let go of them.
//! Each is stopped through its own protocol (`SHUTDOWN`; Redis `SHUTDOWN NOSAVE`), and
//! killed if it has not exited within [`STOP_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, MySqlConnection};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::launch::{self, log_tail};

/// Longest wait for a private server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for a private server to exit once asked to.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one connection attempt while probing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub fn program(self) -> &'static str {
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
    /// Something listens that devstack cannot use (another program, or a server that wants
    /// a password): a private server starts on a free port instead.
    Unusable(String),
}

/// Looks at `port`: a working server of `kind`, nothing, or something else.
pub async fn probe(kind: Kind, port: u16) -> Probe {
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
        Ok(()) => Probe::Running,
        Err(_) if TcpStream::connect(("127.0.0.1", port)).await.is_err() => Probe::Free,
        Err(err) => {
            let wanted = match kind {
                Kind::MariaDb => "a MariaDB/MySQL server that lets root in without a password",
                Kind::Redis => "a Redis server without a password",
            };
            Probe::Unusable(format!(
                "127.0.0.1:{port} is in use, but not by {wanted} ({err:#})"
            ))
        }
    }
}

/// A port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

    /// Starts a private server on `port` with its data in `data_dir/<kind>`; returns
    /// once it accepts connections (or fails, or `shutdown` fires, stopping it again).
    pub async fn start(
        kind: Kind,
        port: u16,
        data_dir: &Path,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Service> {
        // One directory per kind, whatever the port: the data outlives a change of port.
        let dir = data_dir.join(match kind {
            Kind::MariaDb => "mariadb",
            Kind::Redis => "redis",
        });
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let child = match kind {
            Kind::MariaDb => launch::spawn_mariadb(port, &dir, shutdown).await?,
            Kind::Redis => launch::spawn_redis(port, &dir)?,
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
