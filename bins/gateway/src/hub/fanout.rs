//! Broadcast fan-out, off the relay task: the relay snapshots a broadcast channel's
//! sessions and queues the message here (at most `FANOUT_QUEUE` pending), so personal
//! notifications keep flowing while tens of thousands of sessions get a time deal. A
//! session whose queue is full is dropped as a slow consumer, as on its own channel.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Hub};
use crate::queue;

/// Broadcasts waiting for the fan-out task.
pub(super) const FANOUT_QUEUE: usize = 64;
/// Sessions served between two yields, so one broadcast does not hold a worker thread.
const BATCH: usize = 1024;

/// One broadcast and the sessions listening when it arrived.
pub(super) struct Job {
    pub delivery: Delivery,
    pub sessions: Vec<(u64, queue::Sender<Delivery>)>,
}

pub(super) async fn run(hub: Hub, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let started = Instant::now();
        for (n, (id, sender)) in job.sessions.into_iter().enumerate() {
            match sender.try_send(job.delivery.clone()) {
                Ok(()) => hub.metrics.broadcast_deliveries.inc(),
                Err(queue::SendError::Full(_)) => {
                    drop(sender);
                    hub.drop_slow(id);
                }
                Err(queue::SendError::Closed(_)) => {}
            }
            if n % BATCH == BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
        hub.metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}
