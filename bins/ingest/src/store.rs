//! The MySQL store: writes a batch of notifications in one transaction with multi-row
//! inserts, and tells for each input whether it was inserted or was a duplicate.
//!
//! Dedup is the UNIQUE index on `dedup_key` (SPEC 2.2). A batch's transaction first reads
//! the rows its keys already have (a plain read: no locks), then inserts the other keys with
//! a plain `INSERT` in input order, then reads their ids back by key from the dedup index
//! (the ids of a multi-row insert are not assumed consecutive: auto-increment gaps, lock
//! mode 2). Each write carries a random `write_batch` id, the mark of the rows it inserted.
//!
//! Why not `INSERT … ON DUPLICATE KEY UPDATE` over every key: on each duplicate
//! it meets, InnoDB takes an exclusive next-key lock (the row and the gap before it) at
//! any isolation level, so concurrent batches block each other's inserts into those gaps
//! and deadlock even when their keys are disjoint (measured: 4–5 deadlocks in 24 batches
//! of 1 000 from 4 writers). And on MariaDB 10.11 we saw that statement, racing a
//! transaction that was then rolled back as a deadlock victim, take the victim's rows for
//! duplicates and return: those keys had no row afterwards, not even to a locking read in
//! the same transaction, and the read-back failed with `RowNotFound`, which ingest took
//! for a database outage. Inserting only the keys that had no committed row means a
//! duplicate is met only in a race, and then as error 1062 rather than silently.
//!
//! A concurrent writer can still get in the way (a deadlock between batches sharing new
//! keys, a lock wait timeout, a key inserted meanwhile, a row missing after the insert):
//! the transaction is rolled back and the whole batch runs again ([`crate::conflict`]). So
//! a batch commits only when every key has its row, each input gets exactly one outcome, and
//! a row is `Inserted` for exactly one input across all writers.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use prometheus::IntCounterVec;
use shared::backoff::Backoff;
use shared::notification::{DedupKey, NewNotification, Notification, Status};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySql, Transaction};

use crate::conflict::{self, Conflict, WriteError};
pub use crate::error::StoreError;
use sql::{ExistingRow, insert_chunk, read_chunk, read_ids, statement_chunks};

mod sql;

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The Kafka record a notification came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for SourceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// One notification to store, with the record it came from (if any).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub notification: NewNotification,
    pub source: Option<SourceRecord>,
}

/// What happened to one input of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new row was written with this id.
    Inserted(i64),
    /// A row with the same dedup key exists. `same_source_record`: that row was written from
    /// this very Kafka record (a replay after a crash), so it must be published again.
    Duplicate { id: i64, same_source_record: bool },
}

impl Outcome {
    pub fn id(self) -> i64 {
        match self {
            Outcome::Inserted(id) | Outcome::Duplicate { id, .. } => id,
        }
    }

    /// Whether the notification must be published (new, or a replay of its own record).
    pub fn must_publish(self) -> bool {
        matches!(
            self,
            Outcome::Inserted(_)
                | Outcome::Duplicate {
                    same_source_record: true,
                    ..
                }
        )
    }
}

/// One input's result, with the row's current state (for publishing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub outcome: Outcome,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl Stored {
    /// The stored notification (content from `new`, which made the row or shares its key).
    pub fn notification(&self, new: &NewNotification) -> Notification {
        Notification {
            id: self.outcome.id(),
            user_id: new.user_id.clone(),
            kind: new.kind,
            title: new.title.clone(),
            message: new.message.clone(),
            link: new.link.clone(),
            status: self.status,
            reference_id: new.reference_id.clone(),
            reference_type: new.reference_type.clone(),
            created_at: self.created_at,
            read_at: self.read_at,
        }
    }
}

/// The notifications table.
#[derive(Debug, Clone)]
pub struct Store {
    pool: MySqlPool,
    /// Conflicts by kind (`ingest_store_conflicts_total`), when the owner counts them.
    conflicts: Option<IntCounterVec>,
}

/// Opens a pool whose sessions use READ COMMITTED. Under REPEATABLE READ a batch's reads
/// would see the snapshot of its first read, so a key committed by another writer after it
/// would be missed by the read and then fail the insert; READ COMMITTED reads the latest
/// committed rows. It also takes no gap locks for reads, leaving only the insert's own
/// duplicate check (met only in a race, see the module header).
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    let options: MySqlConnectOptions = url.parse()?;
    pool_options(max_connections).connect_with(options).await
}

/// Like [`connect`], but connects on first use (the database may be down at start).
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    let options: MySqlConnectOptions = url.parse()?;
    Ok(pool_options(max_connections).connect_lazy_with(options))
}

fn pool_options(max_connections: u32) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
}

impl Store {
    pub fn new(pool: MySqlPool) -> Self {
        Store {
            pool,
            conflicts: None,
        }
    }

