//! One batch of Kafka records: decode → convert → store (one transaction) → publish →
//! (the caller commits offsets). Nothing here returns before the batch's work is durable:
//!
//! - a record that is invalid in itself goes to its DLT at once;
//! - a record the database refuses is retried `retry_max_attempts` times, `retry_interval`
//!   apart, then dead-lettered;
//! - an unavailable database, Redis or DLT producer is nobody's fault: the batch waits with
//!   capped backoff until the dependency is back (readiness is false meanwhile) and nothing
//!   is dead-lettered or dropped for it. Only the shutdown deadline abandons a batch, and an
//!   abandoned batch is not committed, so it is consumed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::convert::{InvalidEvent, convert};
use shared::event::TopicMap;
use shared::time::Zone;

use crate::admin::{Dependency, Health};
use crate::dlt::{DeadLetter, DltProducer};
use crate::metrics::Metrics;
use crate::publish::{Outgoing, Publisher};
use crate::store::{Incoming, Outcome, SourceRecord, Store, StoreError};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// A consumed Kafka record, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Why a record is dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
    #[error("record has no value")]
    NoValue,
    #[error("record value is {len} bytes (at most {max})")]
    TooLarge { len: usize, max: usize },
    #[error("topic {0:?} is not configured")]
    UnknownTopic(String),
    #[error("the database refused the notification: {0}")]
    StoreRejected(String),
}

impl RecordError {
    /// The error kind written to `kafka_dlt-exception-fqcn`.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Invalid(e) => e.kind(),
            RecordError::NoValue => "InvalidEvent.NoValue",
            RecordError::TooLarge { .. } => "InvalidEvent.TooLarge",
            RecordError::UnknownTopic(_) => "InvalidEvent.UnknownTopic",
            RecordError::StoreRejected(_) => "StoreRejected",
        }
    }
}

/// The batch processor; cheap to share.
pub struct Pipeline {
    pub store: Store,
    pub publisher: Publisher,
    pub dlt: DltProducer,
    pub topics: TopicMap,
    pub zone: Zone,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub retry_interval: Duration,
    pub retry_max_attempts: u32,
    pub max_event_bytes: usize,
}

