//! The public listener's HTTP limits over real TCP: a request head that never ends is closed
//! at the header timeout, a SockJS body shorter than its `Content-Length` is answered 408 at
//! the body timeout, one address cannot hold more than its share of connections that have
//! not sent a head, and long-lived responses and WebSockets are bounded by none of it.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway::config::TrustedProxies;
use gateway::{Gateway, GatewayConfig};
use support::loopback::{STOMP, Stream, WAIT, Ws, connect_from, host, request, websocket_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The header and body timeouts of these tests.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How late after its timeout a connection may still be closed (scheduling, a busy machine).
const LATE: Duration = Duration::from_millis(1500);
/// How often a slow client sends its next piece.
const TRICKLE: Duration = Duration::from_millis(200);
const BASE: &str = "/ws/notifications";

struct Gw {
    addr: SocketAddr,
    ticket_prefix: String,
    metrics: gateway::metrics::GatewayMetrics,
    _stop: DropGuard,
}

async fn start(adjust: impl FnOnce(&mut GatewayConfig)) -> Gw {
    let name = support::unique_name("http_timeouts");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.http_header_timeout_ms = TIMEOUT.as_millis() as u64;
    config.http_body_timeout_ms = TIMEOUT.as_millis() as u64;
    adjust(&mut config);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let gw = Gw {
        addr: gateway.local_addr().unwrap(),
        ticket_prefix: config.ticket_prefix.clone(),
        metrics: gateway.metrics(),
        _stop: shutdown.drop_guard(),
    };
    tokio::spawn(gateway.run());
    gw
}

impl Gw {
    fn closed_for(&self, reason: &str) -> u64 {
        self.metrics.closes.with_label_values(&[reason]).get()
    }

    async fn connect_frame(&self, user: &str) -> String {
        let ticket = support::issue_ticket(&self.ticket_prefix, user).await;
        format!("CONNECT\naccept-version:1.2\nheart-beat:0,0\nX-WS-Ticket:{ticket}\n\n\0")
    }
}

/// What the server sent on `tcp` until it closed it, and when; `None` if it was still open
/// at `deadline`. `more`, when given, is written every [`TRICKLE`] meanwhile.
async fn until_closed(
    tcp: &mut TcpStream,
    more: Option<&[u8]>,
    deadline: Instant,
) -> Option<(String, Instant)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let wait = TRICKLE.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                return Some((String::from_utf8_lossy(&seen).into_owned(), Instant::now()));
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => {
                if let Some(more) = more {
                    // The server may have closed meanwhile: the read above will tell.
                    let _ = tcp.write_all(more).await;
                }
            }
        }
    }
}

/// Whether the server has neither answered nor closed `tcp` within a short look.
async fn still_open(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf))
        .await
        .is_err()
}

