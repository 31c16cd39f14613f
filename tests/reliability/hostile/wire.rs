//! Clients on the wire for the hostile and REST cases, every step bounded in time and none
//! panicking (a case turns a failed step into a failed check): raw HTTP/1.1 from a chosen
//! loopback address, whole or left unfinished; WebSocket handshakes; STOMP frames over a
//! raw WebSocket; and HS256 tokens.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest wait for one answer or one expected frame.
pub const WAIT: Duration = Duration::from_secs(5);

/// The raw WebSocket endpoint (STOMP without SockJS).
pub const RAW_WS: &str = "/ws/notifications/websocket";
/// The SockJS endpoint's base path.
pub const SOCKJS: &str = "/ws/notifications";
/// The STOMP subprotocols a raw WebSocket client offers.
pub const STOMP_PROTOCOLS: &str = "v12.stomp, v11.stomp, v10.stomp";

/// The loopback address `127.0.{a}.{b}`: another host as the gateway sees it.
pub const fn host(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// A TCP connection from `from` to `to`, its receive buffer set when asked (a client that
/// never reads fills a small one sooner).
pub async fn tcp_from(
    from: IpAddr,
    to: SocketAddr,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let stream = tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `status` and up to 80 characters of the body, for a report.
    pub fn brief(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(80).collect();
        format!("{} {cut:?}", self.status)
    }

    /// Parses what a server sent (complete or not), de-chunking a chunked body.
    pub fn parse(raw: &[u8]) -> Option<Answer> {
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..at]).into_owned();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let mut answer = Answer {
            status,
            head,
            body: raw[at + 4..].to_vec(),
        };
        if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            answer.body = dechunk(&answer.body);
        }
        Some(answer)
    }
}

/// The data of the complete chunks of a chunked body.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let data = eol + 2;
        if rest.len() < data + size + 2 {
            break;
        }
        body.extend_from_slice(&rest[data..data + size]);
        rest = &rest[data + size + 2..];
    }
    body
}

