//! The services a case runs against: a fresh database on the real MariaDB/MySQL (dropped at
//! the end), a fresh tansu broker (optionally behind a proxy the case can cut), Redis with a
//! unique channel prefix, and the URLs that reach them through a proxy.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use devstack::procs::{self, Proc};
use sqlx::mysql::MySqlPool;
use sqlx::{Connection, Executor, MySqlConnection, Row};

use super::proxy::Proxy;
use super::stream::Identity;

/// Where the services are: `TEST_MYSQL_URL`, `TEST_REDIS_URL` and `TANSU_BIN` as the tests
/// read them, with the same defaults.
#[derive(Debug, Clone)]
pub struct Services {
    /// The server URL, without a database.
    pub mysql_url: String,
    pub redis_url: String,
    pub tansu: String,
}

impl Services {
    pub fn from_env() -> Services {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Services {
            mysql_url: var("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            redis_url: var("TEST_REDIS_URL", "redis://127.0.0.1:6379/"),
            tansu: var("TANSU_BIN", "tansu"),
        }
    }
}

/// A name no other run uses: `rel_{case}_{pid}_{random}`.
pub fn unique_name(case: &str) -> String {
    format!(
        "rel_{case}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The `host:port` of a `scheme://[user@]host:port[/...]` URL.
pub fn host_port(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{url}: expected an IP address and a port"))
}

/// `url` with its `host:port` replaced by `addr` (to reach the service through a proxy).
pub fn via(url: &str, addr: SocketAddr) -> anyhow::Result<String> {
    let original = host_port(url)?.to_string();
    let (scheme, rest) = url.split_once("://").context("a URL with a scheme")?;
    let (user, host) = rest.rsplit_once('@').map_or(("", rest), |(u, h)| (u, h));
    let host = host.replacen(&original, &addr.to_string(), 1);
    let at = if user.is_empty() { "" } else { "@" };
    Ok(format!("{scheme}://{user}{at}{host}"))
}

/// A migrated database of its own, dropped when the value is dropped.
pub struct Database {
    pub name: String,
    /// The database's URL (direct, not through a proxy).
    pub url: String,
    pub pool: MySqlPool,
    /// Left in place when dropped (to look into a failure).
    pub keep: bool,
    server: String,
}

/// A stored notification as the verdict compares it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub id: i64,
    pub identity: Identity,
}

impl Database {
    /// Creates `name` on the server and applies the migrations.
    pub async fn create(server: &str, name: &str) -> anyhow::Result<Database> {
        let mut admin = MySqlConnection::connect(server)
            .await
            .with_context(|| format!("MariaDB/MySQL must be running at {server}"))?;
        admin
            .execute(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4").as_str())
            .await?;
        let url = format!("{server}/{name}");
        let pool = ingest::store::connect(&url, 4).await?;
        ingest::store::MIGRATOR.run(&pool).await?;
        Ok(Database {
            name: name.to_owned(),
            url,
            pool,
            keep: false,
            server: server.to_owned(),
        })
    }

    /// "; database … kept" when it is kept, for a report's notes.
    pub fn kept_note(&self) -> String {
        if self.keep {
            format!("; database {} kept", self.name)
        } else {
            String::new()
        }
    }

    pub async fn count(&self) -> anyhow::Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(n)?)
    }

    /// Every row's id and dedup identity.
    pub async fn rows(&self) -> anyhow::Result<Vec<StoredRow>> {
        let rows = sqlx::query(
            "SELECT id, user_id, type, reference_type, reference_id FROM notifications",
        )
        .fetch_all(&self.pool)
        .await?;
        // Text columns are utf8mb4_bin, which the driver reports as binary.
        let text = |row: &sqlx::mysql::MySqlRow, column: &str| {
            row.try_get_unchecked::<Option<String>, _>(column)
        };
        rows.iter()
            .map(|row| {
                Ok(StoredRow {
                    id: row.try_get("id")?,
                    identity: Identity::Row {
                        user: text(row, "user_id")?.unwrap_or_default(),
                        kind: text(row, "type")?.unwrap_or_default(),
                        reference_type: text(row, "reference_type")?,
                        reference_id: text(row, "reference_id")?,
                    },
                })
            })
            .collect()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside async code: a runtime of its own on its own thread drops it.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(drop_database(&server, &name));
        })
        .join();
    }
}

