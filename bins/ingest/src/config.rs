//! `ingest run` configuration: clap arguments (flags + environment, seed names where the
//! seed has them) and the validated [`IngestConfig`] the pipeline runs with.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use shared::channel::Channels;
use shared::config::{DatabaseArgs, DisplayArgs, RedisArgs, TopicArgs, redact_url};
use shared::event::TopicMap;
use shared::time::Zone;

/// Kafka connection and consumer group. `Debug` masks secret properties.
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,

    /// Consumer group id.
    #[arg(
        long = "kafka-group-id",
        env = "KAFKA_GROUP_ID",
        default_value = "notification-group"
    )]
    pub group_id: String,

    /// Extra librdkafka properties as key=value (security.protocol, sasl.*, ...). They
    /// override ingest's own settings, the consumer defaults (fetch.wait.max.ms=10,
    /// fetch.min.bytes=1) included.
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("properties", &masked(&self.properties))
            .finish()
    }
}

/// Consumer settings ingest sets unless `KAFKA_PROPERTIES` names them.
///
/// `fetch.wait.max.ms`: the longest a broker may hold a fetch that finds nothing new.
/// Apache Kafka answers a parked fetch as soon as `fetch.min.bytes` arrive, so there the
/// value only sets how often an idle consumer asks again: one fetch request per partition
/// leader it reads from every 10 ms (librdkafka's 500 ms: two a second). Brokers that do
/// not wake a parked fetch on new data (tansu) answer only when the wait is over, and there
/// it is added to every record's latency: with 500 ms, 10 000 events at 1 000/s reached
/// STOMP clients at p50 408 ms, p99 534 ms; with 5 ms at p50 21 ms, p99 42 ms.
/// `fetch.min.bytes=1` (librdkafka's default, stated here): answer as soon as one record
/// is there.
pub const CONSUMER_DEFAULTS: [(&str, &str); 2] =
    [("fetch.wait.max.ms", "10"), ("fetch.min.bytes", "1")];

/// The consumer's extra librdkafka properties: [`CONSUMER_DEFAULTS`], except those the
/// user's `properties` name, then `properties` in their order (a later one wins).
pub fn consumer_properties(properties: &[(String, String)]) -> Vec<(String, String)> {
    CONSUMER_DEFAULTS
        .iter()
        .filter(|(key, _)| !properties.iter().any(|(k, _)| k == key))
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .chain(properties.iter().cloned())
        .collect()
}

/// librdkafka properties with the values of secret ones (passwords, keys, JAAS configs,
/// OAuth tokens) replaced by `***`.
fn masked(properties: &[(String, String)]) -> Vec<(&str, &str)> {
    properties
        .iter()
        .map(|(key, value)| {
            let lower = key.to_ascii_lowercase();
            let secret = ["password", "secret", "jaas", "key", "token"]
                .iter()
                .any(|word| lower.contains(word));
            (key.as_str(), if secret { "***" } else { value.as_str() })
        })
        .collect()
}

fn parse_property(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got {pair:?}"))
}

