//! librdkafka's logs and errors, made readable: while the broker is unreachable, librdkafka
//! reports every failed connect of every client (dozens of `BrokerTransportFailure` and
//! `AllBrokersDown` lines a second). Those become one warning per backoff step (1 s,
//! doubling to a minute) that names the bootstrap address and the fix; connect failures
//! go to debug; everything else keeps its level.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

const FIRST_STEP: Duration = Duration::from_secs(1);
const LAST_STEP: Duration = Duration::from_secs(60);

/// Rate-limits "broker unreachable" reports; shared by a process's Kafka clients.
#[derive(Debug)]
pub struct KafkaLog {
    bootstrap: String,
    /// When the next report may go out, and the step after it.
    next: Mutex<Option<(Instant, Duration)>>,
}

impl KafkaLog {
    pub fn new(bootstrap: &str) -> KafkaLog {
        KafkaLog {
            bootstrap: bootstrap.to_owned(),
            next: Mutex::new(None),
        }
    }

    /// Whether an unreachable-broker report is due now (and schedules the next).
    fn due(&self, now: Instant) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        match *next {
            Some((at, _)) if now < at => false,
            Some((at, step)) if now < at + LAST_STEP * 2 => {
                let step = (step * 2).min(LAST_STEP);
                *next = Some((now + step, step));
                true
            }
            // The first report, or the first after a long quiet spell: start over.
            _ => {
                *next = Some((now + FIRST_STEP, FIRST_STEP));
                true
            }
        }
    }

    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "FAIL" {
            tracing::debug!(target: "librdkafka", facility, "{message}");
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    pub fn error(&self, error: KafkaError, reason: &str) {
        let unreachable = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
            )
        );
        if !unreachable {
            tracing::error!(target: "librdkafka", %error, "{reason}");
        } else if self.due(Instant::now()) {
            tracing::warn!(
                kafka = %self.bootstrap,
                %reason,
                "no Kafka broker: nothing is consumed until one answers \
                 (start the broker, or point KAFKA_BOOTSTRAP_SERVERS at it)"
            );
        }
    }
}

/// A client context that only logs through [`KafkaLog`] (the DLT producer's).
pub struct QuietContext(pub std::sync::Arc<KafkaLog>);

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_reports_back_off_and_start_over_after_a_quiet_spell() {
        let log = KafkaLog::new("127.0.0.1:9092");
        let t0 = Instant::now();
        let due: Vec<u64> = (0..200u64)
            .filter(|ms| log.due(t0 + Duration::from_millis(ms * 100)))
            .collect();
        // 0 s, then 1 s, 2 s, 4 s, 8 s later (at 0, 1, 3, 7, 15 s): 20 s of errors.
        assert_eq!(due, vec![0, 10, 30, 70, 150]);
        assert!(
            log.due(t0 + Duration::from_secs(600)),
            "a new outage reports at once"
        );
        assert!(!log.due(t0 + Duration::from_millis(600_500)));
    }
}
