//! The gateway against real Redis: the process seam, and STOMP over raw WebSocket with
//! ticket and JWT authentication, per-user relay, and refusals.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const STOP_WITHIN: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);
/// Silence after which nothing more is expected to arrive (duplicates come within it).
const QUIET: Duration = Duration::from_millis(400);
const SECRET: &str = "gateway-test-secret-of-at-least-32-bytes";

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

struct TestGateway {
    metrics: gateway::metrics::GatewayMetrics,
    admin: Option<std::net::SocketAddr>,
    addr: std::net::SocketAddr,
    prefix: String,
    ticket_prefix: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_gateway() -> TestGateway {
    start_gateway_with(
        &support::unique_name("gw"),
        gateway::hub::SubscribeMode::PerUser,
    )
    .await
}

async fn start_gateway_with(name: &str, mode: gateway::hub::SubscribeMode) -> TestGateway {
    start_gateway_config(name, mode, |_| {}).await
}

async fn start_gateway_config(
    name: &str,
    mode: gateway::hub::SubscribeMode,
    adjust: impl FnOnce(&mut GatewayConfig),
) -> TestGateway {
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.jwt_keys = format!("key-default={SECRET}");
    config.subscribe_mode = mode;
    adjust(&mut config);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    let metrics = gateway.metrics();
    let admin = gateway.admin_addr();
    let task = tokio::spawn(gateway.run());
    TestGateway {
        metrics,
        admin,
        addr,
        prefix: config.redis.channel_prefix,
        ticket_prefix: config.ticket_prefix,
        shutdown,
        task,
    }
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ticket_for(gw: &TestGateway, user: &str) -> String {
    support::issue_ticket(&gw.ticket_prefix, user).await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn open(gw: &TestGateway) -> Ws {
    let mut request = format!("ws://{}/ws/notifications/websocket", gw.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v10.stomp, v11.stomp, v12.stomp".parse().unwrap(),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v12.stomp"),
        "a STOMP subprotocol is selected"
    );
    ws
}

/// The next STOMP frame (text), skipping heart-beats.
async fn next_frame(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time");
        match message {
            Some(Ok(Message::Text(text))) if text.as_str() != "\n" => return text.to_string(),
            Some(Ok(Message::Text(_))) | Some(Ok(Message::Ping(_))) => continue,
            other => return format!("<{other:?}>"),
        }
    }
}

async fn send(ws: &mut Ws, frame: &str) {
    ws.send(Message::Text(frame.to_owned().into()))
        .await
        .unwrap();
}

/// Publishes `json` once on `user`'s channel; returns how many Redis subscribers got it.
async fn publish(gw: &TestGateway, user: &str, json: &str) -> i64 {
    let mut r = redis().await;
    redis::cmd("PUBLISH")
        .arg(format!("{}{user}", gw.prefix))
        .arg(json)
        .query_async(&mut r)
        .await
        .unwrap()
}

/// The frames (heart-beats skipped) that arrive until none has for `QUIET`; bounded by
/// `WAIT` and a count, so a flood cannot keep it reading.
async fn frames_until_quiet(ws: &mut Ws) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut frames = Vec::new();
    while frames.len() < 100 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(QUIET, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "\n" => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Text(text)))) => frames.push(text.to_string()),
            Ok(other) => {
                frames.push(format!("<{other:?}>"));
                break;
            }
        }
    }
    frames
}

/// Asserts that nothing more reaches `who` (no duplicate, nothing of another user's).
async fn assert_nothing_more(ws: &mut Ws, who: &str) {
    let more = frames_until_quiet(ws).await;
    assert!(more.is_empty(), "{who} received more: {more:?}");
}

