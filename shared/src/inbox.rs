//! The notifications table as the inbox reads and changes it (SPEC 4): pages newest first by
//! (`created_at`, `id`), keyset pages for infinite scroll, unread counts (in all and by
//! category), marking read, deleting, and the rows after an id (recovery). Every statement
//! is scoped by `user_id`, so one user's rows are never read or changed for another, and
//! each is served by an index (see `migrations/`): none scans a user's whole history for a
//! first page.

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlPool, MySqlRow};
use sqlx::{Executor, MySql, Row};

use crate::category::Category;
use crate::notification::{Notification, NotificationType, Status};

/// The columns of a [`Notification`], in the order [`from_row`] reads them.
const COLUMNS: &str = "id, user_id, type, title, message, link, status, reference_id, \
                       reference_type, created_at, read_at";

/// Which notifications a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Unread,
}

impl Filter {
    fn clause(self) -> &'static str {
        match self {
            Filter::All => "",
            Filter::Unread => " AND status = 'UNREAD'",
        }
    }
}

/// Why an inbox statement failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row holds a type or status this build does not know.
    #[error("unreadable row {id}: {reason}")]
    Corrupt { id: i64, reason: String },
}

/// One offset page and the size of the whole listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Notification>,
    pub total: u64,
}

/// One keyset page and the cursor of the next (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub items: Vec<Notification>,
    pub next: Option<i64>,
}

/// What marking read or deleting changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<T> {
    pub value: T,
    /// Whether any row changed (marking an already read notification changes nothing).
    pub changed: bool,
    /// The user's unread count right after the change, read in the same transaction.
    pub unread: u64,
}

/// The inbox queries on one connection pool.
#[derive(Debug, Clone)]
pub struct Inbox {
    pool: MySqlPool,
}

impl Inbox {
    pub fn new(pool: MySqlPool) -> Inbox {
        Inbox { pool }
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Page `page` (1-based) of `size` rows, newest first, and the listing's total.
    pub async fn page(
        &self,
        user: &str,
        filter: Filter,
        page: u32,
        size: u32,
    ) -> Result<Page, InboxError> {
        let offset = u64::from(page.saturating_sub(1)) * u64::from(size);
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = ?{} \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            filter.clause()
        );
        // One connection for both statements: one pool checkout per request.
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(&sql)
            .bind(user)
            .bind(size)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await?;
        let items: Vec<Notification> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        // A short page that starts the listing holds the whole listing: no count needed.
        let total = if offset == 0 && items.len() < size as usize {
            items.len() as u64
        } else {
            count(&mut *conn, user, filter).await?
        };
        Ok(Page { items, total })
    }

