//! The path from an application (the STOMP engine) to one client's transport, bounded in
//! bytes rather than messages: at most `limit` bytes may wait for the transport (which
//! takes one text at a time, as fast as the client reads). A sender that finds the budget
//! spent waits for the transport to take more, for at most the send timeout; past that the
//! connection is over (Spring's `sendBufferSizeLimit` + `sendTimeLimit`, 512 KiB / 10 s).

use std::time::Duration;

use crate::queue;

/// What an application hands to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// Application bytes (STOMP frames or a heart-beat EOL), as text.
    Data(String),
    /// The connection is over.
    Close(End),
}

/// Why a connection ended (a metric label, and the close code the transport sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client went away (socket closed, receiver aborted, session expired).
    ClientClosed,
    /// The application ended the session normally (STOMP DISCONNECT).
    Done,
    /// The client broke the protocol (an ERROR frame was sent).
    Protocol,
    /// The client did not take its notifications fast enough.
    SlowConsumer,
    /// A write did not fit the send buffer within the send timeout.
    SendTimeout,
    /// No heart-beat from the client within the negotiated limit.
    Silent,
    /// No CONNECT within the first-frame timeout.
    NoConnect,
    /// The credentials the session was opened with expired (an ERROR frame was sent).
    Expired,
    /// The server is shutting down.
    Shutdown,
}

impl End {
    /// Whether the server is going away.
    pub fn is_shutdown(self) -> bool {
        self == End::Shutdown
    }

    pub fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Done => "done",
            End::Protocol => "protocol",
            End::SlowConsumer => "slow_consumer",
            End::SendTimeout => "send_timeout",
            End::Silent => "heartbeat_timeout",
            End::NoConnect => "no_connect",
            End::Expired => "credentials_expired",
            End::Shutdown => "shutdown",
        }
    }

    /// The close code and reason a transport reports: 1001 when shutting down, SockJS's
    /// `3000 "Go away!"` when the application closed the session, 1008 (policy) with the
    /// reason's label when the client broke a rule.
    pub fn close_code(self) -> (u16, &'static str) {
        match self {
            End::Shutdown => (1001, "Server shutting down"),
            End::ClientClosed => (1000, "Normal closure"),
            End::Done => (3000, "Go away!"),
            other => (1008, other.label()),
        }
    }
}

/// Why a send did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the send buffer stayed full for the send timeout")]
    Timeout,
    #[error("the transport is gone")]
    Closed,
}

/// The application's side.
pub struct Outlet(queue::Sender<ToClient>);

/// The transport's side. Taking a text gives its bytes back to the budget.
pub struct Inlet(queue::Receiver<ToClient>);

/// A text's share of the budget (a close costs nothing).
fn cost(item: &ToClient) -> usize {
    match item {
        ToClient::Data(text) => text.len().max(1),
        ToClient::Close(_) => 0,
    }
}

/// A new outlet/inlet pair with a budget of `limit` bytes.
pub fn channel(limit: usize) -> (Outlet, Inlet) {
    let (tx, rx) = queue::bounded(limit, cost);
    (Outlet(tx), Inlet(rx))
}

impl Outlet {
    /// Queues `text` once the send buffer has room for it, waiting at most `timeout`.
    pub async fn send(&self, text: String, timeout: Duration) -> Result<(), SendError> {
        match self.0.send_timeout(ToClient::Data(text), timeout).await {
            Ok(()) => Ok(()),
            Err(queue::SendError::Full(_)) => Err(SendError::Timeout),
            Err(queue::SendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Tells the transport the connection is over (never waits).
    pub fn close(&self, end: End) {
        let _ = self.0.force_send(ToClient::Close(end));
    }
}

impl Inlet {
    /// The next item; `None` once the application is gone.
    pub async fn recv(&mut self) -> Option<ToClient> {
        self.0.recv().await
    }

    pub fn try_recv(&mut self) -> Option<ToClient> {
        self.0.try_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_times_out_and_drains() {
        let (outlet, mut inlet) = channel(10);
        let wait = Duration::from_secs(10);
        outlet.send("123456".into(), wait).await.unwrap();
        outlet.send("1234".into(), wait).await.unwrap();
        // Full: the next text waits the whole timeout.
        let started = tokio::time::Instant::now();
        assert_eq!(outlet.send("x".into(), wait).await, Err(SendError::Timeout));
        assert_eq!(started.elapsed(), wait);
        // The transport writes one text: its bytes come back.
        let Some(ToClient::Data(text)) = inlet.recv().await else {
            panic!("data expected")
        };
        assert_eq!(text, "123456");
        outlet.send("abcdef".into(), wait).await.unwrap();
        assert_eq!(
            outlet.send("z".into(), Duration::ZERO).await,
            Err(SendError::Timeout)
        );
    }

    #[tokio::test]
    async fn a_text_larger_than_the_budget_takes_all_of_it() {
        let (outlet, mut inlet) = channel(8);
        outlet
            .send("x".repeat(100), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(
            outlet.send("y".into(), Duration::from_millis(10)).await,
            Err(SendError::Timeout)
        );
        let Some(ToClient::Data(text)) = inlet.recv().await else {
            panic!("data expected")
        };
        assert_eq!(text.len(), 100);
        outlet
            .send("y".into(), Duration::from_millis(10))
            .await
            .unwrap();
        outlet.close(End::Done);
        assert_eq!(inlet.try_recv(), Some(ToClient::Data("y".into())));
        assert_eq!(inlet.try_recv(), Some(ToClient::Close(End::Done)));
    }

    #[test]
    fn close_codes() {
        assert_eq!(End::Shutdown.close_code(), (1001, "Server shutting down"));
        assert_eq!(End::Done.close_code(), (3000, "Go away!"));
        assert_eq!(End::SlowConsumer.close_code(), (1008, "slow_consumer"));
    }
}