/// The bytes of one HTTP/1.1 request that closes its connection afterwards.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request from `from` on a connection of its own, and the whole answer (the server
/// closes the connection after it).
pub async fn http(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Answer> {
    let raw = request_bytes(method, path, headers, body);
    let exchange = async {
        let mut tcp = tcp_from(from, to, None).await?;
        tcp.write_all(&raw).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .with_context(|| format!("{method} {path}: no complete answer within {WAIT:?}"))?
        .with_context(|| format!("{method} {path}"))?;
    Answer::parse(&response).with_context(|| {
        format!(
            "{method} {path}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        )
    })
}

/// What arrived on a streaming answer within `within` (the connection stays open).
pub async fn read_for(tcp: &mut TcpStream, raw: &mut Vec<u8>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket handshake from `from` to `path`: the socket, or the refusal's HTTP status.
pub async fn websocket(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Result<Ws, u16>> {
    let tcp = tcp_from(from, to, None).await?;
    handshake(tcp, to, path, protocols, headers).await
}

/// A WebSocket handshake on `tcp`.
pub async fn handshake(
    tcp: TcpStream,
    to: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Result<Ws, u16>> {
    let mut request = format!("ws://{to}{path}").into_client_request()?;
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse()?);
    }
    for (name, value) in headers {
        let name: axum::http::HeaderName = name.parse()?;
        request.headers_mut().insert(name, value.parse()?);
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Ok(Ok((ws, _))) => Ok(Ok(ws)),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Ok(Err(response.status().as_u16()))
        }
        Ok(Err(other)) => Err(anyhow::anyhow!("handshake to {path}: {other}")),
        Err(_) => Err(anyhow::anyhow!(
            "handshake to {path}: no answer within {WAIT:?}"
        )),
    }
}

/// What reading a STOMP connection gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Frame(String),
    /// The server closed: its close code, when it sent one.
    Closed(Option<u16>),
    Timeout,
}

/// A STOMP client over a raw WebSocket.
pub struct Stomp {
    pub ws: Ws,
    frames: VecDeque<String>,
    closed: Option<Option<u16>>,
}

impl Stomp {
    pub fn new(ws: Ws) -> Stomp {
        Stomp {
            ws,
            frames: VecDeque::new(),
            closed: None,
        }
    }

    /// A raw WebSocket offering STOMP from `from`, its handshake accepted.
    pub async fn open(from: IpAddr, to: SocketAddr) -> anyhow::Result<Stomp> {
        match websocket(from, to, RAW_WS, Some(STOMP_PROTOCOLS), &[]).await? {
            Ok(ws) => Ok(Stomp::new(ws)),
            Err(status) => anyhow::bail!("the WebSocket handshake was refused with {status}"),
        }
    }

    /// Opens and sends CONNECT with `auth` (a header line without its newline); the
    /// server's first frame.
    pub async fn connect(
        from: IpAddr,
        to: SocketAddr,
        auth: &str,
    ) -> anyhow::Result<(Stomp, Next)> {
        let mut stomp = Stomp::open(from, to).await?;
        stomp
            .send(&format!(
                "CONNECT\naccept-version:1.2\nheart-beat:0,0\n{auth}\n\n\0"
            ))
            .await?;
        let first = stomp.next(WAIT).await;
        Ok((stomp, first))
    }

    /// Opens, CONNECTs and subscribes to the user's notifications (with a receipt).
    pub async fn subscribed(from: IpAddr, to: SocketAddr, auth: &str) -> anyhow::Result<Stomp> {
        let (mut stomp, first) = Stomp::connect(from, to, auth).await?;
        anyhow::ensure!(
            matches!(&first, Next::Frame(f) if f.starts_with("CONNECTED\n")),
            "CONNECT answered {first:?}"
        );
        stomp
            .send("SUBSCRIBE\nid:n\ndestination:/user/queue/notifications\nreceipt:sub\n\n\0")
            .await?;
        match stomp.next(WAIT).await {
            Next::Frame(f) if f.starts_with("RECEIPT\nreceipt-id:sub") => Ok(stomp),
            other => anyhow::bail!("SUBSCRIBE answered {other:?}"),
        }
    }

    pub async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_message(Message::text(text.to_owned())).await
    }

    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .context("sending took too long")??;
        Ok(())
    }

    /// The next frame, the close, or a timeout.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Next::Frame(frame);
            }
            if let Some(code) = self.closed {
                return Next::Closed(code);
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(Some(Ok(Message::Text(text)))) => self.split(text.as_bytes()),
                Ok(Some(Ok(Message::Binary(bytes)))) => self.split(&bytes),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.closed = Some(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => self.closed = Some(None),
            }
        }
    }

    fn split(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        self.frames.extend(
            text.split('\0')
                .map(|f| f.trim_start_matches(['\n', '\r']))
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
        );
    }

    /// Reads until an ERROR frame and the close after it: the ERROR's `message` header and
    /// whether the server closed within [`WAIT`]. `Err` says what came instead.
    pub async fn refusal(&mut self) -> Result<(String, bool), String> {
        loop {
            match self.next(WAIT).await {
                Next::Frame(frame) if frame.starts_with("ERROR\n") => {
                    let message = header_of(&frame, "message").unwrap_or_default();
                    return Ok((message, self.closes().await));
                }
                Next::Frame(frame) if frame.starts_with("RECEIPT\n") => continue,
                other => return Err(format!("{other:?}")),
            }
        }
    }

    /// Whether the server closes the connection within [`WAIT`] (frames before are dropped).
    pub async fn closes(&mut self) -> bool {
        loop {
            match self.next(WAIT).await {
                Next::Closed(_) => return true,
                Next::Timeout => return false,
                Next::Frame(_) => {}
            }
        }
    }

    /// Closes politely (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
    }
}

/// The close code a policy violation carries.
pub const POLICY: u16 = 1008;

/// Whether `code` is a close code a server uses for a refused client.
pub fn refusing_close(code: Option<u16>) -> bool {
    code.is_none_or(|c| {
        c == POLICY
            || c == u16::from(CloseCode::Protocol)
            || c == u16::from(CloseCode::Size)
            || c == u16::from(CloseCode::Invalid)
            || c >= 3000
    })
}

/// The value of header `name` of a STOMP frame's text.
pub fn header_of(frame: &str, name: &str) -> Option<String> {
    let head = frame.split("\n\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.to_owned())
    })
}

/// The body of a STOMP frame's text.
pub fn body_of(frame: &str) -> &str {
    frame.split_once("\n\n").map_or("", |(_, body)| body)
}

/// HS256 tokens for the case's key.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub kid: String,
    pub secret: String,
}

impl Tokens {
    /// A fresh key of 64 random hex characters named `k1`.
    pub fn random() -> Tokens {
        Tokens {
            kid: "k1".to_owned(),
            secret: format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            ),
        }
    }

    /// `JWT_KEYS` for the gateway.
    pub fn keys(&self) -> String {
        format!("{}={}", self.kid, self.secret)
    }

    /// A token of `user` valid for an hour.
    pub fn valid(&self, user: &str) -> String {
        self.signed(user, unix_now() + 3600)
    }

    pub fn signed(&self, user: &str, exp: u64) -> String {
        gateway::auth::sign_hs256(
            self.secret.as_bytes(),
            Some(&self.kid),
            &serde_json::json!({"sub": user, "exp": exp}),
        )
    }

    /// The `Authorization` header line of a valid token of `user`.
    pub fn bearer_line(&self, user: &str) -> String {
        format!("Authorization:Bearer {}", self.valid(user))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
