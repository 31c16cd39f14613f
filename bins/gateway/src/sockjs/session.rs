//! The HTTP transports' sessions: created by a first receiving request, kept while a
//! receiver is attached and for the disconnect delay after the last one left.
//!
//! A session's output waits in the application's [`Inlet`] (bounded in bytes by the outlet)
//! until a receiver takes it; the budget comes back when a receiver takes the text. A
//! watcher forgets the session once it has had no receiver, or has been closed, for the
//! disconnect delay. The polling, streaming and sending transports are built on it.
//!
//! A session belongs to the client that created it ([`Owner`]): a request for it from any
//! other client is answered 404, as if it did not exist, before it attaches, reads or
//! sends anything, so whoever learns a session's URL can neither read nor write it nor
//! end it.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::{Client, Owner, jsessionid, new_jsessionid};
use super::framing::sockjs_close;
use super::{Application, Connection, Options, Refusal, Service, cors, framing, no_cache};
use crate::outlet::{self, Inlet, ToClient};
use crate::queue;

/// Client messages queued toward the application.
const FROM_CLIENT_QUEUE: usize = 16;
/// Receiver aborted by the client: the session ends.
const INTERRUPTED: (u16, &str) = (1002, "Connection interrupted");
const ANOTHER_CONNECTION: (u16, &str) = (2010, "Another connection still open");

pub(super) struct HttpSession {
    /// Who may use the session.
    owner: Owner,
    /// The application's input; taken (closing it) when the session ends.
    to_app: Mutex<Option<queue::Sender<Vec<u8>>>>,
    /// The application's output; locked by the one attached receiver.
    inlet: tokio::sync::Mutex<Inlet>,
    state: Mutex<SessionState>,
    /// Attach, detach and close.
    changed: Notify,
}

struct SessionState {
    closed: Option<(u16, &'static str)>,
    attached: bool,
    /// When the last receiver left, or when the session closed.
    since: Instant,
}

impl HttpSession {
    /// Marks a receiver attached; `Err(frame)` when another is, or the session is closed.
    pub(super) fn attach(&self) -> Result<(), String> {
        let mut state = self.state.lock().expect("session state");
        if let Some((code, reason)) = state.closed {
            return Err(framing::close(code, reason));
        }
        if state.attached {
            let (code, reason) = ANOTHER_CONNECTION;
            return Err(framing::close(code, reason));
        }
        state.attached = true;
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    pub(super) fn detach(&self) {
        let mut state = self.state.lock().expect("session state");
        state.attached = false;
        state.since = Instant::now();
        drop(state);
        self.changed.notify_waiters();
    }

    /// Ends the session (first reason wins) and closes the application's input.
    pub(super) fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.state.lock().expect("session state");
        if state.closed.is_none() {
            state.closed = Some((code, reason));
            state.since = Instant::now();
        }
        drop(state);
        self.to_app.lock().expect("to_app").take();
        self.changed.notify_waiters();
    }

    pub(super) fn close_frame(&self) -> Option<String> {
        let state = self.state.lock().expect("session state");
        state
            .closed
            .map(|(code, reason)| framing::close(code, reason))
    }

    /// The next frame for an attached receiver: what the application has queued (as one
    /// `a[...]`), its close, or `h` after `wait` of silence.
    pub(super) async fn next_frame(&self, wait: Duration) -> String {
        let mut inlet = self.inlet.lock().await;
        let first = match tokio::time::timeout(wait, inlet.recv()).await {
            Err(_) => return framing::HEARTBEAT.to_owned(),
            Ok(first) => first,
        };
        let mut batch = Vec::new();
        let mut end = None;
        let mut item = first;
        loop {
            match item {
                Some(ToClient::Data(text)) => batch.push(text),
                Some(ToClient::Close(why)) => {
                    end = Some(sockjs_close(why));
                    break;
                }
                None => {
                    end = Some(sockjs_close(outlet::End::Done));
                    break;
                }
            }
            match inlet.try_recv() {
                Some(next) => item = Some(next),
                None => break,
            }
        }
        if let Some((code, reason)) = end {
            self.close(code, reason);
        }
        if batch.is_empty() {
            return self
                .close_frame()
                .unwrap_or_else(|| framing::HEARTBEAT.to_owned());
        }
        framing::messages(&batch)
    }

    pub(super) fn sender(&self) -> Option<queue::Sender<Vec<u8>>> {
        self.to_app.lock().expect("to_app").clone()
    }
}

/// An attached receiver; dropped before [`Receiver::done`] (the client aborted the request)
/// it ends the session.
pub(super) struct Receiver<'a> {
    session: &'a HttpSession,
    done: bool,
}

