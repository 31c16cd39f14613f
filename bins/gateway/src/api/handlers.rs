//! The inbox endpoints (SPEC 4), each scoped to the authenticated user: another user's
//! notification answers `N001` exactly like a missing one, and is never read or changed.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use shared::category::Category;
use shared::inbox::Filter;
use shared::notification::NotificationJson;
use utoipa::ToSchema;

use super::ApiState;
use super::auth::CurrentUser;
use super::error::{ApiError, Done, Envelope, Failure, ok};
use super::params::{self, Paging};
use crate::sync::events::StateEvent;

/// An offset page, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageBody<'a> {
    pub items: Vec<NotificationJson<'a>>,
    /// 1-based.
    pub page: u32,
    pub size: u32,
    pub total_elements: u64,
    pub total_pages: u64,
}

/// A keyset slice, newest first: pass `nextCursor` as `before` for the next one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SliceBody<'a> {
    pub items: Vec<NotificationJson<'a>>,
    /// `null` after the last slice (always present: it tells a slice from a page).
    #[schema(required = true)]
    pub next_cursor: Option<i64>,
}

/// A listing: an offset page (`page`), or a keyset slice (`before`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ListBody<'a> {
    Page(PageBody<'a>),
    Slice(SliceBody<'a>),
}

/// How `unread/count` groups its answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CountBy {
    Category,
}

/// The unread count: a bare number, or by portal domain (`by=category`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CountBody {
    Total(u64),
    ByCategory(CategoryCounts),
}

/// Unread notifications by portal domain.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct CategoryCounts {
    pub shopping: u64,
    pub blog: u64,
    pub prism: u64,
    pub system: u64,
}

/// A one-time WebSocket ticket (send it as `X-WS-Ticket` on STOMP CONNECT within 30 s).
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketBody {
    pub ticket: String,
}

async fn listing(
    state: &ApiState,
    user: &str,
    filter: Filter,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let inbox = state.inbox()?;
    let listing = params::listing(uri)?;
    let zone = &state.sync.zone;
    Ok(match listing.paging {
        Paging::Page(page) => {
            let found = inbox.page(user, filter, page, listing.size).await?;
            ok(ListBody::Page(PageBody {
                items: found.items.iter().map(|n| n.view(zone)).collect(),
                page,
                size: listing.size,
                total_elements: found.total,
                total_pages: found.total.div_ceil(u64::from(listing.size)),
            }))
        }
        Paging::Before(before) => {
            let slice = inbox.slice(user, filter, before, listing.size).await?;
            ok(ListBody::Slice(SliceBody {
                items: slice.items.iter().map(|n| n.view(zone)).collect(),
                next_cursor: slice.next,
            }))
        }
    })
}

