//! One-time WebSocket tickets (SPEC 3): Redis `{prefix}{uuid}` holds the user id, 30 s TTL,
//! issued by `POST /api/v1/notifications/ws-ticket` and consumed with GETDEL, so a ticket
//! opens at most one session.

use shared::redis_link::RedisConn;

use super::{AuthError, Identity};

/// Redis key prefix of WebSocket tickets.
pub const TICKET_PREFIX: &str = "ws-ticket:";

/// How long an issued ticket may wait to be spent.
pub const TICKET_TTL_SECS: u64 = 30;

/// Issues a ticket for `user`: a random UUID (v4, 122 random bits).
pub(super) async fn issue(
    redis: &RedisConn,
    prefix: &str,
    user: &str,
) -> Result<String, AuthError> {
    let ticket = uuid::Uuid::new_v4().to_string();
    let mut redis = redis.clone();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}{ticket}"))
        .arg(user)
        .arg("EX")
        .arg(TICKET_TTL_SECS)
        .query_async(&mut redis)
        .await
        .map_err(|err| {
            tracing::warn!(%err, "ticket store failed");
            AuthError::Unavailable
        })?;
    Ok(ticket)
}

/// Spends a ticket: the user it was issued to, or why not.
pub(super) async fn redeem(
    redis: &RedisConn,
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
