//! The store against the real MariaDB/MySQL: race-free dedup, correct ids in mixed batches,
//! same-source replays, and error classification. Each test has its own database.

mod support;

use std::collections::{HashMap, HashSet};

use ingest::store::{Incoming, Outcome, SourceRecord, Store, StoreError};
use shared::convert::convert;
use shared::event::EventKind;
use shared::notification::{NewNotification, NotificationType, Status};
use sqlx::Row;
use support::{TestDb, text};

fn event(kind: EventKind, json: &str) -> NewNotification {
    convert(kind, json.as_bytes()).unwrap().unwrap()
}

fn order_created(user: &str, order: &str) -> NewNotification {
    event(
        EventKind::OrderCreated,
        &format!(
            r#"{{"userId":"{user}","orderNumber":"{order}","itemCount":1,"totalAmount":1000}}"#
        ),
    )
}

fn source(topic: &str, offset: i64) -> Option<SourceRecord> {
    Some(SourceRecord {
        topic: topic.to_owned(),
        partition: 0,
        offset,
    })
}

fn incoming(notification: NewNotification, source: Option<SourceRecord>) -> Incoming {
    Incoming {
        notification,
        source,
    }
}

async fn row_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_inserts_of_one_key_store_exactly_one_row() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let notification = order_created("user-race", "ORD-RACE");

    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let store = store.clone();
        let notification = notification.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..125i64 {
                let input = incoming(notification.clone(), source("orders", task * 1000 + i));
                outcomes.push(store.store_batch(&[input]).await.unwrap()[0].outcome);
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }

    assert_eq!(outcomes.len(), 1000);
    let inserted: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Inserted(_)))
        .collect();
    assert_eq!(inserted.len(), 1, "exactly one insert wins");
    let id = inserted[0].id();
    for outcome in &outcomes {
        assert_eq!(outcome.id(), id, "every duplicate points at the one row");
        if let Outcome::Duplicate {
            same_source_record, ..
        } = outcome
        {
            assert!(!same_source_record, "each input came from another record");
        }
    }
    assert_eq!(row_count(&db).await, 1);
}

#[tokio::test]
async fn order_cancelled_after_order_created_is_a_second_row() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let created = order_created("u1", "ORD-1");
    let cancelled = event(
        EventKind::OrderCancelled,
        r#"{"userId":"u1","orderNumber":"ORD-1","cancelReason":"고객 요청"}"#,
    );

    let first = store
        .store_batch(&[incoming(created, source("c", 1))])
        .await
        .unwrap();
    let second = store
        .store_batch(&[incoming(cancelled, source("x", 1))])
        .await
        .unwrap();

    assert!(matches!(first[0].outcome, Outcome::Inserted(_)));
    assert!(matches!(second[0].outcome, Outcome::Inserted(_)));
    assert_ne!(first[0].outcome.id(), second[0].outcome.id());
    let types: Vec<String> =
        sqlx::query_scalar("SELECT CAST(type AS CHAR) FROM notifications ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(types, ["ORDER_CREATED", "ORDER_CANCELLED"]);
}