/// Drops a database: its sessions (the case's pool, killed ingest instances' leftovers)
/// are killed first so that no metadata lock holds the DROP up.
async fn drop_database(server: &str, name: &str) {
    let Ok(mut admin) = MySqlConnection::connect(server).await else {
        return;
    };
    let _ = admin.execute("SET SESSION lock_wait_timeout = 30").await;
    let sessions: Vec<u64> = sqlx::query_scalar(
        "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist \
         WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .unwrap_or_default();
    for id in sessions {
        let _ = admin.execute(format!("KILL {id}").as_str()).await;
    }
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await;
}

/// A Kafka broker with every input and dead-letter topic (3 partitions each), stopped on
/// drop: tansu as a process of its own (optionally behind a proxy), or librdkafka's mock
/// cluster on a thread of this process.
pub struct Broker {
    _backing: Backing,
    /// What clients bootstrap from (the proxy when there is one).
    pub bootstrap: String,
    /// The proxy every client reaches the broker through, when asked for.
    pub proxy: Option<Proxy>,
    /// What the reports call it.
    pub description: &'static str,
}

enum Backing {
    Tansu(Proc),
    Mock(MockThread),
}

impl Broker {
    /// Starts tansu (memory storage); with `behind_proxy` it names a proxy as its address,
    /// so every client (bootstrap and after) goes through it and a cut reaches them all.
    pub async fn tansu(tansu: &str, log_dir: &Path, behind_proxy: bool) -> anyhow::Result<Broker> {
        let port = procs::free_port()?;
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let proxy = if behind_proxy {
            Some(Proxy::start(target).await)
        } else {
            None
        };
        let advertised = proxy.as_ref().map_or(target, |p| p.addr).to_string();
        let proc = procs::start_tansu_advertising(tansu, port, &advertised, log_dir).await?;
        devstack::kafka::create_topics(&advertised).await?;
        Ok(Broker {
            _backing: Backing::Tansu(proc),
            bootstrap: advertised,
            proxy,
            description: "a fresh tansu 0.6 broker (memory storage, a process of its own)",
        })
    }

    /// Starts librdkafka's mock cluster (one broker; the Kafka protocol on loopback TCP,
    /// group coordination with session timeouts as Apache Kafka does it).
    pub async fn mock() -> anyhow::Result<Broker> {
        let (thread, bootstrap) = tokio::task::spawn_blocking(MockThread::start).await??;
        Ok(Broker {
            _backing: Backing::Mock(thread),
            bootstrap,
            proxy: None,
            description: "librdkafka's mock cluster in the runner's process (on loopback TCP)",
        })
    }
}

/// The mock cluster is not `Send`: a thread of its own creates it, keeps it until told
/// to stop, and destroys it.
struct MockThread {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockThread {
    fn start() -> anyhow::Result<(MockThread, String)> {
        let (started, bootstrap) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match devstack::kafka::Embedded::start() {
            Ok(cluster) => {
                let _ = started.send(Ok(cluster.direct.clone()));
                let _ = stopped.recv();
                drop(cluster);
            }
            Err(err) => {
                let _ = started.send(Err(err));
            }
        });
        let bootstrap = bootstrap
            .recv()
            .map_err(|_| anyhow::anyhow!("the mock cluster's thread ended"))??;
        Ok((
            MockThread {
                stop: Some(stop),
                thread: Some(thread),
            },
            bootstrap,
        ))
    }
}

impl Drop for MockThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
