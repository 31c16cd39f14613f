//! A real Redis Cluster for one test: six `redis-server` processes on loopback ports
//! (three masters, one replica each, made with `redis-cli --cluster create`), in a
//! temporary directory; killed by PID when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Failure detection time: a dead master's replica is promoted about a second or two later.
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<(u16, Child)>,
    dir: PathBuf,
}

/// A master and the slot ranges it serves.
#[derive(Debug, Clone)]
pub struct Master {
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
}

fn free_port_pair() -> u16 {
    // The cluster bus listens on port + 10000: both must be free.
    for _ in 0..1000 {
        let port = 20_000 + rand::random::<u16>() % 20_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

impl RedisCluster {
    /// Starts the six nodes and creates the cluster; returns once every slot is served.
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(super::unique_name("redis_cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let port = free_port_pair();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut children = Vec::new();
        for &port in &ports {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                // Replicas sync at once (a replica that never synced does not take over).
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (see README: Testing)");
            children.push((port, child));
        }
        let cluster = RedisCluster {
            ports: ports.clone(),
            children,
            dir,
        };
        for &port in &ports {
            super::wait_until(
                "a cluster node to listen",
                Duration::from_secs(10),
                || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
            )
            .await;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli must be installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_healthy(Duration::from_secs(30)).await;
        for &port in &ports {
            super::wait_until("replicas in sync", Duration::from_secs(30), || {
                let cluster = &cluster;
                async move {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut cluster.node(port).await)
                        .await
                        .unwrap();
                    info.contains("role:master") || info.contains("master_link_status:up")
                }
            })
            .await;
        }
        cluster
    }

    /// The address both binaries take (`redis+cluster://...`, as REDIS_CLUSTER_NODES).
    pub fn address(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", nodes.join(","))
    }

    /// The `REDIS_CLUSTER_NODES` value.
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

    /// A plain connection to one node.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The live masters and their slots, as a live node sees them.
    pub async fn masters(&self) -> Vec<Master> {
        let port = self.alive().next().expect("a live node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.node(port).await)
            .await
            .unwrap();
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (s.parse().unwrap(), s.parse().unwrap()),
                })
                .collect();
            masters.push(Master { port, slots });
        }
        masters
    }

    /// The slot of `key`, as the cluster computes it.
    pub async fn slot(&self, key: &str) -> u16 {
        let port = self.alive().next().expect("a live node");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.node(port).await)
            .await
            .unwrap()
    }

    /// The port of the master that serves `key`'s slot.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot(key).await;
        self.masters()
            .await
            .into_iter()
            .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|m| m.port)
            .expect("a master serves every slot")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let index = self
            .children
            .iter()
            .position(|(p, _)| *p == port)
            .expect("a running node");
        let (_, mut child) = self.children.remove(index);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until every live node reports `cluster_state:ok` and live masters serve all
    /// 16 384 slots.
    pub async fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ok = true;
            for port in self.alive() {
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                    ok = false;
                    break;
                };
                let info: Option<String> = match client.get_multiplexed_async_connection().await {
                    Ok(mut connection) => redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut connection)
                        .await
                        .ok(),
                    Err(_) => None,
                };
                if !info.is_some_and(|i| i.contains("cluster_state:ok")) {
                    ok = false;
                    break;
                }
            }
            if ok {
                let alive: Vec<u16> = self.alive().collect();
                let served: u32 = self
                    .masters()
                    .await
                    .iter()
                    .filter(|m| alive.contains(&m.port))
                    .flat_map(|m| &m.slots)
                    .map(|(a, b)| u32::from(b - a) + 1)
                    .sum();
                if served == 16_384 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not become healthy within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
