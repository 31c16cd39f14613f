//! The pure converter of SPEC 2.1: one event's JSON → the notification it produces.
//!
//! No clock and no I/O: the same bytes always give the same result, so a replayed record
//! converts to the same notification (and the same dedup key).

use serde::de::DeserializeOwned;

use crate::event::{self, Amount, EventKind, Int, Text};
use crate::notification::{NewNotification, NotificationType};
use crate::number::{self, Decimal, NumberError};

/// Column limits of the `notifications` table; longer values are refused, never truncated.
const MAX_USER_ID_CHARS: usize = 64;
const MAX_REFERENCE_ID_CHARS: usize = 100;
const MAX_LINK_CHARS: usize = 500;
/// `TEXT` holds 65 535 bytes.
const MAX_MESSAGE_BYTES: usize = 65_535;

/// An event that can never become a notification. Disposition: dead-letter at once, do not
/// retry (retrying the same bytes gives the same answer).
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    #[error("value is not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("value is not a JSON object")]
    NotAnObject,
    #[error("value is not UTF-8 text: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("required field `{0}` is missing or blank")]
    Missing(&'static str),
    #[error("field `{field}` is not a valid number: {source}")]
    Number {
        field: &'static str,
        source: NumberError,
    },
    #[error("field `{field}` is too long: {len} (at most {max})")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl InvalidEvent {
    /// A stable name of the error kind (the DLT's `kafka_dlt-exception-fqcn` header).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidEvent::Json(_) | InvalidEvent::NotAnObject | InvalidEvent::NotUtf8(_) => {
                "InvalidEvent.MalformedJson"
            }
            InvalidEvent::Missing(_) => "InvalidEvent.MissingField",
            InvalidEvent::Number { .. } => "InvalidEvent.InvalidNumber",
            InvalidEvent::TooLong { .. } => "InvalidEvent.FieldTooLong",
        }
    }
}

/// Converts one record value of the topic carrying `kind`.
///
/// `Ok(None)` means the event is valid but makes no per-user notification
/// (`shopping.timedeal.started`).
pub fn convert(kind: EventKind, value: &[u8]) -> Result<Option<NewNotification>, InvalidEvent> {
    let notification = match kind {
        EventKind::UserSignedUp => signed_up(decode(value)?)?,
        EventKind::OrderCreated => order_created(decode(value)?)?,
        EventKind::OrderCancelled => order_cancelled(decode(value)?)?,
        EventKind::PaymentCompleted => payment_completed(decode(value)?)?,
        EventKind::PaymentFailed => payment_failed(decode(value)?)?,
        EventKind::DeliveryShipped => delivery_shipped(decode(value)?)?,
        EventKind::CouponIssued => coupon_issued(decode(value)?)?,
        EventKind::TimeDealStarted => {
            decode::<serde::de::IgnoredAny>(value)?;
            return Ok(None);
        }
        EventKind::PostLiked => post_liked(decode(value)?)?,
        EventKind::PostCommented => post_commented(decode(value)?)?,
        EventKind::CommentReplied => comment_replied(decode(value)?)?,
        EventKind::UserFollowed => user_followed(decode(value)?)?,
        EventKind::TaskCompleted => task_completed(decode(value)?)?,
        EventKind::TaskFailed => task_failed(decode(value)?)?,
    };
    check_lengths(&notification)?;
    Ok(Some(notification))
}

/// `cut(s, n)`: more than `n` characters → the first `n` + `...`. Counts Unicode scalar
/// values, so a character is never split.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, InvalidEvent> {
    // JSON is UTF-8 (RFC 8259). serde_json checks the strings it keeps, not those it skips
    // (fields no converter reads), so the whole value is checked first: a record with bad
    // bytes anywhere is refused, never half-read.
    let text = std::str::from_utf8(value)?;
    // A struct would also accept a JSON array (positional fields); only objects are events.
    match text.bytes().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(serde_json::from_str(text)?),
        _ => Err(InvalidEvent::NotAnObject),
    }
}

/// A field that must be present and not blank (recipients and link/reference parts).
fn required<'a>(text: &'a Text, field: &'static str) -> Result<&'a str, InvalidEvent> {
    match text.0.as_deref() {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(InvalidEvent::Missing(field)),
    }
}

fn required_int(int: Int, field: &'static str) -> Result<i64, InvalidEvent> {
    int.0.ok_or(InvalidEvent::Missing(field))
}

/// Display text: missing renders as the empty string, never `null`.
fn shown(text: &Text) -> &str {
    text.0.as_deref().unwrap_or("")
}

/// Display text that may be absent: `None` when missing or blank.
fn optional(text: &Text) -> Option<&str> {
    text.0.as_deref().filter(|v| !v.trim().is_empty())
}

