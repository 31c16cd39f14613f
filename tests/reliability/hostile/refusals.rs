//! The hostile case's protocol attacks, each answered by a refusal the spec names: frames
//! over the limit, too many subscriptions, malformed SockJS JSON, invalid UTF-8, STOMP
//! header injection, and SEND to the broker.

use tokio_tungstenite::tungstenite::Message;

use super::wire::{self, Next, Stomp};
use super::{Arena, Verdict};

/// Sends `frames` on a connected session of `user` and expects an ERROR whose message
/// contains `expected`, then the close.
pub(super) async fn refused_on(
    a: &Arena,
    v: &mut Verdict,
    user: &str,
    frames: &str,
    expected: &str,
) {
    let outcome = async {
        let mut stomp = a.connected(user).await?;
        stomp.send(frames).await?;
        anyhow::Ok(stomp.refusal().await)
    }
    .await;
    v.expect_error(frames, outcome, expected);
}

/// A STOMP frame over the frame limit in one WebSocket message; the same split over two
/// messages that are each under it; an `xhr_send` body over the SockJS payload limit.
/// Expected: ERROR and close (or the WebSocket closed as too big), and 413.
pub async fn frames_over_the_limit(a: &Arena) -> anyhow::Result<Verdict> {
    let mut v = Verdict::new(3);
    let big = "x".repeat(a.max_frame + 1024);
    let frame = format!("SEND\ndestination:/app/notifications.read\n\n{big}\0");
    let mut stomp = a.connected("mallory").await?;
    stomp.send(&frame).await?;
    match stomp.next(wire::WAIT).await {
        Next::Closed(code) if wire::refusing_close(code) => v.refused += 1,
        Next::Frame(f) if f.starts_with("ERROR\n") && stomp.closes().await => v.refused += 1,
        other => v.fail(format!("one message: {other:?}")),
    }
    let (first, second) = frame.split_at(frame.len() / 2);
    let mut stomp = a.connected("mallory").await?;
    stomp.send(first).await?;
    stomp.send(second).await?;
    v.expect_error("split frame", Ok(stomp.refusal().await), "larger than");

    let session = a.sockjs_session("mallory", "big").await?;
    let body = serde_json::to_vec(&[big.repeat(8)])?;
    let answer = session.send(a, &body).await?;
    if answer.status == 413 {
        v.refused += 1;
    } else {
        v.fail(format!(
            "xhr_send of {} KiB: {}",
            body.len() / 1024,
            answer.brief()
        ));
    }
    Ok(v)
}

/// 1 000 SUBSCRIBEs with receipts on one session. Expected: the first ones up to the
/// session limit get their RECEIPT, the next an ERROR (`Too many subscriptions`), then
/// the close; the rest are never read.
pub async fn many_subscriptions(a: &Arena) -> anyhow::Result<Verdict> {
    let limit = gateway::session::SessionConfig::default().max_subscriptions;
    let mut stomp = a.connected("mallory").await?;
    let frames: String = (0..1000)
        .map(|i| format!("SUBSCRIBE\nid:s{i}\ndestination:/topic/timedeals\nreceipt:r{i}\n\n\0"))
        .collect();
    stomp.send(&frames).await?;
    let mut receipts = 0;
    let mut v = Verdict::new(1);
    loop {
        match stomp.next(wire::WAIT).await {
            Next::Frame(f) if f.starts_with("RECEIPT\n") => receipts += 1,
            Next::Frame(f) if f.starts_with("ERROR\n") => {
                let message = wire::header_of(&f, "message").unwrap_or_default();
                if message == "Too many subscriptions" && receipts == limit && stomp.closes().await
                {
                    v.refused += 1;
                } else {
                    v.fail(format!("ERROR {message:?} after {receipts} receipts"));
                }
                break;
            }
            other => {
                v.fail(format!("{other:?} after {receipts} receipts"));
                break;
            }
        }
    }
    v.note(format!("{receipts} accepted (limit {limit}), 1 000 sent"));
    Ok(v)
}

/// `xhr_send` bodies that are neither a JSON array of strings nor one JSON string (which
/// SockJS servers take as one message), on a connected SockJS session.
/// Expected: SockJS's 500 `Broken JSON encoding.` (or `Payload expected.` for an empty
/// one), and the session goes on (a heart-beat afterwards is accepted).
pub async fn malformed_sockjs_json(a: &Arena) -> anyhow::Result<Verdict> {
    let bodies: [&[u8]; 9] = [
        b"[",
        b"[\"CONNECT\\n",
        b"{\"a\":1}",
        b"[1,2]",
        b"[null]",
        b"\"SEND",
        b"[\"\\ud800\"",
        b"[\"a\"]]",
        b"",
    ];
    let mut v = Verdict::new(bodies.len() + 1);
    let session = a.sockjs_session("mallory", "json").await?;
    for body in bodies {
        let answer = session.send(a, body).await?;
        let expected = if body.is_empty() {
            "Payload expected."
        } else {
            "Broken JSON encoding."
        };
        if answer.status == 500 && answer.text().trim() == expected {
            v.refused += 1;
        } else {
            v.fail(format!(
                "{:?}: {}",
                String::from_utf8_lossy(body),
                answer.brief()
            ));
        }
    }
    let beat = session.send(a, b"[\"\\n\"]").await?;
    if beat.status == 204 {
        v.refused += 1;
    } else {
        v.fail(format!("the session afterwards: {}", beat.brief()));
    }
    Ok(v)
}

