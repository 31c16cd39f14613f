//! The transport-independent STOMP connection: one task per client drives the [`Session`].
//!
//! It decodes client bytes (from whichever transport), executes the session's actions
//! (authenticate, subscribe: [`listen`], mark read: [`read`], send frames), relays what the
//! hub delivers to the session's subscriptions, sends STOMP heart-beats and closes silent,
//! slow, expired or timed-out clients. Output goes to the transport through an [`Outlet`]
//! bounded in bytes; output that does not fit within `send_timeout` ends the connection.

mod listen;
mod read;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, sleep_until};

pub use crate::outlet::{End, ToClient};
use crate::outlet::{Outlet, SendError};
use crate::queue;
use crate::session::{Action, Session};
use crate::state::{AppState, PendingSlot};
use crate::stomp::{Command, Decoder, Frame, Item, encode};
use listen::{Failed, Listening};

const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// Runs one client connection to its end. `from_client` yields the bytes the client sent
/// (closed when the client went away); `to_client` takes what to send. `pending` is held
/// until CONNECTED is sent (or the connection ends, at the latest at the first-frame
/// timeout), so unauthenticated connections are counted apart.
pub async fn run(
    app: AppState,
    transport: &'static str,
    pending: PendingSlot,
    mut from_client: queue::Receiver<Vec<u8>>,
    to_client: Outlet,
) {
    let id = app.hub.session_id();
    let mut session = Session::new(app.limits.session.clone());
    let decoder_limits = Decoder::new(app.limits.max_frame_bytes, app.limits.max_headers);
    let mut decoder = decoder_limits;
    let mut buffer = BytesMut::new();
    let mut listening = Listening::new(id);
    let first_frame_deadline = Instant::now() + app.limits.first_frame_timeout;
    let mut pending = Some(pending);
    let mut last_heard = Instant::now();
    let mut next_beat = Instant::now() + FAR_FUTURE;
    let send_timeout = app.limits.send_timeout;
    let mut errored = false;
    // When the credentials expire (a JWT's `exp`), if sessions close then.
    let mut expiry: Option<Instant> = None;
    let mut expired = false;
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
                // Clients send a few frames, then mostly nothing: an idle session keeps no
                // room sized for its CONNECT.
                if buffer.is_empty() {
                    buffer = BytesMut::new();
                }
            }
            delivered = async { listening.inbox.as_mut().expect("guarded").recv().await },
                if listening.inbox.is_some() => {
                let Some(delivery) = delivered else { break End::SlowConsumer };
                // The hot path: each MESSAGE is written straight to its wire text.
                if let Err(end) = listening.deliver(&mut session, &to_client, &app, &delivery).await {
                    break 'conn end;
                }
                app.metrics
                    .delivery_latency
                    .observe(delivery.received.elapsed().as_secs_f64());
                continue;
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
            _ = sleep_until(expiry.unwrap_or(silence_deadline)), if expiry.is_some() => {
                expiry = None;
                expired = true;
                actions.extend(session.expired());
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
                        // Authenticated: no longer counted as pending.
                        drop(pending.take());
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
                    // Boxed: the idle session's future should not be sized for the
                    // authentication (a Redis round trip) it ran once.
                    let more = match Box::pin(app.auth.authenticate(&credentials)).await {
                        Ok(identity) => {
                            if app.limits.close_on_token_expiry {
                                expiry = identity.expires_at.map(deadline_of);
                            }
                            session.authenticated(identity.user)
                        }
                        Err(err) => session.rejected(&err.to_string()),
                    };
                    actions.extend(more);
                }
                Action::Subscribe {
                    id: subscription,
                    target,
                    last_id,
                } => {
                    // Boxed, as authentication is: a join, a recovery or a snapshot runs once.
                    let subscribed = Box::pin(listening.subscribe(
                        &app,
                        &mut session,
                        &to_client,
                        &subscription,
                        target,
                        last_id,
                    ))
                    .await;
                    match subscribed {
                        Ok(()) => {}
                        Err(Failed::End(end)) => break 'conn end,
                        Err(Failed::Error(reason)) => actions = session.abort(reason).into(),
                    }
                }
                Action::Unsubscribe { .. } => listening.unsubscribed(&app, &session),
                Action::MarkRead { request, receipt } => {
                    let user = session.user().unwrap_or_default().to_owned();
                    match Box::pin(read::mark(&app, &user, request)).await {
                        Ok(()) => {
                            let receipt = receipt.map(|r| Action::Send(session.receipt(&r)));
                            actions.extend(receipt);
                        }
                        Err(reason) => actions = session.abort(reason).into(),
                    }
                }
                Action::Close => {
                    break 'conn match (expired, errored) {
                        (true, _) => End::Expired,
                        (false, true) => End::Protocol,
                        (false, false) => End::Done,
                    };
                }
            }
        }
    };

    listening.leave_all(&app);
    to_client.close(end);
    app.metrics.sessions.with_label_values(&[transport]).dec();
    app.metrics.closes.with_label_values(&[end.label()]).inc();
}

