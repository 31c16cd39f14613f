//! One batch of Kafka records: decode → convert → store (one transaction per group of
//! partitions, see [`crate::parallel`]) → publish → (the caller commits offsets). Nothing
//! here returns before each record of the batch is done with:
//!
//! - a record that is invalid in itself goes to its DLT at once;
//! - a record the database refuses is retried `retry_max_attempts` times, `retry_interval`
//!   apart, then dead-lettered;
//! - a dead letter the cluster will never take (too large, its DLT unknown and not
//!   creatable) is logged at ERROR with the record's coordinates, counted as
//!   `dead_letter_failed`, and the batch moves on: waiting could not save it, and stalling
//!   its partition forever would stop every record behind it;
//! - an unavailable database, Redis or DLT producer is nobody's fault: the batch waits with
//!   capped, jittered backoff until the dependency is back (readiness is false meanwhile) and
//!   nothing is dead-lettered or dropped for it. Only the shutdown deadline abandons a batch,
//!   and an abandoned batch is not committed, so it is consumed again;
//! - a conflict with a concurrent store transaction (a deadlock, a lock wait timeout) is
//!   neither: the store runs the transaction again itself ([`crate::conflict`]) and
//!   readiness is untouched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use shared::backoff::Backoff;
use shared::convert::convert;
use shared::event::TopicMap;
use shared::time::Zone;

use crate::admin::{Dependency, Health};
use crate::dlt::DltProducer;
use crate::error::DltError;
use crate::metrics::Metrics;
use crate::parallel;
use crate::publish::{Destination, Outgoing, Publisher};
use crate::record::{DeadLetter, Record, RecordError};
use crate::store::{Incoming, Outcome, SourceRecord, Store, StoreError, Stored};
use shared::channel::TIMEDEALS;
use shared::event::EventKind;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The batch processor, shared (in an `Arc`) by the run loop and the publisher task.
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
    /// Concurrent store transactions per batch (split by partition).
    pub store_parallelism: usize,
}

/// A batch that is stored (and dead-lettered where needed) but not yet published.
pub struct Staged {
    /// The batch's records, for the offset commit after publishing.
    pub records: Vec<Record>,
    outgoing: Vec<Outgoing>,
    timestamps: Vec<i64>,
    tally: Tally,
    started: Instant,
}

/// What one record's value makes.
enum Decoded {
    /// A per-user notification, to store and publish.
    Notification(shared::notification::NewNotification),
    /// A broadcast (time deals), to publish only.
    Broadcast(String),
    /// Nothing (valid, but no notification).
    Nothing,
}

/// One group's results (in its input order), dead letters and counts.
type Part = (Vec<Option<Stored>>, Vec<DeadLetter>, Tally);

