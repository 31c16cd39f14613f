//! The streaming transports: `xhr_streaming`, `eventsource` and `htmlfile`. One response
//! carries a prelude, then frames as they come, until the stream limit (the client then
//! opens the next), the session's close, or the client going away (which ends the session).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::client::Client;
use super::polling::callback;
use super::session::{Receiver, body_response, finish, open};
use super::{Application, Refusal, Service, framing};

/// A streaming receiver: `prelude`, then frames wrapped by `wrap`, until the stream limit,
/// the session's close, or the client going away (which ends the session).
fn stream<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    headers: &HeaderMap,
    prelude: Vec<u8>,
    wrap: impl Fn(&str) -> String + Send + 'static,
) -> Result<Body, Refusal> {
    let (session, created) = open(&service, id, client, headers)?;
    let heartbeat = service.options.heartbeat;
    let limit = service.options.stream_limit;
    drop(service);
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        if tx.send(Bytes::from(prelude)).await.is_err() {
            return;
        }
        if created && tx.send(Bytes::from(wrap(framing::OPEN))).await.is_err() {
            return;
        }
        let receiver = match Receiver::attach(&session) {
            Ok(receiver) => receiver,
            Err(frame) => {
                let _ = tx.send(Bytes::from(wrap(&frame))).await;
                return;
            }
        };
        let mut written = 0;
        loop {
            let frame = tokio::select! {
                frame = session.next_frame(heartbeat) => frame,
                _ = tx.closed() => return, // aborted: the receiver's drop ends the session
            };
            let closing = frame.starts_with('c');
            let chunk = wrap(&frame);
            written += chunk.len();
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if closing {
                break;
            }
            if let Some(close) = session.close_frame() {
                let _ = tx.send(Bytes::from(wrap(&close))).await;
                break;
            }
            if written >= limit {
                break;
            }
        }
        receiver.done();
    });
    Ok(Body::from_stream(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (Ok::<_, Infallible>(item), rx)) },
    )))
}

fn streaming_response<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
    content_type: &'static str,
    prelude: Vec<u8>,
    wrap: impl Fn(&str) -> String + Send + 'static,
) -> Response {
    let keep = service.clone();
    match stream(service, id, client, &request.headers, prelude, wrap) {
        Ok(body) => finish(&keep, &request.headers, body_response(content_type, body)),
        Err(refused) => refused.into_response(),
    }
}

/// `xhr_streaming`: a 2 KiB `h` prelude (for old browsers), then one frame per line.
pub(super) fn xhr_streaming<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
) -> Response {
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    streaming_response(
        service,
        id,
        client,
        request,
        "application/javascript; charset=UTF-8",
        prelude,
        |frame| format!("{frame}\n"),
    )
}

/// `eventsource`: one `data:` event per frame. The client URI-decodes each event, so `%`
/// and the line breaks are percent-encoded.
pub(super) fn eventsource<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
) -> Response {
    streaming_response(
        service,
        id,
        client,
        request,
        "text/event-stream",
        b"\r\n".to_vec(),
        |frame| {
            let escaped = frame
                .replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
                .replace('\0', "%00");
            format!("data: {escaped}\r\n\r\n")
        },
    )
}

/// `htmlfile`: streaming through a hidden iframe document calling `parent.{callback}`.
pub(super) fn htmlfile<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    client: &Client,
    request: &Parts,
) -> Response {
    let callback = match callback(request) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    let mut prelude = format!(
        "<!doctype html>\n<html><head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n</head><body><h2>Don't panic!</h2>\n  <script>\n    document.domain = document.domain;\n    var c = parent.{callback};\n    c.start();\n    function p(d) {{c.message(d);}};\n    window.onload = function() {{c.stop();}};\n  </script>"
    );
    // Browsers render nothing until 1 KiB has arrived.
    while prelude.len() < 1024 {
        prelude.push(' ');
    }
    prelude.push_str("\r\n");
    streaming_response(
        service,
        id,
        client,
        request,
        "text/html; charset=UTF-8",
        prelude.into_bytes(),
        |frame| {
            let literal = serde_json::to_string(frame).unwrap_or_default();
            format!("<script>\np({literal});\n</script>\r\n")
        },
    )
}
