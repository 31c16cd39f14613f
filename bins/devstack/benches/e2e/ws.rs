//! The benchmark's STOMP subscribers on the gateway's raw WebSocket, over a minimal RFC 6455
//! client: the upgrade, masked text frames out, whole messages in (fragments joined, pings
//! answered). devstack has no WebSocket client dependency, and a subscriber needs no more.

use std::io::ErrorKind;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest message the benchmark accepts from the gateway.
const MAX_MESSAGE: u64 = 1 << 20;

/// One WebSocket connection.
pub struct WebSocket {
    stream: BufReader<TcpStream>,
}

impl WebSocket {
    /// Opens `ws://{addr}{path}` asking for `protocol`.
    pub async fn connect(addr: &str, path: &str, protocol: &str) -> anyhow::Result<WebSocket> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let key = base64(&rand::random::<[u8; 16]>());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        );
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        stream.read_line(&mut status).await?;
        anyhow::ensure!(
            status.starts_with("HTTP/1.1 101"),
            "no WebSocket upgrade: {status:?}"
        );
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
        }
        Ok(WebSocket { stream })
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.get_mut().write_all(&frame).await?;
        Ok(())
    }

    /// The next text or binary message; `None` once the server closed.
    pub async fn next_message(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut message = Vec::new();
        loop {
            let first = match self.stream.read_u8().await {
                Ok(byte) => byte,
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(None),
                Err(err) => return Err(err.into()),
            };
            let second = self.stream.read_u8().await?;
            let len = match second & 0x7f {
                126 => u64::from(self.stream.read_u16().await?),
                127 => self.stream.read_u64().await?,
                n => u64::from(n),
            };
            anyhow::ensure!(len <= MAX_MESSAGE, "a {len}-byte frame");
            let mask = if second & 0x80 != 0 {
                let mut mask = [0; 4];
                self.stream.read_exact(&mut mask).await?;
                Some(mask)
            } else {
                None
            };
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await?;
            if let Some(mask) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match first & 0x0f {
                0x8 => return Ok(None),
                0x9 => self.send(0xA, &payload).await?,
                0xA => {}
                _ => {
                    message.extend(payload);
                    anyhow::ensure!(message.len() as u64 <= MAX_MESSAGE, "message too large");
                    if first & 0x80 != 0 {
                        return Ok(Some(message));
                    }
                }
            }
        }
    }
}

/// Standard base64 with padding (the handshake key).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A STOMP session of `user` (CONNECT with `token`), subscribed to its notifications queue
/// and confirmed by a RECEIPT.
pub async fn subscribe(addr: &str, token: &str) -> anyhow::Result<WebSocket> {
    let mut ws = WebSocket::connect(addr, "/ws/notifications/websocket", "v12.stomp").await?;
    ws.send_text(&format!(
        "CONNECT\naccept-version:1.2\nheart-beat:0,0\nAuthorization:Bearer {token}\n\n\0"
    ))
    .await?;
    let reply = next_text(&mut ws).await?;
    anyhow::ensure!(reply.starts_with("CONNECTED"), "no CONNECTED: {reply}");
    ws.send_text("SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:r0\n\n\0")
        .await?;
    let reply = next_text(&mut ws).await?;
    anyhow::ensure!(reply.starts_with("RECEIPT"), "no RECEIPT: {reply}");
    Ok(ws)
}

async fn next_text(ws: &mut WebSocket) -> anyhow::Result<String> {
    let message = ws.next_message().await?.context("closed")?;
    Ok(String::from_utf8_lossy(&message).into_owned())
}

/// The bodies of the MESSAGE frames in one WebSocket message (the gateway may join several
/// frames in one).
pub fn message_bodies(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message.split(|b| *b == 0).filter_map(|frame| {
        let start = frame.iter().position(|b| *b != b'\n')?;
        let frame = &frame[start..];
        if !frame.starts_with(b"MESSAGE\n") {
            return None;
        }
        let body = frame.windows(2).position(|w| w == b"\n\n")? + 2;
        Some(&frame[body..])
    })
}
