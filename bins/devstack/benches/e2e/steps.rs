//! The benchmark's course: configurations, each step on a fresh tansu and ingest (warmed
//! up), the idle measurement, and the search for the highest sustainable rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;

use crate::load::{self, Tracker};
use crate::procs::{self, Binaries, Proc};
use crate::report::{self, Step, Target};
use crate::{Args, prom};

/// Longest wait for the warm-up events (the consumer group forms meanwhile).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between steps.
const BETWEEN_STEPS: Duration = Duration::from_secs(1);

/// What lives for the whole run.
pub struct Bench {
    pub args: Args,
    pub bins: Binaries,
    pub log_dir: PathBuf,
    pub tracker: Arc<Tracker>,
    pub users: Vec<String>,
    pub next_seq: usize,
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub gateway: Proc,
    pub gateway_admin: String,
}

/// One configuration's broker and ingest.
struct Pipeline {
    tansu: Proc,
    ingest: Proc,
    ingest_admin: String,
    producer: FutureProducer,
}

impl Bench {
    /// Runs `rates` (and the search when `search`) with `properties`, each step on a fresh
    /// broker and ingest.
    pub async fn configuration(
        &mut self,
        properties: &str,
        rates: &[u64],
        search: bool,
    ) -> anyhow::Result<Target> {
        let name = report::config_name(properties);
        println!("\ne2e: configuration {name}");
        let idle = self.idle(properties).await?;
        let mut steps = Vec::new();
        for rate in rates {
            steps.push(self.step(properties, *rate).await?);
        }
        if search && self.args.max_rate > 0 {
            self.search(properties, &mut steps).await?;
        }
        Ok(Target::new(properties, steps, idle))
    }

