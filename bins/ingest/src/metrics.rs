//! Ingest metrics (Prometheus), registered on one registry per instance (no globals).
//! Labels stay low-cardinality (topic, outcome, dependency, rebalance event), never a user id.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Buckets of `kafka_to_publish_seconds`: fine where a real-time pipeline lives (tens of
/// milliseconds), coarse up to the minute a long outage takes.
const PUBLISH_LATENCY_BUCKETS: [f64; 22] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Typed handles to every ingest metric.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Records by topic and outcome: stored, duplicate, replayed (its own row existed:
    /// published again), dead_lettered, dead_letter_failed (its letter could never be
    /// written: logged and skipped), retried (one count per retry), broadcast (a time deal:
    /// published on the broadcast channel, no row), skipped (valid, nothing to do).
    pub records: IntCounterVec,
    pub batch_size: Histogram,
    /// Wall time to process one batch, from the start of its store stage to its publish.
    pub batch_seconds: Histogram,
    /// From the record's Kafka timestamp (as the producer set it, or the broker's append
    /// time) to the moment its batch's Redis publish succeeded: one sample per published
    /// message; records without a timestamp are not observed.
    pub kafka_to_publish_seconds: Histogram,
    /// Waits caused by an unavailable dependency (database, redis, dlt_producer).
    pub outage_waits: IntCounterVec,
    /// 1 while the dependency is unavailable: database, redis, dlt_producer (a batch waits
    /// for it), kafka (the consumer has no broker connection up).
    pub dependency_down: IntGaugeVec,
    /// Store transactions rolled back and run again because a concurrent writer got in the
    /// way, by kind: deadlock, lock_wait_timeout, duplicate_race, missing_row. Not an outage.
    pub store_conflicts: IntCounterVec,
    /// Messages behind the high watermark, summed over this instance's partitions.
    pub consumer_lag: IntGauge,
    /// Consumer group rebalance events seen by this instance: assign, revoke.
    pub rebalances: IntCounterVec,
    /// 1 while fetching is paused because the pipeline cannot take more records.
    pub consumer_paused: IntGauge,
    /// Records received and waiting for the store stage (about one batch at most).
    pub pending_records: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("ingest".into()), None).expect("registry");
        let records = IntCounterVec::new(
            Opts::new(
                "records_total",
                "Kafka records processed, by topic and outcome",
            ),
            &["topic", "outcome"],
        )
        .expect("metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "Records per processed batch").buckets(vec![
                1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
            ]),
        )
        .expect("metric");
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("batch_seconds", "Time to process one batch")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("buckets")),
        )
        .expect("metric");
        let kafka_to_publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "kafka_to_publish_seconds",
                "Latency from the record's Kafka timestamp to its Redis publish",
            )
            .buckets(PUBLISH_LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric");
        let outage_waits = IntCounterVec::new(
            Opts::new(
                "outage_waits_total",
                "Backoff waits for an unavailable dependency",
            ),
            &["dependency"],
        )
        .expect("metric");
        let dependency_down = IntGaugeVec::new(
            Opts::new("dependency_down", "1 while a dependency is unavailable"),
            &["dependency"],
        )
        .expect("metric");
        let store_conflicts = IntCounterVec::new(
            Opts::new(
                "store_conflicts_total",
                "Store transactions run again after a conflict with a concurrent writer",
            ),
            &["kind"],
        )
        .expect("metric");
        let consumer_lag = IntGauge::new(
            "consumer_lag",
            "Messages behind the high watermark on this instance's partitions",
        )
        .expect("metric");
        let rebalances = IntCounterVec::new(
            Opts::new(
                "rebalances_total",
                "Consumer group rebalance events (assign, revoke) seen by this instance",
            ),
            &["event"],
        )
        .expect("metric");
        let consumer_paused = IntGauge::new(
            "consumer_paused",
            "1 while fetching is paused because the pipeline cannot take more records",
        )
        .expect("metric");
        let pending_records = IntGauge::new(
            "pending_records",
            "Records received and waiting for the store stage",
        )
        .expect("metric");
        for collector in [
            Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(batch_size.clone()),
            Box::new(batch_seconds.clone()),
            Box::new(kafka_to_publish_seconds.clone()),
            Box::new(outage_waits.clone()),
            Box::new(dependency_down.clone()),
            Box::new(store_conflicts.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(rebalances.clone()),
            Box::new(consumer_paused.clone()),
            Box::new(pending_records.clone()),
        ] {
            registry.register(collector).expect("register metric");
        }
        Metrics {
            registry,
            records,
            batch_size,
            batch_seconds,
            kafka_to_publish_seconds,
            outage_waits,
            dependency_down,
            store_conflicts,
            consumer_lag,
            rebalances,
            consumer_paused,
            pending_records,
        }
    }

    /// Counts `n` records of `topic` with `outcome`.
    pub fn record(&self, topic: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.records.with_label_values(&[topic, outcome]).inc_by(n);
        }
    }

    /// The count so far of `outcome` records over every topic (for tests and tools).
    pub fn total(&self, outcome: &str) -> u64 {
        use prometheus::core::Collector;
        self.records
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "outcome" && l.value() == outcome)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding gathered families into a String cannot fail.
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
