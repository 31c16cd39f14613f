//! Hostile clients against the gateway over real TCP: another host (a socket bound to
//! 127.0.0.2) or another browser (another cookie) using a victim's SockJS session URL, a
//! client forging `X-Forwarded-For`, and one address opening connections that never
//! CONNECT. Each checks the victim, or a real user elsewhere, is unaffected.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway::config::TrustedProxies;
use gateway::{Gateway, GatewayConfig, Pending};
use support::loopback::{Answer, STOMP, Stream, WAIT, Ws, host, request, websocket_from};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Long enough for a request sent just before to have reached its session.
const SETTLE: Duration = Duration::from_millis(300);
/// The first-frame timeout of the exhaustion tests.
const FIRST_FRAME: Duration = Duration::from_secs(3);
const BASE: &str = "/ws/notifications";

struct Gw {
    addr: SocketAddr,
    prefix: String,
    ticket_prefix: String,
    metrics: gateway::metrics::GatewayMetrics,
    pending: Pending,
    _stop: DropGuard,
}

async fn start(adjust: impl FnOnce(&mut GatewayConfig)) -> Gw {
    let name = support::unique_name("hostile");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), &support::redis_url());
    config.redis.channel_prefix = format!("{name}:notification:");
    config.ticket_prefix = format!("{name}:ws-ticket:");
    adjust(&mut config);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::bind(&config, shutdown.clone()).await.unwrap();
    let gw = Gw {
        addr: gateway.local_addr().unwrap(),
        prefix: config.redis.channel_prefix.clone(),
        ticket_prefix: config.ticket_prefix.clone(),
        metrics: gateway.metrics(),
        pending: gateway.pending(),
        _stop: shutdown.drop_guard(),
    };
    tokio::spawn(gateway.run());
    gw
}

impl Gw {
    fn refused(&self, reason: &str) -> u64 {
        self.metrics.closes.with_label_values(&[reason]).get()
    }

    async fn connect_frame(&self, user: &str) -> String {
        let ticket = support::issue_ticket(&self.ticket_prefix, user).await;
        format!("CONNECT\naccept-version:1.2\nheart-beat:0,0\nX-WS-Ticket:{ticket}\n\n\0")
    }

    async fn publish(&self, user: &str) -> String {
        let json = format!(r#"{{"id":7,"userId":"{user}","title":"for {user} only"}}"#);
        support::notify::publish(&format!("{}{user}", self.prefix), &json).await;
        json
    }
}

/// A client: its address and the `JSESSIONID` it sends.
#[derive(Clone, Copy)]
struct As<'a>(IpAddr, Option<&'a str>);

async fn call(
    gw: &Gw,
    who: As<'_>,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let cookie = who.1.map(|c| format!("JSESSIONID={c}"));
    let mut headers = extra.to_vec();
    headers.extend(cookie.as_deref().map(|c| ("Cookie", c)));
    request(
        who.0,
        gw.addr,
        method,
        &format!("{BASE}{path}"),
        &headers,
        body,
    )
    .await
}

async fn xhr(gw: &Gw, who: As<'_>, session: &str) -> Answer {
    call(gw, who, "POST", &format!("/000/{session}/xhr"), &[], "").await
}

async fn xhr_send(gw: &Gw, who: As<'_>, session: &str, frames: &[&str]) -> Answer {
    let payload = serde_json::to_string(frames).unwrap();
    call(
        gw,
        who,
        "POST",
        &format!("/000/{session}/xhr_send"),
        &[],
        &payload,
    )
    .await
}

/// The STOMP frames of a polling answer's `a[...]` lines.
fn frames(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix('a'))
        .flat_map(|array| serde_json::from_str::<Vec<String>>(array).unwrap())
        .collect()
}

const EVIL: [&str; 2] = [
    "SUBSCRIBE\nid:evil\ndestination:/user/queue/notifications\nreceipt:evil\n\n\0",
    "DISCONNECT\nreceipt:evil-bye\n\n\0",
];

