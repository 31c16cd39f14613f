//! The public listener's accept loop: hyper's HTTP/1.1 with a timer, so that a request head
//! must arrive within [`HttpLimits::header_timeout`] (axum's `serve` runs hyper without one,
//! and a head that never ends would hold its descriptor for ever); WebSocket upgrades; the
//! peer's address for the handlers (`ConnectInfo`); a cap on one address's connections whose
//! first request head has not arrived; graceful shutdown. Policy when the cap is reached:
//! the new connection is closed at once, counted in
//! `gateway_closes_total{reason="max_unfinished_per_ip"}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::state::{Pending, PendingSlot};

/// What the public listener allows a connection before its requests reach a handler.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest a request head may take: from the accept, or on a kept-alive connection from
    /// the end of the previous response. Never applies while a response is being written.
    pub header_timeout: Duration,
    /// Connections one address (IPv6: one /64) may hold before their first request head
    /// has arrived; 0: no limit.
    pub max_unfinished_per_ip: usize,
    /// Peers not held to that cap: the trusted proxies, through which every client comes.
    pub exempt: Vec<IpNet>,
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting, asks every
/// connection to finish its request in flight and close, and waits for them.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: HttpLimits,
    closes: IntCounterVec,
    shutdown: CancellationToken,
) where
    L: Listener<Addr = SocketAddr>,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Counted per address only: a flood from many addresses is bounded by the descriptors
    // and the header timeout.
    let unfinished = Pending::new(limits.max_unfinished_per_ip, 0);
    // Every connection task holds a sender; the receiver ends once they all have.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let ip = peer.ip().to_canonical();
        let slot = if limits.exempt.iter().any(|net| net.contains(&ip)) {
            None
        } else {
            match unfinished.enter(Some(ip)) {
                Ok(slot) => Some(slot),
                Err(_) => {
                    closes.with_label_values(&["max_unfinished_per_ip"]).inc();
                    drop(io);
                    continue;
                }
            }
        };
        let service = service(app.clone(), peer, slot, closes.clone());
        let connection = http.serve_connection(TokioIo::new(io), service);
        let (closes, shutdown, open) = (closes.clone(), shutdown.clone(), open.clone());
        tokio::spawn(async move {
            let connection = connection.with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                if err.is_timeout() {
                    closes.with_label_values(&["header_timeout"]).inc();
                }
                tracing::trace!(%peer, %err, "connection ended");
            }
            drop(open);
        });
    }
    // New connections are refused from here on.
    drop(listener);
    drop(open);
    let _ = all_closed.recv().await;
}

/// One connection's service: each request gets the peer's address and goes to `app`; the
/// first one frees the connection's `slot` among its address's unfinished connections.
fn service(
    app: Router,
    peer: SocketAddr,
    slot: Option<PendingSlot>,
    closes: IntCounterVec,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Send {
    let slot = Mutex::new(slot);
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        drop(slot.lock().expect("unfinished slot").take());
        request.extensions_mut().insert(ConnectInfo(peer));
        let (app, closes) = (app.clone(), closes.clone());
        async move {
            let response = app.oneshot(request).await?;
            // Handlers that give up waiting for a request body answer 408.
            if response.status() == StatusCode::REQUEST_TIMEOUT {
                closes.with_label_values(&["body_timeout"]).inc();
            }
            Ok(response)
        }
    })
}
