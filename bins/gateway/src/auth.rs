//! Who is connecting (SPEC 3): a one-time WebSocket ticket (Redis `ws-ticket:{uuid}`,
//! consumed with GETDEL), or a JWT (HS256, key chosen by `kid`, `sub` = user id, `exp`
//! enforced).

use std::collections::HashMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use serde::Deserialize;
use sha2::Sha256;

use crate::session::Credentials;

/// Redis key prefix of WebSocket tickets.
pub const TICKET_PREFIX: &str = "ws-ticket:";

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
    /// When the credentials expire (a JWT's `exp`, Unix seconds); `None` for tickets, which
    /// are spent once the session is open.
    pub expires_at: Option<u64>,
}

/// HS256 keys by `kid`; secrets never printed.
#[derive(Clone, Default)]
pub struct JwtKeys {
    keys: HashMap<String, Vec<u8>>,
    /// Used for tokens without a `kid`.
    default_kid: Option<String>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("default_kid", &self.default_kid)
            .finish()
    }
}

impl JwtKeys {
    /// Parses `kid=secret,kid2=secret2`; the first is the default.
    pub fn parse(spec: &str) -> Result<JwtKeys, String> {
        let mut keys = JwtKeys::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, secret) = pair
                .split_once('=')
                .ok_or_else(|| "JWT keys must be kid=secret pairs".to_owned())?;
            if secret.len() < 32 {
                return Err(format!(
                    "the secret of kid {kid:?} is shorter than 32 bytes"
                ));
            }
            keys.default_kid.get_or_insert_with(|| kid.to_owned());
            keys.keys.insert(kid.to_owned(), secret.as_bytes().to_vec());
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies an HS256 token and returns its `sub` and `exp`.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<(String, u64), AuthError> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            kid: Option<String>,
        }
        #[derive(Deserialize)]
        struct Claims {
            sub: Option<String>,
            exp: Option<u64>,
            nbf: Option<u64>,
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::InvalidJwt("malformed token"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| AuthError::InvalidJwt("malformed token"))
        };
        let header: Header = serde_json::from_slice(&decode(header)?)
            .map_err(|_| AuthError::InvalidJwt("malformed header"))?;
        if header.alg != "HS256" {
            return Err(AuthError::InvalidJwt("unsupported algorithm"));
        }
        let kid = header.kid.as_ref().or(self.default_kid.as_ref());
        let secret = kid
            .and_then(|kid| self.keys.get(kid))
            .ok_or(AuthError::InvalidJwt("unknown key"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(&token.as_bytes()[..header_payload_len(token)]);
        mac.verify_slice(&decode(signature)?)
            .map_err(|_| AuthError::InvalidJwt("bad signature"))?;
        let claims: Claims = serde_json::from_slice(&decode(payload)?)
            .map_err(|_| AuthError::InvalidJwt("malformed claims"))?;
        let exp = match claims.exp {
            None => return Err(AuthError::InvalidJwt("no exp claim")),
            Some(exp) if exp <= now_secs => return Err(AuthError::Expired),
            Some(exp) => exp,
        };
        if claims.nbf.is_some_and(|nbf| nbf > now_secs) {
            return Err(AuthError::InvalidJwt("not valid yet"));
        }
        claims
            .sub
            .filter(|s| !s.trim().is_empty())
            .map(|sub| (sub, exp))
            .ok_or(AuthError::InvalidJwt("no sub claim"))
    }
}

/// Length of `header.payload` in a token with three parts.
fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// Checks credentials against Redis tickets and JWT keys.
#[derive(Clone)]
pub struct Authenticator {
    redis: ConnectionManager,
    keys: JwtKeys,
    ticket_prefix: String,
}

impl Authenticator {
    pub fn new(redis: ConnectionManager, keys: JwtKeys, ticket_prefix: impl Into<String>) -> Self {
        Authenticator {
            redis,
            keys,
            ticket_prefix: ticket_prefix.into(),
        }
    }

    /// The user the credentials belong to.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::Ticket(ticket) => {
                let key = format!("{}{ticket}", self.ticket_prefix);
                let mut redis = self.redis.clone();
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
            Credentials::Bearer(token) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let (user, exp) = self.keys.verify(token, now)?;
                Ok(Identity {
                    user,
                    expires_at: Some(exp),
                })
            }
        }
    }
}

/// Signs an HS256 token (tests and tools).
pub fn sign_hs256(secret: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
    };
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{head}.{body}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";
    const NOW: u64 = 1_800_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::parse(&format!(
            "key-default={SECRET},key-2=another-secret-that-is-32-bytes-or-more"
        ))
        .unwrap()
    }

    #[test]
    fn a_valid_token_yields_its_subject() {
        let token = sign_hs256(
            SECRET.as_bytes(),
            Some("key-default"),
            &json!({"sub": "user-1", "exp": NOW + 60}),
        );
        assert_eq!(
            keys().verify(&token, NOW),
            Ok(("user-1".to_owned(), NOW + 60))
        );
        let no_kid = sign_hs256(
            SECRET.as_bytes(),
            None,
            &json!({"sub": "user-1", "exp": NOW + 60}),
        );
        assert_eq!(
            keys().verify(&no_kid, NOW),
            Ok(("user-1".to_owned(), NOW + 60)),
            "default kid"
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let k = keys();
        let expired = sign_hs256(
            SECRET.as_bytes(),
            Some("key-default"),
            &json!({"sub": "u", "exp": NOW}),
        );
        assert_eq!(k.verify(&expired, NOW), Err(AuthError::Expired));
        let wrong_key = sign_hs256(
            SECRET.as_bytes(),
            Some("key-2"),
            &json!({"sub": "u", "exp": NOW + 60}),
        );
        assert_eq!(
            k.verify(&wrong_key, NOW),
            Err(AuthError::InvalidJwt("bad signature"))
        );
        let unknown = sign_hs256(
            SECRET.as_bytes(),
            Some("nope"),
            &json!({"sub": "u", "exp": NOW + 60}),
        );
        assert_eq!(
            k.verify(&unknown, NOW),
            Err(AuthError::InvalidJwt("unknown key"))
        );
        let no_exp = sign_hs256(SECRET.as_bytes(), None, &json!({"sub": "u"}));
        assert_eq!(
            k.verify(&no_exp, NOW),
            Err(AuthError::InvalidJwt("no exp claim"))
        );
        let no_sub = sign_hs256(SECRET.as_bytes(), None, &json!({"exp": NOW + 60}));
        assert_eq!(
            k.verify(&no_sub, NOW),
            Err(AuthError::InvalidJwt("no sub claim"))
        );
        assert_eq!(
            k.verify("a.b", NOW),
            Err(AuthError::InvalidJwt("malformed token"))
        );
        // alg=none must never pass.
        let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"u","exp":{}}}"#, NOW + 60));
        assert_eq!(
            k.verify(&format!("{head}.{body}."), NOW),
            Err(AuthError::InvalidJwt("unsupported algorithm"))
        );
        // A tampered payload fails the signature.
        let good = sign_hs256(
            SECRET.as_bytes(),
            None,
            &json!({"sub": "u", "exp": NOW + 60}),
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"admin","exp":{}}}"#, NOW + 60));
        parts[1] = &forged;
        assert_eq!(
            k.verify(&parts.join("."), NOW),
            Err(AuthError::InvalidJwt("bad signature"))
        );
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(JwtKeys::parse("k=short").is_err());
        assert!(!format!("{:?}", keys()).contains(SECRET));
    }
}
