//! The inbox REST API against its own OpenAPI document: schemathesis (a property-based API
//! tester) generates requests from the served document, with a valid bearer JWT, and checks
//! every answer: no 5xx, a documented status code and content type, a body matching the
//! documented schema. `.ci/run` installs it in `target/schemathesis-venv`;
//! `SCHEMATHESIS_BIN` overrides the path.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use gateway::auth::sign_hs256;
use gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use support::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "api-schema-test-secret-of-at-least-32-bytes";
/// Generated test cases per operation and phase.
const MAX_EXAMPLES: &str = "100";
/// One request; generous, as other tests compete for the CPU.
const REQUEST_TIMEOUT_SECS: &str = "20";
/// The whole run (20 to 40 s here, on two busy cores).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The checks on every response: no 5xx, a documented status code, the documented content
/// type, a body valid against the documented schema.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

fn schemathesis() -> PathBuf {
    if let Ok(bin) = std::env::var("SCHEMATHESIS_BIN") {
        return bin.into();
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/schemathesis-venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is missing at {}: run .ci/run (see README, Testing)",
        bin.display()
    );
    bin
}

/// Inserts a notification of `user`, `age` hours old (every fourth read).
async fn insert(db: &TestDb, user: &str, kind: &str, age: i64, read: bool, link: Option<&str>) {
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap() - chrono::Duration::hours(age);
    let (status, read_at) = if read {
        ("READ", Some(created + chrono::Duration::minutes(5)))
    } else {
        ("UNREAD", None)
    };
    let reference = link.map(|_| format!("REF-{age}"));
    sqlx::query(
        "INSERT INTO notifications (user_id, type, title, message, link, status, reference_id, \
         reference_type, created_at, read_at, dedup_key, source_record, write_batch) \
         VALUES (?, ?, '주문이 접수되었습니다', '2개 상품, 45,000원 \"결제\" 대기중 😀', ?, ?, ?, ?, ?, ?, ?, NULL, 0)",
    )
    .bind(user)
    .bind(kind)
    .bind(link)
    .bind(status)
    .bind(reference.as_deref())
    .bind(reference.as_ref().map(|_| "order"))
    .bind(created)
    .bind(read_at)
    .bind(rand::random::<[u8; 32]>().to_vec())
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let db = TestDb::new().await;
    let name = support::unique_name("schema");
    let user = format!("{name}-user");
    let kinds = [
        "ORDER_CREATED",
        "BLOG_COMMENT",
        "PRISM_TASK_FAILED",
        "SYSTEM",
    ];
    for age in 0..30 {
        let kind = kinds[age as usize % kinds.len()];
        let link = (age % 3 != 0).then_some("/shopping/orders/ORD-1");
        insert(&db, &user, kind, age, age % 4 == 0, link).await;
        insert(&db, "someone-else", kind, age, false, link).await;
    }

    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    config.jwt_keys = format!("k1={SECRET}");
    config.database_url = Some(db.url.clone());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = Gateway::bind(&config, shutdown).await.unwrap();
    let gateway_addr = gateway.local_addr().unwrap();
    let base = format!("http://{gateway_addr}");
    tokio::spawn(gateway.run());

    let token = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": user, "exp": Utc::now().timestamp() + 3600}),
    );
    let bin = schemathesis();
    let workdir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&workdir).unwrap();
    let mut command = Command::new(bin);
    command
        .arg("run")
        .arg(format!("{base}/api/v1/notifications/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", REQUEST_TIMEOUT_SECS])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        // Its caches go to the working directory: one of its own, removed afterwards.
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run schemathesis: {e}"));
    let _ = std::fs::remove_dir_all(&workdir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // A run that tested nothing also exits 0: every documented operation must be tested.
    let operations = operations(gateway_addr).await;
    assert!(
        operations >= 7,
        "the document lists {operations} operations"
    );
    for line in [
        format!("Selected: {operations}/{operations}"),
        format!("Tested: {operations}"),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }
}

/// How many operations the served document lists.
async fn operations(addr: SocketAddr) -> usize {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /api/v1/notifications/openapi.json HTTP/1.1\r\nHost: localhost\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    let doc: Value = serde_json::from_str(body).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|path| path.as_object().unwrap().len())
        .sum()
}
