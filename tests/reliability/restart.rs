//! Gateway restart: browser-like sessions spread over two gateways, each subscribed with
//! `last-id`, while a flood of personal notifications runs through Kafka, ingest, MySQL and
//! Redis; one gateway is killed with SIGKILL mid-flood (a seeded moment and instance). Its
//! sessions reconnect to the other with `last-id` set to the newest id they hold; every
//! session must end with every notification of its user exactly once. Reported: the
//! reconnect times, how long until the last moved session was subscribed again, and the
//! surviving gateway's peaks.

use std::time::{Duration, Instant};

use rand::Rng;

use super::clients::{Ending, Fleet};
use super::flood;
use super::observe::Peaks;
use super::report::{self, Check, Findings, say};
use super::stage::{self, BrokerKind, Stage};
use super::{CaseFuture, Ctx, Scale};

/// After everything was delivered, how long to listen for late copies.
const QUIET: Duration = Duration::from_secs(2);

struct Params {
    sessions: usize,
    rate: f64,
    flood: Duration,
    /// The kill falls at a random share of the flood in this range.
    kill_window: (f64, f64),
    /// A session waits a random time up to this before it reconnects.
    reconnect_delay: Duration,
    connect_timeout: Duration,
    settle_timeout: Duration,
    reconnect_p99_bound: Duration,
    reconnect_max_bound: Duration,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                sessions: 2000,
                rate: 1000.0,
                flood: Duration::from_secs(60),
                kill_window: (0.3, 0.6),
                reconnect_delay: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(120),
                settle_timeout: Duration::from_secs(120),
                reconnect_p99_bound: Duration::from_secs(5),
                reconnect_max_bound: Duration::from_secs(10),
            },
            Scale::Quick => Params {
                sessions: 200,
                rate: 200.0,
                flood: Duration::from_secs(20),
                kill_window: (0.3, 0.6),
                reconnect_delay: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(60),
                settle_timeout: Duration::from_secs(60),
                reconnect_p99_bound: Duration::from_secs(5),
                reconnect_max_bound: Duration::from_secs(10),
            },
        }
    }
}

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let p = Params::of(ctx.scale);
    let mut rng = ctx.rng("restart");
    let kill_at = p
        .flood
        .mul_f64(rng.random_range(p.kill_window.0..p.kill_window.1));
    let victim = rng.random_range(0..2usize);
    let survivor = 1 - victim;
    let mut stage = Stage::up(ctx, "restart", p.sessions, BrokerKind::Mock).await?;
    let mut fleet = Fleet::start(stage.fleet_spec(p.reconnect_delay, p.connect_timeout));
    fleet.wait_connected(p.connect_timeout).await?;
    let peaks = Peaks::start(Duration::from_millis(200));
    peaks.watch(stage.gateways[survivor].pid());
    say(&format!(
        "restart: {} sessions connected; flooding at {}/s, SIGKILL of {} at {:.1} s",
        fleet.len(),
        p.rate,
        stage.gateways[victim].name,
        kill_at.as_secs_f64()
    ));

    let producer = super::stream::producer(&stage.broker.bootstrap, Duration::from_secs(60))?;
    let count = (p.flood.as_secs_f64() * p.rate) as usize;
    let producing = tokio::spawn(flood::produce(
        producer,
        stage.users.clone(),
        count,
        p.rate,
        ctx.rng("restart-flood"),
    ));
    let started = Instant::now();
    tokio::time::sleep_until((started + kill_at).into()).await;
    let moved = fleet.on_gateway(victim).len();
    let killed_at = Instant::now();
    stage.gateways[victim].kill();
    let flooded = producing.await?;
    say(&format!(
        "restart: {} events in {:.1} s; waiting for every session",
        flooded.sent,
        (flooded.last_sent - flooded.started).as_secs_f64()
    ));

    let mut out = Findings::new(format!(
        "{} sessions (raw WebSocket, JWT, one user each, subscribed with `last-id`) spread \
         over two gateways sharing one Redis prefix and the store (each {}); {count} personal \
         notifications for those users (the 12 per-user topics, fresh references) at \
         {:.0}/s into {}, consumed by one ingest ({}); the gateway {} killed with SIGKILL \
         {:.1} s into the flood (seeded); a session reconnects after a random 0–{} ms, to \
         the same address first, then to the other gateway, with `last-id` = the newest id \
         it holds; shipped gateway settings",
        p.sessions,
        ctx.launcher.describe_gateway(),
        p.rate,
        stage.broker.description,
        ctx.launcher.describe(),
        stage.gateways[victim].name,
        kill_at.as_secs_f64(),
        p.reconnect_delay.as_millis(),
    ));
    let delivery = stage::settle(
        &stage,
        &mut fleet,
        &flooded,
        p.settle_timeout,
        QUIET,
        &mut out,
    )
    .await?;

    let after_kill: Vec<(Ending, Instant, Duration)> = fleet
        .reconnects()
        .into_iter()
        .filter(|(_, at, _)| *at >= killed_at)
        .collect();
    let lost: Vec<Duration> = after_kill
        .iter()
        .filter(|(why, _, _)| *why == Ending::Lost)
        .map(|(_, _, took)| *took)
        .collect();
    let all_back = after_kill
        .iter()
        .map(|(_, at, took)| (*at + *took).saturating_duration_since(killed_at))
        .max()
        .unwrap_or_default();
    let (p50, p99, max) = (
        stage::quantile(&lost, 0.5),
        stage::quantile(&lost, 0.99),
        stage::quantile(&lost, 1.0),
    );
    let failed_attempts: u32 = fleet.with_logs(|logs| logs.iter().map(|l| l.failed_attempts).sum());
    out.figure("sessions on the killed gateway", moved as f64, "sessions");
    out.figure(
        "sessions reconnected after the kill",
        lost.len() as f64,
        "sessions",
    );
    out.seconds(
        "reconnect p50 (connection lost → RECEIPT after recovery)",
        p50,
    );
    out.seconds("reconnect p99", p99);
    out.seconds("reconnect max", max);
    out.seconds("kill → the last moved session subscribed again", all_back);
    out.figure(
        "failed connection attempts (refused by the dead gateway, then retried)",
        f64::from(failed_attempts),
        "attempts",
    );
    out.figure("peak RSS of the surviving gateway", peaks.rss_mib(), "MiB");
    out.figure(
        "peak open descriptors of the surviving gateway",
        peaks.fds() as f64,
        "fds",
    );
    out.check(Check::equal(
        "sessions that lost their connection = the killed gateway's",
        lost.len(),
        moved,
    ));
    out.check(Check::holds(
        "recovery was exercised: notifications came from the store on a reconnect",
        "> 0",
        &delivery.recovered.to_string(),
        delivery.recovered > 0,
    ));
    out.check(Check::holds(
        "the killed gateway had sessions",
        "> 0",
        &moved.to_string(),
        moved > 0,
    ));
    out.check(Check::at_most(
        "reconnect p99",
        round(p99),
        p.reconnect_p99_bound.as_secs_f64(),
        "s",
    ));
    out.check(Check::at_most(
        "reconnect max",
        round(max),
        p.reconnect_max_bound.as_secs_f64(),
        "s",
    ));
    let exits = stage.early_exits(Some(victim));
    out.check(Check::holds(
        "ingest and the surviving gateway ran throughout",
        "no exit",
        &if exits.is_empty() {
            "no exit".to_owned()
        } else {
            exits.join("; ")
        },
        exits.is_empty(),
    ));
    out.note(format!(
        "killed {} (seed {}); logs in {}{}",
        stage.gateways[victim].name,
        ctx.seed,
        report::shown_path(&stage.log_dir),
        stage.db.kept_note()
    ));
    Ok(out)
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}
