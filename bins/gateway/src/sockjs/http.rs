//! The HTTP transports and their sessions: polling (`xhr`, `jsonp`), streaming
//! (`xhr_streaming`, `eventsource`, `htmlfile`) and sending (`xhr_send`, `jsonp_send`).
//!
//! A session is created by its first receiving request. Its output waits in the
//! application's [`Inlet`] (bounded in bytes by the outlet) until a receiver takes it; the
//! budget comes back when a receiver takes the text. A watcher forgets the session once it
//! has had no receiver, or has been closed, for the disconnect delay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::websocket::sockjs_close;
use super::{Application, Connection, Refusal, Service, cors, framing, no_cache};
use crate::outlet::{self, Inlet, ToClient};
use crate::queue;

/// Client messages queued toward the application.
const FROM_CLIENT_QUEUE: usize = 16;
/// JSON escaping's worst case (`\u0000` for one byte).
const ESCAPING: usize = 6;
/// Receiver aborted by the client: the session ends.
const INTERRUPTED: (u16, &str) = (1002, "Connection interrupted");
const ANOTHER_CONNECTION: (u16, &str) = (2010, "Another connection still open");

pub(super) struct HttpSession {
    /// The application's input; taken (closing it) when the session ends.
    to_app: Mutex<Option<queue::Sender<Vec<u8>>>>,
    /// The application's output; locked by the one attached receiver.
    inlet: tokio::sync::Mutex<Inlet>,
    state: Mutex<SessionState>,
    /// Attach, detach and close.
    changed: Notify,
}

struct SessionState {
    closed: Option<(u16, &'static str)>,
    attached: bool,
    /// When the last receiver left, or when the session closed.
    since: Instant,
}

impl HttpSession {
    /// Marks a receiver attached; `Err(frame)` when another is, or the session is closed.
    fn attach(&self) -> Result<(), String> {
        let mut state = self.state.lock().expect("session state");
        if let Some((code, reason)) = state.closed {
            return Err(framing::close(code, reason));
        }
        if state.attached {
            let (code, reason) = ANOTHER_CONNECTION;
            return Err(framing::close(code, reason));
        }
        state.attached = true;
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    fn detach(&self) {
        let mut state = self.state.lock().expect("session state");
        state.attached = false;
        state.since = Instant::now();
        drop(state);
        self.changed.notify_waiters();
    }

    /// Ends the session (first reason wins) and closes the application's input.
    fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.state.lock().expect("session state");
        if state.closed.is_none() {
            state.closed = Some((code, reason));
            state.since = Instant::now();
        }
        drop(state);
        self.to_app.lock().expect("to_app").take();
        self.changed.notify_waiters();
    }

    fn close_frame(&self) -> Option<String> {
        let state = self.state.lock().expect("session state");
        state
            .closed
            .map(|(code, reason)| framing::close(code, reason))
    }

    /// The next frame for an attached receiver: what the application has queued (as one
    /// `a[...]`), its close, or `h` after `wait` of silence.
    async fn next_frame(&self, wait: Duration) -> String {
        let mut inlet = self.inlet.lock().await;
        let first = match tokio::time::timeout(wait, inlet.recv()).await {
            Err(_) => return framing::HEARTBEAT.to_owned(),
            Ok(first) => first,
        };
        let mut batch = Vec::new();
        let mut end = None;
        let mut item = first;
        loop {
            match item {
                Some(ToClient::Data(text)) => batch.push(text),
                Some(ToClient::Close(why)) => {
                    end = Some(sockjs_close(why));
                    break;
                }
                None => {
                    end = Some(sockjs_close(outlet::End::Done));
                    break;
                }
            }
            match inlet.try_recv() {
                Some(next) => item = Some(next),
                None => break,
            }
        }
        if let Some((code, reason)) = end {
            self.close(code, reason);
        }
        if batch.is_empty() {
            return self
                .close_frame()
                .unwrap_or_else(|| framing::HEARTBEAT.to_owned());
        }
        framing::messages(&batch)
    }

    fn sender(&self) -> Option<queue::Sender<Vec<u8>>> {
        self.to_app.lock().expect("to_app").clone()
    }
}

/// An attached receiver; dropped before [`Receiver::done`] (the client aborted the request)
/// it ends the session.
struct Receiver<'a> {
    session: &'a HttpSession,
    done: bool,
}

impl Receiver<'_> {
    fn done(mut self) {
        self.done = true;
        self.session.detach();
    }
}

impl Drop for Receiver<'_> {
    fn drop(&mut self) {
        if !self.done {
            let (code, reason) = INTERRUPTED;
            self.session.close(code, reason);
            self.session.detach();
        }
    }
}

