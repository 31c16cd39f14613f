//! How ingest tells a record's fault from an outage (SPEC 2.4). A record's fault ends in its
//! DLT; an outage is waited out and never costs a record.
//!
//! - Database errors ([`StoreError`]) are classified by the MySQL/MariaDB error number first,
//!   because the SQLSTATE of one error differs between servers (1366 "incorrect string value"
//!   is HY000 on MySQL 8 and 22007 on MariaDB; 1265 "data truncated" is 01000, a warning
//!   class, on MariaDB), then by SQLSTATE class (22 data exception, 23 integrity constraint).
//!   Everything else — a lost or refused connection, a pool timeout, a read-only or
//!   shutting-down server, a missing table — is an outage.
//! - Dead-letter producer errors ([`DltError`]) are permanent when the cluster will never
//!   take that letter as it is: too large, invalid, or its topic unknown and not creatable.
//!   Everything else (timeouts, brokers down, missing authorization) is an outage.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use sqlx::mysql::MySqlDatabaseError;

/// MySQL/MariaDB error numbers that mean "the server refuses this row's data".
const BAD_DATA: &[u16] = &[
    1048, // column cannot be null
    1264, // out of range value
    1265, // data truncated
    1292, // incorrect (truncated) date, time or number value
    1300, // invalid character string
    1366, // incorrect string (or integer, decimal) value for the column
    1367, // illegal value
    1406, // data too long for the column
    3140, // invalid JSON text (MySQL)
    3819, // check constraint violated (MySQL)
    4025, // check constraint failed (MariaDB)
];

/// Why a batch was not stored. The variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not writable: an outage, not the records'
    /// fault. Wait and try again; never dead-letter for this.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused the data of this batch (e.g. a value its column cannot hold):
    /// retry, then find the offending record and dead-letter it.
    #[error("database rejected the batch: {0}")]
    Rejected(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_bad_data(&err) {
            StoreError::Rejected(err)
        } else {
            StoreError::Unavailable(err)
        }
    }
}

fn is_bad_data(err: &sqlx::Error) -> bool {
    let Some(db) = err.as_database_error() else {
        return false; // I/O, TLS, protocol, pool: the connection, not the data
    };
    if let Some(mysql) = db.try_downcast_ref::<MySqlDatabaseError>()
        && BAD_DATA.contains(&mysql.number())
    {
        return true;
    }
    db.code()
        .is_some_and(|state| state.starts_with("22") || state.starts_with("23"))
}

/// Why a dead letter was not written.
#[derive(Debug, thiserror::Error)]
pub enum DltError {
    /// The cluster will never take this letter as it is. The record is logged at ERROR
    /// with its coordinates, counted, and committed: stalling its partition forever would
    /// not save it (it stays in its source topic until retention).
    #[error("the dead letter can never be written: {0}")]
    Permanent(#[source] KafkaError),
    /// Kafka is unreachable or not accepting writes for now: wait and send again.
    #[error("the dead-letter topic is unavailable: {0}")]
    Unavailable(#[source] KafkaError),
}

impl From<KafkaError> for DltError {
    fn from(err: KafkaError) -> Self {
        let permanent = matches!(
            err.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::MessageBatchTooLarge
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownPartition
                    | RDKafkaErrorCode::PolicyViolation
            )
        );
        if permanent {
            DltError::Permanent(err)
        } else {
            DltError::Unavailable(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, MySqlConnection};

    use super::*;

    fn server_url() -> String {
        std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
    }

    /// A scratch database on the test server, dropped at the end even when the test fails.
    struct ScratchDb {
        name: String,
    }

    impl ScratchDb {
        async fn create() -> (ScratchDb, MySqlConnection) {
            let name = format!(
                "nt_dberr_{}_{:08x}",
                std::process::id(),
                rand::random::<u32>()
            );
            let mut admin = MySqlConnection::connect(&server_url())
                .await
                .expect("MariaDB/MySQL must be running (see README: Testing)");
            admin
                .execute(format!("CREATE DATABASE `{name}`").as_str())
                .await
                .unwrap();
            let conn = MySqlConnection::connect(&format!("{}/{name}", server_url()))
                .await
                .unwrap();
            (ScratchDb { name }, conn)
        }
    }

    impl Drop for ScratchDb {
        fn drop(&mut self) {
            let (url, name) = (server_url(), self.name.clone());
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    if let Ok(mut admin) = MySqlConnection::connect(&url).await {
                        let _ = admin
                            .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                            .await;
                    }
                });
            })
            .join();
        }
    }

    fn number(err: &sqlx::Error) -> Option<u16> {
        err.as_database_error()
            .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
            .map(|e| e.number())
    }

    /// Real errors from the test server, provoked under strict mode.
    #[tokio::test]
    async fn values_the_server_refuses_are_bad_data() {
        let (_db, mut conn) = ScratchDb::create().await;
        conn.execute("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
            .await
            .unwrap();
        conn.execute(
            "CREATE TABLE t (short_text VARCHAR(3) CHARACTER SET utf8mb4, \
             latin TEXT CHARACTER SET latin1, moment DATETIME, tiny TINYINT, \
             choice ENUM('a'), required INT NOT NULL DEFAULT 0)",
        )
        .await
        .unwrap();

        let cases = [
            (1406, "INSERT INTO t (short_text) VALUES (?)", "too long"),
            (1366, "INSERT INTO t (latin) VALUES (?)", "한국어"),
            (
                1292,
                "INSERT INTO t (moment) VALUES (?)",
                "2026-13-45 25:61",
            ),
            (1264, "INSERT INTO t (tiny) VALUES (?)", "1000"),
            (1265, "INSERT INTO t (choice) VALUES (?)", "b"),
        ];
        for (expected, sql, value) in cases {
            let err = sqlx::query(sql)
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap_err();
            assert_eq!(number(&err), Some(expected), "{sql}: {err}");
            let classified = StoreError::from(err);
            assert!(
                matches!(classified, StoreError::Rejected(_)),
                "error {expected} must be bad data: {classified:?}"
            );
        }
        let null = sqlx::query("INSERT INTO t (required) VALUES (NULL)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(number(&null), Some(1048));
        assert!(matches!(StoreError::from(null), StoreError::Rejected(_)));
    }

    #[tokio::test]
    async fn a_lost_connection_is_an_outage() {
        let (_db, mut conn) = ScratchDb::create().await;
        let mut admin = MySqlConnection::connect(&server_url()).await.unwrap();
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        admin.execute(format!("KILL {id}").as_str()).await.unwrap();

        let err = sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .unwrap_err();

        let classified = StoreError::from(err);
        assert!(
            matches!(classified, StoreError::Unavailable(_)),
            "a killed connection is an outage: {classified:?}"
        );
        let refused = MySqlConnection::connect("mysql://root@127.0.0.1:9/none")
            .await
            .unwrap_err();
        assert!(matches!(
            StoreError::from(refused),
            StoreError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn a_missing_table_is_an_outage_not_bad_data() {
        let (_db, mut conn) = ScratchDb::create().await;
        let err = sqlx::query("INSERT INTO missing (x) VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(number(&err), Some(1146));
        assert!(matches!(StoreError::from(err), StoreError::Unavailable(_)));
    }

    #[test]
    fn dlt_errors_that_no_retry_can_fix_are_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let err = DltError::from(KafkaError::MessageProduction(code));
            assert!(matches!(err, DltError::Permanent(_)), "{code:?}: {err:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::QueueFull,
        ] {
            let err = DltError::from(KafkaError::MessageProduction(code));
            assert!(matches!(err, DltError::Unavailable(_)), "{code:?}: {err:?}");
        }
    }
}
