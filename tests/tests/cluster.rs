//! Redis Cluster mode against a real cluster (three masters with a replica each, started
//! from `redis-server` on loopback ports by `devstack::redis_cluster`): the real `ingest`
//! SPUBLISHes, two gateways SSUBSCRIBE each user's channel on the shard that owns its slot;
//! tickets and the time-deal broadcast work there too; and a master killed mid-stream loses
//! no notification: the gateway resubscribes on the promoted replica and recovers the gap
//! from MySQL while the STOMP session stays open. Gap times are printed (`--nocapture`).

#![allow(clippy::print_stdout)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use devstack::redis_cluster::RedisCluster;
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use shared::redis_link::RedisTarget;
use support::TestDb;
use support::stomp::{Client, QUIET, ids, message_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "cluster-test-secret-of-at-least-32-bytes";

struct Gw {
    addr: SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

struct Env {
    db: TestDb,
    prefix: String,
    cluster: RedisCluster,
}

impl Env {
    async fn new() -> Env {
        Env {
            db: TestDb::new().await,
            prefix: format!("{}:notification:", support::unique_name("cluster")),
            cluster: RedisCluster::start()
                .await
                .expect("a private Redis Cluster (redis-server and redis-cli installed)"),
        }
    }

    async fn gateway(&self) -> Gw {
        let mut config =
            GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &self.cluster.address());
        config.redis.channel_prefix = self.prefix.clone();
        config.jwt_keys = format!("k1={SECRET}");
        config.database_url = Some(self.db.url.clone());
        let shutdown = CancellationToken::new();
        let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
        let addr = gateway.local_addr().unwrap();
        tokio::spawn(gateway.run());
        Gw {
            addr,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Users whose channels spread over every master: `per_master` for each.
    async fn users_on_every_shard(&self, per_master: usize) -> Vec<(String, u16)> {
        let masters: BTreeSet<u16> = self
            .cluster
            .masters()
            .await
            .unwrap()
            .iter()
            .map(|m| m.port)
            .collect();
        assert_eq!(masters.len(), 3);
        let mut picked: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for n in 0.. {
            let user = format!("user{n}");
            let port = self
                .cluster
                .master_of(&format!("{}{user}", self.prefix))
                .await
                .unwrap();
            let on_it = picked.entry(port).or_default();
            if on_it.len() < per_master {
                on_it.push(user);
            }
            if picked.len() == 3 && picked.values().all(|u| u.len() == per_master) {
                break;
            }
        }
        picked
            .into_iter()
            .flat_map(|(port, users)| users.into_iter().map(move |u| (u, port)))
            .collect()
    }
}

fn token(user: &str) -> String {
    let exp = Utc::now().timestamp() + 600;
    sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": user, "exp": exp}),
    )
}

async fn client(gw: &Gw, user: &str) -> Client {
    Client::connect(gw.addr, &token(user)).await
}

async fn post(addr: SocketAddr, path: &str, user: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        token(user)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// How many subscribers `channel` has on the master `port` (sharded Pub/Sub).
async fn shard_subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> i64 {
    let answer: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut cluster.node(port).await.unwrap())
        .await
        .unwrap();
    match &answer[..] {
        [_, redis::Value::Int(n)] => *n,
        other => panic!("PUBSUB SHARDNUMSUB answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_every_shard_get_each_notification_once_through_two_gateways_and_ingest() {
    use ingest::config::IngestConfig;
    use ingest::consumer::Ingest;
    use shared::channel::Channels;
    use shared::event::{EventKind, TopicMap};
    use support::kafka::{self, MockKafka};

    let env = Env::new().await;
    let a = env.gateway().await;
    let b = env.gateway().await;
    let users = env.users_on_every_shard(2).await;
    // Even users on gateway A, odd ones on B; the first user has a tab on each.
    let mut clients = Vec::new();
    for (n, (user, _)) in users.iter().enumerate() {
        let gw = if n % 2 == 0 { &a } else { &b };
        clients.push((user.clone(), client(gw, user).await));
    }
    clients.push((users[0].0.clone(), client(&b, &users[0].0).await));
    let bystander_gw = &a;
    let mut bystander = client(bystander_gw, "bystander").await;
    bystander
        .subscribe("n", "/user/queue/notifications", "")
        .await;
    for (_, client) in &mut clients {
        client.subscribe("n", "/user/queue/notifications", "").await;
        client.subscribe("t", "/topic/timedeals", "").await;
    }

    // Each channel is subscribed on the master that owns its slot, once per gateway with
    // a session of that user, and nowhere else.
    let masters: Vec<u16> = env
        .cluster
        .masters()
        .await
        .unwrap()
        .iter()
        .map(|m| m.port)
        .collect();
    for (n, (user, owner)) in users.iter().enumerate() {
        let channel = format!("{}{user}", env.prefix);
        for &port in &masters {
            let expected = match (port == *owner, n) {
                (false, _) => 0,
                (true, 0) => 2,
                (true, _) => 1,
            };
            assert_eq!(
                shard_subscribers(&env.cluster, port, &channel).await,
                expected,
                "{channel} on master {port} (owner {owner})"
            );
        }
    }
    let unconnected = format!("{}nobody", env.prefix);
    let owner = env.cluster.master_of(&unconnected).await.unwrap();
    assert_eq!(
        shard_subscribers(&env.cluster, owner, &unconnected).await,
        0
    );

    // The real ingest, on the cluster: three orders per user, and one time deal.
    let topics = TopicMap::default();
    let kafka = MockKafka::new(&topics);
    let mut config = IngestConfig::new(&kafka.bootstrap, &env.db.url, &env.cluster.address());
    config.group_id = support::unique_name("group");
    config.channels = Channels::new(env.prefix.clone());
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let stop_ingest = CancellationToken::new();
    let running = tokio::spawn(ingest.run(stop_ingest.clone()));
    let producer = kafka::producer(&kafka.bootstrap);
    for (user, _) in &users {
        for order in 0..3 {
            let event = format!(
                r#"{{"orderNumber":"ORD-{user}-{order}","userId":"{user}","totalAmount":1000,"itemCount":1}}"#
            );
            kafka::produce(
                &producer,
                topics.topic(EventKind::OrderCreated),
                Some(user),
                event.as_bytes(),
            )
            .await;
        }
    }
    kafka::produce(
        &producer,
        topics.topic(EventKind::TimeDealStarted),
        Some("1"),
        br#"{"timeDealId":1,"timeDealName":"Cluster deal"}"#,
    )
    .await;

    for (user, client) in &mut clients {
        let mut frames = Vec::new();
        while frames.len() < 4 {
            frames.push(client.next().await);
        }
        frames.extend(client.until_quiet().await);
        let (deals, notes): (Vec<&String>, Vec<&String>) = frames
            .iter()
            .partition(|f| message_of(f).0["destination"] == "/topic/timedeals");
        assert_eq!(deals.len(), 1, "{user}: the time deal once");
        assert_eq!(message_of(deals[0]).1["timeDealId"], 1);
        let notes: Vec<String> = notes.into_iter().cloned().collect();
        let got = ids(&notes);
        assert_eq!(
            got.len(),
            3,
            "{user}: three notifications, once each: {notes:?}"
        );
        assert_eq!(
            got.iter().collect::<BTreeSet<_>>().len(),
            3,
            "{user}: no duplicate"
        );
        for note in &notes {
            assert_eq!(
                message_of(note).1["userId"],
                user.as_str(),
                "only their own"
            );
        }
    }
    assert!(
        bystander.until_quiet().await.is_empty(),
        "nothing for others"
    );
    stop_ingest.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_work_on_a_cluster_and_pattern_mode_is_refused() {
    let env = Env::new().await;
    let gw = env.gateway().await;
    let (status, body) = post(gw.addr, "/api/v1/notifications/ws-ticket", "ticket-user").await;
    assert_eq!(status, 200, "{body}");
    let ticket: Value = serde_json::from_str(&body).unwrap();
    let ticket = ticket["data"]["ticket"]
        .as_str()
        .or_else(|| ticket["ticket"].as_str())
        .expect("a ticket")
        .to_owned();
    let (mut client, connected) = Client::open(gw.addr, &format!("X-WS-Ticket:{ticket}\n")).await;
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");
    client.subscribe("n", "/user/queue/notifications", "").await;
    // Redeemed once: the same ticket is refused the second time.
    let (_, refused) = Client::open(gw.addr, &format!("X-WS-Ticket:{ticket}\n")).await;
    assert!(refused.starts_with("ERROR"), "{refused}");

    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &env.cluster.address());
    config.subscribe_mode = gateway::hub::SubscribeMode::Pattern;
    let refused = Gateway::bind(&config, CancellationToken::new()).await;
    let err = refused
        .err()
        .expect("pattern mode refused on a cluster")
        .to_string();
    assert!(err.contains("no sharded form"), "{err}");
    assert!(matches!(
        RedisTarget::parse(&env.cluster.address()).unwrap(),
        RedisTarget::Cluster(nodes) if nodes.len() == 6
    ));
}

/// Stores a notification of `user`; its id and the JSON ingest would publish.
async fn store(env: &Env, user: &str) -> (i64, String) {
    let id = support::notify::store(&env.db.pool, user).await;
    let row = shared::inbox::Inbox::new(env.db.pool.clone())
        .since(user, id - 1, 1)
        .await
        .unwrap()
        .remove(0);
    (id, row.to_json(&shared::time::Zone::utc()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_loses_nothing_and_the_session_stays_open() {
    const TOTAL: usize = 60;
    const SWALLOWED: usize = 3;
    let mut env = Env::new().await;
    let gw = env.gateway().await;
    let user = "survivor";
    let channel = format!("{}{user}", env.prefix);
    let owner = env.cluster.master_of(&channel).await.unwrap();
    let mut client = client(&gw, user).await;
    client
        .subscribe("n", "/user/queue/notifications", "last-id:0\n")
        .await;
    let publisher = RedisTarget::parse(&env.cluster.address())
        .unwrap()
        .connect_lazy()
        .unwrap();

    // A steady stream: stored, then published (as ingest does); the master that owns the
    // user's slot is killed a third of the way in. What is published while the gateway's
    // subscription is down reaches nobody: only the recovery can bring those.
    let mut stored = Vec::new();
    let mut killed_at = None;
    let mut failed_publishes = 0;
    // Taken by the cluster while the gateway was not subscribed: only recovery brings these.
    let mut unheard = Vec::new();
    let mut heard_again = None;
    for n in 0..TOTAL {
        if n == TOTAL / 3 {
            // Published to the master just before it dies, acknowledged, and never sent on
            // to the subscriber: stored but not published here, so only the gap recovery
            // can bring them, whatever the timing of the failover.
            for _ in 0..SWALLOWED {
                stored.push(support::notify::store(&env.db.pool, user).await);
            }
            env.cluster.kill(owner).unwrap();
            killed_at = Some(Instant::now());
        }
        let (id, json) = store(&env, user).await;
        // Like ingest, a publish that fails is retried until the cluster takes it.
        loop {
            let publish = publisher.publish(&channel, &json);
            match tokio::time::timeout(Duration::from_millis(500), publish).await {
                Ok(Ok(0)) => {
                    unheard.push(id);
                    break;
                }
                Ok(Ok(_)) => {
                    if let (Some(killed), None) = (killed_at, heard_again) {
                        heard_again = Some(killed.elapsed());
                    }
                    break;
                }
                _ => {
                    failed_publishes += 1;
                    assert!(failed_publishes < 200, "the cluster never took the publish");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        stored.push(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.cluster
        .wait_healthy(Duration::from_secs(30))
        .await
        .unwrap();
    let new_owner = env.cluster.master_of(&channel).await.unwrap();
    assert_ne!(new_owner, owner, "the replica took over the slot");

    let mut got = Vec::new();
    let mut last_arrival = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < TOTAL + SWALLOWED && Instant::now() < deadline {
        if client.read_frames(Duration::from_secs(1)).await {
            last_arrival = Instant::now();
        }
        let frames = std::mem::take(&mut client.pending);
        got.extend(ids(&frames));
    }
    got.extend(ids(&client.until_quiet().await));
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    println!(
        "master :{owner} killed; the replica :{new_owner} took over; gap (kill -> the gateway \
         subscribed again): {:.2} s; {failed_publishes} publish attempts failed meanwhile, \
         {} published while nobody was subscribed and {SWALLOWED} swallowed by the dying master \
         (recovered from MySQL); all {} \
         notifications in the session {:.2} s after the kill",
        heard_again
            .expect("the gateway subscribed again")
            .as_secs_f64(),
        unheard.len(),
        distinct.len(),
        last_arrival
            .duration_since(killed_at.unwrap())
            .as_secs_f64()
    );
    assert_eq!(got.len(), distinct.len(), "no duplicate: {got:?}");
    assert_eq!(
        distinct,
        stored.iter().copied().collect::<BTreeSet<i64>>(),
        "every notification exactly once"
    );
    // The session stayed open: it still receives live notifications.
    let (id, json) = store(&env, user).await;
    publisher.publish(&channel, &json).await.unwrap();
    let (_, body) = client.message().await;
    assert_eq!(body["id"], id);
    let _ = QUIET;
}
