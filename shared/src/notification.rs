//! The notification: its type and status enums, the new (unstored) form, the stored form,
//! the dedup key, and the JSON of SPEC 2.5 used for Redis payloads, STOMP bodies and REST.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Zone;

macro_rules! notification_types {
    ($($name:ident,)*) => {
        /// The notification types of the original service, in its order (21 values).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum NotificationType { $($name,)* }

        impl NotificationType {
            /// Every type, in the original enum's order.
            pub const ALL: &'static [NotificationType] = &[$(NotificationType::$name,)*];

            /// The wire and database name (`ORDER_CREATED`).
            pub const fn as_str(self) -> &'static str {
                match self { $(NotificationType::$name => stringify!($name),)* }
            }
        }
    };
}

notification_types! {
    ORDER_CREATED,
    ORDER_CONFIRMED,
    ORDER_CANCELLED,
    DELIVERY_STARTED,
    DELIVERY_IN_TRANSIT,
    DELIVERY_COMPLETED,
    PAYMENT_COMPLETED,
    PAYMENT_FAILED,
    REFUND_COMPLETED,
    COUPON_ISSUED,
    COUPON_EXPIRING,
    TIMEDEAL_STARTING,
    TIMEDEAL_STARTED,
    BLOG_LIKE,
    BLOG_COMMENT,
    BLOG_REPLY,
    BLOG_FOLLOW,
    BLOG_NEW_POST,
    PRISM_TASK_COMPLETED,
    PRISM_TASK_FAILED,
    SYSTEM,
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`NotificationType`] or [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what}: {value:?}")]
pub struct UnknownName {
    what: &'static str,
    value: String,
}

impl FromStr for NotificationType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "notification type",
                value: s.to_owned(),
            })
    }
}

/// Whether the user has read the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Unread,
    Read,
}

impl Status {
    /// The wire and database name (`UNREAD`, `READ`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Unread => "UNREAD",
            Status::Read => "READ",
        }
    }
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "UNREAD" => Ok(Status::Unread),
            "READ" => Ok(Status::Read),
            _ => Err(UnknownName {
                what: "status",
                value: s.to_owned(),
            }),
        }
    }
}

/// A notification produced by the converter, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub user_id: String,
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
    pub link: Option<String>,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
}

/// The dedup identity of a notification: SHA-256 of (userId, type, referenceType,
/// referenceId), each part length-prefixed so no two different tuples share a key.
pub type DedupKey = [u8; 32];

impl NewNotification {
    /// The key of SPEC 2.2; the store's UNIQUE index is on it. A notification without a
    /// reference (the SYSTEM welcome) dedups on (userId, type).
    pub fn dedup_key(&self) -> DedupKey {
        let mut hash = Sha256::new();
        let mut part = |value: Option<&str>| match value {
            None => hash.update([0u8]),
            Some(v) => {
                hash.update([1u8]);
                hash.update((v.len() as u64).to_be_bytes());
                hash.update(v.as_bytes());
            }
        };
        part(Some(&self.user_id));
        part(Some(self.kind.as_str()));
        part(self.reference_type.as_deref());
        part(self.reference_id.as_deref());
        hash.finalize().into()
    }

    /// The JSON of SPEC 2.5 for a notification not stored yet (`id`, `createdAt` null).
    pub fn to_json(&self) -> String {
        NotificationJson {
            id: None,
            user_id: &self.user_id,
            kind: self.kind,
            title: &self.title,
            message: &self.message,
            link: self.link.as_deref(),
            status: Status::Unread,
            reference_id: self.reference_id.as_deref(),
            reference_type: self.reference_type.as_deref(),
            created_at: None,
            read_at: None,
        }
        .render()
    }
}

/// A stored notification, as the database holds it (timestamps in UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub user_id: String,
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
    pub link: Option<String>,
    pub status: Status,
    pub reference_id: Option<String>,
    pub reference_type: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// The JSON of SPEC 2.5 with timestamps shown in `zone`.
    pub fn to_json(&self, zone: &Zone) -> String {
        self.view(zone).render()
    }

    /// The serializable view of SPEC 2.5 (for embedding in larger JSON documents).
    pub fn view(&self, zone: &Zone) -> NotificationJson<'_> {
        NotificationJson {
            id: Some(self.id),
            user_id: &self.user_id,
            kind: self.kind,
            title: &self.title,
            message: &self.message,
            link: self.link.as_deref(),
            status: self.status,
            reference_id: self.reference_id.as_deref(),
            reference_type: self.reference_type.as_deref(),
            created_at: Some(zone.format(self.created_at)),
            read_at: self.read_at.map(|t| zone.format(t)),
        }
    }
}

