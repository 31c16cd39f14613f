//! STOMP frames pipelined behind CONNECT (one WebSocket message, one `xhr_send` batch) are
//! run in order once the session is authenticated; the insecure dev mode binds a session to
//! one user.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
/// Silence after which nothing more is expected to arrive (duplicates come within it).
const QUIET: Duration = Duration::from_millis(400);

struct Gw {
    addr: std::net::SocketAddr,
    prefix: String,
    ticket_prefix: String,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(adjust: impl FnOnce(&mut GatewayConfig)) -> Gw {
    let name = support::unique_name("pipe");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    adjust(&mut config);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    tokio::spawn(gateway.run());
    Gw {
        addr,
        prefix: config.redis.channel_prefix,
        ticket_prefix: config.ticket_prefix,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn publish(gw: &Gw, user: &str, json: &str) {
    let mut redis = redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}{user}", gw.prefix))
        .arg(json)
        .query_async(&mut redis)
        .await
        .unwrap();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// STOMP frames from raw WebSocket messages (one message may carry several frames) until
/// nothing has arrived for `QUIET` or `until` says enough.
async fn ws_frames(ws: &mut Ws, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut frames = Vec::new();
    while !until(&frames) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(QUIET, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) => frames.extend(
                text.split('\0')
                    .map(|f| f.trim_start_matches('\n'))
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned),
            ),
            Ok(Some(Ok(_))) => {}
            Ok(other) => {
                frames.push(format!("<{other:?}>"));
                break;
            }
        }
    }
    frames
}

fn commands(frames: &[String]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f.split('\n').next().unwrap_or_default())
        .collect()
}

const SUBSCRIBE: &str = "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:r-0\n\n\0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_subscribe_in_one_websocket_message_are_both_answered() {
    let gw = start(|_| {}).await;
    let ticket = support::issue_ticket(&gw.ticket_prefix, "alice").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/notifications/websocket", gw.addr))
            .await
            .unwrap();
    let pipelined = format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0{SUBSCRIBE}");
    ws.send(Message::Text(pipelined.into())).await.unwrap();
    let frames = ws_frames(&mut ws, |f| f.len() >= 2).await;
    assert_eq!(commands(&frames), ["CONNECTED", "RECEIPT"], "{frames:?}");
    assert!(frames[1].contains("receipt-id:r-0"), "{frames:?}");

    publish(&gw, "alice", r#"{"id":1}"#).await;
    let frames = ws_frames(&mut ws, |_| false).await;
    assert_eq!(commands(&frames), ["MESSAGE"], "exactly once: {frames:?}");
    assert!(frames[0].ends_with(r#"{"id":1}"#), "{frames:?}");
}

/// One HTTP/1.1 request with a body; the whole response (the transports answer and close).
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    response
}

/// The STOMP frames of an `xhr` poll's `a[...]` answer.
fn sockjs_frames(response: &str) -> Vec<String> {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    let Some(array) = body.strip_prefix('a') else {
        return vec![format!("<{body}>")];
    };
    let messages: Vec<String> = serde_json::from_str(array).unwrap();
    messages
        .iter()
        .flat_map(|m| m.split('\0'))
        .map(|f| f.trim_start_matches('\n'))
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_subscribe_in_one_xhr_send_batch_are_both_answered() {
    let gw = start(|_| {}).await;
    let ticket = support::issue_ticket(&gw.ticket_prefix, "bob").await;
    let base = format!("/ws/notifications/000/{}", support::unique_name("s"));
    let open = post(gw.addr, &format!("{base}/xhr"), "").await;
    assert!(open.ends_with("o\n"), "{open}");

    let connect = format!("CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0");
    let batch = serde_json::to_string(&[connect.as_str(), SUBSCRIBE]).unwrap();
    let sent = post(gw.addr, &format!("{base}/xhr_send"), &batch).await;
    assert!(sent.starts_with("HTTP/1.1 204"), "{sent}");
    let mut frames = Vec::new();
    while frames.len() < 2 {
        frames.extend(sockjs_frames(
            &post(gw.addr, &format!("{base}/xhr"), "").await,
        ));
    }
    assert_eq!(commands(&frames), ["CONNECTED", "RECEIPT"], "{frames:?}");

    publish(&gw, "bob", r#"{"id":2}"#).await;
    let frames = sockjs_frames(&post(gw.addr, &format!("{base}/xhr"), "").await);
    assert_eq!(commands(&frames), ["MESSAGE"], "{frames:?}");
    assert!(frames[0].ends_with(r#"{"id":2}"#), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_dev_session_cannot_take_a_second_users_queue() {
    let gw = start(|config| config.insecure_no_auth = true).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/notifications/websocket", gw.addr))
            .await
            .unwrap();
    let frames = "CONNECT\naccept-version:1.2\n\n\0\
        SUBSCRIBE\nid:a\ndestination:/user/alice/queue/notifications\nreceipt:r-a\n\n\0";
    ws.send(Message::Text(frames.into())).await.unwrap();
    let frames = ws_frames(&mut ws, |f| f.len() >= 2).await;
    assert_eq!(commands(&frames), ["CONNECTED", "RECEIPT"], "{frames:?}");

    let second = "SUBSCRIBE\nid:b\ndestination:/user/bob/queue/notifications\nreceipt:r-b\n\n\0";
    ws.send(Message::Text(second.into())).await.unwrap();
    let frames = ws_frames(&mut ws, |f| !f.is_empty()).await;
    assert_eq!(commands(&frames), ["ERROR"], "{frames:?}");
    assert!(
        frames[0].contains("message:Cannot subscribe to another user's queue"),
        "{frames:?}"
    );
}