/// Connects, authenticates with `header`, and subscribes to `destination`.
async fn connect_and_subscribe(gw: &TestGateway, header: &str, destination: &str) -> Ws {
    let mut ws = open(gw).await;
    send(
        &mut ws,
        &format!("CONNECT\naccept-version:1.1,1.2\nheart-beat:10000,10000\n{header}\n\n\0"),
    )
    .await;
    let connected = next_frame(&mut ws).await;
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");
    assert!(connected.contains("version:1.2\n"), "{connected}");
    assert!(
        connected.contains("heart-beat:10000,10000\n"),
        "{connected}"
    );
    send(
        &mut ws,
        &format!("SUBSCRIBE\nid:sub-0\ndestination:{destination}\nreceipt:r-1\n\n\0"),
    )
    .await;
    let receipt = next_frame(&mut ws).await;
    assert!(
        receipt.starts_with("RECEIPT\nreceipt-id:r-1\n"),
        "{receipt}"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_healthz_and_stops_on_shutdown() {
    let gw = start_gateway_config(
        &support::unique_name("gw"),
        gateway::hub::SubscribeMode::PerUser,
        |c| {
            c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        },
    )
    .await;
    let admin = gw.admin.unwrap();
    let response = http_get(gw.addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    let mut ready = String::new();
    for _ in 0..100 {
        ready = http_get(admin, "/readyz").await;
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "ready once the relay is connected: {ready}"
    );
    let metrics = http_get(admin, "/metrics").await;
    assert!(metrics.contains("gateway_deliveries_total"), "{metrics}");
    assert!(
        http_get(gw.addr, "/metrics")
            .await
            .starts_with("HTTP/1.1 404"),
        "metrics only on the admin port"
    );

    gw.shutdown.cancel();
    let stopped = tokio::time::timeout(STOP_WITHIN, gw.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "gateway did not stop: {stopped:?}"
    );
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_user_receives_its_notifications_exactly() {
    let gw = start_gateway().await;
    let ticket = ticket_for(&gw, "user-1").await;
    let mut ws = connect_and_subscribe(
        &gw,
        &format!("X-WS-Ticket:{ticket}"),
        "/user/user-1/queue/notifications",
    )
    .await;
    let json = r#"{"id":42,"userId":"user-1","type":"ORDER_CREATED","title":"주문이 접수되었습니다","message":"2개 상품, 45,000원 결제 대기중","link":"/shopping/orders/ORD-1","status":"UNREAD","referenceId":"ORD-1","referenceType":"order","createdAt":"2026-02-06T10:00:00","readAt":null}"#;

    // The RECEIPT came after Redis confirmed the user's subscription: one publish suffices.
    assert_eq!(
        publish(&gw, "user-1", json).await,
        1,
        "one Redis subscriber"
    );
    let message = next_frame(&mut ws).await;
    assert!(message.starts_with("MESSAGE\n"), "{message}");
    assert!(
        message.contains("destination:/user/user-1/queue/notifications\n"),
        "{message}"
    );
    assert!(message.contains("subscription:sub-0\n"), "{message}");
    assert!(
        message.contains("content-type:application/json\n"),
        "{message}"
    );
    assert!(message.contains("message-id:"), "{message}");
    assert!(
        message.ends_with(&format!("\n\n{json}\0")),
        "exact body: {message}"
    );
    assert_nothing_more(&mut ws, "user-1").await;
    assert_eq!(
        gw.metrics.hub.delivered.get(),
        1,
        "handed to one session once"
    );
    // Delivered frames are timed from the relay to the send buffer.
    assert_eq!(gw.metrics.delivery_latency.get_sample_count(), 1);
    assert!(
        gw.metrics
            .render()
            .contains("gateway_delivery_latency_seconds_bucket"),
    );

    // The ticket was consumed: it cannot be used twice.
    let mut again = open(&gw).await;
    send(
        &mut again,
        &format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0"),
    )
    .await;
    let error = next_frame(&mut again).await;
    assert!(
        error.starts_with("ERROR\n")
            && error.contains("message:Invalid or expired WebSocket ticket\n"),
        "{error}"
    );
    gw.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_user_gets_only_its_own_messages() {
    let gw = start_gateway().await;
    let exp = chrono::Utc::now().timestamp() + 300;
    let token = sign_hs256(
        SECRET.as_bytes(),
        Some("key-default"),
        &serde_json::json!({"sub": "alice", "exp": exp}),
    );
    let mut alice = connect_and_subscribe(
        &gw,
        &format!("Authorization:Bearer {token}"),
        "/user/queue/notifications",
    )
    .await;
    let bob_ticket = ticket_for(&gw, "bob").await;
    let mut bob = connect_and_subscribe(
        &gw,
        &format!("X-WS-Ticket:{bob_ticket}"),
        "/user/queue/notifications",
    )
    .await;

    // Both RECEIPTs came after Redis confirmed the subscriptions: publish each once.
    assert_eq!(
        publish(&gw, "alice", r#"{"id":1,"userId":"alice"}"#).await,
        1
    );
    let got = next_frame(&mut alice).await;
    assert!(got.starts_with("MESSAGE\n"), "{got}");
    assert!(
        got.ends_with("\n\n{\"id\":1,\"userId\":\"alice\"}\0"),
        "{got}"
    );
    assert!(
        got.contains("destination:/user/queue/notifications\n"),
        "{got}"
    );
    assert_eq!(publish(&gw, "bob", r#"{"id":2,"userId":"bob"}"#).await, 1);
    let got = next_frame(&mut bob).await;
    assert!(
        got.ends_with("\n\n{\"id\":2,\"userId\":\"bob\"}\0"),
        "{got}"
    );
    // Each got its own exactly once, and nothing of the other's.
    assert_nothing_more(&mut alice, "alice").await;
    assert_nothing_more(&mut bob, "bob").await;
    gw.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_foreign_subscriptions_get_error_frames() {
    let gw = start_gateway().await;
    let cases = [
        (
            "X-WS-Ticket:no-such-ticket",
            "message:Invalid or expired WebSocket ticket\n",
        ),
        ("", "message:Invalid or expired WebSocket ticket\n"),
    ];
    for (header, expected) in cases {
        let mut ws = open(&gw).await;
        send(
            &mut ws,
            &format!("CONNECT\naccept-version:1.2\n{header}\n\n\0"),
        )
        .await;
        let error = next_frame(&mut ws).await;
        assert!(
            error.starts_with("ERROR\n") && error.contains(expected),
            "{header}: {error}"
        );
    }
    let expired = sign_hs256(
        SECRET.as_bytes(),
        None,
        &serde_json::json!({"sub": "alice", "exp": 1_000}),
    );
    let mut ws = open(&gw).await;
    send(
        &mut ws,
        &format!("CONNECT\naccept-version:1.2\nAuthorization:Bearer {expired}\n\n\0"),
    )
    .await;
    let error = next_frame(&mut ws).await;
    assert!(error.contains("message:JWT expired\n"), "{error}");

    let ticket = ticket_for(&gw, "mallory").await;
    let mut ws = open(&gw).await;
    send(
        &mut ws,
        &format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0"),
    )
    .await;
    assert!(next_frame(&mut ws).await.starts_with("CONNECTED"));
    send(
        &mut ws,
        "SUBSCRIBE\nid:0\ndestination:/user/alice/queue/notifications\n\n\0",
    )
    .await;
    let error = next_frame(&mut ws).await;
    assert!(
        error.contains("message:Cannot subscribe to another user's queue\n"),
        "{error}"
    );

    let ticket = ticket_for(&gw, "mallory").await;
    let mut ws = open(&gw).await;
    send(
        &mut ws,
        &format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0"),
    )
    .await;
    assert!(next_frame(&mut ws).await.starts_with("CONNECTED"));
    send(&mut ws, "SEND\ndestination:/topic/all\n\nhello\0").await;
    let error = next_frame(&mut ws).await;
    assert!(error.starts_with("ERROR\n"), "{error}");

    let mut ws = open(&gw).await;
    send(&mut ws, "NONSENSE\n\n\0").await;
    let error = next_frame(&mut ws).await;
    assert!(
        error.starts_with("ERROR\n") && error.contains("unknown command"),
        "{error}"
    );
    gw.shutdown.cancel();
}

/// Channels this gateway's relay is subscribed to, as Redis reports them.
async fn subscribed_channels(prefix: &str) -> Vec<String> {
    let mut r = redis().await;
    redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}*"))
        .query_async(&mut r)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_exactly_once_and_subscribe_only_their_users() {
    let name = support::unique_name("gw2");
    let a = start_gateway_with(&name, gateway::hub::SubscribeMode::PerUser).await;
    let b = start_gateway_with(&name, gateway::hub::SubscribeMode::PerUser).await;
    let t1 = ticket_for(&a, "on-a").await;
    let mut on_a = connect_and_subscribe(
        &a,
        &format!("X-WS-Ticket:{t1}"),
        "/user/queue/notifications",
    )
    .await;
    let t2 = ticket_for(&b, "on-b").await;
    let mut on_b = connect_and_subscribe(
        &b,
        &format!("X-WS-Ticket:{t2}"),
        "/user/queue/notifications",
    )
    .await;

    // Right after the RECEIPTs, each user's channel has exactly one subscriber: the
    // instance holding the user.
    let wanted = [format!("{}on-a", a.prefix), format!("{}on-b", a.prefix)];
    let mut r = redis().await;
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&wanted[0])
        .arg(&wanted[1])
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(counts, vec![(wanted[0].clone(), 1), (wanted[1].clone(), 1)]);

    assert_eq!(publish(&b, "on-b", r#"{"id":1,"userId":"on-b"}"#).await, 1);
    let message = next_frame(&mut on_b).await;
    assert!(
        message.ends_with("{\"id\":1,\"userId\":\"on-b\"}\0"),
        "{message}"
    );
    assert_nothing_more(&mut on_b, "the user on B").await;
    assert_nothing_more(&mut on_a, "the user on A").await;
    assert_eq!(a.metrics.hub.delivered.get(), 0, "A handed nothing over");
    assert_eq!(b.metrics.hub.delivered.get(), 1, "B handed it over once");

    // The last session of a user leaving unsubscribes the instance.
    drop(on_b);
    let mut gone = false;
    for _ in 0..100 {
        if !subscribed_channels(&a.prefix).await.contains(&wanted[1]) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "unsubscribed after the last session left");
    a.shutdown.cancel();
    b.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_mode_delivers_exactly_once() {
    let gw = start_gateway_with(
        &support::unique_name("gwp"),
        gateway::hub::SubscribeMode::Pattern,
    )
    .await;
    // Subscribing right after the start, while the relay's one PSUBSCRIBE may still be on its
    // way: the RECEIPT waits for it as a per-user SUBSCRIBE would.
    let t = ticket_for(&gw, "pat").await;
    let mut ws = connect_and_subscribe(
        &gw,
        &format!("X-WS-Ticket:{t}"),
        "/user/pat/queue/notifications",
    )
    .await;
    assert_eq!(
        publish(&gw, "pat", r#"{"id":5}"#).await,
        1,
        "one psubscriber"
    );
    let got = next_frame(&mut ws).await;
    assert!(
        got.starts_with("MESSAGE\n") && got.ends_with("{\"id\":5}\0"),
        "{got}"
    );
    assert!(
        got.contains("destination:/user/pat/queue/notifications\n"),
        "{got}"
    );
    assert_nothing_more(&mut ws, "pat").await;
    gw.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_going_away() {
    let gw = start_gateway().await;
    let t = ticket_for(&gw, "bye").await;
    let mut ws = connect_and_subscribe(
        &gw,
        &format!("X-WS-Ticket:{t}"),
        "/user/queue/notifications",
    )
    .await;
    gw.shutdown.cancel();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_connect() {
    let gw = start_gateway_config(
        &support::unique_name("origin"),
        gateway::hub::SubscribeMode::PerUser,
        |c| {
            c.allowed_origins = vec!["https://portal.example".into()];
        },
    )
    .await;
    let attempt = |origin: &'static str| {
        let addr = gw.addr;
        async move {
            let mut request = format!("ws://{addr}/ws/notifications/websocket")
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
            tokio_tungstenite::connect_async(request).await.map(|_| ())
        }
    };
    assert!(attempt("https://portal.example").await.is_ok());
    assert!(
        attempt("https://evil.example").await.is_err(),
        "a foreign origin is refused"
    );
    let info =
        http_get_with_origin(gw.addr, "/ws/notifications/info", "https://evil.example").await;
    assert!(info.starts_with("HTTP/1.1 403"), "{info}");
    let info =
        http_get_with_origin(gw.addr, "/ws/notifications/info", "https://portal.example").await;
    assert!(info.starts_with("HTTP/1.1 200"), "{info}");
    assert!(
        info.contains("access-control-allow-origin: https://portal.example"),
        "{info}"
    );
    assert!(info.contains("\"websocket\":true"), "{info}");
    // Sticky sessions for the HTTP transports by default (Spring's default too).
    assert!(info.contains("\"cookie_needed\":true"), "{info}");
    gw.shutdown.cancel();
}

async fn http_get_with_origin(addr: std::net::SocketAddr, path: &str, origin: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // Streaming responses do not end: read what arrives within a short window.
    let _ = tokio::time::timeout(
        Duration::from_millis(1500),
        stream.read_to_end(&mut response),
    )
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonp_and_htmlfile_transports_carry_stomp() {
    let gw = start_gateway().await;
    let base = "/ws/notifications/000/jsonpsession1";
    let open = http_request(
        gw.addr,
        "GET",
        &format!("{base}/jsonp?c=cb"),
        "text/plain",
        "",
    )
    .await;
    assert!(open.ends_with("/**/cb(\"o\");\r\n"), "{open}");
    let lower = open.to_ascii_lowercase();
    let cookie = lower
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: jsessionid="))
        .unwrap_or_else(|| panic!("no JSESSIONID: {open}"));
    assert!(cookie.ends_with("; path=/; httponly"), "{open}");
    assert!(!cookie.starts_with("dummy"), "a random cookie: {open}");
    let ticket = ticket_for(&gw, "jp").await;
    let connect = format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\u{0}");
    let payload = serde_json::to_string(&vec![connect]).unwrap();
    let form: String = payload
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let sent = http_request(
        gw.addr,
        "POST",
        &format!("{base}/jsonp_send"),
        "application/x-www-form-urlencoded",
        &format!("d={form}"),
    )
    .await;
    assert!(
        sent.starts_with("HTTP/1.1 200") && sent.ends_with("ok"),
        "{sent}"
    );
    let connected = http_request(
        gw.addr,
        "GET",
        &format!("{base}/jsonp?c=cb"),
        "text/plain",
        "",
    )
    .await;
    assert!(
        connected.contains(r#"/**/cb("a[\"CONNECTED\\nversion:1.2"#),
        "{connected}"
    );

    let missing = http_request(
        gw.addr,
        "GET",
        "/ws/notifications/000/htmlsession1/htmlfile",
        "text/plain",
        "",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 500"), "{missing}");
    let evil = http_request(
        gw.addr,
        "GET",
        "/ws/notifications/000/htmlsession1/htmlfile?c=alert(1)",
        "text/plain",
        "",
    )
    .await;
    assert!(
        evil.starts_with("HTTP/1.1 500"),
        "callbacks are validated: {evil}"
    );
    let html = http_request(
        gw.addr,
        "GET",
        "/ws/notifications/000/htmlsession2/htmlfile?c=parent.cb",
        "text/plain",
        "",
    )
    .await;
    assert!(html.contains("var c = parent.parent.cb;"), "{html}");
    assert!(html.contains("<script>\np(\"o\");\n</script>"), "{html}");
    gw.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_connection_limit_get_503_on_every_transport() {
    let gw = start_gateway_config(
        &support::unique_name("gw"),
        gateway::hub::SubscribeMode::PerUser,
        |config| config.max_connections = 2,
    )
    .await;
    let first = open(&gw).await;
    // A SockJS HTTP session takes a permit as well.
    let sockjs = http_request(
        gw.addr,
        "POST",
        "/ws/notifications/000/limit1/xhr",
        "text/plain",
        "",
    )
    .await;
    assert!(sockjs.ends_with("\r\n\r\no\n"), "{sockjs}");

    let url = format!("ws://{}/ws/notifications/websocket", gw.addr);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503)
        }
        other => panic!("503 expected, got {other:?}"),
    }
    let refused = http_request(
        gw.addr,
        "POST",
        "/ws/notifications/000/limit2/xhr",
        "text/plain",
        "",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.ends_with("too many connections"), "{refused}");
    assert_eq!(
        gw.metrics
            .closes
            .with_label_values(&["max_connections"])
            .get(),
        2
    );

    // A closed session gives its permit back.
    drop(first);
    support::wait_until("a permit is free", Duration::from_secs(5), || async {
        tokio_tungstenite::connect_async(url.as_str()).await.is_ok()
    })
    .await;
    gw.shutdown.cancel();
}
