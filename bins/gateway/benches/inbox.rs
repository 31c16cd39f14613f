//! The inbox REST API (SPEC 4) of the real `gateway` binary, in its own process, side by side
//! with the same SQL statements issued directly:
//!
//! 1. a fresh MariaDB database (dropped at the end unless `--keep-db`), the migrations, and
//!    `--rows` notifications of `--users` users, skewed: `--heavy` users hold 2 % of the rows
//!    each, the others an exponential spread around the mean; `created_at` over the last 180
//!    days, ids in `created_at` order; about 30 % UNREAD (more among recent rows); multi-row
//!    INSERTs with unique and foreign-key checks off for the seeding sessions only;
//! 2. the gateway on that database, with `DATABASE_MAX_CONNECTIONS` = `--pool`;
//! 3. per endpoint, `--clients` keep-alive HTTP/1.1 connections: req/s, p50/p99/max latency,
//!    non-200 answers;
//! 4. the statements `shared::inbox` issues for that endpoint, by `--clients` tasks on a sqlx
//!    pool like the gateway's (`--pool` connections, 3 s acquire timeout, sqlx's defaults
//!    otherwise): the same figures, and REST/direct. The two sides alternate in `--rounds`
//!    slices of `--seconds` in all, so background load weighs on both alike; each side also
//!    reports the CPU per request of the gateway, MariaDB and this process, and InnoDB reads
//!    that missed the buffer pool;
//! 5. ANALYZE (EXPLAIN with the rows actually read, and the time) of each statement, for a
//!    typical user and a heavy one.
//!
//! Run: `cargo bench -p gateway --bench inbox` (`-- --quick` for a smoke run: 100 000 rows,
//! 1 000 users, 3 s). Needs MariaDB on 127.0.0.1:3306 (root, no password) and Redis. The
//! figures are written to `target/bench-results/inbox.json` (`--out`).

#![allow(clippy::print_stdout)]

#[path = "inbox/figures.rs"]
mod figures;
#[path = "common/results.rs"]
mod results;

use std::path::PathBuf;

use std::fmt::Write as _;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use gateway::auth::sign_hs256;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Executor, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use results::{Envelope, round2};

const SECRET: &str = "inbox-benchmark-secret-of-32-bytes-or-more";
const KID: &str = "k1";
const BASE: &str = "/api/v1/notifications";
/// Rows per seeding INSERT, and concurrent seeding connections.
const CHUNK: usize = 2_000;
const WRITERS: usize = 3;
/// Days of history `created_at` spreads over; rows younger than `RECENT_DAYS` are more often
/// unread (55 % against 25 %: about 30 % overall).
const HISTORY_DAYS: i64 = 180;
const RECENT_DAYS: i64 = 30;
/// The page size of every listing.
const SIZE: u32 = 20;

// The statements `shared/src/inbox.rs` issues, verbatim (`Filter::All` unless named unread).
macro_rules! columns {
    () => {
        "id, user_id, type, title, message, link, status, reference_id, reference_type, \
         created_at, read_at"
    };
}
const PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
);
const COUNT_ALL: &str = "SELECT COUNT(*) FROM notifications WHERE user_id = ?";
const COUNT_UNREAD: &str =
    "SELECT COUNT(*) FROM notifications WHERE user_id = ? AND status = 'UNREAD'";
const CURSOR: &str = "SELECT created_at FROM notifications WHERE user_id = ? AND id = ?";
const SLICE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications WHERE user_id = ? AND (created_at < ? OR (created_at = ? AND id < ?)) \
     ORDER BY created_at DESC, id DESC LIMIT ?"
);
const MARK: &str = "UPDATE notifications SET status = 'READ', read_at = ? \
                    WHERE user_id = ? AND id = ? AND status = 'UNREAD'";
const BY_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications WHERE user_id = ? AND id = ?"
);