/// `price(x)` of a money field; missing → `0`.
fn price(amount: &Amount, field: &'static str) -> Result<String, InvalidEvent> {
    let value = amount
        .decimal()
        .map_err(|source| InvalidEvent::Number { field, source })?
        .unwrap_or_else(Decimal::zero);
    Ok(number::price(&value))
}

fn notification(
    user_id: &str,
    kind: NotificationType,
    title: &str,
    message: String,
    link: Option<String>,
    reference: Option<(&str, &str)>,
) -> NewNotification {
    NewNotification {
        user_id: user_id.to_owned(),
        kind,
        title: title.to_owned(),
        message,
        link,
        reference_id: reference.map(|(id, _)| id.to_owned()),
        reference_type: reference.map(|(_, kind)| kind.to_owned()),
    }
}

fn order_link(order_number: &str) -> Option<String> {
    Some(format!("/shopping/orders/{order_number}"))
}

fn signed_up(e: event::UserSignedUp) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let message = format!(
        "{}님, Portal Universe에 가입해주셔서 감사합니다.",
        shown(&e.name)
    );
    Ok(notification(
        user,
        NotificationType::SYSTEM,
        "환영합니다!",
        message,
        None,
        None,
    ))
}

fn order_created(e: event::OrderCreated) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let order = required(&e.order_number, "orderNumber")?;
    let items = e.item_count.0.unwrap_or(0);
    let total = price(&e.total_amount, "totalAmount")?;
    Ok(notification(
        user,
        NotificationType::ORDER_CREATED,
        "주문이 접수되었습니다",
        format!("{items}개 상품, {total}원 결제 대기중"),
        order_link(order),
        Some((order, "order")),
    ))
}

fn order_cancelled(e: event::OrderCancelled) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let order = required(&e.order_number, "orderNumber")?;
    let message = match optional(&e.cancel_reason) {
        Some(reason) => format!("주문번호: {order} - {reason}"),
        None => format!("주문번호: {order}"),
    };
    Ok(notification(
        user,
        NotificationType::ORDER_CANCELLED,
        "주문이 취소되었습니다",
        message,
        order_link(order),
        Some((order, "order")),
    ))
}

fn payment_completed(e: event::PaymentCompleted) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let payment = required(&e.payment_number, "paymentNumber")?;
    let order = required(&e.order_number, "orderNumber")?;
    let amount = price(&e.amount, "amount")?;
    Ok(notification(
        user,
        NotificationType::PAYMENT_COMPLETED,
        "결제가 완료되었습니다",
        format!("{amount}원 결제 완료"),
        order_link(order),
        Some((payment, "payment")),
    ))
}

fn payment_failed(e: event::PaymentFailed) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let payment = required(&e.payment_number, "paymentNumber")?;
    let order = required(&e.order_number, "orderNumber")?;
    Ok(notification(
        user,
        NotificationType::PAYMENT_FAILED,
        "결제가 실패했습니다",
        format!("사유: {}", cut(shown(&e.failure_reason), 50)),
        order_link(order),
        Some((payment, "payment")),
    ))
}

fn delivery_shipped(e: event::DeliveryShipped) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let order = required(&e.order_number, "orderNumber")?;
    let tracking = required(&e.tracking_number, "trackingNumber")?;
    Ok(notification(
        user,
        NotificationType::DELIVERY_STARTED,
        "배송이 시작되었습니다",
        format!("운송장번호: {tracking} ({})", shown(&e.carrier)),
        order_link(order),
        Some((tracking, "delivery")),
    ))
}

fn coupon_issued(e: event::CouponIssued) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let code = required(&e.coupon_code, "couponCode")?;
    let value = e.discount_value.0.unwrap_or(0);
    let discount = if e.discount_type.0.as_deref() == Some("PERCENTAGE") {
        format!("{value}%")
    } else {
        format!("{}원", number::price(&Decimal::from(value)))
    };
    Ok(notification(
        user,
        NotificationType::COUPON_ISSUED,
        "쿠폰이 발급되었습니다",
        format!("{} - {discount}할인", shown(&e.coupon_name)),
        Some("/shopping/coupons".to_owned()),
        Some((code, "coupon")),
    ))
}

fn post_liked(e: event::PostLiked) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.author_id, "authorId")?;
    let post = required(&e.post_id, "postId")?;
    let like = required(&e.like_id, "likeId")?;
    let message = format!(
        "\"{}\"에 {}님이 좋아요를 눌렀습니다",
        cut(shown(&e.post_title), 30),
        shown(&e.liker_name)
    );
    Ok(notification(
        user,
        NotificationType::BLOG_LIKE,
        "게시글에 좋아요가 달렸습니다",
        message,
        Some(format!("/blog/{post}")),
        Some((like, "like")),
    ))
}

