//! Browser-like STOMP sessions for the delivery cases: each is one user on a raw WebSocket
//! to a gateway, authenticated with a JWT, subscribed to its notifications queue with
//! `last-id` (the newest id it holds, 0 at first) as the README's client snippet does. A
//! session whose connection ends reconnects after a short random delay, to the same
//! gateway first and to the next one when that refuses, as a client behind a load
//! balancer would; it counts every notification id it receives, so that a case can tell
//! lost, duplicated and unexpected deliveries per user. Sessions connect from 250 loopback
//! addresses (127.0.1.1 to 127.0.1.250), so the gateway's per-address limits see many
//! clients rather than one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest wait for one connection attempt: TCP, WebSocket handshake, CONNECT, and the
/// RECEIPT of the SUBSCRIBE (which comes after the recovered notifications).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// First sessions opening at once (the rest wait for a slot).
const OPENING_AT_ONCE: usize = 64;
/// The back-off after a failed attempt doubles from this, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for a session's task to end when the fleet stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The queue every session subscribes to.
const QUEUE: &str = "/user/queue/notifications";

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// What every session of a fleet shares.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Session `i` is user `users[i]`.
    pub users: Vec<String>,
    /// The gateways' public listeners; session `i` starts on `gateways[i % len]`.
    pub gateways: Vec<String>,
    /// The HS256 secret and its `kid` in the gateways' `JWT_KEYS`.
    pub jwt_kid: String,
    pub jwt_secret: String,
    /// A session waits a random time up to this before it reconnects.
    pub reconnect_delay: Duration,
    /// A session that cannot connect anywhere for this long gives up (and says why).
    pub give_up: Duration,
}

/// Why a session's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The gateway closed it or it broke (a killed gateway, an ERROR frame).
    Lost,
    /// The case told the session to reconnect (churn): it closed the connection itself.
    Churn,
}

/// What one session did and received.
#[derive(Debug, Default)]
pub struct SessionLog {
    pub user: String,
    /// Every notification id received, with how many times.
    pub received: HashMap<i64, u32>,
    /// The newest id received: the next SUBSCRIBE's `last-id`.
    pub newest: i64,
    /// The gateway it is connected to now (an index into [`FleetSpec::gateways`]).
    pub on: Option<usize>,
    /// Completed connections (CONNECTED and the RECEIPT of its SUBSCRIBE).
    pub connects: u32,
    /// Each reconnect: why the connection before ended, when, and how long until the new
    /// subscription's RECEIPT (the recovered notifications come before it).
    pub reconnects: Vec<(Ending, Instant, Duration)>,
    /// Attempts that failed (refused, an ERROR frame, no RECEIPT in time).
    pub failed_attempts: u32,
    pub last_failure: Option<String>,
    /// ERROR frames on established connections.
    pub errors: u32,
    /// Notifications that came before the RECEIPT of a SUBSCRIBE after a reconnect: what
    /// the gateway recovered from the store.
    pub recovered: u32,
    /// Recoveries that said `recovery-truncated:true`.
    pub truncated: u32,
    /// Why it gave up, when it did.
    pub gave_up: Option<String>,
}

/// Per-user lost, duplicated and unexpected deliveries.
#[derive(Debug, Default)]
pub struct Delivery {
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    /// Notifications recovered from the store on a reconnect.
    pub recovered: usize,
    /// A few lost (user, id) pairs, for the notes.
    pub lost_examples: Vec<(String, i64)>,
    pub duplicated_examples: Vec<(String, i64)>,
}

