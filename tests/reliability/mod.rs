//! The reliability cases (issue "Hardening") and their frame. A case drives real components
//! (`ingest` and `gateway` as processes of their own, MariaDB, Redis, a Kafka broker, TCP
//! proxies it cuts, browser-like STOMP sessions)
//! under a stated load and returns [`report::Findings`]: figures, and checks against stated
//! bounds. The runner (`tests/benches/reliability/main.rs`) runs them at full scale and
//! writes `RELIABILITY.md`; the fast test (`tests/tests/reliability.rs`) runs them small.
//!
//! Modules: [`report`] — findings, checks and the result files; [`markdown`] —
//! `RELIABILITY.md`; [`launch`] — `ingest` as a process (the release binary or this test
//! binary run again); [`services`] — a fresh database, the broker, URLs through proxies;
//! [`stream`] — the seeded events and their paced producing; [`observe`] — what Redis
//! carried, readiness, process peaks, dead letters; [`verdict`] — lost, duplicated,
//! unpublished and the times; [`group`] — a consumer group's instances killed, restarted,
//! joining and leaving; [`stage`] — ingest and two gateways on one store for the delivery
//! cases, whose sessions are [`clients`] (browser-like STOMP sessions that reconnect with
//! `last-id`), whose stream is [`flood`] and whose resource trends are [`resources`].
//! Cases: [`crash`], [`cuts`], [`restart`], [`soak`], [`hostile`], [`rest`], [`fuzz`].
//!
//! A new case is a module with `pub fn case(ctx: &Ctx) -> CaseFuture<'_>` and one line in
//! [`CASES`]; it picks its size from [`Ctx::scale`] and its randomness from [`Ctx::rng`]. A
//! case that needs longer than [`Scale::case_limit`] at full scale says so in its entry.

#![allow(dead_code)]

pub mod clients;
pub mod crash;
pub mod cuts;
pub mod flood;
pub mod fuzz;
pub mod group;
pub mod hostile;
pub mod launch;
pub mod markdown;
pub mod observe;
#[path = "../tests/support/proxy.rs"]
pub mod proxy;
pub mod report;
pub mod resources;
pub mod rest;
pub mod restart;
pub mod services;
pub mod soak;
pub mod stage;
pub mod stream;
pub mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::SeedableRng;
use rand::rngs::StdRng;

use launch::Launcher;
use report::{Findings, Report};
use services::Services;

/// What a case's function returns.
pub type CaseFuture<'a> = BoxFuture<'a, anyhow::Result<Findings>>;

/// One registered case.
pub struct Case {
    /// Its name on the command line and in file names.
    pub name: &'static str,
    /// Its heading in `RELIABILITY.md`.
    pub title: &'static str,
    pub run: fn(&Ctx) -> CaseFuture<'_>,
    /// Its time limit at full scale when it needs longer than [`Scale::case_limit`].
    pub full_limit: Option<Duration>,
}

impl Case {
    /// The longest this case may take at `scale`.
    pub fn limit(&self, scale: Scale) -> Duration {
        match (scale, self.full_limit) {
            (Scale::Full, Some(limit)) => limit,
            _ => scale.case_limit(),
        }
    }
}

/// Every case, in the order `RELIABILITY.md` lists them.
pub const CASES: &[Case] = &[
    Case {
        name: "crash",
        title: "Crash loop: ingest killed mid-stream, a second instance joins and leaves",
        run: crash::case,
        full_limit: None,
    },
    Case {
        name: "cuts",
        title: "Dependency cuts: MySQL, Redis, then the Kafka broker unreachable",
        run: cuts::case,
        full_limit: None,
    },
    Case {
        name: "restart",
        title: "Gateway killed mid-flood: its sessions move to the other with `last-id`",
        run: restart::case,
        full_limit: None,
    },
    Case {
        name: "soak",
        title: "Soak: a steady stream to many sessions with reconnect churn, resource trends",
        run: soak::case,
        // Half an hour of stream, plus start-up and settling.
        full_limit: Some(Duration::from_secs(45 * 60)),
    },
    Case {
        name: "hostile",
        title: "Hostile clients against a gateway process, one attack at a time",
        run: hostile::case,
        full_limit: None,
    },
    Case {
        name: "rest",
        title: "The inbox REST API: bad input, 1 000 requests/s, racing read-all and deletes",
        run: rest::case,
        full_limit: None,
    },
    Case {
        name: "fuzz",
        title: "Fuzz targets: the STOMP decoder, SockJS payloads, the event converter",
        run: fuzz::case,
        // Building the targets, then ten minutes of libFuzzer for each of the three.
        full_limit: Some(Duration::from_secs(50 * 60)),
    },
];

/// The cases named in `names` (comma-separated lists allowed), in registry order; all of
/// them when `names` is empty.
pub fn select(names: &[String]) -> anyhow::Result<Vec<&'static Case>> {
    let wanted: Vec<&str> = names
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    for name in &wanted {
        anyhow::ensure!(
            CASES.iter().any(|c| c.name == *name),
            "no case {name:?}; the cases: {}",
            CASES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(CASES
        .iter()
        .filter(|c| wanted.is_empty() || wanted.contains(&c.name))
        .collect())
}

/// How big a run is: `Quick` for the test suite and `--quick` (seconds per case), `Full`
/// for the figures in `RELIABILITY.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Quick,
    Full,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Full => "full",
        }
    }

    /// The longest a case may take before it is stopped and failed (unless the case sets
    /// a longer one for full scale).
    pub fn case_limit(self) -> Duration {
        match self {
            Scale::Quick => Duration::from_secs(240),
            Scale::Full => Duration::from_secs(1200),
        }
    }
}

/// What every case gets.
pub struct Ctx {
    pub scale: Scale,
    pub seed: u64,
    pub launcher: Launcher,
    pub services: Services,
    /// Where each case's logs go (a directory per case).
    pub log_dir: PathBuf,
    /// The command that runs one case again: `{case}` and `{seed}` are filled in.
    pub rerun: String,
    /// Keep each case's database (its name is in the notes) instead of dropping it.
    pub keep_data: bool,
}

impl Ctx {
    pub fn quick(&self) -> bool {
        self.scale == Scale::Quick
    }

    /// A random generator for `case`: the run's seed mixed with the case's name, so a case
    /// draws the same with the same seed whatever ran before it.
    pub fn rng(&self, case: &str) -> StdRng {
        let mixed = case
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        StdRng::seed_from_u64(mixed)
    }

    /// The case's own log directory, created empty.
    pub fn case_log_dir(&self, case: &str) -> anyhow::Result<PathBuf> {
        let dir = self.log_dir.join(case);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn command(&self, case: &str) -> String {
        self.rerun
            .replace("{case}", case)
            .replace("{seed}", &self.seed.to_string())
    }
}

/// Runs one case within its time limit; its error or time-out becomes a failed report.
pub async fn run_case(case: &Case, ctx: &Ctx) -> Report {
    let started = Instant::now();
    let mut report = Report::start(case.name, case.title, &ctx.command(case.name), ctx);
    report::say(&format!(
        "== {} ({}, seed {}): {}",
        case.name,
        ctx.scale.name(),
        ctx.seed,
        case.title
    ));
    let limit = case.limit(ctx.scale);
    let outcome = match tokio::time::timeout(limit, (case.run)(ctx)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow::anyhow!("the case did not finish within {limit:?}")),
    };
    report.finish(outcome, started.elapsed());
    report::say(&report.summary());
    report
}
