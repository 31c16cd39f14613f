//! A STOMP client over raw WebSocket for the integration tests: CONNECT with a bearer
//! token, SUBSCRIBE with a receipt, and the frames as they come.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The longest wait for one expected frame.
pub const WAIT: Duration = Duration::from_secs(10);
/// Silence after which nothing more is expected (a duplicate would come within it).
pub const QUIET: Duration = Duration::from_millis(500);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A STOMP client over raw WebSocket.
pub struct Client {
    pub ws: Ws,
    /// Frames read but not yet taken.
    pub pending: Vec<String>,
}

impl Client {
    /// Connects to the gateway at `addr` and sends CONNECT with `token` as the bearer.
    pub async fn connect(addr: SocketAddr, token: &str) -> Client {
        let (client, connected) =
            Client::open(addr, &format!("Authorization:Bearer {token}\n")).await;
        assert!(connected.starts_with("CONNECTED\n"), "{connected}");
        client
    }

    /// Connects to the gateway at `addr` and sends CONNECT with `headers` (lines, each
    /// ending in `\n`); the client and the server's first frame (CONNECTED or ERROR).
    pub async fn open(addr: SocketAddr, headers: &str) -> (Client, String) {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/notifications/websocket"))
                .await
                .unwrap();
        let mut client = Client {
            ws,
            pending: Vec::new(),
        };
        client
            .send(&format!("CONNECT\naccept-version:1.2\n{headers}\n\0"))
            .await;
        let first = client.next().await;
        (client, first)
    }

    pub async fn send(&mut self, frame: &str) {
        self.ws
            .send(Message::Text(frame.to_owned().into()))
            .await
            .unwrap();
    }

    /// SUBSCRIBE with a receipt; returns once the RECEIPT came (frames before it are kept).
    pub async fn subscribe(&mut self, id: &str, destination: &str, extra: &str) {
        let frame =
            format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:r-{id}\n{extra}\n\0");
        self.send(&frame).await;
        let mut before = Vec::new();
        loop {
            let frame = self.next().await;
            if frame.starts_with(&format!("RECEIPT\nreceipt-id:r-{id}\n")) {
                break;
            }
            before.push(frame);
        }
        self.pending.splice(0..0, before);
    }

    pub async fn read_frames(&mut self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                self.pending.extend(
                    text.split('\0')
                        .map(|f| f.trim_start_matches('\n'))
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned),
                );
                true
            }
            Ok(Some(Ok(_))) => true,
            Ok(other) => panic!("connection ended: {other:?} after {:?}", self.pending),
            Err(_) => false,
        }
    }

    pub async fn next(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        while self.pending.is_empty() {
            assert!(Instant::now() < deadline, "no frame within {WAIT:?}");
            self.read_frames(WAIT).await;
        }
        self.pending.remove(0)
    }

    /// Every frame until none has arrived for `QUIET`.
    pub async fn until_quiet(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT * 3;
        while Instant::now() < deadline && self.read_frames(QUIET).await {}
        std::mem::take(&mut self.pending)
    }

    /// The next MESSAGE's body as JSON, with its headers.
    pub async fn message(&mut self) -> (BTreeMap<String, String>, Value) {
        message_of(&self.next().await)
    }
}

pub fn message_of(frame: &str) -> (BTreeMap<String, String>, Value) {
    assert!(frame.starts_with("MESSAGE\n"), "{frame}");
    let (head, body) = frame.split_once("\n\n").unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (headers, serde_json::from_str(body).unwrap())
}

pub fn ids(frames: &[String]) -> Vec<i64> {
    frames
        .iter()
        .map(|f| message_of(f).1["id"].as_i64().unwrap())
        .collect()
}
