//! Kafka input: the 14 event kinds, their default topic names, and tolerant payload decoding.
//!
//! The topic decides the event kind; keys and headers (Spring's `__TypeId__` included) are
//! ignored. Decoding follows SPEC 2: unknown fields and time fields are ignored, ids sent as
//! JSON numbers become their decimal text, and money stays exact (see [`crate::number`]).

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::number::{Decimal, NumberError};

/// The kinds of event the pipeline consumes, one per input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    UserSignedUp,
    OrderCreated,
    OrderCancelled,
    PaymentCompleted,
    PaymentFailed,
    DeliveryShipped,
    CouponIssued,
    TimeDealStarted,
    PostLiked,
    PostCommented,
    CommentReplied,
    UserFollowed,
    TaskCompleted,
    TaskFailed,
}

impl EventKind {
    /// Every kind, in the order of SPEC 2.
    pub const ALL: [EventKind; 14] = [
        EventKind::UserSignedUp,
        EventKind::OrderCreated,
        EventKind::OrderCancelled,
        EventKind::PaymentCompleted,
        EventKind::PaymentFailed,
        EventKind::DeliveryShipped,
        EventKind::CouponIssued,
        EventKind::TimeDealStarted,
        EventKind::PostLiked,
        EventKind::PostCommented,
        EventKind::CommentReplied,
        EventKind::UserFollowed,
        EventKind::TaskCompleted,
        EventKind::TaskFailed,
    ];

    /// The seed's topic name for this kind (the default).
    pub const fn default_topic(self) -> &'static str {
        match self {
            EventKind::UserSignedUp => "user-signup",
            EventKind::OrderCreated => "shopping.order.created",
            EventKind::OrderCancelled => "shopping.order.cancelled",
            EventKind::PaymentCompleted => "shopping.payment.completed",
            EventKind::PaymentFailed => "shopping.payment.failed",
            EventKind::DeliveryShipped => "shopping.delivery.shipped",
            EventKind::CouponIssued => "shopping.coupon.issued",
            EventKind::TimeDealStarted => "shopping.timedeal.started",
            EventKind::PostLiked => "blog.post.liked",
            EventKind::PostCommented => "blog.post.commented",
            EventKind::CommentReplied => "blog.comment.replied",
            EventKind::UserFollowed => "blog.user.followed",
            EventKind::TaskCompleted => "prism.task.completed",
            EventKind::TaskFailed => "prism.task.failed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which topic carries which event kind. Starts from the seed's names; any can be renamed.
#[derive(Debug, Clone)]
pub struct TopicMap {
    by_kind: HashMap<EventKind, String>,
}

impl Default for TopicMap {
    fn default() -> Self {
        let by_kind = EventKind::ALL
            .iter()
            .map(|kind| (*kind, kind.default_topic().to_owned()))
            .collect();
        TopicMap { by_kind }
    }
}

impl TopicMap {
    /// Renames the topic of one kind.
    pub fn set(&mut self, kind: EventKind, topic: impl Into<String>) {
        self.by_kind.insert(kind, topic.into());
    }

    /// The topic that carries `kind`.
    pub fn topic(&self, kind: EventKind) -> &str {
        &self.by_kind[&kind]
    }

    /// The kind carried by `topic`, if it is one of ours.
    pub fn kind(&self, topic: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| self.by_kind[kind] == topic)
    }

    /// All topic names, in the order of [`EventKind::ALL`].
    pub fn topics(&self) -> Vec<&str> {
        EventKind::ALL
            .iter()
            .map(|kind| self.topic(*kind))
            .collect()
    }

    /// Fails when two kinds share one topic (the topic must decide the kind).
    pub fn validate(&self) -> Result<(), String> {
        let topics = self.topics();
        for (i, topic) in topics.iter().enumerate() {
            if topic.trim().is_empty() {
                return Err(format!("the topic of {} is empty", EventKind::ALL[i]));
            }
            if topics[..i].contains(topic) {
                return Err(format!("topic {topic:?} is configured for two event kinds"));
            }
        }
        Ok(())
    }
}

/// A text field as producers send it: a string, or an id sent as a JSON number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
                    Ok(Text(Some(format!("{v:.0}"))))
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
                d.deserialize_any(TextVisitor)
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// An integer field (`taskId`, `itemCount`, ...): a JSON integer or a string of digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int(pub Option<i64>);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl<'de> Visitor<'de> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or null")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(|v| Int(Some(v)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
                    Ok(Int(Some(v as i64)))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                v.parse()
                    .map(|v| Int(Some(v)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Int, E> {
                Ok(Int(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Int, D::Error> {
                d.deserialize_any(IntVisitor)
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// A money field, kept as the exact JSON text (`59000.00`, `1e3`) until formatted.
#[derive(Debug, Default)]
pub struct Amount(pub Option<Box<RawValue>>);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<Box<RawValue>>::deserialize(deserializer).map(Amount)
    }
}

impl Amount {
    /// The exact value: `None` when absent or null. A number, or a string holding one.
    pub fn decimal(&self) -> Result<Option<Decimal>, NumberError> {
        let Some(raw) = &self.0 else {
            return Ok(None);
        };
        let text = raw.get().trim();
        if text == "null" {
            return Ok(None);
        }
        if text.starts_with('"') {
            let inner: String =
                serde_json::from_str(text).map_err(|_| NumberError::Syntax(text.to_owned()))?;
            return Decimal::parse(inner.trim()).map(Some);
        }
        Decimal::parse(text).map(Some)
    }
}

/// `user-signup`: UserSignedUpEvent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSignedUp {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub name: Text,
}

/// `shopping.order.created`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub order_number: Text,
    #[serde(default)]
    pub item_count: Int,
    #[serde(default)]
    pub total_amount: Amount,
}

/// `shopping.order.cancelled`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub order_number: Text,
    #[serde(default)]
    pub cancel_reason: Text,
}

/// `shopping.payment.completed`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub payment_number: Text,
    #[serde(default)]
    pub order_number: Text,
    #[serde(default)]
    pub amount: Amount,
}

/// `shopping.payment.failed`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub payment_number: Text,
    #[serde(default)]
    pub order_number: Text,
    #[serde(default)]
    pub failure_reason: Text,
}

