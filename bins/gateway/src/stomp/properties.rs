//! Properties of the codec on arbitrary bytes, shared by the fuzz target (`fuzz/`) and a
//! seeded unit test: decoding never panics, also when a header holds a number near or past
//! `usize::MAX`; the same bytes give the same items whether fed whole, split in two or one
//! byte per read; a pending frame never holds more than the frame limit; a body is as long
//! as its `content-length` says; every decoded frame that `encode` can carry encodes back to
//! bytes that decode to the same frame.

use bytes::BytesMut;

use super::{Decoder, Frame, Item, StompError, Version, encode};

/// Limits small enough for a fuzzer to reach.
const MAX_FRAME: usize = 512;
const MAX_HEADERS: usize = 8;

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    items: Vec<Item>,
    error: Option<StompError>,
}

/// Feeds `chunks` one after another to a fresh copy of `decoder`, decoding all it can after
/// each.
fn decode_chunks(decoder: &Decoder, chunks: &[&[u8]]) -> Decoded {
    let mut decoder = decoder.clone();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {
                    assert!(
                        buf.len() <= decoder.max_frame_bytes,
                        "{} bytes buffered past the {} byte limit",
                        buf.len(),
                        decoder.max_frame_bytes
                    );
                    break;
                }
                Err(error) => {
                    return Decoded {
                        items,
                        error: Some(error),
                    };
                }
            }
        }
    }
    Decoded { items, error: None }
}

/// Whether `encode` can carry the frame's headers unchanged in `version`.
fn encodable(frame: &Frame, version: Version) -> bool {
    let escaped = version.escapes() && frame.command.escapes_headers();
    frame.headers.iter().all(|(name, value)| {
        let raw_ok = |text: &str, colon_ok: bool| {
            !text.contains('\n') && !text.contains('\r') && (colon_ok || !text.contains(':'))
        };
        if escaped {
            // 1.1 has no escape for CR: a trailing one would read as part of the EOL.
            version == Version::V1_2 || !value.ends_with('\r') && !name.ends_with('\r')
        } else {
            raw_ok(name, false) && raw_ok(value, true)
        }
    })
}

fn without_content_length(frame: &Frame) -> Frame {
    let mut frame = frame.clone();
    frame.headers.retain(|(name, _)| name != "content-length");
    frame
}

/// Numbers a client can write where the decoder or the session expects a small one: near,
/// at and past `usize::MAX` (= `u64::MAX` on 64-bit targets) and `u32::MAX`, signed, padded
/// with spaces or zeros, empty.
const HUGE_NUMBERS: &[&str] = &[
    "18446744073709551615",
    "18446744073709551577",
    "18446744073709551614",
    "18446744073709551616",
    "+18446744073709551615",
    " 18446744073709551615 ",
    "000000000000000000000018446744073709551600",
    "99999999999999999999999999999999999999",
    "9223372036854775807",
    "4294967295",
    "4294967296",
    "-1",
    "-18446744073709551615",
    "+0",
    "00000000000000000000",
    "+",
    "",
];

/// `input` with `content-length` and `heart-beat` headers holding numbers from
/// [`HUGE_NUMBERS`] (chosen by `pick`) inserted after its first line: random bytes seldom
/// spell a twenty-digit number, and these are the ones that overflow length arithmetic.
fn with_huge_numbers(input: &[u8], pick: usize) -> Vec<u8> {
    let number = |offset: usize| HUGE_NUMBERS[(pick + offset) % HUGE_NUMBERS.len()];
    let at = input
        .iter()
        .position(|b| *b == b'\n')
        .map_or(input.len(), |nl| nl + 1);
    let mut out = input[..at].to_vec();
    if at == input.len() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"SEND\n");
    }
    let headers = format!(
        "content-length:{}\nheart-beat:{},{}\n",
        number(0),
        number(1),
        number(2)
    );
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(&input[at..]);
    out
}

/// Checks every property on `data`: its first byte picks the version, a split point and the
/// huge numbers tried in a copy of the rest.
pub fn check(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let version = [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(control % 3)];
    let mut decoder = Decoder::new(MAX_FRAME, MAX_HEADERS);
    decoder.version = version;
    check_input(&decoder, input, usize::from(control) * 7);
    let injected = with_huge_numbers(input, usize::from(control / 3));
    check_input(&decoder, &injected, usize::from(control) * 7);
}

