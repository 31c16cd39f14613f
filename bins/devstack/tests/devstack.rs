//! The run command end to end: `devstack run` as a child process from a clean state, one
//! event of every topic through `devstack produce`, all 13 notifications and the time deal
//! received by the real `@stomp/stompjs` + `sockjs-client` (Node) over SockJS, then SIGINT:
//! nothing it started is left running and every port is free again.

#![allow(clippy::print_stdout)]

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Longest wait for the client to connect, and then for all 13 notifications.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for `devstack produce`.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The 13 notification types and their titles (SPEC 2.1).
const TITLES: [(&str, &str); 13] = [
    ("SYSTEM", "환영합니다!"),
    ("ORDER_CREATED", "주문이 접수되었습니다"),
    ("ORDER_CANCELLED", "주문이 취소되었습니다"),
    ("PAYMENT_COMPLETED", "결제가 완료되었습니다"),
    ("PAYMENT_FAILED", "결제가 실패했습니다"),
    ("DELIVERY_STARTED", "배송이 시작되었습니다"),
    ("COUPON_ISSUED", "쿠폰이 발급되었습니다"),
    ("BLOG_LIKE", "게시글에 좋아요가 달렸습니다"),
    ("BLOG_COMMENT", "게시글에 새 댓글이 달렸습니다"),
    ("BLOG_REPLY", "댓글에 답글이 달렸습니다"),
    ("BLOG_FOLLOW", "새 팔로워가 생겼습니다"),
    ("PRISM_TASK_COMPLETED", "AI 태스크가 완료되었습니다"),
    ("PRISM_TASK_FAILED", "AI 태스크가 실패했습니다"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_command_delivers_every_topic_and_stops_everything_it_started() {
    support::assert_js_installed("sockjs-client");
    let stack = support::start("run").await;
    let started = support::descendants(stack.pid);
    let names: Vec<&str> = started.iter().map(|p| p.comm.as_str()).collect();
    assert!(
        names.contains(&"mariadbd") && names.contains(&"redis-server"),
        "a clean state on free ports: devstack starts its own servers; children: {names:?}"
    );

    // A real client, subscribed (receipt) before anything is produced.
    let user = format!("devstack-user-{}", std::process::id());
    let mut client = Command::new("node")
        .current_dir(support::package_dir())
        .args([
            "tests/js/receive.mjs",
            &stack.page,
            &user,
            "13",
            "xhr-streaming",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(CLIENT_TIMEOUT, lines.next_line())
        .await
        .expect("the client did not connect in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("READY"), "{}", stack.log());

    let produce = tokio::time::timeout(
        PRODUCE_TIMEOUT,
        Command::new(env!("CARGO_BIN_EXE_devstack"))
            .args(["produce", "--topic", "all", "--user", &user])
            .args(["--bootstrap", &stack.kafka])
            .output(),
    )
    .await
    .expect("devstack produce did not finish in time")
    .unwrap();
    let produced = String::from_utf8_lossy(&produce.stdout);
    assert!(
        produce.status.success(),
        "{produced}{}",
        String::from_utf8_lossy(&produce.stderr)
    );
    assert_eq!(
        produced.lines().count(),
        14,
        "one line per topic: {produced}"
    );

    let mut received: BTreeMap<String, Value> = BTreeMap::new();
    let mut time_deals = Vec::new();
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(body) = line.strip_prefix("MESSAGE ") {
                let n: Value = serde_json::from_str(body).unwrap();
                let kind = n["type"].as_str().unwrap().to_owned();
                assert!(received.insert(kind, n).is_none(), "one of each: {body}");
            } else if let Some(body) = line.strip_prefix("TIMEDEAL ") {
                time_deals.push(serde_json::from_str::<Value>(body).unwrap());
            } else {
                return line;
            }
        }
        "EXITED".to_owned()
    })
    .await
    .unwrap_or_else(|_| "TIMEOUT (test)".to_owned());
    let _ = client.kill().await;
    assert_eq!(
        outcome,
        "DONE",
        "received {:?} and {} time deals",
        received.keys(),
        time_deals.len()
    );
    for (kind, title) in TITLES {
        let n = &received[kind];
        assert_eq!(n["title"], title, "{n}");
        assert_eq!(n["userId"], user.as_str(), "{n}");
        assert_eq!(n["status"], "UNREAD", "{n}");
        println!("{kind:<21} {} | {}", n["title"], n["message"]);
    }
    assert_eq!(time_deals.len(), 1, "{time_deals:?}");
    assert_eq!(
        time_deals[0]["type"], "TIMEDEAL_STARTED",
        "{}",
        time_deals[0]
    );
    assert_eq!(
        time_deals[0]["title"], "타임딜이 시작되었습니다",
        "{}",
        time_deals[0]
    );
    println!("TIMEDEAL (broadcast)  {}", time_deals[0]);

    let ports = stack.ports.clone();
    let data_dir = stack.data_dir.clone();
    let (after, clean_exit) = stack.interrupt().await;
    assert!(clean_exit, "devstack exits 0 after SIGINT: {after:?}");
    assert!(after.iter().any(|l| l == "devstack stopped"), "{after:?}");
    let left: Vec<_> = started.iter().filter(|p| support::alive(p)).collect();
    assert!(
        left.is_empty(),
        "still running after devstack exited: {left:?}"
    );
    for port in ports {
        assert!(support::port_free(port), "port {port} is still taken");
    }
    let _ = std::fs::remove_dir_all(data_dir);
}
