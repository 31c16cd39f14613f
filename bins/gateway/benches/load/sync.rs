//! Broadcast phase: `--broadcast-sessions` raw-WebSocket sessions on one gateway listen to
//! `/topic/timedeals` (all but `--personal` of them in worker processes, which report each
//! broadcast's arrivals on stdout); the first `--personal`, held here, also listen to their
//! own queue. It measures
//!
//! 1. single broadcasts, one at a time: PUBLISH → first and last session, deliveries/s, the
//!    gateway's `gateway_broadcast_fanout_seconds` and `gateway_broadcast_deliveries_total`;
//! 2. personal notifications paced at `--personal-rate` for `--stream-secs`: publish →
//!    receive p50/p99/max without broadcasts, then with one every `--broadcast-every-ms`.
//!
//! Arrival times are wall-clock microseconds, comparable across the processes of one machine.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Args;
use crate::arrivals::{Fleet, Personal, Tally, listen, lock};
use crate::client::{Kind, Subscribe, TIMEDEALS, open_many};
use crate::process::{Gateway, now_micros, percentile, redis_pid, start_gateway};
use crate::results::round2;
use crate::snapshot::Snapshot;
use crate::workers::{start_workers, stop_workers};

/// Longest wait for one broadcast to reach every session.
const BROADCAST_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for a personal stream (and its broadcasts) to be delivered.
const STREAM_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between measurements, so one's tail does not fall into the next.
const SETTLE: Duration = Duration::from_millis(500);
/// Personal notifications per pipelined batch of the paced stream.
const PERSONAL_BATCH: u64 = 5;

/// Options of the broadcast phase.
#[derive(clap::Args, Clone)]
pub struct SyncArgs {
    /// Sessions listening to `/topic/timedeals` (the gateway holds at most ~19 990 here).
    #[arg(long, default_value_t = 19_000)]
    broadcast_sessions: usize,
    /// Of those, sessions also subscribed to their own queue (held by the benchmark itself).
    #[arg(long, default_value_t = 1_000)]
    personal: usize,
    /// Single broadcasts, timed one at a time.
    #[arg(long, default_value_t = 5)]
    broadcasts: usize,
    /// Personal notifications per second in the latency comparison.
    #[arg(long, default_value_t = 1_000)]
    personal_rate: u64,
    /// Seconds of each personal stream (without, then with broadcasts).
    #[arg(long, default_value_t = 5)]
    stream_secs: u64,
    /// Interval between broadcasts during the second personal stream, in milliseconds.
    #[arg(long, default_value_t = 100)]
    broadcast_every_ms: u64,
}

/// A time-deal event as the shop publishes it, numbered and stamped.
fn deal(seq: usize) -> String {
    format!(
        "{{\"timeDealId\":\"TD-{seq}\",\"productName\":\"무선 이어폰\",\"discountRate\":30,\"startsAt\":\"2026-02-06T12:00:00\",\"seq\":{seq},\"t\":{}}}",
        now_micros()
    )
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// What the phase shares.
struct Fixture<'a> {
    args: &'a Args,
    gw: Gateway,
    fleet: Fleet,
    personal: Arc<Personal>,
    redis: redis::Client,
    redis_pid: Option<u32>,
    channel: String,
    /// The next broadcast's `seq`.
    seq: usize,
}