fn post_commented(e: event::PostCommented) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.author_id, "authorId")?;
    let post = required(&e.post_id, "postId")?;
    let comment = required(&e.comment_id, "commentId")?;
    let message = format!(
        "\"{}\"에 {}님이 댓글을 달았습니다: {}",
        cut(shown(&e.post_title), 20),
        shown(&e.commenter_name),
        cut(shown(&e.content), 30)
    );
    Ok(notification(
        user,
        NotificationType::BLOG_COMMENT,
        "게시글에 새 댓글이 달렸습니다",
        message,
        Some(format!("/blog/{post}")),
        Some((comment, "comment")),
    ))
}

fn comment_replied(e: event::CommentReplied) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.parent_comment_author_id, "parentCommentAuthorId")?;
    let post = required(&e.post_id, "postId")?;
    let parent = required(&e.parent_comment_id, "parentCommentId")?;
    let reply = required(&e.reply_id, "replyId")?;
    let message = format!(
        "{}님이 회원님의 댓글에 답글을 달았습니다: {}",
        shown(&e.replier_name),
        cut(shown(&e.content), 40)
    );
    Ok(notification(
        user,
        NotificationType::BLOG_REPLY,
        "댓글에 답글이 달렸습니다",
        message,
        Some(format!("/blog/{post}#comment-{parent}")),
        Some((reply, "reply")),
    ))
}

fn user_followed(e: event::UserFollowed) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.followee_id, "followeeId")?;
    let follow = required(&e.follow_id, "followId")?;
    Ok(notification(
        user,
        NotificationType::BLOG_FOLLOW,
        "새 팔로워가 생겼습니다",
        format!(
            "{}님이 회원님을 팔로우하기 시작했습니다",
            shown(&e.follower_name)
        ),
        Some(format!("/blog/users/{user}/followers")),
        Some((follow, "follow")),
    ))
}

fn task_completed(e: event::Task) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let task = required_int(e.task_id, "taskId")?.to_string();
    let board = required_int(e.board_id, "boardId")?;
    let agent = optional(&e.agent_name).unwrap_or("AI");
    let message = format!(
        "\"{}\" 태스크가 {agent} 에이전트에 의해 완료되었습니다",
        cut(shown(&e.title), 30)
    );
    Ok(notification(
        user,
        NotificationType::PRISM_TASK_COMPLETED,
        "AI 태스크가 완료되었습니다",
        message,
        Some(format!("/prism/boards/{board}/tasks/{task}")),
        Some((&task, "task")),
    ))
}

fn task_failed(e: event::Task) -> Result<NewNotification, InvalidEvent> {
    let user = required(&e.user_id, "userId")?;
    let task = required_int(e.task_id, "taskId")?.to_string();
    let board = required_int(e.board_id, "boardId")?;
    let message = format!(
        "\"{}\" 태스크 실행 실패: {}",
        cut(shown(&e.title), 25),
        cut(shown(&e.error_message), 30)
    );
    Ok(notification(
        user,
        NotificationType::PRISM_TASK_FAILED,
        "AI 태스크가 실패했습니다",
        message,
        Some(format!("/prism/boards/{board}/tasks/{task}")),
        Some((&task, "task")),
    ))
}

fn check_lengths(n: &NewNotification) -> Result<(), InvalidEvent> {
    let too_long = |field, len, max| {
        if len > max {
            Err(InvalidEvent::TooLong { field, len, max })
        } else {
            Ok(())
        }
    };
    too_long("recipient", n.user_id.chars().count(), MAX_USER_ID_CHARS)?;
    let reference_len = n.reference_id.as_deref().map_or(0, |r| r.chars().count());
    too_long("referenceId", reference_len, MAX_REFERENCE_ID_CHARS)?;
    let link_len = n.link.as_deref().map_or(0, |l| l.chars().count());
    too_long("link", link_len, MAX_LINK_CHARS)?;
    too_long("message (bytes)", n.message.len(), MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz properties (`shared::properties`): bad bytes inside a field no
    /// converter reads were skipped unchecked, and the event converted.
    #[test]
    fn a_value_that_is_not_utf8_anywhere_is_refused() {
        let mut value = br#"{"userId":"u1","name":"n","extra":"x"}"#.to_vec();
        let at = value.iter().position(|&b| b == b'x').unwrap();
        value[at] = 0xff;
        let error = convert(EventKind::UserSignedUp, &value).unwrap_err();
        assert!(matches!(error, InvalidEvent::NotUtf8(_)), "{error}");
        assert_eq!(error.kind(), "InvalidEvent.MalformedJson");
        value[at] = b'x';
        assert!(convert(EventKind::UserSignedUp, &value).unwrap().is_some());
    }

    #[test]
    fn cut_counts_characters_not_bytes() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc...");
        assert_eq!(cut("ab", 3), "ab");
        assert_eq!(cut("", 0), "");
        assert_eq!(cut("a", 0), "...");
        assert_eq!(cut("가나다라", 3), "가나다...");
        assert_eq!(cut("😀😀😀", 2), "😀😀...");
    }
}