    /// CPU each process uses while nothing is produced (percent of one core): the cost of
    /// fetching at idle.
    async fn idle(&mut self, properties: &str) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let secs = self.args.idle_secs;
        if secs == 0 {
            return Ok(Vec::new());
        }
        let pipeline = self.fresh(properties).await?;
        let pids = self.pids(&pipeline);
        let before: Vec<f64> = pids
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid))
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let idle: Vec<(&'static str, f64)> = pids
            .iter()
            .zip(before)
            .map(|((name, pid), before)| {
                (
                    *name,
                    (procs::cpu_seconds(*pid) - before) * 100.0 / secs as f64,
                )
            })
            .collect();
        let shown: Vec<String> = idle.iter().map(|(n, p)| format!("{n} {p:.1}%")).collect();
        println!("  idle for {secs} s, CPU of one core: {}", shown.join(", "));
        Ok(idle)
    }

    /// Upward ×1.5 from the highest good rate while steps are sustainable, then halving
    /// the gap between the highest good and the lowest bad rate (500/s resolution), at most
    /// `--search-steps` steps in all.
    async fn search(&mut self, properties: &str, steps: &mut Vec<Step>) -> anyhow::Result<()> {
        let round = |rate: f64| ((rate / 500.0).round() * 500.0).max(500.0) as u64;
        let good = |steps: &[Step]| steps.iter().filter(|s| s.sustainable).map(|s| s.rate).max();
        let bad = |steps: &[Step], above: u64| {
            steps
                .iter()
                .filter(|s| !s.sustainable && s.rate > above)
                .map(|s| s.rate)
                .min()
        };
        for _ in 0..self.args.search_steps {
            let best = good(steps).unwrap_or(0);
            let next = match bad(steps, best) {
                Some(failed) => {
                    let middle = round((best + failed) as f64 / 2.0);
                    if middle <= best || middle >= failed || steps.iter().any(|s| s.rate == middle)
                    {
                        break;
                    }
                    middle
                }
                None => round(best.max(1000) as f64 * 1.5),
            };
            if next > self.args.max_rate {
                break;
            }
            steps.push(self.step(properties, next).await?);
        }
        Ok(())
    }

    /// A fresh tansu with devstack's topics and a fresh ingest with `properties`, warmed up.
    /// Each step gets its own: tansu's memory storage slows down as it fills (its CPU per
    /// record grew about fourfold over 150 000 records here), which would make a step's
    /// figures depend on the steps before it.
    async fn fresh(&mut self, properties: &str) -> anyhow::Result<Pipeline> {
        let pipeline = self.pipeline(properties).await?;
        self.warm_up(&pipeline).await?;
        Ok(pipeline)
    }

    async fn pipeline(&self, properties: &str) -> anyhow::Result<Pipeline> {
        let (tansu, bootstrap) = procs::start_tansu(&self.args.tansu, &self.log_dir).await?;
        devstack::kafka::create_topics(&bootstrap).await?;
        let env = procs::IngestEnv {
            bootstrap: &bootstrap,
            database_url: &self.database_url,
            redis_url: &self.redis_url,
            prefix: &self.prefix,
            kafka_properties: properties,
        };
        let (ingest, ingest_admin) =
            procs::start_ingest(&self.bins.ingest, &env, &self.log_dir).await?;
        let producer = devstack::kafka::producer(&bootstrap)?;
        Ok(Pipeline {
            tansu,
            ingest,
            ingest_admin,
            producer,
        })
    }

    fn take_seqs(&mut self, count: usize) -> anyhow::Result<std::ops::Range<usize>> {
        let seqs = self.next_seq..self.next_seq + count;
        anyhow::ensure!(
            seqs.end <= self.tracker.capacity(),
            "the run would pass {} events",
            self.tracker.capacity()
        );
        self.next_seq = seqs.end;
        Ok(seqs)
    }

    /// One event per user, until all have arrived (the consumer group forms meanwhile).
    async fn warm_up(&mut self, pipeline: &Pipeline) -> anyhow::Result<()> {
        let started = Instant::now();
        let seqs = self.take_seqs(self.users.len())?;
        let rate = 200.0;
        load::produce(
            &pipeline.producer,
            &self.tracker,
            &self.users,
            seqs.clone(),
            rate,
        )
        .await?;
        let expected = seqs.len();
        let all = wait_for(&self.tracker, seqs, expected, WARM_UP_TIMEOUT).await;
        anyhow::ensure!(
            all,
            "warm-up: not every event arrived within {WARM_UP_TIMEOUT:?} (logs in {})",
            self.log_dir.display()
        );
        let took = started.elapsed();
        if took > Duration::from_secs(10) {
            println!("  (warm-up took {:.1} s)", took.as_secs_f64());
        }
        tokio::time::sleep(BETWEEN_STEPS).await;
        Ok(())
    }

    /// One step at `rate` events/s on a fresh pipeline.
    async fn step(&mut self, properties: &str, rate: u64) -> anyhow::Result<Step> {
        let pipeline = self.fresh(properties).await?;
        let pipeline = &pipeline;
        let seqs = self.take_seqs((rate * self.args.step_secs) as usize)?;
        let pids = self.pids(pipeline);
        let cpu_before: Vec<f64> = pids
            .iter()
            .map(|(_, pid)| procs::cpu_seconds(*pid))
            .collect();
        let ingest_before = prom::scrape(&pipeline.ingest_admin).await;
        let gateway_before = prom::scrape(&self.gateway_admin).await;
        let duplicates_before = self.tracker.duplicates.load(Ordering::Relaxed);

        let produced = load::produce(
            &pipeline.producer,
            &self.tracker,
            &self.users,
            seqs.clone(),
            rate as f64,
        )
        .await?;
        let expected = produced.sent - produced.failed;
        let drain_started = Instant::now();
        wait_for(
            &self.tracker,
            seqs.clone(),
            expected,
            Duration::from_secs(self.args.drain_secs),
        )
        .await;
        let drained = drain_started.elapsed();

        let cpu: Vec<(&'static str, f64)> = pids
            .iter()
            .zip(cpu_before)
            .map(|((name, pid), before)| (*name, procs::cpu_seconds(*pid) - before))
            .collect();
        let ingest = prom::Histogram::parse(
            &prom::scrape(&pipeline.ingest_admin).await,
            report::INGEST_HISTOGRAM,
        )
        .since(&prom::Histogram::parse(
            &ingest_before,
            report::INGEST_HISTOGRAM,
        ));
        let gateway = prom::Histogram::parse(
            &prom::scrape(&self.gateway_admin).await,
            report::GATEWAY_HISTOGRAM,
        )
        .since(&prom::Histogram::parse(
            &gateway_before,
            report::GATEWAY_HISTOGRAM,
        ));
        let latencies = self.tracker.latencies(seqs.clone());
        let mut step = Step::new(rate, &produced, &latencies, self.args.p99_bound_ms);
        step.duplicates = self.tracker.duplicates.load(Ordering::Relaxed) - duplicates_before;
        step.drain = drained;
        step.ingest = ingest;
        step.gateway = gateway;
        step.cpu = cpu;
        println!("{}", step.line());
        Ok(step)
    }

    /// The processes whose CPU a step reports.
    fn pids(&self, pipeline: &Pipeline) -> Vec<(&'static str, u32)> {
        let mut pids = vec![
            ("ingest", pipeline.ingest.pid()),
            ("gateway", self.gateway.pid()),
            ("tansu", pipeline.tansu.pid()),
            ("bench", std::process::id()),
        ];
        for (name, comm) in [("mariadb", "mariadbd"), ("redis", "redis-server")] {
            if let Some(pid) = procs::pid_of(comm) {
                pids.push((name, pid));
            }
        }
        pids
    }
}

/// Waits until `expected` events of `seqs` arrived, at most `timeout`; whether they did.
async fn wait_for(
    tracker: &Tracker,
    seqs: std::ops::Range<usize>,
    expected: usize,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if tracker.delivered(seqs.clone()) >= expected {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
