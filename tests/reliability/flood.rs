//! The delivery cases' stream: personal notifications for a fixed set of users (the ones
//! with sessions), each a fresh event on one of the 12 per-user topics (signups, one per
//! user, and time deals, broadcasts, left out), produced to Kafka at a steady rate and
//! made as it goes, so a half-hour stream holds no plan in memory. Each acknowledged event
//! becomes one stored notification (fresh references: no two share a dedup identity);
//! what a user must receive is read back from the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use rand::rngs::StdRng;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use shared::event::EventKind;
use sqlx::Row;

use super::services::Database;

/// How often the producer looks whether more events are due.
const TICK: Duration = Duration::from_millis(5);

/// The event kinds that make one notification for their user.
pub fn personal_kinds() -> Vec<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|k| !matches!(k, EventKind::UserSignedUp | EventKind::TimeDealStarted))
        .collect()
}

/// What producing did.
#[derive(Debug)]
pub struct Flooded {
    /// Events handed to the producer.
    pub sent: usize,
    /// Events the broker acknowledged.
    pub acked: usize,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub started: Instant,
    pub last_sent: Instant,
}

impl Flooded {
    /// The rate achieved, events/s.
    pub fn rate(&self) -> f64 {
        let secs = (self.last_sent - self.started).as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }
}

/// Produces `count` events at `rate` events/s, each for a user drawn from `users` and a
/// kind drawn from [`personal_kinds`]; then waits for every acknowledgement.
pub async fn produce(
    producer: FutureProducer,
    users: Arc<Vec<String>>,
    count: usize,
    rate: f64,
    mut rng: StdRng,
) -> Flooded {
    let kinds = personal_kinds();
    let started = Instant::now();
    let mut out = Flooded {
        sent: 0,
        acked: 0,
        failures: 0,
        first_failure: None,
        started,
        last_sent: started,
    };
    let mut pending = FuturesUnordered::new();
    // The next event, drawn but not yet accepted by the producer's queue.
    let mut next: Option<(&'static str, String, Vec<u8>)> = None;
    while out.sent + out.failures < count {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(count);
        while out.sent + out.failures < due {
            let (topic, key, value) = next.take().unwrap_or_else(|| {
                let kind = kinds[rng.random_range(0..kinds.len())];
                let user = &users[rng.random_range(0..users.len())];
                let (key, value) = devstack::samples::sample(kind, user);
                (kind.default_topic(), key, value.to_string().into_bytes())
            });
            let record = FutureRecord::to(topic).key(&key).payload(&value);
            match producer.send_result(record).map_err(|(err, _)| err) {
                Ok(delivery) => {
                    pending.push(delivery);
                    out.sent += 1;
                }
                // The local queue is full: the same event at the next tick.
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    next = Some((topic, key, value));
                    break;
                }
                Err(err) => {
                    out.failures += 1;
                    out.first_failure.get_or_insert_with(|| err.to_string());
                }
            }
        }
        out.last_sent = Instant::now();
        tokio::select! {
            Some(result) = pending.next(), if !pending.is_empty() => acked(&mut out, result),
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    while let Some(result) = pending.next().await {
        acked(&mut out, result);
    }
    out
}

fn acked<E>(
    out: &mut Flooded,
    result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) {
    match result {
        Ok(Ok(_)) => out.acked += 1,
        Ok(Err((err, _))) => {
            out.failures += 1;
            out.first_failure.get_or_insert_with(|| err.to_string());
        }
        Err(_) => {
            out.failures += 1;
            out.first_failure
                .get_or_insert_with(|| "the producer dropped the record".to_owned());
        }
    }
}

/// Waits until the store holds `rows` notifications: as long as its count keeps growing,
/// up to `stall` without growth (and at most twenty `stall`s in all); the count it last saw.
pub async fn wait_stored(db: &Database, rows: usize, stall: Duration) -> anyhow::Result<usize> {
    let give_up = Instant::now() + stall * 20;
    let (mut last, mut grew) = (db.count().await?, Instant::now());
    loop {
        if last >= rows || grew.elapsed() >= stall || Instant::now() >= give_up {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stored = db.count().await?;
        if stored > last {
            (last, grew) = (stored, Instant::now());
        }
    }
}

/// Every stored notification's id, by user.
pub async fn ids_by_user(db: &Database) -> anyhow::Result<HashMap<String, HashSet<i64>>> {
    let rows = sqlx::query("SELECT id, user_id FROM notifications")
        .fetch_all(&db.pool)
        .await?;
    let mut out: HashMap<String, HashSet<i64>> = HashMap::new();
    for row in rows {
        // Text columns are utf8mb4_bin, which the driver reports as binary.
        let user: String = row.try_get_unchecked("user_id")?;
        out.entry(user).or_default().insert(row.try_get("id")?);
    }
    Ok(out)
}
