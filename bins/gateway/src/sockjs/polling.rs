//! The polling transports: `xhr` (long polling) and `jsonp` (through a script tag). Each
//! request takes one frame: `o` for a new session, else what is pending, else `h` after
//! the heartbeat interval.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::client::Client;
use super::session::{Receiver, body_response, finish, open};
use super::{Application, Refusal, Service, framing};

/// One polling answer: `o` for a new session, else what is pending, else `h` after the
/// heartbeat interval.
async fn poll_frame<A: Application>(
    service: &Arc<Service<A>>,
    id: &str,
    client: &Client,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    let (session, created) = open(service, id, client, headers)?;
    if created {
        return Ok(framing::OPEN.to_owned());
    }
    let receiver = match Receiver::attach(&session) {
        Ok(receiver) => receiver,
        Err(frame) => return Ok(frame),
    };
    let frame = session.next_frame(service.options.heartbeat).await;
    receiver.done();
    Ok(frame)
}

/// `xhr`: long polling, one frame per response.
pub(super) async fn xhr_poll<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    headers: &HeaderMap,
) -> Response {
    match poll_frame(&service, id, client, headers).await {
        Ok(frame) => finish(
            &service,
            headers,
            body_response(
                "application/javascript; charset=UTF-8",
                Body::from(format!("{frame}\n")),
            ),
        ),
        Err(refused) => refused.into_response(),
    }
}

/// The `c` (callback) parameter of the htmlfile and jsonp transports, validated.
pub(super) fn callback(request: &Parts) -> Result<String, Refusal> {
    let query = request.uri.query().unwrap_or_default().as_bytes();
    let mut pairs = form_urlencoded::parse(query);
    let value = pairs
        .clone()
        .find(|(key, _)| key == "c")
        .or_else(|| pairs.find(|(key, _)| key == "callback"))
        .map(|(_, value)| value.into_owned());
    let refuse = |reason: &'static str| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, reason);
    match value {
        Some(c)
            if !c.is_empty()
                && c.len() <= 256
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
        {
            Ok(c)
        }
        Some(_) => Err(refuse("invalid \"callback\" parameter")),
        None => Err(refuse("\"callback\" parameter required")),
    }
}

/// `jsonp`: polling through a script tag.
pub(super) async fn jsonp_poll<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
) -> Response {
    let callback = match callback(request) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    match poll_frame(&service, id, client, &request.headers).await {
        Ok(frame) => {
            let literal = serde_json::to_string(&frame).unwrap_or_default();
            let body = Body::from(format!("/**/{callback}({literal});\r\n"));
            finish(
                &service,
                &request.headers,
                body_response("application/javascript; charset=UTF-8", body),
            )
        }
        Err(refused) => refused.into_response(),
    }
}
