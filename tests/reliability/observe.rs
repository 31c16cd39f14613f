//! What a case watches while it runs, independently of the processes under test: every
//! message Redis carried on the case's prefix (a PSUBSCRIBE of its own, straight to Redis),
//! an admin listener's `/readyz` over time, the peak memory and descriptors of processes,
//! and the records in the dead-letter topics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use shared::channel::{Channels, TIMEDEALS};
use shared::event::EventKind;
use tokio::task::JoinHandle;

use super::stream::Identity;

/// Longest wait for one metadata or watermark request.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// One message heard on Redis.
#[derive(Debug, Clone)]
pub enum Heard {
    /// A notification on a user's channel: its row id and identity.
    Row { id: i64, identity: Identity },
    /// A time-deal broadcast, by its id.
    Deal(i64),
    /// Anything else (state events, unreadable payloads).
    Other,
}

impl Heard {
    fn parse(on_deals: bool, payload: &str) -> Heard {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(payload) else {
            return Heard::Other;
        };
        if on_deals {
            return json["timeDealId"]
                .as_i64()
                .map_or(Heard::Other, Heard::Deal);
        }
        let text = |key: &str| json[key].as_str().map(str::to_owned);
        match json["id"].as_i64() {
            Some(id) => Heard::Row {
                id,
                identity: Identity::Row {
                    user: text("userId").unwrap_or_default(),
                    kind: text("type").unwrap_or_default(),
                    reference_type: text("referenceType"),
                    reference_id: text("referenceId"),
                },
            },
            None => Heard::Other,
        }
    }
}

