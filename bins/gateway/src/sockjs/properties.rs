//! Properties of the SockJS payload decoding and framing on arbitrary bytes, shared by the
//! fuzz target (`fuzz/fuzz_targets/sockjs_payload.rs`) and a seeded unit test. The first
//! byte picks the transport (`xhr_send`'s raw body, or `jsonp_send`'s form-encoded or raw
//! one), the rest is the body:
//!
//! - decoding never panics, and its messages together are never longer than the body (JSON
//!   and percent escapes only shrink), so the payload limit bounds what a session receives;
//! - an empty or blank payload is "Payload expected.", anything else either decodes or is
//!   "Broken JSON encoding.";
//! - what the server sends back, `a[...]` of those messages, is a JSON array of exactly the
//!   same strings after the `a`, with none of the characters SockJS asks servers to escape
//!   left raw (some browsers mangle them); a close frame with any reason is valid JSON too.

use super::framing::{PayloadError, close, jsonp_payload, messages, parse_payload};

/// Characters the server must send escaped (SockJS 0.3.3's `escapable_by_server`).
fn must_be_escaped(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff)
}

/// Checks every property on one input: `data[0]` picks the transport, the rest is the body.
pub fn check(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let payload = match selector % 3 {
        0 => body.to_vec(),
        1 => jsonp_payload(true, body),
        _ => jsonp_payload(false, body),
    };
    assert!(
        payload.len() <= body.len(),
        "decoding the form grew the body"
    );
    match parse_payload(&payload) {
        Ok(list) => {
            let total: usize = list.iter().map(String::len).sum();
            assert!(total <= payload.len(), "messages longer than their payload");
            check_frame(&list);
        }
        Err(PayloadError::Empty) => {
            assert!(payload.iter().all(u8::is_ascii_whitespace), "not empty");
        }
        Err(PayloadError::BrokenJson) => {
            assert!(!payload.iter().all(u8::is_ascii_whitespace), "empty");
        }
    }
    if let Ok(reason) = std::str::from_utf8(body) {
        let frame = close(3000, reason);
        let parsed: (u16, String) =
            serde_json::from_str(&frame[1..]).expect("a close frame is JSON");
        assert_eq!(parsed, (3000, reason.to_owned()));
    }
}

fn check_frame(list: &[String]) {
    let frame = messages(list);
    let json = frame.strip_prefix('a').expect("an `a` frame");
    assert!(
        !json.chars().any(must_be_escaped),
        "a raw character SockJS wants escaped in {frame:?}"
    );
    let parsed: Vec<String> = serde_json::from_str(json).expect("an `a` frame is JSON");
    assert_eq!(parsed, list, "the frame carries other strings");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: [&[u8]; 8] = [
        b"\x00[\"CONNECT\\naccept-version:1.2\\n\\n\\u0000\",\"SEND\\n\\n\\u0000\"]",
        b"\x00\"one\"",
        b"\x00[\"\\ud800\",\"\\u2028\\u200c\\ufff0\",\"\xec\xa3\xbc\xeb\xac\xb8\"]",
        b"\x01d=%5B%22SUBSCRIBE%5Cn%5Cn%5Cu0000%22%5D",
        b"\x01p=1&d=%5B%22a+b%22%5D&d=%5B%5D",
        b"\x02[\"x\"]",
        b"\x00   ",
        b"\x00[1,\"a\"]",
    ];

    fn mutations(seed: &[u8], rounds: usize, state: &mut u64) -> Vec<Vec<u8>> {
        let mut next = move || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        let inserts: [&[u8]; 7] = [b"\\u0000", b"\\ud83d", b"%", b"%FF", b"\"", b"\xff", b"\\"];
        let mut out = Vec::new();
        for _ in 0..rounds {
            let mut input = seed.to_vec();
            let at = 1 + (next() as usize) % input.len().max(1);
            let at = at.min(input.len());
            match next() % 4 {
                0 if at < input.len() => input[at] ^= 1 << (next() % 8),
                1 => input.truncate(at),
                2 => {
                    let insert = inserts[(next() as usize) % inserts.len()];
                    input.splice(at..at, insert.iter().copied());
                }
                _ => input.insert(at, (next() % 256) as u8),
            }
            out.push(input);
        }
        out
    }

    #[test]
    fn seeds_and_their_mutations_keep_every_property() {
        let mut state = 0x2545_f491_4f6c_dd1d;
        let mut decoded = 0;
        for seed in SEEDS {
            check(seed);
            for input in mutations(seed, 2_000, &mut state) {
                check(&input);
                let payload = match input.first().map(|s| s % 3) {
                    Some(1) => jsonp_payload(true, &input[1..]),
                    Some(_) => input[1..].to_vec(),
                    None => continue,
                };
                decoded += usize::from(parse_payload(&payload).is_ok());
            }
        }
        // Both sides are reached: some mutations still decode, others are refused.
        assert!(
            decoded > 1_000 && decoded < 16_000,
            "{decoded} of 16 000 decoded"
        );
    }

    #[test]
    fn a_frame_with_a_raw_line_separator_is_caught() {
        let unescaped = "a[\"\u{2028}\"]";
        assert!(unescaped.chars().any(must_be_escaped));
        assert!(!messages(&["\u{2028}"]).chars().any(must_be_escaped));
    }
}