#[derive(Parser)]
struct Args {
    /// Notifications to seed [default: 1000000; 100000 with --quick].
    #[arg(long)]
    rows: Option<usize>,
    /// Users owning them [default: 10000; 1000 with --quick].
    #[arg(long)]
    users: Option<usize>,
    /// Heavy users, each holding 2 % of the rows.
    #[arg(long, default_value_t = 5)]
    heavy: usize,
    /// Concurrent clients: keep-alive HTTP connections, and tasks of the direct client.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Measured seconds per endpoint and side [default: 10; 3 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// Database connections of the gateway (DATABASE_MAX_CONNECTIONS) and of the direct client.
    #[arg(long, default_value_t = 10)]
    pool: u32,
    /// Each measurement alternates REST and direct in this many slices (background load
    /// that comes and goes then weighs on both sides alike).
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Smoke run: 100 000 rows, 1 000 users, 3 s per measurement.
    #[arg(long)]
    quick: bool,
    /// Keep the database at the end (its name is printed).
    #[arg(long)]
    keep_db: bool,
    /// MariaDB server; the benchmark creates (and drops) its own database there.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// The results file [default: target/bench-results/inbox.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The run's size, `--quick` applied.
#[derive(Clone, Copy)]
struct Size {
    rows: usize,
    users: usize,
    seconds: u64,
}

impl Size {
    fn of(args: &Args) -> Size {
        let (rows, users, seconds) = if args.quick {
            (100_000, 1_000, 3)
        } else {
            (1_000_000, 10_000, 10)
        };
        Size {
            rows: args.rows.unwrap_or(rows),
            users: args.users.unwrap_or(users),
            seconds: args.seconds.unwrap_or(seconds),
        }
    }
}

/// One user's seeded rows.
struct User {
    name: String,
    token: String,
    /// Newest first.
    ids: Vec<i64>,
    /// The unread ones, newest first.
    unread: Vec<i64>,
}

/// What was seeded: users `0..heavy` are the heavy ones.
struct Plan {
    users: Vec<User>,
    heavy: usize,
    /// A user holding the median number of rows.
    typical: usize,
}

/// Rows per user: `heavy` users with 2 % each, the rest spread exponentially.
fn row_counts(rows: usize, users: usize, heavy: usize, rng: &mut SmallRng) -> Vec<usize> {
    let per_heavy = rows / 50;
    let mut counts = vec![per_heavy; heavy];
    let rest = rows - per_heavy * heavy;
    let weights: Vec<f64> = (heavy..users)
        .map(|_| -(1.0 - rng.random::<f64>()).ln())
        .collect();
    let sum: f64 = weights.iter().sum();
    counts.extend(weights.iter().map(|w| (w / sum * rest as f64) as usize));
    let left = rows - counts.iter().sum::<usize>();
    for k in 0..left {
        counts[heavy + k % (users - heavy)] += 1;
    }
    counts
}

/// One seeded row before its text: (`created_at` in ms, user, unread).
type Stub = (i64, u32, bool);

fn stubs(rows: usize, counts: &[usize], now_ms: i64, rng: &mut SmallRng) -> Vec<Stub> {
    let span = HISTORY_DAYS * 86_400_000;
    let recent = now_ms - RECENT_DAYS * 86_400_000;
    let mut stubs = Vec::with_capacity(rows);
    for (user, n) in counts.iter().enumerate() {
        for _ in 0..*n {
            let at = now_ms - 60_000 - rng.random_range(0..span);
            let unread = rng.random_bool(if at >= recent { 0.55 } else { 0.25 });
            stubs.push((at, user as u32, unread));
        }
    }
    // Ids follow creation, as ingest's auto-increment does.
    stubs.sort_unstable_by_key(|s| s.0);
    stubs
}

/// A SQL string literal (NULL for `None`).
fn quote(out: &mut String, text: Option<&str>) {
    match text {
        None => out.push_str("NULL"),
        Some(text) => {
            out.push('\'');
            for c in text.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
    }
}

fn won(amount: u64) -> String {
    let digits = amount.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn one<'a>(rng: &mut SmallRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// Type, title, message, link, reference id and type of a plausible notification.
type Content = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    Option<String>,
    Option<&'static str>,
);

fn content(rng: &mut SmallRng) -> Content {
    const NICKS: &[&str] = &[
        "하늘",
        "민트초코",
        "devkim",
        "여행자",
        "bookworm",
        "커피한잔",
    ];
    const POSTS: &[&str] = &[
        "Rust로 만드는 실시간 알림 서버",
        "주말 제주 여행 후기",
        "MariaDB 인덱스 설계 노트",
        "초보자를 위한 Kafka 입문",
        "홈카페 라떼아트 연습기",
    ];
    const COMMENTS: &[&str] = &[
        "좋은 글 감사합니다! 많은 도움이 되었어요.",
        "두 번째 예제에서 질문이 있습니다.",
        "저도 같은 문제를 겪었는데 덕분에 해결했네요 :)",
    ];
    const TASKS: &[&str] = &["상품 설명 요약", "블로그 초안 작성", "리뷰 감정 분석"];
    const CARRIERS: &[&str] = &["CJ대한통운", "한진택배", "롯데택배", "우체국택배"];
    let order = format!("ORD-2025{:08}", rng.random_range(0..100_000_000u32));
    let order_link = Some(format!("/shopping/orders/{order}"));
    let post = rng.random_range(1..50_000u32);
    match rng.random_range(0..100) {
        0..20 => {
            let items = rng.random_range(1..6);
            let amount = rng.random_range(5..500u64) * 100;
            let message = format!("{items}개 상품, {}원 결제 대기중", won(amount));
            let title = "주문이 접수되었습니다";
            (
                "ORDER_CREATED",
                title,
                message,
                order_link,
                Some(order),
                Some("order"),
            )
        }
        20..30 => {
            let amount = rng.random_range(5..500u64) * 100;
            let payment = format!("PAY-{:010}", rng.random_range(0..10_000_000_000u64));
            let message = format!("{}원 결제 완료", won(amount));
            let title = "결제가 완료되었습니다";
            (
                "PAYMENT_COMPLETED",
                title,
                message,
                order_link,
                Some(payment),
                Some("payment"),
            )
        }
        30..42 => {
            let tracking = format!("{:012}", rng.random_range(0..1_000_000_000_000u64));
            let message = format!("운송장번호: {tracking} ({})", one(rng, CARRIERS));
            let title = "배송이 시작되었습니다";
            (
                "DELIVERY_STARTED",
                title,
                message,
                order_link,
                Some(tracking),
                Some("delivery"),
            )
        }
        42..48 => {
            let message = format!("주문번호: {order} 상품이 배송 완료되었습니다");
            let title = "배송이 완료되었습니다";
            (
                "DELIVERY_COMPLETED",
                title,
                message,
                order_link,
                Some(order),
                Some("order"),
            )
        }
        48..54 => {
            let code = format!("CPN-{:08X}", rng.random::<u32>());
            let message = format!("신규 회원 감사 쿠폰 - {}%할인", rng.random_range(1..7) * 5);
            let link = Some("/shopping/coupons".to_owned());
            (
                "COUPON_ISSUED",
                "쿠폰이 발급되었습니다",
                message,
                link,
                Some(code),
                Some("coupon"),
            )
        }
        54..70 => {
            let message = format!(
                "\"{}\"에 {}님이 좋아요를 눌렀습니다",
                one(rng, POSTS),
                one(rng, NICKS)
            );
            let like = rng.random_range(1..10_000_000u32).to_string();
            let link = Some(format!("/blog/posts/{post}"));
            (
                "BLOG_LIKE",
                "게시글에 좋아요가 달렸습니다",
                message,
                link,
                Some(like),
                Some("like"),
            )
        }
        70..84 => {
            let message = format!("{}님: {}", one(rng, NICKS), one(rng, COMMENTS));
            let comment = rng.random_range(1..10_000_000u32);
            let link = Some(format!("/blog/posts/{post}#comment-{comment}"));
            let reference = Some(comment.to_string());
            (
                "BLOG_COMMENT",
                "새 댓글이 달렸습니다",
                message,
                link,
                reference,
                Some("comment"),
            )
        }
        84..90 => {
            let nick = one(rng, NICKS);
            let message = format!("{nick}님이 회원님을 팔로우하기 시작했습니다");
            let link = Some(format!("/blog/users/{nick}"));
            (
                "BLOG_FOLLOW",
                "새 팔로워가 생겼습니다",
                message,
                link,
                None,
                None,
            )
        }
        90..97 => {
            let task = rng.random_range(1..1_000_000u32);
            let message = format!("\"{}\" 작업이 완료되었습니다", one(rng, TASKS));
            let link = Some(format!("/prism/tasks/{task}"));
            let title = "AI 작업이 완료되었습니다";
            let reference = Some(task.to_string());
            (
                "PRISM_TASK_COMPLETED",
                title,
                message,
                link,
                reference,
                Some("task"),
            )
        }
        _ => {
            let message = "서비스 안정화를 위해 02:00~04:00 정기 점검이 예정되어 있습니다".into();
            ("SYSTEM", "정기 점검 안내", message, None, None, None)
        }
    }
}

fn datetime(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The INSERT of rows `first..first + stubs.len()` (ids are 1-based positions).
fn insert_sql(first: usize, stubs: &[Stub], names: &[String], now_ms: i64) -> String {
    let mut rng = SmallRng::seed_from_u64(first as u64);
    let mut sql = String::with_capacity(stubs.len() * 640);
    sql.push_str(
        "INSERT INTO notifications (id, user_id, type, title, message, link, status, \
         reference_id, reference_type, created_at, read_at, dedup_key, write_batch) VALUES ",
    );
    for (i, (at, user, unread)) in stubs.iter().enumerate() {
        let id = (first + i + 1) as i64;
        let (kind, title, message, link, reference, reference_type) = content(&mut rng);
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(sql, "({id},");
        quote(&mut sql, Some(&names[*user as usize]));
        let _ = write!(sql, ",'{kind}',");
        quote(&mut sql, Some(title));
        sql.push(',');
        quote(&mut sql, Some(&message));
        sql.push(',');
        quote(&mut sql, link.as_deref());
        let status = if *unread { "UNREAD" } else { "READ" };
        let _ = write!(sql, ",'{status}',");
        quote(&mut sql, reference.as_deref());
        sql.push(',');
        quote(&mut sql, reference_type);
        let _ = write!(sql, ",'{}',", datetime(*at));
        if *unread {
            sql.push_str("NULL");
        } else {
            let read = (at + rng.random_range(60_000..172_800_000)).min(now_ms);
            let _ = write!(sql, "'{}'", datetime(read));
        }
        let key = Sha256::digest(id.to_be_bytes());
        let _ = write!(sql, ",X'");
        for b in key {
            let _ = write!(sql, "{b:02x}");
        }
        let _ = write!(sql, "',{first})");
    }
    sql
}

async fn seed(db_url: &str, args: &Args, size: Size) -> anyhow::Result<Plan> {
    let Size { rows, users, .. } = size;
    let mut rng = SmallRng::seed_from_u64(42);
    let heavy = args.heavy.min(users.saturating_sub(1));
    let counts = row_counts(rows, users, heavy, &mut rng);
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let stubs = Arc::new(stubs(rows, &counts, now_ms, &mut rng));
    let names: Arc<Vec<String>> = Arc::new((0..users).map(|u| format!("user-{u:05}")).collect());

    // Per session only: no unique or foreign-key checks while seeding.
    let pool = MySqlPoolOptions::new()
        .max_connections(WRITERS as u32)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET unique_checks = 0, foreign_key_checks = 0")
                    .await?;
                Ok(())
            })
        })
        .connect(db_url)
        .await?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (pool, next, stubs, names) = (pool.clone(), next.clone(), stubs.clone(), names.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(CHUNK, Ordering::Relaxed);
                if first >= stubs.len() {
                    return anyhow::Ok(());
                }
                let end = (first + CHUNK).min(stubs.len());
                let sql = insert_sql(first, &stubs[first..end], &names, now_ms);
                sqlx::raw_sql(&sql).execute(&pool).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let inserted = started.elapsed();
    sqlx::raw_sql("ANALYZE TABLE notifications")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    println!(
        "seeded {rows} rows for {} users ({heavy} heavy with {} each) in {:.1} s ({:.0} rows/s; ANALYZE TABLE {:.1} s more)",
        users,
        counts.first().copied().unwrap_or(0),
        inserted.as_secs_f64(),
        rows as f64 / inserted.as_secs_f64(),
        started.elapsed().as_secs_f64() - inserted.as_secs_f64()
    );

    let mut people: Vec<User> = names
        .iter()
        .map(|name| User {
            name: name.clone(),
            token: token(name),
            ids: Vec::new(),
            unread: Vec::new(),
        })
        .collect();
    for (i, (_, user, unread)) in stubs.iter().enumerate().rev() {
        let user = &mut people[*user as usize];
        user.ids.push(i as i64 + 1);
        if *unread {
            user.unread.push(i as i64 + 1);
        }
    }
    let mut sorted: Vec<usize> = counts[heavy..].to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let typical = (heavy..users).find(|u| counts[*u] == median).unwrap_or(0);
    println!(
        "rows per user: heavy {}, others median {median}, max {}; unread {:.1} %",
        counts.first().copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
        stubs.iter().filter(|s| s.2).count() as f64 * 100.0 / rows.max(1) as f64
    );
    Ok(Plan {
        users: people,
        heavy,
        typical,
    })
}