/// The user's notifications, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "inbox",
    params(
        ("page" = Option<u32>, Query, description = "1-based page (default 1); not with `before`", minimum = 1),
        ("size" = Option<u32>, Query, description = "rows per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("before" = Option<i64>, Query, description = "keyset paging: rows older than this id (empty: the newest); answers a slice with `nextCursor`"),
    ),
    responses(
        (status = 200, description = "a page, or a slice with `before`", body = Envelope<ListBody>),
        (status = 400, description = "C002: bad parameter", body = Failure),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
) -> Result<Response, ApiError> {
    listing(&state, &user, Filter::All, &uri).await
}

/// The user's unread notifications, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/notifications/unread",
    tag = "inbox",
    params(
        ("page" = Option<u32>, Query, description = "1-based page (default 1); not with `before`", minimum = 1),
        ("size" = Option<u32>, Query, description = "rows per page, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("before" = Option<i64>, Query, description = "keyset paging: rows older than this id"),
    ),
    responses(
        (status = 200, description = "a page, or a slice with `before`", body = Envelope<ListBody>),
        (status = 400, description = "C002: bad parameter", body = Failure),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn unread(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
) -> Result<Response, ApiError> {
    listing(&state, &user, Filter::Unread, &uri).await
}

/// How many of the user's notifications are unread: a bare number, or by domain.
#[utoipa::path(
    get,
    path = "/api/v1/notifications/unread/count",
    tag = "inbox",
    params(("by" = Option<CountBy>, Query, description = "`category`: counts by portal domain")),
    responses(
        (status = 200, description = "the unread count (a number), or with `by=category` the counts by domain", body = Envelope<CountBody>),
        (status = 400, description = "C002: bad parameter", body = Failure),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn unread_count(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
) -> Result<Response, ApiError> {
    let inbox = state.inbox()?;
    if params::count_by(&uri)?.is_none() {
        return Ok(ok(CountBody::Total(inbox.unread_count(&user).await?)));
    }
    let mut counts = CategoryCounts::default();
    for (category, n) in inbox.unread_by_category(&user).await? {
        *match category {
            Category::Shopping => &mut counts.shopping,
            Category::Blog => &mut counts.blog,
            Category::Prism => &mut counts.prism,
            Category::System => &mut counts.system,
        } = n;
    }
    Ok(ok(CountBody::ByCategory(counts)))
}

/// The `{id}` path segment as a notification id: `C002` in the envelope also when the
/// segment is not text at all (percent-escapes of bytes that are not UTF-8), which the
/// `Path` extractor would answer with a bare 400 of its own.
fn path_id(segment: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    match segment {
        Ok(Path(text)) => params::id(&text),
        Err(_) => params::id(""),
    }
}

/// Marks one notification read (idempotent: `readAt` is set once).
#[utoipa::path(
    put,
    path = "/api/v1/notifications/{id}/read",
    tag = "inbox",
    params(("id" = i64, Path, description = "the notification's id", minimum = 1)),
    responses(
        (status = 200, description = "the notification, READ", body = Envelope<NotificationJson>),
        (status = 400, description = "C002: the id is not a number", body = Failure),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
        (status = 404, description = "N001: no such notification of this user", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let inbox = state.inbox()?;
    let change = inbox
        .mark_read(&user, id, Utc::now())
        .await?
        .ok_or(ApiError::NotFound)?;
    if change.changed {
        let event = StateEvent::Read {
            ids: vec![id],
            unread: change.unread,
        };
        state.sync.events.publish(&user, &event).await;
    }
    Ok(ok(change.value.view(&state.sync.zone)))
}

/// Marks every unread notification of the user read.
#[utoipa::path(
    put,
    path = "/api/v1/notifications/read-all",
    tag = "inbox",
    responses(
        (status = 200, description = "how many notifications changed", body = Envelope<u64>),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn read_all(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
) -> Result<Response, ApiError> {
    let change = state.inbox()?.mark_all_read(&user, Utc::now()).await?;
    if change.changed {
        let event = StateEvent::ReadAll {
            unread: change.unread,
        };
        state.sync.events.publish(&user, &event).await;
    }
    Ok(ok(change.value))
}

/// Deletes one notification.
#[utoipa::path(
    delete,
    path = "/api/v1/notifications/{id}",
    tag = "inbox",
    params(("id" = i64, Path, description = "the notification's id", minimum = 1)),
    responses(
        (status = 200, description = "deleted", body = Done),
        (status = 400, description = "C002: the id is not a number", body = Failure),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
        (status = 404, description = "N001: no such notification of this user", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let change = state
        .inbox()?
        .delete(&user, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let event = StateEvent::Deleted {
        ids: vec![id],
        unread: change.unread,
    };
    state.sync.events.publish(&user, &event).await;
    Ok(axum::Json(Done { success: true }).into_response())
}

/// Issues a one-time WebSocket ticket for STOMP CONNECT (`X-WS-Ticket`), valid 30 s.
#[utoipa::path(
    post,
    path = "/api/v1/notifications/ws-ticket",
    tag = "websocket",
    responses(
        (status = 200, description = "the ticket", body = Envelope<TicketBody>),
        (status = 401, description = "C005: no or bad credentials", body = Failure),
        (status = 503, description = "C007: Redis unavailable", body = Failure),
    ),
    security(("bearer" = []))
)]
pub async fn ws_ticket(
    State(state): State<Arc<ApiState>>,
    CurrentUser(user): CurrentUser,
) -> Result<Response, ApiError> {
    let ticket = state
        .auth
        .issue_ticket(&user)
        .await
        .map_err(|_| ApiError::Unavailable("Tickets are unavailable; retry later"))?;
    Ok(ok(TicketBody { ticket }))
}
