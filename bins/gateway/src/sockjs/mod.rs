//! A SockJS 0.3.3 server, independent of what runs inside a session.
//!
//! [`router`] serves one SockJS endpoint (nest it under its base URL): the greeting, `/info`,
//! `/iframe*.html`, the raw WebSocket at `/websocket`, and the session transports
//! `/{server}/{session}/{websocket|xhr|xhr_send|xhr_streaming|eventsource|htmlfile|jsonp|jsonp_send}`.
//! What runs inside each session is an [`Application`]: it is handed the client's messages
//! and an [`Outlet`] for its own, whatever the transport. The gateway mounts the STOMP
//! engine; `examples/sockjs_echo.rs` mounts the protocol's conformance services.
//!
//! HTTP sessions ([`session`]; transports in [`polling`], [`streaming`], [`send`]) live while a receiving request is attached, or for the disconnect
//! delay after the last one left; one receiver at a time (`c[2010,"Another connection still
//! open"]`); a receiver the client aborts ends the session (`c[1002,"Connection
//! interrupted"]`); a closed session answers `c[3000,"Go away!"]` until it is forgotten.
//! Each is bound to the client that created it ([`client`]): to anyone else it does not
//! exist. With [`Options::cookie_needed`], `/info` and the transports set a random
//! `JSESSIONID` on clients that have none, so browsers' sessions are bound to a secret.

pub mod client;
pub mod framing;
mod polling;
/// Compiled for unit tests and for the fuzz target (feature `fuzzing`), not into the binary.
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;
mod send;
mod session;
mod streaming;
mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::outlet::Outlet;
use crate::queue;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use client::Client;
use ipnet::IpNet;

/// One session as the application sees it.
pub struct Connection {
    /// `websocket` (raw), `sockjs-websocket` or `sockjs-http` (a metric label).
    pub transport: &'static str,
    /// The client's messages, in order; closed when the client is gone.
    pub from_client: queue::Receiver<Vec<u8>>,
    /// The application's messages (and its close) toward the client.
    pub to_client: Outlet,
}

/// A refused request: its status and a plain-text reason (empty: no body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    pub const NOT_FOUND: Refusal = Refusal::new(StatusCode::NOT_FOUND, "");

    pub const fn new(status: StatusCode, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.reason.is_empty() {
            self.status.into_response()
        } else {
            (self.status, self.reason).into_response()
        }
    }
}

/// What runs inside SockJS sessions.
pub trait Application: Send + Sync + 'static {
    /// What admitting a session yields (a connection permit, say); kept while it runs.
    type Admission: Send + 'static;

    /// Decides whether a new session may open.
    fn admit(&self, headers: &HeaderMap) -> Result<Self::Admission, Refusal>;

    /// Decides whether a new session from `address` (the client's, when the server knows
    /// it: see [`client`]) may open; by default as [`admit`](Self::admit) does.
    fn admit_from(
        &self,
        address: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Self::Admission, Refusal> {
        let _ = address;
        self.admit(headers)
    }

    /// Runs one session to its end.
    fn run(
        &self,
        admission: Self::Admission,
        connection: Connection,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// Protocol settings of one endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether the `websocket` transports are offered.
    pub websocket: bool,
    /// Whether a `JSESSIONID` cookie is set (for load balancers with sticky sessions, and
    /// to bind browsers' sessions to a secret rather than to their address).
    pub cookie_needed: bool,
    /// SockJS 0.3.3's literal `JSESSIONID` (`dummy`) for a client without one, and no
    /// cookie on `/info`, as the protocol's test suite expects; `None` (the gateway): a new
    /// random value, also on `/info`. Only for the conformance run
    /// (`examples/sockjs_echo.rs`): a value shared by every client binds nothing.
    pub fixed_cookie: Option<&'static str>,
    /// Proxies whose `X-Forwarded-For` names the client (see [`client`]).
    pub trusted_proxies: Vec<IpNet>,
    /// Interval of `h` frames on an idle receiver.
    pub heartbeat: Duration,
    /// How long a session outlives its last receiver.
    pub disconnect_delay: Duration,
    /// Bytes a streaming response carries before it ends (the client opens another).
    pub stream_limit: usize,
    /// Application output sent toward the client and not yet written (bytes).
    pub send_buffer_bytes: usize,
    /// Largest client message (WebSocket message, or decoded HTTP payload), in bytes.
    pub max_message_bytes: usize,
    /// Longest a sending request's body (`xhr_send`, `jsonp_send`) may take to arrive; past
    /// it the request is answered 408 and its connection closed.
    pub body_timeout: Duration,
    /// Subprotocols the raw WebSocket endpoint negotiates.
    pub raw_protocols: &'static [&'static str],
    /// The SockJS client script the iframe page loads (only iframe-based transports, for
    /// browsers without CORS, use it).
    pub client_url: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            websocket: true,
            cookie_needed: false,
            fixed_cookie: None,
            trusted_proxies: Vec::new(),
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            stream_limit: 128 * 1024,
            send_buffer_bytes: 512 * 1024,
            max_message_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            raw_protocols: &[],
            client_url: "/sockjs-client.min.js".into(),
        }
    }
}

