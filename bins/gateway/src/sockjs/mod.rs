//! SockJS 0.3.3 server at `/ws/notifications`: `/info`, `/iframe.html`, and the
//! `websocket`, `xhr` + `xhr_send`, `xhr_streaming`, `eventsource`, `htmlfile` and
//! `jsonp` + `jsonp_send` transports, each
//! feeding the transport-independent STOMP [`engine`](crate::engine).
//!
//! HTTP transports share a session registry: a session lives while a receiving request is
//! attached, or for `DISCONNECT_DELAY` after the last one left. Only one receiver at a time
//! (`c[2010,"Another connection still open"]`); a closed session answers
//! `c[3000,"Go away!"]`. A session's undelivered output is bounded (`MAX_PENDING_BYTES`):
//! past it the session is closed as a slow consumer.

pub mod framing;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};

use crate::AppState;
use crate::engine::{self, End, ToClient};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(25);
const DISCONNECT_DELAY: Duration = Duration::from_secs(5);
/// Bytes a streaming response carries before it ends (the client opens a new one).
const STREAM_LIMIT: usize = 128 * 1024;
/// Undelivered output a session may hold while no receiver is attached.
const MAX_PENDING_BYTES: usize = 512 * 1024;
const IFRAME_HTML: &str = "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  <script src=\"/sockjs-client.min.js\"></script>\n  <script>\n    document.domain = document.domain;\n    SockJS.bootstrap_iframe();\n  </script>\n</head>\n<body>\n  <h2>Don't panic!</h2>\n  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n</body>\n</html>";

/// HTTP-transport sessions by id.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Arc<HttpSession>>>>);

struct HttpSession {
    to_engine: mpsc::Sender<Vec<u8>>,
    out: Mutex<Outbox>,
    wake: Notify,
}

#[derive(Default)]
struct Outbox {
    pending: VecDeque<String>,
    pending_bytes: usize,
    closed: Option<(u16, &'static str)>,
    receiver_attached: bool,
}

/// The routes under `/ws/notifications`; requests from origins not allowed get 403.
pub fn routes(app: AppState) -> Router<AppState> {
    Router::new()
        .route("/ws/notifications/info", get(info).options(preflight))
        .route("/ws/notifications/iframe.html", get(iframe))
        .route(
            "/ws/notifications/{server}/{session}/websocket",
            get(websocket),
        )
        .route(
            "/ws/notifications/{server}/{session}/xhr",
            post(xhr_poll).options(preflight),
        )
        .route(
            "/ws/notifications/{server}/{session}/xhr_send",
            post(xhr_send).options(preflight),
        )
        .route(
            "/ws/notifications/{server}/{session}/xhr_streaming",
            post(xhr_streaming).options(preflight),
        )
        .route(
            "/ws/notifications/{server}/{session}/eventsource",
            get(eventsource),
        )
        .route(
            "/ws/notifications/{server}/{session}/htmlfile",
            get(htmlfile),
        )
        .route(
            "/ws/notifications/{server}/{session}/jsonp",
            get(jsonp_poll),
        )
        .route(
            "/ws/notifications/{server}/{session}/jsonp_send",
            post(jsonp_send),
        )
        .layer(axum::middleware::from_fn_with_state(app, check_origin))
}

async fn check_origin(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.origins.allows(request.headers()) {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, "origin not allowed").into_response()
    }
}

/// CORS for SockJS: echo the Origin (or `*`), allow credentials.
fn cors(headers: &HeaderMap, response: &mut Response) {
    let origin = headers
        .get(header::ORIGIN)
        .cloned()
        .filter(|o| o.as_bytes() != b"null")
        .unwrap_or(HeaderValue::from_static("*"));
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
}

fn no_cache(response: &mut Response) {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, no-transform, must-revalidate, max-age=0"),
    );
}

async fn preflight(method: Method, headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(&headers, &mut response);
    let h = response.headers_mut();
    let allowed = if method == Method::OPTIONS {
        "OPTIONS, GET, POST"
    } else {
        "OPTIONS, GET"
    };
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allowed),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    response
}