/// Per-topic outcome counts of one batch, applied to the metrics at the end.
#[derive(Default)]
struct Tally(HashMap<(String, &'static str), u64>);

impl Tally {
    fn add(&mut self, topic: &str, outcome: &'static str) {
        *self.0.entry((topic.to_owned(), outcome)).or_default() += 1;
    }
}

impl Pipeline {
    /// Decodes, dead-letters and stores a batch; returns what remains to publish.
    pub async fn store_stage(&self, records: Vec<Record>) -> Staged {
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut letters = Vec::new();
        let mut to_store: Vec<(usize, Incoming)> = Vec::new();
        let mut broadcasts = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.decode(record) {
                Ok(Decoded::Broadcast(json)) => {
                    tally.add(&record.topic, "broadcast");
                    broadcasts.push((index, json));
                }
                Ok(Decoded::Notification(notification)) => to_store.push((
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
                Ok(Decoded::Nothing) => tally.add(&record.topic, "skipped"),
                Err(err) => letters.push(DeadLetter::new(record, &err)),
            }
        }

        let decoded = started.elapsed();
        let stored = self
            .store_all(&records, &to_store, &mut letters, &mut tally)
            .await;
        let stored_at = started.elapsed();
        self.send_letters(&letters, &mut tally).await;

        // Personal notifications go out in id order. Concurrent store transactions take
        // ids in any interleaving, and a client that resumes with `last-id` (the newest id
        // it holds) must never have seen a higher id published before a lower one of the
        // same batch. Within one transaction ids follow offsets, so each partition's order
        // holds, and the rows a batch inserts have higher ids than those of this instance's
        // earlier batches. (Instances on other partitions interleave their ids with ours;
        // the order across instances is not promised.)
        let mut personal = Vec::new();
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
                personal.push((result.outcome.id(), *index, incoming, result));
            }
        }
        personal.sort_by_key(|(id, ..)| *id);
        let mut outgoing = Vec::new();
        let mut timestamps = Vec::new();
        for (_, index, incoming, result) in personal {
            let notification = result.notification(&incoming.notification);
            outgoing.push(Outgoing {
                to: Destination::User(notification.user_id.clone()),
                json: notification.to_json(&self.zone),
            });
            timestamps.extend(records[index].timestamp_ms);
        }
        // Time deals: no row, only the broadcast.
        for (index, json) in broadcasts {
            outgoing.push(Outgoing {
                to: Destination::Broadcast(TIMEDEALS),
                json,
            });
            timestamps.extend(records[index].timestamp_ms);
        }
        tracing::debug!(
            records = records.len(),
            decode_ms = decoded.as_secs_f64() * 1e3,
            store_ms = (stored_at - decoded).as_secs_f64() * 1e3,
            "batch stored"
        );
        Staged {
            records,
            outgoing,
            timestamps,
            tally,
            started,
        }
    }

    /// Publishes a stored batch (waiting out a Redis outage) and counts it. The caller
    /// commits the batch's offsets afterwards.
    pub async fn publish_stage(&self, staged: &Staged) {
        let publish_started = Instant::now();
        self.publish_all(&staged.outgoing).await;
        tracing::debug!(
            messages = staged.outgoing.len(),
            publish_ms = publish_started.elapsed().as_secs_f64() * 1e3,
            "batch published"
        );
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in &staged.timestamps {
            let seconds = (now_ms - ts).max(0) as f64 / 1000.0;
            self.metrics.kafka_to_publish_seconds.observe(seconds);
        }
        for ((topic, outcome), n) in &staged.tally.0 {
            self.metrics.record(topic, outcome, *n);
        }
        self.metrics.batch_size.observe(staged.records.len() as f64);
        self.metrics
            .batch_seconds
            .observe(staged.started.elapsed().as_secs_f64());
    }

    fn decode(&self, record: &Record) -> Result<Decoded, RecordError> {
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
        if kind == EventKind::TimeDealStarted {
            return Ok(Decoded::Broadcast(shared::broadcast::time_deal(value)?));
        }
        Ok(match convert(kind, value)? {
            Some(notification) => Decoded::Notification(notification),
            None => Decoded::Nothing,
        })
    }

    /// Stores the batch as up to `store_parallelism` concurrent transactions, split as
    /// [`parallel`] says: by partition, each key written by one of them; the records held
    /// back go in a last transaction once the others have committed.
    async fn store_all(
        &self,
        records: &[Record],
        to_store: &[(usize, Incoming)],
        letters: &mut Vec<DeadLetter>,
        tally: &mut Tally,
    ) -> Vec<Option<Stored>> {
        if self.store_parallelism <= 1 {
            return self.store_group(records, to_store, letters, tally).await;
        }
        let inputs = to_store.iter().map(|(index, incoming)| {
            let record = &records[*index];
            let key = incoming.notification.dedup_key();
            (record.topic.as_str(), record.partition, key)
        });
        let split = parallel::split(inputs, self.store_parallelism);
        let mut merged = vec![None; to_store.len()];
        let mut merge = |positions: &[usize], (results, group_letters, group_tally): Part| {
            for (position, result) in positions.iter().zip(results) {
                merged[*position] = result;
            }
            letters.extend(group_letters);
            for (key, n) in group_tally.0 {
                *tally.0.entry(key).or_default() += n;
            }
        };
        let stores = split
            .groups
            .iter()
            .map(|positions| self.store_part(records, to_store, positions));
        for (positions, part) in split.groups.iter().zip(join_all(stores).await) {
            merge(positions, part);
        }
        if !split.held_back.is_empty() {
            let part = self.store_part(records, to_store, &split.held_back).await;
            merge(&split.held_back, part);
        }
        merged
    }

    /// Stores the inputs at `positions` of `to_store` as one group.
    async fn store_part(
        &self,
        records: &[Record],
        to_store: &[(usize, Incoming)],
        positions: &[usize],
    ) -> Part {
        let items: Vec<(usize, Incoming)> =
            positions.iter().map(|p| to_store[*p].clone()).collect();
        let mut letters = Vec::new();
        let mut tally = Tally::default();
        let results = self
            .store_group(records, &items, &mut letters, &mut tally)
            .await;
        (results, letters, tally)
    }

    /// Stores one group in one transaction. When the database refuses the group's data,
    /// stores record by record to find the refused ones (retried, then dead-lettered).
    async fn store_group(
        &self,
        records: &[Record],
        to_store: &[(usize, Incoming)],
        letters: &mut Vec<DeadLetter>,
        tally: &mut Tally,
    ) -> Vec<Option<Stored>> {
        let batch: Vec<Incoming> = to_store.iter().map(|(_, i)| i.clone()).collect();
        let mut outage = Outage::new(self, Dependency::Database);
        let rejected = loop {
            match self.store.store_batch(&batch).await {
                Ok(stored) => {
                    outage.over();
                    return stored.into_iter().map(Some).collect();
                }
                Err(StoreError::Unavailable(err)) => outage.wait(&err).await,
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
                        outage.over();
                        break stored.pop();
                    }
                    Err(StoreError::Unavailable(err)) => outage.wait(&err).await,
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
                        letters.push(DeadLetter::new(
                            record,
                            &RecordError::StoreRejected(err.to_string()),
                        ));
                        break None;
                    }
                }
            };
            results.push(result);
        }
        results
    }

    /// Sends the batch's dead letters, waiting out a Kafka outage; a letter that can never
    /// be written is logged and counted, and its record is done with.
    async fn send_letters(&self, letters: &[DeadLetter], tally: &mut Tally) {
        let mut outage = Outage::new(self, Dependency::DltProducer);
        for letter in letters {
            let record = &letter.record;
            loop {
                match self.dlt.send(letter).await {
                    Ok(()) => {
                        outage.over();
                        tally.add(&record.topic, "dead_lettered");
                        break;
                    }
                    Err(DltError::Permanent(err)) => {
                        outage.over();
                        tracing::error!(
                            topic = %record.topic,
                            partition = record.partition,
                            offset = record.offset,
                            kind = %letter.error_kind,
                            error = %err,
                            "the dead letter can never be written; skipping the record (it stays in its topic until retention)"
                        );
                        tally.add(&record.topic, "dead_letter_failed");
                        break;
                    }
                    Err(DltError::Unavailable(err)) => outage.wait(&err).await,
                }
            }
        }
    }

    async fn publish_all(&self, outgoing: &[Outgoing]) {
        let mut outage = Outage::new(self, Dependency::Redis);
        loop {
            match self.publisher.publish(outgoing).await {
                Ok(()) => {
                    outage.over();
                    return;
                }
                Err(err) => outage.wait(&err).await,
            }
        }
    }
}

