//! The statements of a batch write: power-of-two multi-row `INSERT`s and reads by key.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared::notification::{DedupKey, Status};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder, Row, Transaction};

use super::Incoming;

/// Most rows per statement. Statements are cut into power-of-two sizes up to this (512,
/// then 256, 128, ... for the rest), so a connection only ever prepares ten distinct INSERT
/// and ten SELECT texts and reuses them from its statement cache: preparing a statement of
/// thousands of placeholders for every odd-sized batch costs more than the insert itself.
const MAX_ROWS_PER_STATEMENT: usize = 512;

/// Splits `items` into chunks of power-of-two sizes, largest first.
pub(super) fn statement_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
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
pub(super) struct ExistingRow {
    pub(super) id: i64,
    pub(super) source_record: Option<String>,
    pub(super) write_batch: i64,
    pub(super) status: Status,
    pub(super) created_at: DateTime<Utc>,
    pub(super) read_at: Option<DateTime<Utc>>,
}

pub(super) async fn insert_chunk(
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
    // A plain insert: a duplicate here is a race with a concurrent writer (error 1062, a
    // conflict), since the keys that had a committed row were left out.
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

/// Reads the rows of `chunk`'s keys that exist into `rows`.
pub(super) async fn read_chunk(
    tx: &mut Transaction<'_, MySql>,
    chunk: &[(DedupKey, usize)],
    rows: &mut HashMap<DedupKey, ExistingRow>,
) -> Result<(), sqlx::Error> {
    let mut select = select_keys(
        "SELECT id, dedup_key, source_record, write_batch, status, created_at, read_at \
         FROM notifications WHERE dedup_key IN (",
        chunk,
    );
    for row in select.build().fetch_all(&mut **tx).await? {
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
            key_of(&row)?,
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

/// Reads the ids of `chunk`'s keys into `ids`. The dedup index holds the primary key, so
/// this reads the index alone, no row.
pub(super) async fn read_ids(
    tx: &mut Transaction<'_, MySql>,
    chunk: &[(DedupKey, usize)],
    ids: &mut HashMap<DedupKey, i64>,
) -> Result<(), sqlx::Error> {
    let mut select = select_keys(
        "SELECT id, dedup_key FROM notifications WHERE dedup_key IN (",
        chunk,
    );
    for row in select.build().fetch_all(&mut **tx).await? {
        ids.insert(key_of(&row)?, row.try_get("id")?);
    }
    Ok(())
}

/// `prefix` (ending in `IN (`) followed by a placeholder per key of `chunk`.
fn select_keys<'a>(prefix: &str, chunk: &'a [(DedupKey, usize)]) -> QueryBuilder<'a, MySql> {
    let mut select = QueryBuilder::<MySql>::new(prefix);
    let mut keys = select.separated(", ");
    for (key, _) in chunk {
        keys.push_bind(key.as_slice());
    }
    select.push(")");
    select
}

fn key_of(row: &MySqlRow) -> Result<DedupKey, sqlx::Error> {
    let key: Vec<u8> = row.try_get("dedup_key")?;
    key.try_into()
        .map_err(|_| sqlx::Error::Decode("dedup_key is not 32 bytes".into()))
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