/// One SockJS endpoint: its application, settings and HTTP sessions.
pub struct Service<A> {
    app: A,
    options: Options,
    sessions: Mutex<HashMap<String, Arc<session::HttpSession>>>,
    iframe: (String, String),
}

impl<A: Application> Service<A> {
    pub fn new(app: A, options: Options) -> Arc<Service<A>> {
        let iframe = iframe_page(&options.client_url);
        Arc::new(Service {
            app,
            options,
            sessions: Mutex::new(HashMap::new()),
            iframe,
        })
    }
}

/// The endpoint's routes, relative to its base URL. Nested under a base, the router answers
/// the base itself; add [`greeting`] at `{base}/` for the trailing-slash form.
pub fn router<A: Application>(service: Arc<Service<A>>) -> Router {
    Router::new()
        .route("/", get(greeting))
        .route("/info", get(info::<A>).options(info_preflight))
        .route("/websocket", any(websocket::raw::<A>))
        .route("/{file}", get(iframe::<A>))
        .route("/{server}/{session}/{transport}", any(transport::<A>))
        .with_state(service)
}

/// `Welcome to SockJS!`, the base URL's answer.
pub async fn greeting() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        "Welcome to SockJS!\n",
    )
        .into_response()
}

/// Session and server ids: any non-empty path segment without a dot.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('.')
}

async fn transport<A: Application>(
    State(service): State<Arc<Service<A>>>,
    Path((server, session, transport)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    if !valid_id(&server) || !valid_id(&session) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (parts, body) = request.into_parts();
    let client = Client::of(&parts, &service.options.trusted_proxies);
    let post_only = |name: &str| matches!(name, "xhr" | "xhr_send" | "xhr_streaming");
    let (id, c) = (session.as_str(), &client);
    match (transport.as_str(), &parts.method) {
        // The upgrade answers 404 when WebSocket is off and 405 to other methods.
        ("websocket", _) => websocket::sockjs(service, Request::from_parts(parts, body)).await,
        (name, &Method::OPTIONS) if post_only(name) => preflight(&parts.headers, "OPTIONS, POST"),
        ("xhr", &Method::POST) => polling::xhr_poll(service, id, c, &parts.headers).await,
        ("xhr_send", &Method::POST) => send::xhr_send(service, id, c, &parts, body).await,
        ("xhr_streaming", &Method::POST) => streaming::xhr_streaming(service, id, c, &parts),
        ("eventsource", &Method::GET) => streaming::eventsource(service, id, c, &parts),
        ("htmlfile", &Method::GET) => streaming::htmlfile(service, id, c, &parts),
        ("jsonp", &Method::GET) => polling::jsonp_poll(service, id, c, &parts).await,
        ("jsonp_send", &Method::POST) => send::jsonp_send(service, id, c, &parts, body).await,
        (name, _) if post_only(name) => method_not_allowed("OPTIONS, POST"),
        ("eventsource" | "htmlfile" | "jsonp", _) => method_not_allowed("GET"),
        ("jsonp_send", _) => method_not_allowed("POST"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// 405 with an `Allow` header and no body.
fn method_not_allowed(allow: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static(allow))],
    )
        .into_response()
}

/// CORS: the request's Origin (even `null`) with credentials, or `*` without. SockJS 0.3.3
/// fixes these rules (and 204 preflights with a cache lifetime, see [`preflight`]);
/// tower-http's `CorsLayer` cannot answer `*` to a request without Origin while it mirrors
/// origins with credentials, nor shape the preflight that way, so SockJS keeps its own.
fn cors(request: &HeaderMap, response: &mut Response) {
    let h = response.headers_mut();
    match request.get(header::ORIGIN) {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    if let Some(requested) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
}

fn no_cache(response: &mut Response) {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, no-transform, must-revalidate, max-age=0"),
    );
}

/// Cacheable for a year.
fn cache_for_a_year(response: &mut Response) {
    const YEAR: Duration = Duration::from_secs(31_536_000);
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    if let Ok(expires) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now() + YEAR)) {
        h.insert(header::EXPIRES, expires);
    }
}

