//! The inbox REST API (SPEC 4) against the real MariaDB and Redis: every endpoint, its
//! envelope and error codes, authentication in both modes, cross-user isolation, keyset
//! paging while rows arrive, and the ticket that opens one STOMP session.

mod support;

use std::net::SocketAddr;

use chrono::{Duration as Span, TimeZone, Utc};
use gateway::api::auth::RestAuth;
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "inbox-api-test-secret-of-at-least-32-bytes";
const BASE: &str = "/api/v1/notifications";

struct Api {
    addr: SocketAddr,
    ticket_prefix: String,
    db: TestDb,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(adjust: impl FnOnce(&mut GatewayConfig)) -> Api {
    let db = TestDb::new().await;
    let name = support::unique_name("api");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.jwt_keys = format!("k1={SECRET}");
    config.database_url = Some(db.url.clone());
    adjust(&mut config);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    tokio::spawn(gateway.run());
    Api {
        addr,
        ticket_prefix: config.ticket_prefix,
        db,
        _shutdown: shutdown.drop_guard(),
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

/// An HTTP answer: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The data of a success envelope.
    fn data(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        let json = self.json();
        assert_eq!(json["success"], true, "{json}");
        json["data"].clone()
    }

    /// The error code of a failure envelope with `status`.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["success"], false, "{json}");
        let error = &json["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert!(error["timestamp"].as_str().is_some(), "{json}");
        error["code"].as_str().unwrap().to_owned()
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("answer in time")
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn as_user(api: &Api, user: &str, method: &str, path: &str) -> Answer {
    let bearer = format!("Bearer {}", token(user));
    call(api.addr, method, path, &[("Authorization", &bearer)]).await
}

/// Inserts a notification of `user` created `age` seconds before a fixed instant; its id.
async fn insert(db: &TestDb, user: &str, kind: &str, age: i64, status: &str) -> i64 {
    let created = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap() - Span::seconds(age);
    let result = sqlx::query(
        "INSERT INTO notifications (user_id, type, title, message, link, status, reference_id, \
         reference_type, created_at, read_at, dedup_key, source_record, write_batch) \
         VALUES (?, ?, '제목', '메시지', '/x', ?, NULL, NULL, ?, NULL, ?, NULL, 0)",
    )
    .bind(user)
    .bind(kind)
    .bind(status)
    .bind(created)
    .bind(rand::random::<[u8; 32]>().to_vec())
    .execute(&db.pool)
    .await
    .unwrap();
    result.last_insert_id() as i64
}

fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_newest_first_with_totals_and_only_the_users_own() {
    let api = start(|_| {}).await;
    let mut mine = Vec::new();
    for age in 0..25 {
        let status = if age % 5 == 0 { "READ" } else { "UNREAD" };
        mine.push(insert(&api.db, "alice", "ORDER_CREATED", age, status).await);
    }
    insert(&api.db, "bob", "ORDER_CREATED", 0, "UNREAD").await;

    let page = as_user(&api, "alice", "GET", &format!("{BASE}?page=1&size=10"))
        .await
        .data();
    assert_eq!(ids(&page["items"]), mine[..10].to_vec(), "newest first");
    assert_eq!(page["page"], 1);
    assert_eq!(page["size"], 10);
    assert_eq!(page["totalElements"], 25);
    assert_eq!(page["totalPages"], 3);
    let item = &page["items"][0];
    assert_eq!(item["userId"], "alice");
    assert_eq!(item["createdAt"], "2026-11-01T12:00:00");
    let keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 11, "every key of SPEC 2.5: {keys:?}");

    let last = as_user(&api, "alice", "GET", &format!("{BASE}/?page=3&size=10"))
        .await
        .data();
    assert_eq!(ids(&last["items"]), mine[20..].to_vec());
    let past = as_user(&api, "alice", "GET", &format!("{BASE}?page=4&size=10"))
        .await
        .data();
    assert_eq!(past["items"], json!([]), "a page past the end is empty");
    assert_eq!(past["totalPages"], 3);

    let unread = as_user(&api, "alice", "GET", &format!("{BASE}/unread?size=100"))
        .await
        .data();
    assert_eq!(unread["totalElements"], 20);
    assert!(
        unread["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "UNREAD")
    );
    let default = as_user(&api, "alice", "GET", BASE).await.data();
    assert_eq!(default["size"], 20, "default size");
    assert_eq!(default["items"].as_array().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_c002_and_unknown_paths_c003_and_wrong_methods_405() {
    let api = start(|_| {}).await;
    for query in [
        "page=0", "size=101", "size=0", "page=x", "size=-1", "before=x",
    ] {
        let answer = as_user(&api, "alice", "GET", &format!("{BASE}?{query}")).await;
        assert_eq!(answer.error(400), "C002", "{query}");
    }
    let answer = as_user(&api, "alice", "PUT", &format!("{BASE}/abc/read")).await;
    assert_eq!(answer.error(400), "C002");
    let answer = as_user(&api, "alice", "DELETE", &format!("{BASE}/1.5")).await;
    assert_eq!(answer.error(400), "C002");
    let answer = as_user(
        &api,
        "alice",
        "GET",
        &format!("{BASE}/unread/count?by=type"),
    )
    .await;
    assert_eq!(answer.error(400), "C002");

    for path in ["/api/v1/nope", "/api/v2/notifications", "/api"] {
        let answer = as_user(&api, "alice", "GET", path).await;
        assert_eq!(answer.error(404), "C003", "{path}");
    }
    let answer = as_user(&api, "alice", "POST", &format!("{BASE}/read-all")).await;
    assert_eq!(answer.error(405), "C006");
    assert_eq!(answer.header("allow"), Some("PUT"));
    let answer = as_user(&api, "alice", "GET", &format!("{BASE}/7")).await;
    assert_eq!(answer.error(405), "C006");
    assert_eq!(answer.header("allow"), Some("DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_is_idempotent_and_another_users_row_is_never_touched() {
    let api = start(|_| {}).await;
    let own = insert(&api.db, "alice", "BLOG_LIKE", 10, "UNREAD").await;
    let foreign = insert(&api.db, "bob", "BLOG_LIKE", 10, "UNREAD").await;

    let first = as_user(&api, "alice", "PUT", &format!("{BASE}/{own}/read"))
        .await
        .data();
    assert_eq!(first["id"], own);
    assert_eq!(first["status"], "READ");
    let read_at = first["readAt"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = as_user(&api, "alice", "PUT", &format!("{BASE}/{own}/read"))
        .await
        .data();
    assert_eq!(second["readAt"], read_at.as_str(), "readAt is set once");

    for (method, path) in [
        ("PUT", format!("{BASE}/{foreign}/read")),
        ("DELETE", format!("{BASE}/{foreign}")),
        ("PUT", format!("{BASE}/999999999/read")),
        ("DELETE", format!("{BASE}/999999999")),
    ] {
        let answer = as_user(&api, "alice", method, &path).await;
        assert_eq!(answer.error(404), "N001", "{method} {path}");
        assert!(!answer.body.contains("bob"), "nothing of bob's is revealed");
    }
    let (status, read_at): (String, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT CAST(status AS CHAR), read_at FROM notifications WHERE id = ?")
            .bind(foreign)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), read_at),
        ("UNREAD", None),
        "bob's row unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_read_all_and_delete() {
    let api = start(|_| {}).await;
    for (kind, status) in [
        ("ORDER_CREATED", "UNREAD"),
        ("COUPON_ISSUED", "UNREAD"),
        ("BLOG_COMMENT", "UNREAD"),
        ("PRISM_TASK_FAILED", "UNREAD"),
        ("SYSTEM", "UNREAD"),
        ("SYSTEM", "READ"),
    ] {
        insert(&api.db, "carol", kind, 1, status).await;
    }
    insert(&api.db, "dave", "SYSTEM", 1, "UNREAD").await;
    let count = |path: &'static str| {
        let api = &api;
        async move {
            as_user(api, "carol", "GET", &format!("{BASE}{path}"))
                .await
                .data()
        }
    };
    assert_eq!(count("/unread/count").await, 5, "a bare number");
    assert_eq!(
        count("/unread/count?by=category").await,
        json!({"shopping": 2, "blog": 1, "prism": 1, "system": 1})
    );

    let victim = insert(&api.db, "carol", "BLOG_LIKE", 0, "UNREAD").await;
    let deleted = as_user(&api, "carol", "DELETE", &format!("{BASE}/{victim}")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json(), json!({"success": true}));
    let again = as_user(&api, "carol", "DELETE", &format!("{BASE}/{victim}")).await;
    assert_eq!(again.error(404), "N001");

    assert_eq!(
        as_user(&api, "carol", "PUT", &format!("{BASE}/read-all"))
            .await
            .data(),
        5
    );
    assert_eq!(
        as_user(&api, "carol", "PUT", &format!("{BASE}/read-all"))
            .await
            .data(),
        0
    );
    assert_eq!(count("/unread/count").await, 0);
    let dave = as_user(&api, "dave", "GET", &format!("{BASE}/unread/count"))
        .await
        .data();
    assert_eq!(dave, 1, "another user's rows are not marked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_credentials_get_401_c005() {
    let api = start(|_| {}).await;
    let path = format!("{BASE}/unread/count");
    let now = Utc::now().timestamp();
    let expired = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": "u", "exp": now - 3600}),
    );
    let forged = sign_hs256(
        b"another-secret-of-at-least-thirty-two-bytes",
        Some("k1"),
        &json!({"sub": "u", "exp": now + 600}),
    );
    let unknown_kid = sign_hs256(
        SECRET.as_bytes(),
        Some("k9"),
        &json!({"sub": "u", "exp": now + 600}),
    );
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        (
            "not bearer",
            vec![("Authorization", "Basic dTpw".to_owned())],
        ),
        (
            "expired",
            vec![("Authorization", format!("Bearer {expired}"))],
        ),
        (
            "bad signature",
            vec![("Authorization", format!("Bearer {forged}"))],
        ),
        (
            "unknown kid",
            vec![("Authorization", format!("Bearer {unknown_kid}"))],
        ),
        (
            "garbage",
            vec![("Authorization", "Bearer a.b.c".to_owned())],
        ),
        ("header mode off", vec![("X-User-Id", "alice".to_owned())]),
    ];
    for (what, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = call(api.addr, "GET", &path, &headers).await;
        assert_eq!(answer.error(401), "C005", "{what}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_header_mode_takes_the_user_from_x_user_id() {
    let api = start(|config| config.rest_auth = RestAuth::TrustedHeader).await;
    insert(&api.db, "erin", "SYSTEM", 0, "UNREAD").await;
    let path = format!("{BASE}/unread/count");
    let answer = call(api.addr, "GET", &path, &[("X-User-Id", "erin")]).await;
    assert_eq!(answer.data(), 1);
    let answer = call(api.addr, "GET", &path, &[]).await;
    assert_eq!(answer.error(401), "C005");
    let long = "x".repeat(65);
    let answer = call(api.addr, "GET", &path, &[("X-User-Id", &long)]).await;
    assert_eq!(answer.error(401), "C005");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_slices_concatenate_to_the_whole_list_while_rows_arrive() {
    let api = start(|_| {}).await;
    // Older rows get higher ids here, so newest first is ascending id; the last two share a
    // timestamp and the higher id comes first.
    let mut expected = Vec::new();
    for age in 0..47 {
        expected.push(insert(&api.db, "frank", "BLOG_FOLLOW", 100 + age, "UNREAD").await);
    }
    let tie = insert(&api.db, "frank", "BLOG_FOLLOW", 146, "UNREAD").await;
    expected.insert(46, tie);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for round in 0..20 {
        let slice = as_user(
            &api,
            "frank",
            "GET",
            &format!("{BASE}?before={cursor}&size=10"),
        )
        .await
        .data();
        assert!(slice.get("totalElements").is_none(), "a slice, not a page");
        seen.extend(ids(&slice["items"]));
        // Newer rows arrive between slices; they belong before the first slice.
        insert(&api.db, "frank", "BLOG_FOLLOW", -round, "UNREAD").await;
        match slice["nextCursor"].as_i64() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, expected, "no gap, no repeat, in order");
    let last_slice_end = as_user(
        &api,
        "frank",
        "GET",
        &format!("{BASE}?before={}&size=10", seen[47]),
    )
    .await
    .data();
    assert_eq!(last_slice_end["items"], json!([]));
    assert_eq!(last_slice_end["nextCursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_ticket_opens_one_stomp_session_over_sockjs_and_only_one() {
    let api = start(|_| {}).await;
    let answer = as_user(&api, "grace", "POST", &format!("{BASE}/ws-ticket")).await;
    let ticket = answer.data()["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 36, "a UUID: {ticket}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{}{ticket}", api.ticket_prefix))
        .query_async(
            &mut redis::Client::open(support::redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!((1..=30).contains(&ttl), "30 s TTL, found {ttl}");

    for attempt in ["first", "reuse"] {
        let session = format!("/ws/notifications/000/{}", support::unique_name("t"));
        let open = call(api.addr, "POST", &format!("{session}/xhr"), &[]).await;
        assert_eq!(open.body, "o\n");
        let connect = serde_json::to_string(&[format!(
            "CONNECT\naccept-version:1.2\nX-WS-Ticket:{ticket}\n\n\0"
        )])
        .unwrap();
        post(api.addr, &format!("{session}/xhr_send"), &connect).await;
        let frame = call(api.addr, "POST", &format!("{session}/xhr"), &[])
            .await
            .body;
        if attempt == "first" {
            assert!(frame.starts_with("a[\"CONNECTED\\n"), "{frame}");
            assert!(frame.contains("user-name:grace"), "{frame}");
        } else {
            assert!(frame.starts_with("a[\"ERROR\\n"), "{frame}");
            assert!(
                frame.contains("Invalid or expired WebSocket ticket"),
                "{frame}"
            );
        }
    }
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_the_api_answers_503() {
    let api = start(|config| config.database_url = None).await;
    let answer = as_user(&api, "alice", "GET", BASE).await;
    assert_eq!(answer.error(503), "C007");
    assert!(answer.body.contains("DATABASE_URL"), "{}", answer.body);
    // Tickets need only Redis.
    let ticket = as_user(&api, "alice", "POST", &format!("{BASE}/ws-ticket")).await;
    assert!(ticket.data()["ticket"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_follows_the_allowed_origins() {
    let api = start(|config| config.allowed_origins = vec!["https://portal.example".into()]).await;
    let preflight = call(
        api.addr,
        "OPTIONS",
        &format!("{BASE}/read-all"),
        &[
            ("Origin", "https://portal.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://portal.example")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("PUT")),
        "{preflight:?}"
    );
    let bearer = format!("Bearer {}", token("alice"));
    let answer = call(
        api.addr,
        "GET",
        &format!("{BASE}/unread/count"),
        &[
            ("Origin", "https://portal.example"),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(answer.data(), 0);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://portal.example")
    );
    let refused = call(
        api.addr,
        "GET",
        &format!("{BASE}/unread/count"),
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(refused.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_endpoint() {
    let api = start(|_| {}).await;
    let answer = call(api.addr, "GET", &format!("{BASE}/openapi.json"), &[]).await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        (BASE, "get"),
        ("/api/v1/notifications/unread", "get"),
        ("/api/v1/notifications/unread/count", "get"),
        ("/api/v1/notifications/{id}/read", "put"),
        ("/api/v1/notifications/read-all", "put"),
        ("/api/v1/notifications/{id}", "delete"),
        ("/api/v1/notifications/ws-ticket", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} documented"
        );
    }
}