async fn info(headers: HeaderMap) -> Response {
    let body = serde_json::json!({
        "websocket": true,
        "origins": ["*:*"],
        "cookie_needed": false,
        "entropy": rand_entropy(),
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response();
    cors(&headers, &mut response);
    no_cache(&mut response);
    response
}

fn rand_entropy() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish() as u32
}

async fn iframe(headers: HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        IFRAME_HTML.hash(&mut h);
        h.finish()
    });
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=UTF-8".to_owned()),
            (header::CACHE_CONTROL, "public, max-age=31536000".to_owned()),
            (header::ETAG, etag),
        ],
        IFRAME_HTML,
    )
        .into_response()
}

/// The SockJS `websocket` transport: one SockJS session per socket.
async fn websocket(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(crate::ws::READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(app.limits.max_frame_bytes + 1024)
        .on_upgrade(move |socket| sockjs_websocket(socket, app))
}

async fn sockjs_websocket(socket: WebSocket, app: AppState) {
    let (mut sink, mut source) = socket.split();
    let (client_tx, client_rx) = mpsc::channel::<Vec<u8>>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<ToClient>(crate::ws::TO_CLIENT_QUEUE);
    let engine = tokio::spawn(engine::run(app, "sockjs-websocket", client_rx, out_tx));
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_EVERY,
        HEARTBEAT_EVERY,
    );
    if sink
        .send(Message::Text(framing::OPEN.into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.is_empty() { continue; }
                    let Ok(items) = framing::parse_payload(text.as_bytes()) else { break };
                    for item in items {
                        if client_tx.send(item.into_bytes()).await.is_err() { break; }
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => {}
                _ => break,
            },
            out = out_rx.recv() => match out {
                Some(ToClient::Data(text)) => {
                    // Coalesce what is already queued into one frame.
                    let mut batch = vec![text];
                    while let Ok(ToClient::Data(more)) = out_rx.try_recv() { batch.push(more); }
                    if sink.send(Message::Text(framing::messages(&batch).into())).await.is_err() { break; }
                }
                Some(ToClient::Close(end)) => {
                    let _ = sink.send(Message::Text(close_frame(end).into())).await;
                    break;
                }
                None => break,
            },
            _ = heartbeat.tick() => {
                if sink.send(Message::Text(framing::HEARTBEAT.into())).await.is_err() { break; }
            }
        }
    }
    drop(client_tx);
    let _ = sink.close().await;
    let _ = engine.await;
}

fn close_frame(end: End) -> String {
    if end.is_shutdown() {
        framing::close(1001, "Server shutting down")
    } else {
        framing::close(3000, "Go away!")
    }
}

impl Sessions {
    /// The session `id`, created (with its engine) when new. `true` when just created.
    fn open(&self, app: &AppState, id: &str) -> (Arc<HttpSession>, bool) {
        let mut sessions = self.0.lock().expect("sessions");
        if let Some(existing) = sessions.get(id) {
            return (existing.clone(), false);
        }
        let (client_tx, client_rx) = mpsc::channel::<Vec<u8>>(16);
        let (out_tx, out_rx) = mpsc::channel::<ToClient>(crate::ws::TO_CLIENT_QUEUE);
        let session = Arc::new(HttpSession {
            to_engine: client_tx,
            out: Mutex::new(Outbox::default()),
            wake: Notify::new(),
        });
        sessions.insert(id.to_owned(), session.clone());
        tokio::spawn(engine::run(app.clone(), "sockjs-http", client_rx, out_tx));
        tokio::spawn(collect(
            self.clone(),
            id.to_owned(),
            session.clone(),
            out_rx,
        ));
        (session, true)
    }

    fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        self.0.lock().expect("sessions").get(id).cloned()
    }

    fn remove(&self, id: &str) {
        self.0.lock().expect("sessions").remove(id);
    }
}

