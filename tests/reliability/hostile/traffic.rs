//! The well-behaved side of the hostile case: users connected over raw WebSocket (one of
//! them the canary) receiving a steady, paced stream of personal notifications published
//! straight on their Redis channels. Every MESSAGE is checked for its owner (a user must
//! never see another user's notification) and timed from its PUBLISH to its arrival.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::wire::{self, Next, Stomp, Tokens};

/// The notification JSON of SPEC 2.5 for `user`, numbered `id` (negative: an attack's
/// marker, outside the paced stream), its message padded with `padding` characters.
pub fn notification(id: i64, user: &str, padding: usize) -> String {
    serde_json::json!({
        "id": id, "userId": user, "type": "BLOG_LIKE", "title": "좋아요",
        "message": format!("hostile case {id}{}", "·".repeat(padding)),
        "link": null, "status": "UNREAD", "referenceId": null, "referenceType": null,
        "createdAt": "2026-01-01T00:00:00", "readAt": null,
    })
    .to_string()
}

/// One delivery: when it was published and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub published: Instant,
    pub latency: Duration,
}

#[derive(Default)]
struct Shared {
    /// Published and not yet received: id → (user, when).
    in_flight: Mutex<HashMap<i64, (String, Instant)>>,
    samples: Mutex<Vec<Sample>>,
    /// MESSAGEs whose notification belongs to someone else than the receiver.
    foreign: Mutex<Vec<String>>,
    /// MESSAGEs of an id not in flight (a copy, or never published by the case).
    unexpected: AtomicUsize,
    /// Sessions that ended before the case stopped them.
    ended: AtomicUsize,
    canary_received: AtomicUsize,
}

/// The running well-behaved traffic.
pub struct Traffic {
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    publisher: Option<JoinHandle<anyhow::Result<usize>>>,
    stop: tokio_util::sync::CancellationToken,
    pub users: Vec<String>,
    pub canary: String,
}

impl Traffic {
    /// Connects `users` and the `canary` (all from 127.0.0.1, with tokens), each
    /// subscribed to its notifications, then publishes to them in turn at `rate` per
    /// second on `{prefix}{user}`.
    pub async fn start(
        gateway: SocketAddr,
        redis_url: &str,
        prefix: &str,
        tokens: &Tokens,
        users: Vec<String>,
        canary: String,
        rate: f64,
    ) -> anyhow::Result<Traffic> {
        let shared = Arc::new(Shared::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let mut readers = Vec::new();
        for user in users.iter().chain(std::iter::once(&canary)) {
            let stomp =
                Stomp::subscribed(wire::host(0, 1), gateway, &tokens.bearer_line(user)).await?;
            let is_canary = *user == canary;
            readers.push(tokio::spawn(read(
                stomp,
                user.clone(),
                is_canary,
                shared.clone(),
                stop.clone(),
            )));
        }
        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let everyone: Vec<String> = users.iter().chain([&canary]).cloned().collect();
        let (sink, prefix, until) = (shared.clone(), prefix.to_owned(), stop.clone());
        let publisher = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_id: i64 = 1;
            loop {
                tokio::select! {
                    _ = until.cancelled() => return Ok((next_id - 1) as usize),
                    _ = ticks.tick() => {}
                }
                let user = &everyone[next_id as usize % everyone.len()];
                let json = notification(next_id, user, 0);
                sink.in_flight
                    .lock()
                    .expect("traffic")
                    .insert(next_id, (user.clone(), Instant::now()));
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(format!("{prefix}{user}"))
                    .arg(json)
                    .query_async(&mut redis)
                    .await?;
                next_id += 1;
            }
        });
        Ok(Traffic {
            shared,
            readers,
            publisher: Some(publisher),
            stop,
            users,
            canary,
        })
    }

    /// The deliveries published within `from..to`.
    pub fn samples(&self, from: Instant, to: Instant) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .shared
            .samples
            .lock()
            .expect("traffic")
            .iter()
            .filter(|s| s.published >= from && s.published < to)
            .map(|s| s.latency)
            .collect();
        out.sort();
        out
    }

    /// Published within `from..to` and not received (yet).
    pub fn missing(&self, from: Instant, to: Instant) -> usize {
        self.shared
            .in_flight
            .lock()
            .expect("traffic")
            .values()
            .filter(|(_, at)| *at >= from && *at < to)
            .count()
    }

    /// Descriptions of every MESSAGE a user got with another user's notification.
    pub fn foreign(&self) -> Vec<String> {
        self.shared.foreign.lock().expect("traffic").clone()
    }

    pub fn unexpected(&self) -> usize {
        self.shared.unexpected.load(Ordering::SeqCst)
    }

    /// Well-behaved sessions the gateway ended.
    pub fn ended(&self) -> usize {
        self.shared.ended.load(Ordering::SeqCst)
    }

    pub fn canary_received(&self) -> usize {
        self.shared.canary_received.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> usize {
        self.shared.samples.lock().expect("traffic").len()
    }

    /// Stops publishing; after `settle` the readers stop. How many were published.
    pub async fn stop(&mut self, settle: Duration) -> anyhow::Result<usize> {
        let published = match self.publisher.take() {
            Some(task) => {
                self.stop.cancel();
                task.await??
            }
            None => 0,
        };
        tokio::time::sleep(settle).await;
        for reader in &self.readers {
            reader.abort();
        }
        Ok(published)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.cancel();
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Reads one user's session: every MESSAGE checked for its owner and timed.
async fn read(
    mut stomp: Stomp,
    user: String,
    is_canary: bool,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        // Read until aborted, after the stop too: late deliveries still count.
        let frame = match stomp.next(Duration::from_secs(3600)).await {
            Next::Frame(frame) => frame,
            Next::Timeout => continue,
            Next::Closed(_) => {
                if !stop.is_cancelled() {
                    shared.ended.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        };
        let arrived = Instant::now();
        if !frame.starts_with("MESSAGE\n") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(wire::body_of(&frame)).unwrap_or_default();
        let owner = json["userId"].as_str().unwrap_or("");
        if owner != user {
            shared.foreign.lock().expect("traffic").push(format!(
                "{user} got a MESSAGE of {owner:?}: {}",
                wire::body_of(&frame).chars().take(120).collect::<String>()
            ));
            continue;
        }
        if is_canary {
            shared.canary_received.fetch_add(1, Ordering::SeqCst);
        }
        let id = json["id"].as_i64().unwrap_or(0);
        if id < 0 {
            // An attack's own marker (negative ids), checked by that attack.
            continue;
        }
        let sent = shared.in_flight.lock().expect("traffic").remove(&id);
        match sent {
            Some((_, published)) => shared.samples.lock().expect("traffic").push(Sample {
                published,
                latency: arrived - published,
            }),
            None => {
                shared.unexpected.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The `q` quantile of sorted durations (zero when empty).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}
