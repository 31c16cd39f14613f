//! A Redis subscriber that records every message on a test's channel prefix.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

/// Messages received as (channel, payload), in arrival order.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(String, String)>>>);

impl Received {
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Subscribes to `prefix*` and records messages until the returned task is aborted.
pub async fn subscribe(redis_url: &str, prefix: &str) -> (Received, tokio::task::JoinHandle<()>) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.expect("redis pubsub");
    pubsub.psubscribe(format!("{prefix}*")).await.unwrap();
    let received = Received::default();
    let sink = received.clone();
    let task = tokio::spawn(async move {
        let mut stream = pubsub.on_message();
        while let Some(message) = stream.next().await {
            let channel = message.get_channel_name().to_owned();
            let payload: String = message.get_payload().unwrap_or_default();
            sink.0.lock().unwrap().push((channel, payload));
        }
    });
    (received, task)
}
