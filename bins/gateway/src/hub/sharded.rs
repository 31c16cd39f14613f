//! The relay on a Redis Cluster: sharded Pub/Sub. Each user channel is `SSUBSCRIBE`d on
//! the shard that owns its slot, through the `redis` crate's cluster connection (RESP3:
//! it routes each subscription by slot, over one connection per shard, and follows the
//! slot map). Messages arrive as pushes and are handed to the hub on the connection's own
//! task, so no unbounded buffer sits between Redis and the sessions' bounded queues.
//!
//! Failover: when a shard's master dies, its connection reports a disconnection. The
//! relay then counts every subscription as lost (the book records the gaps), drops the
//! connection and makes a new one from the seed nodes, which finds the promoted replica,
//! and subscribes every wanted channel again. A channel live again after a gap tells its
//! sessions to recover from the store. A slot moved by resharding arrives as a
//! server-side `sunsubscribe`: only that channel is subscribed again, with a gap.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use shared::backoff::Backoff;
use shared::redis_link::RedisTarget;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::book::Change;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Longest wait for the cluster to answer one (un)subscription (the crate retries a
/// command whose shard is failing over within it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection's pushes tell the relay, tagged with the connection's generation so
/// that a dropped connection's last words do not affect its successor.
enum Event {
    /// A shard connection closed: its subscriptions are gone.
    Disconnected(u64),
    /// The server ended a channel's subscription (its slot moved).
    Unsubscribed(u64, String),
}

pub(super) async fn run(hub: Hub, target: RedisTarget, shutdown: CancellationToken) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP);
    let mut generation = 0;
    loop {
        generation += 1;
        let connection = tokio::select! {
            _ = shutdown.cancelled() => return,
            connection = connect(&hub, &target, generation, events_tx.clone()) => connection,
        };
        let reason = match connection {
            Ok(connection) => {
                if generation > 1 {
                    hub.metrics.redis_reconnects.inc();
                }
                let lost = serve(
                    &hub,
                    connection,
                    generation,
                    &mut events,
                    &shutdown,
                    &mut backoff,
                )
                .await;
                hub.ready.store(false, Ordering::Relaxed);
                hub.book().link_down();
                hub.metrics.subscriptions.set(0);
                match lost {
                    None => return,
                    Some(reason) => reason,
                }
            }
            Err(reason) => reason,
        };
        let wait = backoff.next();
        tracing::warn!(
            redis = %target,
            %reason,
            retry_in_ms = wait.as_millis() as u64,
            "Redis Cluster relay interrupted: subscriptions are restored, and their gaps \
             recovered from the store, once the cluster answers"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A new cluster connection whose pushes go to the hub (messages) and to `events`.
async fn connect(
    hub: &Hub,
    target: &RedisTarget,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) -> Result<ClusterConnection, String> {
    let pushes = {
        let hub = hub.clone();
        move |push: PushInfo| -> Result<(), Infallible> {
            on_push(&hub, generation, &events, push);
            Ok(())
        }
    };
    let client = target
        .cluster_builder()
        .expect("the sharded relay runs on a cluster")
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(pushes)
        .build()
        .map_err(|err| err.to_string())?;
    match tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_connection()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("connection attempt timed out".to_owned()),
    }
}

fn on_push(hub: &Hub, generation: u64, events: &mpsc::UnboundedSender<Event>, push: PushInfo) {
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            if let [Value::BulkString(channel), Value::BulkString(payload)] = &push.data[..] {
                if let (Ok(channel), Ok(json)) =
                    (std::str::from_utf8(channel), std::str::from_utf8(payload))
                {
                    hub.deliver(channel, Arc::from(json));
                }
            }
        }
        PushKind::Disconnection => {
            let _ = events.send(Event::Disconnected(generation));
        }
        PushKind::SUnsubscribe => {
            if let Some(Value::BulkString(channel)) = push.data.first() {
                if let Ok(channel) = String::from_utf8(channel.clone()) {
                    let _ = events.send(Event::Unsubscribed(generation, channel));
                }
            }
        }
        _ => {}
    }
}

/// Runs one connection until it fails (the reason) or shutdown (`None`).
async fn serve(
    hub: &Hub,
    mut connection: ClusterConnection,
    generation: u64,
    events: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Option<String> {
    hub.book().link_up();
    loop {
        while let Ok(event) = events.try_recv() {
            if let Some(reason) = on_event(hub, generation, event) {
                return Some(reason);
            }
        }
        let change = hub.book().next_change();
        let Some(change) = change else {
            if !hub.ready.swap(true, Ordering::Relaxed) {
                backoff.reset();
                tracing::info!("Redis Cluster relay subscribed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = hub.wake.notified() => {}
                event = events.recv() => {
                    if let Some(reason) = event.and_then(|e| on_event(hub, generation, e)) {
                        return Some(reason);
                    }
                }
            }
            continue;
        };
        let request = async {
            match &change {
                Change::Subscribe(channel) => connection.ssubscribe(channel).await,
                Change::Unsubscribe(channel) => connection.sunsubscribe(channel).await,
                // Refused at start: a pattern has no sharded form.
                Change::SubscribePattern => Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "pattern subscriptions have no sharded form",
                ))),
            }
        };
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return None,
            answer = tokio::time::timeout(COMMAND_TIMEOUT, request) => answer,
        };
        if let Some(failure) = super::relay::settle(hub, &change, answer) {
            return Some(failure);
        }
    }
}

/// Applies a push event of connection `generation`; the reason to start over, if any.
fn on_event(hub: &Hub, generation: u64, event: Event) -> Option<String> {
    match event {
        Event::Disconnected(of) if of == generation => {
            Some("a cluster node's connection closed".to_owned())
        }
        Event::Unsubscribed(of, channel) if of == generation => {
            if hub.book().lost(&channel) {
                tracing::info!(%channel, "subscription ended by the cluster (slot moved): subscribing again");
                hub.wake.notify_one();
            }
            None
        }
        _ => None,
    }
}