fn token(user: &str) -> String {
    let exp = Utc::now().timestamp() + 6 * 3600;
    sign_hs256(
        SECRET.as_bytes(),
        Some(KID),
        &serde_json::json!({"sub": user, "exp": exp}),
    )
}

/// A keep-alive HTTP/1.1 connection, one request at a time.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn connect(addr: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends a request and reads the whole answer; returns its status.
    async fn call(&mut self, method: &str, path: &str, token: &str) -> anyhow::Result<u16> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("bad status line: {head}"))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .ok_or_else(|| anyhow::anyhow!("no content-length: {head}"))?;
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                self.buf.drain(..total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(8 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            anyhow::bail!("connection closed");
        }
        Ok(())
    }
}

struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_gateway(args: &Args, db_url: &str, plan: &Plan) -> anyhow::Result<Gateway> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let admin = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("LISTEN_ADDR", &addr)
        .env("ADMIN_ADDR", &admin)
        .env("DATABASE_URL", db_url)
        .env("DATABASE_MAX_CONNECTIONS", args.pool.to_string())
        .env("REDIS_URL", &args.redis)
        .env(
            "REDIS_CHANNEL_PREFIX",
            format!("inboxbench{}:notification:", std::process::id()),
        )
        .env("JWT_KEYS", format!("{KID}={SECRET}"))
        .env("RUST_LOG", "warn")
        .spawn()?;
    let gateway = Gateway { child, addr };
    let user = &plan.users[plan.typical];
    let path = format!("{BASE}/unread/count");
    for _ in 0..100 {
        if let Ok(mut http) = Http::connect(&gateway.addr).await {
            if http.call("GET", &path, &user.token).await.ok() == Some(200) {
                return Ok(gateway);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the gateway did not answer on {}", gateway.addr)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Page,
    PageHeavy,
    Count,
    CountHeavy,
    Keyset,
    Read,
}

impl Endpoint {
    const ALL: [Endpoint; 6] = [
        Endpoint::Page,
        Endpoint::PageHeavy,
        Endpoint::Count,
        Endpoint::CountHeavy,
        Endpoint::Keyset,
        Endpoint::Read,
    ];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Page => "list page 1, random users",
            Endpoint::PageHeavy => "list page 1, heavy users",
            Endpoint::Count => "unread count, random users",
            Endpoint::CountHeavy => "unread count, heavy users",
            Endpoint::Keyset => "keyset page deep in a heavy user",
            Endpoint::Read => "mark read, random users",
        }
    }
}

