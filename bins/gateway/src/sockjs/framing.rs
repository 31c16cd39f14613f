//! SockJS 0.3.3 framing, pure: `o` open, `h` heartbeat, `a[...]` messages, `c[code,"reason"]`
//! close, and the client's JSON-array payloads.

use crate::outlet::End;

/// The open frame.
pub const OPEN: &str = "o";
/// The heartbeat frame.
pub const HEARTBEAT: &str = "h";

/// `a["m1","m2"]`: messages as a JSON array of strings, with the characters SockJS requires
/// escaped (some browsers mangle them in transports that are not WebSocket).
pub fn messages<S: AsRef<str>>(messages: &[S]) -> String {
    let mut out = String::from("a[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_into(&mut out, message.as_ref());
    }
    out.push(']');
    out
}

/// `c[3000,"Go away!"]`.
pub fn close(code: u16, reason: &str) -> String {
    let mut out = format!("c[{code},");
    quote_into(&mut out, reason);
    out.push(']');
    out
}

/// A JSON string literal, escaping what JSON needs and what SockJS asks for.
fn quote_into(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || matches!(c as u32, 0x7f..=0x9f | 0xad | 0x600..=0x604 | 0x70f | 0x17b4 | 0x17b5
                    | 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfeff | 0xfff0..=0xffff) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why a client payload is refused (the texts are the protocol's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("Payload expected.")]
    Empty,
    #[error("Broken JSON encoding.")]
    BrokenJson,
}

impl PayloadError {
    /// The protocol's text for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Empty => "Payload expected.",
            PayloadError::BrokenJson => "Broken JSON encoding.",
        }
    }
}

/// Parses a client payload: a JSON array of strings, or a single JSON string.
pub fn parse_payload(body: &[u8]) -> Result<Vec<String>, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    if let Ok(list) = serde_json::from_slice::<Vec<String>>(body) {
        return Ok(list);
    }
    serde_json::from_slice::<String>(body)
        .map(|one| vec![one])
        .map_err(|_| PayloadError::BrokenJson)
}

/// A `jsonp_send` body's payload: the form field `d` (percent-decoded; none: empty) when
/// the body is form-encoded, else the body itself.
pub fn jsonp_payload(form: bool, body: &[u8]) -> Vec<u8> {
    // A form body is ASCII (percent-encoded). Raw bytes that are not UTF-8 would be replaced
    // by U+FFFD in the decoding, one byte by three, so the payload could outgrow the body's
    // limit: such a body goes on as it is, to be refused as broken JSON.
    if !form || std::str::from_utf8(body).is_err() {
        return body.to_vec();
    }
    form_urlencoded::parse(body)
        .find(|(key, _)| key == "d")
        .map(|(_, value)| value.into_owned().into_bytes())
        .unwrap_or_default()
}

/// The SockJS close frame for an end: 1001 when the server goes away, else SockJS's 3000.
pub fn sockjs_close(end: End) -> (u16, &'static str) {
    if end.is_shutdown() {
        end.close_code()
    } else {
        (3000, "Go away!")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_byte_exact() {
        assert_eq!(
            messages(&["CONNECTED\nversion:1.2\n\n\u{0}"]),
            "a[\"CONNECTED\\nversion:1.2\\n\\n\\u0000\"]"
        );
        assert_eq!(messages(&["a", "b\"c"]), "a[\"a\",\"b\\\"c\"]");
        assert_eq!(messages(&["주문 😀"]), "a[\"주문 😀\"]");
        assert_eq!(messages(&["\u{2028}\u{200c}"]), "a[\"\\u2028\\u200c\"]");
        assert_eq!(close(3000, "Go away!"), "c[3000,\"Go away!\"]");
        assert_eq!(
            close(2010, "Another connection still open"),
            "c[2010,\"Another connection still open\"]"
        );
    }

    #[test]
    fn escaped_frames_are_valid_json() {
        let text = "SEND\n\n\u{0}\u{7f}\u{2028}\"\\주문";
        let frame = messages(&[text]);
        let parsed: Vec<String> = serde_json::from_str(&frame[1..]).unwrap();
        assert_eq!(parsed, [text]);
    }

    #[test]
    fn form_values_are_percent_decoded() {
        let d = |body: &[u8]| String::from_utf8(jsonp_payload(true, body)).unwrap();
        assert_eq!(d(b"p=p&d=%5B%22a+b%22%5D"), "[\"a b\"]");
        assert_eq!(d(b"d=100%"), "100%");
        assert_eq!(d(b"d=%zz"), "%zz");
        assert_eq!(d(b"p=1"), "");
        assert_eq!(jsonp_payload(false, b"d=%5B"), b"d=%5B");
    }

    /// Found by the fuzz target `sockjs_payload`: raw 0xff bytes in a form body came out as
    /// U+FFFD, three bytes each, past the payload limit the body was read within.
    #[test]
    fn a_form_body_that_is_not_utf8_is_not_decoded_larger() {
        let mut body = b"=d==".to_vec();
        body.extend([0xff; 60]);
        let payload = jsonp_payload(true, &body);
        assert!(payload.len() <= body.len());
        assert_eq!(parse_payload(&payload), Err(PayloadError::BrokenJson));
    }

    #[test]
    fn payloads_are_arrays_or_single_strings() {
        assert_eq!(
            parse_payload(br#"["a","b"]"#),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_payload(br#""x""#), Ok(vec!["x".into()]));
        assert_eq!(parse_payload(b""), Err(PayloadError::Empty));
        assert_eq!(parse_payload(b"[\"x"), Err(PayloadError::BrokenJson));
        assert_eq!(parse_payload(b"[1]"), Err(PayloadError::BrokenJson));
    }
}
