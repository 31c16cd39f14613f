//! Resource use over time, for the soak: each watched process's resident memory and open
//! descriptors, their established TCP connections to Redis and to MySQL together (read
//! from `/proc`, so only the case's own processes count), and the servers' own totals (Redis `INFO
//! clients` connected_clients, MySQL `Threads_connected`, which other runs on the same
//! servers share); sampled when asked, and fitted with a least-squares slope per hour.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use sqlx::MySqlConnection;

/// A process to sample.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// One measured quantity over time: (seconds since the sampling began, value).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub unit: &'static str,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// The least-squares slope of the points at or after `from_secs`, per hour; `None`
    /// with fewer than three such points or no spread in time.
    pub fn slope_per_hour(&self, from_secs: f64) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= from_secs)
            .collect();
        slope(&points).map(|per_second| per_second * 3600.0)
    }

    /// The first and the last value.
    pub fn ends(&self) -> Option<(f64, f64)> {
        Some((self.points.first()?.1, self.points.last()?.1))
    }
}

/// The least-squares slope of `points` (value per unit of time); `None` with fewer than
/// three points or no spread in time.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_v = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if spread <= 0.0 {
        return None;
    }
    let covariance: f64 = points
        .iter()
        .map(|(t, v)| (t - mean_t) * (v - mean_v))
        .sum();
    Some(covariance / spread)
}

/// Samples the watched processes and the servers into named series.
pub struct Sampler {
    pub processes: Vec<Watched>,
    redis_port: u16,
    mysql_port: u16,
    redis: redis::aio::MultiplexedConnection,
    mysql: MySqlConnection,
    started: Instant,
    /// Series by name, e.g. `gateway-a RSS`.
    pub series: BTreeMap<String, Series>,
    /// Processes that were gone at a sample.
    pub gone: Vec<String>,
}

impl Sampler {
    /// Connects to the servers at `redis_url` and `mysql_url` (each connection of its
    /// own, which the totals include).
    pub async fn new(
        processes: Vec<Watched>,
        redis_url: &str,
        mysql_url: &str,
    ) -> anyhow::Result<Sampler> {
        use sqlx::Connection;
        let redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let mysql = MySqlConnection::connect(mysql_url).await?;
        Ok(Sampler {
            processes,
            redis_port: super::services::host_port(redis_url)?.port(),
            mysql_port: super::services::host_port(mysql_url)?.port(),
            redis,
            mysql,
            started: Instant::now(),
            series: BTreeMap::new(),
            gone: Vec::new(),
        })
    }

    /// Seconds since the sampler was made.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn push(&mut self, name: String, unit: &'static str, at: f64, value: f64) {
        let series = self.series.entry(name).or_insert_with(|| Series {
            unit,
            points: Vec::new(),
        });
        series.points.push((at, value));
    }

    /// Takes one sample of everything.
    pub async fn sample(&mut self) -> anyhow::Result<()> {
        let at = self.elapsed();
        let (mut redis_total, mut mysql_total) = (0, 0);
        for process in self.processes.clone() {
            let pid = process.pid;
            let name = &process.name;
            let (Some(rss), Some(fds)) = (
                devstack::procs::rss_bytes(pid),
                devstack::procs::open_fds(pid),
            ) else {
                self.gone.push(name.clone());
                continue;
            };
            let redis = tcp_connections(pid, self.redis_port);
            let mysql = tcp_connections(pid, self.mysql_port);
            redis_total += redis;
            mysql_total += mysql;
            self.push(format!("{name} RSS"), "MiB", at, mib(rss));
            self.push(format!("{name} open descriptors"), "fds", at, fds as f64);
        }
        self.push(
            "all watched processes: connections to Redis".to_owned(),
            "connections",
            at,
            redis_total as f64,
        );
        self.push(
            "all watched processes: connections to MySQL".to_owned(),
            "connections",
            at,
            mysql_total as f64,
        );
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut self.redis)
            .await?;
        let clients = info_field(&info, "connected_clients").unwrap_or(f64::NAN);
        self.push(
            "Redis connected_clients (whole server)".to_owned(),
            "clients",
            at,
            clients,
        );
        let threads: (String, String) = sqlx::query_as("SHOW STATUS LIKE 'Threads_connected'")
            .fetch_one(&mut self.mysql)
            .await?;
        self.push(
            "MySQL Threads_connected (whole server)".to_owned(),
            "threads",
            at,
            threads.1.parse().unwrap_or(f64::NAN),
        );
        Ok(())
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A numeric field of a Redis `INFO` answer.
pub fn info_field(info: &str, field: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The established TCP connections of process `pid` to remote port `port`: its socket
/// descriptors matched against the kernel's connection tables.
pub fn tcp_connections(pid: u32, port: u16) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: HashSet<String> = entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let wanted = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // remote address is field 2 (`hex-ip:hex-port`), state 3 (01:
                    // established), inode 9.
                    fields.len() > 9
                        && fields[2].rsplit_once(':').is_some_and(|(_, p)| p == wanted)
                        && fields[3] == "01"
                        && inodes.contains(fields[9])
                })
                .count()
        })
        .sum()
}
