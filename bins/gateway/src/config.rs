//! The gateway's configuration: clap arguments, each also read from its environment variable,
//! except the JWT secrets, which come from the environment only.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use clap::Args;
use ipnet::IpNet;
use shared::config::{DisplayArgs, RedisArgs, redact_url};

use crate::api::auth::RestAuth;
use crate::auth::{self, JwtKeys, JwtRules, JwtVerifier};
use crate::hub::SubscribeMode;

/// The environment variable that holds the JWT keys. Never a flag: `ps` shows flags.
pub const JWT_KEYS_ENV: &str = "JWT_KEYS";

/// The default pending limit is never below this (nor above WS_MAX_CONNECTIONS): a tenth of
/// a small instance's connections would refuse a few users reconnecting at once.
const DEFAULT_MIN_PENDING: usize = 64;

/// Gateway configuration. `Debug` redacts the JWT secrets and the Redis password.
#[derive(Clone, Args)]
#[command(
    after_help = "Secret, read from the environment only (there is no flag, which `ps` \
would show): JWT_KEYS, HS256 keys as kid=secret pairs, comma separated (the first is used for \
tokens without a kid; secrets of 32 bytes or more). Pass a Redis password in REDIS_URL through \
the environment too, not --redis-url."
)]
pub struct GatewayConfig {
    /// Address of the public listener (SockJS and raw WebSocket).
    #[arg(
        long = "listen-addr",
        env = "LISTEN_ADDR",
        default_value = "0.0.0.0:8084"
    )]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// MySQL URL of the notification store (the one `ingest` writes) for the REST inbox
    /// API; unset: the API answers 503 and only WebSocket is served. Pass a password
    /// through the environment, not the flag.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Pooled database connections of the REST API.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,

    /// How REST callers authenticate: a bearer JWT, or the `X-User-Id` header set by a
    /// trusted API gateway in front (only safe on a private network).
    #[arg(long = "rest-auth", env = "REST_AUTH", value_enum, default_value_t = RestAuth::Jwt)]
    pub rest_auth: RestAuth,

    #[command(flatten)]
    pub display: DisplayArgs,

    /// Most notifications a SUBSCRIBE with `last-id` recovers from the store; past it, the
    /// newest are sent and the first carries `recovery-truncated:true`.
    #[arg(long = "recovery-max", env = "WS_RECOVERY_MAX", default_value_t = 500)]
    pub recovery_max: u32,

    /// Tests only: awaited around each recovery's store query (not configurable).
    #[arg(skip)]
    pub recovery_hook: Option<crate::sync::recovery::Hook>,

    /// How this instance hears Redis: only its users' channels, or every channel.
    #[arg(long = "redis-subscribe", env = "REDIS_SUBSCRIBE", value_enum, default_value_t = SubscribeMode::PerUser)]
    pub subscribe_mode: SubscribeMode,

    /// HS256 keys as kid=secret pairs, comma separated (the first is used for tokens
    /// without a kid). A secret: read from [`JWT_KEYS_ENV`] when the command line is
    /// parsed, never from a flag. Empty: only WebSocket tickets are accepted.
    #[arg(skip = env_secret(JWT_KEYS_ENV))]
    pub jwt_keys: String,

    /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds (at most 300).
    #[arg(
        long = "jwt-leeway-secs",
        env = "JWT_LEEWAY_SECS",
        default_value_t = auth::jwt::DEFAULT_LEEWAY_SECS,
        value_parser = clap::value_parser!(u64).range(..=auth::jwt::MAX_LEEWAY_SECS)
    )]
    pub jwt_leeway_secs: u64,

    /// When set, a JWT must carry this issuer (`iss`).
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, a JWT must name this audience (`aud`); when not, `aud` is not checked.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Redis key prefix of WebSocket tickets.
    #[arg(long = "ws-ticket-prefix", env = "WS_TICKET_PREFIX", default_value = auth::TICKET_PREFIX)]
    pub ticket_prefix: String,

    /// DEV ONLY: accept STOMP sessions without credentials (user taken from the subscription).
    #[arg(
        long = "insecure-no-auth",
        env = "INSECURE_NO_AUTH",
        default_value_t = false
    )]
    pub insecure_no_auth: bool,

    /// Largest STOMP frame a client may send, in bytes.
    #[arg(long = "max-frame-bytes", env = "WS_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Notifications queued per session before it is closed as a slow consumer.
    #[arg(
        long = "session-queue",
        env = "WS_SESSION_QUEUE",
        default_value_t = 1024
    )]
    pub session_queue: usize,

    /// Output a session may have waiting for its client, in bytes.
    #[arg(
        long = "send-buffer-bytes",
        env = "WS_SEND_BUFFER_BYTES",
        default_value_t = 512 * 1024
    )]
    pub send_buffer_bytes: usize,

    /// Longest time output may wait for room in the send buffer, in milliseconds.
    #[arg(
        long = "send-timeout-ms",
        env = "WS_SEND_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub send_timeout_ms: u64,

    /// Time a new connection has to complete CONNECT, in milliseconds. Until then it holds
    /// a connection permit and counts toward the pending limits below.
    #[arg(
        long = "first-frame-timeout-ms",
        env = "WS_FIRST_FRAME_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub first_frame_timeout_ms: u64,

    /// Longest a client may take to send a request's head (request line and headers), in
    /// milliseconds: from the connection's accept, or for a kept-alive connection from the
    /// end of its previous response. Past it the connection is closed.
    #[arg(
        long = "http-header-timeout-ms",
        env = "HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http_header_timeout_ms: u64,

    /// Longest a client may take to send a request's body (the SockJS `xhr_send` and
    /// `jsonp_send` payloads), in milliseconds from its head; past it the request is answered
    /// 408 and the connection closed. Long-lived responses and WebSockets are not bounded by it.
    #[arg(
        long = "http-body-timeout-ms",
        env = "HTTP_BODY_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http_body_timeout_ms: u64,

    /// Connections one client address may hold open before their first request head has
    /// arrived (IPv6: per /64); past it a new one is closed at once. Counted by the TCP
    /// peer; connections from TRUSTED_PROXIES are not limited. 0: no limit.
    #[arg(
        long = "http-max-unfinished-per-ip",
        env = "HTTP_MAX_UNFINISHED_PER_IP",
        default_value_t = 64
    )]
    pub http_max_unfinished_per_ip: usize,

    /// Connections one client address may have open before their CONNECT completes (IPv6:
    /// per /64); past it a new one is refused with 429. Authenticated connections do not
    /// count, so users behind one NAT are limited only while their handshakes overlap.
    /// 0: no per-address limit.
    #[arg(
        long = "max-pending-per-ip",
        env = "WS_MAX_PENDING_PER_IP",
        default_value_t = 32
    )]
    pub max_pending_per_ip: usize,

    /// Connections that may be open before their CONNECT completes, from all clients;
    /// past it a new one is refused with 503. Unset: a tenth of WS_MAX_CONNECTIONS, at
    /// least 64 (all of them when fewer). 0: no limit.
    #[arg(long = "max-pending-connections", env = "WS_MAX_PENDING_CONNECTIONS")]
    pub max_pending_connections: Option<usize>,

    /// Proxies (CIDRs or addresses, comma separated) trusted to name the client in
    /// `X-Forwarded-For`: from them, the client is the rightmost address there that is not
    /// itself a trusted proxy. From any other peer the header is ignored. Client addresses
    /// bind SockJS sessions and count pending connections. Empty: the TCP peer is the client.
    #[arg(long = "trusted-proxies", env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Browser origins allowed to connect, comma separated (`*`: any). Requests without an
    /// Origin header (non-browser clients) are not restricted.
    #[arg(
        long = "allowed-origins",
        env = "APP_WEBSOCKET_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_origins: Vec<String>,

    /// SockJS: set a `JSESSIONID` cookie (and tell clients to send cookies), so a load
    /// balancer can keep a session's HTTP requests on one instance (Spring's default).
    #[arg(
        long = "sockjs-cookie-needed",
        env = "SOCKJS_COOKIE_NEEDED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub sockjs_cookie_needed: bool,

    /// URL of the SockJS client script that `/iframe.html` loads (iframe-based transports
    /// of browsers without CORS).
    #[arg(
        long = "sockjs-client-url",
        env = "SOCKJS_CLIENT_URL",
        default_value = "/sockjs-client.min.js"
    )]
    pub sockjs_client_url: String,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(
        long = "admin-addr",
        env = "ADMIN_ADDR",
        default_value = "0.0.0.0:9092"
    )]
    pub admin_addr: Option<SocketAddr>,

    /// Open WebSocket connections this instance accepts.
    #[arg(
        long = "max-connections",
        env = "WS_MAX_CONNECTIONS",
        default_value_t = 50_000
    )]
    pub max_connections: usize,

    /// Close a STOMP session (ERROR `JWT expired`) when the JWT it connected with expires.
    #[arg(
        long = "close-on-token-expiry",
        env = "WS_CLOSE_ON_TOKEN_EXPIRY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub close_on_token_expiry: bool,
}

