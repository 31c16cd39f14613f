//! Redis channel naming: notifications for user `u` travel on `notification:u` (SPEC 2.3),
//! with the user's state events (read marks, deletions: JSON objects that start with
//! `{"event":`) on the same channel; broadcasts on `notification:broadcast:{topic}`
//! (time deals: `notification:broadcast:timedeals`). User ids starting with `broadcast:`
//! are reserved, so no user's channel is a broadcast channel.
//!
//! The prefix is configurable so that tests (and several environments on one Redis) do not
//! hear each other; production keeps the default.

/// The seed's channel prefix.
pub const DEFAULT_PREFIX: &str = "notification:";

/// What follows the prefix in a broadcast channel's name.
const BROADCAST: &str = "broadcast:";

/// The broadcast topic of time deals.
pub const TIMEDEALS: &str = "timedeals";

/// Whether a payload on a user's channel is a state event rather than a notification (the
/// notification JSON always starts with `{"id":`).
pub fn is_state_event(payload: &str) -> bool {
    payload.starts_with("{\"event\":")
}

/// Channel names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    prefix: String,
}

impl Default for Channels {
    fn default() -> Self {
        Channels::new(DEFAULT_PREFIX)
    }
}

impl Channels {
    pub fn new(prefix: impl Into<String>) -> Self {
        Channels {
            prefix: prefix.into(),
        }
    }

    /// The channel of one user's notifications.
    pub fn for_user(&self, user_id: &str) -> String {
        format!("{}{user_id}", self.prefix)
    }

    /// Whether `user_id` may have a channel (ids starting with `broadcast:` are reserved).
    pub fn is_user_id(user_id: &str) -> bool {
        !user_id.is_empty() && !user_id.starts_with(BROADCAST)
    }

    /// The channel of a broadcast topic (`timedeals`).
    pub fn broadcast(&self, topic: &str) -> String {
        format!("{}{BROADCAST}{topic}", self.prefix)
    }

    /// The prefix every user's channel starts with.
    pub fn user_prefix(&self) -> &str {
        &self.prefix
    }

    /// The `PSUBSCRIBE` pattern matching every user's channel. Glob characters in the
    /// prefix are escaped.
    pub fn pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let channels = Channels::default();
        assert_eq!(channels.for_user("user-123"), "notification:user-123");
        assert_eq!(channels.pattern(), "notification:*");
        assert_eq!(Channels::new("t[1]:").pattern(), "t\\[1\\]:*");
        assert_eq!(
            channels.broadcast(TIMEDEALS),
            "notification:broadcast:timedeals"
        );
        assert!(!Channels::is_user_id("broadcast:timedeals"));
        assert!(Channels::is_user_id("user-1"));
        assert!(is_state_event(
            r#"{"event":"READ","ids":[1],"unreadCount":0}"#
        ));
        assert!(!is_state_event(r#"{"id":1,"userId":"u"}"#));
    }
}
