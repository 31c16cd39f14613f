//! The portal's real front-end stack in a real browser: headless Chromium runs
//! `@stomp/stompjs` + `sockjs-client` (the packages in `tests/js`) against the gateway over
//! every SockJS transport a current browser can use, including the iframe-based ones
//! (`/iframe.html` loading the client script) and JSONP. `.ci/run` installs Chromium;
//! `CHROMIUM_BIN` overrides its path.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::routing::{get, post};
use gateway::{Gateway, GatewayConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TRANSPORTS: [&str; 8] = [
    "websocket",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
    "iframe-eventsource",
    "iframe-htmlfile",
    "iframe-xhr-polling",
    "jsonp-polling",
];

fn js_file(path: &str) -> Vec<u8> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("js")
        .join(path);
    std::fs::read(&file)
        .unwrap_or_else(|err| panic!("{}: {err} (run `npm ci --prefix tests/js`)", file.display()))
}

/// Serves the test page and the two client bundles; the page reports to `/event`.
async fn page_server(events: mpsc::UnboundedSender<String>) -> std::net::SocketAddr {
    let page = js_file("browser/index.html");
    let sockjs = js_file("node_modules/sockjs-client/dist/sockjs.min.js");
    let stomp = js_file("node_modules/@stomp/stompjs/bundles/stomp.umd.min.js");
    let script = "application/javascript; charset=utf-8";
    let app = Router::new()
        .route(
            "/index.html",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .route(
            "/sockjs.min.js",
            get(move || async move { ([(header::CONTENT_TYPE, script)], sockjs) }),
        )
        .route(
            "/stomp.umd.min.js",
            get(move || async move { ([(header::CONTENT_TYPE, script)], stomp) }),
        )
        .route(
            "/event",
            post(
                |State(events): State<mpsc::UnboundedSender<String>>, body: String| async move {
                    let _ = events.send(body);
                    "ok"
                },
            ),
        )
        .with_state(events);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn notification(transport: &str) -> String {
    format!(
        r#"{{"id":1,"userId":"browser-{transport}","type":"ORDER_CREATED","title":"주문이 접수되었습니다","message":"2개 상품, 45,000원 결제 대기중 😀 \"{transport}\" 100%","readAt":null}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_in_chromium_over_every_sockjs_transport() {
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "chromium".into());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let page = page_server(events_tx).await;

    let name = support::unique_name("browser");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.sockjs_client_url = format!("http://{page}/sockjs.min.js");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = Gateway::bind(&config, shutdown).await.unwrap();
    let base = format!("http://{}", gateway.local_addr().unwrap());
    tokio::spawn(gateway.run());

    let mut runs = Vec::new();
    for transport in TRANSPORTS {
        let ticket =
            support::issue_ticket(&config.ticket_prefix, &format!("browser-{transport}")).await;
        runs.push(format!("{transport}:{ticket}"));
    }
    let url = format!(
        "http://{page}/index.html?gateway={base}&runs={}",
        runs.join(",")
    );
    let profile = std::env::temp_dir().join(format!("{name}-chromium"));
    let mut browser = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("{chromium}: {err} (install Debian's chromium)"));

    let mut publisher = redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut delivered = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(150), async {
        while let Some(event) = events.recv().await {
            if event == "DONE" {
                return;
            }
            let (kind, rest) = event.split_once(' ').unwrap_or((&event, ""));
            let (transport, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                // Subscribed (receipt): publish exactly once.
                "READY" => {
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(format!(
                            "{}browser-{transport}",
                            config.redis.channel_prefix
                        ))
                        .arg(notification(transport))
                        .query_async(&mut publisher)
                        .await
                        .unwrap();
                }
                "MESSAGE" => {
                    assert_eq!(detail, notification(transport), "{transport}");
                    delivered.push(transport.to_owned());
                }
                _ => panic!("{event}"),
            }
        }
    })
    .await;
    let _ = browser.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        outcome.is_ok(),
        "the page did not finish; delivered: {delivered:?}"
    );
    assert_eq!(delivered, TRANSPORTS, "every transport delivered, in order");
}
