//! The hostile case's attacks on who may see what, each answered by a refusal the spec
//! names: bad credentials, other users' destinations, foreign origins, and another client
//! on a victim's SockJS session.

use std::time::Duration;

use super::wire::{self, Next, Stomp};
use super::{Arena, Verdict};

/// Forged, unsigned, expired and unknown-key tokens, made-up, spent and expired tickets
/// on CONNECT; forged and expired tokens on REST; another user's token on the victim's
/// stored notification. Expected: ERROR and close; 401 `C005`; 404 `N001` with the row
/// unchanged.
pub async fn bad_credentials(a: &Arena) -> anyhow::Result<Verdict> {
    let c = &a.canary;
    let forged = gateway::auth::sign_hs256(
        b"not-the-gateway-secret-but-32-bytes-long",
        Some(&a.tokens.kid),
        &serde_json::json!({"sub": c, "exp": wire::unix_now() + 3600}),
    );
    let unknown_kid = gateway::auth::sign_hs256(
        a.tokens.secret.as_bytes(),
        Some("k9"),
        &serde_json::json!({"sub": c, "exp": wire::unix_now() + 3600}),
    );
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&serde_json::json!({"sub": c, "exp": wire::unix_now() + 3600}).to_string())
    );
    let expired = a.tokens.signed(c, wire::unix_now() - 3600);
    let spent = a.ticket("mallory").await?;
    let (first_use, _) =
        Stomp::connect(wire::host(0, 1), a.gateway, &format!("X-WS-Ticket:{spent}")).await?;
    first_use.close().await;
    let lapsed = format!("{:032x}", rand::random::<u128>());
    let mut redis = a.redis.clone();
    let () = redis::cmd("SET")
        .arg(format!("{}{lapsed}", a.ticket_prefix))
        .arg(c)
        .arg("PX")
        .arg(1)
        .query_async(&mut redis)
        .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let attempts = [
        (
            "forged JWT",
            format!("Authorization:Bearer {forged}"),
            "Invalid JWT",
        ),
        (
            "unknown kid",
            format!("Authorization:Bearer {unknown_kid}"),
            "Invalid JWT",
        ),
        (
            "alg none",
            format!("Authorization:Bearer {unsigned}"),
            "Invalid JWT",
        ),
        (
            "expired JWT",
            format!("Authorization:Bearer {expired}"),
            "JWT expired",
        ),
        (
            "made-up ticket",
            format!("X-WS-Ticket:{:032x}", rand::random::<u128>()),
            "ticket",
        ),
        ("spent ticket", format!("X-WS-Ticket:{spent}"), "ticket"),
        ("expired ticket", format!("X-WS-Ticket:{lapsed}"), "ticket"),
        ("no credentials", String::new(), "ticket"),
    ];
    let mut v = Verdict::new(attempts.len() + 4);
    for (what, auth, expected) in attempts {
        let outcome = async {
            let (mut stomp, first) = Stomp::connect(wire::host(0, 1), a.gateway, &auth).await?;
            Ok(match first {
                Next::Frame(f) if f.starts_with("ERROR\n") => Ok((
                    wire::header_of(&f, "message").unwrap_or_default(),
                    stomp.closes().await,
                )),
                other => Err(format!("{other:?}")),
            })
        }
        .await;
        v.expect_error(what, outcome, expected);
    }
    for (what, token) in [("forged JWT", &forged), ("expired JWT", &expired)] {
        let answer = a.rest("GET", "/unread/count", Some(token)).await?;
        v.expect_envelope(&format!("REST, {what}"), &answer, 401, "C005");
    }
    let mallory = a.tokens.valid("mallory");
    let row = a.canary_row;
    let read = a
        .rest("PUT", &format!("/{row}/read"), Some(&mallory))
        .await?;
    v.expect_envelope("another user's row, read", &read, 404, "N001");
    let delete = a.rest("DELETE", &format!("/{row}"), Some(&mallory)).await?;
    v.expect_envelope("another user's row, delete", &delete, 404, "N001");
    let status: Option<String> =
        sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM notifications WHERE id = ?")
            .bind(row)
            .fetch_optional(&a.pool)
            .await?;
    if status.as_deref() != Some("UNREAD") {
        v.fail(format!("the victim's row is now {status:?}"));
    }
    Ok(v)
}

fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// SUBSCRIBE to the victim's notifications and read-state queues, and to destinations
/// that are nobody's. Expected: ERROR (`Cannot subscribe to another user's queue`, or
/// `Cannot subscribe to …`) and close, each.
pub async fn foreign_subscriptions(a: &Arena) -> anyhow::Result<Verdict> {
    let c = &a.canary;
    let attempts = [
        (
            format!("/user/{c}/queue/notifications"),
            "another user's queue",
        ),
        (
            format!("/user/{c}/queue/notification-state"),
            "another user's queue",
        ),
        ("/queue/notifications".to_owned(), "Cannot subscribe to"),
        ("/topic/notifications".to_owned(), "Cannot subscribe to"),
        (
            format!("/user/{c}/../mallory/queue/notifications"),
            "Cannot subscribe to",
        ),
        (
            "/user//queue/notifications".to_owned(),
            "Cannot subscribe to",
        ),
    ];
    let mut v = Verdict::new(attempts.len());
    for (destination, expected) in &attempts {
        let frame = format!("SUBSCRIBE\nid:0\ndestination:{destination}\nreceipt:r\n\n\0");
        super::refusals::refused_on(a, &mut v, "mallory", &frame, expected).await;
    }
    Ok(v)
}

