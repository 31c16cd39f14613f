//! The gateway's configuration: clap arguments, each also read from its environment variable.

use std::net::SocketAddr;

use clap::Args;
use shared::config::RedisArgs;

use crate::auth;
use crate::hub::SubscribeMode;

/// Gateway configuration.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// Address of the public listener (WebSocket, SockJS, REST).
    #[arg(
        long = "listen-addr",
        env = "LISTEN_ADDR",
        default_value = "0.0.0.0:8084"
    )]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// How this instance hears Redis: only its users' channels, or every channel.
    #[arg(long = "redis-subscribe", env = "REDIS_SUBSCRIBE", value_enum, default_value_t = SubscribeMode::PerUser)]
    pub subscribe_mode: SubscribeMode,

    /// HS256 keys as kid=secret pairs, comma separated (the first is used for tokens
    /// without a kid). From the environment only in production.
    #[arg(
        long = "jwt-keys",
        env = "JWT_KEYS",
        default_value = "",
        hide_default_value = true
    )]
    pub jwt_keys: String,

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

    /// Time a new connection has to complete CONNECT, in milliseconds.
    #[arg(
        long = "first-frame-timeout-ms",
        env = "WS_FIRST_FRAME_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub first_frame_timeout_ms: u64,

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
}

impl GatewayConfig {
    /// Defaults for everything but the listener and Redis (tests and tools start here).
    pub fn new(listen_addr: SocketAddr, redis_url: &str) -> GatewayConfig {
        GatewayConfig {
            listen_addr,
            redis: RedisArgs {
                url: Some(redis_url.to_owned()),
                host: "localhost".into(),
                port: 6379,
                channel_prefix: shared::channel::DEFAULT_PREFIX.into(),
            },
            subscribe_mode: SubscribeMode::PerUser,
            jwt_keys: String::new(),
            ticket_prefix: auth::TICKET_PREFIX.into(),
            insecure_no_auth: false,
            max_frame_bytes: 64 * 1024,
            session_queue: 1024,
            send_buffer_bytes: 512 * 1024,
            send_timeout_ms: 10_000,
            first_frame_timeout_ms: 60_000,
            allowed_origins: vec!["*".into()],
            sockjs_cookie_needed: true,
            sockjs_client_url: "/sockjs-client.min.js".into(),
            admin_addr: None,
            max_connections: 50_000,
        }
    }
}
