//! Recovery phase: a fresh MariaDB database (the migrations applied, dropped at the end), one
//! user per repetition with `--recovered` notifications inserted directly, and the gateway
//! on that store. Each repetition connects a new session, SUBSCRIBEs to the user's queue with
//! `last-id:0` and a receipt, and times SUBSCRIBE → last recovered MESSAGE and → RECEIPT. The
//! first repetition (the gateway's pool opens its connection) is shown apart; the same query
//! issued directly through `shared::inbox` gives the store's share.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::mysql::MySqlPool;

use crate::Args;
use crate::client::{Kind, Ws, connect, next_text, send_frame};
use crate::process::{percentile, start_gateway};
use crate::results::round2;

/// Longest wait for one recovery.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Options of the recovery phase.
#[derive(clap::Args, Clone)]
pub struct RecoveryArgs {
    /// Timed recoveries (after one cold one).
    #[arg(long, default_value_t = 5)]
    recoveries: usize,
    /// Notifications each recovery sends (the gateway's WS_RECOVERY_MAX is 500).
    #[arg(long, default_value_t = 500)]
    recovered: usize,
    /// MariaDB server (a database is created and dropped on it).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
}

/// One recovery as the client saw it.
struct Timing {
    messages: usize,
    to_last_message: Duration,
    to_receipt: Duration,
    /// WebSocket messages the frames came in, and the longest pause between two of them.
    websocket_messages: usize,
    longest_gap: Duration,
}

