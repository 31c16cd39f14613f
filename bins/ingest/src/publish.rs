//! Redis publishing (SPEC 2.3): `PUBLISH notification:{userId} <json>`, and time deals on
//! the broadcast channel `notification:broadcast:timedeals`, pipelined per batch.
//!
//! The connection manager reconnects by itself; a failed pipeline is reported as an outage
//! and the caller retries the whole pipeline (subscribers dedup by `id`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use shared::channel::Channels;

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
    connection: ConnectionManager,
    channels: Channels,
}

impl Publisher {
    /// Creates the publisher; the connection is made on first use, so a Redis outage at
    /// start only delays publishing.
    pub fn new(url: &str, channels: Channels) -> redis::RedisResult<Publisher> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Publisher {
            connection,
            channels,
        })
    }

    /// Publishes every message in one pipeline, in order.
    pub async fn publish(&self, messages: &[Outgoing]) -> redis::RedisResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for message in messages {
            let channel = match &message.to {
                Destination::User(user) => self.channels.for_user(user),
                Destination::Broadcast(topic) => self.channels.broadcast(topic),
            };
            pipe.cmd("PUBLISH").arg(channel).arg(&message.json).ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection).await
    }
}