/// One request: the user and what is asked.
enum Call {
    Page(usize),
    Count(usize),
    Keyset(usize, i64),
    Read(usize, i64),
}

/// A request of `endpoint`. Reads of side 0 (REST) mark the even-ranked unread rows of a
/// user, side 1 (direct) the odd-ranked ones, so each side mostly changes fresh rows.
fn pick(plan: &Plan, endpoint: Endpoint, side: usize, rng: &mut SmallRng) -> Call {
    let any = |rng: &mut SmallRng| rng.random_range(0..plan.users.len());
    let heavy = |rng: &mut SmallRng| rng.random_range(0..plan.heavy.max(1));
    match endpoint {
        Endpoint::Page => Call::Page(any(rng)),
        Endpoint::PageHeavy => Call::Page(heavy(rng)),
        Endpoint::Count => Call::Count(any(rng)),
        Endpoint::CountHeavy => Call::Count(heavy(rng)),
        Endpoint::Keyset => {
            let user = heavy(rng);
            let ids = &plan.users[user].ids;
            // A cursor in the older half of the user's history.
            let at = rng.random_range(ids.len() / 2..ids.len().max(1));
            Call::Keyset(user, ids.get(at).copied().unwrap_or(1))
        }
        Endpoint::Read => loop {
            let user = any(rng);
            let unread = &plan.users[user].unread;
            if unread.len() > side {
                let rank = 2 * rng.random_range(0..(unread.len() - side).div_ceil(2)) + side;
                break Call::Read(user, unread[rank]);
            }
        },
    }
}

