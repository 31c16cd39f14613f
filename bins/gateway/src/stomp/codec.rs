//! The STOMP wire format, as a pure incremental codec.
//!
//! [`Decoder::decode`] takes bytes as they arrive and returns `Ok(None)` until a whole frame
//! (or a heart-beat EOL) is buffered. A protocol violation is a [`StompError`] that closes
//! only that session. Size limits are enforced while decoding, before memory is spent: a
//! frame may not exceed `max_frame_bytes`, nor carry more than `max_headers` headers.
//!
//! Escaping (STOMP 1.1/1.2): `\n`, `\c`, `\\` (and `\r` in 1.2) in header names and values,
//! except in CONNECT, STOMP and CONNECTED frames; 1.0 has no escaping. `content-length`
//! bodies may contain NUL bytes.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{Command, Frame, Version};

/// What one decode step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// An EOL between frames: a heart-beat from the client.
    Heartbeat,
}

/// Why the bytes are not STOMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("frame larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    #[error("malformed header line {0:?}")]
    MalformedHeader(String),
    #[error("invalid escape sequence in header {0:?}")]
    InvalidEscape(String),
    #[error("invalid content-length {0:?}")]
    InvalidContentLength(String),
    #[error("frame body not terminated by NUL")]
    MissingNul,
    #[error("frame is not UTF-8 where text is required")]
    NotUtf8,
}

/// Incremental decoder state and limits.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub version: Version,
    pub max_frame_bytes: usize,
    pub max_headers: usize,
}

impl Decoder {
    pub fn new(max_frame_bytes: usize, max_headers: usize) -> Decoder {
        Decoder {
            version: Version::V1_2,
            max_frame_bytes,
            max_headers,
        }
    }

    /// Decodes the next item from `buf`, consuming its bytes; `Ok(None)`: need more bytes.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Item>, StompError> {
        // Heart-beats: EOLs before a command.
        if buf.first() == Some(&b'\n') {
            buf.advance(1);
            return Ok(Some(Item::Heartbeat));
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            return Ok(Some(Item::Heartbeat));
        }
        if buf.as_ref() == b"\r" {
            return Ok(None);
        }
        // Find the end of the headers: an empty line.
        let Some((head_end, body_start)) = find_head_end(buf) else {
            if buf.len() > self.max_frame_bytes {
                return Err(StompError::TooLarge(self.max_frame_bytes));
            }
            return Ok(None);
        };
        if head_end > self.max_frame_bytes {
            return Err(StompError::TooLarge(self.max_frame_bytes));
        }
        let head = &buf[..head_end];
        let mut lines = head.split(|b| *b == b'\n').map(strip_cr);
        let command_line = lines.next().unwrap_or_default();
        let command = Command::parse(command_line).ok_or_else(|| {
            StompError::UnknownCommand(String::from_utf8_lossy(command_line).into_owned())
        })?;
        let escape = self.version.escapes() && command.escapes_headers();
        let mut headers = Vec::new();
        for line in lines {
            if headers.len() == self.max_headers {
                return Err(StompError::TooManyHeaders(self.max_headers));
            }
            let text = std::str::from_utf8(line).map_err(|_| StompError::NotUtf8)?;
            let (name, value) = text
                .split_once(':')
                .ok_or_else(|| StompError::MalformedHeader(text.to_owned()))?;
            let (name, value) = if escape {
                (
                    unescape(name, self.version)?,
                    unescape(value, self.version)?,
                )
            } else {
                (name.to_owned(), value.to_owned())
            };
            headers.push((name, value));
        }
        let content_length = match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, v)) => Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| StompError::InvalidContentLength(v.clone()))?,
            ),
            None => None,
        };
        let body_end = match content_length {
            Some(len) => {
                if body_start + len + 1 > self.max_frame_bytes {
                    return Err(StompError::TooLarge(self.max_frame_bytes));
                }
                if buf.len() < body_start + len + 1 {
                    return Ok(None);
                }
                if buf[body_start + len] != 0 {
                    return Err(StompError::MissingNul);
                }
                body_start + len
            }
            None => match buf[body_start..].iter().position(|b| *b == 0) {
                Some(pos) => body_start + pos,
                None => {
                    if buf.len() + 1 > self.max_frame_bytes {
                        return Err(StompError::TooLarge(self.max_frame_bytes));
                    }
                    return Ok(None);
                }
            },
        };
        if body_end + 1 > self.max_frame_bytes {
            return Err(StompError::TooLarge(self.max_frame_bytes));
        }
        let mut frame_bytes = buf.split_to(body_end + 1);
        frame_bytes.truncate(body_end);
        let body: Bytes = frame_bytes.split_off(body_start).freeze();
        Ok(Some(Item::Frame(Frame {
            command,
            headers,
            body,
        })))
    }
}

