//! The ingest instances of one consumer group as a case runs them: the first (always
//! there: restarted when killed or when it exits on its own) and the second (between its
//! join and its leave); SIGKILL and restart, SIGTERM, and what happened to them.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::Ctx;
use super::launch::{IngestSpec, Instance};
use super::observe::Peaks;
use super::report::say;

/// A SIGTERMed instance drains for at most two shutdown deadlines (20 s each).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Which of the two instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    First,
    Second,
}

/// The case's ingest instances: the first (always there), the second (between its join
/// and its leave), and what happened to them.
pub struct Group<'a> {
    ctx: &'a Ctx,
    spec: &'a IngestSpec,
    peaks: &'a Peaks,
    pub first: Option<Instance>,
    pub second: Option<Instance>,
    /// Instances started so far (names them: a1, a2, b3, ...).
    started: usize,
    /// When each SIGKILL was sent.
    pub kills: Vec<Instant>,
    /// The longest restart after a kill (spawn to admin listener up).
    pub longest_restart: Duration,
    /// How the second instance exited on SIGTERM.
    pub leave_status: Option<ExitStatus>,
    /// Instances that exited without being told to, with their status.
    pub early_exits: Vec<String>,
}

impl<'a> Group<'a> {
    pub fn new(ctx: &'a Ctx, spec: &'a IngestSpec, peaks: &'a Peaks) -> Group<'a> {
        Group {
            ctx,
            spec,
            peaks,
            first: None,
            second: None,
            started: 0,
            kills: Vec::new(),
            longest_restart: Duration::ZERO,
            leave_status: None,
            early_exits: Vec::new(),
        }
    }

    fn slot(&mut self, role: Role) -> &mut Option<Instance> {
        match role {
            Role::First => &mut self.first,
            Role::Second => &mut self.second,
        }
    }

    pub async fn start(&mut self, role: Role) -> anyhow::Result<Duration> {
        self.started += 1;
        let letter = if role == Role::First { 'a' } else { 'b' };
        let name = format!("{letter}{}", self.started);
        let began = Instant::now();
        let instance = Instance::start(&self.ctx.launcher, self.spec, &name).await?;
        self.peaks.watch(instance.pid());
        say(&format!("started ingest {name}"));
        *self.slot(role) = Some(instance);
        Ok(began.elapsed())
    }

    /// SIGKILLs one live instance (chosen at random) and starts its successor.
    pub async fn kill_one(&mut self, rng: &mut StdRng) -> anyhow::Result<()> {
        let live: Vec<Role> = [Role::First, Role::Second]
            .into_iter()
            .filter(|r| match r {
                Role::First => self.first.is_some(),
                Role::Second => self.second.is_some(),
            })
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let role = live[rng.random_range(0..live.len())];
        let Some(mut victim) = self.slot(role).take() else {
            return Ok(());
        };
        victim.kill();
        self.kills.push(Instant::now());
        self.peaks.unwatch(victim.pid());
        say(&format!("SIGKILLed ingest {}", victim.name));
        drop(victim);
        let took = self.start(role).await?;
        self.longest_restart = self.longest_restart.max(took);
        Ok(())
    }

    /// SIGTERM to the second instance; waits for its exit.
    pub async fn leave(&mut self) -> anyhow::Result<()> {
        if let Some(mut second) = self.second.take() {
            let status = second.stop(STOP_TIMEOUT).await?;
            say(&format!("ingest {} left ({status})", second.name));
            self.peaks.unwatch(second.pid());
            self.leave_status = Some(status);
        }
        Ok(())
    }

    /// Starts a new first instance when the last one exited on its own (as a supervisor
    /// would restart a pod).
    pub async fn revive(&mut self) -> anyhow::Result<()> {
        if self.first.is_none() {
            self.start(Role::First).await?;
        }
        Ok(())
    }

    /// Notes every instance that exited without being told to.
    pub fn check_exits(&mut self) {
        for role in [Role::First, Role::Second] {
            let exited = self
                .slot(role)
                .as_mut()
                .and_then(|i| Some((i.name.clone(), i.exited()?)));
            if let Some((name, status)) = exited {
                self.early_exits.push(format!("{name}: {status}"));
                *self.slot(role) = None;
            }
        }
    }
}