/// A client's tally: latencies (µs), failures, the first failure.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    failures: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, failure: Option<String>) {
        self.latencies
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        if let Some(failure) = failure {
            self.failures += 1;
            self.first_failure.get_or_insert(failure);
        }
    }

    fn merge(&mut self, mut other: Tally) {
        self.latencies.append(&mut other.latencies);
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn fail(&mut self, failure: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(failure);
    }
}

/// Counters read around each measurement: CPU seconds of the gateway, MariaDB, this
/// process and the whole machine; InnoDB reads that missed the buffer pool.
struct Probe {
    pids: [Option<u32>; 3],
    pool: MySqlPool,
}

#[derive(Clone, Copy)]
struct Sample {
    cpu: [f64; 4],
    misses: f64,
}

impl Probe {
    async fn sample(&self) -> Sample {
        let [a, b, c] = self.pids.map(|p| p.map_or(0.0, cpu_seconds));
        let misses: i64 = sqlx::query_scalar(
            "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_READS'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(0);
        Sample {
            cpu: [a, b, c, busy_seconds()],
            misses: misses as f64,
        }
    }
}

/// What one side measured for one endpoint, over all its rounds.
#[derive(Default)]
struct Measured {
    tally: Tally,
    seconds: f64,
    /// CPU seconds: the gateway, MariaDB, this process, every other process.
    cpu: [f64; 4],
    misses: f64,
}

impl Measured {
    fn add(&mut self, tally: Tally, seconds: f64, before: Sample, after: Sample) {
        self.tally.merge(tally);
        self.seconds += seconds;
        let used: [f64; 4] = [0, 1, 2, 3].map(|i| after.cpu[i] - before.cpu[i]);
        let ours = used[0] + used[1] + used[2];
        for (i, spent) in [used[0], used[1], used[2], (used[3] - ours).max(0.0)]
            .into_iter()
            .enumerate()
        {
            self.cpu[i] += spent;
        }
        self.misses += after.misses - before.misses;
    }

    fn requests(&self) -> f64 {
        self.tally.latencies.len() as f64
    }

    fn rate(&self) -> f64 {
        self.requests() / self.seconds
    }

    /// The latency at `p` (0 to 1), in ms; the latencies must be sorted.
    fn ms(&self, p: f64) -> f64 {
        let sorted = &self.tally.latencies;
        if sorted.is_empty() {
            return 0.0;
        }
        let at = ((sorted.len() - 1) as f64 * p) as usize;
        f64::from(sorted[at]) / 1000.0
    }
}

/// Runs `clients` tasks until `duration` has passed.
async fn measure<F, Fut>(clients: usize, duration: Duration, client: F) -> (Tally, f64)
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Tally>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(c, deadline)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(Ok(tally)) => all.merge(tally),
            Ok(Err(err)) => all.fail(format!("client stopped: {err}")),
            Err(err) => all.fail(format!("client panicked: {err}")),
        }
    }
    (all, started.elapsed().as_secs_f64())
}

