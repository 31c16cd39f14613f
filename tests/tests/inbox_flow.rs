//! The portal front end's inbox flow with the real `@stomp/stompjs` + `sockjs-client` in
//! Node (`tests/js/inbox_flow.mjs`): a WebSocket ticket over REST, STOMP over SockJS with
//! it, the user's queue subscribed with a receipt, the inbox and unread count over REST, one
//! live notification (stored, then published on Redis as the ingest does), marked read over
//! REST, and the unread count dropping by one. `.ci/run` installs the packages.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use shared::notification::{Notification, NotificationType, Status};
use shared::time::Zone;
use support::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "inbox-flow-test-secret-of-at-least-32-bytes";
/// The whole flow, Node's start included, on two busy cores.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/@stomp/stompjs").exists()
            && dir.join("node_modules/sockjs-client").exists(),
        "the JavaScript client packages are missing: run `npm ci --prefix tests/js`"
    );
    dir
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 6, hour, 0, 0).unwrap()
}

/// Stores `n` as the ingest would; its id.
async fn store(db: &TestDb, n: &Notification) -> i64 {
    sqlx::query(
        "INSERT INTO notifications (user_id, type, title, message, link, status, reference_id, \
         reference_type, created_at, read_at, dedup_key, source_record, write_batch) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
    )
    .bind(&n.user_id)
    .bind(n.kind.as_str())
    .bind(&n.title)
    .bind(&n.message)
    .bind(&n.link)
    .bind(n.status.as_str())
    .bind(&n.reference_id)
    .bind(&n.reference_type)
    .bind(n.created_at)
    .bind(n.read_at)
    .bind(rand::random::<[u8; 32]>().to_vec())
    .execute(&db.pool)
    .await
    .unwrap()
    .last_insert_id() as i64
}

fn notification(user: &str, kind: NotificationType, hour: u32, status: Status) -> Notification {
    Notification {
        id: 0,
        user_id: user.to_owned(),
        kind,
        title: "주문이 접수되었습니다".to_owned(),
        message: "2개 상품, 45,000원 결제 대기중".to_owned(),
        link: Some(format!("/shopping/orders/ORD-{hour}")),
        status,
        reference_id: Some(format!("ORD-{hour}")),
        reference_type: Some("order".to_owned()),
        created_at: at(hour),
        read_at: (status == Status::Read).then(|| at(hour) + chrono::Duration::minutes(1)),
    }
}

/// The script's lines, in order, as JSON.
struct Steps(Vec<Value>);

impl Steps {
    /// Every line of `step`, in order.
    fn all(&self, step: &str) -> Vec<&Value> {
        self.0.iter().filter(|l| l["step"] == step).collect()
    }

    /// The one line of `step`.
    fn one(&self, step: &str) -> &Value {
        match self.all(step)[..] {
            [line] => line,
            _ => panic!("expected one {step:?} line: {:#?}", self.0),
        }
    }

