//! The relay from Redis to the sessions of this instance.
//!
//! Per-user mode (default): the instance subscribes to `notification:{userId}` when the
//! user's first session here subscribes, and unsubscribes after the last one leaves, so a
//! message reaches only the instances that need it. Pattern mode: one `PSUBSCRIBE
//! notification:*`, as the seed does.
//!
//! Backpressure: each session has a bounded queue (`session_queue` messages). A message
//! that finds it full drops the session from the hub — its queue closes and the session
//! ends as a slow consumer (counted); memory never grows with a stalled client. The relay
//! reconnects to Redis with capped backoff and resubscribes; sessions stay up meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::IntCounter;
use shared::channel::Channels;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::queue;
use tokio_util::sync::CancellationToken;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Subscribe/unsubscribe requests waiting for the relay task.
const COMMAND_QUEUE: usize = 4096;

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

enum RelayCommand {
    /// Subscribe to the user's channel; the sender hears once Redis has confirmed it.
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// How long a first session waits for its user's Redis subscription before going on.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Members {
    by_user: HashMap<String, HashMap<u64, queue::Sender<Delivery>>>,
}

/// Counters the hub keeps.
#[derive(Clone)]
pub struct HubMetrics {
    pub delivered: IntCounter,
    pub slow_consumers: IntCounter,
    pub redis_reconnects: IntCounter,
}

/// Sessions by user, and the Redis relay feeding them.
#[derive(Clone)]
pub struct Hub {
    members: Arc<Mutex<Members>>,
    commands: mpsc::Sender<RelayCommand>,
    next_session: Arc<AtomicU64>,
    session_queue: usize,
    mode: SubscribeMode,
    metrics: HubMetrics,
    connected: Arc<std::sync::atomic::AtomicBool>,
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
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let hub = Hub {
            members: Arc::default(),
            commands,
            next_session: Arc::new(AtomicU64::new(1)),
            session_queue,
            mode,
            metrics,
            connected: Arc::default(),
        };
        tokio::spawn(relay(hub.clone(), client, channels, receiver, shutdown));
        Ok(hub)
    }

    /// Whether the relay is connected to Redis and subscribed.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A new session id.
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers session `id` of `user`; returns its inbox. The user's first session here
    /// returns once Redis has confirmed the subscription (or after `SUBSCRIBE_WAIT` while
    /// Redis is away), so what is published after SUBSCRIBE's RECEIPT reaches the session.
    pub async fn join(&self, user: &str, id: u64) -> Inbox {
        let (sender, inbox) = queue::bounded(self.session_queue, queue::one);
        let first = {
            let mut members = self.members.lock().expect("hub lock");
            let sessions = members.by_user.entry(user.to_owned()).or_default();
            sessions.insert(id, sender);
            sessions.len() == 1
        };
        if first && self.mode == SubscribeMode::PerUser {
            let (confirmed, confirmation) = oneshot::channel();
            let _ = self
                .commands
                .send(RelayCommand::Subscribe(user.to_owned(), confirmed))
                .await;
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, confirmation).await;
        }
        inbox
    }

    /// Removes session `id` of `user` (idempotent).
    pub async fn leave(&self, user: &str, id: u64) {
        let last = {
            let mut members = self.members.lock().expect("hub lock");
            match members.by_user.get_mut(user) {
                Some(sessions) => {
                    let removed = sessions.remove(&id).is_some();
                    if sessions.is_empty() {
                        members.by_user.remove(user);
                        removed
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last && self.mode == SubscribeMode::PerUser {
            let _ = self
                .commands
                .send(RelayCommand::Unsubscribe(user.to_owned()))
                .await;
        }
    }

    /// Users with a session here.
    pub fn users(&self) -> Vec<String> {
        let members = self.members.lock().expect("hub lock");
        members.by_user.keys().cloned().collect()
    }

    /// Hands `json` to every session of `user`; a full queue drops that session.
    fn deliver(&self, user: &str, json: Arc<str>) {
        let received = Instant::now();
        let mut members = self.members.lock().expect("hub lock");
        let Some(sessions) = members.by_user.get_mut(user) else {
            return;
        };
        let delivery = Delivery { json, received };
        sessions.retain(|_, sender| match sender.try_send(delivery.clone()) {
            Ok(()) => {
                self.metrics.delivered.inc();
                true
            }
            Err(queue::SendError::Full(_)) => {
                self.metrics.slow_consumers.inc();
                false
            }
            Err(queue::SendError::Closed(_)) => false,
        });
        // An emptied user stays subscribed until its sessions call `leave`.
    }
}

async fn relay(
    hub: Hub,
    client: redis::Client,
    channels: Channels,
    mut commands: mpsc::Receiver<RelayCommand>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let mut connected_once = false;
    while !shutdown.is_cancelled() {
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            pubsub = client.get_async_pubsub() => pubsub,
        };
        let pubsub = match pubsub {
            Ok(pubsub) => pubsub,
            Err(err) => {
                tracing::warn!(%err, "Redis unavailable; relay retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let subscribed = match hub.mode {
            SubscribeMode::Pattern => sink.psubscribe(channels.pattern()).await,
            SubscribeMode::PerUser => {
                let mut result = Ok(());
                for user in hub.users() {
                    result = sink.subscribe(channels.for_user(&user)).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
        };
        if let Err(err) = subscribed {
            tracing::warn!(%err, "Redis subscribe failed; relay reconnecting");
            continue;
        }
        if connected_once {
            hub.metrics.redis_reconnects.inc();
            tracing::info!("relay reconnected to Redis and resubscribed");
        }
        connected_once = true;
        hub.connected.store(true, Ordering::Relaxed);
        backoff = BACKOFF_START;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                command = commands.recv() => {
                    let result = match command {
                        None => return,
                        Some(RelayCommand::Subscribe(user, confirmed)) => {
                            let result = sink.subscribe(channels.for_user(&user)).await;
                            if result.is_ok() {
                                let _ = confirmed.send(());
                            }
                            result
                        }
                        Some(RelayCommand::Unsubscribe(user)) => sink.unsubscribe(channels.for_user(&user)).await,
                    };
                    if let Err(err) = result {
                        tracing::warn!(%err, "Redis subscription change failed; relay reconnecting");
                        hub.connected.store(false, Ordering::Relaxed);
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("Redis connection lost; relay reconnecting");
                        hub.connected.store(false, Ordering::Relaxed);
                        break;
                    };
                    let channel = message.get_channel_name();
                    let Some(user) = channels.user_of(channel) else { continue };
                    let Ok(json) = std::str::from_utf8(message.get_payload_bytes()) else { continue };
                    hub.deliver(user, Arc::from(json));
                }
            }
        }
    }
}
