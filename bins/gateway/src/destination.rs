//! STOMP destinations a client may use, pure: the user's notifications and read-state
//! queues (both in the `/user/queue/…` and `/user/{ownId}/queue/…` forms), the time-deal
//! topic, and the one application destination a client may SEND to (read marks).

/// The user's notifications queue (SPEC 3).
pub const NOTIFICATIONS: &str = "/user/queue/notifications";
/// The user's read-state queue: a SNAPSHOT of the unread count, then READ / READ_ALL /
/// DELETED events.
pub const STATE: &str = "/user/queue/notification-state";
/// Time deals, broadcast to every subscriber.
pub const TIMEDEALS: &str = "/topic/timedeals";
/// Where a client SENDs read marks: `{"ids":[…]}` or `{"all":true}`.
pub const READ: &str = "/app/notifications.read";

/// Most ids one read request may name.
pub const MAX_READ_IDS: usize = 100;

/// What a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Notifications,
    State,
    TimeDeals,
}

impl Target {
    /// Whether it listens to the user's own channel (rather than a broadcast).
    pub fn is_personal(self) -> bool {
        matches!(self, Target::Notifications | Target::State)
    }
}

/// A SUBSCRIBE destination: its target, and the user it names (`/user/{id}/…` forms).
pub fn parse(destination: &str) -> Option<(Target, Option<&str>)> {
    match destination {
        NOTIFICATIONS => return Some((Target::Notifications, None)),
        STATE => return Some((Target::State, None)),
        TIMEDEALS => return Some((Target::TimeDeals, None)),
        _ => {}
    }
    let rest = destination.strip_prefix("/user/")?;
    let (user, queue) = rest.split_once('/')?;
    if user.is_empty() {
        return None;
    }
    match queue {
        "queue/notifications" => Some((Target::Notifications, Some(user))),
        "queue/notification-state" => Some((Target::State, Some(user))),
        _ => None,
    }
}

/// A read request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    Ids(Vec<i64>),
    All,
}

/// Parses `{"ids":[1,2]}` or `{"all":true}`; `Err` says why not.
pub fn read_request(body: &[u8]) -> Result<ReadRequest, &'static str> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        ids: Option<Vec<i64>>,
        all: Option<bool>,
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|_| "A read request is {\"ids\":[…]} or {\"all\":true}")?;
    match (body.ids, body.all) {
        (None, Some(true)) => Ok(ReadRequest::All),
        (Some(ids), None | Some(false)) if ids.is_empty() => {
            Err("A read request names at least one id")
        }
        (Some(ids), None | Some(false)) if ids.len() > MAX_READ_IDS => {
            Err("A read request names at most 100 ids")
        }
        (Some(ids), None | Some(false)) => Ok(ReadRequest::Ids(ids)),
        _ => Err("A read request is {\"ids\":[…]} or {\"all\":true}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_in_both_forms() {
        assert_eq!(parse(NOTIFICATIONS), Some((Target::Notifications, None)));
        assert_eq!(
            parse("/user/u1/queue/notifications"),
            Some((Target::Notifications, Some("u1")))
        );
        assert_eq!(parse(STATE), Some((Target::State, None)));
        assert_eq!(
            parse("/user/u1/queue/notification-state"),
            Some((Target::State, Some("u1")))
        );
        assert_eq!(parse(TIMEDEALS), Some((Target::TimeDeals, None)));
        for refused in [
            "/topic/anything",
            "/queue/notifications",
            "/user//queue/notifications",
            "/user/a/b/queue/notifications",
            "/user/u1/queue/other",
            "/app/notifications.read",
            "/topic/timedeals/x",
        ] {
            assert_eq!(parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn read_requests_name_ids_or_all() {
        assert_eq!(
            read_request(br#"{"ids":[3,1]}"#),
            Ok(ReadRequest::Ids(vec![3, 1]))
        );
        assert_eq!(read_request(br#"{"all":true}"#), Ok(ReadRequest::All));
        let many = format!("{{\"ids\":[{}]}}", vec!["1"; 101].join(","));
        for bad in [
            &b"{}"[..],
            br#"{"ids":[]}"#,
            br#"{"all":false}"#,
            br#"{"ids":["1"]}"#,
            br#"{"ids":[1],"all":true}"#,
            br#"{"ids":[1],"x":1}"#,
            b"not json",
            many.as_bytes(),
        ] {
            assert!(
                read_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
