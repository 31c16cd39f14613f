//! The transport-independent STOMP connection: one task per client drives the [`Session`].
//!
//! It decodes client bytes (from whichever transport), executes the session's actions
//! (authenticate, join the hub, send frames), relays the user's notifications from the hub
//! inbox, sends STOMP heart-beats and closes silent, slow or timed-out clients. Output goes
//! to the transport through an [`Outlet`] bounded in bytes; output that does not fit within
//! `send_timeout` ends the connection.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::AppState;
use crate::hub::Inbox;
pub use crate::outlet::{End, ToClient};
use crate::outlet::{Outlet, SendError};
use crate::session::{Action, Session};
use crate::stomp::{Command, Decoder, Frame, Item, encode};

const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// Runs one client connection to its end. `from_client` yields the bytes the client sent
/// (closed when the client went away); `to_client` takes what to send.
pub async fn run(
    app: AppState,
    transport: &'static str,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    to_client: Outlet,
) {
    let id = app.hub.session_id();
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
    let mut errored = false;
    app.metrics.sessions.with_label_values(&[transport]).inc();

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
            message = from_client.recv() => {
                last_heard = Instant::now();
                let Some(bytes) = message else { break End::ClientClosed };
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
                if let Err(end) = send(&to_client, "\n".to_owned(), send_timeout).await {
                    break end;
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
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if let Err(end) = send(&to_client, text, send_timeout).await {
                        break 'conn end;
                    }
                    if frame.command == Command::Connected {
                        if let (Some(every), _) = session.heartbeats() {
                            next_beat = Instant::now() + every;
                        }
                    }
                    if is_error {
                        errored = true;
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
                Action::Close => break 'conn if errored { End::Protocol } else { End::Done },
            }
        }
    };

    if let Some(user) = joined_user.take() {
        app.hub.leave(&user, id).await;
    }
    to_client.close(end);
    app.metrics.sessions.with_label_values(&[transport]).dec();
    app.metrics.closes.with_label_values(&[end.label()]).inc();
}

/// Hands `text` to the transport once it fits the send buffer, within `limit`.
async fn send(to_client: &Outlet, text: String, limit: Duration) -> Result<(), End> {
    to_client.send(text, limit).await.map_err(|err| match err {
        SendError::Timeout => End::SendTimeout,
        SendError::Closed => End::ClientClosed,
    })
}
