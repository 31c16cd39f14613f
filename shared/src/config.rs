//! Reusable clap argument groups. Every field reads an environment variable too; secrets
//! come only from the environment or flags and are redacted in `Debug`.

use std::fmt;

use clap::Args;

use crate::event::{EventKind, TopicMap};
use crate::redis_link::RedisTarget;
use crate::telemetry::LogFormat;
use crate::time::Zone;

/// MySQL / MariaDB connection.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL, e.g. mysql://user:password@host:3306/notification_db
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/notification_db"
    )]
    pub url: String,

    /// Maximum pooled connections.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Redis connection (`REDIS_URL`, or `REDIS_HOST` + `REDIS_PORT` as in the seed). `Debug`
/// redacts the URL's password.
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Full Redis URL; overrides REDIS_HOST/REDIS_PORT.
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL")]
    pub url: Option<String>,
    /// Redis host.
    #[arg(long = "redis-host", env = "REDIS_HOST", default_value = "localhost")]
    pub host: String,
    /// Redis port.
    #[arg(long = "redis-port", env = "REDIS_PORT", default_value_t = 6379)]
    pub port: u16,
    /// Redis Cluster seed nodes (host:port,...); set, both binaries use the cluster and
    /// sharded Pub/Sub (SPUBLISH/SSUBSCRIBE) instead of REDIS_URL.
    #[arg(long = "redis-cluster-nodes", env = "REDIS_CLUSTER_NODES")]
    pub cluster_nodes: Option<String>,
    /// Channel prefix; a user's channel is PREFIX + userId.
    #[arg(long = "redis-channel-prefix", env = "REDIS_CHANNEL_PREFIX", default_value = crate::channel::DEFAULT_PREFIX)]
    pub channel_prefix: String,
}

impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisArgs")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "cluster_nodes",
                &self.cluster_nodes.as_deref().map(|nodes| {
                    nodes
                        .split(',')
                        .map(redact_url)
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            )
            .field("channel_prefix", &self.channel_prefix)
            .finish()
    }
}

impl RedisArgs {
    /// Where Redis is, in the one-string form [`RedisTarget::parse`] reads: the cluster's
    /// `redis+cluster://host:port,...` when REDIS_CLUSTER_NODES is set, else the node's URL.
    pub fn url(&self) -> String {
        match self.cluster_nodes.as_deref() {
            Some(nodes) => format!("{}{}/", crate::redis_link::CLUSTER_SCHEME, nodes.trim()),
            None => self.node_url(),
        }
    }

    /// Where Redis is; an error names what is wrong with REDIS_CLUSTER_NODES.
    pub fn target(&self) -> Result<RedisTarget, String> {
        RedisTarget::parse(&self.url())
    }

    fn node_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("redis://{}:{}/", self.host, self.port))
    }
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log line format (the filter comes from RUST_LOG, default info).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How notifications are rendered.
#[derive(Debug, Clone, Args)]
pub struct DisplayArgs {
    /// IANA time zone of `createdAt`/`readAt` in notification JSON (the original used Asia/Seoul).
    #[arg(
        long = "time-zone",
        env = "NOTIFICATION_TIME_ZONE",
        default_value = "UTC"
    )]
    pub time_zone: Zone,
}

/// Input topic names: the seed's by default, each renamable.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Rename an input topic, as DEFAULT=ACTUAL (e.g. user-signup=auth.user.signed-up).
    /// Repeat the flag, or separate pairs with commas in the environment variable.
    #[arg(long = "topic-rename", env = "TOPIC_RENAMES", value_delimiter = ',', value_parser = parse_rename)]
    pub renames: Vec<(String, String)>,
}

fn parse_rename(pair: &str) -> Result<(String, String), String> {
    let (from, to) = pair
        .split_once('=')
        .ok_or_else(|| format!("expected DEFAULT=ACTUAL, got {pair:?}"))?;
    Ok((from.trim().to_owned(), to.trim().to_owned()))
}

impl TopicArgs {
    /// The topic map these arguments describe, validated.
    pub fn topic_map(&self) -> Result<TopicMap, String> {
        let mut map = TopicMap::default();
        for (from, to) in &self.renames {
            let kind = EventKind::ALL
                .into_iter()
                .find(|kind| kind.default_topic() == from)
                .ok_or_else(|| format!("{from:?} is not one of the default topic names"))?;
            map.set(kind, to.clone());
        }
        map.validate()?;
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        topics: TopicArgs,
        #[command(flatten)]
        redis: RedisArgs,
    }

    #[test]
    fn database_url_password_is_redacted_in_debug() {
        let cli = Cli::parse_from(["x", "--database-url", "mysql://app:s3cret@db:3306/n"]);
        let debug = format!("{:?}", cli.database);
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("mysql://app:***@db:3306/n"), "{debug}");
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/x"),
            "mysql://root@127.0.0.1/x"
        );
    }

    #[test]
    fn redis_url_password_is_redacted_in_debug() {
        let cli = Cli::parse_from(["x", "--redis-url", "redis://app:r3dis-pw@cache:6379/0"]);
        let debug = format!("{:?}", cli.redis);
        assert!(!debug.contains("r3dis-pw"), "{debug}");
        assert!(debug.contains("redis://app:***@cache:6379/0"), "{debug}");
        let cli = Cli::parse_from(["x", "--redis-url", "rediss://:r3dis-pw@cache/"]);
        let debug = format!("{:?}", cli.redis);
        assert!(!debug.contains("r3dis-pw"), "password only: {debug}");
    }

    #[test]
    fn debug_never_shows_a_cluster_password() {
        let args = RedisArgs {
            url: None,
            host: "localhost".into(),
            port: 6379,
            cluster_nodes: Some("redis://:s3cret-pw@a:1,redis://:s3cret-pw@b:2".into()),
            channel_prefix: "notification:".into(),
        };
        let debug = format!("{args:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(debug.contains("a:1") && debug.contains("b:2"), "{debug}");
    }

    #[test]
    fn cluster_nodes_take_precedence_over_the_node_url() {
        let cli = Cli::parse_from(["x", "--redis-url", "redis://one:6379/"]);
        assert_eq!(
            cli.redis.target().unwrap(),
            RedisTarget::Node("redis://one:6379/".into())
        );
        let cli = Cli::parse_from(["x", "--redis-cluster-nodes", "a:7000,b:7001"]);
        assert_eq!(
            cli.redis.target().unwrap(),
            RedisTarget::Cluster(vec!["redis://a:7000/".into(), "redis://b:7001/".into()])
        );
        assert_eq!(
            RedisTarget::parse(&cli.redis.url()).unwrap(),
            cli.redis.target().unwrap()
        );
        let cli = Cli::parse_from(["x", "--redis-cluster-nodes", " "]);
        assert!(cli.redis.target().is_err(), "an empty list is an error");
    }

    #[test]
    fn topic_renames_apply_to_the_default_names() {
        let cli = Cli::parse_from(["x", "--topic-rename", "user-signup=auth.user.signed-up"]);
        let map = cli.topics.topic_map().unwrap();
        assert_eq!(
            map.kind("auth.user.signed-up"),
            Some(EventKind::UserSignedUp)
        );
        let cli = Cli::parse_from(["x", "--topic-rename", "nope=x"]);
        assert!(cli.topics.topic_map().is_err());
    }
}
