//! The REST envelope (SPEC 4): `{"success":true,"data":…}`, or `{"success":false,"error":
//! {"code","message","timestamp"}}` with the status its code implies. Messages never carry
//! SQL, stack traces or another user's data; the cause of a 500 or 503 goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A successful answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

/// A successful answer without data (`DELETE`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// Always `true`.
    pub success: bool,
}

/// `data` wrapped in the success envelope.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(Envelope {
        success: true,
        data,
    })
    .into_response()
}

/// A failed answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `C001` internal error, `C002` invalid input, `C003` unknown path, `C005`
    /// unauthenticated, `C006` method not allowed, `C007` temporarily unavailable, `N001`
    /// no such notification.
    pub code: &'static str,
    pub message: String,
    /// When the error happened, UTC (`yyyy-MM-ddTHH:mm:ssZ`).
    pub timestamp: String,
}

/// Every way a REST request fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Internal Server Error")]
    Internal,
    #[error("{0}")]
    InvalidInput(String),
    #[error("Not Found")]
    UnknownPath,
    #[error("{0}")]
    Unauthorized(String),
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("Notification not found")]
    NotFound,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Internal => "C001",
            ApiError::InvalidInput(_) => "C002",
            ApiError::UnknownPath => "C003",
            ApiError::Unauthorized(_) => "C005",
            ApiError::MethodNotAllowed => "C006",
            ApiError::Unavailable(_) => "C007",
            ApiError::NotFound => "N001",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownPath | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<shared::inbox::InboxError> for ApiError {
    fn from(err: shared::inbox::InboxError) -> ApiError {
        match &err {
            shared::inbox::InboxError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => {
                tracing::warn!(%err, "inbox database unavailable");
                ApiError::Unavailable("The notification store is unavailable; retry later")
            }
            _ => {
                tracing::error!(%err, "inbox query failed");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Failure {
            success: false,
            error: ErrorBody {
                code: self.code(),
                message: self.to_string(),
                timestamp: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
