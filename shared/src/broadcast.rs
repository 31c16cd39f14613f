//! The time-deal broadcast (SPEC 2.4, beyond the seed), pure: a `shopping.timedeal.started`
//! event becomes one JSON message for every subscriber of `/topic/timedeals`, with no
//! per-user row. Its keys: `type` (`TIMEDEAL_STARTED`), `title`, `message`, `link`, then the
//! event's own fields as they came (`timeDealId` normalized to a number), for example
//!
//! ```json
//! {"type":"TIMEDEAL_STARTED","title":"타임딜이 시작되었습니다",
//!  "message":"주말 특가 타임딜이 시작되었습니다","link":"/shopping/timedeals/7",
//!  "endsAt":[2026,2,6,12,0],"startsAt":[2026,2,6,10,0],"timeDealId":7,"timeDealName":"주말 특가"}
//! ```

use serde_json::Value;

use crate::convert::InvalidEvent;

/// The title of every time-deal broadcast.
pub const TITLE: &str = "타임딜이 시작되었습니다";

/// Keys the broadcast sets itself; the event's own values of them are dropped.
const OWN_KEYS: [&str; 4] = ["type", "title", "message", "link"];

/// The broadcast JSON of one `shopping.timedeal.started` record value.
pub fn time_deal(value: &[u8]) -> Result<String, InvalidEvent> {
    let Value::Object(mut event) = serde_json::from_slice::<Value>(value)? else {
        return Err(InvalidEvent::NotAnObject);
    };
    let id = match event.get("timeDealId") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or(InvalidEvent::Missing("timeDealId"))?;
    event.insert("timeDealId".into(), Value::from(id));
    let name = event
        .get("timeDealName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let message = match name {
        Some(name) => format!("{name} {TITLE}"),
        None => TITLE.to_owned(),
    };
    // serde_json's map keeps keys sorted; the broadcast's own keys go first by hand.
    let head = serde_json::json!({
        "type": "TIMEDEAL_STARTED",
        "title": TITLE,
        "message": message,
        "link": format!("/shopping/timedeals/{id}"),
    });
    for key in OWN_KEYS {
        event.remove(key);
    }
    let mut text = String::from("{");
    for (n, key) in OWN_KEYS.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(key)?);
        text.push(':');
        text.push_str(&serde_json::to_string(&head[key])?);
    }
    for (key, value) in &event {
        text.push(',');
        text.push_str(&serde_json::to_string(key)?);
        text.push(':');
        text.push_str(&serde_json::to_string(value)?);
    }
    text.push('}');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_deal_becomes_its_broadcast() {
        let event = r#"{"timeDealId":7,"timeDealName":"주말 특가","startsAt":[2026,2,6,10,0],"endsAt":[2026,2,6,12,0]}"#;
        assert_eq!(
            time_deal(event.as_bytes()).unwrap(),
            r#"{"type":"TIMEDEAL_STARTED","title":"타임딜이 시작되었습니다","message":"주말 특가 타임딜이 시작되었습니다","link":"/shopping/timedeals/7","endsAt":[2026,2,6,12,0],"startsAt":[2026,2,6,10,0],"timeDealId":7,"timeDealName":"주말 특가"}"#
        );
    }

    #[test]
    fn the_seed_event_has_only_an_id() {
        let json: Value =
            serde_json::from_str(&time_deal(br#"{"timeDealId":"42","type":"x"}"#).unwrap())
                .unwrap();
        assert_eq!(json["timeDealId"], 42);
        assert_eq!(json["message"], TITLE);
        assert_eq!(
            json["type"], "TIMEDEAL_STARTED",
            "the event cannot override it"
        );
    }

    #[test]
    fn an_event_without_an_id_is_invalid() {
        for bad in [&br#"{}"#[..], br#"{"timeDealId":"x"}"#, b"[1]", b"nope"] {
            assert!(time_deal(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
