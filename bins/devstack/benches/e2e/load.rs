//! The load and its clock: events produced at a paced rate, each stamped with the instant
//! it was handed to the producer, and the subscribers that time each notification's
//! arrival. An event's sequence number travels as its `orderNumber`, which the notification
//! carries as `referenceId`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use devstack::samples;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use shared::event::EventKind;

use crate::ws::{self, WebSocket};

/// Send instants and arrival latencies by sequence number.
pub struct Tracker {
    base: Instant,
    /// `"referenceId":"E2E-<run>-`: what marks this run's notifications.
    marker: String,
    /// Nanoseconds after `base` + 1 when the event was handed to the producer; 0: not sent.
    sent: Vec<AtomicU64>,
    /// Microseconds from send to the first arrival + 1; 0: not arrived.
    latency: Vec<AtomicU32>,
    /// Arrivals of a notification already seen.
    pub duplicates: AtomicU64,
    /// Subscriber sessions that ended.
    pub closed: AtomicU64,
}

impl Tracker {
    pub fn new(capacity: usize) -> Tracker {
        let run = format!("{:x}", rand::random::<u32>());
        Tracker {
            base: Instant::now(),
            marker: format!("\"referenceId\":\"E2E-{run}-"),
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            duplicates: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sent.len()
    }

    /// The order number of event `seq`.
    fn order_number(&self, seq: usize) -> String {
        let prefix = &self.marker["\"referenceId\":\"".len()..];
        format!("{prefix}{seq}")
    }

    fn stamp(&self, seq: usize) {
        let now = self.base.elapsed().as_nanos() as u64 + 1;
        self.sent[seq].store(now, Ordering::Release);
    }

    /// Times the notification in `body`, if it is one of this run's.
    fn arrived(&self, body: &[u8]) {
        let now = self.base.elapsed().as_nanos() as u64;
        let Some(text) = std::str::from_utf8(body).ok() else {
            return;
        };
        let Some(at) = text.find(&self.marker) else {
            return;
        };
        let digits = &text[at + self.marker.len()..];
        let end = digits.find('"').unwrap_or(digits.len());
        let Some(seq) = digits[..end].parse::<usize>().ok() else {
            return;
        };
        let Some(sent) = self.sent.get(seq).map(|s| s.load(Ordering::Acquire)) else {
            return;
        };
        if sent == 0 {
            return;
        }
        let micros = (now.saturating_sub(sent - 1) / 1000 + 1).min(u64::from(u32::MAX)) as u32;
        if self.latency[seq]
            .compare_exchange(0, micros, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many of `seqs` arrived.
    pub fn delivered(&self, seqs: Range<usize>) -> usize {
        self.latency[seqs]
            .iter()
            .filter(|l| l.load(Ordering::Acquire) != 0)
            .count()
    }

    /// The latencies (µs) of the arrived events of `seqs`, sorted.
    pub fn latencies(&self, seqs: Range<usize>) -> Vec<u32> {
        let mut all: Vec<u32> = self.latency[seqs]
            .iter()
            .map(|l| l.load(Ordering::Acquire))
            .filter(|l| *l != 0)
            .map(|l| l - 1)
            .collect();
        all.sort_unstable();
        all
    }
}

/// Reads a subscriber's messages until its session ends, timing each notification.
pub fn receive(mut ws: WebSocket, tracker: Arc<Tracker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(Some(message)) = ws.next_message().await {
            for body in ws::message_bodies(&message) {
                tracker.arrived(body);
            }
        }
        tracker.closed.fetch_add(1, Ordering::Relaxed);
    })
}

/// What one paced run of the producer did.
pub struct Produced {
    /// Events handed to the producer.
    pub sent: usize,
    /// Events the broker did not acknowledge.
    pub failed: usize,
    /// From the first send to the last.
    pub elapsed: Duration,
}

/// Produces the events `seqs` (an `ORDER_CREATED` each, to the users in turn) at `rate`
/// per second, from a thread of its own so the subscribers' runtime cannot hold sends
/// back; waits for every acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    tracker: &Arc<Tracker>,
    users: &[String],
    seqs: Range<usize>,
    rate: f64,
) -> anyhow::Result<Produced> {
    let producer = producer.clone();
    let tracker = tracker.clone();
    let users = users.to_vec();
    let paced = std::thread::spawn(move || {
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(seqs.len());
        let mut next = seqs.start;
        while next < seqs.end {
            let due = seqs.start + (started.elapsed().as_secs_f64() * rate) as usize + 1;
            while next < due.min(seqs.end) {
                deliveries.push(send(&producer, &tracker, &users, next)?);
                next += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok::<_, anyhow::Error>((deliveries, started.elapsed()))
    });
    let (deliveries, elapsed) = tokio::task::spawn_blocking(move || paced.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    let sent = deliveries.len();
    let mut failed = 0;
    for delivery in deliveries {
        if !matches!(delivery.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    Ok(Produced {
        sent,
        failed,
        elapsed,
    })
}

/// Hands event `seq` to the producer, waiting while its queue is full.
fn send(
    producer: &FutureProducer,
    tracker: &Tracker,
    users: &[String],
    seq: usize,
) -> anyhow::Result<DeliveryFuture> {
    let user = &users[seq % users.len()];
    let (key, mut value) = samples::sample(EventKind::OrderCreated, user);
    value["orderNumber"] = tracker.order_number(seq).into();
    let payload = serde_json::to_vec(&value)?;
    let topic = EventKind::OrderCreated.default_topic();
    let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
    loop {
        tracker.stamp(seq);
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((err, _)) => return Err(err.into()),
        }
    }
}
