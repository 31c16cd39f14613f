//! The hostile case's slow and heavy attacks: connections that send part of a request, a
//! frame or a body and never finish it (slowloris), a client that never reads, a flood of
//! connection attempts, and connections that never CONNECT. Each holds what it opened
//! until the gateway refuses or closes it, or until its time is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::wire::{self, Next, Stomp};
use super::{Arena, TIMEOUT_SLACK, Verdict};

/// How often a slow client sends its next byte.
const TRICKLE: Duration = Duration::from_millis(500);
/// Long enough for a close the gateway sent to have reached its client (loopback).
const CLOSE_ARRIVES: Duration = Duration::from_millis(200);
/// How much earlier than its client the gateway may start a connection's first-frame timer.
const CLOCK_SKEW: Duration = Duration::from_millis(500);

/// What became of a connection left unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Open,
    /// The gateway answered (an HTTP status) and closed.
    Answered(u16),
    /// The gateway closed it without an answer.
    Closed,
}

/// Whether the gateway has closed `tcp` (or answered on it): reads what is there without
/// waiting.
fn fate_of(tcp: &TcpStream, seen: &mut Vec<u8>) -> Fate {
    let mut buf = [0u8; 4096];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => {
                return match wire::Answer::parse(seen) {
                    Some(answer) => Fate::Answered(answer.status),
                    None => Fate::Closed,
                };
            }
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Fate::Open,
            Err(_) => return Fate::Closed,
        }
    }
}

/// Connections that each wrote `opening` and then trickle `more` every [`TRICKLE`] until
/// the gateway ends them or `hold` passes; what became of each and when it was last seen
/// open or first seen ended, and the real user's CONNECT time measured meanwhile (halfway
/// to the header and body timeout, while the connections are held).
async fn trickle(
    a: &Arena,
    conns: Vec<TcpStream>,
    more: &[u8],
    hold: Duration,
) -> (Vec<(Fate, Duration)>, anyhow::Result<Duration>) {
    let started = Instant::now();
    let mut conns: Vec<(TcpStream, Vec<u8>, Fate, Duration)> = conns
        .into_iter()
        .map(|c| (c, Vec::new(), Fate::Open, Duration::ZERO))
        .collect();
    let real_user = async {
        tokio::time::sleep(a.size.http_timeout.min(hold) / 2).await;
        a.real_user().await
    };
    let slow = async {
        while started.elapsed() < hold && conns.iter().any(|c| c.2 == Fate::Open) {
            for (tcp, seen, fate, lived) in conns.iter_mut().filter(|c| c.2 == Fate::Open) {
                *fate = fate_of(tcp, seen);
                if *fate == Fate::Open && tcp.write_all(more).await.is_err() {
                    *fate = Fate::Closed;
                }
                *lived = started.elapsed();
            }
            tokio::time::sleep(TRICKLE.min(hold.saturating_sub(started.elapsed()))).await;
        }
        for (tcp, seen, fate, lived) in conns.iter_mut().filter(|c| c.2 == Fate::Open) {
            *fate = fate_of(tcp, seen);
            *lived = started.elapsed();
        }
    };
    let (real, ()) = tokio::join!(real_user, slow);
    (conns.into_iter().map(|c| (c.2, c.3)).collect(), real)
}

/// Client `i`'s address among `addresses` of the `127.0.{net}.x` network.
fn spread(net: u8, i: usize, addresses: usize) -> std::net::IpAddr {
    wire::host(net, (i % addresses) as u8 + 1)
}

/// Partial HTTP request headers, one more header line every half second, never ending.
/// Expected: the gateway closes each at its header timeout (or at once, past the
/// per-address cap of connections without a request head), and a real user connects
/// meanwhile.
pub async fn slowloris_headers(a: &Arena) -> anyhow::Result<Verdict> {
    let n = a.size.slowloris;
    let mut conns = Vec::new();
    for i in 0..n {
        let mut tcp = wire::tcp_from(spread(10, i, 8), a.gateway, None).await?;
        tcp.write_all(b"GET /ws/notifications/info HTTP/1.1\r\nHost: localhost\r\n")
            .await?;
        conns.push(tcp);
    }
    let (fates, real) = trickle(a, conns, b"X-Slow: 1\r\n", a.size.slowloris_hold).await;
    Ok(unfinished(a, &fates, real))
}

