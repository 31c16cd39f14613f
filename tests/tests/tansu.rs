//! `ingest` end to end against tansu, a Kafka-compatible broker run as its own process
//! (memory storage, loopback only). `.ci/run` installs it; `TANSU_BIN` overrides the path.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use shared::channel::Channels;
use shared::event::{EventKind, TopicMap};
use support::{TestDb, kafka, redis_sub, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(90);

/// A tansu broker process, killed on drop.
struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Tansu {
    async fn start() -> Tansu {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} (install it: see README, Testing): {e}")
            });
        let bootstrap = format!("127.0.0.1:{port}");
        let addr = bootstrap.clone();
        wait_until("tansu listening", Duration::from_secs(20), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
        Tansu { child, bootstrap }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_works_against_tansu() {
    let tansu = Tansu::start().await;
    let db = TestDb::new().await;
    let topics = TopicMap::default();
    // tansu does not create topics on produce: create the inputs as the producers would.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .create()
        .unwrap();
    let names = topics.topics();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, kafka::PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.expect("topic created");
    }
    let prefix = format!("{}:notification:", unique_name("redis"));
    let (received, _sub) = redis_sub::subscribe(&support::redis_url(), &prefix).await;
    let mut config = IngestConfig::new(&tansu.bootstrap, &db.url, &support::redis_url());
    config.group_id = unique_name("group");
    config.channels = Channels::new(prefix.clone());
    let ingest = Ingest::new(config).await.unwrap();
    let metrics = ingest.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ingest.run(shutdown.clone()));

    let producer = kafka::producer(&tansu.bootstrap);
    let order =
        r#"{"orderNumber":"ORD-T1","userId":"u-tansu","totalAmount":45000.00,"itemCount":2}"#;
    kafka::produce(
        &producer,
        topics.topic(EventKind::OrderCreated),
        Some("ORD-T1"),
        order.as_bytes(),
    )
    .await;
    kafka::produce(
        &producer,
        topics.topic(EventKind::OrderCreated),
        Some("ORD-T1"),
        order.as_bytes(),
    )
    .await;
    let like = r#"{"likeId":"l-1","postId":"p-1","postTitle":"제목","authorId":"u-tansu","likerName":"민수"}"#;
    kafka::produce(
        &producer,
        topics.topic(EventKind::PostLiked),
        Some("p-1"),
        like.as_bytes(),
    )
    .await;
    kafka::produce(
        &producer,
        topics.topic(EventKind::PostLiked),
        Some("p-1"),
        b"not json",
    )
    .await;

    wait_until("two rows", SETTLE, || async { db.count().await == 2 }).await;
    wait_until("two publishes", SETTLE, || async { received.len() == 2 }).await;
    wait_until("poison dead-lettered", SETTLE, || async {
        metrics.total("dead_lettered") == 1
    })
    .await;
    assert_eq!(
        metrics.total("duplicate"),
        1,
        "the repeated order was deduplicated"
    );
    let messages = received.all();
    assert!(
        messages
            .iter()
            .all(|(channel, _)| channel == &format!("{prefix}u-tansu"))
    );
    let texts: Vec<String> = messages
        .iter()
        .map(|(_, p)| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        texts.contains(&"2개 상품, 45,000원 결제 대기중".to_owned()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"\"제목\"에 민수님이 좋아요를 눌렀습니다".to_owned()),
        "{texts:?}"
    );
    let bootstrap = tansu.bootstrap.clone();
    let dlt = format!("{}.DLT", topics.topic(EventKind::PostLiked));
    let letters = tokio::task::spawn_blocking(move || kafka::read_all(&bootstrap, &dlt))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value.as_deref(), Some(b"not json".as_slice()));

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
