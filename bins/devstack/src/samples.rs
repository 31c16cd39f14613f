//! Sample events, one shape per input topic, as the portal's producers send them. Every
//! sample gets fresh reference ids, so each one becomes a new notification (the welcome of
//! `user-signup` excepted: one per user, however often it is sent).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use shared::event::EventKind;

/// One input topic as the demo page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicInfo {
    pub topic: &'static str,
    /// The notification type it becomes (`TIMEDEAL_STARTED`: a broadcast, no row).
    #[serde(rename = "type")]
    pub notification_type: &'static str,
}

/// The 14 input topics in the order of the SPEC.
pub fn topics() -> Vec<TopicInfo> {
    EventKind::ALL
        .into_iter()
        .map(|kind| TopicInfo {
            topic: kind.default_topic(),
            notification_type: notification_type(kind),
        })
        .collect()
}

/// The kind of a default topic name.
pub fn kind_of(topic: &str) -> Option<EventKind> {
    EventKind::ALL
        .into_iter()
        .find(|kind| kind.default_topic() == topic)
}

fn notification_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::UserSignedUp => "SYSTEM",
        EventKind::OrderCreated => "ORDER_CREATED",
        EventKind::OrderCancelled => "ORDER_CANCELLED",
        EventKind::PaymentCompleted => "PAYMENT_COMPLETED",
        EventKind::PaymentFailed => "PAYMENT_FAILED",
        EventKind::DeliveryShipped => "DELIVERY_STARTED",
        EventKind::CouponIssued => "COUPON_ISSUED",
        EventKind::TimeDealStarted => "TIMEDEAL_STARTED",
        EventKind::PostLiked => "BLOG_LIKE",
        EventKind::PostCommented => "BLOG_COMMENT",
        EventKind::CommentReplied => "BLOG_REPLY",
        EventKind::UserFollowed => "BLOG_FOLLOW",
        EventKind::TaskCompleted => "PRISM_TASK_COMPLETED",
        EventKind::TaskFailed => "PRISM_TASK_FAILED",
    }
}

/// A number not used by an earlier sample of this or (almost surely) any other process:
/// milliseconds since the epoch with room for a thousand samples each.
fn next_serial() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let millis = chrono::Utc::now().timestamp_millis().unsigned_abs() % 10_000_000_000_000;
        AtomicU64::new(millis * 1000 + rand::random_range(0..1000))
    })
    .fetch_add(1, Ordering::Relaxed)
}

/// A sample record for `user`: (key, value). Time deals are keyed by their id, the rest by
/// the recipient, as the producers do.
pub fn sample(kind: EventKind, user: &str) -> (String, Value) {
    let n = next_serial();
    let order = format!("ORD-{n}");
    let value = match kind {
        EventKind::UserSignedUp => json!({
            "userId": user, "name": user, "email": format!("{user}@example.com"),
        }),
        EventKind::OrderCreated => json!({
            "userId": user, "orderNumber": order, "itemCount": 2, "totalAmount": 45000.00,
            "createdAt": [2026, 2, 6, 10, 0, 0, 123],
        }),
        EventKind::OrderCancelled => json!({
            "userId": user, "orderNumber": order, "cancelReason": "고객 요청",
        }),
        EventKind::PaymentCompleted => json!({
            "userId": user, "paymentNumber": format!("PAY-{n}"), "orderNumber": order,
            "amount": 59000.00, "paymentMethod": "CARD",
        }),
        EventKind::PaymentFailed => json!({
            "userId": user, "paymentNumber": format!("PAY-{n}"), "orderNumber": order,
            "amount": 12900, "failureReason": "카드 한도가 초과되었습니다",
        }),
        EventKind::DeliveryShipped => json!({
            "userId": user, "orderNumber": order, "trackingNumber": format!("TRK{n}"),
            "carrier": "CJ대한통운",
        }),
        EventKind::CouponIssued => json!({
            "userId": user, "couponCode": format!("CPN-{n}"), "couponName": "여름 세일 쿠폰",
            "discountType": "PERCENTAGE", "discountValue": 15,
        }),
        EventKind::TimeDealStarted => {
            let now = chrono::Utc::now();
            let ends = now + chrono::Duration::hours(2);
            json!({
                "timeDealId": n, "timeDealName": "주말 특가",
                "startsAt": now.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "endsAt": ends.format("%Y-%m-%dT%H:%M:%S").to_string(),
            })
        }
        EventKind::PostLiked => json!({
            "authorId": user, "postId": format!("post-{n}"),
            "postTitle": "Rust로 실시간 알림 서비스 만들기: Kafka에서 브라우저까지",
            "likerId": "user-77", "likerName": "김민지", "likeId": format!("like-{n}"),
        }),
        EventKind::PostCommented => json!({
            "authorId": user, "postId": format!("post-{n}"), "postTitle": "STOMP over SockJS 입문",
            "commenterId": "user-78", "commenterName": "이서준", "commentId": format!("comment-{n}"),
            "content": "정말 유익한 글이네요. 다음 편도 기대하겠습니다!",
        }),
        EventKind::CommentReplied => json!({
            "parentCommentAuthorId": user, "postId": format!("post-{n}"),
            "parentCommentId": format!("comment-{n}"), "replierId": "user-79",
            "replierName": "박지호", "replyId": format!("reply-{n}"),
            "content": "좋은 질문 감사합니다. 본문에 예제를 추가했어요.",
        }),
        EventKind::UserFollowed => json!({
            "followeeId": user, "followerId": "user-80", "followerName": "최유나",
            "followId": format!("follow-{n}"),
        }),
        EventKind::TaskCompleted => json!({
            "userId": user, "taskId": n, "boardId": 7, "title": "주간 매출 리포트 요약",
            "agentName": "Analyst",
        }),
        EventKind::TaskFailed => json!({
            "userId": user, "taskId": n, "boardId": 7, "title": "고객 문의 자동 분류",
            "errorMessage": "모델 응답 시간이 초과되었습니다 (30초)",
        }),
    };
    let key = match kind {
        EventKind::TimeDealStarted => n.to_string(),
        _ => user.to_owned(),
    };
    (key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_converts_to_its_notification_type() {
        for info in topics() {
            let kind = kind_of(info.topic).unwrap();
            let (_, value) = sample(kind, "user-1");
            let bytes = serde_json::to_vec(&value).unwrap();
            if kind == EventKind::TimeDealStarted {
                shared::broadcast::time_deal(&bytes).unwrap();
                continue;
            }
            let new = shared::convert::convert(kind, &bytes)
                .unwrap_or_else(|err| panic!("{}: {err}", info.topic))
                .unwrap_or_else(|| panic!("{}: no notification", info.topic));
            assert_eq!(new.kind.as_str(), info.notification_type);
            assert!(!new.message.contains("null"), "{}", new.message);
        }
    }

    #[test]
    fn samples_get_fresh_references() {
        let (_, a) = sample(EventKind::OrderCreated, "u");
        let (_, b) = sample(EventKind::OrderCreated, "u");
        assert_ne!(a["orderNumber"], b["orderNumber"]);
    }
}
