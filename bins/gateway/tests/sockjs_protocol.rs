//! The SockJS layer over real TCP, with small applications inside: an echo (which reports
//! when its input closes) and one that closes at once. Raw HTTP/1.0 and 1.1 requests, so
//! every byte on the wire is checked. Steps wait for the event they depend on (an answer,
//! the application's report, the kernel's socket queues), never for a fixed time.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use gateway::outlet::{End, SendError};
use gateway::sockjs::{self, Application, Connection, Options, Refusal, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for any one answer or event.
const WITHIN: Duration = Duration::from_secs(10);
/// Pause between two polls of a condition (bounded by `WITHIN`).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Echoes each message; reports how its session ended.
#[derive(Clone)]
struct Echo {
    ended: mpsc::UnboundedSender<&'static str>,
}

impl Application for Echo {
    type Admission = ();

    fn admit(&self, _headers: &HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }

    fn run(&self, _: (), mut connection: Connection) -> impl Future<Output = ()> + Send + 'static {
        let ended = self.ended.clone();
        async move {
            while let Some(message) = connection.from_client.recv().await {
                let text = String::from_utf8_lossy(&message).into_owned();
                // `flood N`: N messages of 1 KiB, to fill the send buffer.
                if let Some(n) = text.strip_prefix("flood ") {
                    for _ in 0..n.parse::<usize>().unwrap_or(0) {
                        match connection
                            .to_client
                            .send("x".repeat(1024), Duration::from_millis(300))
                            .await
                        {
                            Ok(()) => {}
                            Err(SendError::Timeout) => {
                                let _ = ended.send("send_timeout");
                                connection.to_client.close(End::SendTimeout);
                                return;
                            }
                            Err(SendError::Closed) => return,
                        }
                    }
                    continue;
                }
                if connection
                    .to_client
                    .send(text, Duration::from_secs(5))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = ended.send("input_closed");
        }
    }
}

struct CloseAtOnce;

impl Application for CloseAtOnce {
    type Admission = ();

    fn admit(&self, _headers: &HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "the session future must not borrow the application"
    )]
    fn run(&self, _: (), connection: Connection) -> impl Future<Output = ()> + Send + 'static {
        async move { connection.to_client.close(End::Done) }
    }
}

struct Server {
    addr: SocketAddr,
    ended: mpsc::UnboundedReceiver<&'static str>,
}

async fn serve() -> Server {
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let options = Options {
        stream_limit: 4096,
        disconnect_delay: Duration::from_millis(500),
        send_buffer_bytes: 8 * 1024,
        ..Options::default()
    };
    let echo = Echo { ended: ended_tx };
    let app = Router::new()
        .route("/echo/", get(sockjs::greeting))
        .nest(
            "/echo",
            sockjs::router(Service::new(echo.clone(), options.clone())),
        )
        .nest(
            "/close",
            sockjs::router(Service::new(CloseAtOnce, options.clone())),
        )
        .nest(
            "/cookie",
            sockjs::router(Service::new(
                echo.clone(),
                Options {
                    cookie_needed: true,
                    ..options.clone()
                },
            )),
        )
        .nest(
            "/cookie-0.3.3",
            sockjs::router(Service::new(
                echo,
                Options {
                    cookie_needed: true,
                    fixed_cookie: Some("dummy"),
                    ..options
                },
            )),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, ended }
}

