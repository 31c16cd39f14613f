//! Records received from Kafka and not yet handed to the store stage, in arrival order.
//!
//! The buffer holds about one batch: once it is full the run loop stops taking records, and
//! if the store stage stays busy (an outage) it pauses fetching and keeps polling. Records
//! that arrive while a pause takes effect are still appended (never dropped: the consumer's
//! position is already past them), so the buffer may briefly exceed the batch size.
//! Records of revoked partitions are forgotten: their new owner consumes them from the
//! last committed offset.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::record::Record;

/// The records waiting for the store stage.
#[derive(Debug)]
pub struct Pending {
    records: VecDeque<(Instant, Record)>,
    batch_size: usize,
    linger: Duration,
    full_since: Option<Instant>,
}

impl Pending {
    /// A buffer for batches of `batch_size` records; a partial batch is due `linger` after
    /// its oldest record arrived.
    pub fn new(batch_size: usize, linger: Duration) -> Self {
        Pending {
            records: VecDeque::with_capacity(batch_size),
            batch_size: batch_size.max(1),
            linger,
            full_since: None,
        }
    }

    pub fn push(&mut self, record: Record, now: Instant) {
        self.records.push_back((now, record));
        self.note_fullness(now);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether a whole batch is waiting (the run loop takes no more records).
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.batch_size
    }

    /// Since when the buffer has been full.
    pub fn full_since(&self) -> Option<Instant> {
        self.full_since
    }

    /// When the next batch is due: at once when full, `linger` after the oldest record
    /// otherwise, never when empty.
    pub fn due(&self) -> Option<Instant> {
        if self.is_full() {
            return self.full_since;
        }
        self.records.front().map(|(at, _)| *at + self.linger)
    }

    /// Takes the next batch (up to the batch size, oldest first).
    pub fn take_batch(&mut self, now: Instant) -> Vec<Record> {
        let n = self.records.len().min(self.batch_size);
        let batch = self.records.drain(..n).map(|(_, record)| record).collect();
        self.note_fullness(now);
        batch
    }

    /// Forgets the records of `revoked` partitions; returns how many were dropped.
    pub fn forget(&mut self, revoked: &[(String, i32)], now: Instant) -> usize {
        let before = self.records.len();
        self.records.retain(|(_, r)| {
            !revoked
                .iter()
                .any(|(topic, partition)| *topic == r.topic && *partition == r.partition)
        });
        self.note_fullness(now);
        before - self.records.len()
    }

    fn note_fullness(&mut self, now: Instant) {
        match (self.is_full(), self.full_since) {
            (true, None) => self.full_since = Some(now),
            (false, Some(_)) => self.full_since = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(5);

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value: None,
        }
    }

    fn offsets(batch: &[Record]) -> Vec<(i32, i64)> {
        batch.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn a_partial_batch_is_due_after_the_linger_and_a_full_one_at_once() {
        let start = Instant::now();
        let mut pending = Pending::new(3, LINGER);
        assert_eq!(pending.due(), None);
        pending.push(record(0, 0), start);
        pending.push(record(0, 1), start + LINGER / 2);
        assert_eq!(pending.due(), Some(start + LINGER));
        assert!(!pending.is_full());

        let later = start + LINGER / 2 + Duration::from_millis(1);
        pending.push(record(0, 2), later);

        assert!(pending.is_full());
        assert_eq!(pending.full_since(), Some(later));
        assert_eq!(pending.due(), Some(later));
    }

    #[test]
    fn batches_keep_arrival_order_and_the_rest_stays() {
        let now = Instant::now();
        let mut pending = Pending::new(2, LINGER);
        for offset in 0..5 {
            pending.push(record(0, offset), now);
        }
        assert_eq!(offsets(&pending.take_batch(now)), [(0, 0), (0, 1)]);
        assert!(pending.is_full(), "3 records are still more than a batch");
        assert_eq!(offsets(&pending.take_batch(now)), [(0, 2), (0, 3)]);
        assert!(!pending.is_full());
        assert_eq!(pending.full_since(), None);
        assert_eq!(offsets(&pending.take_batch(now)), [(0, 4)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn revoked_partitions_are_forgotten_and_the_others_keep_their_order() {
        let now = Instant::now();
        let mut pending = Pending::new(4, LINGER);
        for (partition, offset) in [(0, 10), (1, 20), (0, 11), (2, 30)] {
            pending.push(record(partition, offset), now);
        }
        assert!(pending.is_full());

        let dropped = pending.forget(&[("t".into(), 0), ("other".into(), 1)], now);

        assert_eq!(dropped, 2);
        assert!(!pending.is_full());
        assert_eq!(pending.full_since(), None);
        assert_eq!(offsets(&pending.take_batch(now)), [(1, 20), (2, 30)]);
    }
}
