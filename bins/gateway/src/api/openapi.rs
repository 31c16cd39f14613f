//! The API's OpenAPI 3.1 document, generated from the handlers and their types (so it
//! cannot drift from the code) and served as JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::ApiState;
use super::error::{Done, ErrorBody, Failure};
use super::handlers::{
    self, CategoryCounts, CountBody, CountBy, ListBody, PageBody, SliceBody, TicketBody,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Notification inbox API",
        description = "The user's notifications (newest first), unread counts, read marks and \
                       WebSocket tickets. Every answer is an envelope: `{\"success\":true,\"data\":…}` \
                       or `{\"success\":false,\"error\":{\"code\",\"message\",\"timestamp\"}}`. \
                       Callers authenticate with a bearer JWT (HS256), or, when the gateway runs \
                       behind the portal's API gateway in trusted-header mode, with `X-User-Id`."
    ),
    paths(
        handlers::list,
        handlers::unread,
        handlers::unread_count,
        handlers::read,
        handlers::read_all,
        handlers::remove,
        handlers::ws_ticket
    ),
    components(schemas(
        ListBody, PageBody, SliceBody, CategoryCounts, CountBody, CountBy, TicketBody, Done, Failure, ErrorBody
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as JSON.
pub fn render() -> String {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
}

/// `GET /api/v1/notifications/openapi.json` (no credentials needed).
pub async fn document(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}
