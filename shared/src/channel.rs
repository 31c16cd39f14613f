//! Redis channel naming: notifications for user `u` travel on `notification:u` (SPEC 2.3).
//!
//! The prefix is configurable so that tests (and several environments on one Redis) do not
//! hear each other; production keeps the default.

/// The seed's channel prefix.
pub const DEFAULT_PREFIX: &str = "notification:";

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

    /// The user a channel belongs to, if it is one of ours.
    pub fn user_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())
            .filter(|user| !user.is_empty())
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
        assert_eq!(
            channels.user_of("notification:user-abc-def-456"),
            Some("user-abc-def-456")
        );
        assert_eq!(channels.user_of("other-channel:user-123"), None);
        assert_eq!(channels.user_of("notification:"), None);
        assert_eq!(channels.pattern(), "notification:*");
        assert_eq!(Channels::new("t[1]:").pattern(), "t\\[1\\]:*");
    }
}
