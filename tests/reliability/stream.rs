//! The stream a case produces: seeded events across all 14 input topics (devstack's sample
//! per topic, fresh references, so most events are distinct notifications), with deliberate
//! copies (the same dedup identity again: the same bytes, or the same event with an extra
//! field), produced at a steady rate; and the dedup identity each event must end up as.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use rand::rngs::StdRng;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use shared::event::EventKind;

/// How often the producer looks whether more events are due.
const TICK: Duration = Duration::from_millis(5);
/// Copies resend one of this many latest events (so most land near their original).
const COPY_WINDOW: usize = 200;

/// What an event must become: one row per distinct identity (the dedup key of SPEC 2.2:
/// user, type, reference type and id), or a time-deal broadcast by its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Row {
        user: String,
        kind: String,
        reference_type: Option<String>,
        reference_id: Option<String>,
    },
    Deal(i64),
}

impl Identity {
    /// The identity of a record value on `kind`'s topic, as the converter sees it.
    pub fn of(kind: EventKind, value: &[u8]) -> anyhow::Result<Identity> {
        if kind == EventKind::TimeDealStarted {
            let json: serde_json::Value = serde_json::from_slice(value)?;
            let id = json["timeDealId"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("a time deal without a numeric id"))?;
            return Ok(Identity::Deal(id));
        }
        let n = shared::convert::convert(kind, value)?
            .ok_or_else(|| anyhow::anyhow!("{kind:?} made no notification"))?;
        Ok(Identity::Row {
            user: n.user_id,
            kind: n.kind.as_str().to_owned(),
            reference_type: n.reference_type,
            reference_id: n.reference_id,
        })
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: &'static str,
    pub key: String,
    pub value: Vec<u8>,
    pub identity: Identity,
    /// A deliberate copy of an earlier event's identity.
    pub copy: bool,
}

/// `count` events for `users` users (`user` names them), `copy_share` of them copies.
pub fn plan(
    rng: &mut StdRng,
    count: usize,
    users: usize,
    user: &str,
    copy_share: f64,
) -> anyhow::Result<Vec<Event>> {
    let mut events: Vec<Event> = Vec::with_capacity(count);
    for n in 0..count {
        if n > 0 && rng.random_bool(copy_share) {
            let from = n.saturating_sub(COPY_WINDOW);
            let original = events[rng.random_range(from..n)].clone();
            events.push(copy_of(original, rng.random_bool(0.5))?);
            continue;
        }
        let kind = EventKind::ALL[rng.random_range(0..EventKind::ALL.len())];
        // A signup's notification is one per user: each signup gets a new user, so that
        // only deliberate copies repeat an identity.
        let recipient = match kind {
            EventKind::UserSignedUp => format!("{user}-new-{n}"),
            _ => format!("{user}-{}", rng.random_range(0..users.max(1))),
        };
        let (key, value) = devstack::samples::sample(kind, &recipient);
        let value = serde_json::to_vec(&value)?;
        events.push(Event {
            topic: kind.default_topic(),
            key,
            identity: Identity::of(kind, &value)?,
            value,
            copy: false,
        });
    }
    Ok(events)
}

/// A copy of `original`: the same bytes, or (`reworded`) the same event with a field the
/// converter ignores, so the bytes differ and the identity does not.
fn copy_of(mut original: Event, reworded: bool) -> anyhow::Result<Event> {
    if reworded {
        let mut json: serde_json::Value = serde_json::from_slice(&original.value)?;
        json["resentBy"] = "reliability".into();
        original.value = serde_json::to_vec(&json)?;
        let kind = devstack::samples::kind_of(original.topic)
            .ok_or_else(|| anyhow::anyhow!("unknown topic {}", original.topic))?;
        anyhow::ensure!(
            Identity::of(kind, &original.value)? == original.identity,
            "a reworded copy changed its identity"
        );
    }
    original.copy = true;
    Ok(original)
}

/// What happened to each event: when it was handed to the producer, and where the broker
/// acknowledged it (partition, offset).
#[derive(Debug)]
pub struct Produced {
    pub sent_at: Vec<Option<Instant>>,
    pub acked: Vec<Option<(i32, i64)>>,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub started: Instant,
    /// When the last event was handed to the producer.
    pub last_sent: Instant,
}

impl Produced {
    /// The offered rate over the stream, events/s.
    pub fn offered_rate(&self) -> f64 {
        let secs = (self.last_sent - self.started).as_secs_f64();
        let sent = self.sent_at.iter().flatten().count();
        if secs > 0.0 { sent as f64 / secs } else { 0.0 }
    }
}

/// A producer for the stream: records wait up to `message_timeout` for the broker (longer
/// than any cut), acks from all in-sync replicas.
pub fn producer(bootstrap: &str, message_timeout: Duration) -> anyhow::Result<FutureProducer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        )
        .create()?)
}

/// Produces `events` at `rate` events/s, then waits for every acknowledgement (each is
/// bounded by the producer's `message.timeout.ms`).
pub async fn produce(producer: FutureProducer, events: Arc<Vec<Event>>, rate: f64) -> Produced {
    let count = events.len();
    let started = Instant::now();
    let mut out = Produced {
        sent_at: vec![None; count],
        acked: vec![None; count],
        failures: 0,
        first_failure: None,
        started,
        last_sent: started,
    };
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    loop {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(count);
        while next < due {
            let event = &events[next];
            let record = FutureRecord::to(event.topic)
                .key(&event.key)
                .payload(&event.value);
            match producer.send_result(record) {
                Ok(delivery) => {
                    let index = next;
                    pending.push(async move { (index, delivery.await) });
                    out.sent_at[next] = Some(Instant::now());
                    next += 1;
                }
                // The local queue is full: try again at the next tick.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((err, _)) => {
                    out.failures += 1;
                    out.first_failure.get_or_insert_with(|| err.to_string());
                    next += 1;
                }
            }
        }
        if next == count {
            out.last_sent = Instant::now();
            break;
        }
        tokio::select! {
            Some((index, result)) = pending.next(), if !pending.is_empty() => {
                record(&mut out, index, result);
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    while let Some((index, result)) = pending.next().await {
        record(&mut out, index, result);
    }
    out
}

fn record<E>(out: &mut Produced, index: usize, result: Result<OwnedDeliveryResult, E>) {
    match result {
        Ok(Ok(delivery)) => out.acked[index] = Some((delivery.partition, delivery.offset)),
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
