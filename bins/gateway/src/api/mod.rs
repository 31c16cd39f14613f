//! The inbox REST API (SPEC 4) under `/api/v1/notifications`, on the public listener:
//! [`handlers`] (one per endpoint), [`auth`] (who is calling), [`params`] (query and path
//! values), [`error`] (the envelope), [`openapi`] (the contract, generated from the
//! handlers' own types and served at `/api/v1/notifications/openapi.json`).
//!
//! Reads and changes go through `shared::inbox` to MySQL (`DATABASE_URL`, a bounded pool);
//! without a database the API answers 503 (`C007`) and the gateway serves WebSocket only.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod openapi;
pub mod params;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use shared::inbox::Inbox;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Authenticator;
use crate::state::Origins;
use crate::sync::Sync;
use auth::RestAuth;
use error::ApiError;

/// The API's base path.
pub const BASE: &str = "/api/v1/notifications";

/// What the handlers share.
pub struct ApiState {
    /// The store (`None`: no database configured) and the state-event publisher.
    pub sync: Sync,
    pub auth: Authenticator,
    pub rest_auth: RestAuth,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

impl ApiState {
    fn inbox(&self) -> Result<&Inbox, ApiError> {
        self.sync.inbox.as_ref().ok_or(ApiError::Unavailable(
            "The inbox API needs a database (DATABASE_URL); this gateway serves WebSocket only",
        ))
    }
}

/// The API's routes, with CORS for `origins` and the envelope on every error.
pub fn router(state: Arc<ApiState>, origins: &Origins) -> Router {
    let routes = Router::new()
        .route(BASE, get(handlers::list))
        .route(&format!("{BASE}/"), get(handlers::list))
        .route(&format!("{BASE}/unread"), get(handlers::unread))
        .route(&format!("{BASE}/unread/count"), get(handlers::unread_count))
        .route(&format!("{BASE}/read-all"), put(handlers::read_all))
        .route(&format!("{BASE}/ws-ticket"), post(handlers::ws_ticket))
        .route(&format!("{BASE}/openapi.json"), get(openapi::document))
        .route(&format!("{BASE}/{{id}}/read"), put(handlers::read))
        .route(&format!("{BASE}/{{id}}"), delete(handlers::remove))
        .route("/api", any(unknown_path))
        .route("/api/{*rest}", any(unknown_path))
        .with_state(state)
        .layer(axum::middleware::map_response(envelope_for_405));
    routes.layer(cors(origins))
}

/// CORS for browser pages on the allowed origins: bearer tokens travel in a header, so no
/// credentials (cookies) are involved.
fn cors(origins: &Origins) -> CorsLayer {
    let allow = match origins.list() {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::PUT, Method::DELETE, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(auth::USER_HEADER),
        ])
        .max_age(Duration::from_secs(600))
}

async fn unknown_path() -> ApiError {
    ApiError::UnknownPath
}

/// A wrong method keeps its 405 and `Allow`, with the envelope as body.
async fn envelope_for_405(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut answer = ApiError::MethodNotAllowed.into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}
