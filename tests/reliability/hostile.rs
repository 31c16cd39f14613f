//! Hostile clients: a gateway process serving a canary and other well-behaved users a
//! steady stream of personal notifications, then one attack at a time (slowloris on HTTP
//! headers, STOMP frames and SockJS bodies; a client that never reads; a connection flood;
//! frames over the limit; 1 000 subscriptions; malformed SockJS JSON; invalid UTF-8;
//! header injection; SEND to the broker; bad tokens and tickets; other users'
//! destinations; foreign origins; SockJS session takeover; connections that never
//! CONNECT). Each attack must get its refusal, leave the gateway's memory and descriptors
//! where they were, keep the well-behaved users' latency within a bound, and never show
//! the canary (or anyone) another user's notification. One report row per attack.

mod access;
mod arena;
mod judge;
mod refusals;
mod slow;
pub mod traffic;
pub mod wire;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::launch::{GatewayInstance, GatewaySpec};
use super::report::{self, Check, Findings, say, shown};
use super::services::{self, Database};
use super::{CaseFuture, Ctx, Scale};
use arena::Arena;
use judge::{Gauge, Verdict};
use traffic::{Traffic, ms, quantile};
use wire::Tokens;

/// The one origin the gateway allows (others get 403).
const ALLOWED_ORIGIN: &str = "https://portal.example";
/// The gateway's per-address pending limit (`WS_MAX_PENDING_PER_IP`, its default).
const PENDING_PER_IP: usize = 32;
/// How often the gateway's memory and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Descriptors the gateway may hold after an attack beyond those before it.
const FD_SLACK: usize = 8;
/// Resident memory the gateway may keep after an attack beyond that before it.
const RSS_SLACK_MIB: f64 = 32.0;
/// Resident memory the gateway may add during an attack.
const RSS_PEAK_MIB: f64 = 256.0;
/// How long after the header or body timeout an unfinished request may still be seen open
/// (the slow clients look every half second, on a busy machine).
const TIMEOUT_SLACK: Duration = Duration::from_millis(1500);
/// The floor of the latency bound during an attack.
const LATENCY_FLOOR: Duration = Duration::from_millis(50);
/// The latency bound during an attack, as a multiple of the baseline p99.
const LATENCY_FACTOR: f64 = 5.0;
/// Longest a real user may take to be CONNECTED and subscribed during an attack.
const REAL_USER_BOUND: Duration = Duration::from_secs(2);

/// The sizes of the attacks at one scale.
pub struct Size {
    users: usize,
    rate: f64,
    baseline: Duration,
    /// The shortest window an attack's latency is measured over.
    window: Duration,
    /// How long the gateway gets to come back to its descriptors after an attack.
    settle: Duration,
    first_frame: Duration,
    /// The gateway's header and body timeouts (`HTTP_HEADER_TIMEOUT_MS`,
    /// `HTTP_BODY_TIMEOUT_MS`): unfinished requests must be closed within them.
    http_timeout: Duration,
    slowloris: usize,
    /// How long slow clients keep their unfinished requests going at most.
    slowloris_hold: Duration,
    slow_sessions: usize,
    never_read: usize,
    never_read_wait: Duration,
    flood_rate: f64,
    flood_for: Duration,
    pre_auth_addresses: usize,
}

impl Size {
    fn of(scale: Scale) -> Size {
        match scale {
            Scale::Full => Size {
                users: 50,
                rate: 200.0,
                baseline: Duration::from_secs(10),
                window: Duration::from_secs(3),
                settle: Duration::from_secs(20),
                first_frame: Duration::from_secs(10),
                http_timeout: Duration::from_secs(10),
                slowloris: 1000,
                slowloris_hold: Duration::from_secs(15),
                slow_sessions: 256,
                never_read: 20_000,
                never_read_wait: Duration::from_secs(30),
                flood_rate: 10_000.0,
                flood_for: Duration::from_secs(10),
                pre_auth_addresses: 32,
            },
            Scale::Quick => Size {
                users: 8,
                rate: 100.0,
                baseline: Duration::from_secs(3),
                window: Duration::from_secs(1),
                settle: Duration::from_secs(8),
                first_frame: Duration::from_secs(3),
                http_timeout: Duration::from_secs(1),
                slowloris: 60,
                slowloris_hold: Duration::from_secs(3),
                slow_sessions: 32,
                never_read: 4000,
                never_read_wait: Duration::from_secs(15),
                flood_rate: 1000.0,
                flood_for: Duration::from_secs(2),
                pre_auth_addresses: 4,
            },
        }
    }
}

