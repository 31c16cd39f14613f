//! Graceful shutdown: SIGTERM or SIGINT cancels one token that every task watches.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled at the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `work` to completion, or gives up `deadline` after `token` is cancelled.
/// Returns `None` when the deadline cut the work short.
pub async fn drain<F: Future>(
    token: &CancellationToken,
    deadline: Duration,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return Some(out),
        _ = token.cancelled() => {}
    }
    tokio::time::timeout(deadline, work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_work_until_the_deadline() {
        let token = CancellationToken::new();
        token.cancel();
        let quick = drain(&token, Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        });
        assert_eq!(quick.await, Some(7));
        let slow = drain(&token, Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        assert_eq!(slow.await, None);
    }
}
