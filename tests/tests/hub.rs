//! The hub's Redis subscriptions against the real Redis: what this instance is subscribed
//! to must be exactly the users with a session here, whatever happens to sessions (slow
//! consumers, tab reloads) and to Redis (outages, refused subscriptions).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::hub::{Hub, Inbox, Source, SubscribeMode};
use gateway::metrics::GatewayMetrics;
use shared::channel::Channels;
use support::proxy::Proxy;
use support::{redis_url, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How long the hub may take to bring Redis in line with its sessions.
const SETTLE: Duration = Duration::from_secs(15);

fn unique_prefix(test: &str) -> String {
    format!("test-hub-{test}-{:08x}:", rand::random::<u32>())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The channels under `prefix` that some client is subscribed to.
async fn subscribed(prefix: &str) -> BTreeSet<String> {
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis().await)
        .await
        .unwrap();
    channels
        .into_iter()
        .map(|c| c[prefix.len()..].to_owned())
        .collect()
}

async fn publish(channel: &str, text: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(text)
        .query_async(&mut redis().await)
        .await
        .unwrap();
}

fn start(url: &str, prefix: &str, queue: usize) -> (Hub, GatewayMetrics, CancellationToken) {
    let metrics = GatewayMetrics::new();
    let shutdown = CancellationToken::new();
    let hub = Hub::start(
        &shared::redis_link::RedisTarget::Node(url.to_owned()),
        &Channels::new(prefix),
        SubscribeMode::PerUser,
        queue,
        metrics.hub.clone(),
        shutdown.clone(),
    )
    .unwrap();
    (hub, metrics, shutdown)
}

/// Session `id` joins `user`'s channel; its inbox (a session's first join creates it).
async fn join(hub: &Hub, prefix: &str, user: &str, id: u64) -> Inbox {
    hub.join(&format!("{prefix}{user}"), Source::User, id)
        .await
        .expect("a session's first join creates its inbox")
}

fn leave(hub: &Hub, prefix: &str, user: &str, id: u64) {
    hub.leave(&format!("{prefix}{user}"), id);
}

fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let host_port = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    tokio::task::block_in_place(|| {
        std::net::ToSocketAddrs::to_socket_addrs(&host_port.as_str())
            .unwrap()
            .next()
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_was_its_users_last_session_is_unsubscribed() {
    let prefix = unique_prefix("slow");
    let (hub, metrics, shutdown) = start(&redis_url(), &prefix, 4);
    let _inbox = join(&hub, &prefix, "u1", hub.session_id()).await;
    assert_eq!(subscribed(&prefix).await, BTreeSet::from(["u1".to_owned()]));

    // Nobody reads the inbox: the fifth message finds the queue full.
    for n in 0..10 {
        publish(&format!("{prefix}u1"), &format!("{{\"id\":{n}}}")).await;
    }
    wait_until("the slow consumer dropped", SETTLE, || async {
        metrics.hub.slow_consumers.get() == 1
    })
    .await;
    wait_until("the user's channel unsubscribed", SETTLE, || async {
        subscribed(&prefix).await.is_empty()
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_reloads_racing_each_other_leave_every_user_subscribed() {
    let prefix = unique_prefix("reload");
    let (hub, _metrics, shutdown) = start(&redis_url(), &prefix, 16);
    const USERS: usize = 200;
    let mut inboxes = Vec::new();
    for n in 0..USERS {
        let id = hub.session_id();
        inboxes.push((
            format!("u{n}"),
            id,
            join(&hub, &prefix, &format!("u{n}"), id).await,
        ));
    }
    // Every tab reloads: the old session leaves while the new one joins, concurrently.
    let mut reloads = Vec::new();
    for (user, old, inbox) in inboxes {
        let leaving = hub.clone();
        let joining = hub.clone();
        let user_2 = user.clone();
        let (prefix_1, prefix_2) = (prefix.clone(), prefix.clone());
        reloads.push(tokio::spawn(async move {
            leave(&leaving, &prefix_1, &user, old);
            drop(inbox);
        }));
        reloads.push(tokio::spawn(async move {
            let id = joining.session_id();
            let inbox = join(&joining, &prefix_2, &user_2, id).await;
            Box::leak(Box::new(inbox)); // the new tab stays open
        }));
    }
    for reload in reloads {
        reload.await.unwrap();
    }
    let expected: BTreeSet<String> = (0..USERS).map(|n| format!("u{n}")).collect();
    wait_until("every user subscribed", SETTLE, || async {
        subscribed(&prefix).await == expected
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_churn_during_a_redis_outage_never_waits_long_and_ends_exactly_subscribed() {
    let prefix = unique_prefix("outage");
    let proxy = Proxy::start(redis_addr()).await;
    let (hub, _metrics, shutdown) = start(&format!("redis://{}/", proxy.addr), &prefix, 16);
    wait_until("the relay connected", SETTLE, || async {
        hub.is_connected()
    })
    .await;

    proxy.cut();
    wait_until("the relay noticed the outage", SETTLE, || async {
        !hub.is_connected()
    })
    .await;
    // 10 000 sessions of 5 000 users come and go (twice each) while Redis is away; every
    // 50th stays.
    const SESSIONS: usize = 10_000;
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..SESSIONS {
        let hub = hub.clone();
        let kept = kept.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("u{}", n % 5_000);
            for round in 0..2 {
                let id = hub.session_id();
                let inbox = join(&hub, &prefix, &user, id).await;
                if n % 50 == 0 && round == 1 {
                    kept.lock().unwrap().push((user.clone(), inbox));
                } else {
                    leave(&hub, &prefix, &user, id);
                }
            }
        }));
    }
    // A join waits at most its subscription wait (5 s) while Redis is away; a leave never.
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every join and leave returned while Redis was away");

    proxy.restore();
    let expected: BTreeSet<String> = kept
        .lock()
        .unwrap()
        .iter()
        .map(|(user, _)| user.clone())
        .collect();
    assert_eq!(expected.len(), 100, "200 kept sessions of 100 users");
    wait_until("exactly the kept users subscribed", SETTLE, || async {
        hub.is_connected() && subscribed(&prefix).await == expected
    })
    .await;
    shutdown.cancel();
}

/// A proxy to Redis that drops a connection when its client sends SUBSCRIBE; counts the
/// connections it accepted.
async fn subscribe_killing_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let mut up = vec![0u8; 64 * 1024];
                let mut down = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        read = client.read(&mut up) => {
                            let Ok(n @ 1..) = read else { return };
                            let upper = String::from_utf8_lossy(&up[..n]).to_ascii_uppercase();
                            if upper.contains("SUBSCRIBE") {
                                return; // both sockets dropped
                            }
                            if server.write_all(&up[..n]).await.is_err() {
                                return;
                            }
                        }
                        read = server.read(&mut down) => {
                            let Ok(n @ 1..) = read else { return };
                            if client.write_all(&down[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscribe_is_retried_with_backoff_not_in_a_hot_loop() {
    let prefix = unique_prefix("flaky");
    let (addr, accepted) = subscribe_killing_proxy(redis_addr()).await;
    let (hub, _metrics, shutdown) = start(&format!("redis://{addr}/"), &prefix, 16);
    let joined = join(&hub, &prefix, "u1", hub.session_id());
    let _inbox = tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .expect("a join gives up waiting for a failing subscription");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = accepted.load(Ordering::SeqCst);
    shutdown.cancel();
    // Backing off from 100 ms and doubling up to 5 s allows about 8 attempts in 8 s.
    assert!(
        (1..=12).contains(&connections),
        "{connections} connections in about 3 to 8 s"
    );
}

/// Refused SUBSCRIBEs of a Redis user without channel permissions, as the ACL log counts them.
async fn refused_subscribes(username: &str) -> i64 {
    let entries: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let mut total = 0;
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(n) => n.to_string(),
            _ => String::new(),
        };
        let pairs: Vec<(String, String)> = fields
            .chunks(2)
            .map(|kv| (text(&kv[0]), text(&kv[1])))
            .collect();
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if field("username").as_deref() == Some(username) {
            total += field("count").and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscribe_is_retried_with_backoff_not_in_a_hot_loop() {
    let prefix = unique_prefix("acl");
    let username = format!("hub-test-{:08x}", rand::random::<u32>());
    let password = format!("{:032x}", rand::random::<u128>());
    // A Redis user that may connect and run commands, but not subscribe to any channel.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&username)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("resetchannels")
        .arg("+@all")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let addr = redis_addr();
    let (hub, _metrics, shutdown) = start(
        &format!("redis://{username}:{password}@{addr}/"),
        &prefix,
        16,
    );
    let joined = join(&hub, &prefix, "u1", hub.session_id());
    let _inbox = tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .expect("a join gives up waiting for a refused subscription");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = refused_subscribes(&username).await;
    shutdown.cancel();
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&username)
        .query_async(&mut redis().await)
        .await
        .unwrap();
    // Backing off from 100 ms and doubling, about 5 s in all allows ~7 attempts.
    assert!(
        (1..=12).contains(&attempts),
        "{attempts} refused SUBSCRIBEs in about 5 s"
    );
}
