//! Clients that are different hosts: every socket is bound to a chosen loopback address
//! (all of 127.0.0.0/8 reaches a listener on 127.0.0.1), so the gateway sees another peer.
//! Raw HTTP/1.1 (one request per connection, or a stream read as it comes) and WebSocket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Longest wait for one answer, or for what a stream is expected to carry.
pub const WAIT: Duration = Duration::from_secs(10);

/// The loopback address `127.0.0.{n}`.
pub const fn host(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection from `from` to `to`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.head, name)
    }

    /// The `JSESSIONID` value of its `Set-Cookie`.
    pub fn jsessionid(&self) -> Option<&str> {
        self.header("set-cookie")?
            .split(';')
            .next()?
            .trim()
            .strip_prefix("JSESSIONID=")
    }
}

fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn request_text(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

/// One request from `from`, on its own connection; the whole answer.
pub async fn request(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = Stream::open(from, to, method, path, headers, body).await;
    tokio::time::timeout(WAIT, stream.read_to_end())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer within {WAIT:?}"));
    stream.answer()
}

/// A response read as it arrives (a streaming transport).
pub struct Stream {
    tcp: TcpStream,
    raw: Vec<u8>,
    /// Where the body starts in `raw`, once the head is complete.
    body_at: Option<usize>,
    closed: bool,
}

impl Stream {
    /// Sends one request from `from`; the answer is read by [`Stream::until`].
    pub async fn open(
        from: IpAddr,
        to: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Stream {
        let mut tcp = connect_from(from, to).await;
        tcp.write_all(request_text(method, path, headers, body).as_bytes())
            .await
            .unwrap();
        Stream {
            tcp,
            raw: Vec::new(),
            body_at: None,
            closed: false,
        }
    }

    /// Reads until the body so far contains `needle` (true), or `within` passes or the
    /// server closes (false).
    pub async fn until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.body().contains(needle) {
                return true;
            }
            if self.closed {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.read_some()).await {
                Ok(()) => {}
                Err(_) => return false,
            }
        }
    }

    async fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        match self.tcp.read(&mut buf).await {
            Ok(0) | Err(_) => self.closed = true,
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
        }
        if self.body_at.is_none() {
            self.body_at = self
                .raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| at + 4);
        }
    }

    async fn read_to_end(&mut self) {
        while !self.closed {
            self.read_some().await;
        }
    }

    fn head(&self) -> String {
        let end = self.body_at.unwrap_or(self.raw.len());
        String::from_utf8_lossy(&self.raw[..end]).into_owned()
    }

    /// The body so far, de-chunked when the answer is chunked.
    pub fn body(&self) -> String {
        let Some(at) = self.body_at else {
            return String::new();
        };
        let raw = &self.raw[at..];
        let chunked = header_in(&self.head(), "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if !chunked {
            return String::from_utf8_lossy(raw).into_owned();
        }
        let mut body = Vec::new();
        let mut rest = raw;
        // Complete chunks only: `<hex size>\r\n<data>\r\n`.
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
            let Some(size) = size else { break };
            let data = line_end + 2;
            if size == 0 || rest.len() < data + size + 2 {
                break;
            }
            body.extend_from_slice(&rest[data..data + size]);
            rest = &rest[data + size + 2..];
        }
        String::from_utf8_lossy(&body).into_owned()
    }

    /// What has arrived, as an answer.
    pub fn answer(&self) -> Answer {
        let head = self.head();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        Answer {
            status,
            head,
            body: self.body(),
        }
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The STOMP subprotocols, as a raw WebSocket client offers them.
pub const STOMP: Option<&str> = Some("v10.stomp, v11.stomp, v12.stomp");

/// A WebSocket handshake from `from` to `path`, offering `protocols`; the refusal's HTTP
/// status as `Err`.
pub async fn websocket_from(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<Ws, u16> {
    let mut request = format!("ws://{to}{path}").into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let tcp = connect_from(from, to).await;
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Ok(Err(other)) => panic!("handshake from {from} to {path}: {other}"),
        Err(_) => panic!("handshake from {from} to {path}: no answer within {WAIT:?}"),
    }
}