/// Runs the phase on a fresh database and gateway; returns its figures.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let server = args.recovery.mysql.trim_end_matches('/');
    let name = format!(
        "load_recovery_{}_{}",
        std::process::id(),
        Utc::now().timestamp()
    );
    let admin = MySqlPool::connect(server).await?;
    sqlx::raw_sql(&format!(
        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .execute(&admin)
    .await?;
    let result = measure(args, &format!("{server}/{name}")).await;
    sqlx::raw_sql(&format!("DROP DATABASE {name}"))
        .execute(&admin)
        .await?;
    result
}

async fn measure(args: &Args, db_url: &str) -> anyhow::Result<Value> {
    let a = &args.recovery;
    let pool = MySqlPool::connect(db_url).await?;
    // The migrations ingest applies (`ingest::store::MIGRATOR` reads the same directory).
    sqlx::migrate!("../../migrations").run(&pool).await?;
    let users: Vec<String> = (0..=a.recoveries).map(|k| format!("rec-{k}")).collect();
    for user in &users {
        insert(&pool, user, a.recovered).await?;
    }
    println!(
        "recovery: SUBSCRIBE with last-id:0 recovers {} notifications (MariaDB store)",
        a.recovered
    );

    let gw = start_gateway(&args.redis, Some(db_url)).await?;
    let url = format!("ws://{}/ws/notifications/websocket", gw.addr);
    let mut timings = Vec::new();
    let mut cold = Value::Null;
    for (k, user) in users.iter().enumerate() {
        let ws = connect(&url, Kind::Raw, user).await?;
        let timing = recover(ws).await?;
        let what = if k == 0 {
            "cold (opens the pool)"
        } else {
            "recovery"
        };
        println!(
            "  {what}: {} MESSAGEs in {} WebSocket messages, longest pause between two {:.1} ms; SUBSCRIBE → last MESSAGE {:.1} ms, → RECEIPT {:.1} ms",
            timing.messages,
            timing.websocket_messages,
            timing.longest_gap.as_secs_f64() * 1e3,
            timing.to_last_message.as_secs_f64() * 1e3,
            timing.to_receipt.as_secs_f64() * 1e3
        );
        if k > 0 {
            timings.push(timing);
        } else {
            cold = json!({
                "to_last_message_ms": round2(timing.to_last_message.as_secs_f64() * 1e3),
                "to_receipt_ms": round2(timing.to_receipt.as_secs_f64() * 1e3),
            });
        }
    }
    let mut to_last: Vec<u64> = timings
        .iter()
        .map(|t| t.to_last_message.as_micros() as u64)
        .collect();
    to_last.sort_unstable();
    let mut to_receipt: Vec<u64> = timings
        .iter()
        .map(|t| t.to_receipt.as_micros() as u64)
        .collect();
    to_receipt.sort_unstable();

    // The store's share: the gateway's query, decoded, without the session.
    let inbox = shared::inbox::Inbox::new(pool);
    let mut queries = Vec::new();
    for user in &users[1..] {
        let started = Instant::now();
        let rows = inbox.since(user, 0, a.recovered as u32 + 1).await?;
        queries.push(started.elapsed().as_micros() as u64);
        anyhow::ensure!(rows.len() == a.recovered, "{} rows for {user}", rows.len());
    }
    queries.sort_unstable();
    println!(
        "  {} recoveries of {}: SUBSCRIBE → last MESSAGE median {:.1} ms, max {:.1} ms; → RECEIPT median {:.1} ms, max {:.1} ms; the store query alone median {:.1} ms",
        timings.len(),
        a.recovered,
        percentile(&to_last, 0.5) as f64 / 1e3,
        to_last.last().copied().unwrap_or(0) as f64 / 1e3,
        percentile(&to_receipt, 0.5) as f64 / 1e3,
        to_receipt.last().copied().unwrap_or(0) as f64 / 1e3,
        percentile(&queries, 0.5) as f64 / 1e3
    );
    inbox.pool().close().await;
    let ms = |micros: u64| round2(micros as f64 / 1e3);
    Ok(json!({
        "recovered": a.recovered,
        "recoveries": timings.len(),
        "cold": cold,
        "to_last_message_median_ms": ms(percentile(&to_last, 0.5)),
        "to_last_message_max_ms": ms(to_last.last().copied().unwrap_or(0)),
        "to_receipt_median_ms": ms(percentile(&to_receipt, 0.5)),
        "to_receipt_max_ms": ms(to_receipt.last().copied().unwrap_or(0)),
        "store_query_median_ms": ms(percentile(&queries, 0.5)),
    }))
}

/// Inserts `count` notifications of `user`, one second apart, as ingest stores them.
async fn insert(pool: &MySqlPool, user: &str, count: usize) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO notifications (user_id, type, title, message, link, status, reference_id, \
         reference_type, created_at, dedup_key, write_batch) ",
    );
    query.push_values(0..count, |mut row, i| {
        let reference = format!("ORD-20260206-{i:04}");
        let key = Sha256::digest(format!("{user}:ORDER_CREATED:order:{reference}")).to_vec();
        row.push_bind(user)
            .push_bind("ORDER_CREATED")
            .push_bind("주문이 접수되었습니다")
            .push_bind("2개 상품, 45,000원 결제 대기중")
            .push_bind(format!("/shopping/orders/{reference}"))
            .push_bind("UNREAD")
            .push_bind(reference)
            .push_bind("order")
            .push_bind(now - chrono::Duration::seconds((count - i) as i64))
            .push_bind(key)
            .push_bind(0_i64);
    });
    query.build().execute(pool).await?;
    Ok(())
}

/// SUBSCRIBEs with `last-id:0` and a receipt; reads until the RECEIPT.
async fn recover(mut ws: Ws) -> anyhow::Result<Timing> {
    let subscribe =
        "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nlast-id:0\nreceipt:r\n\n\0";
    let started = Instant::now();
    send_frame(&mut ws, Kind::Raw, subscribe).await?;
    let (mut messages, mut websocket_messages) = (0, 0);
    let mut to_last_message = Duration::ZERO;
    let (mut previous, mut longest_gap) = (None, Duration::ZERO);
    let deadline = tokio::time::Instant::now() + RECOVERY_DEADLINE;
    loop {
        let text = tokio::time::timeout_at(deadline, next_text(&mut ws, Kind::Raw)).await??;
        let at = started.elapsed();
        websocket_messages += 1;
        if let Some(previous) = previous {
            longest_gap = longest_gap.max(at - previous);
        }
        previous = Some(at);
        for frame in text.split('\0') {
            let frame = frame.trim_start_matches('\n');
            if frame.starts_with("MESSAGE") {
                messages += 1;
                to_last_message = at;
            } else if frame.starts_with("RECEIPT") {
                return Ok(Timing {
                    messages,
                    to_last_message,
                    to_receipt: at,
                    websocket_messages,
                    longest_gap,
                });
            } else if frame.starts_with("ERROR") {
                anyhow::bail!("recovery refused: {frame}");
            }
        }
    }
}
