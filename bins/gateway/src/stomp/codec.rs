//! The STOMP wire text of headers and frames: header escaping both ways, and encoding.
//!
//! Escaping (STOMP 1.1/1.2): `\n`, `\c`, `\\` (and `\r` in 1.2) in header names and values,
//! except in CONNECT, STOMP and CONNECTED frames; 1.0 has no escaping. The decoder is in
//! [`super::decode`].

use super::decode::StompError;
use super::frame::{Frame, Version};

/// Undoes the escaping of a header name or value of a frame whose headers `version` escapes.
pub(super) fn unescape(text: &str, version: Version) -> Result<String, StompError> {
    if !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            _ => return Err(StompError::InvalidEscape(text.to_owned())),
        }
    }
    Ok(out)
}

fn escape_into(out: &mut Vec<u8>, text: &str, version: Version) {
    for c in text.chars() {
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            ':' => out.extend_from_slice(b"\\c"),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\r' if version == Version::V1_2 => out.extend_from_slice(b"\\r"),
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

/// Appends a header value of a frame that escapes headers (MESSAGE, RECEIPT, ...) as
/// `encode` writes it: escaped in 1.1/1.2, EOLs dropped in 1.0.
pub fn escape_text(out: &mut String, text: &str, version: Version) {
    if !text.contains(['\n', '\r', ':', '\\']) {
        out.push_str(text);
    } else if version.escapes() {
        for c in text.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                ':' => out.push_str("\\c"),
                '\\' => out.push_str("\\\\"),
                '\r' if version == Version::V1_2 => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    } else {
        out.extend(text.chars().filter(|c| *c != '\n' && *c != '\r'));
    }
}

/// Encodes `frame` for a session speaking `version`. Adds `content-length` when the body is
/// not empty and the frame has none.
pub fn encode(frame: &Frame, version: Version) -> Vec<u8> {
    let escape = version.escapes() && frame.command.escapes_headers();
    let mut out = Vec::with_capacity(64 + frame.body.len());
    out.extend_from_slice(frame.command.as_str().as_bytes());
    out.push(b'\n');
    for (name, value) in &frame.headers {
        if escape {
            escape_into(&mut out, name, version);
            out.push(b':');
            escape_into(&mut out, value, version);
        } else {
            // Unescaped frames cannot carry EOLs in headers; drop them rather than break framing.
            out.extend(
                name.bytes()
                    .filter(|b| *b != b'\n' && *b != b'\r' && *b != b':'),
            );
            out.push(b':');
            out.extend(value.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
        }
        out.push(b'\n');
    }
    if !frame.body.is_empty() && frame.get("content-length").is_none() {
        out.extend_from_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(&frame.body);
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::stomp::{Command, Decoder, Item};

    #[test]
    fn encode_then_decode_round_trips_in_every_version() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let mut d = Decoder::new(64 * 1024, 100);
            d.version = version;
            let value = if version == Version::V1_0 {
                "plain"
            } else {
                "a:b\nc\\d"
            };
            let frame = Frame::new(Command::Message)
                .header("destination", "/user/queue/notifications")
                .header("x", value)
                .body(Bytes::from_static(
                    "{\"id\":1,\"title\":\"환영합니다!\"}".as_bytes(),
                ));
            let mut bytes = BytesMut::from(encode(&frame, version).as_slice());
            let Ok(Some(Item::Frame(back))) = d.decode(&mut bytes) else {
                panic!("{version:?}: {bytes:?}")
            };
            assert!(bytes.is_empty());
            assert_eq!(back.get("x"), Some(value), "{version:?}");
            assert_eq!(back.body, frame.body);
            assert_eq!(
                back.get("content-length"),
                Some(frame.body.len().to_string().as_str())
            );
        }
    }
}
