//! Crash loop: a steady stream across all 14 topics (with deliberate copies) while `ingest`
//! is killed with SIGKILL at random moments (seeded) and restarted at once, and a second
//! instance joins mid-stream and later leaves with SIGTERM. Nothing may be lost, no
//! notification stored twice, every row published at least once, nothing dead-lettered;
//! reported: the time to drain after the last kill and the instances' peak memory and
//! descriptors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::group::{Group, Role};
use super::launch::IngestSpec;
use super::observe::{self, Peaks, Recorder};
use super::report::{self, Check, Findings, say};
use super::services::{self, Broker, Database};
use super::stream;
use super::verdict::{self, Expected, Tally};
use super::{CaseFuture, Ctx, Scale};

/// After the stream has drained, how long to listen for late extra messages.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for the first instance to join the group before the stream starts.
const FIRST_READY: Duration = Duration::from_secs(60);

struct Params {
    events: usize,
    rate: f64,
    users: usize,
    copy_share: f64,
    kills: usize,
    session_timeout_ms: u64,
    /// When the second instance joins and leaves, as shares of the stream's duration.
    join_at: f64,
    leave_at: f64,
    drain_timeout: Duration,
    /// Bound of the time from the last kill until everything sent before it is published.
    drain_bound: Duration,
    rss_bound_mib: f64,
    fds_bound: usize,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                events: 100_000,
                rate: 1000.0,
                users: 2000,
                copy_share: 0.05,
                kills: 5,
                session_timeout_ms: 10_000,
                join_at: 0.3,
                leave_at: 0.7,
                drain_timeout: Duration::from_secs(240),
                drain_bound: Duration::from_secs(60),
                rss_bound_mib: 256.0,
                fds_bound: 256,
            },
            Scale::Quick => Params {
                events: 3000,
                rate: 200.0,
                users: 200,
                copy_share: 0.05,
                kills: 5,
                session_timeout_ms: 6000,
                join_at: 0.3,
                leave_at: 0.7,
                drain_timeout: Duration::from_secs(120),
                drain_bound: Duration::from_secs(60),
                rss_bound_mib: 256.0,
                fds_bound: 256,
            },
        }
    }

    fn stream_secs(&self) -> f64 {
        self.events as f64 / self.rate
    }
}

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Join,
    Leave,
}

