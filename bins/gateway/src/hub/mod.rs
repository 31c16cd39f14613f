//! The relay from Redis to the sessions of this instance.
//!
//! Per-user mode (default): the instance subscribes to `notification:{userId}` while the
//! user has a session here, so a message reaches only the instances that need it. Pattern
//! mode: one `PSUBSCRIBE notification:*`, as the seed does.
//!
//! [`book`] keeps the state (sessions by user; channels wanted and confirmed) and decides
//! what to ask Redis; [`relay`] is the one task that talks to Redis. Sessions never wait on
//! Redis longer than a first join's `SUBSCRIBE_WAIT`: joining and leaving only change the
//! book, so they return even while Redis is away, and the relay brings Redis in line when
//! it can.
//!
//! Backpressure: each session has a bounded queue (`session_queue` messages). A message
//! that finds it full drops the session from the hub (its queue closes and the session
//! ends as a slow consumer, counted; its user's channel is released if it was the last);
//! memory never grows with a stalled client. The relay reconnects to Redis with capped
//! backoff and resubscribes; sessions stay up meanwhile.

mod book;
mod relay;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use shared::channel::Channels;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::queue;
use book::Book;

/// How the instance hears Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubscribeMode {
    /// SUBSCRIBE only the users connected here.
    PerUser,
    /// PSUBSCRIBE every user's channel.
    Pattern,
}

/// A session's end of the relay: notification JSON, in order.
pub type Inbox = queue::Receiver<Delivery>;

/// One notification on its way to a session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The notification JSON, shared by the user's sessions.
    pub json: Arc<str>,
    /// When the relay received it from Redis (for the delivery latency metric).
    pub received: Instant,
}

/// How long a first session waits for its user's Redis subscription before going on.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// Counters the hub keeps.
#[derive(Clone)]
pub struct HubMetrics {
    pub delivered: IntCounter,
    pub slow_consumers: IntCounter,
    pub redis_reconnects: IntCounter,
    /// Channels (or the pattern) the current Redis connection has confirmed.
    pub subscriptions: IntGauge,
}

/// Sessions by user, and the Redis relay feeding them.
#[derive(Clone)]
pub struct Hub {
    book: Arc<Mutex<Book>>,
    /// Wakes the relay: the book has changes for Redis.
    wake: Arc<Notify>,
    next_session: Arc<AtomicU64>,
    session_queue: usize,
    metrics: HubMetrics,
    /// Connected to Redis with every wanted channel confirmed.
    ready: Arc<AtomicBool>,
}

impl Hub {
    /// Starts the relay task; it runs until `shutdown`.
    pub fn start(
        redis_url: &str,
        channels: Channels,
        mode: SubscribeMode,
        session_queue: usize,
        metrics: HubMetrics,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<Hub> {
        let client = redis::Client::open(redis_url)?;
        let hub = Hub {
            book: Arc::new(Mutex::new(Book::new(mode == SubscribeMode::Pattern))),
            wake: Arc::default(),
            next_session: Arc::new(AtomicU64::new(1)),
            session_queue,
            metrics,
            ready: Arc::default(),
        };
        tokio::spawn(relay::run(hub.clone(), client, channels, shutdown));
        Ok(hub)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the relay is connected to Redis with every wanted channel subscribed.
    pub fn is_connected(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// A new session id.
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers session `id` of `user`; returns its inbox. When the user's channel is not
    /// subscribed yet, it returns once Redis has confirmed it (or after `SUBSCRIBE_WAIT`
    /// while Redis is away), so what is published after SUBSCRIBE's RECEIPT reaches the
    /// session.
    pub async fn join(&self, user: &str, id: u64) -> Inbox {
        let (sender, inbox) = queue::bounded(self.session_queue, queue::one);
        let waiter = self.book().join(user, id, sender);
        if let Some(waiter) = waiter {
            self.wake.notify_one();
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, waiter).await;
        }
        inbox
    }

    /// Removes session `id` of `user` (idempotent); never waits.
    pub fn leave(&self, user: &str, id: u64) {
        if self.book().leave(user, id) {
            self.wake.notify_one();
        }
    }

    /// Hands `json` to every session of `user`; a full queue drops that session.
    fn deliver(&self, user: &str, json: Arc<str>) {
        let received = Instant::now();
        let mut book = self.book();
        let Some(entry) = book.user_mut(user) else {
            return;
        };
        let delivery = Delivery { json, received };
        let mut dropped = Vec::new();
        for (id, sender) in &entry.sessions {
            match sender.try_send(delivery.clone()) {
                Ok(()) => self.metrics.delivered.inc(),
                Err(queue::SendError::Full(_)) => {
                    self.metrics.slow_consumers.inc();
                    dropped.push(*id);
                }
                Err(queue::SendError::Closed(_)) => dropped.push(*id),
            }
        }
        let mut wake = false;
        for id in dropped {
            // Dropping the sender closes the session's inbox: it ends as a slow consumer.
            wake |= book.leave(user, id);
        }
        drop(book);
        if wake {
            self.wake.notify_one();
        }
    }
}