/// `shopping.delivery.shipped`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryShipped {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub order_number: Text,
    #[serde(default)]
    pub tracking_number: Text,
    #[serde(default)]
    pub carrier: Text,
}

/// `shopping.coupon.issued` (`userId` may be a string or a number).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponIssued {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub coupon_code: Text,
    #[serde(default)]
    pub coupon_name: Text,
    #[serde(default)]
    pub discount_type: Text,
    #[serde(default)]
    pub discount_value: Int,
}

/// `blog.post.liked`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostLiked {
    #[serde(default)]
    pub author_id: Text,
    #[serde(default)]
    pub post_id: Text,
    #[serde(default)]
    pub post_title: Text,
    #[serde(default)]
    pub liker_name: Text,
    #[serde(default)]
    pub like_id: Text,
}

/// `blog.post.commented`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostCommented {
    #[serde(default)]
    pub author_id: Text,
    #[serde(default)]
    pub post_id: Text,
    #[serde(default)]
    pub post_title: Text,
    #[serde(default)]
    pub commenter_name: Text,
    #[serde(default)]
    pub comment_id: Text,
    #[serde(default)]
    pub content: Text,
}

/// `blog.comment.replied`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentReplied {
    #[serde(default)]
    pub parent_comment_author_id: Text,
    #[serde(default)]
    pub post_id: Text,
    #[serde(default)]
    pub parent_comment_id: Text,
    #[serde(default)]
    pub replier_name: Text,
    #[serde(default)]
    pub reply_id: Text,
    #[serde(default)]
    pub content: Text,
}

/// `blog.user.followed`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserFollowed {
    #[serde(default)]
    pub followee_id: Text,
    #[serde(default)]
    pub follower_name: Text,
    #[serde(default)]
    pub follow_id: Text,
}

/// `prism.task.completed` and `prism.task.failed` (the NestJS producer; no type header).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub user_id: Text,
    #[serde(default)]
    pub task_id: Int,
    #[serde(default)]
    pub board_id: Int,
    #[serde(default)]
    pub title: Text,
    #[serde(default)]
    pub agent_name: Text,
    #[serde(default)]
    pub error_message: Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topics_are_the_seed_names_and_map_back_to_their_kind() {
        let map = TopicMap::default();
        assert_eq!(map.topics().len(), 14);
        map.validate().unwrap();
        for kind in EventKind::ALL {
            assert_eq!(map.kind(kind.default_topic()), Some(kind));
        }
        assert_eq!(map.kind("auth.user.signed-up"), None);
    }

    #[test]
    fn a_renamed_topic_replaces_the_default() {
        let mut map = TopicMap::default();
        map.set(EventKind::UserSignedUp, "auth.user.signed-up");
        assert_eq!(
            map.kind("auth.user.signed-up"),
            Some(EventKind::UserSignedUp)
        );
        assert_eq!(map.kind("user-signup"), None);
    }

    #[test]
    fn two_kinds_on_one_topic_are_refused() {
        let mut map = TopicMap::default();
        map.set(EventKind::OrderCancelled, "shopping.order.created");
        assert!(map.validate().is_err());
    }

    #[test]
    fn text_accepts_numbers_as_their_decimal_string() {
        let e: CouponIssued = serde_json::from_str(r#"{"userId":100}"#).unwrap();
        assert_eq!(e.user_id, Text(Some("100".into())));
        let e: CouponIssued = serde_json::from_str(r#"{"userId":"100"}"#).unwrap();
        assert_eq!(e.user_id, Text(Some("100".into())));
        let e: CouponIssued = serde_json::from_str(r#"{"userId":null}"#).unwrap();
        assert_eq!(e.user_id, Text(None));
        assert!(serde_json::from_str::<CouponIssued>(r#"{"userId":{"a":1}}"#).is_err());
        assert!(serde_json::from_str::<CouponIssued>(r#"{"userId":true}"#).is_err());
    }

    #[test]
    fn ints_accept_integers_and_digit_strings_only() {
        let t: Task = serde_json::from_str(r#"{"taskId":42,"boardId":"10"}"#).unwrap();
        assert_eq!((t.task_id, t.board_id), (Int(Some(42)), Int(Some(10))));
        assert!(serde_json::from_str::<Task>(r#"{"taskId":4.5}"#).is_err());
        assert!(serde_json::from_str::<Task>(r#"{"taskId":"x"}"#).is_err());
    }

    #[test]
    fn amounts_keep_their_exact_text() {
        let e: OrderCreated =
            serde_json::from_str(r#"{"totalAmount":59000.00,"createdAt":[2026,2,6,10,0,0,123]}"#)
                .unwrap();
        assert_eq!(e.total_amount.0.as_ref().unwrap().get(), "59000.00");
        let e: OrderCreated = serde_json::from_str(r#"{"totalAmount":null}"#).unwrap();
        assert_eq!(e.total_amount.decimal().unwrap(), None);
        let e: OrderCreated = serde_json::from_str(r#"{"totalAmount":"1234.5"}"#).unwrap();
        assert!(e.total_amount.decimal().unwrap().is_some());
        let e: OrderCreated = serde_json::from_str(r#"{"totalAmount":[1]}"#).unwrap();
        assert!(e.total_amount.decimal().is_err());
    }
}