/// One request on a new connection (closed by us after the request); the whole answer.
async fn request(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let text = format!(
        "{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WITHIN, stream.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or_default()
}

fn body(answer: &str) -> &str {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n")?.0;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    request(addr, &format!("POST {path} HTTP/1.1"), body).await
}

async fn get_(addr: SocketAddr, path: &str) -> String {
    request(addr, &format!("GET {path} HTTP/1.1"), "").await
}

#[tokio::test]
async fn greeting_info_and_iframe() {
    let server = serve().await;
    for path in ["/echo", "/echo/"] {
        let answer = get_(server.addr, path).await;
        assert_eq!(status(&answer), "200", "{path}: {answer}");
        assert_eq!(body(&answer), "Welcome to SockJS!\n");
    }
    for path in [
        "/echo/a",
        "/echo/a.html",
        "/echo/a/a",
        "/echo/iframe.htm",
        "/echo/a./a/xhr",
    ] {
        assert_eq!(status(&get_(server.addr, path).await), "404", "{path}");
    }
    let info = get_(server.addr, "/echo/info").await;
    assert_eq!(header(&info, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&info, "access-control-allow-credentials"), None);
    assert!(body(&info).contains("\"cookie_needed\":false"), "{info}");
    let info = get_(server.addr, "/cookie/info").await;
    assert!(body(&info).contains("\"cookie_needed\":true"), "{info}");
    assert_fresh_cookie(header(&info, "set-cookie"));
    let info = get_(server.addr, "/cookie-0.3.3/info").await;
    assert_eq!(header(&info, "set-cookie"), None);

    let page = get_(server.addr, "/echo/iframe-1.6.1.html").await;
    assert_eq!(status(&page), "200");
    assert!(header(&page, "expires").is_some());
    let etag = header(&page, "etag").unwrap();
    let cached = request(
        server.addr,
        &format!("GET /echo/iframe.html HTTP/1.1\r\nIf-None-Match: {etag}"),
        "",
    )
    .await;
    assert_eq!(status(&cached), "304");
    assert_eq!(body(&cached), "");

    let wrong = post(server.addr, "/echo/0/0/websocket", "").await;
    assert_eq!(status(&wrong), "405");
    assert_eq!(header(&wrong, "allow"), Some("GET"));
}

#[tokio::test]
async fn xhr_session_round_trip_and_refusals() {
    let server = serve().await;
    let addr = server.addr;
    assert_eq!(body(&post(addr, "/echo/000/s1/xhr", "").await), "o\n");
    let sent = post(addr, "/echo/000/s1/xhr_send", r#"["a","b"]"#).await;
    assert_eq!(status(&sent), "204");
    assert_eq!(
        body(&post(addr, "/echo/999/s1/xhr", "").await),
        "a[\"a\",\"b\"]\n"
    );

    let broken = post(addr, "/echo/000/s1/xhr_send", "[\"x").await;
    assert_eq!(status(&broken), "500");
    assert_eq!(body(&broken), "Broken JSON encoding.");
    assert_eq!(
        body(&post(addr, "/echo/000/s1/xhr_send", "").await),
        "Payload expected."
    );
    assert_eq!(
        status(&post(addr, "/echo/000/nope/xhr_send", "[\"x\"]").await),
        "404"
    );

    // Only one receiver at a time: of two concurrent polls, the one that comes second is
    // refused at once (whichever it is), and the attached one takes what follows.
    let mut first = tokio::spawn(post(addr, "/echo/000/s1/xhr", ""));
    let mut second = tokio::spawn(post(addr, "/echo/000/s1/xhr", ""));
    let (refused, attached) = tokio::time::timeout(WITHIN, async {
        tokio::select! {
            answer = &mut first => (answer.unwrap(), second),
            answer = &mut second => (answer.unwrap(), first),
        }
    })
    .await
    .expect("one of two receivers is refused");
    assert_eq!(
        body(&refused),
        "c[2010,\"Another connection still open\"]\n"
    );
    post(addr, "/echo/000/s1/xhr_send", "[\"late\"]").await;
    let attached = tokio::time::timeout(WITHIN, attached)
        .await
        .expect("the attached receiver answers");
    assert_eq!(body(&attached.unwrap()), "a[\"late\"]\n");

    // The close service: o, then Go away! for as long as the session is remembered.
    assert_eq!(body(&post(addr, "/close/000/c1/xhr", "").await), "o\n");
    for _ in 0..2 {
        assert_eq!(
            body(&post(addr, "/close/000/c1/xhr", "").await),
            "c[3000,\"Go away!\"]\n"
        );
    }
}

#[tokio::test]
async fn an_aborted_receiver_ends_the_session() {
    let mut server = serve().await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo/000/ab/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    read_until(&mut stream, "o\n").await;
    drop(stream);
    let ended = tokio::time::timeout(WITHIN, server.ended.recv()).await;
    assert_eq!(ended.unwrap(), Some("input_closed"));
    assert_eq!(
        body(&post(addr, "/echo/000/ab/xhr", "").await),
        "c[1002,\"Connection interrupted\"]\n"
    );
}

#[tokio::test]
async fn a_session_without_receiver_expires_after_the_disconnect_delay() {
    let mut server = serve().await;
    let addr = server.addr;
    assert_eq!(body(&post(addr, "/echo/000/ex/xhr", "").await), "o\n");
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(WITHIN, server.ended.recv()).await;
    assert_eq!(ended.unwrap(), Some("input_closed"));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // Then forgotten: the same id opens a new session. Until the closed session is
    // forgotten (just after its input closed), the id answers its close frame.
    let deadline = Instant::now() + WITHIN;
    loop {
        match body(&post(addr, "/echo/000/ex/xhr", "").await) {
            "o\n" => break,
            "c[3000,\"Go away!\"]\n" => {}
            other => panic!("neither the old session's close nor a new session: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the session is never forgotten");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[tokio::test]
async fn output_nobody_takes_is_bounded_by_the_send_buffer() {
    let mut server = serve().await;
    let addr = server.addr;
    assert_eq!(body(&post(addr, "/echo/000/fl/xhr", "").await), "o\n");
    // 64 KiB toward a session whose client never polls: 8 KiB fit, then the send times out.
    post(addr, "/echo/000/fl/xhr_send", "[\"flood 64\"]").await;
    let ended = tokio::time::timeout(WITHIN, server.ended.recv()).await;
    assert_eq!(ended.unwrap(), Some("send_timeout"));
    let answer = post(addr, "/echo/000/fl/xhr", "").await;
    let frame = body(&answer);
    // What fit is delivered (8 messages of 1 KiB), then the close.
    assert_eq!(
        frame.matches(&"x".repeat(1024)).count(),
        8,
        "{}",
        frame.len()
    );
    assert_eq!(
        body(&post(addr, "/echo/000/fl/xhr", "").await),
        "c[3000,\"Go away!\"]\n"
    );
}

/// A new random `JSESSIONID`: 128 bits in hex, `Path=/; HttpOnly`; its value.
fn assert_fresh_cookie(cookie: Option<&str>) -> String {
    let cookie = cookie.expect("a Set-Cookie");
    let value = cookie
        .strip_prefix("JSESSIONID=")
        .and_then(|rest| rest.strip_suffix("; Path=/; HttpOnly"))
        .unwrap_or_else(|| panic!("{cookie}"));
    assert_eq!(value.len(), 32, "{cookie}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{cookie}");
    value.to_owned()
}

#[tokio::test]
async fn jsessionid_cookie_when_needed() {
    let server = serve().await;
    let addr = server.addr;
    // No cookie: a new random one each time (not SockJS 0.3.3's shared `dummy`).
    let first = assert_fresh_cookie(header(
        &post(addr, "/cookie/000/k1/xhr", "").await,
        "set-cookie",
    ));
    let second = assert_fresh_cookie(header(
        &post(addr, "/cookie/000/k0/xhr", "").await,
        "set-cookie",
    ));
    assert_ne!(first, second);
    // The request's own is echoed, and binds the session to it.
    let answer = request(
        addr,
        "POST /cookie/000/k2/xhr HTTP/1.1\r\nCookie: a=1; JSESSIONID=abcdef",
        "",
    )
    .await;
    assert_eq!(
        header(&answer, "set-cookie"),
        Some("JSESSIONID=abcdef; Path=/; HttpOnly")
    );
    let stranger = post(addr, "/cookie/000/k2/xhr_send", "[\"x\"]").await;
    assert_eq!(status(&stranger), "404", "another client: {stranger}");
    let sent = request(
        addr,
        "POST /cookie/000/k2/xhr_send HTTP/1.1\r\nCookie: JSESSIONID=abcdef",
        "[\"x\"]",
    )
    .await;
    assert_eq!(status(&sent), "204", "{sent}");
    assert_eq!(
        header(&sent, "set-cookie"),
        Some("JSESSIONID=abcdef; Path=/; HttpOnly")
    );
    assert_eq!(
        header(&post(addr, "/echo/000/k3/xhr", "").await, "set-cookie"),
        None
    );
    // The conformance run's option: 0.3.3's literal value.
    assert_eq!(
        header(
            &post(addr, "/cookie-0.3.3/000/k4/xhr", "").await,
            "set-cookie"
        ),
        Some("JSESSIONID=dummy; Path=/; HttpOnly")
    );
}

#[tokio::test]
async fn http_1_0_streaming_is_close_delimited() {
    let server = serve().await;
    let answer = request(
        server.addr,
        "POST /close/000/h10/xhr_streaming HTTP/1.0\r\nConnection: Keep-Alive",
        "",
    )
    .await;
    assert_eq!(status(&answer), "200");
    assert_eq!(header(&answer, "transfer-encoding"), None);
    assert_eq!(header(&answer, "content-length"), None);
    let expected = format!("{}\no\nc[3000,\"Go away!\"]\n", "h".repeat(2048));
    assert_eq!(body(&answer), expected);
}

#[tokio::test]
async fn streams_end_at_the_response_limit() {
    let server = serve().await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /echo/000/lim/eventsource HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The session exists (xhr_send would answer 404 before) once its open frame arrives.
    let mut out = read_until(&mut stream, "data: o\r\n\r\n").await;
    let big = format!("[\"{}\"]", "y".repeat(4096));
    assert_eq!(
        status(&post(addr, "/echo/000/lim/xhr_send", &big).await),
        "204"
    );
    tokio::time::timeout(WITHIN, stream.read_to_end(&mut out))
        .await
        .expect("the stream ends by itself")
        .unwrap();
    let answer = String::from_utf8(out).unwrap();
    assert_eq!(header(&answer, "content-type"), Some("text/event-stream"));
    assert!(
        body(&answer).ends_with(&format!("data: a[\"{}\"]\r\n\r\n", "y".repeat(4096))),
        "{answer}"
    );
    // The session lives on: the next receiver gets what follows.
    post(addr, "/echo/000/lim/xhr_send", "[\"next\"]").await;
    assert_eq!(
        body(&post(addr, "/echo/000/lim/xhr", "").await),
        "a[\"next\"]\n"
    );
}

#[tokio::test]
async fn a_broken_payload_closes_the_websocket_with_a_close_frame_not_a_reset() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = serve().await;
    let url = format!("ws://{}/echo/000/broken/websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("o".into()));
    let (client, server_side) = {
        let tcp = socket(&ws);
        (tcp.local_addr().unwrap(), tcp.peer_addr().unwrap())
    };
    ws.send(Message::Text("[\"a".into())).await.unwrap();
    // The server has closed once its close frame is on our socket (peeked, not consumed).
    tokio::time::timeout(WITHIN, socket(&ws).peek(&mut [0u8; 1]))
        .await
        .expect("the server closes")
        .unwrap();
    // More arrives after the server has closed; go on once the server's TCP has taken it
    // (a server that drops its socket with it unread resets the connection).
    assert!(
        tcp_queues(client, server_side).is_some() && tcp_queues(server_side, client).is_some(),
        "both ends are in the kernel's table"
    );
    ws.send(Message::Text("[\"b\"]".into())).await.unwrap();
    let deadline = Instant::now() + WITHIN;
    while !taken_by_peer(client, server_side) {
        assert!(
            Instant::now() < deadline,
            "the server never takes our bytes"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    let closed = tokio::time::timeout(WITHIN, ws.next())
        .await
        .expect("the server closes");
    assert!(
        matches!(closed, Some(Ok(Message::Close(_)))),
        "a close frame, got {closed:?}"
    );
    // Not a reset: the server waits for our Close (sent as we read its own), then ends the
    // connection in order. (On Linux a reset does not discard what has already arrived, so
    // the close frame alone does not tell the two servers apart; this end does.)
    let end = tokio::time::timeout(WITHIN, ws.next())
        .await
        .expect("the connection ends");
    assert!(end.is_none(), "an orderly end, got {end:?}");
}

/// The TCP socket under a client WebSocket.
fn socket(ws: &WebSocketStream<MaybeTlsStream<TcpStream>>) -> &TcpStream {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp,
        _ => panic!("plain TCP expected"),
    }
}

/// Whether the peer's TCP has taken everything `local` sent to it: acknowledged and read
/// by the peer's application, or the connection reset (Linux `/proc/net/tcp`).
fn taken_by_peer(local: SocketAddr, peer: SocketAddr) -> bool {
    let unacknowledged = tcp_queues(local, peer).map_or(0, |(tx, _)| tx);
    let unread = tcp_queues(peer, local).map_or(0, |(_, rx)| rx);
    unacknowledged == 0 && unread == 0
}

/// `(tx_queue, rx_queue)` of the IPv4 socket `local` → `remote`, if it exists: bytes sent
/// and not yet acknowledged, bytes received and not yet read by the application.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    // The kernel prints the address as the hex of its in-memory (network order) u32.
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 loopback expected"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Reads from `stream` until what has arrived contains `marker`; returns all of it.
async fn read_until(stream: &mut TcpStream, marker: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(WITHIN, async {
        while !String::from_utf8_lossy(&seen).contains(marker) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream ended before {marker:?}");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{marker:?} in time"));
    seen
}
