//! The WebSocket transports: raw (`/websocket`: one application message per WebSocket
//! message) and SockJS-framed (`/{server}/{session}/websocket`: `o`, `h`, `a[...]`, `c[...]`).
//! Each is a pump between the socket and the application's [`Connection`].

use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::framing::sockjs_close;
use super::{Application, Connection, Service, framing, method_not_allowed};
use crate::outlet::{self, End, Inlet, ToClient};
use crate::queue;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

/// Socket read buffer per connection. Idle sessions dominate; the default (128 KiB) would
/// cost far more than the session itself.
pub const READ_BUFFER: usize = 1024;
/// Client messages queued toward the application.
const FROM_CLIENT_QUEUE: usize = 16;
/// Queued frames joined into one raw WebSocket message, up to about this size.
const COALESCE_BYTES: usize = 16 * 1024;
/// How long a close frame may take to leave.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// The socket's halves. A session's task holds these, not the socket: an async block keeps
/// room for what it captured for as long as it runs, and a socket is several hundred bytes.
type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

/// Upgrades `request`, or answers why not.
async fn upgrade<A: Application>(
    service: &Service<A>,
    request: Request,
    protocols: &'static [&'static str],
    max_message_size: usize,
) -> Result<(WebSocketUpgrade, A::Admission), Response> {
    if !service.options.websocket {
        return Err(StatusCode::NOT_FOUND.into_response());
    }
    if request.method() != Method::GET {
        return Err(method_not_allowed("GET"));
    }
    let (mut parts, _body) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "Can \"Upgrade\" only to \"WebSocket\".",
            )
                .into_response()
        })?;
    let client = Client::of(&parts, &service.options.trusted_proxies);
    let admission = service
        .app
        .admit_from(client.address, &parts.headers)
        .map_err(IntoResponse::into_response)?;
    let upgrade = upgrade
        .protocols(protocols.iter().copied())
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message_size);
    Ok((upgrade, admission))
}

fn start<A: Application>(
    service: &Service<A>,
    admission: A::Admission,
    transport: &'static str,
) -> (queue::Sender<Vec<u8>>, Inlet, tokio::task::JoinHandle<()>) {
    let (client_tx, from_client) = queue::bounded(FROM_CLIENT_QUEUE, queue::one);
    let (to_client, inlet) = outlet::channel(service.options.send_buffer_bytes);
    let connection = Connection {
        transport,
        from_client,
        to_client,
    };
    let task = tokio::spawn(service.app.run(admission, connection));
    (client_tx, inlet, task)
}

/// `/websocket`: the application's messages are the WebSocket messages.
pub(super) async fn raw<A: Application>(
    State(service): State<Arc<Service<A>>>,
    request: Request,
) -> Response {
    let protocols = service.options.raw_protocols;
    let max = service.options.max_message_bytes;
    match upgrade(&service, request, protocols, max).await {
        Ok((upgrade, admission)) => upgrade.on_upgrade(move |socket| {
            let (sink, source) = socket.split();
            async move {
                let (client_tx, inlet, task) = start(&service, admission, "websocket");
                drop(service);
                pump_raw(sink, source, client_tx, inlet).await;
                let _ = task.await;
            }
        }),
        Err(response) => response,
    }
}

async fn pump_raw(
    mut sink: Sink,
    mut source: Source,
    client_tx: queue::Sender<Vec<u8>>,
    mut inlet: Inlet,
) {
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
            out = inlet.recv() => match out {
                Some(ToClient::Data(mut text)) => {
                    // Under a burst, what is already queued goes out in the same message:
                    // STOMP frames are self-delimiting, and clients parse several per message.
                    let mut close = None;
                    while text.len() < COALESCE_BYTES {
                        match inlet.try_recv() {
                            Some(ToClient::Data(more)) => text.push_str(&more),
                            Some(ToClient::Close(end)) => { close = Some(end); break; }
                            None => break,
                        }
                    }
                    if sink.send(Message::Text(text.into())).await.is_err() { break None; }
                    if close.is_some() { break close; }
                }
                Some(ToClient::Close(end)) => break Some(end),
                None => break None,
            },
        }
    };
    drop(client_tx);
    if let Some(end) = end {
        let (code, reason) = end.close_code();
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(CLOSE_WRITE, sink.send(close)).await;
        await_close_reply(&mut source).await;
    }
}

/// `/{server}/{session}/websocket`: SockJS framing over a socket (one session per socket).
pub(super) async fn sockjs<A: Application>(service: Arc<Service<A>>, request: Request) -> Response {
    // SockJS wraps each message in a JSON string: allow for its escaping.
    let max = super::send::payload_limit(&service.options);
    match upgrade(&service, request, &[], max).await {
        Ok((upgrade, admission)) => upgrade.on_upgrade(move |socket| {
            let (sink, source) = socket.split();
            async move {
                let heartbeat = service.options.heartbeat;
                let (client_tx, inlet, task) = start(&service, admission, "sockjs-websocket");
                drop(service);
                pump_sockjs(sink, source, client_tx, inlet, heartbeat).await;
                let _ = task.await;
            }
        }),
        Err(response) => response,
    }
}

async fn pump_sockjs(
    mut sink: Sink,
    mut source: Source,
    client_tx: queue::Sender<Vec<u8>>,
    mut inlet: Inlet,
    heartbeat_every: Duration,
) {
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_every,
        heartbeat_every,
    );
    if sink
        .send(Message::Text(framing::OPEN.into()))
        .await
        .is_err()
    {
        return;
    }
    let mut batch: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.is_empty() { continue; }
                    // A payload that is not a JSON array of strings ends the session.
                    let Ok(items) = framing::parse_payload(text.as_bytes()) else { break };
                    for item in items {
                        if client_tx.send(item.into_bytes()).await.is_err() { break; }
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => {}
                _ => break,
            },
            out = inlet.recv() => match out {
                Some(ToClient::Data(text)) => {
                    // Coalesce what is already queued into one frame.
                    batch.push(text);
                    let mut close = None;
                    while let Some(more) = inlet.try_recv() {
                        match more {
                            ToClient::Data(text) => batch.push(text),
                            ToClient::Close(end) => { close = Some(end); break; }
                        }
                    }
                    let frame = framing::messages(&batch);
                    batch.clear();
                    if sink.send(Message::Text(frame.into())).await.is_err() { break; }
                    if let Some(end) = close {
                        send_close(&mut sink, end).await;
                        break;
                    }
                }
                Some(ToClient::Close(end)) => {
                    send_close(&mut sink, end).await;
                    break;
                }
                None => break,
            },
            _ = heartbeat.tick() => {
                if sink.send(Message::Text(framing::HEARTBEAT.into())).await.is_err() { break; }
            }
        }
    }
    drop(client_tx);
    let _ = tokio::time::timeout(CLOSE_WRITE, sink.close()).await;
    await_close_reply(&mut source).await;
}

/// The closing handshake's end: reads until the client's Close (or its end of the socket),
/// for at most `CLOSE_WRITE`, so the socket is not dropped with the client's reply unread
/// (which resets the connection and can discard our close frame at the client).
async fn await_close_reply(source: &mut Source) {
    let _ = tokio::time::timeout(CLOSE_WRITE, async {
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The SockJS close frame, then the WebSocket close with the same code.
async fn send_close(sink: &mut Sink, end: End) {
    let (code, reason) = sockjs_close(end);
    let _ = tokio::time::timeout(CLOSE_WRITE, async {
        sink.send(Message::Text(framing::close(code, reason).into()))
            .await?;
        sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
    })
    .await;
}
