//! Who is connecting (SPEC 3): a one-time WebSocket ticket ([`ticket`]), or a JWT
//! ([`jwt`]: HS256 only, verified by the `jsonwebtoken` crate, key chosen by `kid`).

pub mod jwt;
pub mod ticket;

use std::sync::Arc;

use shared::redis_link::RedisConn;

pub use self::jwt::{JwtKeys, JwtRules, JwtVerifier, sign_hs256};
pub use self::ticket::TICKET_PREFIX;
use crate::session::Credentials;

/// Why a connection is refused. The text is what the client's ERROR frame says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid or expired WebSocket ticket")]
    InvalidTicket,
    #[error("Invalid JWT: {0}")]
    InvalidJwt(&'static str),
    #[error("JWT expired")]
    Expired,
    #[error("Authentication service unavailable")]
    Unavailable,
}

/// Who the credentials belong to, and until when they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// When the credentials stop being accepted (a JWT's `exp` plus the verification
    /// leeway, Unix seconds); `None` for tickets, which are spent once the session is open.
    pub expires_at: Option<u64>,
}

/// Checks credentials against Redis tickets and JWT keys.
#[derive(Clone)]
pub struct Authenticator {
    redis: RedisConn,
    jwt: Arc<JwtVerifier>,
    ticket_prefix: String,
}

impl Authenticator {
    /// `jwt` is a [`JwtVerifier`], or bare [`JwtKeys`] verified with the default rules.
    pub fn new(
        redis: RedisConn,
        jwt: impl Into<JwtVerifier>,
        ticket_prefix: impl Into<String>,
    ) -> Self {
        Authenticator {
            redis,
            jwt: Arc::new(jwt.into()),
            ticket_prefix: ticket_prefix.into(),
        }
    }

    /// The user the credentials belong to.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::Ticket(ticket) => {
                ticket::redeem(&self.redis, &self.ticket_prefix, ticket).await
            }
            Credentials::Bearer(token) => self.jwt.verify(token),
        }
    }

    /// Verifies a bearer token (the REST API's credentials).
    pub fn verify_bearer(&self, token: &str) -> Result<Identity, AuthError> {
        self.jwt.verify(token)
    }

    /// Issues a one-time WebSocket ticket for `user`.
    pub async fn issue_ticket(&self, user: &str) -> Result<String, AuthError> {
        ticket::issue(&self.redis, &self.ticket_prefix, user).await
    }
}