async fn rest_load(
    gateway: &Gateway,
    plan: &Arc<Plan>,
    endpoint: Endpoint,
    clients: usize,
    duration: Duration,
    round: u64,
) -> (Tally, f64) {
    measure(clients, duration, |c, deadline| {
        let (plan, addr) = (plan.clone(), gateway.addr.clone());
        async move {
            let mut rng = SmallRng::seed_from_u64(round << 32 | c as u64);
            let mut http = Http::connect(&addr).await?;
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let (method, path, user) = match pick(&plan, endpoint, 0, &mut rng) {
                    Call::Page(u) => ("GET", format!("{BASE}?page=1&size={SIZE}"), u),
                    Call::Count(u) => ("GET", format!("{BASE}/unread/count"), u),
                    Call::Keyset(u, before) => {
                        ("GET", format!("{BASE}?before={before}&size={SIZE}"), u)
                    }
                    Call::Read(u, id) => ("PUT", format!("{BASE}/{id}/read"), u),
                };
                let started = Instant::now();
                match http.call(method, &path, &plan.users[user].token).await {
                    Ok(200) => tally.record(started, None),
                    Ok(status) => tally.record(started, Some(format!("{status} {method} {path}"))),
                    Err(err) => {
                        tally.record(started, Some(format!("{method} {path}: {err}")));
                        http = Http::connect(&addr).await?;
                    }
                }
            }
            Ok(tally)
        }
    })
    .await
}

/// The statements `shared::inbox` issues for `call`, rows fetched and dropped.
async fn direct(pool: &MySqlPool, plan: &Plan, call: Call) -> Result<(), sqlx::Error> {
    match call {
        Call::Page(user) => {
            let user = &plan.users[user].name;
            sqlx::query(PAGE)
                .bind(user)
                .bind(SIZE)
                .bind(0u64)
                .fetch_all(pool)
                .await?;
            sqlx::query_scalar::<_, i64>(COUNT_ALL)
                .bind(user)
                .fetch_one(pool)
                .await?;
        }
        Call::Count(user) => {
            sqlx::query_scalar::<_, i64>(COUNT_UNREAD)
                .bind(&plan.users[user].name)
                .fetch_one(pool)
                .await?;
        }
        Call::Keyset(user, id) => {
            let user = &plan.users[user].name;
            let at = sqlx::query_scalar::<_, DateTime<Utc>>(CURSOR)
                .bind(user)
                .bind(id)
                .fetch_one(pool)
                .await?;
            sqlx::query(SLICE)
                .bind(user)
                .bind(at)
                .bind(at)
                .bind(id)
                .bind(SIZE + 1)
                .fetch_all(pool)
                .await?;
        }
        Call::Read(user, id) => {
            let user = &plan.users[user].name;
            let mut tx = pool.begin().await?;
            sqlx::query(MARK)
                .bind(Utc::now())
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(BY_ID)
                .bind(user)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query_scalar::<_, i64>(COUNT_UNREAD)
                .bind(user)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn direct_load(
    pool: &MySqlPool,
    plan: &Arc<Plan>,
    endpoint: Endpoint,
    clients: usize,
    duration: Duration,
    round: u64,
) -> (Tally, f64) {
    measure(clients, duration, |c, deadline| {
        let (plan, pool) = (plan.clone(), pool.clone());
        async move {
            let mut rng = SmallRng::seed_from_u64(round << 32 | 1 << 31 | c as u64);
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let call = pick(&plan, endpoint, 1, &mut rng);
                let started = Instant::now();
                let failure = direct(&pool, &plan, call).await.err();
                tally.record(started, failure.map(|e| e.to_string()));
            }
            Ok(tally)
        }
    })
    .await
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the whole machine has been busy (all cores, from `/proc/stat`).
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    (ticks.iter().take(8).sum::<f64>() - idle) / 100.0
}

fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-x", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn report(side: &str, m: &Measured) {
    println!(
        "  {side:<6} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  non-200/failed {}",
        m.rate(),
        m.ms(0.50),
        m.ms(0.99),
        m.ms(1.0),
        m.tally.failures,
    );
    let per_request = |i: usize| m.cpu[i] * 1e6 / m.requests().max(1.0);
    let cores = |i: usize| m.cpu[i] / m.seconds;
    println!(
        "         CPU a request: gateway {:.0} µs, MariaDB {:.0} µs, bench {:.0} µs; {:.2} buffer-pool misses a request; \
         cores busy: gateway {:.2}, MariaDB {:.2}, bench {:.2}, other processes {:.2}",
        per_request(0),
        per_request(1),
        per_request(2),
        m.misses / m.requests().max(1.0),
        cores(0),
        cores(1),
        cores(2),
        cores(3)
    );
    if let Some(failure) = &m.tally.first_failure {
        println!("         first failure: {failure}");
    }
}

/// The largest `r_total_time_ms` of an `ANALYZE FORMAT=JSON` document: the statement's
/// time in the server.
fn total_ms(doc: &serde_json::Value) -> f64 {
    match doc {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(key, value)| match key.as_str() {
                "r_total_time_ms" => value.as_f64().unwrap_or(0.0),
                _ => total_ms(value),
            })
            .fold(0.0, f64::max),
        serde_json::Value::Array(items) => items.iter().map(total_ms).fold(0.0, f64::max),
        _ => 0.0,
    }
}