/// The kill moments: one at random in each of `kills` equal slots of the stream's middle
/// 90 %, so that they are random but spread; then the join and the leave.
fn schedule(rng: &mut StdRng, p: &Params) -> Vec<(Duration, Action)> {
    let secs = p.stream_secs();
    let slot = 0.9 / p.kills as f64;
    let mut steps: Vec<(Duration, Action)> = (0..p.kills)
        .map(|k| {
            let share = 0.05 + slot * (k as f64 + rng.random_range(0.0..1.0));
            (Duration::from_secs_f64(secs * share), Action::Kill)
        })
        .collect();
    steps.push((Duration::from_secs_f64(secs * p.join_at), Action::Join));
    steps.push((Duration::from_secs_f64(secs * p.leave_at), Action::Leave));
    steps.sort_by_key(|(at, _)| *at);
    steps
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let p = Params::of(ctx.scale);
    let mut rng = ctx.rng("crash");
    let log_dir = ctx.case_log_dir("crash")?;
    let name = services::unique_name("crash");
    let mut db = Database::create(&ctx.services.mysql_url, &name).await?;
    db.keep = ctx.keep_data;
    // tansu 0.6's group coordinator leaves partitions with a killed member for good now and
    // then (its successor is assigned nothing); the mock cluster expires sessions as Kafka.
    let broker = Broker::mock().await?;
    let prefix = format!("{name}:notification:");
    let recorder = Recorder::start(&ctx.services.redis_url, &prefix).await?;
    let properties = format!(
        "session.timeout.ms={},heartbeat.interval.ms={}",
        p.session_timeout_ms,
        p.session_timeout_ms / 5
    );
    let spec = IngestSpec {
        bootstrap: broker.bootstrap.clone(),
        group: name.clone(),
        database_url: db.url.clone(),
        redis_url: ctx.services.redis_url.clone(),
        prefix,
        kafka_properties: properties.clone(),
        log_dir: log_dir.clone(),
    };
    let events = Arc::new(stream::plan(
        &mut rng,
        p.events,
        p.users,
        &format!("{name}-u"),
        p.copy_share,
    )?);
    let steps = schedule(&mut rng, &p);
    let peaks = Peaks::start(Duration::from_millis(200));
    let mut group = Group::new(ctx, &spec, &peaks);
    group.start(Role::First).await?;
    group
        .first
        .as_ref()
        .expect("the first instance")
        .wait_ready(FIRST_READY)
        .await?;

    let producer = stream::producer(&broker.bootstrap, Duration::from_secs(120))?;
    let started = Instant::now();
    let producing = tokio::spawn(stream::produce(producer, events.clone(), p.rate));
    for (at, action) in &steps {
        tokio::time::sleep_until((started + *at).into()).await;
        group.check_exits();
        group.revive().await?;
        match action {
            Action::Kill => group.kill_one(&mut rng).await?,
            Action::Join => {
                group.start(Role::Second).await?;
            }
            Action::Leave => group.leave().await?,
        }
    }
    let produced = producing.await?;
    let held = observe::held_records(&broker.bootstrap).await?;
    let expected = Expected::new(&events, &produced, &held);
    say(&format!(
        "crash: {} events sent in {:.1} s; draining",
        expected.sent,
        (produced.last_sent - produced.started).as_secs_f64()
    ));
    let drained = verdict::drain(&expected, &recorder, p.drain_timeout).await;
    tokio::time::sleep(QUIET).await;
    group.check_exits();
    let rows = db.rows().await?;
    let dead = observe::dead_letters(&broker.bootstrap).await?;
    let heard = verdict::first_heard(&recorder);
    let tally = Tally::new(&expected, &rows, &recorder);

    let mut out = Findings::new(format!(
        "{} events ({} users, {:.0} % deliberate copies, every topic) at {:.0}/s into {}, \
         3 partitions a topic, consumed by {}; {} SIGKILLs at seeded random moments, each \
         instance restarted at once; a second instance joins at {:.0} % of the stream and \
         leaves (SIGTERM) at {:.0} %; KAFKA_PROPERTIES={properties}",
        p.events,
        p.users,
        p.copy_share * 100.0,
        p.rate,
        broker.description,
        ctx.launcher.describe(),
        p.kills,
        p.join_at * 100.0,
        p.leave_at * 100.0,
    ));
    tally.report(&expected, &produced, dead, &mut out);
    for note in
        verdict::explain_missing(&tally, &expected, &events, &produced, &broker.bootstrap).await
    {
        out.note(note);
    }
    let last_kill = group.kills.last().copied().unwrap_or(started);
    let after_kill = verdict::caught_up(&expected, &heard, last_kill);
    let after_stream = verdict::caught_up(&expected, &heard, produced.last_sent);
    let latencies = verdict::latencies(&expected, &heard);
    out.figure("kills", group.kills.len() as f64, "SIGKILLs");
    out.seconds(
        "longest restart (spawn → admin listening)",
        group.longest_restart,
    );
    if let Some(d) = after_kill {
        out.seconds("drain after the last kill", d);
    }
    if let Some(d) = after_stream {
        out.seconds("drain after the stream's last event", d);
    }
    out.seconds(
        "latency p50 (sent → first publish)",
        verdict::quantile(&latencies, 0.5),
    );
    out.seconds("latency p99", verdict::quantile(&latencies, 0.99));
    out.seconds("latency max", verdict::quantile(&latencies, 1.0));
    out.figure("peak RSS of an ingest process", peaks.rss_mib(), "MiB");
    out.figure(
        "peak open descriptors of an ingest process",
        peaks.fds() as f64,
        "fds",
    );
    out.check(Check::holds(
        "everything sent was published",
        &format!("within {} s of the stream's end", p.drain_timeout.as_secs()),
        if drained.is_some() { "yes" } else { "no" },
        drained.is_some(),
    ));
    out.check(Check::at_most(
        "drain after the last kill",
        after_kill.map_or(f64::INFINITY, |d| (d.as_secs_f64() * 100.0).round() / 100.0),
        p.drain_bound.as_secs_f64(),
        "s",
    ));
    out.check(Check::holds(
        "the leaving instance stopped cleanly on SIGTERM",
        "exit 0",
        &group
            .leave_status
            .map_or("not stopped".to_owned(), |s| s.to_string()),
        group.leave_status.is_some_and(|s| s.success()),
    ));
    out.check(Check::holds(
        "no instance exited on its own",
        "none",
        &if group.early_exits.is_empty() {
            "none".to_owned()
        } else {
            group.early_exits.join("; ")
        },
        group.early_exits.is_empty(),
    ));
    out.check(Check::at_most(
        "peak RSS of an ingest process",
        peaks.rss_mib(),
        p.rss_bound_mib,
        "MiB",
    ));
    out.check(Check::at_most(
        "peak open descriptors of an ingest process",
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
    let moments: Vec<String> = group
        .kills
        .iter()
        .map(|k| format!("{:.1}", (*k - started).as_secs_f64()))
        .collect();
    out.note(format!(
        "kills at {} s into the stream (seed {}); logs in {}{}",
        moments.join(", "),
        ctx.seed,
        report::shown_path(&log_dir),
        db.kept_note()
    ));
    Ok(out)
}
