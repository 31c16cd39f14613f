//! A small bounded queue for the per-session paths (client → engine, hub → engine,
//! engine → transport), where tens of thousands of idle sessions each hold three of them.
//!
//! A tokio mpsc channel allocates a 32-slot block and a cache-padded channel up front
//! (about 1.2 KiB per channel); this one is a mutex-guarded `VecDeque` that allocates only
//! what it holds. Its bound is a budget: each item costs what `cost` says (1 per message,
//! or its bytes), and a sender waits while the queue's cost would exceed the limit. An item
//! costing more than the whole limit is accepted into an empty queue. Many senders, one
//! receiver; the receiver sees `None` once every sender is gone and the queue is empty.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    cost: usize,
    senders: usize,
    receiver: bool,
    /// A sender found no room and waits: the receiver must wake it.
    blocked: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    limit: usize,
    cost: fn(&T) -> usize,
    /// The receiver waits here for items (or for the last sender to go).
    readable: Notify,
    /// Senders wait here for room (or for the receiver to go).
    writable: Notify,
}

/// Why an item was not queued; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// No room (`try_send`), or none within the timeout (`send_timeout`).
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

pub struct Sender<T>(Arc<Shared<T>>);
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `limit` cost units.
pub fn bounded<T>(limit: usize, cost: fn(&T) -> usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            cost: 0,
            senders: 1,
            receiver: true,
            blocked: false,
        }),
        limit: limit.max(1),
        cost,
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// One unit per item.
pub fn one<T>(_: &T) -> usize {
    1
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Sender<T> {
    /// Queues `item` if it fits now.
    pub fn try_send(&self, item: T) -> Result<(), SendError<T>> {
        let shared = &*self.0;
        let mut state = shared.lock();
        if !state.receiver {
            return Err(SendError::Closed(item));
        }
        let cost = (shared.cost)(&item);
        if !state.items.is_empty() && state.cost + cost > shared.limit {
            state.blocked = true;
            return Err(SendError::Full(item));
        }
        state.cost += cost;
        state.items.push_back(item);
        drop(state);
        shared.readable.notify_one();
        Ok(())
    }

    /// Queues `item` whatever the budget (a close marker, say), unless the receiver is gone.
    pub fn force_send(&self, item: T) -> Result<(), SendError<T>> {
        let shared = &*self.0;
        let mut state = shared.lock();
        if !state.receiver {
            return Err(SendError::Closed(item));
        }
        state.cost += (shared.cost)(&item);
        state.items.push_back(item);
        drop(state);
        shared.readable.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room as long as it takes.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.send_until(item, None).await
    }

    /// Queues `item`, waiting for room at most `timeout`.
    pub async fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), SendError<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.send_until(item, Some(deadline)).await
    }

    async fn send_until(
        &self,
        item: T,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), SendError<T>> {
        // Most sends find room: no waiter is registered for them.
        let mut item = match self.try_send(item) {
            Err(SendError::Full(back)) => back,
            done => return done,
        };
        loop {
            let mut room = pin!(self.0.writable.notified());
            room.as_mut().enable();
            match self.try_send(item) {
                Err(SendError::Full(back)) => item = back,
                done => return done,
            }
            match deadline {
                None => room.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, room).await.is_err() {
                        return self.try_send(item);
                    }
                }
            }
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.0.lock().receiver
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.readable.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// Takes the next item now, if there is one.
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.take()
    }

    /// The next item; `None` once every sender is gone and nothing is left. Cancel-safe.
    pub async fn recv(&mut self) -> Option<T> {
        let shared = &*self.0;
        if let Some(item) = shared.take() {
            return Some(item);
        }
        loop {
            let mut ready = pin!(shared.readable.notified());
            ready.as_mut().enable();
            if let Some(item) = shared.take() {
                return Some(item);
            }
            if shared.lock().senders == 0 {
                return None;
            }
            ready.await;
        }
    }
}

impl<T> Shared<T> {
    fn take(&self) -> Option<T> {
        let shared = self;
        let mut state = shared.lock();
        let item = state.items.pop_front()?;
        state.cost = state.cost.saturating_sub((shared.cost)(&item));
        if state.items.is_empty() && state.items.capacity() > 16 {
            // Give back what a burst took; idle sessions hold nothing.
            state.items.shrink_to(0);
        }
        let wake = std::mem::take(&mut state.blocked);
        drop(state);
        if wake {
            shared.writable.notify_waiters();
        }
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        let items = std::mem::take(&mut state.items);
        drop(state);
        drop(items);
        self.0.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn order_budget_and_closing() {
        let (tx, mut rx) = bounded::<String>(8, |text| text.len());
        tx.try_send("12345".into()).unwrap();
        assert_eq!(
            tx.try_send("6789".into()),
            Err(SendError::Full("6789".into()))
        );
        tx.try_send("678".into()).unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("12345"));
        tx.try_send("abcde".into()).unwrap();
        assert_eq!(rx.try_recv().as_deref(), Some("678"));
        assert_eq!(rx.try_recv().as_deref(), Some("abcde"));
        // Larger than the whole budget: accepted into an empty queue only.
        tx.try_send("x".repeat(20)).unwrap();
        assert!(matches!(tx.try_send("y".into()), Err(SendError::Full(_))));
        tx.force_send("close".into()).unwrap();
        let other = tx.clone();
        drop(tx);
        assert_eq!(rx.recv().await.map(|s| s.len()), Some(20));
        assert_eq!(rx.recv().await.as_deref(), Some("close"));
        drop(other);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn senders_wait_for_room_and_time_out() {
        let (tx, mut rx) = bounded::<u32>(2, one);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            tx.send_timeout(3, Duration::from_secs(10)).await,
            Err(SendError::Full(3))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let waiting = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(rx.recv().await, Some(1));
        let tx = waiting.await.unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        drop(rx);
        assert_eq!(tx.send(4).await, Err(SendError::Closed(4)));
        assert!(tx.is_closed());
    }
}

#[cfg(test)]
mod stress {
    use super::*;

    /// Producers on other threads, a consumer that gives up its wait half the time (as a
    /// `select!` does): every item arrives, in order per producer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_lost_across_threads() {
        let (tx, mut rx) = bounded::<(usize, usize)>(8, one);
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..20_000 {
                        tx.send((p, i)).await.unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0usize; 3];
        let mut tick = tokio::time::interval(Duration::from_micros(50));
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some((p, i)) => {
                        assert_eq!(i, next[p]);
                        next[p] += 1;
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
        }
        for p in producers {
            p.await.unwrap();
        }
        assert_eq!(next, [20_000; 3]);
    }
}
