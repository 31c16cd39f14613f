//! Gateway load, against the real `gateway` binary in its own process, side by side with
//! RabbitMQ's Web-STOMP plugin (the broker a Spring STOMP relay would use):
//!
//! 1. idle sessions: N STOMP sessions (CONNECT, SUBSCRIBE to the user's queue), opened by
//!    worker processes (each process may hold 20 000 descriptors here), over raw WebSocket
//!    and over SockJS-websocket; reports the server's RSS growth per session;
//! 2. deliveries: K subscribed sessions (one user each) receive M notifications; the
//!    gateway's are published to Redis, RabbitMQ's are SENT to `/exchange/amq.direct/{user}`
//!    over Web-STOMP; reports deliveries/s and p50/p99 publish→receive latency;
//! 3. broadcast ([`sync`]): one time deal to S sessions, and personal-notification latency
//!    with and without a series of broadcasts;
//! 4. recovery ([`recovery`]): a SUBSCRIBE with `last-id` answered from a MariaDB store;
//! 5. the ratios.
//!
//! Run: `cargo bench -p gateway --bench load -- --sessions 19900 --rabbit-sessions 10000`;
//! `--phases broadcast,recovery` picks phases. RabbitMQ must run with Web-STOMP on
//! (`rabbitmq-plugins enable rabbitmq_web_stomp`) and a descriptor limit above its session
//! count; `--rabbit ''` skips it. The figures of the phases that ran are written to
//! `target/bench-results/load.json` (`--out`), which `scripts/scaling.py` reads.

#![allow(clippy::print_stdout)]

#[path = "load/arrivals.rs"]
mod arrivals;
#[path = "load/client.rs"]
mod client;
#[path = "load/deliveries.rs"]
mod deliveries;
#[path = "load/idle.rs"]
mod idle;
#[path = "load/process.rs"]
mod process;
#[path = "load/recovery.rs"]
mod recovery;
#[path = "common/results.rs"]
mod results;
#[path = "load/snapshot.rs"]
mod snapshot;
#[path = "load/sync.rs"]
mod sync;
#[path = "load/workers.rs"]
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use client::{Kind, connect};
use deliveries::{gateway_deliveries, rabbit_deliveries};
use idle::measure_idle;
use process::{rabbit_pid, start_gateway};
use results::{Envelope, round2};
use workers::worker;

const SECRET: &str = "load-benchmark-secret-of-32-bytes-or-more";

#[derive(Parser, Clone)]
struct Args {
    /// Phases to run, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,deliveries,broadcast,recovery"
    )]
    phases: Vec<Phase>,
    /// Idle sessions on the gateway (its process holds at most ~19 990 sockets here).
    #[arg(long, default_value_t = 19_900)]
    sessions: usize,
    /// Idle SockJS-websocket sessions on the gateway (0: skip).
    #[arg(long, default_value_t = 10_000)]
    sockjs_sessions: usize,
    /// Seconds from the last idle session's opening to the RSS reading.
    #[arg(long, default_value_t = 3)]
    idle_settle_secs: u64,
    /// Idle sessions on RabbitMQ.
    #[arg(long, default_value_t = 10_000)]
    rabbit_sessions: usize,
    /// Subscribed sessions receiving the delivery load.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Notifications to deliver (RabbitMQ gets the same number).
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Offered load of a second, paced delivery run (5 s), for latency below saturation; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    paced_rate: u64,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// RabbitMQ Web-STOMP endpoint; empty to skip the comparison.
    #[arg(long, default_value = "ws://127.0.0.1:15674/ws")]
    rabbit: String,
    #[command(flatten)]
    sync: sync::SyncArgs,
    #[command(flatten)]
    recovery: recovery::RecoveryArgs,
    /// The results file [default: target/bench-results/load.json].
    #[arg(long)]
    out: Option<PathBuf>,

    // Worker mode (the bench runs itself): open sessions, report, hold them until stdin ends.
    #[arg(long, hide = true)]
    worker: Option<Kind>,
    #[arg(long, hide = true, default_value = "")]
    url: String,
    #[arg(long, hide = true, default_value_t = 0)]
    first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    /// Worker sessions subscribe to `/topic/timedeals` and report each broadcast's arrivals.
    #[arg(long, hide = true)]
    timedeals: bool,
    #[arg(long, hide = true)]
    bench: bool,
}

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Idle sessions: memory per session (raw WebSocket, SockJS, RabbitMQ).
    Idle,
    /// Notifications to 1 000 sessions: deliveries/s, latency, CPU (and RabbitMQ's).
    Deliveries,
    /// A time deal to thousands of sessions; personal latency beside broadcasts.
    Broadcast,
    /// Recovery of missed notifications from the store on SUBSCRIBE.
    Recovery,
}