impl<'a> Receiver<'a> {
    /// Attaches a receiver to `session`, or answers the frame that refuses it.
    pub(super) fn attach(session: &'a HttpSession) -> Result<Receiver<'a>, String> {
        session.attach()?;
        Ok(Receiver {
            session,
            done: false,
        })
    }

    pub(super) fn done(mut self) {
        self.done = true;
        self.session.detach();
    }
}

impl Drop for Receiver<'_> {
    fn drop(&mut self) {
        if !self.done {
            let (code, reason) = INTERRUPTED;
            self.session.close(code, reason);
            self.session.detach();
        }
    }
}

/// The session `id`, created for `client` (and its application started) when new:
/// `(session, created)`. Another client's session is not found.
pub(super) fn open<A: Application>(
    service: &Arc<Service<A>>,
    id: &str,
    client: &Client,
    headers: &HeaderMap,
) -> Result<(Arc<HttpSession>, bool), Refusal> {
    let mut sessions = service.sessions.lock().expect("sessions");
    if let Some(existing) = sessions.get(id) {
        return match existing.owner.admits(client) {
            true => Ok((existing.clone(), false)),
            false => Err(Refusal::NOT_FOUND),
        };
    }
    let admission = service.app.admit_from(client.address, headers)?;
    let (client_tx, from_client) = queue::bounded(FROM_CLIENT_QUEUE, queue::one);
    let (to_client, inlet) = outlet::channel(service.options.send_buffer_bytes);
    let session = Arc::new(HttpSession {
        owner: Owner::of(client),
        to_app: Mutex::new(Some(client_tx)),
        inlet: tokio::sync::Mutex::new(inlet),
        state: Mutex::new(SessionState {
            closed: None,
            attached: false,
            since: Instant::now(),
        }),
        changed: Notify::new(),
    });
    sessions.insert(id.to_owned(), session.clone());
    drop(sessions);
    tokio::spawn(service.app.run(
        admission,
        Connection {
            transport: "sockjs-http",
            from_client,
            to_client,
        },
    ));
    tokio::spawn(watch(service.clone(), id.to_owned(), session.clone()));
    Ok((session, true))
}

/// Forgets the session once it has been without a receiver, or closed, for the delay.
async fn watch<A: Application>(service: Arc<Service<A>>, id: String, session: Arc<HttpSession>) {
    let delay = service.options.disconnect_delay;
    loop {
        let mut changed = pin!(session.changed.notified());
        changed.as_mut().enable();
        let deadline = {
            let state = session.state.lock().expect("session state");
            (!state.attached || state.closed.is_some()).then_some(state.since + delay)
        };
        match deadline {
            None => changed.await,
            Some(deadline) if deadline <= Instant::now() => break,
            Some(deadline) => {
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
    // Gone: the client did not come back (or the session was closed long enough ago).
    session.close(3000, "Go away!");
    let mut sessions = service.sessions.lock().expect("sessions");
    if sessions.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
        sessions.remove(&id);
    }
}

/// Headers every transport response carries.
pub(super) fn finish<A>(
    service: &Service<A>,
    request: &HeaderMap,
    mut response: Response,
) -> Response {
    cors(request, &mut response);
    no_cache(&mut response);
    set_jsessionid(&service.options, request, &mut response);
    response
}

/// When cookies are needed: `Set-Cookie` with the request's `JSESSIONID`, or a new random
/// one. (Not SockJS 0.3.3's fixed `dummy`: a value shared by every client could not tell
/// them apart, and behind a load balancer sticky on it, it pinned every client to one
/// instance.)
pub(super) fn set_jsessionid(options: &Options, request: &HeaderMap, response: &mut Response) {
    if !options.cookie_needed {
        return;
    }
    let value = match (jsessionid(request), options.fixed_cookie) {
        (Some(value), _) | (None, Some(value)) => value.to_owned(),
        (None, None) => new_jsessionid(),
    };
    if let Ok(cookie) = HeaderValue::from_str(&format!("JSESSIONID={value}; Path=/; HttpOnly")) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
}

pub(super) fn body_response(content_type: &'static str, body: Body) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The session `id` when it exists and is `client`'s.
pub(super) fn existing<A>(
    service: &Service<A>,
    id: &str,
    client: &Client,
) -> Result<Arc<HttpSession>, Refusal> {
    service
        .sessions
        .lock()
        .expect("sessions")
        .get(id)
        .filter(|session| session.owner.admits(client))
        .cloned()
        .ok_or(Refusal::NOT_FOUND)
}
