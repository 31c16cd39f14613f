//! Recovery after a reconnect: a SUBSCRIBE with `last-id:n` gets the user's notifications
//! with `id > n` from the store (the newest `WS_RECOVERY_MAX`, oldest first; the first
//! carries `recovery-truncated:true` when more were missed, so the client reloads page 1),
//! then live ones. The Redis subscription is confirmed before the query runs and live
//! messages wait in the session's queue meanwhile, so nothing falls between the two; a
//! live notification already sent by the recovery is dropped (by id: notifications of one
//! user can arrive out of id order) for `DEDUP_WINDOW` after it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The header on the first recovered MESSAGE when the cap cut the list.
pub const TRUNCATED_HEADER: (&str, &str) = ("recovery-truncated", "true");

/// How long live copies of recovered notifications are recognised. Ingest publishes right
/// after its commit, so a copy arrives within moments of the recovery query; a replayed
/// publish later than this reaches the client, which dedups by id (SPEC 2.2).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(30);

/// Where a recovery stands when it calls its [`Hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The channel is confirmed; the store query is next.
    BeforeQuery,
    /// The query has answered; nothing is sent yet.
    AfterQuery,
}

/// Lets a test act at a precise point of every recovery (publish while the query runs,
/// say): the engine awaits it at each [`Phase`]. Only code can set it; no configuration
/// reaches it.
#[derive(Clone)]
pub struct Hook(Arc<HookFn>);

type HookFn = dyn Fn(Phase) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

impl Hook {
    pub fn new<F, Fut>(hook: F) -> Hook
    where
        F: Fn(Phase) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Hook(Arc::new(move |phase| Box::pin(hook(phase))))
    }

    pub async fn reached(&self, phase: Phase) {
        (self.0)(phase).await
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

/// The ids a recovery sent, until the window closes.
#[derive(Debug, Clone)]
pub struct Recent {
    ids: Vec<i64>,
    until: Instant,
}

impl Recent {
    pub fn new(mut ids: Vec<i64>, now: Instant) -> Recent {
        ids.sort_unstable();
        Recent {
            ids,
            until: now + DEDUP_WINDOW,
        }
    }

    /// The ids it holds.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.iter().copied()
    }

    /// Whether the window has closed.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.until
    }

    /// Whether notification JSON `json` was sent by the recovery.
    pub fn sent(&self, json: &str) -> bool {
        leading_id(json).is_some_and(|id| self.ids.binary_search(&id).is_ok())
    }
}

/// The id of notification JSON (SPEC 2.5 starts with `{"id":`), read without parsing all.
pub fn leading_id(json: &str) -> Option<i64> {
    let rest = json.strip_prefix("{\"id\":")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_the_front_of_the_json() {
        assert_eq!(leading_id(r#"{"id":42,"userId":"u"}"#), Some(42));
        assert_eq!(leading_id(r#"{"event":"READ"}"#), None);
        assert_eq!(leading_id(r#"{"id":null}"#), None);
        let now = Instant::now();
        let recent = Recent::new(vec![9, 3, 5], now);
        assert!(recent.sent(r#"{"id":5,"x":1}"#));
        assert!(!recent.sent(r#"{"id":4,"x":1}"#));
        assert!(!recent.expired(now + Duration::from_secs(29)));
        assert!(recent.expired(now + DEDUP_WINDOW));
    }
}