impl GatewayConfig {
    /// Defaults for everything but the listener and Redis (tests and tools start here).
    /// `redis_url`: a node's URL, or a cluster's `redis+cluster://host:port,...`.
    pub fn new(listen_addr: SocketAddr, redis_url: &str) -> GatewayConfig {
        let cluster_nodes = redis_url
            .strip_prefix(shared::redis_link::CLUSTER_SCHEME)
            .map(|nodes| nodes.trim_end_matches('/').to_owned());
        GatewayConfig {
            listen_addr,
            redis: RedisArgs {
                url: cluster_nodes.is_none().then(|| redis_url.to_owned()),
                cluster_nodes,
                host: "localhost".into(),
                port: 6379,
                channel_prefix: shared::channel::DEFAULT_PREFIX.into(),
            },
            database_url: None,
            database_max_connections: 10,
            rest_auth: RestAuth::Jwt,
            display: DisplayArgs {
                time_zone: shared::time::Zone::utc(),
            },
            recovery_max: 500,
            recovery_hook: None,
            subscribe_mode: SubscribeMode::PerUser,
            jwt_keys: String::new(),
            jwt_leeway_secs: auth::jwt::DEFAULT_LEEWAY_SECS,
            jwt_issuer: None,
            jwt_audience: None,
            ticket_prefix: auth::TICKET_PREFIX.into(),
            insecure_no_auth: false,
            max_frame_bytes: 64 * 1024,
            session_queue: 1024,
            send_buffer_bytes: 512 * 1024,
            send_timeout_ms: 10_000,
            first_frame_timeout_ms: 10_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 10_000,
            http_max_unfinished_per_ip: 64,
            max_pending_per_ip: 32,
            max_pending_connections: None,
            trusted_proxies: TrustedProxies::default(),
            allowed_origins: vec!["*".into()],
            sockjs_cookie_needed: true,
            sockjs_client_url: "/sockjs-client.min.js".into(),
            admin_addr: None,
            max_connections: 50_000,
            close_on_token_expiry: true,
        }
    }

