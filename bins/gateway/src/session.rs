//! The STOMP session state machine, pure: frames in, [`Action`]s out. No I/O and no clock,
//! so every rule is unit-tested; the transports run the actions.
//!
//! CONNECT (or STOMP) → credentials are handed out for checking ([`Action::Authenticate`]),
//! then [`Session::authenticated`] answers CONNECTED (version and heart-beat negotiated) or
//! [`Session::rejected`] answers ERROR and closes. Frames pipelined behind CONNECT wait
//! (at most [`MAX_PENDING_FRAMES`]) and run once CONNECTED is sent. A connected user may SUBSCRIBE only to
//! `/user/queue/notifications` or `/user/{ownId}/queue/notifications`. Clients cannot SEND.
//! Every protocol violation is an ERROR frame with a `message` header, then close.

use std::time::Duration;

use crate::destination::{self, ReadRequest, Target};
use crate::stomp::{Command, Frame, Version};

/// Frames a client may send behind CONNECT before CONNECTED (they wait for authentication).
pub const MAX_PENDING_FRAMES: usize = 16;

/// The user queue (SPEC 3).
pub const USER_QUEUE: &str = destination::NOTIFICATIONS;

/// Session rules that a deployment may change.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// (can send every, want to receive every), in milliseconds; 0 disables.
    pub heartbeat_ms: (u64, u64),
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Dev mode only: no credentials; the user is taken from the subscription path.
    pub insecure_no_auth: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_ms: (10_000, 10_000),
            max_subscriptions: 8,
            insecure_no_auth: false,
        }
    }
}

/// Credentials presented on CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `X-WS-Ticket`: a one-time ticket (Redis `ws-ticket:{uuid}`, consumed once).
    Ticket(String),
    /// `Authorization: Bearer <JWT>`.
    Bearer(String),
}

/// What the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Frame),
    /// Check the credentials, then call [`Session::authenticated`] or [`Session::rejected`].
    Authenticate(Credentials),
    /// Start relaying to this subscription what its target receives. `last_id`: the newest
    /// notification the client holds; send it what is newer first (recovery).
    Subscribe {
        id: String,
        target: Target,
        last_id: Option<i64>,
    },
    /// Mark the session user's notifications read, then send the receipt (if any).
    MarkRead {
        request: ReadRequest,
        receipt: Option<String>,
    },
    Unsubscribe {
        id: String,
    },
    /// Close the connection after sending what came before.
    Close,
}

/// A live subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub destination: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    /// Credentials are being checked; frames that follow CONNECT wait in `pending`.
    Authenticating {
        receipt: Option<String>,
    },
    Connected,
    Closed,
}