/// The notification JSON of SPEC 2.5: every key always present, in this order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationJson<'a> {
    pub id: Option<i64>,
    pub user_id: &'a str,
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub title: &'a str,
    pub message: &'a str,
    pub link: Option<&'a str>,
    pub status: Status,
    pub reference_id: Option<&'a str>,
    pub reference_type: Option<&'a str>,
    pub created_at: Option<String>,
    pub read_at: Option<String>,
}

impl NotificationJson<'_> {
    fn render(&self) -> String {
        // Serializing plain strings, numbers and options cannot fail.
        serde_json::to_string(self).expect("notification JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Notification {
        Notification {
            id: 42,
            user_id: "user-123".into(),
            kind: NotificationType::ORDER_CREATED,
            title: "주문이 접수되었습니다".into(),
            message: "2개 상품, 45,000원 결제 대기중".into(),
            link: Some("/shopping/orders/ORD-20260206-001".into()),
            status: Status::Unread,
            reference_id: Some("ORD-20260206-001".into()),
            reference_type: Some("order".into()),
            created_at: Utc.with_ymd_and_hms(2026, 2, 6, 10, 0, 0).unwrap(),
            read_at: None,
        }
    }

    #[test]
    fn json_matches_the_spec_example_byte_for_byte() {
        let expected = r#"{"id":42,"userId":"user-123","type":"ORDER_CREATED","title":"주문이 접수되었습니다","message":"2개 상품, 45,000원 결제 대기중","link":"/shopping/orders/ORD-20260206-001","status":"UNREAD","referenceId":"ORD-20260206-001","referenceType":"order","createdAt":"2026-02-06T10:00:00","readAt":null}"#;
        assert_eq!(sample().to_json(&Zone::utc()), expected);
    }

    #[test]
    fn json_timestamps_follow_the_configured_zone() {
        let mut n = sample();
        n.status = Status::Read;
        n.read_at = Some(Utc.with_ymd_and_hms(2026, 2, 6, 15, 30, 5).unwrap());
        let seoul: Zone = "Asia/Seoul".parse().unwrap();
        let json: serde_json::Value = serde_json::from_str(&n.to_json(&seoul)).unwrap();
        assert_eq!(json["createdAt"], "2026-02-06T19:00:00");
        assert_eq!(json["readAt"], "2026-02-07T00:30:05");
        assert_eq!(json["status"], "READ");
    }

    #[test]
    fn there_are_21_types_each_with_a_round_trip_name() {
        assert_eq!(NotificationType::ALL.len(), 21);
        assert_eq!(NotificationType::ALL[0], NotificationType::ORDER_CREATED);
        assert_eq!(NotificationType::ALL[20], NotificationType::SYSTEM);
        for t in NotificationType::ALL {
            assert_eq!(t.as_str().parse::<NotificationType>().unwrap(), *t);
            assert_eq!(serde_json::to_string(t).unwrap(), format!("\"{t}\""));
        }
        assert!("order_created".parse::<NotificationType>().is_err());
    }

    #[test]
    fn status_names_round_trip() {
        for s in [Status::Unread, Status::Read] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("read".parse::<Status>().is_err());
    }

    #[test]
    fn dedup_key_includes_the_type_and_separates_the_parts() {
        let created = NewNotification {
            user_id: "u1".into(),
            kind: NotificationType::ORDER_CREATED,
            title: "t".into(),
            message: "m".into(),
            link: None,
            reference_id: Some("ORD-1".into()),
            reference_type: Some("order".into()),
        };
        let mut cancelled = created.clone();
        cancelled.kind = NotificationType::ORDER_CANCELLED;
        assert_ne!(created.dedup_key(), cancelled.dedup_key());

        let mut other_text = created.clone();
        other_text.message = "different message".into();
        assert_eq!(created.dedup_key(), other_text.dedup_key());

        let mut shifted = created.clone();
        shifted.user_id = "u1o".into();
        shifted.reference_type = Some("rder".into());
        assert_ne!(created.dedup_key(), shifted.dedup_key());

        let mut no_ref = created.clone();
        no_ref.reference_id = None;
        no_ref.reference_type = None;
        let mut empty_ref = no_ref.clone();
        empty_ref.reference_id = Some(String::new());
        empty_ref.reference_type = Some(String::new());
        assert_ne!(no_ref.dedup_key(), empty_ref.dedup_key());
    }
}