/// Runs the phase on a fresh gateway (`started_gateway` is told its pid); returns its figures.
pub async fn run(args: &Args, started_gateway: impl FnOnce(u32)) -> anyhow::Result<Value> {
    let a = &args.sync;
    let total = a.broadcast_sessions;
    let personal = a.personal.min(total);
    let gw = start_gateway(&args.redis, None).await?;
    started_gateway(gw.child.id());
    let url = format!("ws://{}/ws/notifications/websocket", gw.addr);
    println!(
        "broadcast: {total} sessions on {TIMEDEALS} ({personal} also on their own queue), one gateway"
    );
    let started = Instant::now();
    let own_sessions = open_many(
        &url,
        Kind::Raw,
        "sync-",
        0,
        personal,
        Subscribe::TimeDealsAndOwn,
    )
    .await?;
    let workers = start_workers(&url, Kind::Raw, total - personal, true)?;
    println!("  opened in {:.1}s", started.elapsed().as_secs_f64());
    let own = Arc::new(Mutex::new(Tally::new(personal, false)));
    let received = Arc::new(Personal::default());
    let listeners: Vec<_> = own_sessions
        .into_iter()
        .map(|ws| listen(ws, own.clone(), Some(received.clone())))
        .collect();
    let mut phase = Fixture {
        args,
        channel: format!("{}broadcast:timedeals", gw.prefix),
        gw,
        fleet: Fleet::watch(own, workers),
        personal: received,
        redis: redis::Client::open(args.redis.as_str())?,
        redis_pid: redis_pid(&args.redis),
        seq: 0,
    };
    let opened_secs = started.elapsed().as_secs_f64();
    let result = async {
        let single = single_broadcasts(&mut phase).await?;
        let (quiet, without) = personal_stream(&mut phase, None).await?;
        let every = Duration::from_millis(a.broadcast_every_ms.max(1));
        let (busy, with) = personal_stream(&mut phase, Some(every)).await?;
        println!(
            "  personal p99 with broadcasts / without: {:.1}x ({:.1} ms vs {:.1} ms)",
            busy as f64 / quiet.max(1) as f64,
            ms(busy),
            ms(quiet)
        );
        anyhow::Ok(json!({
            "sessions": total,
            "personal_sessions": personal,
            "opened_secs": round2(opened_secs),
            "single": single,
            "personal_without_broadcasts": without,
            "personal_with_broadcasts": with,
            "personal_p99_ratio": round2(busy as f64 / quiet.max(1) as f64),
        }))
    }
    .await;
    for listener in listeners {
        listener.abort();
    }
    stop_workers(std::mem::take(&mut phase.fleet.children));
    result
}

/// Publishes one broadcast; its publish time is in its `t`.
async fn publish(
    redis: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: String,
) -> anyhow::Result<()> {
    let listeners: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(redis)
        .await?;
    anyhow::ensure!(listeners == 1, "{listeners} Redis subscribers on {channel}");
    Ok(())
}