/// Moves engine output into the session's outbox; expires the session when it is closed,
/// or when no receiver came back within the disconnect delay.
async fn collect(
    sessions: Sessions,
    id: String,
    session: Arc<HttpSession>,
    mut out_rx: mpsc::Receiver<ToClient>,
) {
    loop {
        let attached = session.out.lock().expect("outbox").receiver_attached;
        let next = if attached {
            out_rx.recv().await
        } else {
            match tokio::time::timeout(DISCONNECT_DELAY, out_rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let still_detached = !session.out.lock().expect("outbox").receiver_attached;
                    if still_detached {
                        break; // the client went away
                    }
                    continue;
                }
            }
        };
        // Decide under the lock, act (and await) after it.
        let (stop, linger) = {
            let mut out = session.out.lock().expect("outbox");
            match next {
                Some(ToClient::Data(text)) => {
                    out.pending_bytes += text.len();
                    out.pending.push_back(text);
                    if out.pending_bytes > MAX_PENDING_BYTES {
                        out.closed = Some((3000, "Go away!"));
                        (true, false)
                    } else {
                        (false, false)
                    }
                }
                Some(ToClient::Close(end)) => {
                    out.closed = Some(if end.is_shutdown() {
                        (1001, "Server shutting down")
                    } else {
                        (3000, "Go away!")
                    });
                    (true, true)
                }
                None => (true, false),
            }
        };
        session.wake.notify_waiters();
        if linger {
            // Keep answering "Go away!" for a while, then forget the session.
            tokio::time::sleep(DISCONNECT_DELAY).await;
        }
        if stop {
            break;
        }
    }
    sessions.remove(&id);
}

/// Takes what is pending: messages, or the close frame.
fn drain(session: &HttpSession) -> Option<String> {
    let mut out = session.out.lock().expect("outbox");
    if !out.pending.is_empty() {
        let batch: Vec<String> = out.pending.drain(..).collect();
        out.pending_bytes = 0;
        return Some(framing::messages(&batch));
    }
    out.closed
        .map(|(code, reason)| framing::close(code, reason))
}

/// Marks a receiver attached; `Err(frame)` when another is (or the session is closed).
fn attach(session: &HttpSession) -> Result<(), String> {
    let mut out = session.out.lock().expect("outbox");
    if let Some((code, reason)) = out.closed {
        if out.pending.is_empty() {
            return Err(framing::close(code, reason));
        }
    }
    if out.receiver_attached {
        return Err(framing::close(2010, "Another connection still open"));
    }
    out.receiver_attached = true;
    Ok(())
}

fn detach(session: &HttpSession) {
    session.out.lock().expect("outbox").receiver_attached = false;
}

fn text_response(headers: &HeaderMap, content_type: &'static str, body: Body) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    cors(headers, &mut response);
    no_cache(&mut response);
    response
}

/// `xhr`: long polling; one frame per response.
async fn xhr_poll(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let frame = poll_frame(&app, &id).await;
    let body = Body::from(format!("{frame}\n"));
    text_response(&headers, "application/javascript; charset=UTF-8", body)
}

/// One polling answer: `o` for a new session, else what is pending, else `h` after the
/// heartbeat interval.
async fn poll_frame(app: &AppState, id: &str) -> String {
    let (session, created) = app.sockjs.open(app, id);
    if created {
        return framing::OPEN.to_owned();
    }
    if let Err(frame) = attach(&session) {
        return frame;
    }
    let frame = loop {
        let notified = session.wake.notified();
        if let Some(frame) = drain(&session) {
            break frame;
        }
        if tokio::time::timeout(HEARTBEAT_EVERY, notified)
            .await
            .is_err()
        {
            break framing::HEARTBEAT.to_owned();
        }
    };
    detach(&session);
    frame
}

/// The `c` (callback) parameter of the htmlfile and jsonp transports, validated.
fn callback(query: &HashMap<String, String>) -> Result<String, &'static str> {
    match query.get("c").or_else(|| query.get("callback")) {
        Some(c)
            if !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.') =>
        {
            Ok(c.clone())
        }
        Some(_) => Err("invalid \"callback\" parameter"),
        None => Err("\"callback\" parameter required"),
    }
}

/// `jsonp`: polling through a script tag.
async fn jsonp_poll(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let callback = match callback(&query) {
        Ok(c) => c,
        Err(reason) => return (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response(),
    };
    let frame = poll_frame(&app, &id).await;
    let literal = serde_json::to_string(&frame).unwrap_or_default();
    let body = Body::from(format!("/**/{callback}({literal});\r\n"));
    text_response(&headers, "application/javascript; charset=UTF-8", body)
}

/// `jsonp_send`: client → server messages, form-encoded (`d=...`) or raw.
async fn jsonp_send(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = app.sockjs.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let payload = if form {
        match body.strip_prefix(b"d=") {
            Some(encoded) => percent_decode(encoded),
            None => Vec::new(),
        }
    } else {
        body.to_vec()
    };
    if let Err(err) = forward(&session, &payload).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
    }
    text_response(&headers, "text/plain; charset=UTF-8", Body::from("ok"))
}

