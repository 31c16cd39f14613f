//! The admin listener both binaries serve beside their work: `/metrics` (Prometheus text),
//! `/healthz` (200 while the process serves HTTP at all) and `/readyz` (200 while the
//! binary's own readiness check passes; otherwise 503 saying what is missing, e.g.
//! `not ready: redis unreachable (redis://10.0.0.5:6379/)`).
//!
//! The listener is private (probes and scrapes), but it still bounds what a client can
//! hold: a request head must arrive within [`AdminLimits::header_timeout`] (also the idle
//! limit of a kept-alive connection), and at most [`AdminLimits::max_connections`] are open
//! at once (more are closed at accept).
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let router = shared::admin::router(|| "up 1\n".to_owned(), || Ok(()));
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(shared::admin::serve(listener, router, shutdown));
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The three admin routes: `metrics` renders the exposition text, `ready` answers readiness
/// (`Err`: why not, for the 503's body).
pub fn router<M, R>(metrics: M, ready: R) -> Router
where
    M: Fn() -> String + Clone + Send + Sync + 'static,
    R: Fn() -> Result<(), String> + Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/metrics",
            get(move || async move { ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], metrics()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                match ready() {
                    Ok(()) => (StatusCode::OK, "ready".to_owned()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
                }
            }),
        )
}

/// What the admin listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Longest a request head may take, from the accept or the previous response.
    pub header_timeout: Duration,
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    /// 10 s for a head; 64 connections (a scraper and the probes need a few).
    fn default() -> Self {
        AdminLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Serves `router` on `listener` with the default [`AdminLimits`] until `shutdown` is
/// cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, AdminLimits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled; then stops
/// accepting and lets the requests in flight finish.
pub async fn serve_with(
    mut listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // axum's listener waits out accept errors (descriptors exhausted, say) itself.
        let (io, _peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("admin listener full: connection closed");
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = http.serve_connection(TokioIo::new(io), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::trace!(%err, "admin connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_routes_answer_health_readiness_and_metrics_until_shutdown() {
        let ready = Arc::new(AtomicBool::new(false));
        let check = ready.clone();
        let router = router(
            || "requests_total 7\n".to_owned(),
            move || {
                if check.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("redis unreachable".into())
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, shutdown.clone()));

        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(
            not_ready.ends_with("not ready: redis unreachable"),
            "{not_ready}"
        );
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains(&format!("content-type: {METRICS_CONTENT_TYPE}")),
            "{metrics}"
        );
        assert!(metrics.ends_with("requests_total 7\n"), "{metrics}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        shutdown.cancel();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_closed_and_the_connections_are_capped() {
        let router = router(String::new, || Ok(()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = AdminLimits {
            header_timeout: std::time::Duration::from_millis(300),
            max_connections: 2,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with(listener, router, limits, shutdown.clone()));

        // Two connections that start a head and never finish it fill the listener.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // A third is closed at once, without an answer.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            third.read_to_end(&mut answer),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?} {answer:?}");
        // The slow heads are closed when the timeout passes...
        let started = std::time::Instant::now();
        for mut stream in slow {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                stream.read_to_end(&mut rest),
            )
            .await;
            assert!(matches!(read, Ok(Ok(_))), "{read:?}");
        }
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        // ...which frees their places.
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
    }
}