/// The verdict on requests left unfinished: each must have been answered or closed within
/// the gateway's header or body timeout (plus [`TIMEOUT_SLACK`]), and a real user connected
/// meanwhile.
fn unfinished(a: &Arena, fates: &[(Fate, Duration)], real: anyhow::Result<Duration>) -> Verdict {
    let bound = a.size.http_timeout + TIMEOUT_SLACK;
    let mut v = Verdict::new(fates.len());
    v.counted = "closed in time";
    v.refused = fates
        .iter()
        .filter(|(f, lived)| *f != Fate::Open && *lived <= bound)
        .count();
    let open = fates.iter().filter(|(f, _)| *f == Fate::Open).count();
    if open > 0 {
        v.fail(format!("{open} still open"));
    }
    let late = fates
        .iter()
        .filter(|(f, lived)| *f != Fate::Open && *lived > bound)
        .count();
    if late > 0 {
        v.fail(format!(
            "{late} ended later than {:.1} s",
            bound.as_secs_f64()
        ));
    }
    v.note(lifetimes(fates, a.size.http_timeout));
    v.real_user(real);
    v
}

/// A partial STOMP CONNECT frame on raw WebSockets (within the per-address pending limit),
/// one more byte every half second. Expected: each closed at the first-frame timeout.
pub async fn slowloris_stomp(a: &Arena) -> anyhow::Result<Verdict> {
    let n = a.size.slow_sessions;
    let mut sockets = Vec::new();
    for i in 0..n {
        let mut stomp = Stomp::open(spread(11, i, n.div_ceil(16)), a.gateway).await?;
        stomp.send("CONNECT\naccept-version:1.2\nhost:x\n").await?;
        sockets.push(stomp);
    }
    let started = Instant::now();
    let limit = a.first_frame + wire::WAIT;
    let outcomes = join_all(sockets.into_iter().map(|mut stomp| async move {
        let mut ticks = tokio::time::interval(TRICKLE);
        loop {
            tokio::select! {
                next = stomp.next(limit) => match next {
                    Next::Closed(code) => return Ok((code, started.elapsed())),
                    Next::Timeout => return Err("still open".to_owned()),
                    Next::Frame(frame) if frame.starts_with("ERROR\n") => {}
                    Next::Frame(frame) => return Err(format!("answered {frame:?}")),
                },
                _ = ticks.tick() => {
                    // A byte of a header line that never ends.
                    let _ = stomp.send("x").await;
                }
            }
        }
    }));
    let (outcomes, real) = tokio::join!(outcomes, async {
        tokio::time::sleep(a.first_frame / 2).await;
        a.real_user().await
    });
    let mut v = Verdict::new(n);
    let mut longest = Duration::ZERO;
    for outcome in outcomes {
        match outcome {
            Ok((code, lived)) if wire::refusing_close(code) => {
                v.refused += 1;
                longest = longest.max(lived);
            }
            Ok((code, _)) => v.fail(format!("closed with {code:?}")),
            Err(what) => v.fail(what),
        }
    }
    v.note(format!(
        "closed after ≤ {:.1} s (first-frame timeout {:.0} s)",
        longest.as_secs_f64(),
        a.first_frame.as_secs_f64()
    ));
    v.real_user(real);
    Ok(v)
}