/// Single broadcasts, one at a time; returns their figures.
async fn single_broadcasts(phase: &mut Fixture<'_>) -> anyhow::Result<Value> {
    let total = phase.args.sync.broadcast_sessions;
    let mut redis = phase.redis.get_multiplexed_async_connection().await?;
    let (mut to_last, mut rates) = (Vec::new(), Vec::new());
    let (mut each, mut cpu_per_delivery) = (Vec::new(), Vec::new());
    for _ in 0..phase.args.sync.broadcasts {
        tokio::time::sleep(SETTLE).await;
        let before = Snapshot::take(&phase.gw, &phase.fleet, phase.redis_pid).await;
        let seq = phase.seq;
        phase.seq += 1;
        let published = now_micros();
        publish(&mut redis, &phase.channel, deal(seq)).await?;
        let deadline = Instant::now() + BROADCAST_DEADLINE;
        let (arrival, complete) = phase.fleet.wait(seq, deadline).await;
        // The fan-out histogram is observed after the last hand-off; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let used = Snapshot::take(&phase.gw, &phase.fleet, phase.redis_pid)
            .await
            .since(before);
        let last = arrival.last_us.saturating_sub(published);
        let rate = arrival.received as f64 / (last.max(1) as f64 / 1e6);
        println!(
            "  broadcast {seq}: {}/{total} sessions{}; PUBLISH → first {:.1} ms, → last {:.1} ms: {rate:.0} deliveries/s; gateway fan-out task {:.1} ms, {} deliveries counted; {}",
            arrival.received,
            if complete { "" } else { " (deadline passed)" },
            ms(arrival.first_us.saturating_sub(published)),
            ms(last),
            used.fanout_ms(),
            used.deliveries,
            used.cpu()
        );
        to_last.push(last);
        rates.push(rate as u64);
        // Nanoseconds, to sort as integers.
        cpu_per_delivery.push((used.gateway_cpu * 1e9 / arrival.received.max(1) as f64) as u64);
        let mut figures = json!({
            "seq": seq,
            "received": arrival.received,
            "complete": complete,
            "publish_to_first_ms": round2(ms(arrival.first_us.saturating_sub(published))),
            "publish_to_last_ms": round2(ms(last)),
            "deliveries_per_sec": rate.round(),
            "fanout_task_ms": round2(used.fanout_ms()),
            "deliveries_counted": used.deliveries,
        });
        merge(&mut figures, used.cpu_json());
        each.push(figures);
    }
    to_last.sort_unstable();
    rates.sort_unstable();
    println!(
        "  one broadcast to {total} sessions: PUBLISH → last session median {:.1} ms, max {:.1} ms; median {} deliveries/s",
        ms(percentile(&to_last, 0.5)),
        ms(to_last.last().copied().unwrap_or(0)),
        percentile(&rates, 0.5)
    );
    cpu_per_delivery.sort_unstable();
    Ok(json!({
        "broadcasts": each.len(),
        "publish_to_last_median_ms": round2(ms(percentile(&to_last, 0.5))),
        "publish_to_last_max_ms": round2(ms(to_last.last().copied().unwrap_or(0))),
        "deliveries_per_sec_median": percentile(&rates, 0.5),
        "gateway_cpu_us_per_delivery_median": round2(percentile(&cpu_per_delivery, 0.5) as f64 / 1e3),
        "each": each,
    }))
}

/// Adds the fields of `more` to the object `into`.
fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(into), Value::Object(more)) = (into, more) {
        into.extend(more);
    }
}

