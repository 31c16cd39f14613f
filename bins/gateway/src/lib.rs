//! `gateway`: delivers notifications to browsers over STOMP (SockJS and raw WebSocket).
//! This is the application seam: [`Gateway::bind`] binds the listeners (port 0 in tests),
//! [`Gateway::run`] serves until the shutdown token fires.
//!
//! Crate map, top to bottom: [`config`] — the configuration; [`serve`] — the public
//! listener's HTTP connections (header timeout, peer address, upgrades); [`router`] — the
//! public routes; [`api`] — the inbox REST API;
//! [`sockjs`] — the SockJS server (every transport, and the raw WebSocket) that runs the
//! [`engine`] — one STOMP connection, independent of transport, with its bounded output
//! ([`outlet`], on [`queue`]); [`session`] — the STOMP session state machine and [`stomp`] —
//! the frame codec (both pure); [`auth`] — tickets and JWTs; [`hub`] — the Redis relay;
//! [`state`] — what connections share; [`metrics`] (served on the admin listener).

pub mod api;
pub mod auth;
pub mod config;
pub mod destination;
pub mod engine;
pub mod hub;
pub mod metrics;
pub mod outlet;
pub mod queue;
pub mod router;
pub mod serve;
pub mod session;
pub mod sockjs;
pub mod state;
pub mod stomp;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use shared::channel::Channels;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::api::auth::RestAuth;
use crate::auth::Authenticator;
pub use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::metrics::GatewayMetrics;
use crate::session::SessionConfig;
pub use crate::state::{AppState, Limits, Origins, Pending};
use crate::sync::Sync;
use crate::sync::events::Publisher;
use shared::inbox::Inbox;
use sqlx::mysql::MySqlPoolOptions;

/// The STOMP subprotocols the raw WebSocket offers, most recent first.
pub const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// Longest wait for a pooled database connection before a REST request answers 503.
const DATABASE_WAIT: Duration = Duration::from_secs(3);

/// How long open connections may take to finish after shutdown begins.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    admin: Option<TcpListener>,
    http: serve::HttpLimits,
    state: AppState,
    api: Arc<ApiState>,
    /// The relay's Redis, for readiness answers.
    redis_url: String,
    sockjs_options: sockjs::Options,
}