/// 500 inputs: 300 new keys, 100 repeats of those new keys inside the batch, and 100 keys that
/// were stored before. The 400 inputs of new keys get the ids of the 300 new rows (a repeat
/// gets its first occurrence's id); the 100 others get the existing rows' ids.
#[tokio::test]
async fn mixed_batch_gets_the_right_id_for_every_input() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let existing: Vec<Incoming> = (0..100)
        .map(|i| {
            incoming(
                order_created(&format!("old-{}", i % 7), &format!("OLD-{i}")),
                source("t", i),
            )
        })
        .collect();
    let existing_ids: Vec<i64> = store
        .store_batch(&existing)
        .await
        .unwrap()
        .iter()
        .map(|s| s.outcome.id())
        .collect();

    let mut batch = Vec::new();
    for i in 0..300 {
        batch.push(incoming(
            order_created(&format!("new-{}", i % 11), &format!("NEW-{i}")),
            source("t", 1000 + i),
        ));
    }
    for i in 0..100 {
        let repeat = (i * 3) as usize;
        batch.push(incoming(
            batch[repeat].notification.clone(),
            source("t", 2000 + i),
        ));
    }
    for (i, old) in existing.iter().enumerate() {
        batch.push(incoming(
            old.notification.clone(),
            source("t", 3000 + i as i64),
        ));
    }
    // Interleave so duplicates are spread through the statement, not only at its end.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|i| (i * 7919) % batch.len());
    let batch: Vec<Incoming> = order.iter().map(|i| batch[*i].clone()).collect();
    assert_eq!(batch.len(), 500);

    let results = store.store_batch(&batch).await.unwrap();

    assert_eq!(results.len(), 500);
    let inserted: HashSet<i64> = results
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Inserted(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(inserted.len(), 300, "300 distinct new rows");
    let existing_set: HashSet<i64> = existing_ids.iter().copied().collect();
    let mut to_new = 0;
    let mut first_id_of_key: HashMap<[u8; 32], i64> = HashMap::new();
    for (input, result) in batch.iter().zip(&results) {
        let id = result.outcome.id();
        if existing_set.contains(&id) {
            assert!(matches!(
                result.outcome,
                Outcome::Duplicate {
                    same_source_record: false,
                    ..
                }
            ));
        } else {
            to_new += 1;
            assert!(inserted.contains(&id));
        }
        let key = input.notification.dedup_key();
        assert_eq!(
            *first_id_of_key.entry(key).or_insert(id),
            id,
            "one id per key"
        );
        // The id names the row with exactly this input's identity.
        let row = sqlx::query(
            "SELECT user_id, type, reference_id, reference_type FROM notifications WHERE id = ?",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(text::<String>(&row, "user_id"), input.notification.user_id);
        assert_eq!(
            text::<String>(&row, "type"),
            input.notification.kind.as_str()
        );
        assert_eq!(
            text::<Option<String>>(&row, "reference_id"),
            input.notification.reference_id
        );
        assert_eq!(
            text::<Option<String>>(&row, "reference_type"),
            input.notification.reference_type
        );
    }
    assert_eq!(to_new, 400, "400 inputs resolve to new rows");
    assert_eq!(row_count(&db).await, 400);
}

#[tokio::test]
async fn replaying_the_same_record_is_a_same_source_duplicate() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let notification = order_created("u1", "ORD-REPLAY");
    let record = source("shopping.order.created", 42);

    let first = store
        .store_batch(&[incoming(notification.clone(), record.clone())])
        .await
        .unwrap();
    let replay = store
        .store_batch(&[incoming(notification.clone(), record)])
        .await
        .unwrap();
    let other = store
        .store_batch(&[incoming(notification, source("shopping.order.created", 43))])
        .await
        .unwrap();

    let id = first[0].outcome.id();
    assert_eq!(first[0].outcome, Outcome::Inserted(id));
    assert_eq!(
        replay[0].outcome,
        Outcome::Duplicate {
            id,
            same_source_record: true
        }
    );
    assert!(
        replay[0].outcome.must_publish(),
        "a replay is published again"
    );
    assert_eq!(
        other[0].outcome,
        Outcome::Duplicate {
            id,
            same_source_record: false
        }
    );
    assert!(
        !other[0].outcome.must_publish(),
        "a different record's duplicate is not"
    );
    assert_eq!(
        replay[0].created_at, first[0].created_at,
        "the stored row's own timestamp"
    );
    assert_eq!(row_count(&db).await, 1);
}

#[tokio::test]
async fn ids_follow_the_input_order_of_a_batch() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let batch: Vec<Incoming> = (0..300)
        .map(|i| incoming(order_created("u", &format!("O-{i}")), source("orders", i)))
        .collect();
    let ids: Vec<i64> = store
        .store_batch(&batch)
        .await
        .unwrap()
        .iter()
        .map(|s| s.outcome.id())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase with input order"
    );
}

#[tokio::test]
async fn a_batch_replayed_whole_after_a_crash_is_all_same_source() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let batch: Vec<Incoming> = (0..50)
        .map(|i| incoming(order_created("u", &format!("O-{i}")), source("orders", i)))
        .collect();
    let first = store.store_batch(&batch).await.unwrap();
    let again = store.store_batch(&batch).await.unwrap();
    for (a, b) in first.iter().zip(&again) {
        assert!(matches!(a.outcome, Outcome::Inserted(_)));
        assert_eq!(
            b.outcome,
            Outcome::Duplicate {
                id: a.outcome.id(),
                same_source_record: true
            }
        );
    }
}