    /// Up to `size` rows older than the row `before` (newest first when `None`), and the
    /// cursor of the next slice. Cheap at any depth: an index range from the cursor.
    pub async fn slice(
        &self,
        user: &str,
        filter: Filter,
        before: Option<i64>,
        size: u32,
    ) -> Result<Slice, InboxError> {
        let position = match before {
            None => None,
            Some(id) => Some(
                sqlx::query_scalar::<_, DateTime<Utc>>(
                    "SELECT created_at FROM notifications WHERE user_id = ? AND id = ?",
                )
                .bind(user)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map(|at| (at, id))
                .ok_or(id),
            ),
        };
        // One row more than asked tells whether another slice follows.
        let limit = size + 1;
        let rows = match position {
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM notifications WHERE user_id = ?{} \
                     ORDER BY created_at DESC, id DESC LIMIT ?",
                    filter.clause()
                );
                sqlx::query(&sql)
                    .bind(user)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(Ok((at, id))) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM notifications WHERE user_id = ?{} \
                     AND (created_at < ? OR (created_at = ? AND id < ?)) \
                     ORDER BY created_at DESC, id DESC LIMIT ?",
                    filter.clause()
                );
                sqlx::query(&sql)
                    .bind(user)
                    .bind(at)
                    .bind(at)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            // The cursor's row is gone (deleted since): continue below its id.
            Some(Err(id)) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM notifications WHERE user_id = ?{} AND id < ? \
                     ORDER BY created_at DESC, id DESC LIMIT ?",
                    filter.clause()
                );
                sqlx::query(&sql)
                    .bind(user)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut items: Vec<Notification> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        let more = items.len() > size as usize;
        items.truncate(size as usize);
        let next = if more {
            items.last().map(|n| n.id)
        } else {
            None
        };
        Ok(Slice { items, next })
    }

    /// The user's unread count.
    pub async fn unread_count(&self, user: &str) -> Result<u64, InboxError> {
        count(&self.pool, user, Filter::Unread).await
    }

    /// The user's unread counts by category, every category present.
    pub async fn unread_by_category(&self, user: &str) -> Result<Vec<(Category, u64)>, InboxError> {
        let rows: Vec<(String, i64)> = sqlx::query(
            "SELECT type, COUNT(*) FROM notifications \
             WHERE user_id = ? AND status = 'UNREAD' GROUP BY type",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get_unchecked(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let mut counts: Vec<(Category, u64)> = Category::ALL.iter().map(|c| (*c, 0)).collect();
        for (kind, n) in rows {
            // A type this build does not know (written by a newer ingest) counts as system.
            let category = kind
                .parse::<NotificationType>()
                .map(Category::of)
                .unwrap_or(Category::System);
            if let Some(entry) = counts.iter_mut().find(|(c, _)| *c == category) {
                entry.1 += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// Marks the user's notification `id` read (once: `read_at` never changes after) and
    /// returns it; `None` when the user has no such notification.
    pub async fn mark_read(
        &self,
        user: &str,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Change<Notification>>, InboxError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE notifications SET status = 'READ', read_at = ? \
             WHERE user_id = ? AND id = ? AND status = 'UNREAD'",
        )
        .bind(now)
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let sql = format!("SELECT {COLUMNS} FROM notifications WHERE user_id = ? AND id = ?");
        let row = sqlx::query(&sql)
            .bind(user)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let unread = count(&mut *tx, user, Filter::Unread).await?;
        tx.commit().await?;
        Ok(Some(Change {
            value: from_row(&row)?,
            changed,
            unread,
        }))
    }

    /// Marks every unread notification of the user read; returns how many changed.
    pub async fn mark_all_read(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<Change<u64>, InboxError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE notifications SET status = 'READ', read_at = ? \
             WHERE user_id = ? AND status = 'UNREAD'",
        )
        .bind(now)
        .bind(user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let unread = count(&mut *tx, user, Filter::Unread).await?;
        tx.commit().await?;
        Ok(Change {
            value: changed,
            changed: changed > 0,
            unread,
        })
    }

    /// Deletes the user's notification `id`; `None` when the user has no such notification.
    pub async fn delete(&self, user: &str, id: i64) -> Result<Option<Change<()>>, InboxError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM notifications WHERE user_id = ? AND id = ?")
            .bind(user)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        let unread = count(&mut *tx, user, Filter::Unread).await?;
        tx.commit().await?;
        Ok(Some(Change {
            value: (),
            changed: true,
            unread,
        }))
    }

    /// Marks the user's notifications `ids` read (those that are the user's and unread;
    /// other ids are ignored) and returns the ids that changed, ascending.
    pub async fn mark_read_ids(
        &self,
        user: &str,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Change<Vec<i64>>, InboxError> {
        if ids.is_empty() {
            return Ok(Change {
                value: Vec::new(),
                changed: false,
                unread: self.unread_count(user).await?,
            });
        }
        let list = vec!["?"; ids.len()].join(", ");
        let mut tx = self.pool.begin().await?;
        let select = format!(
            "SELECT id FROM notifications WHERE user_id = ? AND status = 'UNREAD' \
             AND id IN ({list}) ORDER BY id FOR UPDATE"
        );
        let mut query = sqlx::query_scalar::<_, i64>(&select).bind(user);
        for id in ids {
            query = query.bind(id);
        }
        let changed = query.fetch_all(&mut *tx).await?;
        if !changed.is_empty() {
            let list = vec!["?"; changed.len()].join(", ");
            let update = format!(
                "UPDATE notifications SET status = 'READ', read_at = ? \
                 WHERE user_id = ? AND status = 'UNREAD' AND id IN ({list})"
            );
            let mut query = sqlx::query(&update).bind(now).bind(user);
            for id in &changed {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        let unread = count(&mut *tx, user, Filter::Unread).await?;
        tx.commit().await?;
        Ok(Change {
            changed: !changed.is_empty(),
            value: changed,
            unread,
        })
    }

    /// The newest `limit` of the user's notifications with an id above `after`, in
    /// ascending id order (recovery after a reconnect).
    pub async fn since(
        &self,
        user: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, InboxError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = ? AND id > ? \
             ORDER BY id DESC LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(user)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut found: Vec<Notification> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        found.reverse();
        Ok(found)
    }
}

async fn count<'e>(
    executor: impl Executor<'e, Database = MySql>,
    user: &str,
    filter: Filter,
) -> Result<u64, InboxError> {
    let sql = format!(
        "SELECT COUNT(*) FROM notifications WHERE user_id = ?{}",
        filter.clause()
    );
    let n: i64 = sqlx::query_scalar(&sql)
        .bind(user)
        .fetch_one(executor)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A row of [`COLUMNS`] as a notification. The text columns are `utf8mb4_bin`, which the
/// driver reports as binary: they are decoded as text without the type check (the column
/// definitions, not the driver, guarantee UTF-8).
fn from_row(row: &MySqlRow) -> Result<Notification, InboxError> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |reason: String| InboxError::Corrupt { id, reason };
    let kind: String = row.try_get_unchecked(2)?;
    let status: String = row.try_get_unchecked(6)?;
    Ok(Notification {
        id,
        user_id: row.try_get_unchecked(1)?,
        kind: kind.parse().map_err(|e| corrupt(format!("{e}")))?,
        title: row.try_get_unchecked(3)?,
        message: row.try_get_unchecked(4)?,
        link: row.try_get_unchecked(5)?,
        status: status
            .parse::<Status>()
            .map_err(|e| corrupt(format!("{e}")))?,
        reference_id: row.try_get_unchecked(7)?,
        reference_type: row.try_get_unchecked(8)?,
        created_at: row.try_get(9)?,
        read_at: row.try_get(10)?,
    })
}
