//! JWT bearer tokens (SPEC 3): HS256 only, the key chosen by the header's `kid` (the first
//! key for tokens without one), `sub` = user id, `exp` required, `nbf` honoured, `iss` and
//! `aud` required and checked when configured. Signatures and claims are checked by the
//! `jsonwebtoken` crate; this module chooses the key and names the reason of a refusal.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

use super::{AuthError, Identity};

/// Clock skew tolerated on `exp` and `nbf` by default: enough for hosts kept in sync by NTP
/// and a token's trip from its issuer, small next to token lifetimes of minutes.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The largest leeway accepted; more would quietly extend every token's life.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Shortest secret accepted: the size of an HS256 signature (RFC 7518, 3.2).
const MIN_SECRET_BYTES: usize = 32;

/// The only algorithm accepted; the header's `alg` never chooses.
const ALGORITHM: Algorithm = Algorithm::HS256;

/// HS256 keys by `kid`; secrets never printed.
#[derive(Clone, Default)]
pub struct JwtKeys {
    keys: HashMap<String, DecodingKey>,
    /// Used for tokens without a `kid`.
    default_kid: Option<String>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("JwtKeys")
            .field("kids", &kids)
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
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "the secret of kid {kid:?} is shorter than {MIN_SECRET_BYTES} bytes"
                ));
            }
            keys.default_kid.get_or_insert_with(|| kid.to_owned());
            keys.keys
                .insert(kid.to_owned(), DecodingKey::from_secret(secret.as_bytes()));
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most [`MAX_LEEWAY_SECS`]).
    pub leeway_secs: u64,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must be (or contain) it. When not, `aud` is ignored.
    pub audience: Option<String>,
}

impl Default for JwtRules {
    fn default() -> Self {
        JwtRules {
            leeway_secs: DEFAULT_LEEWAY_SECS,
            issuer: None,
            audience: None,
        }
    }
}

/// Verifies bearer tokens: the keys and the rules.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: JwtKeys,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .finish()
    }
}

/// Bare keys are verified with the default rules.
impl From<JwtKeys> for JwtVerifier {
    fn from(keys: JwtKeys) -> Self {
        JwtVerifier::new(keys, &JwtRules::default()).expect("the default rules are valid")
    }
}

impl JwtVerifier {
    pub fn new(keys: JwtKeys, rules: &JwtRules) -> Result<JwtVerifier, String> {
        if rules.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "the JWT leeway of {} s is above the maximum of {MAX_LEEWAY_SECS} s",
                rules.leeway_secs
            ));
        }
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = rules.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = non_blank(&rules.issuer) {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match non_blank(&rules.audience) {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // The crate would refuse every token that names an audience.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { keys, validation })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a token against the current time: its `sub` and `exp`, or why not.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        #[derive(Deserialize)]
        struct Claims {
            // Optional here so that a missing claim is named by the validation.
            sub: Option<String>,
            exp: Option<u64>,
        }
        let header = jsonwebtoken::decode_header(token).map_err(header_refusal)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::InvalidJwt("unsupported algorithm"));
        }
        let key = header
            .kid
            .as_ref()
            .or(self.keys.default_kid.as_ref())
            .and_then(|kid| self.keys.keys.get(kid))
            .ok_or(AuthError::InvalidJwt("unknown key"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(refusal)?
            .claims;
        let user = claims
            .sub
            .filter(|sub| !sub.trim().is_empty())
            .ok_or(AuthError::InvalidJwt("no sub claim"))?;
        let exp = claims.exp.ok_or(AuthError::InvalidJwt("no exp claim"))?;
        Ok(Identity {
            user,
            // Accepted until `exp` + leeway, so a session lasts as long as the token would.
            expires_at: Some(exp.saturating_add(self.validation.leeway)),
        })
    }
}

fn non_blank(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Why a header was refused. A well-formed header the crate cannot represent (such as
/// `alg: none`) is unsupported rather than malformed.
fn header_refusal(err: Error) -> AuthError {
    match err.kind() {
        ErrorKind::Json(json) if json.is_data() => AuthError::InvalidJwt("unsupported header"),
        ErrorKind::Json(_) => AuthError::InvalidJwt("malformed header"),
        _ => refusal(err),
    }
}

/// Why a token was refused, in the words of the client's ERROR frame.
fn refusal(err: Error) -> AuthError {
    AuthError::InvalidJwt(match err.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "malformed token",
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => "malformed claims",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => "unsupported algorithm",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "no exp claim",
            "sub" => "no sub claim",
            "iss" => "no iss claim",
            "aud" => "no aud claim",
            _ => "missing claim",
        },
        ErrorKind::ImmatureSignature => "not valid yet",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        _ => "refused",
    })
}