#[tokio::test]
async fn the_welcome_is_stored_once_per_user() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let welcome = |user: &str| {
        event(
            EventKind::UserSignedUp,
            &format!(r#"{{"userId":"{user}","name":"N"}}"#),
        )
    };

    let results = store
        .store_batch(&[
            incoming(welcome("a"), source("user-signup", 1)),
            incoming(welcome("a"), source("user-signup", 2)),
            incoming(welcome("b"), source("user-signup", 3)),
        ])
        .await
        .unwrap();
    let later = store
        .store_batch(&[incoming(welcome("a"), source("user-signup", 9))])
        .await
        .unwrap();

    assert!(matches!(results[0].outcome, Outcome::Inserted(_)));
    assert_eq!(
        results[1].outcome,
        Outcome::Duplicate {
            id: results[0].outcome.id(),
            same_source_record: false
        }
    );
    assert!(matches!(results[2].outcome, Outcome::Inserted(_)));
    assert_eq!(later[0].outcome.id(), results[0].outcome.id());
    assert_eq!(row_count(&db).await, 2);
    let nulls: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications WHERE type = 'SYSTEM' AND reference_id IS NULL AND reference_type IS NULL AND link IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(nulls, 2, "the welcome keeps null reference fields");
}

#[tokio::test]
async fn keys_differ_by_case_and_trailing_space() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let results = store
        .store_batch(&[
            incoming(order_created("u", "ord-1"), None),
            incoming(order_created("u", "ORD-1"), None),
            incoming(order_created("u", "ORD-1 "), None),
            incoming(order_created("U", "ORD-1"), None),
        ])
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Inserted(_))),
        "{results:?}"
    );
    assert_eq!(row_count(&db).await, 4);
}

#[tokio::test]
async fn stored_row_matches_the_notification_exactly() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let liked = event(
        EventKind::PostLiked,
        r#"{"authorId":"작성자-1","postId":"p-1","postTitle":"이모지 😀 제목","likeId":"like-9","likerName":"민수 🎉"}"#,
    );
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);

    let stored = store
        .store_batch(&[incoming(liked.clone(), source("blog.post.liked", 5))])
        .await
        .unwrap();

    let notification = stored[0].notification(&liked);
    assert_eq!(notification.status, Status::Unread);
    assert_eq!(notification.read_at, None);
    assert!(notification.created_at >= before && notification.created_at <= chrono::Utc::now());
    let row = sqlx::query("SELECT * FROM notifications WHERE id = ?")
        .bind(notification.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(text::<String>(&row, "user_id"), "작성자-1");
    assert_eq!(
        text::<String>(&row, "type"),
        NotificationType::BLOG_LIKE.as_str()
    );
    assert_eq!(text::<String>(&row, "title"), liked.title);
    assert_eq!(
        text::<String>(&row, "message"),
        "\"이모지 😀 제목\"에 민수 🎉님이 좋아요를 눌렀습니다"
    );
    assert_eq!(
        text::<Option<String>>(&row, "link").as_deref(),
        Some("/blog/p-1")
    );
    assert_eq!(text::<String>(&row, "status"), "UNREAD");
    assert_eq!(
        text::<Option<String>>(&row, "reference_id").as_deref(),
        Some("like-9")
    );
    assert_eq!(
        text::<Option<String>>(&row, "reference_type").as_deref(),
        Some("like")
    );
    assert_eq!(
        row.get::<chrono::NaiveDateTime, _>("created_at").and_utc(),
        notification.created_at
    );
    assert_eq!(
        text::<Option<String>>(&row, "source_record").as_deref(),
        Some("blog.post.liked:0:5")
    );
}

#[tokio::test]
async fn a_value_the_column_cannot_hold_is_rejected_not_an_outage() {
    let db = TestDb::new().await;
    let store = Store::new(db.pool.clone());
    let mut too_long = order_created("u", "ORD-1");
    too_long.title = "x".repeat(300);

    let err = store
        .store_batch(&[incoming(too_long, None)])
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(row_count(&db).await, 0, "the whole batch rolled back");
}

#[tokio::test]
async fn an_unreachable_database_is_an_outage() {
    // Port 9 on loopback (discard) has no MySQL; connect lazily so the failure is at write time.
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("mysql://root@127.0.0.1:9/none")
        .unwrap();
    let store = Store::new(pool);

    let err = store
        .store_batch(&[incoming(order_created("u", "O"), None)])
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!store.ping().await);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = TestDb::new().await;
    ingest::store::MIGRATOR.run(&db.pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied, ingest::store::MIGRATOR.iter().count() as i64);
}