/// Asserts that a connection opened at `opened` ended between the timeout and the timeout
/// plus [`LATE`].
fn assert_ended_at_the_timeout(what: &str, opened: Instant, ended: Option<(String, Instant)>) {
    let Some((answer, at)) = ended else {
        panic!("{what}: still open {:?} after the timeout", LATE);
    };
    let lived = at - opened;
    assert!(
        lived >= TIMEOUT.mul_f64(0.9) && lived <= TIMEOUT + LATE,
        "{what}: closed after {lived:?} (timeout {TIMEOUT:?}); it sent {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_closed_at_the_header_timeout() {
    let gw = start(|_| {}).await;
    let opened = Instant::now();
    // Slowloris: one more header line now and then, never the blank line.
    let mut trickling = connect_from(host(1), gw.addr).await;
    trickling
        .write_all(b"GET /ws/notifications/info HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // The request line alone, then silence.
    let mut silent = connect_from(host(1), gw.addr).await;
    silent
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // Not a byte.
    let mut mute = connect_from(host(1), gw.addr).await;

    let deadline = opened + TIMEOUT + LATE;
    let (trickled, quiet, nothing) = tokio::join!(
        until_closed(&mut trickling, Some(b"X-Slow: 1\r\n"), deadline),
        until_closed(&mut silent, None, deadline),
        until_closed(&mut mute, None, deadline),
    );
    assert_ended_at_the_timeout("header lines trickling in", opened, trickled);
    assert_ended_at_the_timeout("a request line alone", opened, quiet);
    assert_ended_at_the_timeout("a connection that sends nothing", opened, nothing);
    // Counted once the connection's task has ended, right after the close.
    support::wait_until("3 header timeouts counted", WAIT, || async {
        gw.closed_for("header_timeout") == 3
    })
    .await;

    // A whole request is served as before, from the same address.
    let answer = request(host(1), gw.addr, "GET", "/healthz", &[], "").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
}

/// The head of a sending request whose body is announced as 4 096 bytes.
fn short_body_head(path: &str, content_type: &str) -> String {
    format!(
        "POST {BASE}{path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: 4096\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sockjs_body_shorter_than_its_length_is_answered_408_at_the_body_timeout() {
    let gw = start(|_| {}).await;
    let from = host(1);
    for session in ["short1", "short2"] {
        let open = request(
            from,
            gw.addr,
            "POST",
            &format!("{BASE}/000/{session}/xhr"),
            &[],
            "",
        )
        .await;
        assert_eq!(open.body, "o\n");
    }
    let opened = Instant::now();
    let mut xhr_send = connect_from(from, gw.addr).await;
    xhr_send
        .write_all(
            format!(
                "{}[\"CONN",
                short_body_head("/000/short1/xhr_send", "text/plain")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut jsonp_send = connect_from(from, gw.addr).await;
    jsonp_send
        .write_all(
            format!(
                "{}d=%5B%22",
                short_body_head(
                    "/000/short2/jsonp_send",
                    "application/x-www-form-urlencoded"
                )
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let deadline = opened + TIMEOUT + LATE;
    let (xhr, jsonp) = tokio::join!(
        until_closed(&mut xhr_send, Some(b"x"), deadline),
        until_closed(&mut jsonp_send, None, deadline),
    );
    for (what, ended) in [("xhr_send", xhr), ("jsonp_send", jsonp)] {
        let answer = ended
            .as_ref()
            .map(|(answer, _)| answer.clone())
            .unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{what}: {answer:?}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{answer}"
        );
        assert_ended_at_the_timeout(what, opened, ended);
    }
    assert_eq!(gw.closed_for("body_timeout"), 2);

    // A body that takes a while but arrives within the timeout is taken: its CONNECT is
    // answered on the session.
    let connect = serde_json::to_string(&[gw.connect_frame("slow-but-fine").await]).unwrap();
    let (first, rest) = connect.split_at(connect.len() / 2);
    let mut sending = connect_from(from, gw.addr).await;
    let head = format!(
        "POST {BASE}/000/short1/xhr_send HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{first}",
        connect.len()
    );
    sending.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(TIMEOUT / 2).await;
    sending.write_all(rest.as_bytes()).await.unwrap();
    let (answer, _) = until_closed(&mut sending, None, Instant::now() + WAIT)
        .await
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer:?}");
    let poll = request(
        from,
        gw.addr,
        "POST",
        &format!("{BASE}/000/short1/xhr"),
        &[],
        "",
    )
    .await;
    assert!(poll.body.contains("CONNECTED"), "{poll:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_responses_and_websockets_outlive_the_http_timeouts() {
    let gw = start(|_| {}).await;
    let from = host(1);
    let mut streaming = Stream::open(
        from,
        gw.addr,
        "POST",
        &format!("{BASE}/000/lived1/xhr_streaming"),
        &[],
        "",
    )
    .await;
    let mut eventsource = Stream::open(
        from,
        gw.addr,
        "GET",
        &format!("{BASE}/000/lived2/eventsource"),
        &[],
        "",
    )
    .await;
    let mut htmlfile = Stream::open(
        from,
        gw.addr,
        "GET",
        &format!("{BASE}/000/lived3/htmlfile?c=cb"),
        &[],
        "",
    )
    .await;
    assert!(
        streaming.until("o\n", WAIT).await,
        "{:?}",
        streaming.answer()
    );
    assert!(
        eventsource.until("data: o", WAIT).await,
        "{:?}",
        eventsource.answer()
    );
    assert!(
        htmlfile.until("\"o\"", WAIT).await,
        "{:?}",
        htmlfile.answer()
    );
    let mut ws = websocket_from(from, gw.addr, &format!("{BASE}/websocket"), STOMP)
        .await
        .expect("admitted");

    // Well past both timeouts, nothing was cut: each session still completes CONNECT.
    tokio::time::sleep(TIMEOUT * 2 + TIMEOUT / 2).await;
    for (session, user) in [("lived1", "u1"), ("lived2", "u2"), ("lived3", "u3")] {
        let frames = serde_json::to_string(&[gw.connect_frame(user).await]).unwrap();
        let sent = request(
            from,
            gw.addr,
            "POST",
            &format!("{BASE}/000/{session}/xhr_send"),
            &[],
            &frames,
        )
        .await;
        assert_eq!(sent.status, 204, "{session}: {sent:?}");
    }
    for (what, stream) in [
        ("xhr_streaming", &mut streaming),
        ("eventsource", &mut eventsource),
        ("htmlfile", &mut htmlfile),
    ] {
        assert!(
            stream.until("CONNECTED", WAIT).await,
            "{what}: {:?}",
            stream.answer()
        );
    }
    ws.send(Message::text(gw.connect_frame("u4").await))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("CONNECTED\n"));
    assert_eq!(gw.closed_for("header_timeout"), 0);
    assert_eq!(gw.closed_for("body_timeout"), 0);
}

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("a frame expected: {other:?}"),
    }
}

/// `n` connections from `from` that send nothing.
async fn idle_connections(gw: &Gw, from: IpAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(connect_from(from, gw.addr).await);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections_without_a_request() {
    let gw = start(|config| {
        // Long enough not to end the held connections during the test.
        config.http_header_timeout_ms = 30_000;
        config.http_max_unfinished_per_ip = 4;
        config.trusted_proxies = "127.0.0.3/32".parse::<TrustedProxies>().unwrap();
    })
    .await;
    let mut held = idle_connections(&gw, host(1), 6).await;
    let deadline = Instant::now() + WAIT;
    for (i, extra) in held.iter_mut().enumerate().skip(4) {
        let ended = until_closed(extra, None, deadline).await;
        assert_eq!(
            ended.map(|(answer, _)| answer),
            Some(String::new()),
            "#{i} closed unanswered"
        );
    }
    for (i, tcp) in held.iter_mut().enumerate().take(4) {
        assert!(still_open(tcp).await, "#{i} within the share");
    }
    assert_eq!(gw.closed_for("max_unfinished_per_ip"), 2);

    // Other addresses, and a trusted proxy carrying many clients, are not limited by it.
    let answer = request(host(2), gw.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(answer.status, 200);
    let mut proxied = idle_connections(&gw, host(3), 6).await;
    for (i, tcp) in proxied.iter_mut().enumerate() {
        assert!(still_open(tcp).await, "proxy connection #{i}");
    }

    // Once a held connection's request head arrives, the address has room again.
    let first = &mut held[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, first.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut again = connect_from(host(1), gw.addr).await;
    assert!(still_open(&mut again).await, "admitted again");
    assert_eq!(gw.closed_for("max_unfinished_per_ip"), 2);
}