/// Everything `ingest run` takes.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub display: DisplayArgs,

    /// Pause between retries of a record that failed for a reason of its own.
    #[arg(
        long = "retry-interval-ms",
        env = "APP_KAFKA_RETRY_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub retry_interval_ms: u64,
    /// Retries of such a record before it is dead-lettered.
    #[arg(
        long = "retry-max-attempts",
        env = "APP_KAFKA_RETRY_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub retry_max_attempts: u32,

    /// Records per batch (stored together, then published and committed together).
    #[arg(long = "batch-size", env = "INGEST_BATCH_SIZE", default_value_t = 4000)]
    pub batch_size: usize,
    /// How long a batch waits to fill up once its first record arrived.
    #[arg(
        long = "batch-linger-ms",
        env = "INGEST_BATCH_LINGER_MS",
        default_value_t = 5
    )]
    pub batch_linger_ms: u64,
    /// Concurrent store transactions per batch, each on a pooled connection (at most
    /// --database-max-connections). A batch is split by partition (a partition's records
    /// share one transaction, so their order holds) and each dedup key is written by one
    /// transaction; records repeating a key another transaction writes are stored after
    /// them. More than 1 pays when batches span several partitions (catching up, a busy
    /// instance) and the database has CPU to spare while a transaction waits on its round
    /// trips and commit: a primary with idle cores, a higher commit latency (remote or
    /// replicated storage). On 2 cores shared by ingest, the broker and MariaDB, 2 stored
    /// 1.2–1.4 times the events/s of 1, 4 no more than 2 (README: Benchmark: ingest
    /// throughput).
    #[arg(
        long = "store-parallelism",
        env = "INGEST_STORE_PARALLELISM",
        default_value_t = 2
    )]
    pub store_parallelism: usize,
    /// Record values larger than this are dead-lettered unread.
    #[arg(long = "max-event-bytes", env = "INGEST_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Replication factor of dead-letter topics created at start (-1: the broker's default).
    #[arg(long = "dlt-replication-factor", env = "DLT_REPLICATION_FACTOR", default_value_t = -1, allow_negative_numbers = true)]
    pub dlt_replication_factor: i32,

    #[command(flatten)]
    pub telemetry: shared::config::TelemetryArgs,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(
        long = "admin-addr",
        env = "ADMIN_ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub admin_addr: SocketAddr,
    /// After SIGTERM, the longest wait for the batch being stored, and again for the
    /// batches being published.
    #[arg(
        long = "shutdown-deadline-ms",
        env = "SHUTDOWN_DEADLINE_MS",
        default_value_t = 20_000
    )]
    pub shutdown_deadline_ms: u64,
}

/// The validated configuration of one ingest instance. `Debug` redacts URL passwords and
/// secret Kafka properties.
#[derive(Clone)]
pub struct IngestConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub kafka_properties: Vec<(String, String)>,
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    pub channels: Channels,
    pub topics: TopicMap,
    pub zone: Zone,
    pub retry_interval: Duration,
    pub retry_max_attempts: u32,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub max_event_bytes: usize,
    pub store_parallelism: usize,
    pub dlt_replication_factor: i32,
    /// `None`: no admin listener (tests that do not need one).
    pub admin_addr: Option<SocketAddr>,
    pub shutdown_deadline: Duration,
}

impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("kafka_properties", &masked(&self.kafka_properties))
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("channels", &self.channels)
            .field("topics", &self.topics)
            .field("zone", &self.zone)
            .field("retry_interval", &self.retry_interval)
            .field("retry_max_attempts", &self.retry_max_attempts)
            .field("batch_size", &self.batch_size)
            .field("batch_linger", &self.batch_linger)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("store_parallelism", &self.store_parallelism)
            .field("dlt_replication_factor", &self.dlt_replication_factor)
            .field("admin_addr", &self.admin_addr)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .finish()
    }
}

