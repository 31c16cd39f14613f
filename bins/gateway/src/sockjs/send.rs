//! The sending transports: `xhr_send` (a JSON array of messages; 204) and `jsonp_send`
//! (the same array, raw or form-encoded as `d=...`; `ok`). A payload is bounded in bytes
//! and in time (`Options::body_timeout`, then 408 and the connection closed) while it is
//! read, and its messages reach the session's application in order.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client::Client;
use super::session::{HttpSession, body_response, existing, finish};
use super::{Application, Refusal, Service, framing};

/// JSON escaping's worst case (`\u0000` for one byte).
const ESCAPING: usize = 6;

/// The largest SockJS payload carrying legal messages: JSON escaping can make it up to six
/// times its messages (`\u0000`).
pub(super) fn payload_limit(options: &super::Options) -> usize {
    options
        .max_message_bytes
        .saturating_mul(ESCAPING)
        .saturating_add(1024)
}

/// Reads a sending request's body, within [`payload_limit`] and the body timeout: a body
/// shorter than its `Content-Length`, or trickling in, would otherwise hold the connection
/// for as long as its client likes.
async fn read_payload<A>(service: &Service<A>, body: Body) -> Result<Bytes, Refusal> {
    let read = axum::body::to_bytes(body, payload_limit(&service.options));
    match tokio::time::timeout(service.options.body_timeout, read).await {
        Ok(Ok(payload)) => Ok(payload),
        Ok(Err(_)) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large.",
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "Request body not received in time.",
        )),
    }
}

/// Hands a client payload's messages to the session's application, in order.
async fn forward(session: &HttpSession, payload: &[u8]) -> Result<(), Refusal> {
    let messages = framing::parse_payload(payload)
        .map_err(|err| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, err.reason()))?;
    let Some(to_app) = session.sender() else {
        return Err(Refusal::NOT_FOUND);
    };
    for message in messages {
        if to_app.send(message.into_bytes()).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// A sending request: the body's messages (as `payload` decodes them) go to the session's
/// application; `ok` is the answer, the request's CORS and cookie headers added.
async fn receive<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
    body: Body,
    payload: fn(&HeaderMap, Bytes) -> Vec<u8>,
    ok: fn() -> Response,
) -> Response {
    let result = async {
        // Another client's session is not found, and its body not read.
        let session = existing(&service, id, client)?;
        let body = read_payload(&service, body).await?;
        forward(&session, &payload(&request.headers, body)).await
    }
    .await;
    let response = match result {
        Ok(()) => ok(),
        // The rest of a body given up on may still come: the connection cannot carry
        // another request.
        Err(refused) if refused.status == StatusCode::REQUEST_TIMEOUT => {
            let mut response = refused.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Err(refused) => refused.into_response(),
    };
    finish(&service, &request.headers, response)
}

/// `xhr_send`: client → server messages as a JSON array; 204.
pub(super) async fn xhr_send<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
    body: Body,
) -> Response {
    receive(
        service,
        id,
        client,
        request,
        body,
        |_, body| body.to_vec(),
        || {
            (
                StatusCode::NO_CONTENT,
                [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            )
                .into_response()
        },
    )
    .await
}

/// `jsonp_send`: client → server messages, form-encoded (`d=...`) or raw; `ok`.
pub(super) async fn jsonp_send<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
    body: Body,
) -> Response {
    receive(
        service,
        id,
        client,
        request,
        body,
        |headers, body| {
            let form = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
                v.as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded")
            });
            framing::jsonp_payload(form, &body)
        },
        || body_response("text/plain; charset=UTF-8", Body::from("ok")),
    )
    .await
}