    /// The limit on connections not yet authenticated, from all clients (0: none).
    pub fn max_pending(&self) -> usize {
        self.max_pending_connections.unwrap_or_else(|| {
            (self.max_connections / 10).max(self.max_connections.min(DEFAULT_MIN_PENDING))
        })
    }

    /// The JWT verifier these settings describe, validated.
    pub fn jwt_verifier(&self) -> Result<JwtVerifier, String> {
        let keys =
            JwtKeys::parse(&self.jwt_keys).map_err(|err| format!("{JWT_KEYS_ENV}: {err}"))?;
        let rules = JwtRules {
            leeway_secs: self.jwt_leeway_secs,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        };
        JwtVerifier::new(keys, &rules)
    }
}

/// Proxies trusted to name the client in `X-Forwarded-For`: CIDRs or single addresses,
/// comma separated (empty entries, and an empty list, allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedProxies, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither a CIDR (10.0.0.0/8) nor an address"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

/// An environment variable's value, or empty when unset.
fn env_secret(name: &str) -> String {
    std::env::var_os(name)
        .map(|value| value.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every field, but the JWT secrets only by kid and the Redis URL without its password.
impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let GatewayConfig {
            listen_addr,
            redis,
            database_url,
            database_max_connections,
            rest_auth,
            display,
            recovery_max,
            recovery_hook,
            subscribe_mode,
            jwt_keys,
            jwt_leeway_secs,
            jwt_issuer,
            jwt_audience,
            ticket_prefix,
            insecure_no_auth,
            max_frame_bytes,
            session_queue,
            send_buffer_bytes,
            send_timeout_ms,
            first_frame_timeout_ms,
            http_header_timeout_ms,
            http_body_timeout_ms,
            http_max_unfinished_per_ip,
            max_pending_per_ip,
            max_pending_connections,
            trusted_proxies,
            allowed_origins,
            sockjs_cookie_needed,
            sockjs_client_url,
            admin_addr,
            max_connections,
            close_on_token_expiry,
        } = self;
        let jwt_keys: &dyn fmt::Debug = match JwtKeys::parse(jwt_keys) {
            Ok(keys) => &format!("{keys:?}"),
            Err(_) => &"<invalid, redacted>",
        };
        f.debug_struct("GatewayConfig")
            .field("listen_addr", listen_addr)
            .field("redis", redis)
            .field("database_url", &database_url.as_deref().map(redact_url))
            .field("database_max_connections", database_max_connections)
            .field("rest_auth", rest_auth)
            .field("display", display)
            .field("recovery_max", recovery_max)
            .field("recovery_hook", recovery_hook)
            .field("subscribe_mode", subscribe_mode)
            .field("jwt_keys", jwt_keys)
            .field("jwt_leeway_secs", jwt_leeway_secs)
            .field("jwt_issuer", jwt_issuer)
            .field("jwt_audience", jwt_audience)
            .field("ticket_prefix", ticket_prefix)
            .field("insecure_no_auth", insecure_no_auth)
            .field("max_frame_bytes", max_frame_bytes)
            .field("session_queue", session_queue)
            .field("send_buffer_bytes", send_buffer_bytes)
            .field("send_timeout_ms", send_timeout_ms)
            .field("first_frame_timeout_ms", first_frame_timeout_ms)
            .field("http_header_timeout_ms", http_header_timeout_ms)
            .field("http_body_timeout_ms", http_body_timeout_ms)
            .field("http_max_unfinished_per_ip", http_max_unfinished_per_ip)
            .field("max_pending_per_ip", max_pending_per_ip)
            .field("max_pending_connections", max_pending_connections)
            .field("trusted_proxies", trusted_proxies)
            .field("allowed_origins", allowed_origins)
            .field("sockjs_cookie_needed", sockjs_cookie_needed)
            .field("sockjs_client_url", sockjs_client_url)
            .field("admin_addr", admin_addr)
            .field("max_connections", max_connections)
            .field("close_on_token_expiry", close_on_token_expiry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const SECRET: &str = "a-config-test-secret-of-32-bytes-or-more";

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayConfig,
    }

    #[test]
    fn jwt_keys_are_not_a_command_line_flag() {
        let err =
            Cli::try_parse_from(["gateway", "--jwt-keys", &format!("k={SECRET}")]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn jwt_rules_come_from_flags_and_are_bounded() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--jwt-leeway-secs",
            "5",
            "--jwt-issuer",
            "https://auth.example",
            "--jwt-audience",
            "notifications",
        ])
        .unwrap();
        assert_eq!(cli.gateway.jwt_leeway_secs, 5);
        assert_eq!(
            cli.gateway.jwt_issuer.as_deref(),
            Some("https://auth.example")
        );
        assert_eq!(cli.gateway.jwt_audience.as_deref(), Some("notifications"));
        assert!(Cli::try_parse_from(["gateway", "--jwt-leeway-secs", "301"]).is_err());
        let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), "redis://r/");
        assert_eq!(config.jwt_leeway_secs, auth::jwt::DEFAULT_LEEWAY_SECS);
        config.jwt_keys = "k=short".into();
        assert!(config.jwt_verifier().unwrap_err().contains(JWT_KEYS_ENV));
    }

    #[test]
    fn pending_limits_and_trusted_proxies_have_safe_defaults() {
        let cli = Cli::try_parse_from(["gateway"]).unwrap();
        let config = cli.gateway;
        assert_eq!(config.first_frame_timeout_ms, 10_000);
        assert_eq!(config.max_pending_per_ip, 32);
        assert_eq!(config.trusted_proxies, TrustedProxies::default());
        assert_eq!(config.max_pending(), 5_000, "a tenth of 50 000");
        let new = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), "redis://r/");
        assert_eq!(
            (
                new.first_frame_timeout_ms,
                new.max_pending_per_ip,
                new.max_pending()
            ),
            (10_000, 32, 5_000)
        );
        let small = |max_connections| GatewayConfig {
            max_connections,
            ..new.clone()
        };
        assert_eq!(small(300).max_pending(), 64);
        assert_eq!(small(2).max_pending(), 2);
    }

    #[test]
    fn http_timeouts_have_defaults_and_cannot_be_zero() {
        let config = Cli::try_parse_from(["gateway"]).unwrap().gateway;
        let new = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), "redis://r/");
        for c in [&config, &new] {
            assert_eq!(
                (
                    c.http_header_timeout_ms,
                    c.http_body_timeout_ms,
                    c.http_max_unfinished_per_ip
                ),
                (10_000, 10_000, 64)
            );
        }
        let set = Cli::try_parse_from([
            "gateway",
            "--http-header-timeout-ms",
            "1500",
            "--http-body-timeout-ms",
            "2500",
            "--http-max-unfinished-per-ip",
            "0",
        ])
        .unwrap()
        .gateway;
        assert_eq!(
            (
                set.http_header_timeout_ms,
                set.http_body_timeout_ms,
                set.http_max_unfinished_per_ip
            ),
            (1500, 2500, 0)
        );
        // A zero timeout would close every connection: refused at start.
        for flag in ["--http-header-timeout-ms", "--http-body-timeout-ms"] {
            assert!(
                Cli::try_parse_from(["gateway", flag, "0"]).is_err(),
                "{flag}"
            );
        }
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--trusted-proxies",
            "10.0.0.0/8, 192.0.2.7,fd00::/8",
            "--max-pending-connections",
            "0",
        ])
        .unwrap();
        let nets: Vec<String> = cli
            .gateway
            .trusted_proxies
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        assert_eq!(cli.gateway.max_pending(), 0);
        let err = Cli::try_parse_from(["gateway", "--trusted-proxies", "proxy.local"]).unwrap_err();
        assert!(err.to_string().contains("neither a CIDR"), "{err}");
        // An empty setting (as a chart may render it) is no proxy.
        assert_eq!("".parse(), Ok(TrustedProxies::default()));
        assert_eq!(" , ".parse(), Ok(TrustedProxies::default()));
    }

    #[test]
    fn debug_never_shows_the_jwt_secrets_or_the_redis_password() {
        let mut config = GatewayConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "redis://:redis-pass-s3cret@cache:6379/0",
        );
        config.jwt_keys = format!("key-1={SECRET},key-2={SECRET}x");
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("redis-pass-s3cret"), "{debug}");
        assert!(
            debug.contains("key-1") && debug.contains("cache:6379"),
            "{debug}"
        );
        config.jwt_keys = format!("{SECRET}-without-kid");
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{debug}");
    }
}
