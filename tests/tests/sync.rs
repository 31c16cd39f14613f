//! Staying in sync (against the real MariaDB and Redis, STOMP over raw WebSocket): recovery
//! from the store on SUBSCRIBE with `last-id`, with its cap; read-state events across tabs
//! on two gateway instances, from REST and from `SEND /app/notifications.read`; time deals
//! broadcast to exactly their subscribers. The tab-to-tab times are printed (run with
//! `--nocapture` to see them).

#![allow(clippy::print_stdout)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use support::TestDb;
use support::proxy::Proxy;
use support::stomp::{Client, QUIET, ids, message_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "sync-test-secret-of-at-least-32-bytes-long";

struct Gw {
    addr: SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

/// One deployment: the database and channel prefix its gateway instances share.
struct Env {
    db: TestDb,
    prefix: String,
}

impl Env {
    async fn new() -> Env {
        Env {
            db: TestDb::new().await,
            prefix: format!("{}:notification:", support::unique_name("sync")),
        }
    }

    async fn gateway(&self, adjust: impl FnOnce(&mut GatewayConfig)) -> Gw {
        let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
        config.redis.channel_prefix = self.prefix.clone();
        config.jwt_keys = format!("k1={SECRET}");
        config.database_url = Some(self.db.url.clone());
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
        let addr = gateway.local_addr().unwrap();
        tokio::spawn(gateway.run());
        Gw {
            addr,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Stores a notification of `user` and publishes its JSON, as ingest does; its id.
    async fn notify(&self, user: &str) -> i64 {
        support::notify::notify(&self.db.pool, &self.prefix, user).await
    }

    async fn store(&self, user: &str) -> i64 {
        support::notify::store(&self.db.pool, user).await
    }

    async fn publish(&self, channel: &str, payload: &str) {
        support::notify::publish(channel, payload).await;
    }
}

async fn client(gw: &Gw, user: &str) -> Client {
    Client::connect(gw.addr, &token(user)).await
}

fn token(user: &str) -> String {
    let exp = Utc::now().timestamp() + 600;
    sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": user, "exp": exp}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_last_id_recovers_what_was_missed_then_goes_live() {
    let env = Env::new().await;
    let gw = env.gateway(|_| {}).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(env.notify("alice").await);
    }
    let mut missed = Vec::new();
    for _ in 0..5 {
        missed.push(env.store("alice").await); // stored while away, never published
    }
    env.notify("bob").await; // someone else's

    let mut client = client(&gw, "alice").await;
    let last_id = format!("last-id:{}\n", first[2]);
    client
        .subscribe("n", "/user/queue/notifications", &last_id)
        .await;
    let recovered = std::mem::take(&mut client.pending);
    assert_eq!(
        ids(&recovered),
        missed,
        "the missed ones, oldest first, before the RECEIPT"
    );
    assert!(!recovered[0].contains("recovery-truncated"));
    let live = env.notify("alice").await;
    assert_eq!(
        ids(&client.until_quiet().await),
        vec![live],
        "then live, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_reconnect_recovers_what_was_published_while_the_link_was_down() {
    let env = Env::new().await;
    let redis: SocketAddr = support::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("TEST_REDIS_URL is redis://host:port/ for this test");
    let proxy = Proxy::start(redis).await;
    let redis_url = format!("redis://{}/", proxy.addr);
    let gw = env
        .gateway(|config| config.redis.url = Some(redis_url))
        .await;
    let channel = format!("{}carol", env.prefix);
    let mut client = client(&gw, "carol").await;
    client
        .subscribe("n", "/user/queue/notifications", "last-id:0\n")
        .await;
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.push(env.notify("carol").await);
    }
    let mut got = ids(&client.until_quiet().await);
    assert_eq!(got, expected, "live before the outage");

    proxy.cut();
    support::wait_until(
        "Redis saw the relay go",
        Duration::from_secs(10),
        || async { subscribers(&channel).await == 0 },
    )
    .await;
    let mut during = Vec::new();
    for _ in 0..10 {
        during.push(env.notify("carol").await); // published to nobody
    }
    assert!(client.until_quiet().await.is_empty());
    let cut_for = Instant::now();
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 15 && Instant::now() < deadline {
        client.read_frames(Duration::from_secs(1)).await;
        got.extend(ids(&std::mem::take(&mut client.pending)));
    }
    println!(
        "the relay reconnected and the session recovered {} notifications {:.2} s after Redis came back",
        got.len() - 5,
        cut_for.elapsed().as_secs_f64()
    );
    expected.extend(&during);
    assert_eq!(
        got, expected,
        "what was published during the outage, once, in order"
    );
    let live = env.notify("carol").await;
    assert_eq!(
        ids(&client.until_quiet().await),
        vec![live],
        "then live, once"
    );
}

/// Subscribers of `channel` on the test Redis.
async fn subscribers(channel: &str) -> i64 {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut redis)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_of_600_missed_sends_the_newest_500_and_asks_for_a_reload() {
    let env = Env::new().await;
    let gw = env.gateway(|_| {}).await; // WS_RECOVERY_MAX: 500
    for _ in 0..6 {
        let rows = vec!["(?, 'BLOG_LIKE', '좋아요', '메시지', 'UNREAD', ?, ?, 0)"; 100].join(", ");
        let sql = format!(
            "INSERT INTO notifications (user_id, type, title, message, status, created_at, \
             dedup_key, write_batch) VALUES {rows}"
        );
        let mut insert = sqlx::query(&sql);
        for _ in 0..100 {
            insert = insert
                .bind("carol")
                .bind(Utc::now())
                .bind(rand::random::<[u8; 32]>().to_vec());
        }
        insert.execute(&env.db.pool).await.unwrap();
    }
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM notifications WHERE user_id = 'carol' ORDER BY id")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 600);
    let mut client = client(&gw, "carol").await;
    client
        .subscribe("n", "/user/queue/notifications", "last-id:0\n")
        .await;
    let recovered = std::mem::take(&mut client.pending);
    assert_eq!(
        ids(&recovered),
        stored[100..].to_vec(),
        "the newest 500, oldest first"
    );
    let (headers, _) = message_of(&recovered[0]);
    assert_eq!(
        headers.get("recovery-truncated").map(String::as_str),
        Some("true")
    );
    assert!(
        recovered[1..]
            .iter()
            .all(|f| !f.contains("recovery-truncated"))
    );
}

/// A notification stored and published while a recovery waits to query, and one while it
/// has queried but sent nothing: each reaches the client exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_published_during_the_recovery_query_arrive_exactly_once() {
    use gateway::sync::recovery::{Hook, Phase};
    let env = Env::new().await;
    let (reached_tx, mut reached) = tokio::sync::mpsc::unbounded_channel::<Phase>();
    let resume = std::sync::Arc::new(tokio::sync::Notify::new());
    let hook = {
        let resume = resume.clone();
        Hook::new(move |phase| {
            let reached = reached_tx.clone();
            let resume = resume.clone();
            async move {
                let _ = reached.send(phase);
                resume.notified().await;
            }
        })
    };
    let gw = env
        .gateway(|config| config.recovery_hook = Some(hook))
        .await;
    let before = env.notify("dave").await;
    let mut client = client(&gw, "dave").await;
    let subscribing = tokio::spawn(async move {
        client
            .subscribe(
                "n",
                "/user/queue/notifications",
                &format!("last-id:{before}\n"),
            )
            .await;
        client
    });
    assert_eq!(reached.recv().await, Some(Phase::BeforeQuery));
    let during_query = env.notify("dave").await; // in the query's answer and live
    resume.notify_one();
    assert_eq!(reached.recv().await, Some(Phase::AfterQuery));
    let after_query = env.notify("dave").await; // live only, held meanwhile
    resume.notify_one();
    let mut client = subscribing.await.unwrap();
    let mut all = std::mem::take(&mut client.pending);
    all.extend(client.until_quiet().await);
    assert_eq!(
        ids(&all),
        vec![during_query, after_query],
        "each once, none lost"
    );
}

async fn call(addr: SocketAddr, method: &str, path: &str, user: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        token(user)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// Two tabs of one user on two instances, each with its state subscription.
async fn two_tabs(env: &Env, user: &str) -> (Gw, Gw, Client, Client) {
    let a = env.gateway(|_| {}).await;
    let b = env.gateway(|_| {}).await;
    let mut tab_a = client(&a, user).await;
    let mut tab_b = client(&b, user).await;
    for tab in [&mut tab_a, &mut tab_b] {
        tab.subscribe("s", "/user/queue/notification-state", "")
            .await;
    }
    (a, b, tab_a, tab_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_rest_in_one_tab_updates_the_count_in_another_on_another_instance() {
    let env = Env::new().await;
    let first = env.store("erin").await;
    let second = env.store("erin").await;
    let (a, _b, mut tab_a, mut tab_b) = two_tabs(&env, "erin").await;
    for tab in [&mut tab_a, &mut tab_b] {
        let (_, snapshot) = tab.message().await;
        assert_eq!(snapshot, json!({"event": "SNAPSHOT", "unreadCount": 2}));
    }
    let started = Instant::now();
    let (status, _) = call(
        a.addr,
        "PUT",
        &format!("/api/v1/notifications/{first}/read"),
        "erin",
    )
    .await;
    assert_eq!(status, 200);
    let (_, event) = tab_b.message().await;
    let elapsed = started.elapsed();
    assert_eq!(
        event,
        json!({"event": "READ", "ids": [first], "unreadCount": 1})
    );
    println!("REST read in tab A -> READ event in tab B on another instance: {elapsed:?}");

    let (status, _) = call(
        a.addr,
        "DELETE",
        &format!("/api/v1/notifications/{second}"),
        "erin",
    )
    .await;
    assert_eq!(status, 200);
    let (_, event) = tab_b.message().await;
    assert_eq!(
        event,
        json!({"event": "DELETED", "ids": [second], "unreadCount": 0})
    );
    // A read that changes nothing sends nothing.
    call(
        a.addr,
        "PUT",
        &format!("/api/v1/notifications/{first}/read"),
        "erin",
    )
    .await;
    assert!(tab_b.until_quiet().await.is_empty());
    let (_, event) = tab_a.message().await;
    assert_eq!(event["event"], "READ", "the acting tab hears it too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_stomp_reaches_the_other_tab_and_ignores_other_users_ids() {
    let env = Env::new().await;
    let own = env.store("frank").await;
    let other_own = env.store("frank").await;
    let foreign = env.store("grace").await;
    let (_a, _b, mut tab_a, mut tab_b) = two_tabs(&env, "frank").await;
    for tab in [&mut tab_a, &mut tab_b] {
        tab.message().await; // the snapshots
    }
    let started = Instant::now();
    let read = format!(
        "SEND\ndestination:/app/notifications.read\nreceipt:r-read\ncontent-type:application/json\n\n{{\"ids\":[{own},{foreign}]}}\0"
    );
    tab_a.send(&read).await;
    let (_, event) = tab_b.message().await;
    println!(
        "STOMP read in tab A -> READ event in tab B: {:?}",
        started.elapsed()
    );
    assert_eq!(
        event,
        json!({"event": "READ", "ids": [own], "unreadCount": 1}),
        "grace's id is neither changed nor named"
    );
    let frames = tab_a.until_quiet().await;
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("RECEIPT\nreceipt-id:r-read")),
        "{frames:?}"
    );
    let status: String =
        sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM notifications WHERE id = ?")
            .bind(foreign)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "UNREAD", "grace's notification is untouched");

    let read_all = "SEND\ndestination:/app/notifications.read\n\n{\"all\":true}\0";
    tab_a.send(read_all).await;
    let (_, event) = tab_b.message().await;
    assert_eq!(
        event,
        json!({"event": "READ_ALL", "ids": [], "unreadCount": 0})
    );
    let _ = other_own;
    // Nothing is unread any more: a second read-all changes nothing and says nothing.
    tab_a.send(read_all).await;
    assert!(tab_b.until_quiet().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_deals_reach_each_subscriber_once_on_every_instance_and_nobody_else() {
    let env = Env::new().await;
    let a = env.gateway(|_| {}).await;
    let b = env.gateway(|_| {}).await;
    let mut subscribers = Vec::new();
    for (gw, user) in [(&a, "u1"), (&a, "u2"), (&b, "u3")] {
        let mut client = client(gw, user).await;
        client.subscribe("t", "/topic/timedeals", "").await;
        client.subscribe("n", "/user/queue/notifications", "").await;
        subscribers.push(client);
    }
    let mut bystander = client(&b, "u4").await;
    bystander
        .subscribe("n", "/user/queue/notifications", "")
        .await;

    let deal = r#"{"type":"TIMEDEAL_STARTED","timeDealId":7,"title":"타임딜이 시작되었습니다"}"#;
    env.publish(&format!("{}broadcast:timedeals", env.prefix), deal)
        .await;
    for client in &mut subscribers {
        let frames = client.until_quiet().await;
        assert_eq!(frames.len(), 1, "once: {frames:?}");
        let (headers, body) = message_of(&frames[0]);
        assert_eq!(headers["destination"], "/topic/timedeals");
        assert_eq!(body, serde_json::from_str::<Value>(deal).unwrap());
    }
    assert!(
        bystander.until_quiet().await.is_empty(),
        "not subscribed: nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_deal_produced_into_kafka_reaches_subscribers_through_the_real_ingest() {
    use ingest::config::IngestConfig;
    use ingest::consumer::Ingest;
    use shared::channel::Channels;
    use shared::event::{EventKind, TopicMap};
    use support::kafka::{self, MockKafka};

    let env = Env::new().await;
    let topics = TopicMap::default();
    let kafka = MockKafka::new(&topics);
    let mut config = IngestConfig::new(&kafka.bootstrap, &env.db.url, &support::redis_url());
    config.group_id = support::unique_name("group");
    config.channels = Channels::new(env.prefix.clone());
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let stop_ingest = CancellationToken::new();
    let running = tokio::spawn(ingest.run(stop_ingest.clone()));

    let gw = env.gateway(|_| {}).await;
    let mut client = client(&gw, "shopper").await;
    client.subscribe("t", "/topic/timedeals", "").await;
    let event = r#"{"timeDealId":9,"timeDealName":"한정 특가"}"#;
    kafka::produce(
        &kafka::producer(&kafka.bootstrap),
        topics.topic(EventKind::TimeDealStarted),
        Some("9"),
        event.as_bytes(),
    )
    .await;
    let (headers, body) = client.message().await;
    assert_eq!(headers["destination"], "/topic/timedeals");
    assert_eq!(
        body,
        serde_json::from_str::<Value>(&shared::broadcast::time_deal(event.as_bytes()).unwrap())
            .unwrap()
    );
    assert_eq!(body["message"], "한정 특가 타임딜이 시작되었습니다");
    assert_eq!(env.db.count().await, 0, "no per-user row");
    stop_ingest.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_time_deals_never_holds_up_personal_notifications() {
    const BYSTANDERS: usize = 500;
    const DEALS: usize = 200;
    let env = Env::new().await;
    let gw = env.gateway(|_| {}).await;
    // Sessions that listen to time deals and leave their frames in the socket.
    let mut bystanders = Vec::new();
    for n in 0..BYSTANDERS {
        let mut client = client(&gw, &format!("b{n}")).await;
        client.subscribe("t", "/topic/timedeals", "").await;
        bystanders.push(client);
    }
    let mut watcher = client(&gw, "watcher").await;
    watcher.subscribe("t", "/topic/timedeals", "").await;
    watcher
        .subscribe("n", "/user/queue/notifications", "")
        .await;

    // More time deals at once than the fan-out can hold, in one pipeline.
    let channel = format!("{}broadcast:timedeals", env.prefix);
    let mut pipe = redis::pipe();
    for deal in 0..DEALS {
        pipe.cmd("PUBLISH")
            .arg(&channel)
            .arg(format!(
                r#"{{"type":"TIMEDEAL_STARTED","timeDealId":{deal}}}"#
            ))
            .ignore();
    }
    let mut redis = redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = pipe.query_async(&mut redis).await.unwrap();
    let id = env.notify("watcher").await;

    let mut frames = Vec::new();
    while frames.len() < DEALS + 1 && watcher.read_frames(QUIET * 4).await {
        frames.append(&mut watcher.pending);
    }
    let personal = frames
        .iter()
        .position(|f| message_of(f).0["destination"] == "/user/queue/notifications")
        .expect("the personal notification arrives");
    assert_eq!(message_of(&frames[personal]).1["id"], id);
    let deals: Vec<i64> = frames
        .iter()
        .map(|f| message_of(f))
        .filter(|(headers, _)| headers["destination"] == "/topic/timedeals")
        .map(|(_, body)| body["timeDealId"].as_i64().unwrap())
        .collect();
    println!(
        "{} of {DEALS} time deals reached the watcher; its notification came after {personal} of them",
        deals.len()
    );
    // The relay dropped what the fan-out could not hold instead of waiting for it, so the
    // notification did not queue behind the flood.
    assert!(deals.len() < DEALS, "some time deals are dropped");
    assert!(
        personal <= 20,
        "the notification came after {personal} time deals"
    );
    assert!(
        deals.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    drop(bystanders);
}