/// A foreign (and a `null`) Origin on the WebSocket upgrade, SockJS and the REST API, with
/// valid credentials. Expected: 403 each; the allowed origin is let in.
pub async fn cross_origin(a: &Arena) -> anyhow::Result<Verdict> {
    let token = a.tokens.valid("mallory");
    let bearer = format!("Bearer {token}");
    let mut v = Verdict::new(9);
    for origin in ["https://evil.example", "null"] {
        let ws = wire::websocket(
            wire::host(0, 1),
            a.gateway,
            wire::RAW_WS,
            Some(wire::STOMP_PROTOCOLS),
            &[("Origin", origin)],
        )
        .await?;
        match ws {
            Err(403) => v.refused += 1,
            Err(status) => v.fail(format!("{origin} upgrade: {status}")),
            Ok(_) => v.fail(format!("{origin} upgrade accepted")),
        }
        let paths = [
            ("GET", format!("{}/info", wire::SOCKJS)),
            ("POST", format!("{}/000/xorigin/xhr", wire::SOCKJS)),
            ("GET", "/api/v1/notifications/unread/count".to_owned()),
        ];
        for (method, path) in &paths {
            let answer = wire::http(
                wire::host(0, 1),
                a.gateway,
                method,
                path,
                &[("Origin", origin), ("Authorization", &bearer)],
                b"",
            )
            .await?;
            if answer.status == 403 {
                v.refused += 1;
            } else {
                v.fail(format!("{origin} {method} {path}: {}", answer.brief()));
            }
        }
    }
    let allowed = wire::http(
        wire::host(0, 1),
        a.gateway,
        "GET",
        "/api/v1/notifications/unread/count",
        &[("Origin", a.allowed_origin), ("Authorization", &bearer)],
        b"",
    )
    .await?;
    if allowed.status == 200 {
        v.refused += 1;
    } else {
        v.fail(format!("the allowed origin: {}", allowed.brief()));
    }
    Ok(v)
}

/// The canary's SockJS xhr_streaming session (opened from 127.0.0.1 with its cookie) used
/// by another host and by its own host without the cookie: polling, sending (SUBSCRIBE
/// and DISCONNECT), streaming, eventsource, jsonp. Expected: 404 with an empty body each,
/// and the victim's stream goes on receiving its own notifications.
pub async fn session_takeover(a: &Arena) -> anyhow::Result<Verdict> {
    let mut victim = a.streaming_session(&a.canary, "victim").await?;
    let s = format!("{}/000/{}", wire::SOCKJS, victim.session);
    let evil = serde_json::to_vec(&[
        "SUBSCRIBE\nid:evil\ndestination:/user/queue/notifications\nreceipt:evil\n\n\0",
        "DISCONNECT\nreceipt:evil-bye\n\n\0",
    ])?;
    let attackers = [
        (wire::host(15, 1), None),
        (
            wire::host(15, 1),
            Some("JSESSIONID=0123456789abcdef0123456789abcdef"),
        ),
        (wire::host(0, 1), None),
    ];
    let mut v = Verdict::new(attackers.len() * 5 + 1);
    for (from, cookie) in attackers {
        let mut headers = vec![("Content-Type", "text/plain")];
        headers.extend(cookie.map(|c| ("Cookie", c)));
        let tries: [(&str, String, &[u8]); 5] = [
            ("POST", format!("{s}/xhr"), b""),
            ("POST", format!("{s}/xhr_send"), &evil),
            ("POST", format!("{s}/xhr_streaming"), b""),
            ("GET", format!("{s}/eventsource"), b""),
            ("GET", format!("{s}/jsonp?c=cb"), b""),
        ];
        for (method, path, body) in tries {
            let answer = wire::http(from, a.gateway, method, &path, &headers, body).await?;
            if answer.status == 404 && answer.body.is_empty() {
                v.refused += 1;
            } else {
                v.fail(format!(
                    "{from} {cookie:?} {method} {path}: {}",
                    answer.brief()
                ));
            }
        }
    }
    let marker = super::traffic::notification(-11, &a.canary, 0);
    a.publish(&a.canary, &marker).await?;
    let escaped = serde_json::to_string(&marker)?;
    let delivered = victim.until(escaped.trim_matches('"'), wire::WAIT).await;
    let stream = victim.text();
    if delivered && !stream.contains("evil") {
        v.refused += 1;
    } else {
        v.fail(format!(
            "the victim's stream (delivered: {delivered}): {:?}",
            stream.chars().rev().take(160).collect::<String>()
        ));
    }
    for owner in victim.owners() {
        if owner != a.canary {
            v.fail(format!(
                "the victim's stream carried {owner:?}'s notification"
            ));
        }
    }
    Ok(v)
}
