//! The raw WebSocket transport at `/ws/notifications/websocket`: STOMP frames in WebSocket
//! text messages, subprotocols `v12.stomp`, `v11.stomp`, `v10.stomp`. A thin pump between
//! the socket and the [`engine`](crate::engine).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::AppState;
use crate::engine::{self, End, ToClient};

/// The subprotocols offered to clients, most recent first.
pub const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Messages queued toward one socket before the engine's send timeout applies.
pub const TO_CLIENT_QUEUE: usize = 64;

/// Socket read buffer per connection. Idle sessions dominate; the default (128 KiB) would
/// cost far more than the session itself.
pub const READ_BUFFER: usize = 1024;

/// WebSocket close code for a server going away (shutdown).
const GOING_AWAY: u16 = 1001;
/// WebSocket close code for a policy violation (protocol error, slow consumer).
const POLICY: u16 = 1008;

/// Runs one raw WebSocket connection to its end.
pub async fn serve(socket: WebSocket, app: AppState) {
    let (mut sink, mut source) = socket.split();
    let (client_tx, client_rx) = mpsc::channel::<Vec<u8>>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<ToClient>(TO_CLIENT_QUEUE);
    let engine = tokio::spawn(engine::run(app, "websocket", client_rx, out_tx));
    let end = loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if client_tx.send(text.as_bytes().to_vec()).await.is_err() { break None; }
                }
                Some(Ok(Message::Binary(data))) => {
                    if client_tx.send(data.to_vec()).await.is_err() { break None; }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
            },
            out = out_rx.recv() => match out {
                Some(ToClient::Data(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() { break None; }
                }
                Some(ToClient::Close(end)) => break Some(end),
                None => break None,
            },
        }
    };
    drop(client_tx);
    if let Some(end) = end {
        let (code, reason) = if end.is_shutdown() {
            (GOING_AWAY, "Server shutting down")
        } else if end == End::ClientClosed {
            (1000, "")
        } else {
            (POLICY, end.label())
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(close)).await;
    }
    let _ = engine.await;
}
