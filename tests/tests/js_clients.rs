//! Real client libraries (`@stomp/stompjs` + `sockjs-client`, run by Node) against the
//! gateway over every SockJS transport and raw WebSocket, with tickets and JWTs.
//! `.ci/run` installs the packages (`npm ci --prefix tests/js`).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "js-client-test-secret-at-least-32-bytes!";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

struct Env {
    base: String,
    prefix: String,
    ticket_prefix: String,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start() -> Env {
    let name = support::unique_name("js");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.jwt_keys = format!("k1={SECRET}");
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let base = format!("http://{}", gateway.local_addr().unwrap());
    tokio::spawn(gateway.run());
    Env {
        base,
        prefix: config.redis.channel_prefix,
        ticket_prefix: config.ticket_prefix,
        _shutdown: shutdown.drop_guard(),
    }
}

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/@stomp/stompjs").exists()
            && dir.join("node_modules/sockjs-client").exists(),
        "the JavaScript client packages are missing: run `npm ci --prefix tests/js`"
    );
    dir
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ticket(env: &Env, user: &str) -> String {
    support::issue_ticket(&env.ticket_prefix, user).await
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Starts `node client.mjs <base> <args...>`; its stdout as lines.
fn spawn_client(env: &Env, args: &[&str]) -> (tokio::process::Child, Lines) {
    let mut child = Command::new("node")
        .current_dir(js_dir())
        .arg("client.mjs")
        .arg(&env.base)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Runs the Node client; publishes `json` for `user` once it is subscribed; returns its last
/// line (`MESSAGE <body>`, `ERROR <message>` or `TIMEOUT`).
async fn run_client(
    env: &Env,
    transport: &str,
    header: (&str, &str),
    destination: &str,
    user: &str,
    json: &str,
) -> String {
    let (mut child, mut lines) = spawn_client(env, &[transport, header.0, header.1, destination]);
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut publisher = redis().await;
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    // Once subscribed, keep publishing until the message arrives (the relay
                    // subscribes asynchronously).
                    let _: i64 = redis::cmd("PUBLISH").arg(format!("{}{user}", env.prefix)).arg(json)
                        .query_async(&mut publisher).await.unwrap();
                    continue;
                }
            };
            match line {
                Some(line) if line == "READY" => continue,
                Some(line) => return line,
                None => return "EXITED".to_owned(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "TIMEOUT (test)".to_owned());
    let _ = child.kill().await;
    outcome
}

/// Raw WebSocket, and the SockJS transports sockjs-client offers in Node.
const TRANSPORTS: [&str; 5] = [
    "raw",
    "websocket",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
];

const JSON: &str = r#"{"id":7,"userId":"user-js","type":"COUPON_ISSUED","title":"쿠폰이 발급되었습니다","message":"여름 세일 쿠폰 - 15%할인","link":"/shopping/coupons","status":"UNREAD","referenceId":"C-1","referenceType":"coupon","createdAt":"2026-02-06T10:00:00","readAt":null}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_over_every_transport_receives_the_exact_notification() {
    let env = start().await;
    for transport in TRANSPORTS {
        for destination in [
            "/user/user-js/queue/notifications",
            "/user/queue/notifications",
        ] {
            let t = ticket(&env, "user-js").await;
            let line = run_client(
                &env,
                transport,
                ("X-WS-Ticket", &t),
                destination,
                "user-js",
                JSON,
            )
            .await;
            assert_eq!(line, format!("MESSAGE {JSON}"), "{transport} {destination}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_with_a_jwt_and_refusals() {
    let env = start().await;
    let exp = chrono::Utc::now().timestamp() + 300;
    let token = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &serde_json::json!({"sub": "user-js", "exp": exp}),
    );
    let bearer = format!("Bearer {token}");
    for transport in ["raw", "xhr-streaming"] {
        let line = run_client(
            &env,
            transport,
            ("Authorization", &bearer),
            "/user/queue/notifications",
            "user-js",
            JSON,
        )
        .await;
        assert_eq!(line, format!("MESSAGE {JSON}"), "{transport}");
    }
    let expired = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &serde_json::json!({"sub": "user-js", "exp": 1000}),
    );
    let line = run_client(
        &env,
        "websocket",
        ("Authorization", &format!("Bearer {expired}")),
        "/user/queue/notifications",
        "user-js",
        JSON,
    )
    .await;
    assert_eq!(line, "ERROR JWT expired");
    let line = run_client(
        &env,
        "xhr-polling",
        ("X-WS-Ticket", "forged"),
        "/user/queue/notifications",
        "user-js",
        JSON,
    )
    .await;
    assert_eq!(line, "ERROR Invalid or expired WebSocket ticket");
    let t = ticket(&env, "user-js").await;
    let line = run_client(
        &env,
        "websocket",
        ("X-WS-Ticket", &t),
        "/user/someone-else/queue/notifications",
        "user-js",
        JSON,
    )
    .await;
    assert_eq!(line, "ERROR Cannot subscribe to another user's queue");
}

/// A burst published once, right after SUBSCRIBE's RECEIPT: every notification arrives, in
/// order, exactly once — over raw WebSocket (frames coalesced into shared messages) and
/// the SockJS transports (frames batched into `a[...]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_the_receipt_arrives_whole_and_in_order() {
    const BURST: usize = 300;
    let env = start().await;
    for transport in TRANSPORTS {
        let user = format!("burst-{transport}");
        let t = ticket(&env, &user).await;
        let count = BURST.to_string();
        let (mut child, mut lines) = spawn_client(
            &env,
            &[
                transport,
                "X-WS-Ticket",
                &t,
                "/user/queue/notifications",
                &count,
            ],
        );
        let outcome = tokio::time::timeout(CLIENT_TIMEOUT, async {
            assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("READY"));
            // Published once, in one pipeline: nothing is retried.
            let mut publisher = redis().await;
            let mut pipe = redis::pipe();
            for id in 0..BURST {
                let json = format!(
                    r#"{{"id":{id},"userId":"{user}","message":"주문 {id} 😀 \"quoted\" 100%"}}"#
                );
                pipe.cmd("PUBLISH")
                    .arg(format!("{}{user}", env.prefix))
                    .arg(json)
                    .ignore();
            }
            pipe.query_async::<()>(&mut publisher).await.unwrap();
            lines.next_line().await.unwrap().unwrap_or_default()
        })
        .await
        .unwrap_or_else(|_| "TIMEOUT (test)".to_owned());
        let _ = child.kill().await;
        let expected: Vec<usize> = (0..BURST).collect();
        assert_eq!(
            outcome,
            format!("BURST {}", serde_json::to_string(&expected).unwrap()),
            "{transport}"
        );
    }
}