/// SockJS xhr sessions whose `xhr_send` body (longer by its Content-Length than what is
/// sent) trickles in a byte every half second. Expected: the gateway gives up on the body
/// at its body timeout (408, then the close); the sessions end later at the first-frame
/// timeout.
pub async fn slowloris_xhr_send(a: &Arena) -> anyhow::Result<Verdict> {
    let n = a.size.slow_sessions / 2;
    let mut conns = Vec::new();
    for i in 0..n {
        let from = spread(12, i, n.div_ceil(16));
        let session = format!("slow{i}");
        let open = wire::http(
            from,
            a.gateway,
            "POST",
            &format!("{}/000/{session}/xhr", wire::SOCKJS),
            &[],
            b"",
        )
        .await?;
        anyhow::ensure!(open.text() == "o\n", "xhr answered {}", open.brief());
        let mut tcp = wire::tcp_from(from, a.gateway, None).await?;
        let head = format!(
            "POST {}/000/{session}/xhr_send HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: text/plain\r\nContent-Length: 4096\r\n\r\n[\"CONNECT\\n",
            wire::SOCKJS
        );
        tcp.write_all(head.as_bytes()).await?;
        conns.push(tcp);
    }
    let (fates, real) = trickle(a, conns, b"x", a.size.slowloris_hold).await;
    Ok(unfinished(a, &fates, real))
}

/// A summary of how unfinished connections ended: how many at once (the per-address cap of
/// connections without a request head), how many later and with what answer, how many not.
fn lifetimes(fates: &[(Fate, Duration)], timeout: Duration) -> String {
    let open = fates.iter().filter(|(f, _)| *f == Fate::Open).count();
    let ended: Vec<&(Fate, Duration)> = fates.iter().filter(|(f, _)| *f != Fate::Open).collect();
    let at_once = ended.iter().filter(|(_, d)| *d < timeout / 2).count();
    let later: Vec<Duration> = ended
        .iter()
        .map(|(_, d)| *d)
        .filter(|d| *d >= timeout / 2)
        .collect();
    let statuses: std::collections::BTreeSet<String> = ended
        .iter()
        .map(|(f, _)| match f {
            Fate::Answered(status) => status.to_string(),
            _ => "closed".to_owned(),
        })
        .collect();
    let held = fates.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let mut parts = vec![format!(
        "ended: {}",
        statuses.into_iter().collect::<Vec<_>>().join(", ")
    )];
    if at_once > 0 {
        parts.push(format!("{at_once} at once"));
    }
    if let (Some(first), Some(last)) = (later.iter().min(), later.iter().max()) {
        parts.push(format!(
            "{} after {:.1}–{:.1} s (timeout {:.1} s)",
            later.len(),
            first.as_secs_f64(),
            last.as_secs_f64(),
            timeout.as_secs_f64()
        ));
    }
    if open > 0 {
        parts.push(format!(
            "{open} still open after {:.1} s",
            held.as_secs_f64()
        ));
    }
    if ended.is_empty() {
        parts.remove(0);
    }
    parts.join("; ")
}