    /// Counts each conflict in `counter`, labelled by [`Conflict::label`].
    pub fn with_conflict_counter(mut self, counter: IntCounterVec) -> Self {
        self.conflicts = Some(counter);
        self
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match self.pool.acquire().await {
            Ok(mut conn) => conn.ping().await.is_ok(),
            Err(_) => false,
        }
    }

    /// Stores `batch` in one transaction; the result has one entry per input, in order.
    pub async fn store_batch(&self, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<DedupKey> = batch.iter().map(|i| i.notification.dedup_key()).collect();
        // The first input of each key is the one inserted. Rows are written in input order,
        // so ids follow the Kafka order of a partition (the inbox lists by created_at, id);
        // the rare deadlock between writers of overlapping keys is retried below.
        let mut firsts: HashMap<DedupKey, usize> = HashMap::with_capacity(batch.len());
        for (i, key) in keys.iter().enumerate() {
            firsts.entry(*key).or_insert(i);
        }
        let mut order: Vec<(DedupKey, usize)> = firsts.iter().map(|(k, i)| (*k, *i)).collect();
        order.sort_unstable_by_key(|(_, index)| *index);
        let created_at = Utc::now().trunc_subsecs(3);
        let write_batch = rand::random::<i64>() & i64::MAX;

        let mut conflicts = 0;
        let mut backoff = Backoff::new(conflict::BACKOFF_START, conflict::BACKOFF_CAP);
        let rows = loop {
            match self.write(batch, &order, created_at, write_batch).await {
                Ok(rows) => break rows,
                Err(WriteError::Conflict(conflict)) => {
                    conflicts += 1;
                    self.count(conflict);
                    if conflicts >= conflict::WARN_AFTER {
                        tracing::warn!(
                            kind = conflict.label(),
                            conflicts,
                            rows = batch.len(),
                            "store conflicts keep hitting one batch; running it again"
                        );
                    } else {
                        tracing::debug!(
                            kind = conflict.label(),
                            "store conflict; running the batch again"
                        );
                    }
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(WriteError::Sql(err)) => return Err(err.into()),
            }
        };

        let mut results = Vec::with_capacity(batch.len());
        for (i, (incoming, key)) in batch.iter().zip(&keys).enumerate() {
            // `write_in` returns only when every key has its row.
            let row = &rows[key];
            let inserted_now = row.write_batch == write_batch && firsts[key] == i;
            let outcome = if inserted_now {
                Outcome::Inserted(row.id)
            } else {
                let same_source_record = match (&incoming.source, &row.source_record) {
                    (Some(ours), Some(theirs)) => ours.to_string() == *theirs,
                    _ => false,
                };
                Outcome::Duplicate {
                    id: row.id,
                    same_source_record,
                }
            };
            results.push(Stored {
                outcome,
                status: row.status,
                created_at: row.created_at,
                read_at: row.read_at,
            });
        }
        Ok(results)
    }

    fn count(&self, conflict: Conflict) {
        if let Some(counter) = &self.conflicts {
            counter.with_label_values(&[conflict.label()]).inc();
        }
    }

    /// One attempt: the whole batch in one transaction, rolled back on any error.
    async fn write(
        &self,
        batch: &[Incoming],
        order: &[(DedupKey, usize)],
        created_at: DateTime<Utc>,
        write_batch: i64,
    ) -> Result<HashMap<DedupKey, ExistingRow>, WriteError> {
        let mut tx = self.pool.begin().await?;
        match write_in(&mut tx, batch, order, created_at, write_batch).await {
            Ok(rows) => {
                tx.commit().await?;
                Ok(rows)
            }
            Err(err) => {
                // Release the locks now, before the pause (dropping the transaction would
                // roll back only when the connection is next used).
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }
}

async fn write_in(
    tx: &mut Transaction<'_, MySql>,
    batch: &[Incoming],
    order: &[(DedupKey, usize)],
    created_at: DateTime<Utc>,
    write_batch: i64,
) -> Result<HashMap<DedupKey, ExistingRow>, WriteError> {
    let mut rows = HashMap::with_capacity(order.len());
    for chunk in statement_chunks(order) {
        read_chunk(tx, chunk, &mut rows).await?;
    }
    let new: Vec<(DedupKey, usize)> = order
        .iter()
        .filter(|(key, _)| !rows.contains_key(key))
        .copied()
        .collect();
    for chunk in statement_chunks(&new) {
        insert_chunk(tx, batch, chunk, created_at, write_batch).await?;
    }
    // A plain insert either wrote every row or failed, so only the ids are unknown.
    let mut ids = HashMap::with_capacity(new.len());
    for chunk in statement_chunks(&new) {
        read_ids(tx, chunk, &mut ids).await?;
    }
    for (key, index) in new {
        let Some(id) = ids.get(&key) else {
            return Err(WriteError::Conflict(Conflict::MissingRow));
        };
        let row = ExistingRow {
            id: *id,
            source_record: batch[index].source.as_ref().map(ToString::to_string),
            write_batch,
            status: Status::Unread,
            created_at,
            read_at: None,
        };
        rows.insert(key, row);
    }
    Ok(rows)
}
