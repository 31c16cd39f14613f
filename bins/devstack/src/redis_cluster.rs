//! A real Redis Cluster on this machine, for tests and benchmarks: six `redis-server`
//! processes on free loopback ports (three masters with one replica each, made with
//! `redis-cli --cluster create`) in a temporary directory, killed by PID when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::aio::MultiplexedConnection;

use crate::launch;

/// Failure detection time: a dead master's replica is promoted about a second or two later.
const NODE_TIMEOUT_MS: u64 = 1000;
/// Nodes, masters, and slots of a cluster.
const NODES: usize = 6;
const SLOTS: u32 = 16_384;
/// Longest wait for a started node to listen, and for `redis-cli --cluster create`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for every slot to be served, and for the replicas to sync.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two polls of the cluster's state.
const POLL: Duration = Duration::from_millis(100);

/// A running cluster; its processes end when it is dropped.
pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<(u16, Child)>,
    dir: PathBuf,
}

/// A master, the slot ranges it serves, and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub port: u16,
    /// Inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    pub replicas: Vec<u16>,
}

impl Master {
    /// Whether this master serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }
}

impl RedisCluster {
    /// Starts the six nodes and creates the cluster; returns once every slot is served and
    /// every replica has synced with its master.
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let server = program("redis-server")?;
        let cli = program("redis-cli")?;
        let dir = std::env::temp_dir().join(unique_dir_name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dir_arg = dir
            .to_str()
            .context("a temporary directory path that is UTF-8")?;
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < NODES {
            let port = free_port_pair()?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        // From here on, drop stops whatever has started.
        let mut cluster = RedisCluster {
            ports: ports.clone(),
            children: Vec::new(),
            dir: dir.clone(),
        };
        for &port in &ports {
            let child = Command::new(&server)
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                // Replicas sync at once (a replica that never synced does not take over).
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", dir_arg])
                .args(["--logfile", &format!("redis-{port}.log")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", server.display()))?;
            cluster.children.push((port, child));
        }
        for &port in &ports {
            wait_until(
                &format!("node :{port} to listen"),
                START_TIMEOUT,
                || async {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                },
            )
            .await
            .with_context(|| {
                let log = launch::log_tail(&dir.join(format!("redis-{port}.log")));
                format!("redis-server on :{port} did not start; its log ends:\n{log}")
            })?;
        }
        let created = tokio::process::Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let created = tokio::time::timeout(CREATE_TIMEOUT, created)
            .await
            .with_context(|| format!("redis-cli --cluster create took over {CREATE_TIMEOUT:?}"))?
            .with_context(|| format!("cannot run {}", cli.display()))?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr).trim()
            );
        }
        cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
        for &port in &ports {
            let cluster = &cluster;
            wait_until("replicas in sync", HEALTHY_TIMEOUT, || async move {
                let Ok(mut node) = cluster.node(port).await else {
                    return false;
                };
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut node)
                    .await;
                info.is_ok_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            })
            .await?;
        }
        Ok(cluster)
    }

    /// The ports of all six nodes, as started (killed ones included).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The PID of the live node on `port`.
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.children
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, child)| child.id())
    }

    /// The address both binaries take (`redis+cluster://...`, as `REDIS_CLUSTER_NODES`).
    pub fn address(&self) -> String {
        format!("redis+cluster://{}/", self.nodes())
    }

    /// The `REDIS_CLUSTER_NODES` value: `127.0.0.1:port,...`.
    pub fn nodes(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        nodes.join(",")
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.children.iter().map(|(port, _)| *port)
    }

    fn any_alive(&self) -> anyhow::Result<u16> {
        self.alive()
            .next()
            .context("every node of the cluster is down")
    }

    /// A plain (non-cluster) connection to one node.
    pub async fn node(&self, port: u16) -> anyhow::Result<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot connect to cluster node :{port}"))
    }

    /// The live masters, their slots and replicas, as a live node sees them.
    pub async fn masters(&self) -> anyhow::Result<Vec<Master>> {
        let port = self.any_alive()?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.node(port).await?)
            .await
            .with_context(|| format!("CLUSTER NODES on :{port}"))?;
        Ok(parse_masters(&nodes))
    }

    /// The slot of `key`, as the cluster computes it.
    pub async fn slot(&self, key: &str) -> anyhow::Result<u16> {
        let port = self.any_alive()?;
        Ok(redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.node(port).await?)
            .await?)
    }

    /// The port of the master that serves `key`'s slot.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let slot = self.slot(key).await?;
        self.masters()
            .await?
            .into_iter()
            .find(|m| m.serves(slot))
            .map(|m| m.port)
            .with_context(|| format!("no live master serves slot {slot}"))
    }

    /// SIGKILLs the node on `port` (and reaps it).
    pub fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let index = self
            .children
            .iter()
            .position(|(p, _)| *p == port)
            .with_context(|| format!("no running cluster node on :{port}"))?;
        let (_, mut child) = self.children.remove(index);
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Waits until every live node reports `cluster_state:ok` and live masters serve all
    /// 16 384 slots.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_until("the Redis Cluster to be healthy", timeout, || {
            self.healthy()
        })
        .await
    }

    async fn healthy(&self) -> bool {
        for port in self.alive() {
            let Ok(mut node) = self.node(port).await else {
                return false;
            };
            let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut node)
                .await;
            if !info.is_ok_and(|i| i.contains("cluster_state:ok")) {
                return false;
            }
        }
        let Ok(masters) = self.masters().await else {
            return false;
        };
        let alive: Vec<u16> = self.alive().collect();
        let served: u32 = masters
            .iter()
            .filter(|m| alive.contains(&m.port))
            .flat_map(|m| &m.slots)
            .map(|(a, b)| u32::from(b - a) + 1)
            .sum();
        served == SLOTS
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The masters of a `CLUSTER NODES` answer that are not failing, with their slot ranges
/// (slots being migrated, `[...]`, left out) and the ports of their replicas.
pub fn parse_masters(nodes: &str) -> Vec<Master> {
    let port_of = |address: &str| -> Option<u16> {
        address.split('@').next()?.rsplit(':').next()?.parse().ok()
    };
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| fields.len() >= 8)
        .collect();
    let mut masters: Vec<(&str, Master)> = Vec::new();
    for fields in &lines {
        if !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        let Some(port) = port_of(fields[1]) else {
            continue;
        };
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|slot| (slot, slot)),
            })
            .collect();
        let master = Master {
            port,
            slots,
            replicas: Vec::new(),
        };
        masters.push((fields[0], master));
    }
    for fields in &lines {
        if !fields[2].contains("slave") || fields[2].contains("fail") {
            continue;
        }
        let master = masters.iter_mut().find(|(id, _)| *id == fields[3]);
        if let (Some((_, master)), Some(port)) = (master, port_of(fields[1])) {
            master.replicas.push(port);
        }
    }
    masters.into_iter().map(|(_, master)| master).collect()
}

