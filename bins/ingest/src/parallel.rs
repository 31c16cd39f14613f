//! How a batch is split into concurrent store transactions (`INGEST_STORE_PARALLELISM`).
//!
//! - A partition's records all go to one transaction, in offset order, so the ids of a
//!   partition's new rows follow its offsets.
//! - A dedup key is written by one transaction only: the one of its first record in the
//!   batch. A later record of that key from a partition of another transaction is held back
//!   and stored after the concurrent transactions have committed, in a last one that finds
//!   the key's row and reports the duplicate (or the replay of that record). Two concurrent
//!   transactions inserting the same new keys in different orders would deadlock, and the
//!   same event often arrives on two partitions (a producer that retried with another key).
//!
//! A held-back record makes a row of its own only when its key's first record made none
//! (the database refused that record's data, so it was dead-lettered); that row's id then
//! comes after those of its partition's later records in the batch.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use shared::notification::DedupKey;

/// Positions of a batch's inputs: one list per concurrent transaction (empty ones left
/// out), and the held-back inputs, each list in input order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub groups: Vec<Vec<usize>>,
    pub held_back: Vec<usize>,
}

/// Splits inputs, given as (topic, partition, dedup key) in batch order, over `groups`
/// concurrent transactions.
pub fn split<'a>(
    inputs: impl IntoIterator<Item = (&'a str, i32, DedupKey)>,
    groups: usize,
) -> Split {
    let groups = groups.max(1);
    let mut lists = vec![Vec::new(); groups];
    let mut held_back = Vec::new();
    let mut writer_of: HashMap<DedupKey, usize> = HashMap::new();
    for (position, (topic, partition, key)) in inputs.into_iter().enumerate() {
        let group = partition_group(topic, partition, groups);
        if *writer_of.entry(key).or_insert(group) == group {
            lists[group].push(position);
        } else {
            held_back.push(position);
        }
    }
    lists.retain(|list| !list.is_empty());
    Split {
        groups: lists,
        held_back,
    }
}

/// Which concurrent store transaction a partition's records go to.
fn partition_group(topic: &str, partition: i32, groups: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    (topic, partition).hash(&mut hasher);
    (hasher.finish() % groups as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DedupKey {
        [n; 32]
    }

    /// Two partitions that land in different groups of two.
    fn two_partitions_in_different_groups() -> (i32, i32) {
        let first = partition_group("t", 0, 2);
        let other = (1..100)
            .find(|p| partition_group("t", *p, 2) != first)
            .expect("some partition hashes to the other group");
        (0, other)
    }

    #[test]
    fn a_partition_stays_in_one_group_in_order() {
        let inputs: Vec<_> = (0..10u8).map(|n| ("t", 7, key(n))).collect();
        let split = split(inputs, 4);
        assert_eq!(split.groups, vec![(0..10).collect::<Vec<_>>()]);
        assert!(split.held_back.is_empty());
    }

    #[test]
    fn a_key_shared_across_groups_is_held_back_after_its_first_record() {
        let (a, b) = two_partitions_in_different_groups();
        let inputs = vec![
            ("t", a, key(1)),
            ("t", b, key(2)),
            ("t", b, key(1)), // first seen on partition a: held back
            ("t", a, key(2)), // first seen on partition b: held back
            ("t", a, key(1)), // a repeat within its own group stays
        ];
        let split = split(inputs, 2);
        let mut groups = split.groups.clone();
        groups.sort();
        assert_eq!(groups, vec![vec![0, 4], vec![1]]);
        assert_eq!(split.held_back, vec![2, 3]);
    }

    #[test]
    fn one_group_holds_nothing_back() {
        let (a, b) = two_partitions_in_different_groups();
        let inputs = vec![("t", a, key(1)), ("t", b, key(1))];
        assert_eq!(
            split(inputs, 1),
            Split {
                groups: vec![vec![0, 1]],
                held_back: vec![]
            }
        );
    }
}