/// Per-topic outcome counts of one batch, applied to the metrics at the end.
#[derive(Default)]
struct Tally(HashMap<(String, &'static str), u64>);

impl Tally {
    fn add(&mut self, topic: &str, outcome: &'static str) {
        *self.0.entry((topic.to_owned(), outcome)).or_default() += 1;
    }
}

impl Pipeline {
    /// Processes `records` until all their work is durable. Cancel-safe: dropping the
    /// future leaves nothing committed (the records are consumed again).
    pub async fn process(&self, records: &[Record]) {
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut letters = Vec::new();
        let mut to_store: Vec<(usize, Incoming)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.decode(record) {
                Ok(Some(notification)) => to_store.push((
                    index,
                    Incoming {
                        notification,
                        source: Some(SourceRecord {
                            topic: record.topic.clone(),
                            partition: record.partition,
                            offset: record.offset,
                        }),
                    },
                )),
                Ok(None) => tally.add(&record.topic, "skipped"),
                Err(err) => letters.push(self.letter(record, &err)),
            }
        }

        let stored = self
            .store_all(records, &to_store, &mut letters, &mut tally)
            .await;
        for letter in &letters {
            tally.add(&letter.topic, "dead_lettered");
        }
        self.send_letters(&letters).await;

        let mut outgoing = Vec::new();
        let mut timestamps = Vec::new();
        for ((index, incoming), result) in to_store.iter().zip(&stored) {
            let Some(result) = result else { continue };
            let topic = &records[*index].topic;
            match result.outcome {
                Outcome::Inserted(_) => tally.add(topic, "stored"),
                Outcome::Duplicate {
                    same_source_record: true,
                    ..
                } => tally.add(topic, "replayed"),
                Outcome::Duplicate { .. } => tally.add(topic, "duplicate"),
            }
            if result.outcome.must_publish() {
                let notification = result.notification(&incoming.notification);
                outgoing.push(Outgoing {
                    user_id: notification.user_id.clone(),
                    json: notification.to_json(&self.zone),
                });
                timestamps.extend(records[*index].timestamp_ms);
            }
        }
        self.publish_all(&outgoing).await;

        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in timestamps {
            let seconds = (now_ms - ts).max(0) as f64 / 1000.0;
            self.metrics.kafka_to_publish_seconds.observe(seconds);
        }
        for ((topic, outcome), n) in tally.0 {
            self.metrics.record(&topic, outcome, n);
        }
        self.metrics.batch_size.observe(records.len() as f64);
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn decode(
        &self,
        record: &Record,
    ) -> Result<Option<shared::notification::NewNotification>, RecordError> {
        let kind = self
            .topics
            .kind(&record.topic)
            .ok_or_else(|| RecordError::UnknownTopic(record.topic.clone()))?;
        let value = record.value.as_deref().ok_or(RecordError::NoValue)?;
        if value.len() > self.max_event_bytes {
            return Err(RecordError::TooLarge {
                len: value.len(),
                max: self.max_event_bytes,
            });
        }
        Ok(convert(kind, value)?)
    }

    fn letter(&self, record: &Record, err: &RecordError) -> DeadLetter {
        tracing::error!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            kind = err.kind(),
            error = %err,
            "dead-lettering record"
        );
        DeadLetter {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.clone(),
            value: record.value.clone(),
            error_kind: err.kind().to_owned(),
            error_message: err.to_string(),
        }
    }

    /// Stores the batch in one transaction. When the database refuses the batch's data,
    /// stores record by record to find the refused ones (retried, then dead-lettered).
    async fn store_all(
        &self,
        records: &[Record],
        to_store: &[(usize, Incoming)],
        letters: &mut Vec<DeadLetter>,
        tally: &mut Tally,
    ) -> Vec<Option<crate::store::Stored>> {
        let batch: Vec<Incoming> = to_store.iter().map(|(_, i)| i.clone()).collect();
        let mut backoff = Backoff::new(Dependency::Database);
        let rejected = loop {
            match self.store.store_batch(&batch).await {
                Ok(stored) => {
                    backoff.recovered(self);
                    return stored.into_iter().map(Some).collect();
                }
                Err(StoreError::Unavailable(err)) => backoff.wait(self, &err).await,
                Err(StoreError::Rejected(err)) => break err,
            }
        };
        tracing::warn!(error = %rejected, "database refused a batch; storing its records one by one");
        let mut results = Vec::with_capacity(to_store.len());
        for (index, incoming) in to_store {
            let record = &records[*index];
            let mut attempts = 0;
            let result = loop {
                match self.store.store_batch(std::slice::from_ref(incoming)).await {
                    Ok(mut stored) => {
                        backoff.recovered(self);
                        break stored.pop();
                    }
                    Err(StoreError::Unavailable(err)) => backoff.wait(self, &err).await,
                    Err(StoreError::Rejected(err)) if attempts < self.retry_max_attempts => {
                        attempts += 1;
                        tally.add(&record.topic, "retried");
                        tracing::warn!(
                            topic = %record.topic,
                            offset = record.offset,
                            attempt = attempts,
                            error = %err,
                            "retrying a record the database refused"
                        );
                        tokio::time::sleep(self.retry_interval).await;
                    }
                    Err(StoreError::Rejected(err)) => {
                        letters.push(
                            self.letter(record, &RecordError::StoreRejected(err.to_string())),
                        );
                        break None;
                    }
                }
            };
            results.push(result);
        }
        results
    }

    async fn send_letters(&self, letters: &[DeadLetter]) {
        let mut backoff = Backoff::new(Dependency::Kafka);
        for letter in letters {
            loop {
                match self.dlt.send(letter).await {
                    Ok(()) => {
                        backoff.recovered(self);
                        break;
                    }
                    Err(err) => backoff.wait(self, &err).await,
                }
            }
        }
    }

    async fn publish_all(&self, outgoing: &[Outgoing]) {
        let mut backoff = Backoff::new(Dependency::Redis);
        loop {
            match self.publisher.publish(outgoing).await {
                Ok(()) => {
                    backoff.recovered(self);
                    return;
                }
                Err(err) => backoff.wait(self, &err).await,
            }
        }
    }
}

/// Capped exponential backoff while a dependency is unavailable; flips readiness.
struct Backoff {
    dependency: Dependency,
    next: Duration,
    waited: bool,
}

impl Backoff {
    fn new(dependency: Dependency) -> Self {
        Backoff {
            dependency,
            next: BACKOFF_START,
            waited: false,
        }
    }

    async fn wait(&mut self, pipeline: &Pipeline, err: &(dyn std::fmt::Display + Send + Sync)) {
        let name = self.dependency.name();
        if !self.waited {
            tracing::warn!(dependency = name, error = %err, "dependency unavailable; pausing consumption");
        } else {
            tracing::debug!(dependency = name, error = %err, "still unavailable");
        }
        self.waited = true;
        pipeline.health.set_down(self.dependency, true);
        pipeline
            .metrics
            .dependency_down
            .with_label_values(&[name])
            .set(1);
        pipeline
            .metrics
            .outage_waits
            .with_label_values(&[name])
            .inc();
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(BACKOFF_CAP);
    }

    fn recovered(&mut self, pipeline: &Pipeline) {
        if self.waited {
            let name = self.dependency.name();
            tracing::info!(dependency = name, "dependency is back; resuming");
            pipeline.health.set_down(self.dependency, false);
            pipeline
                .metrics
                .dependency_down
                .with_label_values(&[name])
                .set(0);
            self.waited = false;
            self.next = BACKOFF_START;
        }
    }
}
