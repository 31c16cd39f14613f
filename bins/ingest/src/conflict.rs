//! Write conflicts between concurrent store transactions (several batches of one instance
//! with `INGEST_STORE_PARALLELISM` > 1, or several instances): a conflict is nobody's fault
//! and no outage. The batch's transaction is rolled back and the whole batch runs again
//! after a short jittered pause; readiness is untouched and each conflict is counted in
//! `ingest_store_conflicts_total{kind}`.

use std::time::Duration;

use sqlx::mysql::MySqlDatabaseError;

/// First and largest pause before a batch runs again after a conflict. Jittered, so the two
/// writers of a deadlock do not meet again at once.
pub const BACKOFF_START: Duration = Duration::from_millis(10);
pub const BACKOFF_CAP: Duration = Duration::from_millis(500);
/// Conflicts in a row of one batch after which each further one is logged at WARN.
pub const WARN_AFTER: u32 = 5;

/// Why a batch's transaction was rolled back to run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// 1213: InnoDB broke a lock cycle by rolling this transaction back.
    Deadlock,
    /// 1205: a lock stayed held for `innodb_lock_wait_timeout`.
    LockWaitTimeout,
    /// 1062: a key that was not there when the batch looked was inserted by a concurrent
    /// transaction (committed meanwhile) before this batch's insert reached it.
    DuplicateRace,
    /// A key of the batch has no row after the insert: the duplicate it met belonged to a
    /// concurrent transaction that was then rolled back.
    MissingRow,
}

impl Conflict {
    /// Every kind, for tools that list the counts.
    pub const ALL: [Conflict; 4] = [
        Conflict::Deadlock,
        Conflict::LockWaitTimeout,
        Conflict::DuplicateRace,
        Conflict::MissingRow,
    ];

    /// Classifies an error of the batch's statements; `None`: not a conflict.
    pub fn of(err: &sqlx::Error) -> Option<Conflict> {
        let number = err
            .as_database_error()?
            .try_downcast_ref::<MySqlDatabaseError>()?
            .number();
        match number {
            1213 => Some(Conflict::Deadlock),
            1205 => Some(Conflict::LockWaitTimeout),
            1062 => Some(Conflict::DuplicateRace),
            _ => None,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Conflict::Deadlock => "deadlock",
            Conflict::LockWaitTimeout => "lock_wait_timeout",
            Conflict::DuplicateRace => "duplicate_race",
            Conflict::MissingRow => "missing_row",
        }
    }
}

/// The error of one write attempt: a conflict to run again, or anything else.
#[derive(Debug)]
pub enum WriteError {
    Conflict(Conflict),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(err: sqlx::Error) -> Self {
        match Conflict::of(&err) {
            Some(conflict) => WriteError::Conflict(conflict),
            None => WriteError::Sql(err),
        }
    }
}