/// `sql` with each `?` replaced by the next literal.
fn literal(sql: &str, values: &[String]) -> String {
    let mut values = values.iter();
    sql.chars()
        .map(|c| match c {
            '?' => values.next().cloned().unwrap_or_else(|| "?".into()),
            c => c.to_string(),
        })
        .collect()
}

/// ANALYZE of each statement (for the UPDATE, in a rolled-back transaction).
async fn explain(pool: &MySqlPool, plan: &Plan) -> anyhow::Result<()> {
    println!(
        "\nANALYZE of the statements (rows = the optimizer's estimate, r_rows = rows read, \
         time = in the server, best of three):"
    );
    let cases = [("typical", plan.typical), ("heavy", 0)];
    for (kind, user) in cases {
        let u = &plan.users[user];
        let name = format!("'{}'", u.name);
        let cursor = u.ids.get(u.ids.len() * 3 / 4).copied().unwrap_or(1);
        let at: DateTime<Utc> = sqlx::query_scalar(CURSOR)
            .bind(&u.name)
            .bind(cursor)
            .fetch_one(pool)
            .await?;
        let at = format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.3f"));
        // A row still unread after the load (or any row): the UPDATE's plan for a real change.
        let unread: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MIN(id), ?) FROM notifications WHERE user_id = ? AND status = 'UNREAD'",
        )
        .bind(cursor)
        .bind(&u.name)
        .fetch_one(pool)
        .await?;
        let unread = unread.to_string();
        let cursor = cursor.to_string();
        let now = format!("'{}'", Utc::now().format("%Y-%m-%d %H:%M:%S%.3f"));
        println!(
            "{kind} user {} ({} rows, {} unread at seeding):",
            u.name,
            u.ids.len(),
            u.unread.len()
        );
        let statements = [
            (
                "page",
                PAGE,
                vec![name.clone(), SIZE.to_string(), "0".into()],
            ),
            ("count all", COUNT_ALL, vec![name.clone()]),
            ("count unread", COUNT_UNREAD, vec![name.clone()]),
            ("cursor lookup", CURSOR, vec![name.clone(), cursor.clone()]),
            (
                "keyset range",
                SLICE,
                vec![name.clone(), at.clone(), at, cursor, (SIZE + 1).to_string()],
            ),
            ("mark UPDATE", MARK, vec![now, name.clone(), unread.clone()]),
            ("mark SELECT", BY_ID, vec![name.clone(), unread]),
        ];
        for (label, sql, values) in statements {
            let sql = literal(sql, &values);
            let mut conn = pool.acquire().await?;
            // The statement's own time in the server: the best of three.
            let mut ms = f64::MAX;
            for _ in 0..3 {
                let mut tx = conn.begin().await?;
                let doc: String = sqlx::raw_sql(&format!("ANALYZE FORMAT=JSON {sql}"))
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get_unchecked(0)?;
                tx.rollback().await?;
                ms = ms.min(total_ms(&serde_json::from_str(&doc)?));
            }
            let mut tx = conn.begin().await?;
            let rows = sqlx::raw_sql(&format!("ANALYZE {sql}"))
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            for row in rows {
                let col = |name: &str| {
                    row.try_get_unchecked::<Option<String>, _>(name)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "  {label:<14} type {:<6} key {:<40} rows {:>6} r_rows {:>8} filtered {:>6} time {ms:>6.3} ms | {}",
                    col("type"),
                    col("key"),
                    col("rows"),
                    col("r_rows"),
                    col("r_filtered"),
                    col("Extra")
                );
            }
        }
    }
    Ok(())
}