/// One attack: its name, the refusal expected, and what runs it.
struct Attack {
    name: &'static str,
    expected: &'static str,
    run: for<'a> fn(&'a Arena) -> BoxFuture<'a, anyhow::Result<Verdict>>,
}

macro_rules! attack {
    ($name:literal, $expected:literal, $f:path) => {
        Attack {
            name: $name,
            expected: $expected,
            run: |a| Box::pin($f(a)),
        }
    };
}

/// Every attack, in the order they run.
const ATTACKS: &[Attack] = &[
    attack!(
        "slowloris: HTTP headers",
        "closed at the header timeout",
        slow::slowloris_headers
    ),
    attack!(
        "slowloris: STOMP frame",
        "closed at the first-frame timeout",
        slow::slowloris_stomp
    ),
    attack!(
        "slowloris: xhr_send body",
        "408 or closed at the body timeout",
        slow::slowloris_xhr_send
    ),
    attack!(
        "a client that never reads",
        "closed as a slow consumer",
        slow::never_reads
    ),
    attack!(
        "connection flood",
        "429/503 past the pending limits",
        slow::connection_flood
    ),
    attack!(
        "frames over the limit",
        "ERROR + close; 413",
        refusals::frames_over_the_limit
    ),
    attack!(
        "1 000 subscriptions on one session",
        "ERROR `Too many subscriptions` + close",
        refusals::many_subscriptions
    ),
    attack!(
        "malformed SockJS JSON",
        "500 `Broken JSON encoding.`, session kept",
        refusals::malformed_sockjs_json
    ),
    attack!(
        "invalid UTF-8",
        "ERROR + close; 500",
        refusals::invalid_utf8
    ),
    attack!(
        "STOMP header injection",
        "ERROR + close, or the attacker's own queue only",
        refusals::header_injection
    ),
    attack!(
        "SEND to /topic, /queue, a user",
        "ERROR + close",
        refusals::send_to_broker
    ),
    attack!(
        "forged, expired, other-user JWTs and tickets",
        "ERROR + close; 401 C005; 404 N001",
        access::bad_credentials
    ),
    attack!(
        "SUBSCRIBE to another user's queues",
        "ERROR + close",
        access::foreign_subscriptions
    ),
    attack!("cross-origin requests", "403", access::cross_origin),
    attack!(
        "SockJS session takeover",
        "404, the victim unaffected",
        access::session_takeover
    ),
    attack!(
        "pre-auth exhaustion",
        "429 past the limit, closed at the first-frame timeout",
        slow::pre_auth_exhaustion
    ),
];

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let size = Size::of(ctx.scale);
    let log_dir = ctx.case_log_dir("hostile")?;
    let name = services::unique_name("hostile");
    let mut db = Database::create(&ctx.services.mysql_url, &name).await?;
    db.keep = ctx.keep_data;
    let tokens = Tokens::random();
    let prefix = format!("{name}:notification:");
    let spec = GatewaySpec {
        database_url: Some(db.url.clone()),
        redis_url: ctx.services.redis_url.clone(),
        prefix: prefix.clone(),
        jwt_keys: tokens.keys(),
        ticket_prefix: format!("{name}:ws-ticket:"),
        env: vec![
            (
                "WS_FIRST_FRAME_TIMEOUT_MS".into(),
                size.first_frame.as_millis().to_string(),
            ),
            (
                "HTTP_HEADER_TIMEOUT_MS".into(),
                size.http_timeout.as_millis().to_string(),
            ),
            (
                "HTTP_BODY_TIMEOUT_MS".into(),
                size.http_timeout.as_millis().to_string(),
            ),
            (
                "APP_WEBSOCKET_ALLOWED_ORIGINS".into(),
                ALLOWED_ORIGIN.into(),
            ),
        ],
        log_dir: log_dir.clone(),
    };
    let mut gw = GatewayInstance::start(&ctx.launcher, &spec, "gateway").await?;
    let gauge = Gauge::start(gw.pid());
    let canary = format!("{name}-canary");
    let users: Vec<String> = (0..size.users).map(|i| format!("{name}-u{i}")).collect();
    let canary_row = super::rest::store_rows(&db.pool, &canary, 1, "UNREAD").await?[0];
    let mut traffic = Traffic::start(
        gw.addr.parse()?,
        &ctx.services.redis_url,
        &prefix,
        &tokens,
        users,
        canary.clone(),
        size.rate,
    )
    .await?;
    let arena = Arena {
        gateway: gw.addr.parse()?,
        admin: gw.admin.clone(),
        tokens,
        redis: redis::Client::open(ctx.services.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?,
        prefix,
        ticket_prefix: spec.ticket_prefix.clone(),
        canary,
        canary_row,
        pool: db.pool.clone(),
        first_frame: size.first_frame,
        max_frame: 64 * 1024,
        pending_per_ip: PENDING_PER_IP,
        allowed_origin: ALLOWED_ORIGIN,
        size,
    };
    let size = &arena.size;

    let calm = Instant::now();
    tokio::time::sleep(size.baseline).await;
    let baseline = quantile(&traffic.samples(calm, Instant::now()), 0.99);
    let bound = LATENCY_FLOOR.max(baseline.mul_f64(LATENCY_FACTOR));
    say(&format!(
        "hostile: baseline p99 {:.2} ms; the bound during attacks {:.2} ms",
        ms(baseline),
        ms(bound)
    ));
    let mut out = Findings::new(format!(
        "{} served by {} (first-frame timeout {} s, header and body timeouts {} s, allowed \
         origin {ALLOWED_ORIGIN}, other limits at their defaults); {} well-behaved users and a canary on raw WebSocket \
         receiving {:.0} personal notifications/s in turn (PUBLISHed on their Redis \
         channels); then each attack alone. Every row's bound also holds: the well-behaved \
         p99 (PUBLISH → MESSAGE, published from the attack's start to its end, at least \
         {:.0} s) ≤ max({LATENCY_FACTOR}× the baseline p99, {} ms); the gateway's descriptors \
         back to at most {FD_SLACK} above their count before, within {} s; its RSS at most \
         {RSS_SLACK_MIB} MiB above it after and {RSS_PEAK_MIB} MiB above it during; a real \
         user CONNECTED within {} s where the attack measures it. Measured: refusals, the \
         p99, RSS and descriptors before → peak → after",
        ctx.scale.name(),
        ctx.launcher.describe_gateway(),
        size.first_frame.as_secs(),
        size.http_timeout.as_secs_f64(),
        size.users,
        size.rate,
        size.window.as_secs_f64(),
        LATENCY_FLOOR.as_millis(),
        size.settle.as_secs(),
        REAL_USER_BOUND.as_secs(),
    ));
    out.figure("well-behaved p99 without an attack", ms(baseline), "ms");
    out.figure("latency bound during an attack", ms(bound), "ms");
    for attack in ATTACKS {
        let row = run_attack(&arena, attack, &traffic, &gauge, bound).await;
        out.check(row);
        if let Some(status) = gw.exited() {
            anyhow::bail!("the gateway exited during {:?}: {status}", attack.name);
        }
    }
    let published = traffic.stop(Duration::from_secs(1)).await?;
    let foreign = traffic.foreign();
    out.figure(
        "notifications published to well-behaved users",
        published as f64,
        "",
    );
    out.figure("of them received", traffic.received() as f64, "");
    out.figure(
        "received by the canary",
        traffic.canary_received() as f64,
        "",
    );
    out.figure("peak RSS of the gateway", gauge.peak_all().0, "MiB");
    out.figure(
        "peak open descriptors of the gateway",
        gauge.peak_all().1 as f64,
        "fds",
    );
    out.check(Check::none(
        "MESSAGEs with another user's notification (canary included)",
        foreign.len(),
    ));
    out.check(Check::none(
        "well-behaved notifications not delivered",
        traffic.missing(calm, Instant::now()),
    ));
    out.check(Check::none(
        "MESSAGEs delivered twice or never published",
        traffic.unexpected(),
    ));
    out.check(Check::none(
        "well-behaved sessions the gateway ended",
        traffic.ended(),
    ));
    out.check(Check::holds(
        "the canary received its notifications",
        "> 0",
        &traffic.canary_received().to_string(),
        traffic.canary_received() > 0,
    ));
    for line in foreign.iter().take(5) {
        out.note(format!("foreign delivery: {line}"));
    }
    out.note(format!(
        "logs in {}{}",
        report::shown_path(&log_dir),
        db.kept_note()
    ));
    drop(traffic);
    let _ = gw.stop(Duration::from_secs(15)).await;
    Ok(out)
}

