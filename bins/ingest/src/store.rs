//! The MySQL store: writes a batch of notifications in one transaction with multi-row
//! inserts, and tells for each input whether it was inserted or was a duplicate.
//!
//! Dedup is the UNIQUE index on `dedup_key` (SPEC 2.2), never a query-then-insert. After the
//! inserts, the rows of all keys are read back by that key in the same transaction: the ids
//! of a multi-row insert are not assumed consecutive (auto-increment gaps, lock mode 2).
//! Each write carries a random `write_batch` id, so rows this write inserted are told apart
//! from rows that existed before it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use shared::backoff::Backoff;
use shared::notification::{DedupKey, NewNotification, Notification, Status};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySql, QueryBuilder, Row, Transaction};

pub use crate::error::StoreError;

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Most rows per statement. Statements are cut into power-of-two sizes up to this (512,
/// then 256, 128, ... for the rest), so a connection only ever prepares ten distinct INSERT
/// and ten SELECT texts and reuses them from its statement cache: preparing a statement of
/// thousands of placeholders for every odd-sized batch costs more than the insert itself.
const MAX_ROWS_PER_STATEMENT: usize = 512;
/// Lock conflicts (deadlock, lock wait timeout) are retried this many times in place, after
/// a jittered pause (so the two writers of a deadlock do not meet again at once).
const CONFLICT_RETRIES: u32 = 5;
const CONFLICT_BACKOFF_START: Duration = Duration::from_millis(20);
const CONFLICT_BACKOFF_CAP: Duration = Duration::from_millis(200);

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
}

/// Opens a pool whose sessions use READ COMMITTED (fewer gap locks between concurrent
/// batches; each read sees the latest committed rows).
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
        Store { pool }
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

        let mut attempt = 0;
        let mut backoff = Backoff::new(CONFLICT_BACKOFF_START, CONFLICT_BACKOFF_CAP);
        let rows = loop {
            match self.write(batch, &order, created_at, write_batch).await {
                Ok(rows) => break rows,
                Err(err) if is_lock_conflict(&err) && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(%err, attempt, "lock conflict; retrying the batch");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(err) => return Err(err.into()),
            }
        };

        let mut results = Vec::with_capacity(batch.len());
        for (i, (incoming, key)) in batch.iter().zip(&keys).enumerate() {
            // The row was read back under the key just written, so it exists.
            let row = rows
                .get(key)
                .ok_or(StoreError::Unavailable(sqlx::Error::RowNotFound))?;
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

    async fn write(
        &self,
        batch: &[Incoming],
        order: &[(DedupKey, usize)],
        created_at: DateTime<Utc>,
        write_batch: i64,
    ) -> Result<HashMap<DedupKey, ExistingRow>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for chunk in statement_chunks(order) {
            insert_chunk(&mut tx, batch, chunk, created_at, write_batch).await?;
        }
        let mut rows = HashMap::with_capacity(order.len());
        for chunk in statement_chunks(order) {
            read_chunk(&mut tx, chunk, &mut rows).await?;
        }
        tx.commit().await?;
        Ok(rows)
    }
}

/// Splits `items` into chunks of power-of-two sizes, largest first.
fn statement_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let size = if items.len() >= MAX_ROWS_PER_STATEMENT {
            MAX_ROWS_PER_STATEMENT
        } else {
            1 << items.len().ilog2()
        };
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// A row as read back after the insert.
#[derive(Debug)]
struct ExistingRow {
    id: i64,
    source_record: Option<String>,
    write_batch: i64,
    status: Status,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

async fn insert_chunk(
    tx: &mut Transaction<'_, MySql>,
    batch: &[Incoming],
    chunk: &[(DedupKey, usize)],
    created_at: DateTime<Utc>,
    write_batch: i64,
) -> Result<(), sqlx::Error> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO notifications (user_id, type, title, message, link, status, \
         reference_id, reference_type, created_at, dedup_key, source_record, write_batch) ",
    );
    insert.push_values(chunk, |mut row, (key, index)| {
        let incoming = &batch[*index];
        let n = &incoming.notification;
        row.push_bind(n.user_id.as_str())
            .push_bind(n.kind.as_str())
            .push_bind(n.title.as_str())
            .push_bind(n.message.as_str())
            .push_bind(n.link.as_deref())
            .push_bind(Status::Unread.as_str())
            .push_bind(n.reference_id.as_deref())
            .push_bind(n.reference_type.as_deref())
            .push_bind(created_at.naive_utc())
            .push_bind(key.as_slice())
            .push_bind(incoming.source.as_ref().map(|s| s.to_string()))
            .push_bind(write_batch);
    });
    // A duplicate key leaves the existing row untouched; any other error still fails.
    insert.push(" ON DUPLICATE KEY UPDATE id = id");
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

async fn read_chunk(
    tx: &mut Transaction<'_, MySql>,
    chunk: &[(DedupKey, usize)],
    rows: &mut HashMap<DedupKey, ExistingRow>,
) -> Result<(), sqlx::Error> {
    let mut select = QueryBuilder::<MySql>::new(
        "SELECT id, dedup_key, source_record, write_batch, status, created_at, read_at \
         FROM notifications WHERE dedup_key IN (",
    );
    let mut keys = select.separated(", ");
    for (key, _) in chunk {
        keys.push_bind(key.as_slice());
    }
    select.push(")");
    for row in select.build().fetch_all(&mut **tx).await? {
        let key: Vec<u8> = row.try_get("dedup_key")?;
        let key: DedupKey = key
            .try_into()
            .map_err(|_| sqlx::Error::Decode("dedup_key is not 32 bytes".into()))?;
        // Text columns use utf8mb4_bin (exact comparisons), which the driver reports as
        // binary; the bytes are UTF-8 text, so decode them without the type check.
        let status: String = row.try_get_unchecked("status")?;
        let status = status
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let created_at: chrono::NaiveDateTime = row.try_get("created_at")?;
        let read_at: Option<chrono::NaiveDateTime> = row.try_get("read_at")?;
        let source_record: Option<String> = row.try_get_unchecked("source_record")?;
        rows.insert(
            key,
            ExistingRow {
                id: row.try_get("id")?,
                source_record,
                write_batch: row.try_get("write_batch")?,
                status,
                created_at: created_at.and_utc(),
                read_at: read_at.map(|t| t.and_utc()),
            },
        );
    }
    Ok(())
}

/// Deadlock (1213) or lock wait timeout (1205): the batch can simply run again.
fn is_lock_conflict(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<MySqlDatabaseError>())
        .is_some_and(|db| matches!(db.number(), 1205 | 1213))
}

#[cfg(test)]
mod tests {
    use super::statement_chunks;

    #[test]
    fn statements_use_few_distinct_sizes() {
        let items: Vec<u32> = (0..1357).collect();
        let sizes: Vec<usize> = statement_chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, [512, 512, 256, 64, 8, 4, 1]);
        let joined: Vec<u32> = statement_chunks(&items).flatten().copied().collect();
        assert_eq!(joined, items, "every item once, in order");
        assert_eq!(statement_chunks::<u32>(&[]).count(), 0);
    }
}
