//! Properties of the event converter on arbitrary bytes, shared by the fuzz target
//! (`fuzz/fuzz_targets/event_convert.rs`) and a seeded unit test. The first byte picks the
//! topic's kind, the rest is the record value:
//!
//! - converting never panics, and the same bytes always give the same answer (a replayed
//!   record must give the same notification and dedup key);
//! - a notification fits its columns (user id ≤ 64 characters, reference id ≤ 100, link
//!   ≤ 500, message ≤ 65 535 bytes), names a recipient that is not blank, has a title, and
//!   renders to SPEC 2.5's JSON object with its keys in order;
//! - only `shopping.timedeal.started` is valid without a per-user notification, and its
//!   broadcast JSON, when the event makes one, is an object that starts with
//!   `"type":"TIMEDEAL_STARTED"` and links to its own `timeDealId`.

use serde_json::Value;

use crate::broadcast;
use crate::convert::convert;
use crate::event::EventKind;
use crate::notification::NewNotification;

/// SPEC 2.5's keys of a notification's JSON, in order.
const KEYS: [&str; 11] = [
    "id",
    "userId",
    "type",
    "title",
    "message",
    "link",
    "status",
    "referenceId",
    "referenceType",
    "createdAt",
    "readAt",
];

/// Checks every property on one input: `data[0]` picks the kind, the rest is the value.
pub fn check(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let kind = EventKind::ALL[usize::from(selector) % EventKind::ALL.len()];
    let first = convert(kind, value);
    let again = convert(kind, value);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{kind}: the same bytes, another notification"),
        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{kind}: another error"),
        _ => panic!("{kind}: the same bytes converted once and refused once"),
    }
    match first {
        Ok(Some(notification)) => {
            assert!(
                std::str::from_utf8(value).is_ok(),
                "{kind}: not UTF-8, yet converted"
            );
            check_notification(kind, &notification);
        }
        Ok(None) => assert_eq!(
            kind,
            EventKind::TimeDealStarted,
            "only a time deal makes no notification"
        ),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    if kind == EventKind::TimeDealStarted {
        if let Ok(json) = broadcast::time_deal(value) {
            check_broadcast(&json);
        }
    }
}

fn check_notification(kind: EventKind, n: &NewNotification) {
    assert!(!n.user_id.trim().is_empty(), "{kind}: a blank recipient");
    assert!(n.user_id.chars().count() <= 64, "{kind}: user id too long");
    assert!(!n.title.is_empty(), "{kind}: no title");
    assert!(n.message.len() <= 65_535, "{kind}: message too long");
    if let Some(id) = &n.reference_id {
        assert!(id.chars().count() <= 100, "{kind}: reference id too long");
    }
    if let Some(link) = &n.link {
        assert!(link.chars().count() <= 500, "{kind}: link too long");
    }
    assert_eq!(n.dedup_key(), n.clone().dedup_key());
    let json = n.to_json();
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&json) else {
        panic!("{kind}: not a JSON object: {json}");
    };
    assert_eq!(object.keys().count(), KEYS.len(), "{kind}: keys of {json}");
    let mut at = 0;
    for key in KEYS {
        let needle = format!("\"{key}\":");
        let found = json[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{kind}: `{key}` missing or out of order in {json}"));
        at += found + needle.len();
    }
    assert_eq!(object["userId"], n.user_id.as_str());
    assert_eq!(object["title"], n.title.as_str());
    assert_eq!(object["message"], n.message.as_str());
    assert_eq!(object["type"], n.kind.as_str());
    assert_eq!(object["status"], "UNREAD");
}

fn check_broadcast(json: &str) {
    assert!(
        json.starts_with("{\"type\":\"TIMEDEAL_STARTED\","),
        "broadcast starts with its type: {json}"
    );
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(json) else {
        panic!("broadcast not a JSON object: {json}");
    };
    let id = object["timeDealId"]
        .as_i64()
        .unwrap_or_else(|| panic!("timeDealId not an integer: {json}"));
    assert_eq!(object["link"], format!("/shopping/timedeals/{id}"));
    assert_eq!(object["title"], broadcast::TITLE);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event with every field any topic reads: each kind converts it.
    const EVERYTHING: &str = r#"{"userId":"user-1","name":"김철수","orderNumber":"ORD-1",
        "itemCount":3,"totalAmount":45000.5,"cancelReason":"변심","paymentNumber":"PAY-1",
        "amount":"1200","failureReason":"한도 초과","trackingNumber":"T-1","carrier":"CJ",
        "couponCode":"C-1","couponName":"봄맞이","discountType":"PERCENTAGE","discountValue":10,
        "authorId":"author-1","postId":"p-1","postTitle":"제목","likerName":"영희","likeId":"l-1",
        "commenterName":"민수","commentId":"c-1","content":"좋아요","parentCommentAuthorId":"a-2",
        "parentCommentId":"c-0","replierName":"지수","replyId":"r-1","followeeId":"f-1",
        "followerName":"하늘","followId":"fo-1","taskId":7,"boardId":2,"title":"요약",
        "agentName":"에이전트","errorMessage":"시간 초과","timeDealId":"9","timeDealName":"특가"}"#;

    /// Small deterministic mutations: a byte flipped, cut short, a span repeated, a
    /// number or string swapped for an extreme one.
    fn mutations(seed: &[u8], rounds: usize, state: &mut u64) -> Vec<Vec<u8>> {
        let mut next = move || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        let extremes: [&[u8]; 8] = [
            b"1e400",
            b"-0",
            b"99999999999999999999999",
            b"\"\"",
            b"\"   \"",
            b"null",
            b"\"\\ud800\"",
            b"[]",
        ];
        let mut out = Vec::new();
        for _ in 0..rounds {
            let mut input = seed.to_vec();
            let at = (next() as usize) % input.len().max(1);
            match next() % 5 {
                0 => input[at] ^= 1 << (next() % 8),
                1 => input.truncate(at),
                2 => {
                    let span = input[at..].iter().take(40).copied().collect::<Vec<u8>>();
                    input.splice(at..at, span);
                }
                3 => {
                    if let Some(colon) = input[at..].iter().position(|&b| b == b':') {
                        let start = at + colon + 1;
                        let end = input[start..]
                            .iter()
                            .position(|&b| b == b',' || b == b'}')
                            .map_or(input.len(), |e| start + e);
                        let extreme = extremes[(next() as usize) % extremes.len()];
                        input.splice(start..end, extreme.iter().copied());
                    }
                }
                _ => input.insert(at, 0xff),
            }
            out.push(input);
        }
        out
    }

    #[test]
    fn seeds_and_their_mutations_keep_every_property() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut converted = 0;
        for selector in 0..EventKind::ALL.len() as u8 {
            let mut seed = vec![selector];
            seed.extend_from_slice(EVERYTHING.as_bytes());
            let kind = EventKind::ALL[usize::from(selector)];
            if !matches!(convert(kind, &seed[1..]), Ok(Some(_))) {
                assert_eq!(kind, EventKind::TimeDealStarted, "the seed converts");
            }
            check(&seed);
            for input in mutations(&seed, 400, &mut state) {
                check(&input);
                if let Some((&selector, value)) = input.split_first() {
                    let kind = EventKind::ALL[usize::from(selector) % EventKind::ALL.len()];
                    if let Ok(Some(_)) = convert(kind, value) {
                        converted += 1;
                    }
                }
            }
        }
        // The mutations reach both sides: some still convert, others are refused.
        assert!(
            converted > 1_000,
            "{converted} of 5 600 mutations converted"
        );
        assert!(converted < 5_600, "every mutation converted");
    }
}