/// A subscribed user whose socket (with a small receive buffer) is never read again while
/// its notifications keep coming. Expected: the gateway closes it as a slow consumer
/// (`gateway_closes_total{reason="slow_consumer"|"send_timeout"}`), memory bounded.
pub async fn never_reads(a: &Arena) -> anyhow::Result<Verdict> {
    let user = format!("{}-sink", a.canary);
    let before = a.closes(&["slow_consumer", "send_timeout"]).await?;
    let tcp = wire::tcp_from(wire::host(0, 1), a.gateway, Some(4096)).await?;
    let ws = match wire::handshake(
        tcp,
        a.gateway,
        wire::RAW_WS,
        Some(wire::STOMP_PROTOCOLS),
        &[],
    )
    .await?
    {
        Ok(ws) => ws,
        Err(status) => anyhow::bail!("handshake refused with {status}"),
    };
    let mut stomp = Stomp::new(ws);
    stomp
        .send(&format!(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\n{}\n\n\0\
             SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:r\n\n\0",
            a.tokens.bearer_line(&user)
        ))
        .await?;
    for _ in 0..2 {
        let frame = stomp.next(wire::WAIT).await;
        anyhow::ensure!(matches!(frame, Next::Frame(_)), "set-up answered {frame:?}");
    }
    // From here on the socket is never read: what the gateway sends piles up.
    let messages = a.size.never_read;
    let deadline = Instant::now() + a.size.never_read_wait;
    let mut sent = 0;
    let mut closed = false;
    while Instant::now() < deadline {
        if sent < messages {
            let batch = (messages - sent).min(200);
            let mut pipe = redis::pipe();
            for k in 0..batch {
                let json = super::traffic::notification((sent + k) as i64, &user, 600);
                pipe.cmd("PUBLISH")
                    .arg(format!("{}{user}", a.prefix))
                    .arg(json)
                    .ignore();
            }
            let mut redis = a.redis.clone();
            let () = pipe.query_async(&mut redis).await?;
            sent += batch;
        }
        if a.closes(&["slow_consumer", "send_timeout"]).await? > before {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut v = Verdict::new(1);
    v.refused = usize::from(closed);
    v.note(format!("{sent} notifications of 1 KiB published to it"));
    if !closed {
        v.fail(format!(
            "not closed as a slow consumer within {:.0} s",
            a.size.never_read_wait.as_secs_f64()
        ));
    }
    drop(stomp);
    Ok(v)
}

/// Connection attempts (TCP, then a WebSocket upgrade that never CONNECTs, held) at a
/// paced rate from 16 addresses. Expected: beyond the per-address pending limit every
/// attempt is refused (429, or 503 at the total), held ones stay within that limit, and a
/// real user connects during the flood.
pub async fn connection_flood(a: &Arena) -> anyhow::Result<Verdict> {
    let addresses = 16;
    let total = (a.size.flood_rate * a.size.flood_for.as_secs_f64()) as usize;
    let in_flight = Arc::new(Semaphore::new(512));
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (refused, unanswered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let other = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let gateway = a.gateway;
    let flood = async {
        let mut attempts = Vec::with_capacity(total);
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / a.size.flood_rate);
            tokio::time::sleep_until(due.into()).await;
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let (held, refused, unanswered, other) = (
                held.clone(),
                refused.clone(),
                unanswered.clone(),
                other.clone(),
            );
            attempts.push(tokio::spawn(async move {
                let from = spread(13, i, addresses);
                match wire::websocket(
                    from,
                    gateway,
                    wire::RAW_WS,
                    Some(wire::STOMP_PROTOCOLS),
                    &[],
                )
                .await
                {
                    Ok(Ok(ws)) => {
                        let entry = (i % addresses, Instant::now(), ws);
                        held.lock().expect("held").push(entry);
                    }
                    Ok(Err(429 | 503)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(status)) => other.lock().expect("other").push(status.to_string()),
                    Err(_) => {
                        unanswered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            }));
        }
        join_all(attempts).await;
    };
    let real_user = async {
        tokio::time::sleep(a.size.flood_for / 2).await;
        a.real_user().await
    };
    let ((), real) = tokio::join!(flood, real_user);
    let took = started.elapsed();
    let mut held = std::mem::take(&mut *held.lock().expect("held"));
    let admitted = held.len();
    // A flood as long as the first-frame timeout sees its first admitted connections
    // closed and their slots given to new ones. Those admitted before the first could
    // time out were all open together; so are those still open at the end.
    let first = held.iter().map(|(_, at, _)| *at).min();
    let together = first.map(|t| t + a.first_frame.saturating_sub(CLOCK_SKEW));
    let early = most_per_address(
        addresses,
        held.iter()
            .filter(|(_, at, _)| Some(*at) < together)
            .map(|(address, _, _)| *address),
    );
    tokio::time::sleep(CLOSE_ARRIVES).await;
    held.retain_mut(|(_, _, ws)| !closed_by_gateway(ws));
    let late = most_per_address(addresses, held.iter().map(|(address, _, _)| *address));
    let most = early.max(late);
    let mut v = Verdict::new(total);
    let (refused, unanswered) = (
        refused.load(Ordering::Relaxed),
        unanswered.load(Ordering::Relaxed),
    );
    // Admitted up to the limit, refused beyond it: both are the expected answer.
    v.refused = refused + admitted;
    v.counted = "answered as expected (held within the limit or refused)";
    v.attempts = total - unanswered;
    v.note(format!(
        "{total} attempts in {:.1} s ({:.0}/s): {admitted} admitted, at most {early} per \
         address before the first-frame timeout, {} still held at the end (at most {late} per \
         address), {refused} refused 429/503, {unanswered} not answered by the kernel's backlog \
         within {:.0} s",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        held.len(),
        wire::WAIT.as_secs_f64()
    ));
    if most > a.pending_per_ip {
        v.fail(format!(
            "{most} held from one address (limit {})",
            a.pending_per_ip
        ));
    }
    if refused == 0 {
        v.fail("nothing refused".to_owned());
    }
    for status in other.lock().expect("other").iter().take(3) {
        v.fail(format!("answered {status}"));
    }
    v.real_user(real);
    drop(held);
    Ok(v)
}

/// The most connections of one address among `addresses` (indices below `count`).
fn most_per_address(count: usize, addresses: impl Iterator<Item = usize>) -> usize {
    let mut per_address = vec![0usize; count];
    for address in addresses {
        per_address[address] += 1;
    }
    per_address.into_iter().max().unwrap_or(0)
}

/// Whether the gateway has closed `ws` (an ERROR frame may come first); does not wait.
/// Unconstrained: past tokio's cooperative budget a socket would look silent.
fn closed_by_gateway(ws: &mut wire::Ws) -> bool {
    loop {
        match tokio::task::unconstrained(ws.next()).now_or_never() {
            None => return false,
            Some(Some(Ok(Message::Close(_)) | Err(_)) | None) => return true,
            Some(Some(Ok(_))) => {}
        }
    }
}

/// Many connections that never CONNECT, from several addresses, each past the
/// per-address pending limit. Expected: admitted up to the limit and refused 429 beyond,
/// every admitted one closed at the first-frame timeout, a real user connects meanwhile.
pub async fn pre_auth_exhaustion(a: &Arena) -> anyhow::Result<Verdict> {
    let addresses = a.size.pre_auth_addresses;
    let each = a.pending_per_ip + 8;
    let before = a.closes(&["no_connect"]).await?;
    let mut held = Vec::new();
    let mut v = Verdict::new(addresses * each);
    let mut refused_at_once = 0;
    for i in 0..addresses * each {
        let from = wire::host(14, (i % addresses) as u8 + 1);
        match wire::websocket(
            from,
            a.gateway,
            wire::RAW_WS,
            Some(wire::STOMP_PROTOCOLS),
            &[],
        )
        .await?
        {
            Ok(ws) => held.push(Stomp::new(ws)),
            Err(429) => refused_at_once += 1,
            Err(status) => v.fail(format!("answered {status}")),
        }
    }
    let real = a.real_user().await;
    let admitted = held.len();
    let limit = a.first_frame + wire::WAIT;
    let closes = join_all(held.iter_mut().map(|stomp| async move {
        loop {
            match stomp.next(limit).await {
                Next::Closed(code) => return wire::refusing_close(code),
                Next::Timeout => return false,
                Next::Frame(_) => {}
            }
        }
    }))
    .await;
    let closed = closes.iter().filter(|c| **c).count();
    // Refused at once beyond the limit, or admitted and closed later: both as expected.
    v.refused = refused_at_once + closed;
    v.counted = "refused (at once, or closed at the first-frame timeout)";
    if admitted != addresses * a.pending_per_ip {
        v.fail(format!(
            "{admitted} admitted (expected {} per address)",
            a.pending_per_ip
        ));
    }
    let counted = a.closes(&["no_connect"]).await? - before;
    v.note(format!(
        "{admitted} admitted, {refused_at_once} refused 429, {closed} closed at the \
         first-frame timeout ({counted:.0} counted as no_connect)"
    ));
    v.real_user(real);
    Ok(v)
}