/// The session `id`, created (and its application started) when new: `(session, created)`.
fn open<A: Application>(
    service: &Arc<Service<A>>,
    id: &str,
    headers: &HeaderMap,
) -> Result<(Arc<HttpSession>, bool), Refusal> {
    let mut sessions = service.sessions.lock().expect("sessions");
    if let Some(existing) = sessions.get(id) {
        return Ok((existing.clone(), false));
    }
    let admission = service.app.admit(headers)?;
    let (client_tx, from_client) = queue::bounded(FROM_CLIENT_QUEUE, queue::one);
    let (to_client, inlet) = outlet::channel(service.options.send_buffer_bytes);
    let session = Arc::new(HttpSession {
        to_app: Mutex::new(Some(client_tx)),
        inlet: tokio::sync::Mutex::new(inlet),
        state: Mutex::new(SessionState {
            closed: None,
            attached: false,
            since: Instant::now(),
        }),
        changed: Notify::new(),
    });
    sessions.insert(id.to_owned(), session.clone());
    drop(sessions);
    tokio::spawn(service.app.run(
        admission,
        Connection {
            transport: "sockjs-http",
            from_client,
            to_client,
        },
    ));
    tokio::spawn(watch(service.clone(), id.to_owned(), session.clone()));
    Ok((session, true))
}

