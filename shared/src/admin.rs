//! The admin listener both binaries serve beside their work: `/metrics` (Prometheus text),
//! `/healthz` (200 while the process serves HTTP at all) and `/readyz` (200 while the
//! binary's own readiness check passes; otherwise 503 saying what is missing, e.g.
//! `not ready: redis unreachable (redis://10.0.0.5:6379/)`).
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

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
}