/// What the results file says the run was.
const WHAT: &str = "the gateway binary in its own process, loopback: idle sessions' RSS (raw WebSocket, SockJS), \
    deliveries from Redis to subscribed sessions, a time-deal broadcast, recovery on SUBSCRIBE; \
    RabbitMQ Web-STOMP beside it when it ran";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(kind) = args.worker {
        return worker(&args, kind).await;
    }
    let mut envelope = Envelope::start("load", WHAT);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runs = |phase| args.phases.contains(&phase);
    let rabbit_wanted = !args.rabbit.is_empty() && (runs(Phase::Idle) || runs(Phase::Deliveries));
    if rabbit_wanted {
        // Fail now rather than after the gateway's phases.
        anyhow::ensure!(
            rabbit_pid().is_some(),
            "RabbitMQ (beam.smp) is not running; pass --rabbit '' to skip it"
        );
        connect(&args.rabbit, Kind::Rabbit, "probe")
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "RabbitMQ Web-STOMP at {} does not answer ({err}); enable rabbitmq_web_stomp or pass --rabbit ''",
                    args.rabbit
                )
            })?;
    }
    let mut results = serde_json::Map::new();
    results.insert(
        "params".into(),
        json!({
            "phases": args.phases.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
            "sessions": args.sessions,
            "sockjs_sessions": args.sockjs_sessions,
            "subscribers": args.subscribers,
            "messages": args.messages,
            "paced_rate": args.paced_rate,
            "rabbit": args.rabbit,
            "rabbit_sessions": args.rabbit_sessions,
        }),
    );

    let mut raw_idle = None;
    if runs(Phase::Idle) {
        let gw = start_gateway(&args.redis, None).await?;
        envelope.gateway(gw.child.id());
        let raw_url = format!("ws://{}/ws/notifications/websocket", gw.addr);
        let settle = Duration::from_secs(args.idle_settle_secs);
        let raw = measure_idle(gw.child.id(), &raw_url, Kind::Raw, args.sessions, settle).await?;
        drop(gw);
        let mut sockjs = None;
        if args.sockjs_sessions > 0 {
            let gw = start_gateway(&args.redis, None).await?;
            let url = format!("ws://{}/ws/notifications", gw.addr);
            sockjs = Some(
                measure_idle(
                    gw.child.id(),
                    &url,
                    Kind::Sockjs,
                    args.sockjs_sessions,
                    settle,
                )
                .await?,
            );
        }
        results.insert(
            "idle".into(),
            json!({
                "gateway_rss_at_start_kib": raw.rss_before_kib,
                "raw": raw.json(),
                "sockjs": sockjs.as_ref().map(idle::Idle::json),
            }),
        );
        raw_idle = Some(raw.kb_per_session);
    }
    let mut ours = None;
    if runs(Phase::Deliveries) {
        let gw = start_gateway(&args.redis, None).await?;
        envelope.gateway(gw.child.id());
        let burst = gateway_deliveries(&args, &gw, args.messages, None).await?;
        let mut paced = None;
        if args.paced_rate > 0 {
            let messages = (args.paced_rate * 5) as usize;
            paced = Some(gateway_deliveries(&args, &gw, messages, Some(args.paced_rate)).await?);
        }
        results.insert(
            "deliveries".into(),
            json!({
                "subscribers": args.subscribers,
                "burst": burst.json(),
                "paced": paced.as_ref().map(deliveries::Deliveries::json),
            }),
        );
        ours = Some(burst);
    }
    if runs(Phase::Broadcast) {
        let figures = sync::run(&args, |pid| envelope.gateway(pid)).await?;
        results.insert("broadcast".into(), figures);
    }
    if runs(Phase::Recovery) {
        results.insert("recovery".into(), recovery::run(&args).await?);
    }

    if rabbit_wanted {
        results.insert(
            "rabbitmq".into(),
            rabbit(&args, raw_idle, ours.as_ref()).await?,
        );
    }
    envelope.write(args.out.as_deref(), Value::Object(results))?;
    Ok(())
}

/// RabbitMQ's idle sessions and deliveries, and the ratios to the gateway's.
async fn rabbit(
    args: &Args,
    raw_idle: Option<f64>,
    ours: Option<&deliveries::Deliveries>,
) -> anyhow::Result<Value> {
    let Some(pid) = rabbit_pid() else {
        anyhow::bail!("RabbitMQ (beam.smp) is not running; pass --rabbit '' to skip it")
    };
    let mut figures = json!({});
    if let Some(raw_idle) = raw_idle {
        let settle = Duration::from_secs(args.idle_settle_secs);
        let idle = measure_idle(
            pid,
            &args.rabbit,
            Kind::Rabbit,
            args.rabbit_sessions,
            settle,
        )
        .await?;
        let rabbit_idle = idle.kb_per_session;
        println!(
            "ratio: idle memory RabbitMQ/gateway {:.1}x ({rabbit_idle:.1} KB vs {raw_idle:.1} KB per session)",
            rabbit_idle / raw_idle
        );
        figures["idle"] = idle.json();
        figures["idle_memory_ratio"] = json!(round2(rabbit_idle / raw_idle));
    }
    if let Some(ours) = ours {
        let rabbit = rabbit_deliveries(args).await?;
        println!(
            "ratio: deliveries gateway/RabbitMQ {:.1}x ({:.0}/s vs {:.0}/s); p99 {:.1} ms vs {:.1} ms",
            ours.per_second / rabbit.per_second,
            ours.per_second,
            rabbit.per_second,
            ours.p99_ms,
            rabbit.p99_ms
        );
        figures["deliveries"] = rabbit.json();
        figures["deliveries_ratio"] = json!(round2(ours.per_second / rabbit.per_second));
    }
    Ok(figures)
}