/// Form decoding: `+` is a space, `%XX` a byte.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                let hex = std::str::from_utf8(&input[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

/// `htmlfile`: streaming through a hidden iframe document.
async fn htmlfile(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let callback = match callback(&query) {
        Ok(c) => c,
        Err(reason) => return (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response(),
    };
    let mut prelude = format!(
        "<!doctype html>\n<html><head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n</head><body><h2>Don't panic!</h2>\n  <script>\n    document.domain = document.domain;\n    var c = parent.{callback};\n    c.start();\n    function p(d) {{c.message(d);}};\n    window.onload = function() {{c.stop();}};\n  </script>"
    );
    // Browsers render nothing until 1 KiB has arrived.
    while prelude.len() < 1024 {
        prelude.push(' ');
    }
    prelude.push_str("\r\n");
    let body = stream(&app, &id, prelude.into_bytes(), |frame| {
        let literal = serde_json::to_string(frame).unwrap_or_default();
        format!("<script>\np({literal});\n</script>\r\n")
    });
    text_response(&headers, "text/html; charset=UTF-8", body)
}

/// Hands a client payload's messages to the session's engine, in order.
async fn forward(session: &HttpSession, payload: &[u8]) -> Result<(), framing::PayloadError> {
    for item in framing::parse_payload(payload)? {
        if session.to_engine.send(item.into_bytes()).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// `xhr_send`: client → server messages.
async fn xhr_send(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = app.sockjs.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(err) = forward(&session, &body).await {
        let mut response = (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
        cors(&headers, &mut response);
        return response;
    }
    let mut response = (
        StatusCode::NO_CONTENT,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
    )
        .into_response();
    cors(&headers, &mut response);
    no_cache(&mut response);
    response
}

/// A streaming receiver: `prelude`, then frames wrapped by `wrap`, until the stream limit.
fn stream(
    app: &AppState,
    id: &str,
    prelude: Vec<u8>,
    wrap: impl Fn(&str) -> String + Send + 'static,
) -> Body {
    let (session, created) = app.sockjs.open(app, id);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from(prelude))).await;
        if created {
            let _ = tx.send(Ok(Bytes::from(wrap(framing::OPEN)))).await;
        }
        if let Err(frame) = attach(&session) {
            let _ = tx.send(Ok(Bytes::from(wrap(&frame)))).await;
            return;
        }
        let mut written = 0;
        loop {
            let notified = session.wake.notified();
            let frame = match drain(&session) {
                Some(frame) => frame,
                None => match tokio::time::timeout(HEARTBEAT_EVERY, notified).await {
                    Ok(()) => continue,
                    Err(_) => framing::HEARTBEAT.to_owned(),
                },
            };
            let closing = frame.starts_with('c');
            let chunk = wrap(&frame);
            written += chunk.len();
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() || closing || written >= STREAM_LIMIT
            {
                break;
            }
        }
        detach(&session);
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn xhr_streaming(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    let body = stream(&app, &id, prelude, |frame| format!("{frame}\n"));
    text_response(&headers, "application/javascript; charset=UTF-8", body)
}

async fn eventsource(
    State(app): State<AppState>,
    Path((_server, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    // The client URI-decodes each event: percent-encode '%' and the line breaks.
    let body = stream(&app, &id, b"\r\n".to_vec(), |frame| {
        let escaped = frame
            .replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
            .replace('\0', "%00");
        format!("data: {escaped}\r\n\r\n")
    });
    text_response(&headers, "text/event-stream; charset=UTF-8", body)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(percent_decode(b"%5B%22a+b%22%5D"), b"[\"a b\"]");
        assert_eq!(percent_decode(b"100%"), b"100%");
        assert_eq!(percent_decode(b"%zz"), b"%zz");
    }
}
