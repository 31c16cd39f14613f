//! The public listener's routes: the SockJS endpoint (and raw WebSocket) running the STOMP
//! engine, and the inbox REST API, both behind the allowed-origins check. Every transport
//! admits a session the same way: a connection permit, and a pending slot of its client's
//! address until CONNECTED (refusals: 503, or 429 for one address's limit).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::OwnedSemaphorePermit;

use crate::api::{self, ApiState};
use crate::sockjs::Refusal;
use crate::state::{AppState, Origins, PendingFull, PendingSlot};
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

/// The STOMP engine as the SockJS layer's application: a session takes a connection permit
/// and, until it authenticates, a pending slot of its client's address.
#[derive(Clone)]
struct Stomp(AppState);

/// What an admitted session holds: its connection permit, and its pending slot until
/// CONNECTED.
type Admission = (OwnedSemaphorePermit, PendingSlot);

impl Stomp {
    fn refuse(&self, reason: &'static str, status: StatusCode, text: &'static str) -> Refusal {
        self.0.metrics.closes.with_label_values(&[reason]).inc();
        Refusal::new(status, text)
    }
}

impl sockjs::Application for Stomp {
    type Admission = Admission;

    fn admit(&self, headers: &HeaderMap) -> Result<Admission, Refusal> {
        self.admit_from(None, headers)
    }

    fn admit_from(
        &self,
        address: Option<IpAddr>,
        _headers: &HeaderMap,
    ) -> Result<Admission, Refusal> {
        let permit = self
            .0
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                self.refuse(
                    "max_connections",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections",
                )
            })?;
        let pending = self.0.pending.enter(address).map_err(|full| match full {
            PendingFull::Address => self.refuse(
                "max_pending_per_ip",
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address waiting to authenticate",
            ),
            PendingFull::Total => self.refuse(
                "max_pending",
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections waiting to authenticate",
            ),
        })?;
        Ok((permit, pending))
    }

    fn run(
        &self,
        (permit, pending): Admission,
        connection: sockjs::Connection,
    ) -> impl Future<Output = ()> + Send + 'static {
        let state = self.0.clone();
        async move {
            engine::run(
                state,
                connection.transport,
                pending,
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