/// Personal notifications paced at `--personal-rate` for `--stream-secs` to the sessions
/// held here, with a broadcast every `every` meanwhile (None: none); returns the p99 (µs)
/// and the figures.
async fn personal_stream(
    phase: &mut Fixture<'_>,
    every: Option<Duration>,
) -> anyhow::Result<(u64, Value)> {
    let a = &phase.args.sync;
    let users = a.personal.min(a.broadcast_sessions) as u64;
    anyhow::ensure!(users > 0, "--personal must be at least 1");
    let expected = a.personal_rate * a.stream_secs;
    let window = Duration::from_secs(a.stream_secs);
    tokio::time::sleep(SETTLE).await;
    phase.personal.received.store(0, Ordering::Relaxed);
    lock(&phase.personal.latencies).clear();
    let before = Snapshot::take(&phase.gw, &phase.fleet, phase.redis_pid).await;
    let started = Instant::now();
    let started_us = now_micros();

    let mut notify = phase.redis.get_multiplexed_async_connection().await?;
    let (rate, prefix) = (a.personal_rate, phase.gw.prefix.clone());
    let notifications = tokio::spawn(async move {
        let mut sent = 0;
        while sent < expected {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let mut pipe = redis::pipe();
            for i in sent..(sent + PERSONAL_BATCH).min(expected) {
                let user = i % users;
                let json = format!(
                    "{{\"id\":{i},\"userId\":\"sync-{user}\",\"type\":\"ORDER_CREATED\",\"t\":{}}}",
                    now_micros()
                );
                pipe.cmd("PUBLISH")
                    .arg(format!("{prefix}sync-{user}"))
                    .arg(json)
                    .ignore();
            }
            pipe.query_async::<()>(&mut notify).await?;
            sent += PERSONAL_BATCH;
        }
        anyhow::Ok(())
    });
    let first_seq = phase.seq;
    let mut published = Vec::new();
    if let Some(every) = every {
        let mut redis = phase.redis.get_multiplexed_async_connection().await?;
        let count = (window.as_millis() / every.as_millis().max(1)) as u32;
        for k in 0..count {
            tokio::time::sleep_until((started + every * k).into()).await;
            published.push(now_micros());
            publish(&mut redis, &phase.channel, deal(phase.seq)).await?;
            phase.seq += 1;
        }
    }
    notifications.await??;

    let deadline = Instant::now() + STREAM_DEADLINE;
    while phase.personal.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = phase.personal.received.load(Ordering::Relaxed);
    let mut arrivals = Vec::new();
    for seq in first_seq..phase.seq {
        arrivals.push(phase.fleet.wait(seq, deadline).await);
    }
    let done_us = now_micros();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let used = Snapshot::take(&phase.gw, &phase.fleet, phase.redis_pid)
        .await
        .since(before);
    let mut latencies = lock(&phase.personal.latencies).clone();
    latencies.sort_unstable();
    let p99 = percentile(&latencies, 0.99);
    let what = match every {
        None => "no broadcast".to_owned(),
        Some(every) => format!("a broadcast every {} ms", every.as_millis()),
    };
    println!(
        "  personal {rate}/s for {} s, {what}: {got}/{expected} received; publish → receive p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}",
        a.stream_secs,
        ms(percentile(&latencies, 0.5)),
        ms(p99),
        ms(latencies.last().copied().unwrap_or(0)),
        used.cpu()
    );
    let mut figures = json!({
        "rate_per_sec": rate,
        "secs": a.stream_secs,
        "broadcast_every_ms": every.map(|e| e.as_millis() as u64),
        "expected": expected,
        "received": got,
        "p50_ms": round2(ms(percentile(&latencies, 0.5))),
        "p99_ms": round2(ms(p99)),
        "max_ms": round2(ms(latencies.last().copied().unwrap_or(0))),
    });
    merge(&mut figures, used.cpu_json());
    if !arrivals.is_empty() {
        let complete = arrivals.iter().filter(|(_, c)| *c).count();
        let deliveries: usize = arrivals.iter().map(|(a, _)| a.received).sum();
        let end = arrivals
            .iter()
            .map(|(a, _)| a.last_us)
            .max()
            .unwrap_or(done_us);
        // Broadcasts the gateway dropped (its fan-out queue was full) never arrived: no lag.
        let mut lags: Vec<u64> = arrivals
            .iter()
            .zip(&published)
            .filter(|((a, _), _)| a.received > 0)
            .map(|((a, _), at)| a.last_us.saturating_sub(*at))
            .collect();
        let never_arrived = arrivals.len() - lags.len();
        lags.sort_unstable();
        let span = end.saturating_sub(started_us).max(1);
        println!(
            "    {} broadcasts ({complete} reached every session): PUBLISH → last session p50 {:.0} ms, max {:.0} ms; {deliveries} deliveries in {:.1} s ({:.0}/s); gateway fan-out task {:.1} ms per broadcast",
            arrivals.len(),
            ms(percentile(&lags, 0.5)),
            ms(lags.last().copied().unwrap_or(0)),
            span as f64 / 1e6,
            deliveries as f64 / (span as f64 / 1e6),
            used.fanout_ms()
        );
        merge(
            &mut figures,
            json!({
                "broadcasts": arrivals.len(),
                "broadcasts_complete": complete,
                "broadcasts_never_arrived": never_arrived,
                "broadcast_deliveries": deliveries,
                "broadcast_deliveries_per_sec": (deliveries as f64 / (span as f64 / 1e6)).round(),
                "publish_to_last_p50_ms": round2(ms(percentile(&lags, 0.5))),
                "publish_to_last_max_ms": round2(ms(lags.last().copied().unwrap_or(0))),
                "fanout_task_ms": round2(used.fanout_ms()),
            }),
        );
    }
    Ok((p99, figures))
}
