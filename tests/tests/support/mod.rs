//! Test environment: a fresh database per test on the real MariaDB/MySQL, dropped at the end.

#![allow(dead_code)]

pub mod ingest_process;
pub mod kafka;
pub mod loopback;
pub mod notify;
pub mod proxy;
pub mod redis_sub;
pub mod stomp;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlPool;
use sqlx::{Connection, Executor, MySqlConnection};

/// Server URL without a database; `TEST_MYSQL_URL` overrides the local default.
pub fn mysql_server_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// The test Redis; `TEST_REDIS_URL` overrides the local default.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Stores a one-time WebSocket ticket for `user` (30 s, as the REST endpoint does).
pub async fn issue_ticket(prefix: &str, user: &str) -> String {
    let ticket = format!("{:032x}", rand::random::<u128>());
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}{ticket}"))
        .arg(user)
        .arg("EX")
        .arg(30)
        .query_async(&mut redis)
        .await
        .unwrap();
    ticket
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Text columns are utf8mb4_bin, which the driver reports as binary: decode unchecked.
pub fn text<T>(row: &sqlx::mysql::MySqlRow, column: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    use sqlx::Row;
    row.try_get_unchecked(column).unwrap()
}

/// A unique name for this test's resources (database, topics, Redis prefix).
pub fn unique_name(kind: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "nt_{kind}_{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A database created for one test, migrated, and dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: MySqlPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = unique_name("db");
        let server = mysql_server_url();
        let mut admin = MySqlConnection::connect(&server)
            .await
            .expect("MariaDB/MySQL must be running (see README: Testing)");
        admin
            .execute(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4").as_str())
            .await
            .expect("create test database");
        let url = format!("{server}/{name}");
        let pool = ingest::store::connect(&url, 16)
            .await
            .expect("connect test db");
        ingest::store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrate test db");
        TestDb { name, url, pool }
    }

    pub async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = mysql_server_url();
        // Drop runs outside async context; a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(drop_database(&server, &name));
        })
        .join();
    }
}

/// Drops a test database. The test's pool may still hold connections (and with them metadata
/// locks), so those sessions are killed first; a lock wait timeout bounds the rest.
async fn drop_database(server: &str, name: &str) {
    let Ok(mut admin) = MySqlConnection::connect(server).await else {
        return;
    };
    let _ = admin.execute("SET SESSION lock_wait_timeout = 30").await;
    let sessions: Vec<u64> = sqlx::query_scalar(
        "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
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
