//! The STOMP decoder: pure and incremental.
//!
//! [`Decoder::decode`] takes bytes as they arrive and returns `Ok(None)` until a whole frame
//! (or a heart-beat EOL) is buffered. A protocol violation is a [`StompError`] that closes
//! only that session. Size limits are enforced while decoding, before the frame is complete:
//! a frame may not exceed `max_frame_bytes`, nor carry more than `max_headers` headers.
//!
//! The decoder is per-connection state: it remembers how far it has scanned the frame at
//! the front of the buffer and keeps that frame's parsed headers, so a frame that arrives
//! one byte per read costs time linear in its size. Every number taken from the client is
//! compared with the limit by checked arithmetic, never added unchecked.
//!
//! Headers are unescaped as [`super::codec`] describes; `content-length` bodies may contain
//! NUL bytes.

use std::num::IntErrorKind;

use bytes::{Buf, Bytes, BytesMut};

use super::codec::unescape;
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

/// Incremental decoder: the limits, the session's version, and how far it got with the
/// frame at the front of the buffer. One per connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Set between frames: it applies to frames whose headers are decoded afterwards.
    pub version: Version,
    /// The largest frame accepted: command, headers, body and the closing NUL.
    pub max_frame_bytes: usize,
    /// The most headers one frame may carry.
    pub max_headers: usize,
    progress: Progress,
    /// Bytes examined so far, so tests can assert that decoding is linear.
    #[cfg(test)]
    scanned: usize,
}

/// How far the decoder got with the frame at the front of the buffer.
#[derive(Debug, Clone)]
enum Progress {
    /// Looking for the empty line that ends the headers; none starts before `from`.
    Head { from: usize },
    /// Headers parsed (never parsed again), waiting for the end of the body.
    Body { head: Head, end: BodyEnd },
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::Head { from: 0 }
    }
}