/// Signs an HS256 token (tests and tools).
pub fn sign_hs256(secret: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(ALGORITHM);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signs with a secret of any length")
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::get_current_timestamp;
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";
    const OTHER_SECRET: &str = "another-secret-that-is-32-bytes-or-more";

    fn keys() -> JwtKeys {
        JwtKeys::parse(&format!("key-default={SECRET},key-2={OTHER_SECRET}")).unwrap()
    }

    fn verifier(rules: JwtRules) -> JwtVerifier {
        JwtVerifier::new(keys(), &rules).unwrap()
    }

    /// Verifies with the default rules.
    fn verify(token: &str) -> Result<Identity, AuthError> {
        JwtVerifier::from(keys()).verify(token)
    }

    fn signed(claims: Value) -> String {
        sign_hs256(SECRET.as_bytes(), Some("key-default"), &claims)
    }

    /// What a token of `user` expiring at `exp` yields under the default leeway.
    fn user(user: &str, exp: u64) -> Result<Identity, AuthError> {
        Ok(Identity {
            user: user.to_owned(),
            expires_at: Some(exp + DEFAULT_LEEWAY_SECS),
        })
    }

    /// A token with any header, signed with HMAC-SHA256 and `secret`.
    fn with_header(header: &str, claims: &Value, secret: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = EncodingKey::from_secret(secret.as_bytes());
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, ALGORITHM).unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn a_valid_token_yields_its_subject_and_expiry() {
        let exp = get_current_timestamp() + 60;
        assert_eq!(
            verify(&signed(json!({"sub": "user-1", "exp": exp}))),
            user("user-1", exp)
        );
        let no_kid = sign_hs256(
            SECRET.as_bytes(),
            None,
            &json!({"sub": "user-1", "exp": exp}),
        );
        assert_eq!(verify(&no_kid), user("user-1", exp), "default kid");
        let second = sign_hs256(
            OTHER_SECRET.as_bytes(),
            Some("key-2"),
            &json!({"sub": "user-2", "exp": exp}),
        );
        assert_eq!(verify(&second), user("user-2", exp), "second kid");
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let now = get_current_timestamp();
        let refused = |reason| Err(AuthError::InvalidJwt(reason));
        let expired = signed(json!({"sub": "u", "exp": now - 3600}));
        assert_eq!(verify(&expired), Err(AuthError::Expired));
        let wrong_key = sign_hs256(
            SECRET.as_bytes(),
            Some("key-2"),
            &json!({"sub": "u", "exp": now + 60}),
        );
        assert_eq!(verify(&wrong_key), refused("bad signature"));
        let unknown = sign_hs256(
            SECRET.as_bytes(),
            Some("nope"),
            &json!({"sub": "u", "exp": now + 60}),
        );
        assert_eq!(verify(&unknown), refused("unknown key"));
        assert_eq!(
            verify(&signed(json!({"sub": "u"}))),
            refused("no exp claim")
        );
        assert_eq!(
            verify(&signed(json!({"exp": now + 60}))),
            refused("no sub claim")
        );
        assert_eq!(
            verify(&signed(json!({"sub": "  ", "exp": now + 60}))),
            refused("no sub claim")
        );
        assert_eq!(
            verify(&signed(json!({"sub": "u", "exp": "tomorrow"}))),
            refused("malformed claims")
        );
        assert_eq!(verify("a.b"), refused("malformed token"));
        assert_eq!(verify("a.b.c.d"), refused("malformed token"));
        assert_eq!(verify(""), refused("malformed token"));
        // A tampered payload fails the signature.
        let good = signed(json!({"sub": "u", "exp": now + 60}));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": now + 60}).to_string());
        parts[1] = &forged;
        assert_eq!(verify(&parts.join(".")), refused("bad signature"));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let claims = json!({"sub": "u", "exp": get_current_timestamp() + 60});
        // alg=none, unsigned: not even representable by the crate.
        let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(
            verify(&format!("{head}.{body}.")),
            Err(AuthError::InvalidJwt("unsupported header"))
        );
        // The same secret under a stronger HMAC is still another algorithm.
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("key-default".into());
            let token = jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                verify(&token),
                Err(AuthError::InvalidJwt("unsupported algorithm")),
                "{alg:?}"
            );
        }
        // RS256 "verified" with the HMAC secret as the public key: key confusion.
        let confused = with_header(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, SECRET);
        assert_eq!(
            verify(&confused),
            Err(AuthError::InvalidJwt("unsupported algorithm"))
        );
        // The helper itself signs valid tokens.
        let honest = with_header(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET);
        assert!(verify(&honest).is_ok());
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() {
        let now = get_current_timestamp();
        let just_past = now - DEFAULT_LEEWAY_SECS / 3;
        assert_eq!(
            verify(&signed(json!({"sub": "u", "exp": just_past}))),
            user("u", just_past),
            "within the leeway"
        );
        let long_past = now - 2 * DEFAULT_LEEWAY_SECS;
        assert_eq!(
            verify(&signed(json!({"sub": "u", "exp": long_past}))),
            Err(AuthError::Expired),
            "beyond the leeway"
        );
        let strict = verifier(JwtRules {
            leeway_secs: 0,
            ..JwtRules::default()
        });
        assert_eq!(
            strict.verify(&signed(json!({"sub": "u", "exp": just_past}))),
            Err(AuthError::Expired),
            "no leeway"
        );
    }

    #[test]
    fn a_leeway_above_the_maximum_is_refused() {
        let rules = JwtRules {
            leeway_secs: MAX_LEEWAY_SECS + 1,
            ..JwtRules::default()
        };
        assert!(JwtVerifier::new(keys(), &rules).is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let now = get_current_timestamp();
        let future = signed(json!({"sub": "u", "exp": now + 7200, "nbf": now + 3600}));
        assert_eq!(verify(&future), Err(AuthError::InvalidJwt("not valid yet")));
        let started = signed(json!({"sub": "u", "exp": now + 7200, "nbf": now - 10}));
        assert_eq!(verify(&started), user("u", now + 7200));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = verifier(JwtRules {
            issuer: Some("https://auth.example".into()),
            audience: Some("notifications".into()),
            ..JwtRules::default()
        });
        let exp = get_current_timestamp() + 60;
        let token = |claims: Value| strict.verify(&signed(claims));
        let refused = |reason| Err(AuthError::InvalidJwt(reason));
        assert_eq!(
            token(
                json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": "notifications"})
            ),
            user("u", exp)
        );
        assert_eq!(
            token(
                json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": ["billing", "notifications"]})
            ),
            user("u", exp),
            "one of several audiences"
        );
        assert_eq!(
            token(
                json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "notifications"})
            ),
            refused("wrong issuer")
        );
        assert_eq!(
            token(json!({"sub": "u", "exp": exp, "iss": "https://auth.example", "aud": "billing"})),
            refused("wrong audience")
        );
        assert_eq!(
            token(json!({"sub": "u", "exp": exp, "aud": "notifications"})),
            refused("no iss claim")
        );
        assert_eq!(
            token(json!({"sub": "u", "exp": exp, "iss": "https://auth.example"})),
            refused("no aud claim")
        );
    }

    #[test]
    fn issuer_and_audience_are_ignored_when_not_configured() {
        let exp = get_current_timestamp() + 60;
        let token = signed(json!({"sub": "u", "exp": exp, "iss": "anyone", "aud": "anything"}));
        assert_eq!(verify(&token), user("u", exp));
        let blank = verifier(JwtRules {
            issuer: Some(" ".into()),
            audience: Some(String::new()),
            ..JwtRules::default()
        });
        assert_eq!(blank.verify(&token), user("u", exp), "blank means unset");
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(JwtKeys::parse("k=short").is_err());
        assert!(JwtKeys::parse("no-equals-sign").is_err());
        for debug in [
            format!("{:?}", keys()),
            format!("{:?}", JwtVerifier::from(keys())),
        ] {
            assert!(
                !debug.contains(SECRET) && !debug.contains(OTHER_SECRET),
                "{debug}"
            );
            assert!(debug.contains("key-default"), "{debug}");
        }
    }
}