/// Checks every property on `input` for `decoder`, splitting it at `split` (modulo its length).
fn check_input(decoder: &Decoder, input: &[u8], split: usize) {
    let whole = decode_chunks(decoder, &[input]);
    let split = split % (input.len() + 1);
    let (a, b) = input.split_at(split);
    assert_eq!(whole, decode_chunks(decoder, &[a, b]), "split at {split}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(whole, decode_chunks(decoder, &bytes), "byte by byte");

    let version = decoder.version;
    for item in &whole.items {
        let Item::Frame(frame) = item else { continue };
        if let Some(length) = frame.get("content-length") {
            assert_eq!(
                length.trim().parse::<usize>(),
                Ok(frame.body.len()),
                "body of a frame with content-length {length:?}"
            );
        }
        if !encodable(frame, version) {
            continue;
        }
        let bytes = encode(frame, version);
        let mut roomy = decoder.clone();
        roomy.max_frame_bytes = bytes.len() + 1;
        roomy.max_headers = frame.headers.len() + 1;
        let again = decode_chunks(&roomy, &[&bytes]);
        assert_eq!(
            again.error,
            None,
            "re-decoding {:?}",
            String::from_utf8_lossy(&bytes)
        );
        match again.items.as_slice() {
            [Item::Frame(back)] => assert_eq!(
                without_content_length(back),
                without_content_length(frame),
                "round trip of {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            other => panic!("one frame expected, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    /// Seeds: real frames, each variant of escaping, content-length with NULs, limits, numbers
    /// past every limit (and [`check`] adds [`super::HUGE_NUMBERS`] to each of them).
    const SEEDS: &[&[u8]] = &[
        b"\x02CONNECT\naccept-version:1.2\nhost:x\nheart-beat:10000,10000\n\n\0",
        b"\x02SUBSCRIBE\nid:sub-0\ndestination:/user/queue/notifications\n\n\0\n\n",
        b"\x01SEND\ndestination:/q\ncontent-length:3\n\na\0b\0",
        b"\x02SEND\r\nk\\c\\n\\r\\\\:v\\c\r\n\r\nbody\0",
        b"\x00SEND\nk:v:w\n\nbody\0",
        b"\x01MESSAGE\nk:x\\r\n\n\0",
        b"\x02DISCONNECT\nreceipt:77\n\n\0\r\n",
        b"\x02SEND\ncontent-length:99999\n\n\0",
        b"\x02BOGUS\n\n\0",
        b"\x02SEND\nno colon\n\n\0",
        b"\x02SEND\na:1\nb:2\nc:3\nd:4\ne:5\nf:6\ng:7\nh:8\ni:9\n\n\0",
        b"\x02CONNECT\nx:\0\ncontent-length:18446744073709551577\n\n",
        b"\x01SEND\ncontent-length:+0018446744073709551615 \n\nab\0",
        b"\x02CONNECT\naccept-version:1.2\nheart-beat:18446744073709551615,1\n\n\0",
    ];

    /// A small deterministic generator (xorshift), so failures reproduce.
    fn mutations(seed: &[u8], rounds: usize, state: &mut u64) -> Vec<Vec<u8>> {
        let mut next = move || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        let alphabet = b"\n\r\0:\\cnrSENDCONNECT-lengthx0123456789+- ";
        (0..rounds)
            .map(|_| {
                let mut data = seed.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % data.len().max(1);
                    match next() % 4 {
                        0 if !data.is_empty() => {
                            data.remove(at);
                        }
                        1 => data.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                        2 if !data.is_empty() => {
                            data[at] = alphabet[(next() as usize) % alphabet.len()];
                        }
                        _ => {
                            let copy = data[at..].to_vec();
                            data.extend_from_slice(&copy);
                        }
                    }
                }
                data
            })
            .collect()
    }

    #[test]
    fn seeds_and_their_mutations_keep_every_property() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for seed in SEEDS {
            check(seed);
            for data in mutations(seed, 2000, &mut state) {
                check(&data);
            }
        }
    }
}