/// One client's STOMP session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    version: Version,
    client_heartbeat: (u64, u64),
    user: Option<String>,
    subscriptions: Vec<Subscription>,
    next_message_id: u64,
    /// Frames pipelined behind CONNECT, run once it is answered (bounded).
    pending: Vec<Frame>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            state: State::AwaitingConnect,
            version: Version::V1_2,
            client_heartbeat: (0, 0),
            user: None,
            subscriptions: Vec::new(),
            next_message_id: 0,
            pending: Vec::new(),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// CONNECTED was sent and the session is open.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// (how often the server sends heart-beats, how long without client bytes is too long)
    /// as negotiated; `None` where disabled. The silence limit allows two missed beats.
    pub fn heartbeats(&self) -> (Option<Duration>, Option<Duration>) {
        let (sx, sy) = self.config.heartbeat_ms;
        let (cx, cy) = self.client_heartbeat;
        // A client's period is capped (MAX_HEARTBEAT_MS): no deadline arithmetic overflows.
        let send = (sx > 0 && cy > 0).then(|| Duration::from_millis(sx.max(cy)));
        let expect = (sy > 0 && cx > 0).then(|| Duration::from_millis(2 * sy.max(cx)));
        (send, expect)
    }

    /// Handles one client frame.
    pub fn on_frame(&mut self, frame: Frame) -> Vec<Action> {
        match (&self.state, frame.command) {
            (State::Closed, _) => Vec::new(),
            (State::AwaitingConnect, Command::Connect | Command::Stomp) => self.on_connect(&frame),
            (State::AwaitingConnect, _) => self.fail("Expected CONNECT", None),
            // STOMP allows pipelining: what follows CONNECT waits for the credentials check.
            (State::Authenticating { .. }, _) if self.pending.len() < MAX_PENDING_FRAMES => {
                self.pending.push(frame);
                Vec::new()
            }
            (State::Authenticating { .. }, _) => {
                self.pending.clear();
                self.fail("Too many frames before CONNECTED", None)
            }
            (State::Connected, Command::Connect | Command::Stomp) => {
                self.fail("Already connected", frame.get("receipt"))
            }
            (State::Connected, Command::Subscribe) => self.on_subscribe(&frame),
            (State::Connected, Command::Unsubscribe) => self.on_unsubscribe(&frame),
            (State::Connected, Command::Send) => self.on_send(&frame),
            (State::Connected, Command::Disconnect) => {
                let mut actions = receipt(frame.get("receipt"));
                actions.push(Action::Close);
                self.state = State::Closed;
                actions
            }
            (
                State::Connected,
                Command::Ack | Command::Nack | Command::Begin | Command::Commit | Command::Abort,
            ) => {
                // Messages are auto-acknowledged and there are no transactions to keep.
                receipt(frame.get("receipt"))
            }
            (State::Connected, command) => self.fail(
                &format!("Unexpected {} frame from a client", command.as_str()),
                None,
            ),
        }
    }

    fn on_connect(&mut self, frame: &Frame) -> Vec<Action> {
        let Some(version) = Version::negotiate(frame.get("accept-version")) else {
            return self.fail("Supported protocol versions are 1.0,1.1,1.2", None);
        };
        self.version = version;
        match frame.get("heart-beat").map(parse_heartbeat) {
            Some(Some(beat)) => self.client_heartbeat = beat,
            Some(None) => return self.fail("Invalid heart-beat header", None),
            None => self.client_heartbeat = (0, 0),
        }
        let receipt = frame.get("receipt").map(str::to_owned);
        let credentials = match (frame.get("X-WS-Ticket"), frame.get("Authorization")) {
            (Some(ticket), _) if !ticket.trim().is_empty() => {
                Some(Credentials::Ticket(ticket.trim().to_owned()))
            }
            (_, Some(auth)) => match auth.trim().strip_prefix("Bearer ") {
                Some(token) => Some(Credentials::Bearer(token.trim().to_owned())),
                None => return self.fail("Authorization must be a Bearer token", None),
            },
            _ => None,
        };
        match credentials {
            Some(credentials) => {
                self.state = State::Authenticating { receipt };
                vec![Action::Authenticate(credentials)]
            }
            None if self.config.insecure_no_auth => {
                self.state = State::Authenticating { receipt };
                self.connected(None)
            }
            None => self.fail("Invalid or expired WebSocket ticket", None),
        }
    }

    /// The credentials were valid for `user`: answer CONNECTED.
    pub fn authenticated(&mut self, user: String) -> Vec<Action> {
        self.connected(Some(user))
    }

    /// The credentials were refused: ERROR with `reason`, then close; frames waiting
    /// behind CONNECT are dropped unseen.
    pub fn rejected(&mut self, reason: &str) -> Vec<Action> {
        if !matches!(self.state, State::Authenticating { .. }) {
            return Vec::new();
        }
        self.pending.clear();
        self.fail(reason, None)
    }

    fn connected(&mut self, user: Option<String>) -> Vec<Action> {
        let State::Authenticating { receipt: pending } = &self.state else {
            return Vec::new();
        };
        let pending = pending.clone();
        self.user = user;
        self.state = State::Connected;
        let (sx, sy) = self.config.heartbeat_ms;
        let mut connected = Frame::new(Command::Connected)
            .header("version", self.version.as_str())
            .header("heart-beat", format!("{sx},{sy}"))
            .header("server", "notification-gateway");
        if let Some(user) = &self.user {
            connected = connected.header("user-name", user.clone());
        }
        let mut actions = vec![Action::Send(connected)];
        actions.extend(receipt(pending.as_deref()));
        for frame in std::mem::take(&mut self.pending) {
            actions.extend(self.on_frame(frame));
        }
        actions
    }

    fn on_subscribe(&mut self, frame: &Frame) -> Vec<Action> {
        let receipt_id = frame.get("receipt");
        let Some(destination) = frame.get("destination") else {
            return self.fail("SUBSCRIBE requires a destination", receipt_id);
        };
        let id = match (frame.get("id"), self.version) {
            (Some(id), _) => id.to_owned(),
            (None, Version::V1_0) => destination.to_owned(),
            (None, _) => return self.fail("SUBSCRIBE requires an id", receipt_id),
        };
        if self.subscriptions.iter().any(|s| s.id == id) {
            return self.fail("Subscription id already in use", receipt_id);
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            return self.fail("Too many subscriptions", receipt_id);
        }
        let Some((target, named)) = destination::parse(destination) else {
            return self.fail(&format!("Cannot subscribe to {destination}"), receipt_id);
        };
        match (&self.user, named) {
            (Some(own), Some(named)) if own != named => {
                return self.fail("Cannot subscribe to another user's queue", receipt_id);
            }
            (Some(_), _) => {}
            // Dev mode: the first user queue names the session's user, for good.
            (None, Some(named)) if self.config.insecure_no_auth => {
                self.user = Some(named.to_owned());
            }
            (None, _) if target == Target::TimeDeals => {}
            (None, _) => return self.fail("Authentication required", receipt_id),
        }
        let last_id = match (target, frame.get("last-id")) {
            (Target::Notifications, Some(text)) => match text.trim().parse::<i64>() {
                Ok(id) if id >= 0 => Some(id),
                _ => return self.fail("Invalid last-id header", receipt_id),
            },
            _ => None,
        };
        // Exact: most sessions hold one subscription for hours; a doubling Vec would keep
        // room for four.
        self.subscriptions.reserve_exact(1);
        self.subscriptions.push(Subscription {
            id: id.clone(),
            destination: destination.to_owned(),
            target,
        });
        let mut actions = vec![Action::Subscribe {
            id,
            target,
            last_id,
        }];
        actions.extend(receipt(receipt_id));
        actions
    }

    fn on_send(&mut self, frame: &Frame) -> Vec<Action> {
        let receipt_id = frame.get("receipt");
        if frame.get("destination") != Some(destination::READ) {
            return self.fail(
                "Clients may only send to /app/notifications.read",
                receipt_id,
            );
        }
        if self.user.is_none() {
            return self.fail("Authentication required", receipt_id);
        }
        match destination::read_request(&frame.body) {
            Ok(request) => vec![Action::MarkRead {
                request,
                receipt: receipt_id.map(str::to_owned),
            }],
            Err(reason) => self.fail(reason, receipt_id),
        }
    }

    /// The RECEIPT for `id`, once the work it acknowledges is done.
    pub fn receipt(&self, id: &str) -> Frame {
        Frame::new(Command::Receipt).header("receipt-id", id)
    }

    fn on_unsubscribe(&mut self, frame: &Frame) -> Vec<Action> {
        let receipt_id = frame.get("receipt");
        let id = match (frame.get("id"), frame.get("destination"), self.version) {
            (Some(id), _, _) => id.to_owned(),
            (None, Some(destination), Version::V1_0) => destination.to_owned(),
            _ => return self.fail("UNSUBSCRIBE requires an id", receipt_id),
        };
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| s.id != id);
        let mut actions = Vec::new();
        if self.subscriptions.len() < before {
            actions.push(Action::Unsubscribe { id });
        }
        actions.extend(receipt(receipt_id));
        actions
    }

    /// Something the session asked for failed (the store is away, say): ERROR with
    /// `reason`, then close; the client reconnects.
    pub fn abort(&mut self, reason: &str) -> Vec<Action> {
        if self.state == State::Closed {
            return Vec::new();
        }
        self.fail(reason, None)
    }

    /// The session's credentials expired: ERROR saying so, then close.
    pub fn expired(&mut self) -> Vec<Action> {
        if self.state != State::Connected {
            return Vec::new();
        }
        self.fail("JWT expired", None)
    }

    /// The MESSAGE frame delivering `body` (notification JSON) on `subscription`: the
    /// reference that [`Session::message_text`] is tested against.
    #[cfg(test)]
    pub fn message(&mut self, subscription: &Subscription, body: &str) -> Frame {
        self.next_message_id += 1;
        Frame::new(Command::Message)
            .header("destination", subscription.destination.clone())
            .header("subscription", subscription.id.clone())
            .header("message-id", self.next_message_id.to_string())
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
    }

    /// The wire text of [`Session::message`] on subscription `index`, built in one buffer
    /// (the delivery path): the same bytes `encode` would produce.
    pub fn message_text(&mut self, index: usize, body: &str) -> String {
        self.message_text_with(index, body, None)
    }

    /// [`Session::message_text`] with one more header (plain token name and value).
    pub fn message_text_with(
        &mut self,
        index: usize,
        body: &str,
        extra: Option<(&str, &str)>,
    ) -> String {
        use std::fmt::Write as _;
        self.next_message_id += 1;
        let version = self.version;
        let subscription = &self.subscriptions[index];
        let mut out = String::with_capacity(160 + body.len());
        out.push_str("MESSAGE\ndestination:");
        crate::stomp::codec::escape_text(&mut out, &subscription.destination, version);
        out.push_str("\nsubscription:");
        crate::stomp::codec::escape_text(&mut out, &subscription.id, version);
        let _ = write!(
            out,
            "\nmessage-id:{}\ncontent-type:application/json\n",
            self.next_message_id
        );
        if let Some((name, value)) = extra {
            let _ = writeln!(out, "{name}:{value}");
        }
        if !body.is_empty() {
            let _ = writeln!(out, "content-length:{}", body.len());
        }
        out.push('\n');
        out.push_str(body);
        out.push('\0');
        out
    }

    fn fail(&mut self, message: &str, receipt_id: Option<&str>) -> Vec<Action> {
        self.state = State::Closed;
        let mut error = Frame::new(Command::Error)
            .header("message", message)
            .header("content-type", "text/plain");
        if let Some(id) = receipt_id {
            error = error.header("receipt-id", id);
        }
        vec![
            Action::Send(error.body(message.as_bytes().to_vec())),
            Action::Close,
        ]
    }
}