struct Session {
    log: Arc<Mutex<SessionLog>>,
    churn: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Many sessions, each a task of its own.
pub struct Fleet {
    sessions: Vec<Session>,
    stop: CancellationToken,
    connected: Arc<AtomicUsize>,
}

impl Fleet {
    /// Starts every session of `spec` (at most [`OPENING_AT_ONCE`] opening at a time);
    /// [`Fleet::wait_connected`] waits for them.
    pub fn start(spec: FleetSpec) -> Fleet {
        let spec = Arc::new(spec);
        let stop = CancellationToken::new();
        let connected = Arc::new(AtomicUsize::new(0));
        let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
        let exp = chrono::Utc::now().timestamp() + 6 * 3600;
        let sessions = (0..spec.users.len())
            .map(|index| {
                let log = Arc::new(Mutex::new(SessionLog {
                    user: spec.users[index].clone(),
                    ..SessionLog::default()
                }));
                let churn = Arc::new(Notify::new());
                let token = gateway::auth::sign_hs256(
                    spec.jwt_secret.as_bytes(),
                    Some(&spec.jwt_kid),
                    &serde_json::json!({"sub": spec.users[index], "exp": exp}),
                );
                let runner = Runner {
                    index,
                    spec: spec.clone(),
                    token,
                    log: log.clone(),
                    churn: churn.clone(),
                    stop: stop.clone(),
                    connected: connected.clone(),
                    opening: opening.clone(),
                };
                Session {
                    log,
                    churn,
                    task: tokio::spawn(runner.run()),
                }
            })
            .collect();
        Fleet {
            sessions,
            stop,
            connected,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions connected and subscribed now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Waits until every session is connected and subscribed, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.connected() < self.len() {
            if let Some(why) = self.with_logs(|logs| logs.iter().find_map(|l| l.gave_up.clone())) {
                anyhow::bail!("a session gave up connecting: {why}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {} sessions connected within {timeout:?}; a failure: {:?}",
                self.connected(),
                self.len(),
                self.with_logs(|logs| logs.iter().find_map(|l| l.last_failure.clone()))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The sessions connected to gateway `gateway` now.
    pub fn on_gateway(&self, gateway: usize) -> Vec<usize> {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.log.lock().expect("session").on == Some(gateway))
            .map(|(i, _)| i)
            .collect()
    }

    /// Tells session `index` to close its connection and reconnect with `last-id`; false
    /// (and nothing done) when it is not connected now.
    pub fn churn(&self, index: usize) -> bool {
        let session = &self.sessions[index];
        if session.log.lock().expect("session").on.is_none() {
            return false;
        }
        session.churn.notify_one();
        true
    }

    /// Runs `f` over every session's log (locked one after another, then all together).
    pub fn with_logs<R>(&self, f: impl FnOnce(&[std::sync::MutexGuard<'_, SessionLog>]) -> R) -> R {
        let guards: Vec<_> = self
            .sessions
            .iter()
            .map(|s| s.log.lock().expect("session"))
            .collect();
        f(&guards)
    }

    /// Distinct notification ids received, over all sessions.
    pub fn distinct_received(&self) -> usize {
        self.with_logs(|logs| logs.iter().map(|l| l.received.len()).sum())
    }

    /// Waits until every session holds every id `expected` names for its user, at most
    /// `timeout`; when that was, `None` when it timed out.
    pub async fn wait_delivered(
        &self,
        expected: &HashMap<String, HashSet<i64>>,
        timeout: Duration,
    ) -> Option<Instant> {
        let started = Instant::now();
        loop {
            let missing = self.with_logs(|logs| {
                logs.iter()
                    .map(|l| {
                        expected.get(&l.user).map_or(0, |ids| {
                            ids.iter().filter(|id| !l.received.contains_key(id)).count()
                        })
                    })
                    .sum::<usize>()
            });
            if missing == 0 {
                return Some(Instant::now());
            }
            if started.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lost, duplicated and unexpected deliveries against `expected` (each user's ids).
    pub fn delivery(&self, expected: &HashMap<String, HashSet<i64>>) -> Delivery {
        let none = HashSet::new();
        self.with_logs(|logs| {
            let mut out = Delivery::default();
            for log in logs {
                let ids = expected.get(&log.user).unwrap_or(&none);
                out.expected += ids.len();
                for id in ids {
                    match log.received.get(id) {
                        Some(times) => {
                            out.delivered += 1;
                            if *times > 1 {
                                out.duplicated += (*times - 1) as usize;
                                if out.duplicated_examples.len() < 5 {
                                    out.duplicated_examples.push((log.user.clone(), *id));
                                }
                            }
                        }
                        None => {
                            out.lost += 1;
                            if out.lost_examples.len() < 5 {
                                out.lost_examples.push((log.user.clone(), *id));
                            }
                        }
                    }
                }
                out.unexpected += log.received.keys().filter(|id| !ids.contains(id)).count();
                out.recovered += log.recovered as usize;
            }
            out
        })
    }

    /// Every reconnect of every session: (why the connection ended, when, how long).
    pub fn reconnects(&self) -> Vec<(Ending, Instant, Duration)> {
        self.with_logs(|logs| {
            logs.iter()
                .flat_map(|l| l.reconnects.iter().copied())
                .collect()
        })
    }

    /// Stops every session (each closes its connection) and waits for their tasks.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for session in &mut self.sessions {
            if tokio::time::timeout(STOP_TIMEOUT, &mut session.task)
                .await
                .is_err()
            {
                session.task.abort();
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        for session in &self.sessions {
            session.task.abort();
        }
    }
}

/// The loopback address session `index` connects from.
fn source_addr(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (index % 250) as u8))
}

/// One session's task and what it needs.
struct Runner {
    index: usize,
    spec: Arc<FleetSpec>,
    token: String,
    log: Arc<Mutex<SessionLog>>,
    churn: Arc<Notify>,
    stop: CancellationToken,
    connected: Arc<AtomicUsize>,
    opening: Arc<Semaphore>,
}

impl Runner {
    /// Connects, serves until the connection ends, and reconnects, until the fleet stops
    /// or no gateway has taken the session for [`FleetSpec::give_up`].
    async fn run(self) {
        let gateways = self.spec.gateways.len();
        let mut target = self.index % gateways;
        let mut ended: Option<(Ending, Instant)> = None;
        let mut failing_since: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let first = self.log.lock().expect("session").connects == 0;
            let permit = match first {
                true => self.opening.clone().acquire_owned().await.ok(),
                false => None,
            };
            let attempt = tokio::select! {
                _ = self.stop.cancelled() => return,
                attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.open(target)) => attempt,
            };
            drop(permit);
            let why = match attempt {
                Ok(Ok(ws)) => Ok(ws),
                Ok(Err(err)) => Err(format!("{err:#}")),
                Err(_) => Err(format!("no RECEIPT within {ATTEMPT_TIMEOUT:?}")),
            };
            let ws = match why {
                Ok(ws) => ws,
                Err(why) => {
                    let Some(backoff) = self.failed(&mut failing_since, &mut failures, why) else {
                        return;
                    };
                    target = (target + 1) % gateways;
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            };
            failing_since = None;
            failures = 0;
            {
                let mut log = self.log.lock().expect("session");
                log.connects += 1;
                log.on = Some(target);
                if let Some((why, at)) = ended.take() {
                    log.reconnects.push((why, at, at.elapsed()));
                }
            }
            self.connected.fetch_add(1, Ordering::SeqCst);
            let ending = self.serve(ws).await;
            self.connected.fetch_sub(1, Ordering::SeqCst);
            self.log.lock().expect("session").on = None;
            let Some(ending) = ending else { return };
            ended = Some((ending, Instant::now()));
            let delay = self
                .spec
                .reconnect_delay
                .mul_f64(rand::rng().random_range(0.0..1.0));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Notes a failed attempt: the back-off before the next one, `None` when the session
    /// gives up.
    fn failed(
        &self,
        since: &mut Option<Instant>,
        failures: &mut u32,
        why: String,
    ) -> Option<Duration> {
        let first = *since.get_or_insert_with(Instant::now);
        let mut log = self.log.lock().expect("session");
        log.failed_attempts += 1;
        if first.elapsed() >= self.spec.give_up {
            log.gave_up = Some(format!(
                "{}: nothing took it for {:?}; last: {why}",
                log.user, self.spec.give_up
            ));
            return None;
        }
        log.last_failure = Some(why);
        // Doubling from the first failure; the first retry (the next gateway) is at once.
        let backoff = match *failures {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1 << (n - 1).min(6))
                .min(MAX_BACKOFF),
        };
        *failures += 1;
        Some(backoff)
    }

    /// One connection: TCP from the session's address, the WebSocket handshake, CONNECT
    /// and SUBSCRIBE (with `last-id`) sent together; returns once the RECEIPT came, the
    /// notifications before it (recovered ones) already counted.
    async fn open(&self, target: usize) -> anyhow::Result<Ws> {
        let gateway = &self.spec.gateways[target];
        let addr: SocketAddr = gateway.parse().context("a gateway address")?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source_addr(self.index), 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{gateway}/ws/notifications/websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        let newest = self.log.lock().expect("session").newest;
        let frames = format!(
            "CONNECT\naccept-version:1.2\nhost:{gateway}\nheart-beat:0,0\n\
             Authorization:Bearer {}\n\n\0\
             SUBSCRIBE\nid:n\ndestination:{QUEUE}\nreceipt:subscribed\nlast-id:{newest}\n\n\0",
            self.token
        );
        ws.send(Message::Text(frames.into())).await?;
        loop {
            let text = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => anyhow::bail!("closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err.into()),
                None => anyhow::bail!("closed"),
            };
            let mut subscribed = false;
            for frame in frames_of(&text) {
                match self.take(frame) {
                    Frame::Receipt => subscribed = true,
                    Frame::Error(message) => anyhow::bail!("ERROR {message}"),
                    Frame::Message if !subscribed => {
                        let mut log = self.log.lock().expect("session");
                        if log.connects > 0 {
                            log.recovered += 1;
                        }
                    }
                    Frame::Message | Frame::Other => {}
                }
            }
            if subscribed {
                return Ok(ws);
            }
        }
    }

    /// Reads until the connection ends (`Lost`), the case churns it (`Churn`), or the
    /// fleet stops (`None`).
    async fn serve(&self, mut ws: Ws) -> Option<Ending> {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return None;
                }
                _ = self.churn.notified() => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return Some(Ending::Churn);
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        for frame in frames_of(&text) {
                            if let Frame::Error(_) = self.take(frame) {
                                self.log.lock().expect("session").errors += 1;
                                return Some(Ending::Lost);
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Some(Ending::Lost),
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Counts a MESSAGE's notification; tells what the frame was.
    fn take(&self, frame: &str) -> Frame {
        let (command, rest) = frame.split_once('\n').unwrap_or((frame, ""));
        let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
        match command {
            "MESSAGE" => {
                let body = body.trim_end_matches('\0');
                let id = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|json| json["id"].as_i64());
                let mut log = self.log.lock().expect("session");
                if head.lines().any(|l| l == "recovery-truncated:true") {
                    log.truncated += 1;
                }
                if let Some(id) = id {
                    *log.received.entry(id).or_default() += 1;
                    log.newest = log.newest.max(id);
                }
                Frame::Message
            }
            "RECEIPT" => Frame::Receipt,
            "ERROR" => Frame::Error(
                head.lines()
                    .find_map(|l| l.strip_prefix("message:"))
                    .unwrap_or(body)
                    .to_owned(),
            ),
            _ => Frame::Other,
        }
    }
}

enum Frame {
    Message,
    Receipt,
    Error(String),
    Other,
}

/// The STOMP frames of one WebSocket text message (heart-beat newlines dropped).
fn frames_of(text: &str) -> impl Iterator<Item = &str> {
    text.split('\0')
        .map(|f| f.trim_start_matches(['\n', '\r']))
        .filter(|f| !f.is_empty())
}