/// `who` tries every HTTP transport on `session`: each answers 404, as for no session.
async fn assert_locked_out(gw: &Gw, who: As<'_>, session: &str) {
    let form = format!(
        "d={}",
        serde_json::to_string(&EVIL).unwrap().replace('%', "%25")
    );
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];
    let s = format!("/000/{session}");
    let attempts = [
        xhr(gw, who, session).await,
        xhr_send(gw, who, session, &EVIL).await,
        call(gw, who, "POST", &format!("{s}/xhr_streaming"), &[], "").await,
        call(gw, who, "GET", &format!("{s}/eventsource"), &[], "").await,
        call(gw, who, "GET", &format!("{s}/htmlfile?c=cb"), &[], "").await,
        call(gw, who, "GET", &format!("{s}/jsonp?c=cb"), &[], "").await,
        call(
            gw,
            who,
            "POST",
            &format!("{s}/jsonp_send"),
            &form_type,
            &form,
        )
        .await,
    ];
    for answer in attempts {
        assert_eq!(answer.status, 404, "{} {:?}: {answer:?}", who.0, who.1);
        assert!(answer.body.is_empty(), "nothing revealed: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_browser_or_host_cannot_use_a_cookie_bound_xhr_polling_session() {
    let gw = start(|_| {}).await;
    let victim_host = host(1);
    // The victim's browser gets its cookie from /info, before the session.
    let info = call(&gw, As(victim_host, None), "GET", "/info", &[], "").await;
    let cookie = info.jsessionid().expect("a JSESSIONID on /info").to_owned();
    assert!(cookie.len() == 32 && cookie.bytes().all(|b| b.is_ascii_hexdigit()));
    let set_cookie = info.header("set-cookie").unwrap();
    assert!(set_cookie.contains("Path=/") && set_cookie.contains("HttpOnly"));
    let victim = As(victim_host, Some(&cookie));
    let session = "victimpoll";
    let open = xhr(&gw, victim, session).await;
    assert_eq!(open.body, "o\n");
    assert_eq!(open.jsessionid(), Some(cookie.as_str()), "echoed");
    let connect = gw.connect_frame("victim").await;
    assert_eq!(
        xhr_send(&gw, victim, session, &[&connect]).await.status,
        204
    );

    // Another browser on the same host, the victim's host without the cookie, another
    // host with and without a cookie: none reaches the session.
    let other = call(&gw, As(victim_host, None), "GET", "/info", &[], "").await;
    let other = other.jsessionid().unwrap().to_owned();
    assert_ne!(other, cookie, "every client its own cookie");
    for attacker in [
        As(victim_host, Some(&other)),
        As(victim_host, None),
        As(host(2), None),
        As(host(2), Some(&other)),
    ] {
        assert_locked_out(&gw, attacker, session).await;
    }

    // Nothing was consumed: CONNECTED still waits for the victim.
    let connected = frames(&xhr(&gw, victim, session).await.body);
    assert!(connected[0].starts_with("CONNECTED\n"), "{connected:?}");
    let subscribe = "SUBSCRIBE\nid:mine\ndestination:/user/queue/notifications\nreceipt:mine\n\n\0";
    assert_eq!(
        xhr_send(&gw, victim, session, &[subscribe]).await.status,
        204
    );
    let receipt = frames(&xhr(&gw, victim, session).await.body);
    assert!(
        receipt[0].starts_with("RECEIPT\nreceipt-id:mine\n"),
        "{receipt:?}"
    );

    // While the victim's long poll is attached, an attacker's poll is not even told that
    // another receiver is open, and the victim's poll gets its notification.
    let attack_then_publish = async {
        tokio::time::sleep(SETTLE).await;
        assert_locked_out(&gw, As(host(2), None), session).await;
        gw.publish("victim").await
    };
    let (answer, json) = tokio::join!(xhr(&gw, victim, session), attack_then_publish);
    let delivered = frames(&answer.body);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(
        delivered[0].starts_with("MESSAGE\n") && delivered[0].ends_with(&format!("\n\n{json}\0"))
    );
    assert!(!delivered[0].contains("evil"), "{delivered:?}");
    // Still open (no DISCONNECT of the attacker's arrived): a beat, not a close.
    let quiet = xhr_send(&gw, victim, session, &["\n"]).await;
    assert_eq!(quiet.status, 204, "{quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_cannot_use_an_address_bound_xhr_streaming_session() {
    let gw = start(|_| {}).await;
    // Like Node's sockjs-client: no cookie at all, so the session is bound to the address.
    let victim = As(host(1), None);
    let session = "victimstream";
    let path = format!("{BASE}/000/{session}/xhr_streaming");
    let mut stream = Stream::open(victim.0, gw.addr, "POST", &path, &[], "").await;
    assert!(stream.until("h\no\n", WAIT).await, "{:?}", stream.answer());
    assert_eq!(stream.answer().status, 200);

    for attacker in [As(host(2), None), As(host(2), Some("a-cookie-of-its-own"))] {
        assert_locked_out(&gw, attacker, session).await;
    }

    // The victim's later request carrying a cookie (as a browser's xhr_send beside a
    // cross-origin EventSource does) passes the address check.
    let with_cookie = As(victim.0, Some("set-after-the-session-opened"));
    let connect = gw.connect_frame("streamer").await;
    assert_eq!(
        xhr_send(&gw, with_cookie, session, &[&connect])
            .await
            .status,
        204
    );
    assert!(
        stream.until("CONNECTED", WAIT).await,
        "{:?}",
        stream.answer()
    );
    let subscribe = "SUBSCRIBE\nid:s\ndestination:/user/queue/notifications\nreceipt:r\n\n\0";
    assert_eq!(
        xhr_send(&gw, victim, session, &[subscribe]).await.status,
        204
    );
    assert!(stream.until("receipt-id:r", WAIT).await);
    let json = gw.publish("streamer").await;
    let escaped = serde_json::to_string(&json).unwrap();
    assert!(
        stream.until(escaped.trim_matches('"'), WAIT).await,
        "{:?}",
        stream.answer()
    );
    let received = frames(&stream.body());
    assert_eq!(
        received.len(),
        3,
        "CONNECTED, RECEIPT, MESSAGE only: {received:?}"
    );
    assert!(!stream.body().contains("evil"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_names_the_client_only_when_a_trusted_proxy_sends_it() {
    let gw = start(|config| {
        config.trusted_proxies = "127.0.0.1/32".parse::<TrustedProxies>().unwrap();
        config.max_pending_per_ip = 2;
    })
    .await;
    let proxy = host(1);
    let via = |chain: &'static str| [("X-Forwarded-For", chain)];
    let forwarded = |chain: &'static str, session: &str| {
        let path = format!("/000/{session}/xhr");
        let gw = &gw;
        async move { call(gw, As(proxy, None), "POST", &path, &via(chain), "").await }
    };
    let send = |from: IpAddr, chain: &'static str| {
        let gw = &gw;
        async move {
            call(
                gw,
                As(from, None),
                "POST",
                "/000/fwd1/xhr_send",
                &via(chain),
                "[\"\\n\"]",
            )
            .await
            .status
        }
    };
    // The leftmost entry is the client's own claim; the proxy appended the real address.
    assert_eq!(
        forwarded("198.51.100.66, 203.0.113.7", "fwd1").await.body,
        "o\n"
    );
    assert_eq!(send(proxy, "203.0.113.8").await, 404, "another client");
    assert_eq!(send(proxy, "203.0.113.7").await, 204, "the same client");
    assert_eq!(
        send(proxy, "6.6.6.6, 203.0.113.7, 127.0.0.1").await,
        204,
        "trusted hop skipped"
    );
    assert_eq!(
        send(host(2), "203.0.113.7").await,
        404,
        "an untrusted peer's header is ignored"
    );

    // Pending connections are counted by the forwarded address too.
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(forwarded("203.0.113.7", "fwd2").await.body, "o\n");
    assert_eq!(gw.pending.count_from(client), 2);
    assert_eq!(forwarded("203.0.113.7", "fwd3").await.status, 429);
    assert_eq!(forwarded("203.0.113.9", "fwd4").await.body, "o\n");
    let spoofed = call(
        &gw,
        As(host(2), None),
        "POST",
        "/000/fwd5/xhr",
        &via("203.0.113.7"),
        "",
    )
    .await;
    assert_eq!(
        spoofed.body, "o\n",
        "counted as 127.0.0.2, not as the forged address"
    );
    assert_eq!(gw.refused("max_pending_per_ip"), 1);
}

/// A connection attempt from `from` on one of the transports that open a session, chosen
/// by `n`; the held connection, or the refusal's status.
async fn open_idle(gw: &Gw, from: IpAddr, n: usize) -> Result<Held, u16> {
    let session = format!("idle{n}");
    match n % 4 {
        0 => websocket_from(from, gw.addr, &format!("{BASE}/websocket"), STOMP)
            .await
            .map(|ws| Held::Ws(Box::new(ws))),
        1 => websocket_from(
            from,
            gw.addr,
            &format!("{BASE}/000/{session}/websocket"),
            None,
        )
        .await
        .map(|ws| Held::Ws(Box::new(ws))),
        2 => match xhr(gw, As(from, None), &session).await {
            open if open.body == "o\n" => Ok(Held::Session),
            refused => Err(refused.status),
        },
        _ => {
            let path = format!("{BASE}/000/{session}/xhr_streaming");
            let mut stream = Stream::open(from, gw.addr, "POST", &path, &[], "").await;
            match stream.until("h\no\n", WAIT).await {
                true => Ok(Held::Stream(stream)),
                false => Err(stream.answer().status),
            }
        }
    }
}

enum Held {
    Ws(Box<Ws>),
    Stream(Stream),
    /// An xhr session: nothing to hold; it waits on the server.
    Session,
}

/// A real user from `from`: connects over raw WebSocket, subscribes, and receives one
/// notification; how long the connection took to be CONNECTED.
async fn real_user(gw: &Gw, from: IpAddr, user: &str) -> Duration {
    let t0 = Instant::now();
    let mut ws = websocket_from(from, gw.addr, &format!("{BASE}/websocket"), STOMP)
        .await
        .expect("admitted");
    ws.send(Message::text(gw.connect_frame(user).await))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("CONNECTED\n"));
    let connected = t0.elapsed();
    let subscribe = "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:r\n\n\0";
    ws.send(Message::text(subscribe)).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("RECEIPT\n"));
    let json = gw.publish(user).await;
    let message = next_text(&mut ws).await;
    assert!(
        message.starts_with("MESSAGE\n") && message.ends_with(&format!("{json}\0")),
        "{message}"
    );
    connected
}

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("a frame expected: {other:?}"),
    }
}

