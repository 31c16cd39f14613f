//! Who is calling the REST API: a bearer JWT (the default; the same keys and rules as STOMP
//! CONNECT), or, behind the portal's API gateway, its `X-User-Id` header (trusted-header
//! mode, only safe where nothing but that gateway can reach this listener).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::ApiState;
use super::error::ApiError;

/// How REST callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestAuth {
    /// `Authorization: Bearer <JWT>`.
    Jwt,
    /// `X-User-Id`, set by a trusted API gateway in front.
    TrustedHeader,
}

/// The trusted API gateway's user header.
pub const USER_HEADER: &str = "x-user-id";

/// Longest user id the store holds (`user_id VARCHAR(64)`).
const MAX_USER_ID: usize = 64;

/// The authenticated caller's user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser(pub String);

impl FromRequestParts<Arc<ApiState>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let user = match state.rest_auth {
            RestAuth::Jwt => {
                let token = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().strip_prefix("Bearer "))
                    .map(str::trim)
                    .ok_or_else(|| ApiError::Unauthorized("Bearer token required".into()))?;
                state
                    .auth
                    .verify_bearer(token)
                    .map_err(|err| ApiError::Unauthorized(err.to_string()))?
                    .user
            }
            RestAuth::TrustedHeader => parts
                .headers
                .get(USER_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ApiError::Unauthorized("X-User-Id header required".into()))?
                .to_owned(),
        };
        if user.chars().count() > MAX_USER_ID {
            return Err(ApiError::Unauthorized("User id too long".into()));
        }
        Ok(CurrentUser(user))
    }
}
