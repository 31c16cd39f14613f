//! Ingest's membership in the consumer group: the consumer's callbacks (statistics → lag,
//! rebalances, broker reachability → readiness), pausing and resuming fetches, and offset
//! commits.
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
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::admin::{Dependency, Health};
use crate::kafka_log::KafkaLog;
use crate::metrics::Metrics;
use crate::record::Record;

/// How long statistics may show no broker connection up before the cluster counts as
/// unreachable, should librdkafka never say that every broker is down.
const NONE_UP_BOUND: Duration = Duration::from_secs(5);

/// Ingest's Kafka consumer.
pub type IngestConsumer = StreamConsumer<IngestContext>;

/// What librdkafka's callbacks tell about the consumer's brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerSignal {
    /// `AllBrokersDown`: every broker connection failed.
    AllDown,
    /// A statistics report in which no broker connection is up.
    NoneUp,
    /// A broker answered: a connection up in the statistics, a commit, an assignment.
    Answered,
}

/// Whether the consumer can reach the cluster. One broker connection failing
/// (`BrokerTransportFailure`) says nothing: librdkafka reconnects, and other brokers may
/// serve. `AllBrokersDown` does: unreachable at once. So do statistics without a
/// connection up for [`NONE_UP_BOUND`]. Reachable again when a broker answers. A consumed
/// record is no proof: librdkafka prefetches, so one can come from a fetch made before the
/// broker went away; nor is quiet a sign of trouble: an idle consumer keeps its
/// connections up, so its statistics keep proving the broker answers.
#[derive(Debug, Default)]
pub struct Reachability {
    down: bool,
    none_up_since: Option<Instant>,
}

impl Reachability {
    /// Takes `signal` in; returns the new state when it changed (`true`: unreachable).
    pub fn observe(&mut self, signal: BrokerSignal, now: Instant) -> Option<bool> {
        let down = match signal {
            BrokerSignal::AllDown => true,
            BrokerSignal::NoneUp => {
                let since = *self.none_up_since.get_or_insert(now);
                self.down || now.duration_since(since) >= NONE_UP_BOUND
            }
            BrokerSignal::Answered => {
                self.none_up_since = None;
                false
            }
        };
        (down != self.down).then(|| {
            self.down = down;
            down
        })
    }
}

/// Whether the statistics show a broker connection up (bootstrap or learned; the internal
/// and logical brokers are no connections of their own).
fn any_broker_up(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .any(|b| matches!(b.source.as_str(), "learned" | "configured") && b.state == "UP")
}

/// Consumer callbacks: statistics → the lag gauge; rebalances → counted, revoked partitions
/// kept for the run loop, newly assigned partitions paused while fetching is paused;
/// statistics, errors, commits and assignments → the Kafka dependency's readiness.
pub struct IngestContext {
    metrics: Metrics,
    log: Arc<KafkaLog>,
    health: Arc<Health>,
    reachability: Mutex<Reachability>,
    paused: AtomicBool,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl IngestContext {
    pub fn new(metrics: Metrics, log: Arc<KafkaLog>, health: Arc<Health>) -> Self {
        IngestContext {
            metrics,
            log,
            health,
            reachability: Mutex::new(Reachability::default()),
            paused: AtomicBool::new(false),
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked partitions"))
    }

    /// Applies `signal` to readiness and to `dependency_down{dependency="kafka"}`.
    fn broker_signal(&self, signal: BrokerSignal) {
        let change = self
            .reachability
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(signal, Instant::now());
        let Some(down) = change else { return };
        let dependency = Dependency::Kafka;
        self.health.set_down(dependency, down);
        self.metrics
            .dependency_down
            .with_label_values(&[dependency.name()])
            .set(i64::from(down));
        if down {
            tracing::warn!(
                dependency = dependency.name(),
                "no Kafka broker answers; not ready until one does"
            );
        } else {
            tracing::info!(
                dependency = dependency.name(),
                "a Kafka broker answers again"
            );
        }
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.broker_signal(BrokerSignal::AllDown);
        }
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
        self.broker_signal(if any_broker_up(&statistics) {
            BrokerSignal::Answered
        } else {
            BrokerSignal::NoneUp
        });
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
                self.broker_signal(BrokerSignal::Answered);
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

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // A failed commit is left to the next one (see `commit`); a success proves the
        // group coordinator answers.
        if result.is_ok() {
            self.broker_signal(BrokerSignal::Answered);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_brokers_down_is_unreachable_at_once_and_an_answer_clears_it() {
        let mut reach = Reachability::default();
        let t0 = Instant::now();
        assert_eq!(
            reach.observe(BrokerSignal::Answered, t0),
            None,
            "up from the start"
        );
        assert_eq!(reach.observe(BrokerSignal::AllDown, t0), Some(true));
        assert_eq!(reach.observe(BrokerSignal::NoneUp, t0), None, "still down");
        assert_eq!(reach.observe(BrokerSignal::AllDown, t0), None);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(reach.observe(BrokerSignal::Answered, later), Some(false));
        assert_eq!(reach.observe(BrokerSignal::Answered, later), None);
    }

    #[test]
    fn statistics_without_a_connection_up_count_only_past_the_bound() {
        let mut reach = Reachability::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // A reconnect caught by one report, then a connection up: nothing changes.
        assert_eq!(reach.observe(BrokerSignal::NoneUp, at(0)), None);
        assert_eq!(reach.observe(BrokerSignal::Answered, at(1)), None);
        // The bound runs from the first report since the last answer.
        for secs in 2..2 + NONE_UP_BOUND.as_secs() {
            assert_eq!(
                reach.observe(BrokerSignal::NoneUp, at(secs)),
                None,
                "{secs} s"
            );
        }
        let bound = at(2) + NONE_UP_BOUND;
        assert_eq!(reach.observe(BrokerSignal::NoneUp, bound), Some(true));
        assert_eq!(reach.observe(BrokerSignal::Answered, bound), Some(false));
        assert_eq!(
            reach.observe(BrokerSignal::NoneUp, bound),
            None,
            "the bound starts over after an answer"
        );
    }
}
