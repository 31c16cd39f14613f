//! Where Redis is, for both binaries: one node (`REDIS_URL`, or `REDIS_HOST`/`REDIS_PORT`)
//! or a Redis Cluster (`REDIS_CLUSTER_NODES=host:port,...`, seed nodes). On a cluster,
//! notifications travel over sharded Pub/Sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7): a message
//! goes only to the shard that owns its channel's slot, where a classic `PUBLISH` is
//! forwarded to every node of the cluster and so scales no better than one node.
//!
//! [`RedisConn`] is the command connection (tickets, publishing): the connection manager
//! on a node, the `redis` crate's cluster connection on a cluster (it follows `MOVED`, and
//! refreshes its slot map after a failover). Both connect lazily: a Redis that is down at
//! start only delays the first command.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use crate::config::redact_url;

/// The scheme of a cluster address in its one-string form (`redis+cluster://a:1,b:2/`).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One Redis node, or the seed nodes of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// A node's URL.
    Node(String),
    /// Seed node URLs of a cluster.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `REDIS_CLUSTER_NODES`' form: `host:port` or URLs, comma-separated.
    pub fn cluster(nodes: &str) -> Result<RedisTarget, String> {
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n.contains("://") {
                    n.to_owned()
                } else {
                    format!("redis://{n}/")
                }
            })
            .collect();
        if nodes.is_empty() {
            return Err("REDIS_CLUSTER_NODES names no node (expected host:port,...)".into());
        }
        Ok(RedisTarget::Cluster(nodes))
    }

    /// Parses the one-string form: a Redis URL, or `redis+cluster://host:port,...`.
    pub fn parse(address: &str) -> Result<RedisTarget, String> {
        match address.strip_prefix(CLUSTER_SCHEME) {
            Some(nodes) => RedisTarget::cluster(nodes.trim_end_matches('/')),
            None => Ok(RedisTarget::Node(address.to_owned())),
        }
    }

    /// The one-string form [`RedisTarget::parse`] reads.
    pub fn to_address(&self) -> String {
        match self {
            RedisTarget::Node(url) => url.clone(),
            RedisTarget::Cluster(nodes) => {
                let hosts: Vec<&str> = nodes
                    .iter()
                    .map(|n| n.split_once("://").map_or(n.as_str(), |(_, rest)| rest))
                    .map(|n| n.trim_end_matches('/'))
                    .collect();
                format!("{CLUSTER_SCHEME}{}/", hosts.join(","))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// The publish command: `PUBLISH` on a node, `SPUBLISH` on a cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A cluster client builder with our timeouts (`None` on a node).
    pub fn cluster_builder(&self) -> Option<ClusterClientBuilder> {
        let RedisTarget::Cluster(nodes) = self else {
            return None;
        };
        Some(
            ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(3),
        )
    }

    /// A lazily connecting command connection.
    pub fn connect_lazy(&self) -> RedisResult<RedisConn> {
        self.connect_lazy_with(RESPONSE_TIMEOUT)
    }

    /// The same, with the longest wait for one answer.
    pub fn connect_lazy_with(&self, response_timeout: Duration) -> RedisResult<RedisConn> {
        match self {
            RedisTarget::Node(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let client = redis::Client::open(url.as_str())?;
                Ok(RedisConn::Node(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster(_) => {
                let client = self
                    .cluster_builder()
                    .expect("a cluster")
                    .response_timeout(response_timeout)
                    .build()?;
                Ok(RedisConn::Cluster(Arc::new(LazyCluster {
                    client,
                    connection: OnceCell::new(),
                })))
            }
        }
    }
}

/// Passwords redacted.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Node(url) => f.write_str(&redact_url(url)),
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                write!(f, "cluster {}", nodes.join(","))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cluster connection made on first use (and retried on the next use after a failure).
pub struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// A command connection to a node or a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

impl RedisConn {
    /// The publish command this connection's Redis takes.
    pub fn publish_command(&self) -> &'static str {
        match self {
            RedisConn::Node(_) => "PUBLISH",
            RedisConn::Cluster(_) => "SPUBLISH",
        }
    }

    /// Publishes one message; the number of subscribers that got it (on a cluster: on its
    /// shard).
    pub async fn publish(&self, channel: &str, payload: &str) -> RedisResult<i64> {
        redis::cmd(self.publish_command())
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.clone())
            .await
    }

    /// Publishes every message, in order per channel: one pipeline on a node; on a
    /// cluster one pipeline per slot, all at once. (The cluster connection refuses a
    /// pipeline whose commands span slots, so the grouping is ours; a channel has one
    /// slot, so its messages stay in one pipeline, in order.)
    pub async fn publish_all<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> RedisResult<()> {
        let command = self.publish_command();
        let mut pipelines: Vec<(Option<Slot>, redis::Pipeline)> = Vec::new();
        for (channel, payload) in messages {
            let slot = matches!(self, RedisConn::Cluster(_)).then(|| Slot::for_key(channel));
            let index = match pipelines.iter().position(|(s, _)| *s == slot) {
                Some(index) => index,
                None => {
                    pipelines.push((slot, redis::pipe()));
                    pipelines.len() - 1
                }
            };
            pipelines[index]
                .1
                .cmd(command)
                .arg(channel)
                .arg(payload)
                .ignore();
        }
        try_join_all(pipelines.into_iter().map(|(_, pipe)| {
            let mut connection = self.clone();
            async move { pipe.query_async::<()>(&mut connection).await }
        }))
        .await?;
        Ok(())
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(connection) => connection.req_packed_command(cmd),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(connection) => connection.get_db(),
            RedisConn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_read_as_urls_and_round_trip_through_one_string() {
        let target = RedisTarget::cluster("10.0.0.1:7000, redis-1:7001,").unwrap();
        assert_eq!(
            target,
            RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000/".into(),
                "redis://redis-1:7001/".into()
            ])
        );
        assert_eq!(
            target.to_address(),
            "redis+cluster://10.0.0.1:7000,redis-1:7001/"
        );
        assert_eq!(RedisTarget::parse(&target.to_address()).unwrap(), target);
        assert_eq!(target.publish_command(), "SPUBLISH");
        assert!(RedisTarget::cluster(" , ").is_err());

        let node = RedisTarget::parse("redis://:pw@cache:6379/").unwrap();
        assert_eq!(node, RedisTarget::Node("redis://:pw@cache:6379/".into()));
        assert_eq!(node.publish_command(), "PUBLISH");
        assert!(!node.to_string().contains("pw"), "{node}");
    }
}
