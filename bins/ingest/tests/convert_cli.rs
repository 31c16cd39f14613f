//! `ingest convert`, the operator's dry run, as a real process: stdout, stderr, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn convert(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .arg("convert")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ingest");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_valid_event_prints_the_notification_json_and_exits_0() {
    let out = convert(
        &["--topic", "shopping.order.created"],
        r#"{"orderNumber":"ORD-20260206-001","userId":"user-123","totalAmount":45000.00,"itemCount":2}"#,
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "{\"id\":null,\"userId\":\"user-123\",\"type\":\"ORDER_CREATED\",\"title\":\"주문이 접수되었습니다\",\"message\":\"2개 상품, 45,000원 결제 대기중\",\"link\":\"/shopping/orders/ORD-20260206-001\",\"status\":\"UNREAD\",\"referenceId\":\"ORD-20260206-001\",\"referenceType\":\"order\",\"createdAt\":null,\"readAt\":null}\n"
    );
}

#[test]
fn an_invalid_event_prints_the_reason_and_exits_2() {
    let out = convert(
        &["--topic", "blog.post.liked"],
        r#"{"postId":"p","likeId":"l"}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("authorId"), "{stderr}");
    assert!(stderr.contains("dead-letter"), "{stderr}");
}

#[test]
fn renamed_topics_are_honoured() {
    let signup = r#"{"userId":"u-1","name":"라제"}"#;
    let out = convert(
        &[
            "--topic",
            "auth.user.signed-up",
            "--topic-rename",
            "user-signup=auth.user.signed-up",
        ],
        signup,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("라제님, Portal Universe에 가입해주셔서 감사합니다.")
    );

    let out = convert(&["--topic", "auth.user.signed-up"], signup);
    assert_eq!(out.status.code(), Some(2), "not a topic without the rename");
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown topic")
    );
}

#[test]
fn the_timedeal_topic_makes_no_notification() {
    let out = convert(
        &["--topic", "shopping.timedeal.started"],
        r#"{"timeDealId":1}"#,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no per-user notification")
    );
}