impl IngestConfig {
    /// A configuration for tests and tools: the command line's defaults for everything but
    /// the three connections, except no admin listener and DLT replication factor 1.
    pub fn new(bootstrap_servers: &str, database_url: &str, redis_url: &str) -> Self {
        IngestConfig {
            bootstrap_servers: bootstrap_servers.to_owned(),
            group_id: "notification-group".to_owned(),
            kafka_properties: Vec::new(),
            database_url: database_url.to_owned(),
            database_max_connections: 10,
            redis_url: redis_url.to_owned(),
            channels: Channels::default(),
            topics: TopicMap::default(),
            zone: Zone::utc(),
            retry_interval: Duration::from_millis(1000),
            retry_max_attempts: 3,
            batch_size: 4000,
            batch_linger: Duration::from_millis(5),
            max_event_bytes: 1024 * 1024,
            store_parallelism: 2,
            dlt_replication_factor: 1,
            admin_addr: None,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

impl TryFrom<RunArgs> for IngestConfig {
    type Error = anyhow::Error;

    fn try_from(args: RunArgs) -> Result<Self, Self::Error> {
        anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
        let store_parallelism = args.store_parallelism.max(1);
        anyhow::ensure!(
            store_parallelism <= args.database.max_connections as usize,
            "--store-parallelism ({store_parallelism}) exceeds --database-max-connections ({}): \
             each concurrent store transaction holds a pooled connection, and one that waits \
             5 s for a connection is taken for a database outage",
            args.database.max_connections
        );
        let topics = args.topics.topic_map().map_err(anyhow::Error::msg)?;
        Ok(IngestConfig {
            bootstrap_servers: args.kafka.bootstrap_servers,
            group_id: args.kafka.group_id,
            kafka_properties: args.kafka.properties,
            database_url: args.database.url,
            database_max_connections: args.database.max_connections,
            redis_url: args.redis.url(),
            channels: Channels::new(args.redis.channel_prefix),
            topics,
            zone: args.display.time_zone,
            retry_interval: Duration::from_millis(args.retry_interval_ms),
            retry_max_attempts: args.retry_max_attempts,
            batch_size: args.batch_size,
            batch_linger: Duration::from_millis(args.batch_linger_ms),
            max_event_bytes: args.max_event_bytes,
            store_parallelism,
            dlt_replication_factor: args.dlt_replication_factor,
            admin_addr: Some(args.admin_addr),
            shutdown_deadline: Duration::from_millis(args.shutdown_deadline_ms),
        })
    }
}

#[cfg(test)]
mod consumer_defaults {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_defaults_apply_when_no_property_names_them() {
        assert_eq!(
            consumer_properties(&pairs(&[("client.id", "ingest-1")])),
            pairs(&[
                ("fetch.wait.max.ms", "10"),
                ("fetch.min.bytes", "1"),
                ("client.id", "ingest-1"),
            ])
        );
    }

    #[test]
    fn kafka_properties_from_the_command_line_override_the_defaults() {
        let command = Command::parse_from([
            "ingest",
            "--kafka-property",
            "fetch.wait.max.ms=500,security.protocol=SASL_SSL",
        ]);
        let config = IngestConfig::try_from(command.run).unwrap();
        assert_eq!(
            consumer_properties(&config.kafka_properties),
            pairs(&[
                ("fetch.min.bytes", "1"),
                ("fetch.wait.max.ms", "500"),
                ("security.protocol", "SASL_SSL"),
            ])
        );
    }
}

#[cfg(test)]
mod store_parallelism {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<IngestConfig> {
        let command = Command::parse_from([&["ingest"], args].concat());
        IngestConfig::try_from(command.run)
    }

    #[test]
    fn parallelism_up_to_the_pool_is_accepted() {
        assert_eq!(config(&[]).unwrap().store_parallelism, 2);
        let args = [
            "--store-parallelism",
            "4",
            "--database-max-connections",
            "4",
        ];
        assert_eq!(config(&args).unwrap().store_parallelism, 4);
    }

    #[test]
    fn parallelism_beyond_the_pool_is_refused() {
        let err = config(&["--store-parallelism", "11"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("exceeds --database-max-connections (10)"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod redaction {
    use super::*;

    #[test]
    fn debug_output_carries_no_secret() {
        let mut config = IngestConfig::new(
            "kafka:9092",
            "mysql://app:db-secret-1@db:3306/n",
            "redis://:redis-secret-2@cache:6379/",
        );
        config.kafka_properties = vec![
            ("sasl.password".into(), "kafka-secret-3".into()),
            (
                "sasl.jaas.config".into(),
                "x password=kafka-secret-4".into(),
            ),
            ("security.protocol".into(), "SASL_SSL".into()),
        ];
        let text = format!("{config:?}");
        for secret in [
            "db-secret-1",
            "redis-secret-2",
            "kafka-secret-3",
            "kafka-secret-4",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("SASL_SSL"), "{text}");
        assert!(text.contains("mysql://app:***@db:3306/n"), "{text}");
    }
}