/// The instant Unix time `exp` (seconds) is reached.
fn deadline_of(exp: u64) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_secs(exp).saturating_sub(now)
}

/// Hands `text` to the transport once it fits the send buffer, within `limit`.
async fn send(to_client: &Outlet, text: String, limit: Duration) -> Result<(), End> {
    to_client.send(text, limit).await.map_err(|err| match err {
        SendError::Timeout => End::SendTimeout,
        SendError::Closed => End::ClientClosed,
    })
}

#[cfg(test)]
mod tests {
    //! The engine on a paused clock: heart-beats, silence, the first-frame limit and the
    //! send buffer, to the millisecond. Redis is never reached (insecure mode, no
    //! subscription), so virtual time only moves when every task waits on a timer.

    use std::sync::Arc;

    use tokio::sync::Semaphore;
    use tokio::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::auth::{Authenticator, JwtKeys};
    use crate::hub::{Hub, SubscribeMode};
    use crate::metrics::GatewayMetrics;
    use crate::outlet::{self, Inlet};
    use crate::session::SessionConfig;
    use crate::state::{Limits, Origins, Pending};

    const SECRET: &str = "an-engine-test-secret-of-at-least-32-bytes";
    const CLIENT: [u8; 4] = [192, 0, 2, 1];

    fn state() -> AppState {
        state_with(true)
    }

    fn state_with(close_on_token_expiry: bool) -> AppState {
        let metrics = GatewayMetrics::new();
        let unreachable = shared::redis_link::RedisTarget::Node("redis://127.0.0.1:1/".into());
        let shutdown = CancellationToken::new();
        let redis = unreachable.connect_lazy().unwrap();
        let channels = shared::channel::Channels::new("notification:");
        AppState {
            hub: Hub::start(
                &unreachable,
                &channels,
                SubscribeMode::PerUser,
                16,
                metrics.hub.clone(),
                shutdown.clone(),
            )
            .unwrap(),
            sync: crate::sync::Sync {
                inbox: None,
                events: crate::sync::events::Publisher::new(
                    redis.clone(),
                    channels.clone(),
                    metrics.state_events.clone(),
                ),
                recovery_max: 500,
                zone: shared::time::Zone::utc(),
                recovery_hook: None,
            },
            channels,
            auth: Authenticator::new(
                redis,
                JwtKeys::parse(&format!("k={SECRET}")).unwrap(),
                "ws-ticket:",
            ),
            limits: Limits {
                session: SessionConfig {
                    insecure_no_auth: true,
                    ..SessionConfig::default()
                },
                max_frame_bytes: 64 * 1024,
                max_headers: 64,
                first_frame_timeout: Duration::from_secs(60),
                send_timeout: Duration::from_secs(10),
                close_on_token_expiry,
            },
            metrics,
            shutdown,
            origins: Origins::new(&[]),
            connections: Arc::new(Semaphore::new(10)),
            pending: Pending::new(1, 0),
        }
    }

    struct Client {
        tx: queue::Sender<Vec<u8>>,
        inlet: Inlet,
        task: tokio::task::JoinHandle<()>,
        app: AppState,
    }

    fn start(buffer: usize) -> Client {
        start_with(buffer, state())
    }

    fn start_with(buffer: usize, app: AppState) -> Client {
        let (tx, from_client) = queue::bounded(16, queue::one);
        let (outlet, inlet) = outlet::channel(buffer);
        let pending = app.pending.enter(Some(CLIENT.into())).unwrap();
        let task = tokio::spawn(run(app.clone(), "test", pending, from_client, outlet));
        Client {
            tx,
            inlet,
            task,
            app,
        }
    }

    async fn next(client: &mut Client) -> ToClient {
        client.inlet.recv().await.expect("engine output")
    }

    fn closes(app: &AppState, reason: &str) -> u64 {
        app.metrics.closes.with_label_values(&[reason]).get()
    }

