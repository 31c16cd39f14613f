//! The publishing side: one notification JSON per user (about 350 bytes, the shape of
//! SPEC 2.5) and the publisher tasks, each batching random users' messages through
//! `shared::redis_link::RedisConn::publish_all` as ingest does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::channel::Channels;
use shared::notification::{Notification, NotificationType, Status};
use shared::redis_link::RedisConn;
use shared::time::Zone;
use tokio_util::sync::CancellationToken;

/// A publisher over its window waits this long before looking again.
const WINDOW_PAUSE: Duration = Duration::from_millis(1);

/// The channels and the payload published to each (the user's own notification).
pub struct Load {
    pub channels: Vec<String>,
    payloads: Vec<String>,
}

impl Load {
    pub fn new(users: usize) -> Load {
        let channels = Channels::default();
        let created_at = chrono::Utc::now();
        let (channels, payloads) = (0..users)
            .map(|n| {
                let user = format!("user-{n:06}");
                let order = format!("ORD-20260206-{:06}", n * 7 % 1_000_000);
                let notification = Notification {
                    id: 1_000_000 + n as i64,
                    user_id: user.clone(),
                    kind: NotificationType::DELIVERY_STARTED,
                    title: "배송이 시작되었습니다".to_owned(),
                    message: format!("상품 3건이 출발했습니다. 운송장 번호 {:012}", n * 7919),
                    link: Some(format!("/shopping/orders/{order}")),
                    status: Status::Unread,
                    reference_id: Some(order),
                    reference_type: Some("order".to_owned()),
                    created_at,
                    read_at: None,
                };
                (channels.for_user(&user), notification.to_json(&Zone::utc()))
            })
            .unzip();
        Load { channels, payloads }
    }

    pub fn mean_payload_bytes(&self) -> usize {
        self.payloads.iter().map(String::len).sum::<usize>() / self.payloads.len().max(1)
    }
}

/// Counters the publishers share with the measuring code.
#[derive(Clone, Default)]
pub struct Counters {
    /// Messages of batches Redis acknowledged.
    pub published: Arc<AtomicU64>,
    /// Messages of batches Redis refused.
    pub failed: Arc<AtomicU64>,
}

/// One publishing task with its own connection.
pub struct Publisher {
    pub connection: RedisConn,
    pub load: Arc<Load>,
    pub batch: usize,
    /// Most messages published and not yet received before it pauses.
    pub window: u64,
    pub counters: Counters,
    /// The subscribers' counts, per shard.
    pub received: Vec<Arc<AtomicU64>>,
}

impl Publisher {
    /// Publishes batches to random users until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let users = self.load.channels.len();
        let mut picked = Vec::with_capacity(self.batch);
        while !stop.is_cancelled() {
            let received: u64 = self
                .received
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .sum();
            let published = self.counters.published.load(Ordering::Relaxed);
            if published.saturating_sub(received) > self.window {
                tokio::time::sleep(WINDOW_PAUSE).await;
                continue;
            }
            picked.clear();
            picked.extend((0..self.batch).map(|_| rand::random_range(0..users)));
            let messages = picked.iter().map(|&user| {
                (
                    self.load.channels[user].as_str(),
                    self.load.payloads[user].as_str(),
                )
            });
            let counter = match self.connection.publish_all(messages).await {
                Ok(()) => &self.counters.published,
                Err(_) => &self.counters.failed,
            };
            counter.fetch_add(self.batch as u64, Ordering::Relaxed);
        }
    }
}
