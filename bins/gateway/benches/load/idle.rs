//! Idle phase: sessions opened by worker processes and held; the server's RSS before and
//! after gives the memory one idle session costs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Kind;
use crate::process::rss_kib;
use crate::results::round2;
use crate::workers::{start_workers, stop_workers};

/// What one idle measurement found.
pub struct Idle {
    pub sessions: usize,
    pub opened_secs: f64,
    /// The server's RSS before the sessions opened (for a fresh gateway: its RSS at start).
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kb_per_session: f64,
}

impl Idle {
    pub fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "opened_secs": round2(self.opened_secs),
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "kb_per_session": round2(self.kb_per_session),
        })
    }
}

/// Idle-session cost on the server `pid`: KB of RSS per session, `settle` after the last
/// session opened.
pub async fn measure_idle(
    pid: u32,
    url: &str,
    kind: Kind,
    total: usize,
    settle: Duration,
) -> anyhow::Result<Idle> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let workers = start_workers(url, kind, total, false)?;
    let opened_in = started.elapsed();
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid);
    let per_session = after.saturating_sub(before) as f64 * 1.024 / total as f64;
    println!(
        "idle {kind:?}: {total} sessions in {:.1}s; server RSS {before} KiB -> {after} KiB: {per_session:.1} KB per session",
        opened_in.as_secs_f64()
    );
    stop_workers(workers.into_iter().map(|w| w.child));
    Ok(Idle {
        sessions: total,
        opened_secs: opened_in.as_secs_f64(),
        rss_before_kib: before,
        rss_after_kib: after,
        kb_per_session: per_session,
    })
}