impl Progress {
    /// How many bytes the buffer held, at least, when this progress was made.
    fn buffered(&self) -> usize {
        match self {
            Progress::Head { from } => *from,
            Progress::Body { head, end } => match end {
                BodyEnd::Nul(_) => head.body_start,
                BodyEnd::Search { from } => *from,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    body_start: usize,
}

#[derive(Debug, Clone, Copy)]
enum BodyEnd {
    /// `content-length` put the NUL at this index, below the frame limit.
    Nul(usize),
    /// The body ends at the first NUL at or after `from`.
    Search { from: usize },
}

impl Decoder {
    /// A decoder for STOMP 1.2 (until `version` is set) with these limits.
    pub fn new(max_frame_bytes: usize, max_headers: usize) -> Decoder {
        Decoder {
            version: Version::V1_2,
            max_frame_bytes,
            max_headers,
            progress: Progress::default(),
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Decodes the next item from `buf`, consuming its bytes; `Ok(None)`: need more bytes.
    /// After `Ok(None)` the caller may only append to `buf` before calling again; an item
    /// or an error starts the decoder afresh.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, StompError> {
        let mut progress = std::mem::take(&mut self.progress);
        if progress.buffered() > buf.len() {
            // Not the buffer this progress was made on: start over rather than misread it.
            progress = Progress::default();
        }
        let (head, end) = match progress {
            Progress::Body { head, end } => (head, end),
            Progress::Head { from } => {
                if from == 0 {
                    if let Some(heartbeat) = take_heartbeat(buf) {
                        return Ok(heartbeat);
                    }
                }
                match self.find_head_end(buf, from) {
                    Ok((head_end, body_start)) => self.parse_head(&buf[..head_end], body_start)?,
                    Err(from) => {
                        // The frame still needs at least the empty line's EOL and a NUL: the
                        // verdict that parse_head gives once the head is complete, given early.
                        if !buf.is_empty() && buf.len().saturating_add(2) > self.max_frame_bytes {
                            return Err(StompError::TooLarge(self.max_frame_bytes));
                        }
                        self.progress = Progress::Head { from };
                        return Ok(None);
                    }
                }
            }
        };
        let body_end = match end {
            BodyEnd::Nul(nul) => match buf.get(nul) {
                None => {
                    self.progress = Progress::Body { head, end };
                    return Ok(None);
                }
                Some(0) => nul,
                Some(_) => return Err(StompError::MissingNul),
            },
            BodyEnd::Search { from } => match buf[from..].iter().position(|b| *b == 0) {
                Some(pos) => {
                    self.examined(pos + 1);
                    from + pos
                }
                None => {
                    self.examined(buf.len() - from);
                    // The NUL is still to come, so the frame is longer than the buffer.
                    if buf.len() >= self.max_frame_bytes {
                        return Err(StompError::TooLarge(self.max_frame_bytes));
                    }
                    let end = BodyEnd::Search { from: buf.len() };
                    self.progress = Progress::Body { head, end };
                    return Ok(None);
                }
            },
        };
        // `body_end` indexes the buffer, so adding one cannot overflow.
        if body_end >= self.max_frame_bytes {
            return Err(StompError::TooLarge(self.max_frame_bytes));
        }
        let mut frame_bytes = buf.split_to(body_end + 1);
        frame_bytes.truncate(body_end);
        let body: Bytes = frame_bytes.split_off(head.body_start).freeze();
        Ok(Some(Item::Frame(Frame {
            command: head.command,
            headers: head.headers,
            body,
        })))
    }

    /// Where the command+headers block ends and where the body starts, or `Err` with the
    /// position to resume the search from once more bytes are buffered.
    fn find_head_end(&mut self, buf: &[u8], from: usize) -> Result<(usize, usize), usize> {
        let mut i = from;
        while let Some(pos) = buf[i..].iter().position(|b| *b == b'\n') {
            self.examined(pos + 1);
            let nl = i + pos;
            match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => return Ok((strip_cr_end(buf, nl), nl + 2)),
                (Some(b'\r'), Some(b'\n')) => return Ok((strip_cr_end(buf, nl), nl + 3)),
                // Whether this EOL ends the headers depends on bytes still to come.
                (None, _) | (Some(b'\r'), None) => return Err(nl),
                _ => i = nl + 1,
            }
        }
        self.examined(buf.len() - i);
        Err(buf.len())
    }

    /// Parses the command line and headers in `head` (without its final EOL), and decides
    /// where the body ends.
    fn parse_head(
        &mut self,
        head: &[u8],
        body_start: usize,
    ) -> Result<(Head, BodyEnd), StompError> {
        self.examined(head.len());
        // Even an empty body needs its NUL: the frame is at least `body_start + 1` bytes.
        if body_start >= self.max_frame_bytes {
            return Err(StompError::TooLarge(self.max_frame_bytes));
        }
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
        let end = match headers.iter().find(|(n, _)| n == "content-length") {
            Some((_, value)) => BodyEnd::Nul(self.nul_after(body_start, value)?),
            None => BodyEnd::Search { from: body_start },
        };
        let head = Head {
            command,
            headers,
            body_start,
        };
        Ok((head, end))
    }

    /// The index of the NUL after a body of `content-length` `value` that starts at
    /// `body_start`, if the frame fits the limit. The value is the client's: it may be any
    /// number, so it is only ever added with a check.
    fn nul_after(&self, body_start: usize, value: &str) -> Result<usize, StompError> {
        let too_large = StompError::TooLarge(self.max_frame_bytes);
        let len = value.trim().parse::<usize>().map_err(|e| match e.kind() {
            IntErrorKind::PosOverflow => too_large.clone(),
            _ => StompError::InvalidContentLength(value.to_owned()),
        })?;
        body_start
            .checked_add(len)
            .filter(|nul| *nul < self.max_frame_bytes)
            .ok_or(too_large)
    }

    /// Counts bytes examined, for the tests' check that decoding is linear.
    fn examined(&mut self, bytes: usize) {
        #[cfg(test)]
        {
            self.scanned += bytes;
        }
        #[cfg(not(test))]
        let _ = bytes;
    }
}

/// Consumes a heart-beat EOL at the front of `buf`: `Some(None)` when `buf` holds just a CR
/// that may become one.
fn take_heartbeat(buf: &mut BytesMut) -> Option<Option<Item>> {
    if buf.first() == Some(&b'\n') {
        buf.advance(1);
        return Some(Some(Item::Heartbeat));
    }
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Some(Some(Item::Heartbeat));
    }
    (buf.as_ref() == b"\r").then_some(None)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(64 * 1024, 100)
    }

    /// Decodes `bytes` with a fresh copy of `d`, all of them.
    fn decode_all(d: &Decoder, bytes: &[u8]) -> Result<Vec<Item>, StompError> {
        let mut d = d.clone();
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
        let mut d = decoder();
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
        let mut d = decoder();
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
    fn limits_are_enforced_before_the_frame_is_complete() {
        let mut d = Decoder::new(100, 3);
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
    fn content_length_near_usize_max_is_too_large_not_an_overflow() {
        let limit = 64 * 1024;
        // Before any header is checked: this must fail before authentication.
        let mut d = decoder();
        let mut buf =
            BytesMut::from(&b"CONNECT\nx:\0\ncontent-length:18446744073709551577\n\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(StompError::TooLarge(limit)));
        for k in 0..=64 {
            let len = usize::MAX - k;
            for body in [&b""[..], b"\0", b"abc\0", &[0; 100]] {
                let mut d = decoder();
                let mut buf = BytesMut::from(format!("SEND\ncontent-length:{len}\n\n").as_bytes());
                buf.extend_from_slice(body);
                assert_eq!(
                    d.decode(&mut buf),
                    Err(StompError::TooLarge(limit)),
                    "content-length {len} with {} body bytes",
                    body.len()
                );
            }
        }
    }

    /// Feeds `frame` one byte per `decode` call and returns what the decoder scanned.
    fn bytes_scanned_feeding_one_byte_at_a_time(frame: &[u8]) -> usize {
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let (last, most) = frame.split_last().expect("a frame");
        for byte in most {
            buf.extend_from_slice(&[*byte]);
            assert_eq!(d.decode(&mut buf), Ok(None));
        }
        buf.extend_from_slice(&[*last]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Item::Frame(_)))));
        assert!(buf.is_empty());
        d.scanned
    }

    #[test]
    fn a_frame_trickled_in_byte_by_byte_is_scanned_in_linear_time() {
        let size = 64 * 1024 - 100;
        let mut nul_terminated = b"SEND\ndestination:/q\n\n".to_vec();
        nul_terminated.resize(size, b'a');
        nul_terminated.push(0);
        let mut long_headers = b"SEND\n".to_vec();
        for i in 0..90 {
            long_headers.extend_from_slice(format!("h{i}:{}\r\n", "v".repeat(700)).as_bytes());
        }
        long_headers.extend_from_slice(b"\r\n\0");
        let mut with_length = format!("SEND\ncontent-length:{size}\n\n").into_bytes();
        with_length.resize(with_length.len() + size, 0);
        with_length.push(0);
        let quadratic: Vec<String> = [
            ("NUL-terminated body", nul_terminated),
            ("long headers", long_headers),
            ("content-length body", with_length),
        ]
        .into_iter()
        .filter_map(|(name, frame)| {
            let scanned = bytes_scanned_feeding_one_byte_at_a_time(&frame);
            (scanned > 4 * frame.len())
                .then(|| format!("{name}: {scanned} bytes scanned for {}", frame.len()))
        })
        .collect();
        assert!(quadratic.is_empty(), "{quadratic:#?}");
    }

    /// Decodes `bytes` fed one byte per `decode` call, with a fresh copy of `d`.
    fn decode_byte_by_byte(d: &Decoder, bytes: &[u8]) -> Result<Vec<Item>, StompError> {
        let mut d = d.clone();
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for byte in bytes {
            buf.extend_from_slice(&[*byte]);
            while let Some(item) = d.decode(&mut buf)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    #[test]
    fn the_size_verdict_does_not_depend_on_how_the_bytes_arrive() {
        // A 16-byte head whose header is not UTF-8: the frame needs 19 bytes.
        let frame = b"SEND\nk:\xff23456789\n\n\0";
        for max in [16, 17, 18, 19] {
            let d = Decoder::new(max, 8);
            let expected = if max < 19 {
                StompError::TooLarge(max)
            } else {
                StompError::NotUtf8
            };
            assert_eq!(
                decode_all(&d, frame),
                Err(expected.clone()),
                "whole, max {max}"
            );
            assert_eq!(
                decode_byte_by_byte(&d, frame),
                Err(expected),
                "byte by byte, max {max}"
            );
        }
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
}
