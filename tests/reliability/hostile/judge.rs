//! How the hostile case judges an attack: the [`Verdict`] the attack itself returns (its
//! refusals and what else it saw), and the [`Gauge`] sampling the gateway's memory and
//! descriptors around it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::super::report::shown;
use super::traffic::ms;
use super::{REAL_USER_BOUND, SAMPLE_EVERY, wire};

/// What one attack found: how many of its attempts got the expected refusal, what else
/// it saw, and what went wrong.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub attempts: usize,
    pub refused: usize,
    /// What `refused` counts, in the report ("refused" unless said otherwise).
    pub counted: &'static str,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn new(attempts: usize) -> Verdict {
        Verdict {
            attempts,
            counted: "refused",
            ..Verdict::default()
        }
    }

    pub(super) fn broken(why: String) -> Verdict {
        Verdict {
            failures: vec![why],
            counted: "refused",
            ..Verdict::default()
        }
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// An unexpected outcome (the first few are kept).
    pub fn fail(&mut self, what: String) {
        if self.failures.len() < 4 {
            self.failures.push(what);
        }
    }

    /// An ERROR frame whose message contains `expected`, then the close.
    pub fn expect_error(
        &mut self,
        what: &str,
        outcome: anyhow::Result<Result<(String, bool), String>>,
        expected: &str,
    ) {
        let what: String = what.chars().take(60).collect();
        match outcome {
            Ok(Ok((message, true))) if message.contains(expected) => self.refused += 1,
            Ok(Ok((message, closed))) => self.fail(format!(
                "{what:?}: ERROR {message:?}{}",
                if closed { "" } else { ", not closed" }
            )),
            Ok(Err(other)) => self.fail(format!("{what:?}: {other}")),
            Err(err) => self.fail(format!("{what:?}: {err:#}")),
        }
    }

    /// The spec's error envelope with `status` and `code`.
    pub fn expect_envelope(&mut self, what: &str, answer: &wire::Answer, status: u16, code: &str) {
        match super::super::rest::envelope_error(answer) {
            Ok((s, c)) if s == status && c == code => self.refused += 1,
            Ok((s, c)) => self.fail(format!("{what}: {s} {c}")),
            Err(why) => self.fail(format!("{what}: {why}")),
        }
    }

    /// A real user connected meanwhile, within [`REAL_USER_BOUND`].
    pub fn real_user(&mut self, took: anyhow::Result<Duration>) {
        match took {
            Ok(took) => {
                self.note(format!("a real user in {} ms", shown(ms(took))));
                if took > REAL_USER_BOUND {
                    self.fail(format!("the real user took {} ms", shown(ms(took))));
                }
            }
            Err(err) => self.fail(format!("the real user: {err:#}")),
        }
    }
}

/// The gateway's resident memory (MiB) and open descriptors, sampled.
pub struct Gauge {
    samples: Arc<Mutex<Vec<(Instant, f64, usize)>>>,
    task: JoinHandle<()>,
}

impl Gauge {
    pub(super) fn start(pid: u32) -> Gauge {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let rss = devstack::procs::rss_bytes(pid).unwrap_or(0) as f64 / 1024.0 / 1024.0;
                let fds = devstack::procs::open_fds(pid).unwrap_or(0);
                sink.lock().expect("gauge").push((
                    Instant::now(),
                    (rss * 10.0).round() / 10.0,
                    fds,
                ));
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Gauge { samples, task }
    }

    /// The latest sample.
    pub(super) fn now(&self) -> (f64, usize) {
        let samples = self.samples.lock().expect("gauge");
        samples.last().map_or((0.0, 0), |(_, r, f)| (*r, *f))
    }

    /// The highest values sampled within `from..=to`.
    pub(super) fn peak(&self, from: Instant, to: Instant) -> (f64, usize) {
        self.samples
            .lock()
            .expect("gauge")
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to)
            .fold((0.0, 0), |(r, f), (_, rss, fds)| (r.max(*rss), f.max(*fds)))
    }

    pub(super) fn peak_all(&self) -> (f64, usize) {
        self.samples
            .lock()
            .expect("gauge")
            .iter()
            .fold((0.0, 0), |(r, f), (_, rss, fds)| (r.max(*rss), f.max(*fds)))
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.task.abort();
    }
}
