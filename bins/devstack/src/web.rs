//! devstack's own HTTP listener (127.0.0.1 only): the demo inbox page, its client bundles
//! from `node_modules`, and the DEV-ONLY endpoints no production binary has:
//!
//! - `GET /dev/config`: where the gateway is, and the topics with their notification types;
//! - `POST /dev/token` `{"userId"}`: a JWT for that user, signed with this run's key;
//! - `POST /dev/produce` `{"topic","userId","count"?,"value"?}`: events into Kafka.
//!
//! Files are read at each request, so an edit of `web/` shows on reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::FutureProducer;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::produce::Request;
use crate::{npm, samples};

/// Lifetime of a minted token. The gateway closes a STOMP session whose token expired;
/// the page mints a new one before then.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

/// The key id of this run's signing key (`JWT_KEYS=devstack=<secret>`).
pub const KID: &str = "devstack";

/// What the dev endpoints need.
pub struct Dev {
    /// devstack's package directory (`web/`, `node_modules/`).
    pub dir: PathBuf,
    /// The gateway's base URL as the page reaches it.
    pub gateway: String,
    /// The Kafka bootstrap address, shown on the page.
    pub kafka: String,
    /// This run's HS256 secret (also the gateway's only key).
    pub jwt_secret: String,
    pub producer: FutureProducer,
}

/// Binds `127.0.0.1:port`.
pub async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|err| {
        anyhow::anyhow!("port {port} (demo page) is taken ({err}): pass --http-port")
    })
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    dev: Arc<Dev>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|s: State<Arc<Dev>>| page(s, "index.html")))
        .route(
            "/index.html",
            get(|s: State<Arc<Dev>>| page(s, "index.html")),
        )
        .route("/app.js", get(|s: State<Arc<Dev>>| page(s, "app.js")))
        .route("/style.css", get(|s: State<Arc<Dev>>| page(s, "style.css")))
        .route("/vendor/{name}", get(vendor))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/dev/config", get(config))
        .route("/dev/token", post(token))
        .route("/dev/produce", post(produce))
        .with_state(dev);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The address a listener is on, for messages.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

async fn page(State(dev): State<Arc<Dev>>, name: &'static str) -> Response {
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/javascript; charset=utf-8",
    };
    file(dev.dir.join("web").join(name), content_type).await
}

async fn vendor(State(dev): State<Arc<Dev>>, Path(name): Path<String>) -> Response {
    match npm::BUNDLES.iter().find(|(url, _)| *url == name) {
        Some((_, path)) => file(dev.dir.join(path), "application/javascript; charset=utf-8").await,
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

async fn file(path: PathBuf, content_type: &'static str) -> Response {
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(err) => error(StatusCode::NOT_FOUND, &format!("{}: {err}", path.display())),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn config(State(dev): State<Arc<Dev>>) -> Json<Value> {
    Json(json!({
        "gateway": dev.gateway,
        "kafka": dev.kafka,
        "topics": samples::topics(),
        "tokenLifetimeSecs": TOKEN_LIFETIME_SECS,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    user_id: String,
}

async fn token(State(dev): State<Arc<Dev>>, Json(request): Json<TokenRequest>) -> Response {
    let user = request.user_id.trim();
    if user.is_empty() || user.chars().count() > 64 || user.starts_with("broadcast:") {
        return error(
            StatusCode::BAD_REQUEST,
            "the user id must have 1 to 64 characters and not start with broadcast:",
        );
    }
    let now = chrono::Utc::now().timestamp();
    let expires = now + TOKEN_LIFETIME_SECS;
    let claims = json!({ "sub": user, "iat": now, "exp": expires });
    let token = gateway::auth::sign_hs256(dev.jwt_secret.as_bytes(), Some(KID), &claims);
    Json(json!({ "token": token, "userId": user, "expiresAt": expires })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProduceRequest {
    topic: String,
    user_id: String,
    count: Option<u32>,
    /// Sent as it is: a string verbatim, anything else as its JSON text.
    value: Option<Value>,
}

async fn produce(State(dev): State<Arc<Dev>>, Json(body): Json<ProduceRequest>) -> Response {
    let value = body.value.map(|v| match v {
        Value::String(text) => text,
        other => other.to_string(),
    });
    let request = match Request::new(&body.topic, body.count.unwrap_or(1), &body.user_id, value) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match request.send(&dev.producer).await {
        Ok(sent) => {
            let sent: Vec<Value> = sent
                .into_iter()
                .map(|(topic, count)| json!({ "topic": topic, "count": count }))
                .collect();
            Json(json!({ "produced": sent })).into_response()
        }
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{err:#}")),
    }
}