/// Position of the byte after the command+headers block and where the body starts.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + pos;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((strip_cr_end(buf, nl), next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((strip_cr_end(buf, nl), next + 2));
        }
        i = next;
    }
    None
}

fn strip_cr_end(buf: &[u8], nl: usize) -> usize {
    if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn unescape(text: &str, version: Version) -> Result<String, StompError> {
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

/// Appends a header name or value of a frame that escapes headers (MESSAGE, RECEIPT, ...)
/// as `encode` writes it: escaped in 1.1/1.2, EOLs dropped in 1.0.
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
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(64 * 1024, 100)
    }

    fn decode_all(d: &Decoder, bytes: &[u8]) -> Result<Vec<Item>, StompError> {
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = d.decode(&mut buf)? {
            items.push(item);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(items)
    }

    const SUBSCRIBE: &[u8] = b"SUBSCRIBE\nid:sub-0\ndestination:/user/queue/notifications\n\n\0";

    #[test]
    fn decodes_a_frame_at_every_split_point() {
        let d = decoder();
        let expected = Item::Frame(
            Frame::new(Command::Subscribe)
                .header("id", "sub-0")
                .header("destination", "/user/queue/notifications"),
        );
        for split in 0..=SUBSCRIBE.len() {
            let mut buf = BytesMut::from(&SUBSCRIBE[..split]);
            let first = d.decode(&mut buf).unwrap();
            if split < SUBSCRIBE.len() {
                assert_eq!(first, None, "split {split}");
                buf.extend_from_slice(&SUBSCRIBE[split..]);
                assert_eq!(
                    d.decode(&mut buf).unwrap(),
                    Some(expected.clone()),
                    "split {split}"
                );
            } else {
                assert_eq!(first, Some(expected.clone()));
            }
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn content_length_bodies_may_hold_nul_and_split_anywhere() {
        let d = decoder();
        let frame = b"SEND\ndestination:/app/x\ncontent-length:5\n\na\0b\0c\0";
        for split in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..split]);
            let mut got = d.decode(&mut buf).unwrap();
            if got.is_none() {
                buf.extend_from_slice(&frame[split..]);
                got = d.decode(&mut buf).unwrap();
            }
            let Some(Item::Frame(f)) = got else {
                panic!("split {split}: {got:?}")
            };
            assert_eq!(f.body.as_ref(), b"a\0b\0c");
        }
    }

    #[test]
    fn heartbeats_crlf_and_back_to_back_frames() {
        let d = decoder();
        let items = decode_all(
            &d,
            b"\n\r\nCONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0\nDISCONNECT\n\n\0",
        )
        .unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], Item::Heartbeat);
        assert_eq!(items[1], Item::Heartbeat);
        let Item::Frame(connect) = &items[2] else {
            panic!()
        };
        assert_eq!(connect.command, Command::Connect);
        assert_eq!(connect.get("accept-version"), Some("1.2"));
        assert_eq!(items[3], Item::Heartbeat);
    }

    #[test]
    fn escaping_follows_the_version() {
        let raw = b"SEND\ndestination:/a\\cb\\nc\\\\d\\re\n\n\0";
        let mut d = decoder();
        let Item::Frame(f) = decode_all(&d, raw).unwrap().remove(0) else {
            panic!()
        };
        assert_eq!(f.get("destination"), Some("/a:b\nc\\d\re"));
        d.version = Version::V1_1;
        assert!(
            matches!(decode_all(&d, raw), Err(StompError::InvalidEscape(_))),
            "\\r is 1.2 only"
        );
        d.version = Version::V1_0;
        let Item::Frame(f) = decode_all(&d, raw).unwrap().remove(0) else {
            panic!()
        };
        assert_eq!(
            f.get("destination"),
            Some("/a\\cb\\nc\\\\d\\re"),
            "1.0 does not unescape"
        );
        // CONNECT is never unescaped.
        d.version = Version::V1_2;
        let Item::Frame(f) = decode_all(&d, b"CONNECT\npasscode:a\\cb\n\n\0")
            .unwrap()
            .remove(0)
        else {
            panic!()
        };
        assert_eq!(f.get("passcode"), Some("a\\cb"));
        assert!(matches!(
            decode_all(&d, b"SEND\nx:\\t\n\n\0"),
            Err(StompError::InvalidEscape(_))
        ));
    }

    #[test]
    fn encode_then_decode_round_trips_in_every_version() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let mut d = decoder();
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
            let bytes = encode(&frame, version);
            let Item::Frame(back) = decode_all(&d, &bytes).unwrap().remove(0) else {
                panic!()
            };
            assert_eq!(back.get("x"), Some(value), "{version:?}");
            assert_eq!(back.body, frame.body);
            assert_eq!(
                back.get("content-length"),
                Some(frame.body.len().to_string().as_str())
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_the_frame_is_complete() {
        let d = Decoder::new(100, 3);
        let mut buf = BytesMut::from(&b"SEND\ndestination:/x\n\n"[..]);
        buf.extend_from_slice(&[b'a'; 200]);
        assert_eq!(
            d.decode(&mut buf),
            Err(StompError::TooLarge(100)),
            "no NUL needed to refuse"
        );
        let mut buf = BytesMut::from(&b"SEND\ncontent-length:1000\n\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(StompError::TooLarge(100)));
        let mut buf = BytesMut::from(&[b'S'; 150][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(StompError::TooLarge(100)),
            "endless command line"
        );
        assert_eq!(
            decode_all(&d, b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0"),
            Err(StompError::TooManyHeaders(3))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let d = decoder();
        assert!(matches!(
            decode_all(&d, b"HELLO\n\n\0"),
            Err(StompError::UnknownCommand(_))
        ));
        assert!(matches!(
            decode_all(&d, b"SEND\nnocolon\n\n\0"),
            Err(StompError::MalformedHeader(_))
        ));
        assert!(matches!(
            decode_all(&d, b"SEND\ncontent-length:x\n\n\0"),
            Err(StompError::InvalidContentLength(_))
        ));
        assert_eq!(
            decode_all(&d, b"SEND\ncontent-length:1\n\nab"),
            Err(StompError::MissingNul)
        );
        assert_eq!(
            decode_all(&d, b"SEND\nk:\xff\n\n\0"),
            Err(StompError::NotUtf8)
        );
    }

    #[test]
    fn repeated_headers_keep_the_first_value() {
        let d = decoder();
        let Item::Frame(f) = decode_all(&d, b"SEND\nfoo:1\nfoo:2\n\n\0")
            .unwrap()
            .remove(0)
        else {
            panic!()
        };
        assert_eq!(f.get("foo"), Some("1"));
    }

    #[test]
    fn version_negotiation_picks_the_highest_common() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.1, 1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("2.0")), None);
    }
}
