//! The raw WebSocket transport at `/ws/notifications/websocket`: STOMP frames in WebSocket
//! text messages, subprotocols `v12.stomp`, `v11.stomp`, `v10.stomp`.
//!
//! One task per connection drives the [`Session`]: it decodes client bytes, executes the
//! session's actions (authenticate, join the hub, send frames), relays the user's
//! notifications from the hub inbox, sends heart-beats and closes silent, slow or timed-out
//! clients. Every write is bounded by `send_timeout`.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};

use crate::AppState;
use crate::hub::Inbox;
use crate::session::{Action, Session};
use crate::stomp::{Command, Decoder, Frame, Item, encode};

/// WebSocket close code for a server going away (shutdown).
const GOING_AWAY: u16 = 1001;
/// WebSocket close code for a policy violation (protocol error, slow consumer).
const POLICY: u16 = 1008;
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// The subprotocols offered to clients, most recent first.
pub const STOMP_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// Why a connection ended (a metric label).
#[derive(Debug, Clone, Copy)]
enum End {
    ClientClosed,
    Protocol,
    SlowConsumer,
    SendTimeout,
    Silent,
    NoConnect,
    Shutdown,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Protocol => "protocol",
            End::SlowConsumer => "slow_consumer",
            End::SendTimeout => "send_timeout",
            End::Silent => "heartbeat_timeout",
            End::NoConnect => "no_connect",
            End::Shutdown => "shutdown",
        }
    }
}

/// Runs one WebSocket connection to its end.
pub async fn serve(socket: WebSocket, app: AppState) {
    let id = app.hub.session_id();
    let (mut sink, mut source) = socket.split();
    let mut session = Session::new(app.limits.session.clone());
    let decoder_limits = Decoder::new(app.limits.max_frame_bytes, app.limits.max_headers);
    let mut decoder = decoder_limits;
    let mut buffer = BytesMut::new();
    let mut inbox: Option<Inbox> = None;
    let mut joined_user: Option<String> = None;
    let first_frame_deadline = Instant::now() + app.limits.first_frame_timeout;
    let mut last_heard = Instant::now();
    let mut next_beat = Instant::now() + FAR_FUTURE;
    let send_timeout = app.limits.send_timeout;
    app.metrics.sessions.with_label_values(&["websocket"]).inc();

    let end = 'conn: loop {
        let (beat_every, silence_limit) = session.heartbeats();
        let connected = session.is_connected();
        let silence_deadline = match (connected, silence_limit) {
            (false, _) => first_frame_deadline,
            (true, Some(limit)) => last_heard + limit,
            (true, None) => Instant::now() + FAR_FUTURE,
        };
        let mut actions: VecDeque<Action> = VecDeque::new();
        tokio::select! {
            _ = app.shutdown.cancelled() => break End::Shutdown,
            message = source.next() => {
                last_heard = Instant::now();
                let bytes = match message {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::ClientClosed,
                };
                app.metrics.bytes_in.inc_by(bytes.len() as u64);
                buffer.extend_from_slice(&bytes);
                loop {
                    match decoder.decode(&mut buffer) {
                        Ok(Some(Item::Frame(frame))) => {
                            app.metrics.frames_in.with_label_values(&[frame.command.as_str()]).inc();
                            actions.extend(session.on_frame(frame));
                            decoder.version = session.version();
                        }
                        Ok(Some(Item::Heartbeat)) => {}
                        Ok(None) => break,
                        Err(err) => {
                            let error = Frame::new(Command::Error)
                                .header("message", err.to_string())
                                .header("content-type", "text/plain");
                            actions.push_back(Action::Send(error));
                            actions.push_back(Action::Close);
                            break;
                        }
                    }
                }
            }
            delivered = async { inbox.as_mut().expect("guarded").recv().await }, if inbox.is_some() => {
                let Some(json) = delivered else { break End::SlowConsumer };
                let subscriptions = session.subscriptions().to_vec();
                for subscription in &subscriptions {
                    let frame = session.message(subscription, &json);
                    actions.push_back(Action::Send(frame));
                }
            }
            _ = sleep_until(next_beat), if beat_every.is_some() => {
                if !send(&mut sink, Message::Text("\n".into()), send_timeout).await {
                    break End::SendTimeout;
                }
                next_beat = Instant::now() + beat_every.unwrap_or(FAR_FUTURE);
                continue;
            }
            _ = sleep_until(silence_deadline) => {
                break if connected { End::Silent } else { End::NoConnect };
            }
        }

        // Execute the session's actions in order; authentication may add more.
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Send(frame) => {
                    let is_error = frame.command == Command::Error;
                    app.metrics
                        .frames_out
                        .with_label_values(&[frame.command.as_str()])
                        .inc();
                    let bytes = encode(&frame, session.version());
                    let message = match String::from_utf8(bytes) {
                        Ok(text) => Message::Text(text.into()),
                        Err(e) => Message::Binary(e.into_bytes().into()),
                    };
                    if !send(&mut sink, message, send_timeout).await {
                        break 'conn End::SendTimeout;
                    }
                    if frame.command == Command::Connected {
                        if let (Some(every), _) = session.heartbeats() {
                            next_beat = Instant::now() + every;
                        }
                    }
                    if is_error {
                        app.metrics.errors.inc();
                    }
                }
                Action::Authenticate(credentials) => {
                    let more = match app.auth.authenticate(&credentials).await {
                        Ok(user) => session.authenticated(user),
                        Err(err) => session.rejected(&err.to_string()),
                    };
                    actions.extend(more);
                }
                Action::Subscribe { user, .. } => {
                    if joined_user.is_none() {
                        inbox = Some(app.hub.join(&user, id).await);
                        joined_user = Some(user);
                    }
                }
                Action::Unsubscribe { .. } => {
                    if session.subscriptions().is_empty() {
                        if let Some(user) = joined_user.take() {
                            app.hub.leave(&user, id).await;
                            inbox = None;
                        }
                    }
                }
                Action::Close => break 'conn End::Protocol,
            }
        }
    };

    if let Some(user) = joined_user.take() {
        app.hub.leave(&user, id).await;
    }
    let (code, reason) = match end {
        End::Shutdown => (GOING_AWAY, "Server shutting down"),
        End::ClientClosed => (1000, ""),
        _ => (POLICY, end.label()),
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
    app.metrics.sessions.with_label_values(&["websocket"]).dec();
    app.metrics.closes.with_label_values(&[end.label()]).inc();
}

/// Sends one message within `limit`; false when the client did not take it in time.
async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
    limit: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(limit, sink.send(message)).await,
        Ok(Ok(()))
    )
}
