//! `ingest`'s `/readyz` follows its reach of the Kafka broker: tansu (a process of its own,
//! memory storage) advertises a TCP proxy on loopback as its address, so every connection
//! ingest makes goes through the proxy, and a cut (every connection dropped, new ones
//! refused) takes the whole cluster away. MariaDB and Redis stay reachable throughout.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use devstack::procs::{self, Proc};
use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use shared::channel::Channels;
use shared::event::{EventKind, TopicMap};
use support::proxy::Proxy;
use support::{TestDb, kafka, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

/// Longest wait for the instance to join the group and answer 200 at first.
const FIRST_READY: Duration = Duration::from_secs(60);
/// How long an idle instance with a healthy broker is watched: 200 all along.
const IDLE: Duration = Duration::from_secs(10);
/// Bound of the time from the cut to the first 503.
const CUT_TO_NOT_READY: Duration = Duration::from_secs(15);
/// How long the cut is held once `/readyz` said 503: 503 all along.
const HELD: Duration = Duration::from_secs(5);
/// Bound of the time from the restore to the first 200. librdkafka's reconnect backoff
/// grows to 10 s (±jitter) during a cut; statistics come every second after that.
const RESTORE_TO_READY: Duration = Duration::from_secs(20);
/// How often `/readyz` is asked.
const POLL: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_secs(60);

/// tansu behind a proxy; the broker process is killed on drop.
struct ProxiedTansu {
    proxy: Proxy,
    _tansu: Proc,
}

impl ProxiedTansu {
    async fn start() -> ProxiedTansu {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let port = procs::free_port().expect("a free port");
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        let tansu = procs::start_tansu_advertising(
            &bin,
            port,
            &proxy.addr.to_string(),
            Path::new(env!("CARGO_TARGET_TMPDIR")),
        )
        .await
        .unwrap_or_else(|e| panic!("tansu (see README, Testing): {e:#}"));
        devstack::kafka::create_topics(&proxy.addr.to_string())
            .await
            .expect("topics created through the proxy");
        ProxiedTansu {
            proxy,
            _tansu: tansu,
        }
    }

    fn bootstrap(&self) -> String {
        self.proxy.addr.to_string()
    }
}

/// The status code and body of `GET path` on the admin listener.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    (status, response)
}

/// Asks `/readyz` every [`POLL`] until it answers `status`; the time that took, or the
/// last answer after `bound`.
async fn readyz_turns(admin: SocketAddr, status: u16, bound: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let (got, response) = get(admin, "/readyz").await;
        if got == status {
            return Ok(start.elapsed());
        }
        if start.elapsed() > bound {
            return Err(response);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks `/readyz` every [`POLL`] for `span`; panics, saying `why`, unless each answer is
/// `status`.
async fn readyz_stays(admin: SocketAddr, status: u16, span: Duration, why: &str) {
    let start = Instant::now();
    while start.elapsed() < span {
        let (got, response) = get(admin, "/readyz").await;
        assert_eq!(
            got,
            status,
            "{why}: /readyz after {:?}: {response}",
            start.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn kafka_down_gauge(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find(|line| line.starts_with(r#"ingest_dependency_down{dependency="kafka"}"#))
        .and_then(|line| line.rsplit(' ').next())
}

#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_the_kafka_broker_is_cut_and_200_once_it_is_back() {
    let broker = ProxiedTansu::start().await;
    let db = TestDb::new().await;
    let topics = TopicMap::default();
    let mut config = IngestConfig::new(&broker.bootstrap(), &db.url, &support::redis_url());
    config.group_id = unique_name("group");
    config.channels = Channels::new(format!("{}:notification:", unique_name("redis")));
    config.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let ingest = Ingest::new(config).await.expect("ingest starts");
    let shutdown = CancellationToken::new();
    let admin = ingest
        .serve_admin(&shutdown)
        .await
        .expect("admin listener")
        .expect("admin address");
    let task = tokio::spawn(ingest.run(shutdown.clone()));

    // A healthy broker with nothing to consume: ready, and ready all along.
    let joined = readyz_turns(admin, 200, FIRST_READY).await;
    assert!(joined.is_ok(), "never ready: {joined:?}");
    readyz_stays(admin, 200, IDLE, "an idle consumer of a healthy broker").await;
    let (_, metrics) = get(admin, "/metrics").await;
    assert_ne!(kafka_down_gauge(&metrics), Some("1"), "{metrics}");

    broker.proxy.cut();
    let to_not_ready = readyz_turns(admin, 503, CUT_TO_NOT_READY)
        .await
        .unwrap_or_else(|last| {
            panic!("/readyz still not 503 {CUT_TO_NOT_READY:?} after the cut: {last}")
        });
    let (_, response) = get(admin, "/readyz").await;
    assert!(
        response.contains("kafka unreachable"),
        "names the broker: {response}"
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(kafka_down_gauge(&metrics), Some("1"), "{metrics}");
    readyz_stays(admin, 503, HELD, "the broker is still cut").await;

    broker.proxy.restore();
    let to_ready = readyz_turns(admin, 200, RESTORE_TO_READY)
        .await
        .unwrap_or_else(|last| {
            panic!("/readyz still not 200 {RESTORE_TO_READY:?} after the restore: {last}")
        });
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(kafka_down_gauge(&metrics), Some("0"), "{metrics}");
    eprintln!("kafka cut → /readyz 503: {to_not_ready:?}; restore → 200: {to_ready:?}");

    // Ready means consuming: a record sent after the restore is stored.
    let producer = kafka::producer(&broker.bootstrap());
    let order = r#"{"orderNumber":"ORD-R1","userId":"u-ready","totalAmount":1,"itemCount":1}"#;
    kafka::produce(
        &producer,
        topics.topic(EventKind::OrderCreated),
        Some("ORD-R1"),
        order.as_bytes(),
    )
    .await;
    wait_until(
        "the record sent after the restore stored",
        SETTLE,
        || async { db.count().await == 1 },
    )
    .await;

    shutdown.cancel();
    task.await.unwrap().expect("ingest stops cleanly");
}
