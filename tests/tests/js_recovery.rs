//! Recovery with the real `@stomp/stompjs` + `sockjs-client` (Node) over the SockJS
//! `websocket` and `xhr-streaming` transports: a client that receives 10 notifications,
//! goes away while 30 more are stored and published, and comes back with `last-id`, while
//! 10 more are published as its recovery query is about to run and 10 as it has run (a
//! recovery hook makes those moments certain), ends with all 60, each exactly once, the
//! recovered ones in id order.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use gateway::auth::sign_hs256;
use gateway::sync::recovery::{Hook, Phase};
use gateway::{Gateway, GatewayConfig};
use serde_json::json;
use support::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "js-recovery-secret-of-at-least-32-bytes!";
const STEP: Duration = Duration::from_secs(20);

struct Env {
    db: TestDb,
    prefix: String,
}

impl Env {
    async fn notify(&self, user: &str) -> i64 {
        support::notify::notify(&self.db.pool, &self.prefix, user).await
    }

    async fn notify_many(&self, user: &str, n: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.notify(user).await);
        }
        ids
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn expect(lines: &mut Lines, what: &str) {
    let line = tokio::time::timeout(STEP, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {STEP:?}"))
        .unwrap()
        .unwrap_or_default();
    assert_eq!(line, what);
}

/// MESSAGE lines until `n` arrived; then nothing more may arrive within a quiet period.
async fn messages(lines: &mut Lines, n: usize) -> Vec<(i64, bool)> {
    let mut got = Vec::new();
    loop {
        let wait = if got.len() < n {
            STEP
        } else {
            Duration::from_millis(800)
        };
        let Ok(line) = tokio::time::timeout(wait, lines.next_line()).await else {
            assert!(
                got.len() >= n,
                "only {} of {n} messages: {got:?}",
                got.len()
            );
            return got;
        };
        let line = line.unwrap().unwrap_or_default();
        if line == "SUBSCRIBED" {
            continue; // a reconnect's receipt comes after what it recovered
        }
        let rest = line
            .strip_prefix("MESSAGE ")
            .unwrap_or_else(|| panic!("unexpected line {line:?} after {got:?}"));
        let (id, truncated) = match rest.split_once(' ') {
            Some((id, flag)) => (id, flag == "truncated"),
            None => (rest, false),
        };
        got.push((id.parse().unwrap(), truncated));
    }
}

async fn recover_over(transport: &str) {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/@stomp/stompjs").exists(),
        "the JavaScript client packages are missing: run `npm ci --prefix tests/js`"
    );
    let env = Env {
        db: TestDb::new().await,
        prefix: format!("{}:notification:", support::unique_name("jsrec")),
    };
    let (reached_tx, mut reached) = mpsc::unbounded_channel::<Phase>();
    let resume = Arc::new(Notify::new());
    let hook = {
        let resume = resume.clone();
        Hook::new(move |phase| {
            let reached = reached_tx.clone();
            let resume = resume.clone();
            async move {
                let _ = reached.send(phase);
                resume.notified().await;
            }
        })
    };
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = env.prefix.clone();
    config.jwt_keys = format!("k1={SECRET}");
    config.database_url = Some(env.db.url.clone());
    config.recovery_hook = Some(hook);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let base = format!("http://{}", gateway.local_addr().unwrap());
    tokio::spawn(gateway.run());
    let _stop = shutdown.drop_guard();

    let user = "reader";
    let jwt = sign_hs256(
        SECRET.as_bytes(),
        Some("k1"),
        &json!({"sub": user, "exp": Utc::now().timestamp() + 600}),
    );
    let mut child = Command::new("node")
        .current_dir(&js)
        .args(["recovery.mjs", &base, transport, user, &jwt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    stdin.write_all(b"connect\n").await.unwrap();
    expect(&mut lines, "SUBSCRIBED").await;
    let first = env.notify_many(user, 10).await;
    let received = messages(&mut lines, 10).await;
    assert_eq!(received.iter().map(|m| m.0).collect::<Vec<_>>(), first);

    stdin.write_all(b"disconnect\n").await.unwrap();
    expect(&mut lines, "DISCONNECTED").await;
    let away = env.notify_many(user, 30).await;

    stdin.write_all(b"connect\n").await.unwrap();
    assert_eq!(reached.recv().await, Some(Phase::BeforeQuery));
    let during_query = env.notify_many(user, 10).await;
    resume.notify_one();
    assert_eq!(reached.recv().await, Some(Phase::AfterQuery));
    let after_query = env.notify_many(user, 10).await;
    resume.notify_one();
    let again = messages(&mut lines, 50).await;
    let ids: Vec<i64> = again.iter().map(|m| m.0).collect();
    let recovered: Vec<i64> = away.iter().chain(&during_query).copied().collect();
    assert_eq!(ids[..40], recovered[..], "recovered in id order: {ids:?}");
    assert_eq!(ids[40..], after_query[..], "then live: {ids:?}");
    assert!(again.iter().all(|m| !m.1), "nothing was cut");
    let mut all: Vec<i64> = first.iter().chain(&ids).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 60, "all 60, each exactly once");
    stdin.write_all(b"exit\n").await.unwrap();
    let _ = tokio::time::timeout(STEP, child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_recovers_missed_notifications_exactly_once_over_websocket() {
    recover_over("websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_recovers_missed_notifications_exactly_once_over_xhr_streaming() {
    recover_over("xhr-streaming").await;
}
