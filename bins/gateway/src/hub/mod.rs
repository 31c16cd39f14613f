//! The relay from Redis to the sessions of this instance.
//!
//! Per-user mode (default): the instance subscribes to `notification:{userId}` while the
//! user has a session here, so a message reaches only the instances that need it. Pattern
//! mode: one `PSUBSCRIBE notification:*`, as the seed does. Broadcast channels (time deals)
//! are subscribed while some session here listens to them, in either mode.
//!
//! [`book`] keeps the state (sessions and the channels they listen to; channels wanted and
//! confirmed) and decides what to ask Redis; [`relay`] is the one task that talks to Redis;
//! [`fanout`] hands broadcast messages to their (possibly tens of thousands of) sessions
//! off the relay task, so a broadcast never holds up personal notifications. Sessions never
//! wait on Redis longer than a first join's `SUBSCRIBE_WAIT`: joining and leaving only
//! change the book, so they return even while Redis is away, and the relay brings Redis in
//! line when it can.
//!
//! Backpressure: each session has one bounded queue (`session_queue` messages) for all its
//! channels. A message that finds it full drops the session from the hub (its queue closes
//! and the session ends as a slow consumer, counted; channels left without sessions are
//! released); memory never grows with a stalled client. Broadcasts wait in a bounded queue
//! of their own (`FANOUT_QUEUE`; one that finds it full is dropped and counted) and are
//! handed out paced, so few broadcast deliveries are runnable at once. The relay reconnects to Redis with capped backoff and
//! resubscribes; sessions stay up meanwhile.

mod book;
mod fanout;
mod relay;
mod sharded;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};
use shared::channel::Channels;
use shared::redis_link::RedisTarget;
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

/// What kind of channel a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user's own channel: notifications, and state events.
    User,
    /// A broadcast channel (time deals).
    Broadcast,
    /// No message: the user channel's Redis subscription was lost and is back, so
    /// messages published meanwhile may be missing (Pub/Sub is at-most-once). The session
    /// recovers them from the store.
    Gap,
}

/// One message on its way to a session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The JSON as published, shared by every session it goes to.
    pub json: Arc<str>,
    /// When the relay received it from Redis (for the delivery latency metric).
    pub received: Instant,
    pub source: Source,
    /// A broadcast's place in the fan-out's window, given back once written.
    place: Option<fanout::Place>,
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
    /// Broadcast messages handed to sessions.
    pub broadcast_deliveries: IntCounter,
    /// Time spent handing broadcast messages to their sessions.
    pub fanout_seconds: Histogram,
    /// Broadcasts dropped because the fan-out queue was full.
    pub broadcasts_dropped: IntCounter,
    /// Sessions told to recover a gap in their channel's subscription.
    pub gaps: IntCounter,
}

/// Sessions, the channels they listen to, and the Redis relay feeding them.
#[derive(Clone)]
pub struct Hub {
    book: Arc<Mutex<Book>>,
    /// Wakes the relay: the book has changes for Redis.
    wake: Arc<Notify>,
    fanout: tokio::sync::mpsc::Sender<fanout::Job>,
    next_session: Arc<AtomicU64>,
    session_queue: usize,
    metrics: HubMetrics,
    /// Connected to Redis with every wanted channel confirmed.
    ready: Arc<AtomicBool>,
}

