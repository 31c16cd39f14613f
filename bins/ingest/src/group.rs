//! Ingest's membership in the consumer group: the consumer's callbacks (statistics → lag,
//! rebalances), pausing and resuming fetches, and offset commits.
//!
//! Rebalance callbacks run inside the consumer's poll, on the run loop's own task, so what
//! they leave for the loop (the revoked partitions) is taken before the next record is
//! buffered. Partitions assigned by a rebalance take the loop's state as soon as they are
//! assigned: paused during a pause (so it covers the whole assignment whatever the group
//! does), resumed otherwise (librdkafka keeps a partition's pause across a revoke, so one
//! paused before it was lost would otherwise come back paused, and never be fetched).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka_log::KafkaLog;

use crate::metrics::Metrics;
use crate::record::Record;

/// Ingest's Kafka consumer.
pub type IngestConsumer = StreamConsumer<IngestContext>;

/// Consumer callbacks: statistics → the lag gauge; rebalances → counted, revoked partitions
/// kept for the run loop, newly assigned partitions paused while fetching is paused.
pub struct IngestContext {
    metrics: Metrics,
    log: Arc<KafkaLog>,
    paused: AtomicBool,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl IngestContext {
    pub fn new(metrics: Metrics, log: Arc<KafkaLog>) -> Self {
        IngestContext {
            metrics,
            log,
            paused: AtomicBool::new(false),
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked partitions"))
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.metrics.consumer_lag.set(lag);
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.metrics.rebalances.with_label_values(&["revoke"]).inc();
            tracing::info!(partitions = partitions.count(), "partitions revoked");
            let mut revoked = self.revoked.lock().expect("revoked partitions");
            revoked.extend(
                partitions
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition())),
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let paused = self.paused.load(Ordering::SeqCst);
                tracing::info!(
                    partitions = partitions.count(),
                    paused,
                    "partitions assigned"
                );
                // librdkafka keeps a partition's pause across a revoke: one paused before it
                // was lost would still be paused when it comes back. Newly assigned
                // partitions take the run loop's current state, whatever they had before.
                let result = if paused {
                    consumer.pause(partitions)
                } else {
                    consumer.resume(partitions)
                };
                if let Err(err) = result {
                    tracing::warn!(%err, paused, "cannot set the state of newly assigned partitions");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => tracing::warn!(%err, "rebalance failed"),
        }
    }
}

/// Pauses (`true`) or resumes fetching on every assigned partition. The run loop keeps
/// polling meanwhile, so the group keeps its member.
pub fn set_paused(consumer: &IngestConsumer, paused: bool) -> KafkaResult<()> {
    let context = consumer.context();
    context.paused.store(paused, Ordering::SeqCst);
    context.metrics.consumer_paused.set(i64::from(paused));
    let assignment = consumer.assignment()?;
    if paused {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    }
}

/// Commits, per partition, the offset after the batch's highest record there.
pub fn commit(consumer: &IngestConsumer, records: &[Record], mode: CommitMode) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for record in records {
        let entry = next.entry((&record.topic, record.partition)).or_insert(0);
        *entry = (*entry).max(record.offset + 1);
    }
    let mut list = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        if let Err(err) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(%err, "cannot build the offset commit");
            return;
        }
    }
    if let Err(err) = consumer.commit(&list, mode) {
        // After a rebalance the partition's new owner consumes these records again;
        // dedup makes that harmless.
        tracing::warn!(%err, "offset commit failed");
    }
}
