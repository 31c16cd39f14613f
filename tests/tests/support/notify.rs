//! Notifications written as ingest writes them: a row in the test database, and its JSON
//! published on the user's Redis channel.

use chrono::Utc;
use shared::inbox::Inbox;
use shared::time::Zone;
use sqlx::mysql::MySqlPool;

/// Stores an unread notification of `user`; its id.
pub async fn store(pool: &MySqlPool, user: &str) -> i64 {
    sqlx::query(
        "INSERT INTO notifications (user_id, type, title, message, status, created_at, \
         dedup_key, write_batch) VALUES (?, 'BLOG_LIKE', '좋아요', '메시지', 'UNREAD', ?, ?, 0)",
    )
    .bind(user)
    .bind(Utc::now())
    .bind(rand::random::<[u8; 32]>().to_vec())
    .execute(pool)
    .await
    .unwrap()
    .last_insert_id() as i64
}

/// PUBLISHes `payload` on `channel`.
pub async fn publish(channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(
            &mut redis::Client::open(super::redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
}

/// Stores a notification of `user` and publishes its JSON on `{prefix}{user}`; its id.
pub async fn notify(pool: &MySqlPool, prefix: &str, user: &str) -> i64 {
    let id = store(pool, user).await;
    let row = Inbox::new(pool.clone())
        .since(user, id - 1, 1)
        .await
        .unwrap()
        .remove(0);
    publish(&format!("{prefix}{user}"), &row.to_json(&Zone::utc())).await;
    id
}
