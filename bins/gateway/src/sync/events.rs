//! Read-state events (`/user/queue/notification-state`): `{"event":"SNAPSHOT",
//! "unreadCount":n}` when a session subscribes, then `READ`, `READ_ALL` and `DELETED` with
//! the ids that changed and the unread count read in the transaction that changed them.
//! They travel on the user's own Redis channel (one subscription per user per instance);
//! the gateway tells them from notifications by their first key (`{"event":`).

use prometheus::IntCounter;
use serde::Serialize;
use shared::channel::Channels;
use shared::redis_link::RedisConn;

/// One state event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    Snapshot { unread: u64 },
    Read { ids: Vec<i64>, unread: u64 },
    ReadAll { unread: u64 },
    Deleted { ids: Vec<i64>, unread: u64 },
}

impl StateEvent {
    /// The event's JSON (its first key is `event`).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Json<'a> {
            event: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            ids: Option<&'a [i64]>,
            unread_count: u64,
        }
        let (event, ids, unread) = match self {
            StateEvent::Snapshot { unread } => ("SNAPSHOT", None, *unread),
            StateEvent::Read { ids, unread } => ("READ", Some(ids.as_slice()), *unread),
            StateEvent::ReadAll { unread } => ("READ_ALL", Some(&[][..]), *unread),
            StateEvent::Deleted { ids, unread } => ("DELETED", Some(ids.as_slice()), *unread),
        };
        serde_json::to_string(&Json {
            event,
            ids,
            unread_count: unread,
        })
        .expect("state event JSON")
    }
}

/// Publishes state events on users' channels.
#[derive(Clone)]
pub struct Publisher {
    redis: RedisConn,
    channels: Channels,
    published: IntCounter,
}

impl Publisher {
    pub fn new(redis: RedisConn, channels: Channels, published: IntCounter) -> Self {
        Publisher {
            redis,
            channels,
            published,
        }
    }

    /// Publishes `event` to every session of `user`. A failure is logged: the change is
    /// stored, and sessions catch up with the next event or their next SNAPSHOT.
    pub async fn publish(&self, user: &str, event: &StateEvent) {
        if !Channels::is_user_id(user) {
            return; // a reserved id has no channel of its own
        }
        let result = self
            .redis
            .publish(&self.channels.for_user(user), &event.to_json())
            .await;
        match result {
            Ok(_) => self.published.inc(),
            Err(err) => tracing::warn!(%err, "state event not published"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_as_documented() {
        assert_eq!(
            StateEvent::Snapshot { unread: 3 }.to_json(),
            r#"{"event":"SNAPSHOT","unreadCount":3}"#
        );
        assert_eq!(
            StateEvent::Read {
                ids: vec![4, 7],
                unread: 1
            }
            .to_json(),
            r#"{"event":"READ","ids":[4,7],"unreadCount":1}"#
        );
        assert_eq!(
            StateEvent::ReadAll { unread: 0 }.to_json(),
            r#"{"event":"READ_ALL","ids":[],"unreadCount":0}"#
        );
        assert_eq!(
            StateEvent::Deleted {
                ids: vec![9],
                unread: 2
            }
            .to_json(),
            r#"{"event":"DELETED","ids":[9],"unreadCount":2}"#
        );
        for event in [
            StateEvent::Snapshot { unread: 0 },
            StateEvent::ReadAll { unread: 0 },
        ] {
            assert!(shared::channel::is_state_event(&event.to_json()));
        }
    }
}