/// Waits out an unavailable dependency with capped, jittered backoff; while it is down,
/// readiness is false and the dependency's metrics say so.
struct Outage<'a> {
    pipeline: &'a Pipeline,
    dependency: Dependency,
    backoff: Backoff,
    waited: bool,
}

impl<'a> Outage<'a> {
    fn new(pipeline: &'a Pipeline, dependency: Dependency) -> Self {
        Outage {
            pipeline,
            dependency,
            backoff: Backoff::new(BACKOFF_START, BACKOFF_CAP),
            waited: false,
        }
    }

    async fn wait(&mut self, err: &(dyn std::fmt::Display + Send + Sync)) {
        let name = self.dependency.name();
        if !self.waited {
            tracing::warn!(dependency = name, error = %err, "dependency unavailable; waiting for it");
        } else {
            tracing::debug!(dependency = name, error = %err, "still unavailable");
        }
        self.waited = true;
        let metrics = &self.pipeline.metrics;
        self.pipeline.health.set_down(self.dependency, true);
        metrics.dependency_down.with_label_values(&[name]).set(1);
        metrics.outage_waits.with_label_values(&[name]).inc();
        tokio::time::sleep(self.backoff.next()).await;
    }

    /// The dependency answered: clears the outage, if there was one.
    fn over(&mut self) {
        if self.waited {
            let name = self.dependency.name();
            tracing::info!(dependency = name, "dependency is back; resuming");
            self.pipeline.health.set_down(self.dependency, false);
            self.pipeline
                .metrics
                .dependency_down
                .with_label_values(&[name])
                .set(0);
            self.waited = false;
            self.backoff.reset();
        }
    }
}
