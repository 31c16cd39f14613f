//! The public listener's routes: the SockJS endpoint (and raw WebSocket) running the STOMP
//! engine, and the inbox REST API, both behind the allowed-origins check.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::OwnedSemaphorePermit;

use crate::api::{self, ApiState};
use crate::state::{AppState, Origins};
use crate::{engine, sockjs};

/// The public routes.
pub fn public(state: AppState, api: Arc<ApiState>, options: sockjs::Options) -> Router {
    let endpoint = sockjs::Service::new(Stomp(state.clone()), options);
    let rest = api::router(api, &state.origins).layer(axum::middleware::from_fn_with_state(
        state.origins.clone(),
        check_origin,
    ));
    Router::new()
        .merge(rest)
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws/notifications/", get(sockjs::greeting))
        .nest(
            "/ws/notifications",
            sockjs::router(endpoint).layer(axum::middleware::from_fn_with_state(
                state.origins.clone(),
                check_origin,
            )),
        )
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