/// Forgets the session once it has been without a receiver, or closed, for the delay.
async fn watch<A: Application>(service: Arc<Service<A>>, id: String, session: Arc<HttpSession>) {
    let delay = service.options.disconnect_delay;
    loop {
        let mut changed = pin!(session.changed.notified());
        changed.as_mut().enable();
        let deadline = {
            let state = session.state.lock().expect("session state");
            (!state.attached || state.closed.is_some()).then_some(state.since + delay)
        };
        match deadline {
            None => changed.await,
            Some(deadline) if deadline <= Instant::now() => break,
            Some(deadline) => {
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
    // Gone: the client did not come back (or the session was closed long enough ago).
    session.close(3000, "Go away!");
    let mut sessions = service.sessions.lock().expect("sessions");
    if sessions.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
        sessions.remove(&id);
    }
}

/// Headers every transport response carries.
fn finish<A>(service: &Service<A>, request: &HeaderMap, mut response: Response) -> Response {
    cors(request, &mut response);
    no_cache(&mut response);
    if service.options.cookie_needed {
        let value = jsessionid(request).unwrap_or("dummy");
        if let Ok(cookie) = HeaderValue::from_str(&format!("JSESSIONID={value}; path=/")) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// The request's `JSESSIONID` cookie, when it is a plain token.
fn jsessionid(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("JSESSIONID="))
        .find(|value| {
            !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
        })
}

fn body_response(content_type: &'static str, body: Body) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// One polling answer: `o` for a new session, else what is pending, else `h` after the
/// heartbeat interval.
async fn poll_frame<A: Application>(
    service: &Arc<Service<A>>,
    id: &str,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    let (session, created) = open(service, id, headers)?;
    if created {
        return Ok(framing::OPEN.to_owned());
    }
    if let Err(frame) = session.attach() {
        return Ok(frame);
    }
    let receiver = Receiver {
        session: &session,
        done: false,
    };
    let frame = session.next_frame(service.options.heartbeat).await;
    receiver.done();
    Ok(frame)
}

/// `xhr`: long polling, one frame per response.
pub(super) async fn xhr_poll<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    headers: &HeaderMap,
) -> Response {
    match poll_frame(&service, id, headers).await {
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
fn callback(request: &Parts) -> Result<String, Refusal> {
    let query: HashMap<String, String> = request
        .uri
        .query()
        .map(|q| {
            url_decode_pairs(q.as_bytes())
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let refuse = |reason: &'static str| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, reason);
    match query.get("c").or_else(|| query.get("callback")) {
        Some(c)
            if !c.is_empty()
                && c.len() <= 256
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
        {
            Ok(c.clone())
        }
        Some(_) => Err(refuse("invalid \"callback\" parameter")),
        None => Err(refuse("\"callback\" parameter required")),
    }
}

/// `jsonp`: polling through a script tag.
pub(super) async fn jsonp_poll<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    request: &Parts,
) -> Response {
    let callback = match callback(request) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    match poll_frame(&service, id, &request.headers).await {
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

/// The largest SockJS payload carrying legal messages: JSON escaping can make it up to six
/// times its messages (`\u0000`).
pub(super) fn payload_limit(options: &super::Options) -> usize {
    options
        .max_message_bytes
        .saturating_mul(ESCAPING)
        .saturating_add(1024)
}

/// Reads a sending request's body, within [`payload_limit`].
async fn read_payload<A>(service: &Service<A>, body: Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, payload_limit(&service.options))
        .await
        .map_err(|_| Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large."))
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

fn existing<A>(service: &Service<A>, id: &str) -> Result<Arc<HttpSession>, Refusal> {
    service
        .sessions
        .lock()
        .expect("sessions")
        .get(id)
        .cloned()
        .ok_or(Refusal::NOT_FOUND)
}

/// A sending request: the body's messages (as `payload` decodes them) go to the session's
/// application; `ok` is the answer, the request's CORS and cookie headers added.
async fn receive<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    request: &Parts,
    body: Body,
    payload: fn(&HeaderMap, Bytes) -> Vec<u8>,
    ok: fn() -> Response,
) -> Response {
    let result = async {
        let session = existing(&service, id)?;
        let body = read_payload(&service, body).await?;
        forward(&session, &payload(&request.headers, body)).await
    }
    .await;
    let response = match result {
        Ok(()) => ok(),
        Err(refused) => refused.into_response(),
    };
    finish(&service, &request.headers, response)
}

/// `xhr_send`: client → server messages as a JSON array; 204.
pub(super) async fn xhr_send<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    request: &Parts,
    body: Body,
) -> Response {
    receive(
        service,
        id,
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
    request: &Parts,
    body: Body,
) -> Response {
    receive(
        service,
        id,
        request,
        body,
        |headers, body| {
            let form = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
                v.as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded")
            });
            if !form {
                return body.to_vec();
            }
            url_decode_pairs(&body)
                .into_iter()
                .find(|(key, _)| key == b"d")
                .map(|(_, value)| value)
                .unwrap_or_default()
        },
        || body_response("text/plain; charset=UTF-8", Body::from("ok")),
    )
    .await
}

/// `a=1&b=%20x` → pairs, with `+` as a space and `%XX` as a byte.
fn url_decode_pairs(input: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut halves = pair.splitn(2, |&b| b == b'=');
            let key = percent_decode(halves.next().unwrap_or_default());
            let value = percent_decode(halves.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

/// Form decoding: `+` is a space, `%XX` a byte; anything else is kept.
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

/// A streaming receiver: `prelude`, then frames wrapped by `wrap`, until the stream limit,
/// the session's close, or the client going away (which ends the session).
fn stream<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    headers: &HeaderMap,
    prelude: Vec<u8>,
    wrap: impl Fn(&str) -> String + Send + 'static,
) -> Result<Body, Refusal> {
    let (session, created) = open(&service, id, headers)?;
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
        if let Err(frame) = session.attach() {
            let _ = tx.send(Bytes::from(wrap(&frame))).await;
            return;
        }
        let receiver = Receiver {
            session: &session,
            done: false,
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
    request: &Parts,
    content_type: &'static str,
    prelude: Vec<u8>,
    wrap: impl Fn(&str) -> String + Send + 'static,
) -> Response {
    let keep = service.clone();
    match stream(service, id, &request.headers, prelude, wrap) {
        Ok(body) => finish(&keep, &request.headers, body_response(content_type, body)),
        Err(refused) => refused.into_response(),
    }
}

/// `xhr_streaming`: a 2 KiB `h` prelude (for old browsers), then one frame per line.
pub(super) fn xhr_streaming<A: Application>(
    service: Arc<Service<A>>,
    id: &str,
    request: &Parts,
) -> Response {
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    streaming_response(
        service,
        id,
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
    request: &Parts,
) -> Response {
    streaming_response(
        service,
        id,
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
        request,
        "text/html; charset=UTF-8",
        prelude.into_bytes(),
        |frame| {
            let literal = serde_json::to_string(frame).unwrap_or_default();
            format!("<script>\np({literal});\n</script>\r\n")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(percent_decode(b"%5B%22a+b%22%5D"), b"[\"a b\"]");
        assert_eq!(percent_decode(b"100%"), b"100%");
        assert_eq!(percent_decode(b"%zz"), b"%zz");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(
            url_decode_pairs(b"p=p&d=%5B%22x%22%5D"),
            vec![
                (b"p".to_vec(), b"p".to_vec()),
                (b"d".to_vec(), b"[\"x\"]".to_vec())
            ]
        );
    }

    #[test]
    fn jsessionid_is_echoed_only_when_plain() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=b; JSESSIONID=abcdef".parse().unwrap());
        assert_eq!(jsessionid(&headers), Some("abcdef"));
        headers.insert(header::COOKIE, "JSESSIONID=a,b".parse().unwrap());
        assert_eq!(jsessionid(&headers), None);
    }
}
