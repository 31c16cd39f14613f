//! Broadcast fan-out, off the relay task: the relay snapshots a broadcast channel's
//! sessions and queues the message here (at most `FANOUT_QUEUE` pending; a broadcast that
//! finds the queue full is dropped and counted, so the relay never waits and personal
//! notifications keep flowing). A session whose queue is full is dropped as a slow
//! consumer, as on its own channel.
//!
//! The hand-off is paced: at most `IN_FLIGHT` broadcast deliveries are handed to sessions
//! and not yet written to their send buffers. Each one runs a session task (and its
//! transport's), so without the bound one time deal to 20 000 sessions would make 20 000
//! tasks runnable at once, and a personal notification's session would wait behind all of
//! them. With it, a personal notification waits behind at most `IN_FLIGHT` of them; the
//! broadcast takes the same CPU, spread out. A delivery stuck at a stalled client (its
//! send buffer full until the send timeout closes it) holds its place for at most
//! `STUCK_WAIT`; then the window moves on without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Delivery, Hub};
use crate::queue;

/// Broadcasts waiting for the fan-out task.
pub(super) const FANOUT_QUEUE: usize = 16;
/// Broadcast deliveries handed to sessions and not yet in their send buffers.
const IN_FLIGHT: usize = 128;
/// How long the fan-out waits for the window to open before it counts what is in it as
/// stuck and opens a new one.
const STUCK_WAIT: Duration = Duration::from_millis(20);

/// One broadcast and the sessions listening when it arrived.
pub(super) struct Job {
    pub delivery: Delivery,
    pub sessions: Vec<(u64, queue::Sender<Delivery>)>,
}

/// Counts the broadcast deliveries in flight.
#[derive(Default)]
pub(super) struct Window {
    in_flight: AtomicUsize,
    written: Notify,
}

/// A broadcast delivery's place in the window, given back when the session has written it
/// (or dropped it). Cloning takes another place.
#[derive(Debug)]
pub struct Place(Arc<Window>);

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Place {
    fn take(window: &Arc<Window>) -> Place {
        window.in_flight.fetch_add(1, Ordering::Relaxed);
        Place(window.clone())
    }
}

impl Clone for Place {
    fn clone(&self) -> Place {
        Place::take(&self.0)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
        self.0.written.notify_one();
    }
}

pub(super) async fn run(hub: Hub, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let window = Arc::new(Window::default());
    loop {
        let job = tokio::select! {
            _ = shutdown.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let started = Instant::now();
        let mut delivery = job.delivery;
        delivery.place = Some(Place::take(&window));
        // Places the window counts as stuck (at stalled clients) for this broadcast.
        let mut stuck = 0;
        for (id, sender) in job.sessions {
            if full(&window, stuck) {
                stuck = wait_for_room(&window, stuck, &shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
            match sender.try_send(delivery.clone()) {
                Ok(()) => hub.metrics.broadcast_deliveries.inc(),
                Err(queue::SendError::Full(_)) => {
                    drop(sender);
                    hub.drop_slow(id);
                }
                Err(queue::SendError::Closed(_)) => {}
            }
        }
        drop(delivery);
        hub.metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Whether the window has no free place: it holds the running job's own place, the
/// deliveries in flight and `stuck` ones.
fn full(window: &Window, stuck: usize) -> bool {
    window.in_flight.load(Ordering::Acquire) > IN_FLIGHT + stuck
}

/// Waits until a place in the window is free; after `STUCK_WAIT` without one, counts the
/// window's current content as stuck and returns the new count.
async fn wait_for_room(window: &Window, stuck: usize, shutdown: &CancellationToken) -> usize {
    let deadline = tokio::time::Instant::now() + STUCK_WAIT;
    loop {
        let written = window.written.notified();
        if !full(window, stuck) {
            return stuck;
        }
        tokio::select! {
            _ = written => {}
            _ = tokio::time::sleep_until(deadline) => {
                return window.in_flight.load(Ordering::Acquire).saturating_sub(1);
            }
            _ = shutdown.cancelled() => return stuck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_count_clones_and_drops() {
        let window = Arc::new(Window::default());
        let first = Place::take(&window);
        let second = first.clone();
        assert_eq!(window.in_flight.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(window.in_flight.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(window.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_for_a_write_or_counts_the_stuck_after_a_while() {
        let window = Arc::new(Window::default());
        let shutdown = CancellationToken::new();
        // The job's own place plus IN_FLIGHT handed out: full.
        let mut places: Vec<Place> = (0..=IN_FLIGHT).map(|_| Place::take(&window)).collect();
        let started = tokio::time::Instant::now();
        let waiter = {
            let window = window.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { wait_for_room(&window, 0, &shutdown).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(places.pop());
        assert_eq!(waiter.await.unwrap(), 0, "a write opens the window");
        assert!(started.elapsed() < STUCK_WAIT);

        // Nothing is written: after STUCK_WAIT the content counts as stuck.
        let _full: Vec<Place> = (0..1).map(|_| Place::take(&window)).collect();
        let started = tokio::time::Instant::now();
        let stuck = wait_for_room(&window, 0, &shutdown).await;
        assert_eq!(stuck, IN_FLIGHT);
        assert!(started.elapsed() >= STUCK_WAIT);
    }
}
