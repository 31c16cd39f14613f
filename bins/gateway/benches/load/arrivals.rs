//! Who got which broadcast, when: each session's reader records time-deal arrivals in a
//! [`Tally`] (a worker process prints a line per broadcast once all its sessions have it)
//! and personal notifications' latencies in [`Personal`]; the [`Fleet`] adds the workers'
//! lines to this process's tally.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::client::{Kind, TIMEDEALS, Ws, next_text};
use crate::process::now_micros;
use crate::workers::Worker;

/// Arrivals of one broadcast at a group of sessions (wall-clock µs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Arrival {
    pub received: usize,
    pub first_us: u64,
    pub last_us: u64,
}

impl Arrival {
    fn merge(&mut self, other: Arrival) {
        if other.received == 0 {
            return;
        }
        if self.received == 0 || other.first_us < self.first_us {
            self.first_us = other.first_us;
        }
        self.last_us = self.last_us.max(other.last_us);
        self.received += other.received;
    }
}

/// Each broadcast's arrivals at a group of sessions. A worker's tally prints a broadcast's
/// line once every session still open has it.
pub struct Tally {
    sessions: usize,
    closed: usize,
    /// By broadcast `seq`.
    seqs: Vec<Arrival>,
    report: bool,
    reported: Vec<bool>,
}

impl Tally {
    pub fn new(sessions: usize, report: bool) -> Tally {
        Tally {
            sessions,
            closed: 0,
            seqs: Vec::new(),
            report,
            reported: Vec::new(),
        }
    }

    fn complete(&self, seq: usize) -> bool {
        let received = self.seqs.get(seq).map_or(0, |a| a.received);
        received + self.closed >= self.sessions
    }

    fn arrived(&mut self, seq: usize, at_us: u64) {
        if self.seqs.len() <= seq {
            self.seqs.resize(seq + 1, Arrival::default());
            self.reported.resize(seq + 1, false);
        }
        self.seqs[seq].merge(Arrival {
            received: 1,
            first_us: at_us,
            last_us: at_us,
        });
        self.report_complete(seq);
    }

    fn closed(&mut self) {
        self.closed += 1;
        for seq in 0..self.seqs.len() {
            self.report_complete(seq);
        }
    }

    fn report_complete(&mut self, seq: usize) {
        if self.report && !self.reported[seq] && self.complete(seq) {
            self.reported[seq] = true;
            let a = self.seqs[seq];
            println!("seq {seq} {} {} {}", a.received, a.first_us, a.last_us);
        }
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Personal notifications received here, and their publish→receive latencies (µs).
#[derive(Default)]
pub struct Personal {
    pub received: AtomicU64,
    pub latencies: Mutex<Vec<u64>>,
}

/// The number after `key` in `body` (`"t":123`).
fn number(body: &str, key: &str) -> Option<u64> {
    let rest = &body[body.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads one session: broadcasts go to `tally`, personal notifications to `personal`.
pub fn listen(
    mut ws: Ws,
    tally: Arc<Mutex<Tally>>,
    personal: Option<Arc<Personal>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let broadcast_header = format!("destination:{TIMEDEALS}");
        while let Ok(text) = next_text(&mut ws, Kind::Raw).await {
            let at = now_micros();
            let mut latencies = Vec::new();
            // Frames queued together arrive in one WebSocket message.
            for frame in text.split('\0') {
                let Some((head, body)) = frame.split_once("\n\n") else {
                    continue;
                };
                if !head.trim_start_matches('\n').starts_with("MESSAGE") {
                    continue;
                }
                if head.lines().any(|line| line == broadcast_header) {
                    if let Some(seq) = number(body, "\"seq\":") {
                        lock(&tally).arrived(seq as usize, at);
                    }
                } else if let Some(t) = number(body, "\"t\":") {
                    latencies.push(at.saturating_sub(t));
                }
            }
            if let Some(personal) = &personal {
                let n = latencies.len() as u64;
                lock(&personal.latencies).append(&mut latencies);
                personal.received.fetch_add(n, Ordering::Relaxed);
            }
        }
        lock(&tally).closed();
    })
}

/// Worker side: reads `sessions`, printing `seq <n> <received> <first µs> <last µs>` once
/// every open session has broadcast `n`.
pub fn listen_reporting(sessions: Vec<Ws>) -> Vec<JoinHandle<()>> {
    let tally = Arc::new(Mutex::new(Tally::new(sessions.len(), true)));
    sessions
        .into_iter()
        .map(|ws| listen(ws, tally.clone(), None))
        .collect()
}

/// The sessions of the phase: this process's tally and the workers' reports.
pub struct Fleet {
    own: Arc<Mutex<Tally>>,
    /// Each worker's line per broadcast `seq`.
    reports: Arc<Mutex<HashMap<usize, Vec<Arrival>>>>,
    pub children: Vec<Child>,
}

impl Fleet {
    pub fn watch(own: Arc<Mutex<Tally>>, workers: Vec<Worker>) -> Fleet {
        let reports: Arc<Mutex<HashMap<usize, Vec<Arrival>>>> = Arc::default();
        let mut children = Vec::new();
        for Worker { child, lines } in workers {
            children.push(child);
            let reports = reports.clone();
            std::thread::spawn(move || {
                for line in lines.lines().map_while(Result::ok) {
                    let fields: Vec<u64> = line
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|f| f.parse().ok())
                        .collect();
                    if let [seq, received, first_us, last_us] = fields[..] {
                        let arrival = Arrival {
                            received: received as usize,
                            first_us,
                            last_us,
                        };
                        lock(&reports)
                            .entry(seq as usize)
                            .or_default()
                            .push(arrival);
                    }
                }
            });
        }
        Fleet {
            own,
            reports,
            children,
        }
    }

    /// Broadcast `seq`'s arrivals so far, and whether every session has it.
    fn arrival(&self, seq: usize) -> (Arrival, bool) {
        let own = lock(&self.own);
        let mut arrival = own.seqs.get(seq).copied().unwrap_or_default();
        let mut complete = own.complete(seq);
        drop(own);
        let reports = lock(&self.reports);
        let lines = reports.get(&seq).map_or(&[][..], Vec::as_slice);
        for line in lines {
            arrival.merge(*line);
        }
        complete &= lines.len() == self.children.len();
        (arrival, complete)
    }

    pub async fn wait(&self, seq: usize, deadline: Instant) -> (Arrival, bool) {
        loop {
            let (arrival, complete) = self.arrival(seq);
            if complete || Instant::now() > deadline {
                return (arrival, complete);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn client_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        pids.push(std::process::id());
        pids
    }
}
