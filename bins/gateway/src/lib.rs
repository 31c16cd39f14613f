//! `gateway`: delivers notifications to browsers over STOMP and serves the inbox API.
//! This is the application seam: [`Gateway::bind`] binds the listener (port 0 in tests),
//! [`Gateway::run`] serves until the shutdown token fires.
//!
//! Modules: [`stomp`] — the STOMP frame codec and [`session`] — the STOMP session state
//! machine (both pure); [`auth`] — tickets and JWTs; [`hub`] — the Redis relay;
//! [`engine`] — one STOMP connection, independent of transport; [`outlet`] — its bounded
//! output; [`sockjs`] — the SockJS server (every transport, and the raw WebSocket) that
//! runs the engine; [`metrics`] (served on the admin listener).

pub mod auth;
pub mod engine;
pub mod hub;
pub mod metrics;
pub mod outlet;
pub mod queue;
pub mod session;
pub mod sockjs;
pub mod stomp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use shared::channel::Channels;
use shared::config::RedisArgs;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, JwtKeys};
use crate::hub::{Hub, SubscribeMode};
use crate::metrics::GatewayMetrics;
use crate::session::SessionConfig;

/// The STOMP subprotocols the raw WebSocket offers, most recent first.
pub const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// How long open connections may take to finish after shutdown begins.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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

/// Per-connection limits, shared by every transport.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session: SessionConfig,
    pub max_frame_bytes: usize,
    pub max_headers: usize,
    pub first_frame_timeout: Duration,
    pub send_timeout: Duration,
}

/// Which browser origins may connect.
#[derive(Debug, Clone)]
pub struct Origins(Option<Vec<String>>);

impl Origins {
    pub fn new(list: &[String]) -> Origins {
        let list: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            Origins(None)
        } else {
            Origins(Some(list))
        }
    }

    /// Whether a request with these headers may connect.
    pub fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(list) = &self.0 else { return true };
        match headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            None => true,
            Some(origin) => list
                .iter()
                .any(|allowed| allowed == origin.trim_end_matches('/')),
        }
    }
}

/// What every connection task shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: GatewayMetrics,
    pub shutdown: CancellationToken,
    pub origins: Origins,
    connections: Arc<Semaphore>,
}

/// The STOMP engine as the SockJS layer's application: a session takes a connection permit.
#[derive(Clone)]
struct Stomp(AppState);

impl sockjs::Application for Stomp {
    type Admission = OwnedSemaphorePermit;

    fn admit(&self, _headers: &HeaderMap) -> Result<OwnedSemaphorePermit, sockjs::Refusal> {
        self.0.connections.clone().try_acquire_owned().map_err(|_| {
            self.0
                .metrics
                .closes
                .with_label_values(&["max_connections"])
                .inc();
            sockjs::Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "too many connections")
        })
    }

    fn run(
        &self,
        permit: OwnedSemaphorePermit,
        connection: sockjs::Connection,
    ) -> impl Future<Output = ()> + Send + 'static {
        let state = self.0.clone();
        async move {
            engine::run(
                state,
                connection.transport,
                connection.from_client,
                connection.to_client,
            )
            .await;
            drop(permit);
        }
    }
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: AppState,
    sockjs_options: sockjs::Options,
}

impl Gateway {
    /// Binds the public listener and starts the Redis relay.
    pub async fn bind(
        config: &GatewayConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Gateway> {
        let keys = JwtKeys::parse(&config.jwt_keys).map_err(anyhow::Error::msg)?;
        if config.insecure_no_auth {
            tracing::warn!(
                "INSECURE: STOMP sessions are accepted without credentials (--insecure-no-auth)"
            );
        } else if keys.is_empty() {
            tracing::info!("no JWT keys configured: only WebSocket tickets are accepted");
        }
        let redis_url = config.redis.url();
        let metrics = GatewayMetrics::new();
        let channels = Channels::new(config.redis.channel_prefix.clone());
        let hub = Hub::start(
            &redis_url,
            channels,
            config.subscribe_mode,
            config.session_queue,
            metrics.hub.clone(),
            shutdown.clone(),
        )?;
        let redis = ConnectionManager::new_lazy_with_config(
            redis::Client::open(redis_url.as_str())?,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2))),
        )?;
        let sockjs_options = sockjs::Options {
            send_buffer_bytes: config.send_buffer_bytes,
            max_message_bytes: config.max_frame_bytes,
            raw_protocols: &STOMP_PROTOCOLS,
            cookie_needed: config.sockjs_cookie_needed,
            client_url: config.sockjs_client_url.clone(),
            ..sockjs::Options::default()
        };
        let state = AppState {
            hub,
            auth: Authenticator::new(redis, keys, config.ticket_prefix.clone()),
            limits: Limits {
                session: SessionConfig {
                    insecure_no_auth: config.insecure_no_auth,
                    ..SessionConfig::default()
                },
                max_frame_bytes: config.max_frame_bytes,
                max_headers: 64,
                first_frame_timeout: Duration::from_millis(config.first_frame_timeout_ms),
                send_timeout: Duration::from_millis(config.send_timeout_ms),
            },
            metrics,
            shutdown,
            origins: Origins::new(&config.allowed_origins),
            connections: Arc::new(Semaphore::new(config.max_connections)),
        };
        let listener = TcpListener::bind(config.listen_addr).await?;
        let admin = match config.admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Gateway {
            listener,
            admin,
            state,
            sockjs_options,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn metrics(&self) -> GatewayMetrics {
        self.state.metrics.clone()
    }

    /// Serves until the shutdown token fires, then drains for at most the deadline.
    pub async fn run(self) -> std::io::Result<()> {
        let shutdown = self.state.shutdown.clone();
        if let Some(admin) = self.admin {
            let routes = Router::new()
                .route("/metrics", get(metrics_text))
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(readyz))
                .with_state(self.state.clone());
            let stop = shutdown.clone().cancelled_owned();
            tracing::info!(addr = %admin.local_addr()?, "admin listening");
            tokio::spawn(async move {
                if let Err(err) = axum::serve(admin, routes)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(%err, "admin listener failed");
                }
            });
        }
        let endpoint = sockjs::Service::new(Stomp(self.state.clone()), self.sockjs_options);
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/ws/notifications/", get(sockjs::greeting))
            .nest(
                "/ws/notifications",
                sockjs::router(endpoint).layer(axum::middleware::from_fn_with_state(
                    self.state.origins.clone(),
                    check_origin,
                )),
            );
        tracing::info!(addr = %self.listener.local_addr()?, "gateway listening");
        let graceful = shutdown.clone();
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { graceful.cancelled().await });
        match shared::shutdown::drain(&shutdown, SHUTDOWN_DEADLINE, serve.into_future()).await {
            Some(result) => result,
            None => {
                tracing::warn!("connections still open at the shutdown deadline; closing them");
                Ok(())
            }
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// Ready: not shutting down, and the relay is connected to Redis.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.shutdown.is_cancelled() && state.hub.is_connected() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Refuses browsers from origins not allowed (403) before any SockJS or WebSocket work.
async fn check_origin(
    State(origins): State<Origins>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if origins.allows(request.headers()) {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, "origin not allowed").into_response()
    }
}