// Prints what one address could hold and how fast the real user got in, for `--nocapture`.
#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_pending_share_and_real_users_still_connect() {
    let gw = start(|config| config.first_frame_timeout_ms = FIRST_FRAME.as_millis() as u64).await;
    let flood = host(1);
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for n in 0..100 {
        match open_idle(&gw, flood, n).await {
            Ok(connection) => held.push(connection),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(held.len(), 32, "WS_MAX_PENDING_PER_IP's default");
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");
    assert_eq!(gw.refused("max_pending_per_ip"), 68);
    // Every other session-opening transport is refused as well.
    for path in ["eventsource", "htmlfile?c=cb", "jsonp?c=cb"] {
        let answer = call(
            &gw,
            As(flood, None),
            "GET",
            &format!("/000/more/{path}"),
            &[],
            "",
        )
        .await;
        assert_eq!(answer.status, 429, "{path}");
    }

    let took = real_user(&gw, host(2), "real").await;
    eprintln!(
        "flood: {} held, {} refused; a user elsewhere was CONNECTED in {took:?}",
        held.len(),
        refused.len()
    );

    // The idle ones end at the first-frame timeout (the gateway closes them) and their
    // slots come back.
    support::wait_until("the pending slots are free", FIRST_FRAME + WAIT, || async {
        gw.pending.count() == 0
    })
    .await;
    for connection in &mut held {
        match connection {
            // SockJS's `o` and `c[...]` come first on its WebSocket.
            Held::Ws(ws) => loop {
                match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(Message::Text(sockjs))) => assert!(sockjs.len() < 32, "{sockjs}"),
                    other => panic!("a close expected: {other:?}"),
                }
            },
            Held::Stream(stream) => assert!(stream.until("c[", WAIT).await),
            Held::Session => {}
        }
    }
    assert_eq!(gw.refused("no_connect"), 32);
    drop(held);
    let again = websocket_from(flood, gw.addr, &format!("{BASE}/websocket"), STOMP).await;
    assert!(again.is_ok(), "the address may connect again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_total_bounds_every_address_and_connecting_frees_a_slot() {
    let gw = start(|config| {
        config.max_pending_per_ip = 4;
        config.max_pending_connections = Some(6);
    })
    .await;
    let raw = format!("{BASE}/websocket");
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(websocket_from(host(1), gw.addr, &raw, STOMP).await.unwrap());
    }
    assert_eq!(
        websocket_from(host(1), gw.addr, &raw, STOMP).await.err(),
        Some(429)
    );
    let mut second = Vec::new();
    for _ in 0..2 {
        second.push(websocket_from(host(3), gw.addr, &raw, STOMP).await.unwrap());
    }
    assert_eq!(
        websocket_from(host(3), gw.addr, &raw, STOMP).await.err(),
        Some(503)
    );
    assert_eq!(
        websocket_from(host(2), gw.addr, &raw, STOMP).await.err(),
        Some(503)
    );
    assert_eq!(gw.refused("max_pending"), 2);

    // One of the pending connections authenticates: it is no longer pending.
    let ws = &mut first[0];
    ws.send(Message::text(gw.connect_frame("first").await))
        .await
        .unwrap();
    assert!(next_text(ws).await.starts_with("CONNECTED\n"));
    assert_eq!(gw.pending.count(), 5);
    real_user(&gw, host(2), "late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_lifts_the_pending_limits() {
    let gw = start(|config| {
        config.max_pending_per_ip = 0;
        config.max_pending_connections = Some(0);
    })
    .await;
    let mut held = Vec::new();
    for n in 0..64 {
        held.push(
            open_idle(&gw, host(1), n)
                .await
                .unwrap_or_else(|s| panic!("{n}: {s}")),
        );
    }
    assert_eq!(gw.pending.count(), 64);
}
