//! The one task that talks to Redis for the hub: it connects (with capped backoff),
//! carries out the book's subscription changes one at a time, each bounded by
//! `COMMAND_TIMEOUT`, and hands every message to the hub. Any failure drops the connection
//! (and with it every subscription): the book starts over on the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use shared::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::book::Change;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Longest wait for Redis to answer one (un)subscription before the connection counts as
/// lost (a half-open TCP connection answers nothing).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages handled between two subscription changes, so a long resubscription does not
/// hold up delivery.
const MESSAGES_PER_CHANGE: usize = 64;

/// `pattern`: pattern mode's `PSUBSCRIBE` pattern.
/// `address`: Redis as logs may name it (no password).
pub(super) async fn run(
    hub: Hub,
    client: redis::Client,
    address: String,
    pattern: Option<String>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP);
    let mut connected_once = false;
    loop {
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()) => pubsub,
        };
        let reason = match pubsub {
            Ok(Ok(pubsub)) => {
                if connected_once {
                    hub.metrics.redis_reconnects.inc();
                }
                connected_once = true;
                let (sink, stream) = pubsub.split();
                let lost = serve(
                    &hub,
                    pattern.as_deref(),
                    sink,
                    stream,
                    &shutdown,
                    &mut backoff,
                )
                .await;
                hub.ready.store(false, Ordering::Relaxed);
                hub.book().link_down();
                hub.metrics.subscriptions.set(0);
                match lost {
                    None => return, // shutdown
                    Some(reason) => format!("connection lost: {reason}"),
                }
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "connection attempt timed out".to_owned(),
        };
        let wait = backoff.next();
        // One line per backoff step: what is missing, why, and what to do about it.
        tracing::warn!(
            redis = %address,
            %reason,
            retry_in_ms = wait.as_millis() as u64,
            "no Redis: notifications are not relayed until it is back \
             (start redis-server, or point REDIS_URL / REDIS_HOST at it)"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs one connection until it fails (the reason) or shutdown (`None`).
async fn serve(
    hub: &Hub,
    pattern: Option<&str>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Option<String> {
    hub.book().link_up();
    loop {
        // Messages that are already here go first, a bounded number of them.
        for _ in 0..MESSAGES_PER_CHANGE {
            match stream.next().now_or_never() {
                Some(Some(message)) => relay_message(hub, &message),
                Some(None) => return Some("connection closed".into()),
                None => break,
            }
        }
        let change = hub.book().next_change();
        let Some(change) = change else {
            if !hub.ready.swap(true, Ordering::Relaxed) {
                // Connected and every wanted channel confirmed: a healthy connection.
                backoff.reset();
                tracing::info!("Redis relay subscribed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = hub.wake.notified() => continue,
                message = stream.next() => match message {
                    Some(message) => relay_message(hub, &message),
                    None => return Some("connection closed".into()),
                },
            }
            continue;
        };
        let request = async {
            match &change {
                Change::Subscribe(channel) => sink.subscribe(channel).await,
                Change::Unsubscribe(channel) => sink.unsubscribe(channel).await,
                Change::SubscribePattern => sink.psubscribe(pattern.unwrap_or_default()).await,
            }
        };
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return None,
            answer = tokio::time::timeout(COMMAND_TIMEOUT, request) => answer,
        };
        if let Some(failure) = settle(hub, &change, answer) {
            return Some(failure);
        }
    }
}

/// Records Redis's answer to `change` (or its timeout) in the book, and tells the
/// sessions of channels live again after a gap to recover; the failure, if any.
pub(super) fn settle(
    hub: &Hub,
    change: &Change,
    answer: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>,
) -> Option<String> {
    let failure = match answer {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{change:?} failed: {err}")),
        Err(_) => Some(format!("{change:?} timed out")),
    };
    let mut book = hub.book();
    let live_again = book.change_done(failure.is_none());
    hub.metrics.subscriptions.set(book.confirmed() as i64);
    drop(book);
    hub.resync(live_again);
    failure
}

fn relay_message(hub: &Hub, message: &redis::Msg) {
    let Ok(json) = std::str::from_utf8(message.get_payload_bytes()) else {
        return;
    };
    hub.deliver(message.get_channel_name(), Arc::from(json));
}