    async fn connect(client: &mut Client, heart_beat: &str) -> String {
        let frame = format!("CONNECT\naccept-version:1.2\nheart-beat:{heart_beat}\n\n\0");
        client.tx.send(frame.into_bytes()).await.unwrap();
        match next(client).await {
            ToClient::Data(text) => text,
            other => panic!("CONNECTED expected, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn server_beats_every_ten_seconds_and_a_silent_client_is_closed_at_twice_its_period() {
        let mut client = start(64 * 1024);
        let connected = connect(&mut client, "5000,5000").await;
        assert!(connected.contains("heart-beat:10000,10000"), "{connected}");
        let t0 = Instant::now();
        assert_eq!(next(&mut client).await, ToClient::Data("\n".into()));
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        // A client beat at 15 s moves the silence deadline to 15 + 20 s.
        tokio::time::sleep_until(t0 + Duration::from_secs(15)).await;
        client.tx.send(b"\n".to_vec()).await.unwrap();
        assert_eq!(next(&mut client).await, ToClient::Data("\n".into()));
        assert_eq!(t0.elapsed(), Duration::from_secs(20));
        assert_eq!(next(&mut client).await, ToClient::Data("\n".into()));
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(next(&mut client).await, ToClient::Close(End::Silent));
        assert_eq!(t0.elapsed(), Duration::from_secs(35));
        client.task.await.unwrap();
        assert_eq!(closes(&client.app, "heartbeat_timeout"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_heart_beats_nothing_is_sent_and_nobody_is_closed() {
        let mut client = start(64 * 1024);
        // The server states what it can do; with a client that can do nothing, nobody beats.
        let connected = connect(&mut client, "0,0").await;
        assert!(connected.contains("heart-beat:10000,10000"), "{connected}");
        let quiet = tokio::time::timeout(Duration::from_secs(3600), client.inlet.recv()).await;
        assert!(quiet.is_err(), "nothing within an hour: {quiet:?}");
        client
            .tx
            .send(b"DISCONNECT\nreceipt:9\n\n\0".to_vec())
            .await
            .unwrap();
        let receipt = next(&mut client).await;
        assert!(matches!(&receipt, ToClient::Data(t) if t.starts_with("RECEIPT\nreceipt-id:9")));
        assert_eq!(next(&mut client).await, ToClient::Close(End::Done));
    }

    #[tokio::test(start_paused = true)]
    async fn no_connect_within_the_first_frame_timeout_closes() {
        let mut client = start(64 * 1024);
        let t0 = Instant::now();
        assert_eq!(client.app.pending.count(), 1);
        assert_eq!(next(&mut client).await, ToClient::Close(End::NoConnect));
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        client.task.await.unwrap();
        assert_eq!(client.app.pending.count(), 0, "the pending slot is free");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_stops_counting_as_pending_once_connected() {
        let mut client = start(64 * 1024);
        assert_eq!(client.app.pending.count_from(CLIENT.into()), 1);
        connect(&mut client, "0,0").await;
        assert_eq!(client.app.pending.count_from(CLIENT.into()), 0);
        assert_eq!(client.app.pending.count(), 0);
        // The address's one slot is free for its next handshake.
        let next = client.app.pending.enter(Some(CLIENT.into()));
        assert!(next.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_closed_after_the_send_timeout() {
        // A send buffer smaller than CONNECTED + one beat: the beat waits for room.
        let mut client = start(64);
        let frame = b"CONNECT\naccept-version:1.2\nheart-beat:0,1000\n\n\0".to_vec();
        client.tx.send(frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let t0 = Instant::now();
        // Nobody reads: the beat due at 10 s waits 10 s for room, then the session ends.
        let _ = tokio::time::timeout(Duration::from_secs(60), client.task).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(20) - Duration::from_millis(1)
        );
        assert_eq!(closes(&client.app, "send_timeout"), 1);
        assert!(
            matches!(client.inlet.recv().await, Some(ToClient::Data(t)) if t.starts_with("CONNECTED"))
        );
        assert_eq!(
            client.inlet.recv().await,
            Some(ToClient::Close(End::SendTimeout))
        );
    }

    fn bearer_connect(expires_in: u64) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"sub": "u1", "exp": now + expires_in});
        let token = crate::auth::sign_hs256(SECRET.as_bytes(), None, &claims);
        format!("CONNECT\naccept-version:1.2\nheart-beat:0,0\nAuthorization:Bearer {token}\n\n\0")
            .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_with_an_error_frame_when_its_jwt_expires() {
        let mut client = start(64 * 1024);
        client.tx.send(bearer_connect(30)).await.unwrap();
        assert!(matches!(next(&mut client).await, ToClient::Data(t) if t.starts_with("CONNECTED")));
        let t0 = Instant::now();
        let error = next(&mut client).await;
        assert!(
            matches!(&error, ToClient::Data(t) if t.starts_with("ERROR\n") && t.contains("message:JWT expired")),
            "{error:?}"
        );
        // `exp` has whole seconds, and the default leeway (30 s) applies: the session ends
        // within the 60th second.
        let lasted = t0.elapsed();
        assert!(
            lasted > Duration::from_secs(58) && lasted <= Duration::from_secs(60),
            "{lasted:?}"
        );
        assert_eq!(next(&mut client).await, ToClient::Close(End::Expired));
        client.task.await.unwrap();
        assert_eq!(closes(&client.app, "credentials_expired"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_outlive_their_jwt_when_so_configured() {
        let mut client = start_with(64 * 1024, state_with(false));
        client.tx.send(bearer_connect(30)).await.unwrap();
        assert!(matches!(next(&mut client).await, ToClient::Data(t) if t.starts_with("CONNECTED")));
        let quiet = tokio::time::timeout(Duration::from_secs(3600), client.inlet.recv()).await;
        assert!(quiet.is_err(), "nothing within an hour: {quiet:?}");
    }
}