/// Invalid UTF-8: in a STOMP header (a binary WebSocket message, before and after
/// CONNECT), and inside an `xhr_send` JSON string. Expected: ERROR and close; 500.
pub async fn invalid_utf8(a: &Arena) -> anyhow::Result<Verdict> {
    let mut v = Verdict::new(3);
    let mut stomp = Stomp::open(wire::host(0, 1), a.gateway).await?;
    let mut connect = b"CONNECT\naccept-version:1.2\nX-WS-Ticket:\xff\xfe\n\n\0".to_vec();
    stomp
        .send_message(Message::binary(std::mem::take(&mut connect)))
        .await?;
    v.expect_error("CONNECT", Ok(stomp.refusal().await), "");

    let mut stomp = a.connected("mallory").await?;
    let subscribe = b"SUBSCRIBE\nid:\xc3\x28\ndestination:/user/queue/notifications\n\n\0";
    stomp
        .send_message(Message::binary(subscribe.to_vec()))
        .await?;
    v.expect_error("SUBSCRIBE", Ok(stomp.refusal().await), "UTF-8");

    let session = a.sockjs_session("mallory", "utf8").await?;
    let answer = session
        .send(a, b"[\"SEND\\n\xff\xfe\\n\\n\\u0000\"]")
        .await?;
    if answer.status == 500 {
        v.refused += 1;
    } else {
        v.fail(format!("xhr_send: {}", answer.brief()));
    }
    Ok(v)
}

/// Header values that try to smuggle a line or a user: escaped `\n` and `:` in a
/// destination, `destination` twice (the victim's first, or second), and a `user-name`
/// on CONNECT. Expected: ERROR and close where the first destination is not the
/// attacker's own; accepted as the attacker's own queue otherwise, with nothing of the
/// victim's delivered to it.
pub async fn header_injection(a: &Arena) -> anyhow::Result<Verdict> {
    let c = &a.canary;
    let refused = [
        format!("SUBSCRIBE\nid:0\ndestination:/user/{c}\\c/queue/notifications\n\n\0"),
        format!("SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\\nuser-name\\c{c}\n\n\0"),
        format!("SUBSCRIBE\nid:0\ndestination:/user/{c}\\n/queue/notifications\n\n\0"),
        format!(
            "SUBSCRIBE\nid:0\ndestination:/user/{c}/queue/notifications\n\
             destination:/user/queue/notifications\n\n\0"
        ),
    ];
    let mut v = Verdict::new(refused.len() + 2);
    for frame in &refused {
        refused_on(a, &mut v, "mallory", frame, "ubscribe").await;
    }
    // Own destination first: the first header wins, so this is the attacker's own queue.
    let mut stomp = a.connected("mallory").await?;
    stomp
        .send(&format!(
            "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\n\
             destination:/user/{c}/queue/notifications\nreceipt:own\n\n\0"
        ))
        .await?;
    match stomp.next(wire::WAIT).await {
        Next::Frame(f) if f.starts_with("RECEIPT\n") => {
            let json = super::traffic::notification(-7, c, 0);
            a.publish(c, &json).await?;
            let own = super::traffic::notification(-8, "mallory", 0);
            a.publish("mallory", &own).await?;
            match stomp.next(wire::WAIT).await {
                Next::Frame(f) if wire::body_of(&f) == own => v.refused += 1,
                other => v.fail(format!("after the duplicate destination: {other:?}")),
            }
        }
        other => v.fail(format!("own destination first: {other:?}")),
    }
    // A user-name header on CONNECT names nobody: the session is the token's user.
    let (_, first) = Stomp::connect(
        wire::host(0, 1),
        a.gateway,
        &format!(
            "{}\nuser-name:{c}\nlogin:{c}",
            a.tokens.bearer_line("mallory")
        ),
    )
    .await?;
    match first {
        Next::Frame(f) if wire::header_of(&f, "user-name").as_deref() == Some("mallory") => {
            v.refused += 1;
        }
        other => v.fail(format!("CONNECT with user-name: {other:?}")),
    }
    Ok(v)
}

/// SEND to broker destinations and to the victim's queue. Expected: ERROR (`Clients may
/// only send to /app/notifications.read`) and close, each.
pub async fn send_to_broker(a: &Arena) -> anyhow::Result<Verdict> {
    let destinations = [
        "/topic/timedeals".to_owned(),
        "/topic/anything".to_owned(),
        "/queue/notifications".to_owned(),
        format!("/user/{}/queue/notifications", a.canary),
        "/user/queue/notifications".to_owned(),
        "/app/other".to_owned(),
    ];
    let mut v = Verdict::new(destinations.len());
    for destination in &destinations {
        let body = super::traffic::notification(-9, &a.canary, 0);
        let frame =
            format!("SEND\ndestination:{destination}\ncontent-type:application/json\n\n{body}\0");
        refused_on(a, &mut v, "mallory", &frame, "/app/notifications.read").await;
    }
    Ok(v)
}