fn program(name: &str) -> anyhow::Result<PathBuf> {
    launch::find_program(name).with_context(|| {
        format!(
            "{name} is not installed: {}",
            launch::install_command(&["redis-server", "redis-tools"])
        )
    })
}

/// A directory name no other cluster of this or another process uses.
fn unique_dir_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "redis_cluster_{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A free port whose cluster bus port (port + 10 000) is free too.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let port = 20_000 + rand::random::<u16>() % 20_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port pair (port, port + 10000) for a Redis Cluster node")
}

/// Polls `condition` until it holds; an error naming `what` after `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_answer_reads_as_live_masters_with_slots_and_replicas() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 0 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:30003@40003 master - 0 0 3 connected 10923-16383 42
d4 127.0.0.1:30004@40004 slave b2 0 0 2 connected
e5 127.0.0.1:30005@40005 master,fail - 0 0 4 disconnected
f6 127.0.0.1:30006@40006 slave a1 0 0 1 connected
";
        let masters = parse_masters(nodes);
        assert_eq!(
            masters,
            vec![
                Master {
                    port: 30001,
                    slots: vec![(0, 5460)],
                    replicas: vec![30006],
                },
                Master {
                    port: 30002,
                    slots: vec![(5461, 10922)],
                    replicas: vec![30004],
                },
                Master {
                    port: 30003,
                    slots: vec![(10923, 16383), (42, 42)],
                    replicas: vec![],
                },
            ]
        );
        assert!(masters[1].serves(5461) && !masters[1].serves(10923));
    }
}