fn preflight(request: &HeaderMap, methods: &'static str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(request, &mut response);
    cache_for_a_year(&mut response);
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    response
}

async fn info_preflight(headers: HeaderMap) -> Response {
    preflight(&headers, "OPTIONS, GET")
}

async fn info<A: Application>(
    State(service): State<Arc<Service<A>>>,
    headers: HeaderMap,
) -> Response {
    let body = serde_json::json!({
        "websocket": service.options.websocket,
        "origins": ["*:*"],
        "cookie_needed": service.options.cookie_needed,
        "entropy": rand::random::<u32>(),
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response();
    cors(&headers, &mut response);
    no_cache(&mut response);
    // Before the session: a browser's creating request then carries the cookie, and its
    // session is bound to it from the start.
    if service.options.fixed_cookie.is_none() {
        session::set_jsessionid(&service.options, &headers, &mut response);
    }
    response
}

/// The iframe page and its ETag.
fn iframe_page(client_url: &str) -> (String, String) {
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n  <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  <script src=\"{client_url}\"></script>\n  <script>\n    document.domain = document.domain;\n    SockJS.bootstrap_iframe();\n  </script>\n</head>\n<body>\n  <h2>Don't panic!</h2>\n  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n</body>\n</html>"
    );
    let digest = <sha2::Sha256 as sha2::Digest>::digest(page.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    (page, etag)
}

/// `iframe.html`, or a versioned `iframe-0.3.4.html`.
fn is_iframe(file: &str) -> bool {
    file.strip_prefix("iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|middle| {
            middle.is_empty()
                || (middle.starts_with('-')
                    && middle.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'-' | b'.' | b'_')
                    }))
        })
}

async fn iframe<A: Application>(
    State(service): State<Arc<Service<A>>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_iframe(&file) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (page, etag) = &service.iframe;
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=UTF-8".to_owned()),
            (header::ETAG, etag.clone()),
        ],
        page.clone(),
    )
        .into_response();
    cache_for_a_year(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iframe_names() {
        for ok in [
            "iframe.html",
            "iframe-a.html",
            "iframe-.html",
            "iframe-0.1.2.html",
            "iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert!(is_iframe(ok), "{ok}");
        }
        for bad in [
            "iframe.htm",
            "iframe",
            "IFRAME.HTML",
            "iframe.HTML",
            "iframe.xml",
            "iframea.html",
            "a.html",
        ] {
            assert!(!is_iframe(bad), "{bad}");
        }
    }

    #[test]
    fn session_ids() {
        assert!(valid_id("abc_i-j "));
        assert!(!valid_id("a."));
        assert!(!valid_id(""));
    }
}
