//! Soak: a long steady stream of personal notifications through Kafka, ingest, MySQL, Redis
//! and two gateways to many sessions subscribed with `last-id`, with reconnect churn (a
//! steady share of the sessions closes its connection and reconnects with recovery).
//! Sampled at a fixed interval: each process's memory, descriptors and connections to
//! Redis and MySQL, and the servers' client totals. After a warm-up each series gets a
//! least-squares slope per hour, checked against a bound (a leak grows without end; a
//! steady state stays flat); and every session must hold every notification of its user
//! exactly once.

use std::time::{Duration, Instant};

use rand::Rng;

use super::clients::{Ending, Fleet};
use super::flood;
use super::report::{self, Check, Findings, say};
use super::resources::{Sampler, Watched};
use super::stage::{self, BrokerKind, Stage};
use super::{CaseFuture, Ctx, Scale};

/// After everything was delivered, how long to listen for late copies.
const QUIET: Duration = Duration::from_secs(2);
/// The highest consumer lag ingest may show at a sample, in seconds of the stream.
const LAG_SECONDS: f64 = 10.0;
/// Longest wait for every session to be connected again once the stream has ended.
const RECONNECTED: Duration = Duration::from_secs(30);

struct Params {
    sessions: usize,
    rate: f64,
    duration: Duration,
    /// Sessions told to reconnect per `churn_period`, spread evenly over it.
    churn: usize,
    churn_period: Duration,
    sample_every: Duration,
    /// Samples before this are left out of the slopes.
    warm_up: Duration,
    reconnect_delay: Duration,
    connect_timeout: Duration,
    settle_timeout: Duration,
    /// Bounds of the slopes, per hour.
    rss_bound_mib: f64,
    fds_bound: f64,
    connections_bound: f64,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                sessions: 5000,
                rate: 500.0,
                duration: Duration::from_secs(30 * 60),
                churn: 50,
                churn_period: Duration::from_secs(60),
                sample_every: Duration::from_secs(60),
                warm_up: Duration::from_secs(5 * 60),
                reconnect_delay: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(300),
                settle_timeout: Duration::from_secs(120),
                rss_bound_mib: 64.0,
                // The database pools may still grow to their maxima (10 a gateway) in the
                // window; a descriptor or connection kept per reconnect would add 3 000/h.
                fds_bound: 120.0,
                connections_bound: 60.0,
            },
            Scale::Quick => Params {
                sessions: 200,
                rate: 50.0,
                duration: Duration::from_secs(50),
                churn: 10,
                churn_period: Duration::from_secs(10),
                sample_every: Duration::from_secs(5),
                warm_up: Duration::from_secs(10),
                reconnect_delay: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(60),
                settle_timeout: Duration::from_secs(60),
                // Forty seconds of fit: a step of a few MiB or connections reads as
                // hundreds an hour; a leak per reconnect would read as thousands.
                rss_bound_mib: 384.0,
                fds_bound: 600.0,
                connections_bound: 720.0,
            },
        }
    }

    /// What share of the sessions reconnects per minute, %.
    fn churn_per_minute(&self) -> f64 {
        self.churn as f64 / self.sessions as f64 * 60.0 / self.churn_period.as_secs_f64() * 100.0
    }
}

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let p = Params::of(ctx.scale);
    let mut rng = ctx.rng("soak");
    // A long stream outgrows the mock cluster (it ages data out past 5 MB a partition and
    // walks every batch it keeps on each fetch): tansu keeps up and keeps everything.
    let mut stage = Stage::up(ctx, "soak", p.sessions, BrokerKind::Tansu).await?;
    let mut fleet = Fleet::start(stage.fleet_spec(p.reconnect_delay, p.connect_timeout));
    fleet.wait_connected(p.connect_timeout).await?;
    let mut watched = vec![Watched {
        name: "ingest".to_owned(),
        pid: stage.ingest.pid(),
    }];
    watched.extend(stage.gateways.iter().map(|g| Watched {
        name: g.name.clone(),
        pid: g.pid(),
    }));
    let mut sampler = Sampler::new(
        watched.clone(),
        &ctx.services.redis_url,
        &ctx.services.mysql_url,
    )
    .await?;
    say(&format!(
        "soak: {} sessions connected; {} s at {}/s, {:.1} % of the sessions reconnecting a minute",
        fleet.len(),
        p.duration.as_secs(),
        p.rate,
        p.churn_per_minute()
    ));

    let producer = super::stream::producer(&stage.broker.bootstrap, Duration::from_secs(60))?;
    let count = (p.duration.as_secs_f64() * p.rate) as usize;
    let producing = tokio::spawn(flood::produce(
        producer,
        stage.users.clone(),
        count,
        p.rate,
        ctx.rng("soak-flood"),
    ));
    let started = Instant::now();
    let churn_gap = p.churn_period / p.churn.max(1) as u32;
    let (mut next_sample, mut next_churn) = (started, started + churn_gap);
    let mut churned = 0usize;
    // ingest's own `ingest_consumer_lag` at each sample (None: no answer).
    let mut lag: Vec<(f64, Option<f64>)> = Vec::new();
    while !producing.is_finished() {
        let now = Instant::now();
        if now >= next_sample {
            sampler.sample().await?;
            lag.push((sampler.elapsed(), ingest_lag(&stage.ingest.admin).await));
            next_sample += p.sample_every;
        }
        if now >= next_churn {
            // A connected session at random (one reconnecting now is skipped).
            if fleet.churn(rng.random_range(0..fleet.len())) {
                churned += 1;
            }
            next_churn += churn_gap;
        }
        let wake = next_sample
            .min(next_churn)
            .min(Instant::now() + Duration::from_millis(500));
        tokio::time::sleep_until(wake.into()).await;
    }
    let flooded = producing.await?;
    let lag_at_end = ingest_lag(&stage.ingest.admin).await;
    let reconnected = fleet.wait_connected(RECONNECTED).await;
    say(&format!(
        "soak: {} events in {:.1} s, {churned} sessions churned; waiting for every session",
        flooded.sent,
        (flooded.last_sent - flooded.started).as_secs_f64()
    ));

    let mut out = Findings::new(format!(
        "{} sessions (raw WebSocket, JWT, one user each, subscribed with `last-id`) spread \
         over two gateways (each {}); {:.0} personal notifications/s for those users for {} s \
         into {}, consumed by one ingest ({}); churn: {} sessions every {} s ({:.1} % a \
         minute) close their connection and reconnect after a random 0–{} ms with \
         `last-id`; resources sampled every {} s, slopes fitted from {} s on; shipped settings",
        p.sessions,
        ctx.launcher.describe_gateway(),
        p.rate,
        p.duration.as_secs(),
        stage.broker.description,
        ctx.launcher.describe(),
        p.churn,
        p.churn_period.as_secs(),
        p.churn_per_minute(),
        p.reconnect_delay.as_millis(),
        p.sample_every.as_secs(),
        p.warm_up.as_secs(),
    ));
    stage::settle(
        &stage,
        &mut fleet,
        &flooded,
        p.settle_timeout,
        QUIET,
        &mut out,
    )
    .await?;

    let reconnects = fleet.reconnects();
    let churn: Vec<Duration> = reconnects
        .iter()
        .filter(|(why, _, _)| *why == Ending::Churn)
        .map(|(_, _, took)| *took)
        .collect();
    let lost = reconnects
        .iter()
        .filter(|(why, _, _)| *why == Ending::Lost)
        .count();
    out.figure("churn reconnects", churn.len() as f64, "reconnects");
    out.seconds(
        "churn reconnect p50 (close → RECEIPT after recovery)",
        stage::quantile(&churn, 0.5),
    );
    out.seconds("churn reconnect p99", stage::quantile(&churn, 0.99));
    out.seconds("churn reconnect max", stage::quantile(&churn, 1.0));
    out.check(Check::none("connections the gateways ended or lost", lost));
    out.check(Check::holds(
        "every session connected again after the stream",
        &format!("within {} s", RECONNECTED.as_secs()),
        &match &reconnected {
            Ok(()) => "yes".to_owned(),
            Err(err) => format!("{err:#}"),
        },
        reconnected.is_ok(),
    ));
    out.check(Check::holds(
        "sessions churned",
        "> 0",
        &churned.to_string(),
        churned > 0,
    ));

    // ingest keeps up: its lag stays within a few seconds of the stream at every sample.
    let lag_bound = p.rate * LAG_SECONDS;
    let unanswered = lag.iter().filter(|(_, l)| l.is_none()).count();
    let highest = lag
        .iter()
        .filter_map(|(at, l)| l.map(|l| (*at, l)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    out.figure(
        "ingest consumer lag, highest sample",
        highest.map_or(f64::NAN, |(_, l)| l),
        "events",
    );
    out.figure(
        "ingest consumer lag when the stream ended",
        lag_at_end.unwrap_or(f64::NAN),
        "events",
    );
    out.check(Check::at_most(
        &format!(
            "ingest consumer lag at every sample ({} samples of `ingest_consumer_lag`; the \
             bound is {LAG_SECONDS} s of the stream)",
            lag.len()
        ),
        highest.map_or(f64::INFINITY, |(_, l)| l),
        lag_bound,
        "events",
    ));
    out.check(Check::none("lag samples ingest did not answer", unanswered));
    out.note(format!(
        "ingest consumer lag by sample (s: events): {}",
        lag.iter()
            .map(|(at, l)| format!(
                "{:.0}: {}",
                at,
                l.map_or("-".to_owned(), |l| format!("{l:.0}"))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let from = p.warm_up.as_secs_f64();
    let mut ends = Vec::new();
    for (name, series) in &sampler.series {
        let slope = series.slope_per_hour(from);
        if let Some(slope) = slope {
            out.figure(
                &format!("slope: {name}"),
                round(slope),
                &format!("{}/h", series.unit),
            );
        }
        if let Some((first, last)) = series.ends() {
            ends.push(format!(
                "{name} {} → {} {}",
                round(first),
                round(last),
                series.unit
            ));
        }
        let bound = match name.as_str() {
            n if n.ends_with(" RSS") => p.rss_bound_mib,
            n if n.ends_with(" open descriptors") => p.fds_bound,
            n if n.starts_with("all watched") => p.connections_bound,
            // The servers' totals include other runs on them: reported, not checked.
            _ => continue,
        };
        out.check(Check::at_most(
            &format!("slope of {name}"),
            slope.map_or(f64::INFINITY, round),
            bound,
            &format!("{}/h", series.unit),
        ));
    }
    out.note(format!("first → last sample: {}", ends.join("; ")));
    let exits = stage.early_exits(None);
    out.check(Check::holds(
        "ingest and both gateways ran throughout",
        "no exit",
        &if exits.is_empty() && sampler.gone.is_empty() {
            "no exit".to_owned()
        } else {
            format!("{exits:?} {:?}", sampler.gone)
        },
        exits.is_empty() && sampler.gone.is_empty(),
    ));
    out.note(format!(
        "the server totals (Redis connected_clients, MySQL Threads_connected) count every \
         client of the shared servers and are reported only; the checked connection counts \
         are the case's own processes' established TCP connections, read from /proc; seed \
         {}; logs in {}{}",
        ctx.seed,
        report::shown_path(&stage.log_dir),
        stage.db.kept_note()
    ));
    Ok(out)
}

/// ingest's `ingest_consumer_lag` gauge from its admin listener at `admin`.
async fn ingest_lag(admin: &str) -> Option<f64> {
    let (status, body) =
        devstack::procs::http_get(admin, "/metrics", Duration::from_secs(2)).await?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|line| line.strip_prefix("ingest_consumer_lag "))
        .and_then(|value| value.trim().parse().ok())
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