    /// The data of the success envelope of the REST answer on `line`.
    fn data<'a>(&self, line: &'a Value) -> &'a Value {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["contentType"], "application/json", "{line}");
        assert_eq!(line["body"]["success"], true, "{line}");
        &line["body"]["data"]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_end_inbox_flow_with_a_live_notification_marked_read() {
    let db = TestDb::new().await;
    let name = support::unique_name("flow");
    let user = format!("{name}-user");
    let mut seeded = Vec::new();
    for (hour, status) in [
        (1, Status::Unread),
        (2, Status::Read),
        (3, Status::Unread),
        (4, Status::Unread),
    ] {
        let n = notification(&user, NotificationType::ORDER_CREATED, hour, status);
        seeded.push(store(&db, &n).await);
    }
    for hour in [5, 6] {
        let n = notification(
            "someone-else",
            NotificationType::SYSTEM,
            hour,
            Status::Unread,
        );
        store(&db, &n).await;
    }

    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.jwt_keys = format!("k1={SECRET}");
    config.database_url = Some(db.url.clone());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = Gateway::bind(&config, shutdown).await.unwrap();
    let base = format!("http://{}", gateway.local_addr().unwrap());
    tokio::spawn(gateway.run());

    let token = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": user, "exp": Utc::now().timestamp() + 600}),
    );
    let mut child = Command::new("node")
        .current_dir(js_dir())
        .args(["inbox_flow.mjs", &base, &token, &user])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // The live notification: stored, then published once the script has loaded the inbox.
    let mut live = notification(&user, NotificationType::COUPON_ISSUED, 9, Status::Unread);
    live.title = "쿠폰이 발급되었습니다".to_owned();
    live.message = "여름 세일 쿠폰 - 15%할인 \"VIP\" 😀".to_owned();
    let mut published = None;
    let mut steps = Vec::new();
    let finished = tokio::time::timeout(FLOW_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let step: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            let ready = step["step"] == "ready";
            steps.push(step);
            if ready {
                live.id = store(&db, &live).await;
                let json = live.to_json(&Zone::utc());
                let mut redis = redis::Client::open(support::redis_url())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let receivers: i64 = redis::cmd("PUBLISH")
                    .arg(format!("{}{user}", config.redis.channel_prefix))
                    .arg(&json)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                assert!(
                    receivers >= 1,
                    "the gateway is subscribed after the receipt"
                );
                published = Some(json);
            }
        }
    })
    .await;
    let _ = child.kill().await;
    let steps = Steps(steps);
    assert!(
        finished.is_ok(),
        "the flow did not end in time: {:#?}",
        steps.0
    );
    assert_eq!(steps.0.last().unwrap()["step"], "done", "{:#?}", steps.0);

    // 1) A one-time ticket.
    let ticket = steps.data(steps.one("ticket"))["ticket"].as_str().unwrap();
    assert_eq!(ticket.len(), 36, "a UUID: {ticket}");
    // 2) and 3) Connected as the ticket's user, subscribed with a receipt.
    assert_eq!(steps.one("connected")["userName"], user.as_str());
    steps.one("subscribed");
    // 4) The inbox: the user's own rows only, newest first, and the unread count.
    let inbox = steps.data(steps.one("inbox"));
    let ids: Vec<i64> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    let newest_first: Vec<i64> = seeded.iter().rev().copied().collect();
    assert_eq!(ids, newest_first, "{inbox}");
    assert_eq!(inbox["page"], 1);
    assert_eq!(inbox["size"], 20);
    assert_eq!(inbox["totalElements"], 4);
    assert_eq!(inbox["totalPages"], 1);
    assert_eq!(inbox["items"][0]["createdAt"], "2026-02-06T04:00:00");
    let counts: Vec<&Value> = steps
        .all("count")
        .into_iter()
        .map(|line| steps.data(line))
        .collect();
    assert_eq!(counts.len(), 3, "{:#?}", steps.0);
    assert_eq!(*counts[0], 3, "unread before the live notification");
    // 5) The live notification, byte for byte, on the subscribed destination.
    let published = published.expect("the script reached the ready step");
    let message = steps.one("message");
    assert_eq!(message["body"], published.as_str());
    assert_eq!(
        message["destination"],
        format!("/user/{user}/queue/notifications")
    );
    assert!(
        message["contentType"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/json")),
        "{message}"
    );
    assert_eq!(*counts[1], 4, "unread with the live notification");
    // 6) Read over REST: the same notification, READ with a readAt.
    let read = steps.data(steps.one("read"));
    let mut expected: Value = serde_json::from_str(&published).unwrap();
    assert!(
        read["readAt"].as_str().is_some_and(|t| t.len() == 19),
        "{read}"
    );
    expected["status"] = json!("READ");
    expected["readAt"] = read["readAt"].clone();
    assert_eq!(*read, expected);
    // 7) The count dropped by one.
    assert_eq!(*counts[2], 3, "unread after the read mark");
    let status: String =
        sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM notifications WHERE id = ?")
            .bind(live.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "READ");
}