/// Seeds, measures every endpoint, explains; returns the figures for the results file.
async fn run(
    args: &Args,
    db_url: &str,
    size: Size,
    envelope: &mut Envelope,
) -> anyhow::Result<Value> {
    let seconds = size.seconds;
    let plan = Arc::new(seed(db_url, args, size).await?);
    let pool = MySqlPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(3))
        .connect(db_url)
        .await?;
    let (data, index): (i64, i64) = sqlx::query_as(
        "SELECT CAST(data_length AS SIGNED), CAST(index_length AS SIGNED) \
         FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'notifications'",
    )
    .fetch_one(&pool)
    .await?;
    let buffer: i64 = sqlx::query_scalar("SELECT CAST(@@innodb_buffer_pool_size AS SIGNED)")
        .fetch_one(&pool)
        .await?;
    println!(
        "table: data {} MiB, indexes {} MiB; InnoDB buffer pool {} MiB",
        data >> 20,
        index >> 20,
        buffer >> 20
    );

    let gateway = start_gateway(args, db_url, &plan).await?;
    envelope.gateway(gateway.child.id());
    println!("gateway pid {} on {}", gateway.child.id(), gateway.addr);
    let probe = Probe {
        pids: [
            Some(gateway.child.id()),
            pid_of("mariadbd").or_else(|| pid_of("mysqld")),
            Some(std::process::id()),
        ],
        pool: pool.clone(),
    };
    println!(
        "{} clients; {seconds} s per endpoint and side, in {} interleaved rounds; database pool {} connections \
         (the gateway's DATABASE_MAX_CONNECTIONS and the direct client's)",
        args.clients, args.rounds, args.pool
    );
    let rounds = args.rounds.max(1);
    let slice = Duration::from_secs_f64(seconds as f64 / rounds as f64);
    let mut table = Vec::new();
    for endpoint in Endpoint::ALL {
        println!("{}:", endpoint.label());
        // Warm-up, not counted.
        rest_load(&gateway, &plan, endpoint, args.clients, slice, 0).await;
        let (mut rest, mut direct) = (Measured::default(), Measured::default());
        for round in 1..=rounds {
            // REST first in odd rounds, direct first in even ones.
            for rest_side in [round % 2 == 1, round % 2 == 0] {
                let before = probe.sample().await;
                let (tally, took) = if rest_side {
                    rest_load(&gateway, &plan, endpoint, args.clients, slice, round).await
                } else {
                    direct_load(&pool, &plan, endpoint, args.clients, slice, round).await
                };
                let after = probe.sample().await;
                let side = if rest_side { &mut rest } else { &mut direct };
                side.add(tally, took, before, after);
            }
        }
        rest.tally.latencies.sort_unstable();
        direct.tally.latencies.sort_unstable();
        report("REST", &rest);
        report("direct", &direct);
        println!("  REST/direct {:.2}", rest.rate() / direct.rate());
        table.push((endpoint, rest, direct));
    }

    println!(
        "\n| endpoint | REST req/s | REST p50 / p99 ms | direct SQL req/s | direct p50 / p99 ms | REST/direct |"
    );
    println!("|---|---|---|---|---|---|");
    for (endpoint, rest, direct) in &table {
        println!(
            "| {} | {:.0} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} | {:.2} |",
            endpoint.label(),
            rest.rate(),
            rest.ms(0.5),
            rest.ms(0.99),
            direct.rate(),
            direct.ms(0.5),
            direct.ms(0.99),
            rest.rate() / direct.rate()
        );
    }
    drop(gateway);
    explain(&pool, &plan).await?;
    pool.close().await;
    Ok(json!({
        "params": {
            "rows": size.rows,
            "users": size.users,
            "heavy": plan.heavy,
            "clients": args.clients,
            "seconds": seconds,
            "rounds": rounds,
            "pool": args.pool,
            "quick": args.quick,
            "page_size": SIZE,
        },
        "table": {
            "data_bytes": data,
            "index_bytes": index,
            "bytes_per_row": round2((data + index) as f64 / size.rows.max(1) as f64),
            "buffer_pool_bytes": buffer,
        },
        "endpoints": figures::endpoints(&table),
    }))
}

/// What the results file says the run was.
const WHAT: &str = "the inbox REST API of the gateway binary in its own process against the same SQL \
    issued directly, on a fresh MariaDB database of skewed users; per endpoint req/s, latency, CPU per request";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut envelope = Envelope::start("inbox", WHAT);
    let size = Size::of(&args);
    anyhow::ensure!(
        size.users >= 2 && size.rows >= size.users,
        "need rows >= users >= 2"
    );

    let server = args.mysql.trim_end_matches('/');
    let name = format!(
        "inbox_bench_{}_{}",
        std::process::id(),
        Utc::now().timestamp()
    );
    let admin = MySqlPool::connect(server).await?;
    sqlx::raw_sql(&format!(
        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .execute(&admin)
    .await?;
    let db_url = format!("{server}/{name}");
    println!("database {name}");
    let result = async {
        let pool = MySqlPool::connect(&db_url).await?;
        sqlx::migrate!("../../migrations").run(&pool).await?;
        pool.close().await;
        run(&args, &db_url, size, &mut envelope).await
    }
    .await;
    if args.keep_db {
        println!("kept database {name}");
    } else {
        sqlx::raw_sql(&format!("DROP DATABASE {name}"))
            .execute(&admin)
            .await?;
    }
    envelope.write(args.out.as_deref(), result?)?;
    Ok(())
}
