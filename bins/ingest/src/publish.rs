//! Redis publishing (SPEC 2.3): `PUBLISH notification:{userId} <json>`, and time deals on
//! the broadcast channel `notification:broadcast:timedeals`, pipelined per batch. On a
//! Redis Cluster (`REDIS_CLUSTER_NODES`) the same channels take `SPUBLISH` (sharded Pub/Sub),
//! one pipeline per slot.
//!
//! The connection reconnects by itself; a failed pipeline is reported as an outage and the
//! caller retries the whole batch (subscribers dedup by `id`).

use shared::channel::Channels;
use shared::redis_link::{RedisConn, RedisTarget};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The user's own channel.
    User(String),
    /// A broadcast topic's channel (`timedeals`).
    Broadcast(&'static str),
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: Destination,
    pub json: String,
}

/// Publishes notification JSON on the users' channels.
#[derive(Clone)]
pub struct Publisher {
    connection: RedisConn,
    channels: Channels,
}

impl Publisher {
    /// Creates the publisher for `address` (a Redis URL, or a cluster's
    /// `redis+cluster://host:port,...`); the connection is made on first use, so a Redis
    /// outage at start only delays publishing.
    pub fn new(address: &str, channels: Channels) -> redis::RedisResult<Publisher> {
        let target = RedisTarget::parse(address).map_err(|err| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "REDIS_CLUSTER_NODES",
                err,
            ))
        })?;
        Ok(Publisher {
            connection: target.connect_lazy()?,
            channels,
        })
    }

    /// Publishes every message, in order per channel.
    pub async fn publish(&self, messages: &[Outgoing]) -> redis::RedisResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let channels: Vec<String> = messages
            .iter()
            .map(|message| match &message.to {
                Destination::User(user) => self.channels.for_user(user),
                Destination::Broadcast(topic) => self.channels.broadcast(topic),
            })
            .collect();
        self.connection
            .publish_all(
                channels
                    .iter()
                    .zip(messages)
                    .map(|(channel, message)| (channel.as_str(), message.json.as_str())),
            )
            .await
    }
}
