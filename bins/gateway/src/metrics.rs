//! Gateway metrics (Prometheus) on one registry per instance. Labels are transports,
//! commands and close reasons — never a user id.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::hub::HubMetrics;

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    pub sessions: IntGaugeVec,
    pub frames_in: IntCounterVec,
    pub frames_out: IntCounterVec,
    pub bytes_in: IntCounter,
    pub errors: IntCounter,
    pub closes: IntCounterVec,
    /// From the relay receiving a notification from Redis to its MESSAGE frame entering
    /// the session's send buffer (written to the socket as the client reads).
    pub delivery_latency: Histogram,
    /// MESSAGE frames sent (the `MESSAGE` series of `frames_out`).
    pub messages_out: IntCounter,
    pub recoveries: IntCounter,
    pub recovered: IntCounter,
    pub recoveries_truncated: IntCounter,
    pub state_events: IntCounter,
    pub hub: HubMetrics,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("metric")
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric")
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let registry = Registry::new_custom(Some("gateway".into()), None).expect("registry");
        let frames_out = counter_vec(
            "frames_out_total",
            "STOMP frames sent, by command",
            "command",
        );
        let metrics = GatewayMetrics {
            messages_out: frames_out.with_label_values(&["MESSAGE"]),
            recoveries: counter(
                "recoveries_total",
                "Subscriptions with last-id answered from the store",
            ),
            recovered: counter(
                "recovered_messages_total",
                "Notifications sent by recoveries",
            ),
            recoveries_truncated: counter(
                "recoveries_truncated_total",
                "Recoveries cut by WS_RECOVERY_MAX (the client reloads)",
            ),
            state_events: counter(
                "state_events_published_total",
                "Read-state events published to users' channels",
            ),
            sessions: IntGaugeVec::new(
                Opts::new("sessions", "Open sessions by transport"),
                &["transport"],
            )
            .expect("metric"),
            frames_in: counter_vec(
                "frames_in_total",
                "STOMP frames received, by command",
                "command",
            ),
            frames_out,
            bytes_in: counter("bytes_in_total", "Bytes received from clients"),
            errors: counter("error_frames_total", "ERROR frames sent"),
            closes: counter_vec("closes_total", "Connections ended, by reason", "reason"),
            delivery_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "delivery_latency_seconds",
                    "Redis message received -> MESSAGE frame queued to the client's socket",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )
            .expect("metric"),
            hub: HubMetrics {
                delivered: counter("deliveries_total", "Notifications handed to sessions"),
                slow_consumers: counter(
                    "slow_consumers_total",
                    "Sessions dropped because their queue was full",
                ),
                redis_reconnects: counter("redis_reconnects_total", "Relay reconnections to Redis"),
                subscriptions: IntGauge::new(
                    "redis_subscriptions",
                    "Channels (or the pattern) subscribed on the relay's Redis connection",
                )
                .expect("metric"),
                broadcast_deliveries: counter(
                    "broadcast_deliveries_total",
                    "Broadcast messages (time deals) handed to sessions",
                ),
                fanout_seconds: Histogram::with_opts(
                    HistogramOpts::new(
                        "broadcast_fanout_seconds",
                        "Time spent handing one broadcast message to its sessions",
                    )
                    .buckets(vec![0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                )
                .expect("metric"),
                gaps: counter(
                    "subscription_gaps_total",
                    "Sessions told to recover from the store after their channel's Redis \
                     subscription was lost and restored",
                ),
                broadcasts_dropped: counter(
                    "broadcasts_dropped_total",
                    "Broadcast messages dropped because the fan-out queue was full",
                ),
            },
            registry,
        };
        for collector in [
            Box::new(metrics.sessions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.frames_in.clone()),
            Box::new(metrics.frames_out.clone()),
            Box::new(metrics.bytes_in.clone()),
            Box::new(metrics.errors.clone()),
            Box::new(metrics.closes.clone()),
            Box::new(metrics.delivery_latency.clone()),
            Box::new(metrics.recoveries.clone()),
            Box::new(metrics.recovered.clone()),
            Box::new(metrics.recoveries_truncated.clone()),
            Box::new(metrics.state_events.clone()),
            Box::new(metrics.hub.delivered.clone()),
            Box::new(metrics.hub.slow_consumers.clone()),
            Box::new(metrics.hub.redis_reconnects.clone()),
            Box::new(metrics.hub.subscriptions.clone()),
            Box::new(metrics.hub.broadcast_deliveries.clone()),
            Box::new(metrics.hub.fanout_seconds.clone()),
            Box::new(metrics.hub.broadcasts_dropped.clone()),
            Box::new(metrics.hub.gaps.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("register metric");
        }
        metrics
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}
