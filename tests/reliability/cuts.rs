//! Dependency cuts: a steady stream across all 14 topics while ingest loses MySQL, then
//! Redis, then the Kafka broker, each for a while, through TCP proxies the case controls
//! (a cut drops every open connection and refuses new ones; the broker advertises its proxy,
//! so the producer loses it too). Nothing may be lost or stored twice, every row published,
//! nothing dead-lettered; `/readyz` must answer 503 during each cut (MySQL and Redis when a
//! batch waits for them, the Kafka broker when the consumer has no connection to it up);
//! reported: the time from each restore until everything sent before it is published, and
//! each cut's `/readyz` downtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::launch::{IngestSpec, Instance};
use super::observe::{self, Peaks, Readiness, Recorder};
use super::proxy::Proxy;
use super::report::{self, Check, Findings, say};
use super::services::{self, Broker, Database};
use super::stream;
use super::verdict::{self, Expected, Tally};
use super::{CaseFuture, Ctx, Scale};

/// After the stream has drained, how long to listen for late extra messages.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for the instance to join the group before the stream starts.
const READY: Duration = Duration::from_secs(60);
/// How often `/readyz` is asked.
const READY_POLL: Duration = Duration::from_millis(100);

struct Params {
    rate: f64,
    users: usize,
    copy_share: f64,
    /// Stream before the first cut.
    warm_up: Duration,
    cut: Duration,
    /// Stream between a restore and the next cut (and after the last).
    gap: Duration,
    drain_timeout: Duration,
    /// Bound of the time from a restore until everything sent before it is published.
    catch_up_bound: Duration,
    /// Bound of a `/readyz` downtime beyond the cut itself.
    ready_slack: Duration,
    rss_bound_mib: f64,
    fds_bound: usize,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                rate: 500.0,
                users: 1000,
                copy_share: 0.05,
                warm_up: Duration::from_secs(10),
                cut: Duration::from_secs(10),
                gap: Duration::from_secs(20),
                drain_timeout: Duration::from_secs(180),
                catch_up_bound: Duration::from_secs(30),
                ready_slack: Duration::from_secs(30),
                rss_bound_mib: 256.0,
                fds_bound: 256,
            },
            Scale::Quick => Params {
                rate: 200.0,
                users: 100,
                copy_share: 0.05,
                warm_up: Duration::from_secs(3),
                cut: Duration::from_secs(3),
                gap: Duration::from_secs(7),
                drain_timeout: Duration::from_secs(90),
                catch_up_bound: Duration::from_secs(30),
                ready_slack: Duration::from_secs(30),
                rss_bound_mib: 256.0,
                fds_bound: 256,
            },
        }
    }

    fn stream(&self) -> Duration {
        self.warm_up + (self.cut + self.gap) * DEPENDENCIES.len() as u32
    }
}

/// The dependencies cut, in order.
const DEPENDENCIES: [&str; 3] = ["MySQL", "Redis", "Kafka"];

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

/// One cut as it happened.
struct Cut {
    dependency: &'static str,
    at: Instant,
    restored: Instant,
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let p = Params::of(ctx.scale);
    let mut rng = ctx.rng("cuts");
    let log_dir = ctx.case_log_dir("cuts")?;
    let name = services::unique_name("cuts");
    let mut db = Database::create(&ctx.services.mysql_url, &name).await?;
    db.keep = ctx.keep_data;
    let broker = Broker::tansu(&ctx.services.tansu, &log_dir, true).await?;
    let mysql = Proxy::start(services::host_port(&ctx.services.mysql_url)?).await;
    let redis = Proxy::start(services::host_port(&ctx.services.redis_url)?).await;
    let prefix = format!("{name}:notification:");
    let recorder = Recorder::start(&ctx.services.redis_url, &prefix).await?;
    let spec = IngestSpec {
        bootstrap: broker.bootstrap.clone(),
        group: name.clone(),
        database_url: services::via(&db.url, mysql.addr)?,
        redis_url: services::via(&ctx.services.redis_url, redis.addr)?,
        prefix,
        kafka_properties: String::new(),
        log_dir: log_dir.clone(),
    };
    let count = (p.stream().as_secs_f64() * p.rate) as usize;
    let events = Arc::new(stream::plan(
        &mut rng,
        count,
        p.users,
        &format!("{name}-u"),
        p.copy_share,
    )?);
    let peaks = Peaks::start(Duration::from_millis(200));
    let mut ingest = Instance::start(&ctx.launcher, &spec, "a1").await?;
    peaks.watch(ingest.pid());
    ingest.wait_ready(READY).await?;
    let readiness = Readiness::start(&ingest.admin, READY_POLL);

