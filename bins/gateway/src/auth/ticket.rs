//! One-time WebSocket tickets (SPEC 3): Redis `{prefix}{uuid}` holds the user id, 30 s TTL,
//! consumed with GETDEL so a ticket opens at most one session.

use redis::aio::ConnectionManager;

use super::{AuthError, Identity};

/// Redis key prefix of WebSocket tickets.
pub const TICKET_PREFIX: &str = "ws-ticket:";

/// Spends a ticket: the user it was issued to, or why not.
pub(super) async fn redeem(
    redis: &ConnectionManager,
    prefix: &str,
    ticket: &str,
) -> Result<Identity, AuthError> {
    let key = format!("{prefix}{ticket}");
    let mut redis = redis.clone();
    let user: Option<String> = redis::cmd("GETDEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .map_err(|err| {
            tracing::warn!(%err, "ticket lookup failed");
            AuthError::Unavailable
        })?;
    user.filter(|u| !u.is_empty())
        .map(|user| Identity {
            user,
            expires_at: None,
        })
        .ok_or(AuthError::InvalidTicket)
}