impl Gateway {
    /// Binds the public listener and starts the Redis relay.
    pub async fn bind(
        config: &GatewayConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Gateway> {
        let jwt = config.jwt_verifier().map_err(anyhow::Error::msg)?;
        if config.insecure_no_auth {
            tracing::warn!(
                "INSECURE: STOMP sessions are accepted without credentials (--insecure-no-auth)"
            );
        } else if jwt.is_empty() {
            tracing::info!("no JWT keys configured: only WebSocket tickets are accepted");
        }
        let redis_target = config.redis.target().map_err(anyhow::Error::msg)?;
        let redis_url = redis_target.to_string();
        let metrics = GatewayMetrics::new();
        let channels = Channels::new(config.redis.channel_prefix.clone());
        let hub = Hub::start(
            &redis_target,
            &channels,
            config.subscribe_mode,
            config.session_queue,
            metrics.hub.clone(),
            shutdown.clone(),
        )?;
        let redis = redis_target.connect_lazy_with(Duration::from_secs(2))?;
        let sockjs_options = sockjs::Options {
            send_buffer_bytes: config.send_buffer_bytes,
            max_message_bytes: config.max_frame_bytes,
            raw_protocols: &STOMP_PROTOCOLS,
            cookie_needed: config.sockjs_cookie_needed,
            trusted_proxies: config.trusted_proxies.0.clone(),
            client_url: config.sockjs_client_url.clone(),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
            ..sockjs::Options::default()
        };
        let auth = Authenticator::new(redis.clone(), jwt, config.ticket_prefix.clone());
        let inbox = match &config.database_url {
            Some(url) => Some(Inbox::new(
                MySqlPoolOptions::new()
                    .max_connections(config.database_max_connections)
                    .acquire_timeout(DATABASE_WAIT)
                    // No ping per checkout: a dead connection fails its one request (503),
                    // and the pool replaces it.
                    .test_before_acquire(false)
                    .connect_lazy(url)?,
            )),
            None => {
                tracing::warn!("no DATABASE_URL: the REST inbox API answers 503");
                None
            }
        };
        if config.rest_auth == RestAuth::TrustedHeader {
            tracing::warn!(
                "REST callers are trusted by their X-User-Id header (--rest-auth trusted-header): \
                 safe only when nothing but the portal's API gateway reaches this listener"
            );
        }
        let sync = Sync {
            inbox,
            events: Publisher::new(
                redis.clone(),
                channels.clone(),
                metrics.state_events.clone(),
            ),
            recovery_max: config.recovery_max,
            zone: config.display.time_zone,
            recovery_hook: config.recovery_hook.clone(),
        };
        let api = Arc::new(ApiState {
            sync: sync.clone(),
            auth: auth.clone(),
            rest_auth: config.rest_auth,
            openapi: api::openapi::render(),
        });
        let state = AppState {
            hub,
            channels,
            sync,
            auth,
            limits: Limits {
                session: SessionConfig {
                    insecure_no_auth: config.insecure_no_auth,
                    ..SessionConfig::default()
                },
                max_frame_bytes: config.max_frame_bytes,
                max_headers: 64,
                first_frame_timeout: Duration::from_millis(config.first_frame_timeout_ms),
                send_timeout: Duration::from_millis(config.send_timeout_ms),
                close_on_token_expiry: config.close_on_token_expiry,
            },
            metrics,
            shutdown,
            origins: Origins::new(&config.allowed_origins),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            pending: Pending::new(config.max_pending_per_ip, config.max_pending()),
        };
        let listener = TcpListener::bind(config.listen_addr).await?;
        let admin = match config.admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let http = serve::HttpLimits {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            max_unfinished_per_ip: config.http_max_unfinished_per_ip,
            exempt: config.trusted_proxies.0.clone(),
        };
        Ok(Gateway {
            listener,
            admin,
            http,
            state,
            api,
            redis_url,
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

    /// The count of connections not yet authenticated.
    pub fn pending(&self) -> Pending {
        self.state.pending.clone()
    }

    /// Serves until the shutdown token fires, then drains for at most the deadline.
    pub async fn run(self) -> std::io::Result<()> {
        let shutdown = self.state.shutdown.clone();
        if let Some(admin) = self.admin {
            let metrics = self.state.metrics.clone();
            let state = self.state.clone();
            // Ready: not shutting down, and the relay connected with every channel subscribed.
            let redis = self.redis_url.clone();
            let ready = move || {
                if state.shutdown.is_cancelled() {
                    Err("shutting down".to_owned())
                } else if !state.hub.is_connected() {
                    Err(format!("redis unreachable or not subscribed yet ({redis})"))
                } else {
                    Ok(())
                }
            };
            let routes = shared::admin::router(move || metrics.render(), ready);
            tracing::info!(addr = %admin.local_addr()?, "admin listening");
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(err) = shared::admin::serve(admin, routes, stop).await {
                    tracing::error!(%err, "admin listener failed");
                }
            });
        }
        let app = router::public(self.state.clone(), self.api, self.sockjs_options);
        tracing::info!(addr = %self.listener.local_addr()?, "gateway listening");
        // Small frames go out at once: no Nagle delay behind the client's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // The peer's address reaches the handlers: sessions are bound to it and pending
        // connections counted by it.
        let serve = serve::serve(
            listener,
            app,
            self.http,
            self.state.metrics.closes.clone(),
            shutdown.clone(),
        );
        if shared::shutdown::drain(&shutdown, SHUTDOWN_DEADLINE, serve)
            .await
            .is_none()
        {
            tracing::warn!("connections still open at the shutdown deadline; closing them");
        }
        Ok(())
    }
}