    let producer = stream::producer(&broker.bootstrap, Duration::from_secs(120))?;
    let started = Instant::now();
    let producing = tokio::spawn(stream::produce(producer, events.clone(), p.rate));
    let kafka = broker.proxy.as_ref().expect("the broker is behind a proxy");
    let proxies: [&Proxy; 3] = [&mysql, &redis, kafka];
    let mut cuts = Vec::new();
    for (n, (dependency, proxy)) in DEPENDENCIES.iter().zip(proxies).enumerate() {
        let at = started + p.warm_up + (p.cut + p.gap) * n as u32;
        tokio::time::sleep_until(at.into()).await;
        proxy.cut();
        let at = Instant::now();
        say(&format!("cuts: {dependency} cut"));
        tokio::time::sleep(p.cut).await;
        proxy.restore();
        say(&format!("cuts: {dependency} restored"));
        cuts.push(Cut {
            dependency,
            at,
            restored: Instant::now(),
        });
    }
    let produced = producing.await?;
    let held = observe::held_records(&broker.bootstrap).await?;
    let expected = Expected::new(&events, &produced, &held);
    say(&format!("cuts: {} events sent; draining", expected.sent));
    let drained = verdict::drain(&expected, &recorder, p.drain_timeout).await;
    tokio::time::sleep(QUIET).await;
    let early_exit = ingest.exited();
    let rows = db.rows().await?;
    let dead = observe::dead_letters(&broker.bootstrap).await?;
    let heard = verdict::first_heard(&recorder);
    let tally = Tally::new(&expected, &rows, &recorder);
    let end = Instant::now();

    let mut out = Findings::new(format!(
        "{count} events ({} users, {:.0} % deliberate copies, every topic) at {:.0}/s into {}, \
         3 partitions a topic, reached through a proxy, consumed by {} \
         with the shipped settings, its MySQL and Redis through proxies; after {} s, each \
         dependency cut for {} s in turn (MySQL, Redis, Kafka: every connection dropped, new \
         ones refused; the producer loses the broker too), {} s of stream after each restore",
        p.users,
        p.copy_share * 100.0,
        p.rate,
        broker.description,
        ctx.launcher.describe(),
        p.warm_up.as_secs(),
        p.cut.as_secs(),
        p.gap.as_secs(),
    ));
    tally.report(&expected, &produced, dead, &mut out);
    for note in
        verdict::explain_missing(&tally, &expected, &events, &produced, &broker.bootstrap).await
    {
        out.note(note);
    }
    let mut longest_down = Duration::ZERO;
    for (n, cut) in cuts.iter().enumerate() {
        let until = cuts.get(n + 1).map_or(end, |next| next.at);
        let down = readiness.longest_down(cut.at, until);
        longest_down = longest_down.max(down);
        out.seconds(&format!("{}: /readyz downtime", cut.dependency), down);
        out.check(Check::holds(
            &format!("{}: /readyz answered 503 during the cut", cut.dependency),
            "yes",
            if down.is_zero() {
                "no: 200 all through"
            } else {
                "yes"
            },
            !down.is_zero(),
        ));
        let catch_up = verdict::caught_up(&expected, &heard, cut.restored);
        if let Some(d) = catch_up {
            out.seconds(&format!("{}: restore → caught up", cut.dependency), d);
        }
        out.check(Check::at_most(
            &format!(
                "{}: restore → everything sent before it published",
                cut.dependency
            ),
            catch_up.map_or(f64::INFINITY, |d| (d.as_secs_f64() * 100.0).round() / 100.0),
            p.catch_up_bound.as_secs_f64(),
            "s",
        ));
    }
    out.seconds("highest /readyz downtime", longest_down);
    let latencies = verdict::latencies(&expected, &heard);
    out.seconds(
        "latency p50 (sent → first publish)",
        verdict::quantile(&latencies, 0.5),
    );
    out.seconds("latency p99", verdict::quantile(&latencies, 0.99));
    out.seconds("latency max", verdict::quantile(&latencies, 1.0));
    out.figure("peak RSS of ingest", peaks.rss_mib(), "MiB");
    out.figure("peak open descriptors of ingest", peaks.fds() as f64, "fds");
    out.check(Check::holds(
        "everything sent was published",
        &format!("within {} s of the stream's end", p.drain_timeout.as_secs()),
        if drained.is_some() { "yes" } else { "no" },
        drained.is_some(),
    ));
    out.check(Check::at_most(
        "highest /readyz downtime",
        (longest_down.as_secs_f64() * 100.0).round() / 100.0,
        (p.cut + p.ready_slack).as_secs_f64(),
        "s",
    ));
    out.check(Check::holds(
        "ingest kept running through every cut",
        "running",
        &early_exit.map_or("running".to_owned(), |s| format!("exited: {s}")),
        early_exit.is_none(),
    ));
    out.check(Check::at_most(
        "peak RSS of ingest",
        peaks.rss_mib(),
        p.rss_bound_mib,
        "MiB",
    ));
    out.check(Check::at_most(
        "peak open descriptors of ingest",
        peaks.fds() as f64,
        p.fds_bound as f64,
        "fds",
    ));
    out.check(Check::holds(
        "the independent subscriber stayed connected",
        "connected",
        if recorder.connection_lost() {
            "lost"
        } else {
            "connected"
        },
        !recorder.connection_lost(),
    ));
    out.note(format!(
        "logs in {}{}",
        report::shown_path(&log_dir),
        db.kept_note()
    ));
    // Stopped cleanly, so that the log shows the drain after the cuts.
    let _ = ingest.stop(Duration::from_secs(60)).await;
    Ok(out)
}