/// Every message published under a prefix, with the instant it arrived.
pub struct Recorder {
    log: Arc<Mutex<Vec<(Instant, Heard)>>>,
    closed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Subscribes to every channel under `prefix` (users' and broadcasts).
    pub async fn start(redis_url: &str, prefix: &str) -> anyhow::Result<Recorder> {
        let channels = Channels::new(prefix);
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(channels.pattern()).await?;
        let deals = channels.broadcast(TIMEDEALS);
        let log = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let (sink, done) = (log.clone(), closed.clone());
        let task = tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let at = Instant::now();
                let payload: String = message.get_payload().unwrap_or_default();
                let heard = Heard::parse(message.get_channel_name() == deals, &payload);
                sink.lock().expect("recorder").push((at, heard));
            }
            done.store(true, Ordering::SeqCst);
        });
        Ok(Recorder { log, closed, task })
    }

    /// Runs `f` over everything heard so far, in arrival order.
    pub fn with<R>(&self, f: impl FnOnce(&[(Instant, Heard)]) -> R) -> R {
        f(&self.log.lock().expect("recorder"))
    }

    pub fn len(&self) -> usize {
        self.log.lock().expect("recorder").len()
    }

    /// Whether the subscription ended (then messages may have been missed).
    pub fn connection_lost(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/readyz` of one admin listener, polled at a fixed interval.
pub struct Readiness {
    samples: Arc<Mutex<Vec<(Instant, bool)>>>,
    task: JoinHandle<()>,
}

impl Readiness {
    /// Polls `admin` every `every`; an answer other than 200, or none within a second,
    /// counts as not ready.
    pub fn start(admin: &str, every: Duration) -> Readiness {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (sink, admin) = (samples.clone(), admin.to_owned());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let answer =
                    devstack::procs::http_get(&admin, "/readyz", Duration::from_secs(1)).await;
                let ready = matches!(answer, Some((200, _)));
                sink.lock()
                    .expect("readiness")
                    .push((Instant::now(), ready));
            }
        });
        Readiness { samples, task }
    }

    /// The longest time not ready among the spells that began within `from..to`: from the
    /// first sample not ready to the next one ready (or the last sample).
    pub fn longest_down(&self, from: Instant, to: Instant) -> Duration {
        let samples = self.samples.lock().expect("readiness");
        let mut longest = Duration::ZERO;
        let mut down_since: Option<Instant> = None;
        for (at, ready) in samples.iter() {
            match (ready, down_since) {
                (false, None) => down_since = Some(*at),
                (true, Some(since)) => {
                    if since >= from && since < to {
                        longest = longest.max(*at - since);
                    }
                    down_since = None;
                }
                _ => {}
            }
        }
        if let (Some(since), Some((last, _))) = (down_since, samples.last()) {
            if since >= from && since < to {
                longest = longest.max(*last - since);
            }
        }
        longest
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The highest resident memory and descriptor count seen among the watched processes.
pub struct Peaks {
    state: Arc<Mutex<PeakState>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct PeakState {
    pids: Vec<u32>,
    rss: u64,
    fds: usize,
}

impl Peaks {
    /// Samples the watched processes every `every`.
    pub fn start(every: Duration) -> Peaks {
        let state = Arc::new(Mutex::new(PeakState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                {
                    let mut state = shared.lock().expect("peaks");
                    for pid in state.pids.clone() {
                        let rss = devstack::procs::rss_bytes(pid).unwrap_or(0);
                        let fds = devstack::procs::open_fds(pid).unwrap_or(0);
                        state.rss = state.rss.max(rss);
                        state.fds = state.fds.max(fds);
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Peaks { state, task }
    }

    pub fn watch(&self, pid: u32) {
        self.state.lock().expect("peaks").pids.push(pid);
    }

    pub fn unwatch(&self, pid: u32) {
        self.state.lock().expect("peaks").pids.retain(|p| *p != pid);
    }

    /// The peak resident memory, MiB.
    pub fn rss_mib(&self) -> f64 {
        let bytes = self.state.lock().expect("peaks").rss;
        (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
    }

    pub fn fds(&self) -> usize {
        self.state.lock().expect("peaks").fds
    }
}

impl Drop for Peaks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The records in every input topic's dead-letter topic (`{topic}.DLT`), from the
/// partitions' watermarks.
pub async fn dead_letters(bootstrap: &str) -> anyhow::Result<i64> {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "reliability-dlt-reader")
            .create()?;
        let mut total = 0;
        for kind in EventKind::ALL {
            let topic = format!("{}.DLT", kind.default_topic());
            let metadata = consumer.fetch_metadata(Some(&topic), KAFKA_TIMEOUT)?;
            for meta in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for partition in meta.partitions() {
                    let (low, high) =
                        consumer.fetch_watermarks(&topic, partition.id(), KAFKA_TIMEOUT)?;
                    total += high - low;
                }
            }
        }
        Ok(total)
    })
    .await?
}

/// The value of the record at `offset` of `topic`'s `partition`; `None` when the broker
/// does not return it within the timeout.
pub async fn record_at(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "reliability-record-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        consumer.assign(&list)?;
        let deadline = std::time::Instant::now() + KAFKA_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                if message.offset() == offset {
                    return Ok(Some(message.payload().unwrap_or_default().to_vec()));
                }
                if message.offset() > offset {
                    return Ok(None);
                }
            }
        }
        Ok(None)
    })
    .await?
}

/// Every record the broker holds in the input topics, as (topic, partition, offset): read
/// back from the beginning of each partition to its high watermark.
pub async fn held_records(
    bootstrap: &str,
) -> anyhow::Result<std::collections::HashSet<(String, i32, i64)>> {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "reliability-read-back")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        let mut remaining = 0;
        for kind in EventKind::ALL {
            let topic = kind.default_topic();
            let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
            for meta in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for partition in meta.partitions() {
                    let (low, high) =
                        consumer.fetch_watermarks(topic, partition.id(), KAFKA_TIMEOUT)?;
                    if high > low {
                        list.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
                        remaining += high - low;
                    }
                }
            }
        }
        let mut held = std::collections::HashSet::new();
        if remaining == 0 {
            return Ok(held);
        }
        consumer.assign(&list)?;
        // Generous: a full run reads about 100 000 records back.
        let deadline = std::time::Instant::now() + KAFKA_TIMEOUT * 6;
        while (held.len() as i64) < remaining && std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                held.insert((
                    message.topic().to_owned(),
                    message.partition(),
                    message.offset(),
                ));
            }
        }
        anyhow::ensure!(
            held.len() as i64 >= remaining,
            "read back {} of the broker's {remaining} records",
            held.len()
        );
        Ok(held)
    })
    .await?
}