/// Runs one attack and judges it: its refusals, then latency, memory and descriptors.
async fn run_attack(
    a: &Arena,
    attack: &Attack,
    traffic: &Traffic,
    gauge: &Gauge,
    bound: Duration,
) -> Check {
    let size = &a.size;
    let (rss_before, fds_before) = gauge.now();
    let start = Instant::now();
    let limit = Duration::from_secs(120) + size.slowloris_hold + size.never_read_wait;
    let verdict = match tokio::time::timeout(limit, (attack.run)(a)).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(err)) => Verdict::broken(format!("the attack could not run: {err:#}")),
        Err(_) => Verdict::broken(format!("the attack did not end within {limit:?}")),
    };
    let end = Instant::now().max(start + size.window);
    tokio::time::sleep_until(end.into()).await;
    let (rss_peak, fds_peak) = gauge.peak(start, end);
    // Back to the descriptors before (SockJS sessions linger for their disconnect delay).
    let settled = Instant::now() + size.settle;
    while gauge.now().1 > fds_before + FD_SLACK && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss_after, fds_after) = gauge.now();
    let samples = traffic.samples(start, end);
    let p99 = quantile(&samples, 0.99);
    let mut failed = verdict.failures.clone();
    if verdict.refused != verdict.attempts || verdict.attempts == 0 {
        failed.push(format!(
            "{} of {} {}",
            verdict.refused, verdict.attempts, verdict.counted
        ));
    }
    if p99 > bound {
        failed.push(format!("p99 {:.2} ms", ms(p99)));
    }
    if samples.is_empty() {
        failed.push("no well-behaved delivery measured".to_owned());
    }
    if fds_after > fds_before + FD_SLACK {
        failed.push(format!("{} descriptors kept", fds_after - fds_before));
    }
    if rss_after > rss_before + RSS_SLACK_MIB {
        failed.push(format!("{:.1} MiB kept", rss_after - rss_before));
    }
    if rss_peak > rss_before + RSS_PEAK_MIB {
        failed.push(format!("{:.1} MiB added", rss_peak - rss_before));
    }
    let measured = format!(
        "{}/{} {}{}; p99 {} ms ({} deliveries); RSS {} → {} → {} MiB; fds {fds_before} → \
         {fds_peak} → {fds_after}{}",
        verdict.refused,
        verdict.attempts,
        verdict.counted,
        verdict
            .notes
            .iter()
            .map(|n| format!("; {n}"))
            .collect::<String>(),
        shown(ms(p99)),
        samples.len(),
        shown(rss_before),
        shown(rss_peak),
        shown(rss_after),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; FAILED: {}", failed.join("; "))
        }
    );
    say(&format!("hostile: {}: {measured}", attack.name));
    Check::holds(
        attack.name,
        &format!("{}; p99 ≤ {} ms", attack.expected, shown(ms(bound))),
        &measured,
        failed.is_empty(),
    )
}