fn receipt(id: Option<&str>) -> Vec<Action> {
    id.map(|id| Action::Send(Frame::new(Command::Receipt).header("receipt-id", id)))
        .into_iter()
        .collect()
}

/// The longest heart-beat period a client may ask for: a day (longer means "none" in
/// practice, and bounded periods keep every deadline computable).
const MAX_HEARTBEAT_MS: u64 = 86_400_000;

fn parse_heartbeat(value: &str) -> Option<(u64, u64)> {
    let (x, y) = value.split_once(',')?;
    let period = |text: &str| {
        text.trim()
            .parse::<u64>()
            .ok()
            .map(|ms| ms.min(MAX_HEARTBEAT_MS))
    };
    Some((period(x)?, period(y)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(headers: &[(&str, &str)]) -> Frame {
        headers
            .iter()
            .fold(Frame::new(Command::Connect), |f, (k, v)| f.header(*k, *v))
    }

    fn subscribe(id: &str, destination: &str) -> Frame {
        Frame::new(Command::Subscribe)
            .header("id", id)
            .header("destination", destination)
    }

    fn error_message(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::Send(f) if f.command == Command::Error => f.get("message").map(str::to_owned),
            _ => None,
        })
    }

    fn connected_as(user: &str) -> Session {
        let mut s = Session::new(SessionConfig::default());
        let actions = s.on_frame(connect(&[
            ("accept-version", "1.1,1.2"),
            ("heart-beat", "10000,10000"),
            ("X-WS-Ticket", "t-1"),
        ]));
        assert_eq!(
            actions,
            vec![Action::Authenticate(Credentials::Ticket("t-1".into()))]
        );
        let actions = s.authenticated(user.into());
        let Action::Send(f) = &actions[0] else {
            panic!()
        };
        assert_eq!(f.command, Command::Connected);
        s
    }

    #[test]
    fn connect_negotiates_version_and_heartbeats() {
        let s = connected_as("u1");
        assert_eq!(s.version(), Version::V1_2);
        assert_eq!(
            s.heartbeats(),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(20)))
        );
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[
            ("Authorization", "Bearer abc.def.ghi"),
            ("heart-beat", "0,0"),
        ]));
        let actions = s.authenticated("u2".into());
        let Action::Send(f) = &actions[0] else {
            panic!()
        };
        assert_eq!(f.get("version"), Some("1.0"), "no accept-version means 1.0");
        assert_eq!(f.get("heart-beat"), Some("10000,10000"));
        assert_eq!(s.heartbeats(), (None, None));
    }

    #[test]
    fn connect_without_credentials_or_with_a_bad_version_is_refused() {
        let mut s = Session::new(SessionConfig::default());
        let actions = s.on_frame(connect(&[("accept-version", "1.2")]));
        assert_eq!(
            error_message(&actions).as_deref(),
            Some("Invalid or expired WebSocket ticket")
        );
        assert_eq!(actions.last(), Some(&Action::Close));
        assert!(s.is_closed());
        let mut s = Session::new(SessionConfig::default());
        let actions = s.on_frame(connect(&[("accept-version", "2.0"), ("X-WS-Ticket", "t")]));
        assert_eq!(
            error_message(&actions).as_deref(),
            Some("Supported protocol versions are 1.0,1.1,1.2")
        );
        let mut s = Session::new(SessionConfig::default());
        let actions = s.on_frame(connect(&[("X-WS-Ticket", "t"), ("heart-beat", "soon")]));
        assert_eq!(
            error_message(&actions).as_deref(),
            Some("Invalid heart-beat header")
        );
    }

    #[test]
    fn rejected_credentials_end_in_an_error_frame() {
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[("X-WS-Ticket", "expired")]));
        let actions = s.rejected("Invalid or expired WebSocket ticket");
        assert_eq!(
            error_message(&actions).as_deref(),
            Some("Invalid or expired WebSocket ticket")
        );
        assert!(s.is_closed());
        assert!(
            s.on_frame(subscribe("0", USER_QUEUE)).is_empty(),
            "nothing after close"
        );
    }

    #[test]
    fn huge_heart_beats_are_capped_not_overflowed() {
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[
            ("X-WS-Ticket", "t"),
            ("heart-beat", "18446744073709551615,18446744073709551615"),
        ]));
        s.authenticated("u1".into());
        let (send, expect) = s.heartbeats();
        assert_eq!(send, Some(Duration::from_millis(MAX_HEARTBEAT_MS)));
        assert_eq!(expect, Some(Duration::from_millis(2 * MAX_HEARTBEAT_MS)));
    }

    #[test]
    fn frames_before_connect_are_errors() {
        let mut s = Session::new(SessionConfig::default());
        assert_eq!(
            error_message(&s.on_frame(subscribe("0", USER_QUEUE))).as_deref(),
            Some("Expected CONNECT")
        );
    }

    #[test]
    fn frames_pipelined_behind_connect_run_in_order_once_authenticated() {
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[("X-WS-Ticket", "t")]));
        assert!(
            s.on_frame(subscribe("0", USER_QUEUE).header("receipt", "r0"))
                .is_empty()
        );
        assert!(
            s.on_frame(subscribe("1", "/user/u1/queue/notifications"))
                .is_empty()
        );
        let actions = s.authenticated("u1".into());
        assert!(matches!(&actions[0], Action::Send(f) if f.command == Command::Connected));
        assert_eq!(
            actions[1..],
            [
                Action::Subscribe {
                    id: "0".into(),
                    target: Target::Notifications,
                    last_id: None,
                },
                Action::Send(Frame::new(Command::Receipt).header("receipt-id", "r0")),
                Action::Subscribe {
                    id: "1".into(),
                    target: Target::Notifications,
                    last_id: None,
                },
            ]
        );
        // Refused credentials: the waiting frames are dropped unseen.
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[("X-WS-Ticket", "t")]));
        s.on_frame(subscribe("0", USER_QUEUE).header("receipt", "r0"));
        let actions = s.rejected("Invalid or expired WebSocket ticket");
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert_eq!(actions[1], Action::Close);
    }

    #[test]
    fn frames_waiting_for_authentication_are_bounded() {
        let mut s = Session::new(SessionConfig::default());
        s.on_frame(connect(&[("X-WS-Ticket", "t")]));
        for n in 0..MAX_PENDING_FRAMES {
            assert!(s.on_frame(subscribe(&n.to_string(), USER_QUEUE)).is_empty());
        }
        assert_eq!(
            error_message(&s.on_frame(subscribe("x", USER_QUEUE))).as_deref(),
            Some("Too many frames before CONNECTED")
        );
        assert!(s.is_closed());
        assert!(s.authenticated("u1".into()).is_empty(), "closed for good");
    }

    #[test]
    fn a_user_subscribes_to_its_own_queue_both_ways_only() {
        let mut s = connected_as("u1");
        assert_eq!(
            s.on_frame(subscribe("a", USER_QUEUE).header("receipt", "r1")),
            vec![
                Action::Subscribe {
                    id: "a".into(),
                    target: Target::Notifications,
                    last_id: None,
                },
                Action::Send(Frame::new(Command::Receipt).header("receipt-id", "r1")),
            ]
        );
        assert_eq!(
            s.on_frame(subscribe("b", "/user/u1/queue/notifications")),
            vec![Action::Subscribe {
                id: "b".into(),
                target: Target::Notifications,
                last_id: None,
            }]
        );
        let actions = s.on_frame(subscribe("c", "/user/u2/queue/notifications"));
        assert_eq!(
            error_message(&actions).as_deref(),
            Some("Cannot subscribe to another user's queue")
        );
        assert!(s.is_closed());

        for destination in [
            "/topic/anything",
            "/queue/notifications",
            "/user//queue/notifications",
            "/user/a/b/queue/notifications",
        ] {
            let mut s = connected_as("u1");
            let actions = s.on_frame(subscribe("x", destination));
            assert!(
                error_message(&actions).is_some(),
                "{destination} must be refused"
            );
        }
    }

    #[test]
    fn subscription_ids_are_unique_and_limited() {
        let mut s = connected_as("u1");
        s.on_frame(subscribe("a", USER_QUEUE));
        assert_eq!(
            error_message(&s.on_frame(subscribe("a", USER_QUEUE))).as_deref(),
            Some("Subscription id already in use")
        );
        let mut s = connected_as("u1");
        for i in 0..8 {
            assert!(error_message(&s.on_frame(subscribe(&i.to_string(), USER_QUEUE))).is_none());
        }
        assert_eq!(
            error_message(&s.on_frame(subscribe("9", USER_QUEUE))).as_deref(),
            Some("Too many subscriptions")
        );
    }

    #[test]
    fn clients_send_only_read_marks() {
        for destination in [
            "/topic/x",
            "/queue/x",
            "/user/u2/queue/notifications",
            "/app/x",
            "/topic/timedeals",
        ] {
            let mut s = connected_as("u1");
            let frame = Frame::new(Command::Send)
                .header("destination", destination)
                .body(b"hi".to_vec());
            assert_eq!(
                error_message(&s.on_frame(frame)).as_deref(),
                Some("Clients may only send to /app/notifications.read"),
                "{destination}"
            );
        }
        let mut s = connected_as("u1");
        let read = Frame::new(Command::Send)
            .header("destination", "/app/notifications.read")
            .header("receipt", "r9")
            .body(br#"{"ids":[4,5]}"#.to_vec());
        assert_eq!(
            s.on_frame(read),
            vec![Action::MarkRead {
                request: ReadRequest::Ids(vec![4, 5]),
                receipt: Some("r9".into())
            }]
        );
        let bad = Frame::new(Command::Send)
            .header("destination", "/app/notifications.read")
            .body(b"{}".to_vec());
        assert!(error_message(&s.on_frame(bad)).is_some());
    }

    #[test]
    fn state_and_time_deal_subscriptions_and_last_id() {
        let mut s = connected_as("u1");
        assert_eq!(
            s.on_frame(subscribe("n", USER_QUEUE).header("last-id", "41")),
            vec![Action::Subscribe {
                id: "n".into(),
                target: Target::Notifications,
                last_id: Some(41),
            }]
        );
        assert_eq!(
            s.on_frame(subscribe("s", "/user/u1/queue/notification-state")),
            vec![Action::Subscribe {
                id: "s".into(),
                target: Target::State,
                last_id: None,
            }]
        );
        assert_eq!(
            s.on_frame(subscribe("t", "/topic/timedeals")),
            vec![Action::Subscribe {
                id: "t".into(),
                target: Target::TimeDeals,
                last_id: None,
            }]
        );
        let mut s = connected_as("u1");
        assert_eq!(
            error_message(&s.on_frame(subscribe("x", "/user/u2/queue/notification-state")))
                .as_deref(),
            Some("Cannot subscribe to another user's queue")
        );
        let mut s = connected_as("u1");
        assert_eq!(
            error_message(&s.on_frame(subscribe("x", USER_QUEUE).header("last-id", "-1")))
                .as_deref(),
            Some("Invalid last-id header")
        );
    }

    #[test]
    fn unsubscribe_and_disconnect_with_receipts() {
        let mut s = connected_as("u1");
        s.on_frame(subscribe("a", USER_QUEUE));
        assert_eq!(
            s.on_frame(Frame::new(Command::Unsubscribe).header("id", "a")),
            vec![Action::Unsubscribe { id: "a".into() }]
        );
        assert!(s.subscriptions().is_empty());
        assert_eq!(
            s.on_frame(Frame::new(Command::Disconnect).header("receipt", "bye")),
            vec![
                Action::Send(Frame::new(Command::Receipt).header("receipt-id", "bye")),
                Action::Close
            ]
        );
    }

    #[test]
    fn messages_carry_the_subscribed_destination_and_unique_ids() {
        let mut s = connected_as("u1");
        s.on_frame(subscribe("sub-0", "/user/u1/queue/notifications"));
        let sub = s.subscriptions()[0].clone();
        let first = s.message(&sub, "{\"id\":1}");
        let second = s.message(&sub, "{\"id\":2}");
        assert_eq!(
            first.get("destination"),
            Some("/user/u1/queue/notifications")
        );
        assert_eq!(first.get("subscription"), Some("sub-0"));
        assert_eq!(first.get("content-type"), Some("application/json"));
        assert_ne!(first.get("message-id"), second.get("message-id"));
        assert_eq!(first.body.as_ref(), b"{\"id\":1}");
    }

    #[test]
    fn message_text_is_exactly_the_encoded_frame() {
        use crate::stomp::encode;
        for version in ["1.0", "1.1", "1.2"] {
            let mut s = Session::new(SessionConfig {
                insecure_no_auth: true,
                ..SessionConfig::default()
            });
            s.on_frame(connect(&[("accept-version", version)]));
            // An id with every character that needs escaping in some version.
            s.on_frame(subscribe("a:b\\c\rd", "/user/u1/queue/notifications"));
            assert_eq!(s.subscriptions().len(), 1, "{version}");
            let sub = s.subscriptions()[0].clone();
            for body in ["{\"id\":1,\"m\":\"주문 😀\"}", ""] {
                let frame = s.message(&sub, body);
                s.next_message_id -= 1; // the same message id again
                let text = s.message_text(0, body);
                assert_eq!(text.as_bytes(), encode(&frame, s.version()), "{version}");
            }
        }
    }

    #[test]
    fn insecure_mode_takes_the_user_from_the_path() {
        let insecure = || {
            let mut s = Session::new(SessionConfig {
                insecure_no_auth: true,
                ..SessionConfig::default()
            });
            let actions = s.on_frame(connect(&[("accept-version", "1.2")]));
            assert!(matches!(&actions[0], Action::Send(f) if f.command == Command::Connected));
            s
        };
        let mut s = insecure();
        assert_eq!(
            s.on_frame(subscribe("a", "/user/demo/queue/notifications")),
            vec![Action::Subscribe {
                id: "a".into(),
                target: Target::Notifications,
                last_id: None,
            }]
        );
        let mut s = insecure();
        assert_eq!(
            error_message(&s.on_frame(subscribe("b", USER_QUEUE))).as_deref(),
            Some("Authentication required")
        );
    }

    #[test]
    fn insecure_mode_binds_a_session_to_its_first_user() {
        let mut s = Session::new(SessionConfig {
            insecure_no_auth: true,
            ..SessionConfig::default()
        });
        s.on_frame(connect(&[("accept-version", "1.2")]));
        s.on_frame(subscribe("a", "/user/demo/queue/notifications"));
        assert_eq!(s.user(), Some("demo"));
        assert_eq!(
            s.on_frame(subscribe("b", USER_QUEUE)),
            vec![Action::Subscribe {
                id: "b".into(),
                target: Target::Notifications,
                last_id: None,
            }]
        );
        // Another user's queue on the same session would get the first user's messages.
        assert_eq!(
            error_message(&s.on_frame(subscribe("c", "/user/other/queue/notifications")))
                .as_deref(),
            Some("Cannot subscribe to another user's queue")
        );
    }
}