impl Hub {
    /// Starts the relay and fan-out tasks; they run until `shutdown`.
    pub fn start(
        redis: &RedisTarget,
        channels: &Channels,
        mode: SubscribeMode,
        session_queue: usize,
        metrics: HubMetrics,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<Hub> {
        let covered = (mode == SubscribeMode::Pattern).then(|| channels.user_prefix().to_owned());
        let (fanout, jobs) = tokio::sync::mpsc::channel(fanout::FANOUT_QUEUE);
        let hub = Hub {
            book: Arc::new(Mutex::new(Book::new(covered))),
            wake: Arc::default(),
            fanout,
            next_session: Arc::new(AtomicU64::new(1)),
            session_queue,
            metrics,
            ready: Arc::default(),
        };
        match redis {
            RedisTarget::Node(url) => {
                let client = redis::Client::open(url.as_str())?;
                let pattern = (mode == SubscribeMode::Pattern).then(|| channels.pattern());
                tokio::spawn(relay::run(
                    hub.clone(),
                    client,
                    redis.to_string(),
                    pattern,
                    shutdown.clone(),
                ));
            }
            RedisTarget::Cluster(_) => {
                if mode == SubscribeMode::Pattern {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "--redis-subscribe pattern has no sharded form on Redis Cluster",
                    )));
                }
                tokio::spawn(sharded::run(hub.clone(), redis.clone(), shutdown.clone()));
            }
        }
        tokio::spawn(fanout::run(hub.clone(), jobs, shutdown));
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

    /// Adds session `id` to `channel`. The session's first join creates its inbox (one
    /// for all its channels) and returns it; later joins return `None`. When the channel is
    /// not subscribed yet, it returns once Redis has confirmed it (or after
    /// `SUBSCRIBE_WAIT` while Redis is away), so what is published after SUBSCRIBE's
    /// RECEIPT reaches the session.
    pub async fn join(&self, channel: &str, source: Source, id: u64) -> Option<Inbox> {
        let mut inbox = None;
        let waiter = self.book().join(channel, source, id, || {
            let (sender, receiver) = queue::bounded(self.session_queue, queue::one);
            inbox = Some(receiver);
            sender
        });
        if let Some(waiter) = waiter {
            self.wake.notify_one();
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, waiter).await;
        }
        inbox
    }

    /// Removes session `id` from `channel` (idempotent); never waits. Once a session has
    /// left its last channel, its inbox ends.
    pub fn leave(&self, channel: &str, id: u64) {
        if self.book().leave(channel, id) {
            self.wake.notify_one();
        }
    }

    /// Drops slow session `id` from every channel: its inbox ends.
    fn drop_slow(&self, id: u64) {
        self.metrics.slow_consumers.inc();
        if self.book().drop_session(id) {
            self.wake.notify_one();
        }
    }

    /// Tells the sessions of `channels`, live again after a gap, to recover it.
    fn resync(&self, channels: Vec<String>) {
        if channels.is_empty() {
            return;
        }
        let received = Instant::now();
        let gap = Delivery {
            json: Arc::from(""),
            received,
            source: Source::Gap,
            place: None,
        };
        let mut slow = Vec::new();
        let book = self.book();
        for channel in &channels {
            let Some((_, listeners)) = book.listeners(channel) else {
                continue;
            };
            for (id, sender) in listeners {
                self.metrics.gaps.inc();
                if let Err(queue::SendError::Full(_)) = sender.try_send(gap.clone()) {
                    slow.push(id);
                }
            }
        }
        drop(book);
        for id in slow {
            self.drop_slow(id);
        }
    }

    /// Hands `json` from `channel` to its sessions: a user channel's at once, a broadcast
    /// channel's through the fan-out task. A full queue drops that session.
    fn deliver(&self, channel: &str, json: Arc<str>) {
        if let Some(job) = self.deliver_now(channel, json) {
            // Never waits: under a flood of broadcasts this instance cannot serve, one is
            // dropped rather than holding up the relay (and personal notifications).
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(job)) =
                self.fanout.try_send(job)
            {
                self.metrics.broadcasts_dropped.inc();
                let dropped = self.metrics.broadcasts_dropped.get();
                // Logged at the 1st, 2nd, 4th, 8th… drop: a flood does not flood the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        sessions = job.sessions.len(),
                        dropped,
                        "broadcast dropped: {} broadcasts are already waiting for fan-out",
                        fanout::FANOUT_QUEUE
                    );
                }
            }
        }
    }

    /// Hands a user channel's message to its sessions; a broadcast comes back as a job
    /// for the fan-out task.
    fn deliver_now(&self, channel: &str, json: Arc<str>) -> Option<fanout::Job> {
        let received = Instant::now();
        let book = self.book();
        let (source, listeners) = book.listeners(channel)?;
        let delivery = Delivery {
            json,
            received,
            source,
            place: None,
        };
        if source == Source::Broadcast {
            let sessions = listeners.map(|(id, s)| (id, s.clone())).collect();
            return Some(fanout::Job { delivery, sessions });
        }
        let mut slow = Vec::new();
        for (id, sender) in listeners {
            match sender.try_send(delivery.clone()) {
                Ok(()) => self.metrics.delivered.inc(),
                Err(queue::SendError::Full(_)) => slow.push(id),
                // The session is ending; it leaves on its own.
                Err(queue::SendError::Closed(_)) => {}
            }
        }
        drop(book);
        for id in slow {
            self.drop_slow(id);
        }
        None
    }
}
