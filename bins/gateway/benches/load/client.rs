//! The benchmark's STOMP clients: raw WebSocket, SockJS `websocket` or RabbitMQ Web-STOMP
//! sessions, connected with a JWT (guest login for RabbitMQ) and subscribed with receipts.

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use gateway::auth::sign_hs256;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::SECRET;

/// What a session talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The gateway's raw WebSocket, JWT on CONNECT.
    Raw,
    /// The gateway's SockJS `websocket` transport (SockJS framing around STOMP).
    Sockjs,
    /// RabbitMQ Web-STOMP (guest login, a queue bound to amq.direct per user).
    Rabbit,
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one STOMP frame in the session's framing.
pub async fn send_frame(ws: &mut Ws, kind: Kind, frame: &str) -> anyhow::Result<()> {
    let text = match kind {
        Kind::Sockjs => serde_json::to_string(&[frame])?,
        Kind::Raw | Kind::Rabbit => frame.to_owned(),
    };
    ws.send(Message::Text(text.into())).await?;
    Ok(())
}

/// The next STOMP text from the server (SockJS frames unwrapped, heart-beats skipped).
pub async fn next_text(ws: &mut Ws, kind: Kind) -> anyhow::Result<String> {
    loop {
        let Some(message) = ws.next().await else {
            anyhow::bail!("closed")
        };
        let Message::Text(text) = message? else {
            continue;
        };
        match kind {
            Kind::Raw | Kind::Rabbit => return Ok(text.to_string()),
            Kind::Sockjs => {
                if let Some(array) = text.strip_prefix('a') {
                    let items: Vec<String> = serde_json::from_str(array)?;
                    return Ok(items.concat());
                }
                if text.starts_with('c') {
                    anyhow::bail!("closed: {text}");
                }
            }
        }
    }
}

pub fn token(user: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    sign_hs256(
        SECRET.as_bytes(),
        Some("k"),
        &serde_json::json!({"sub": user, "exp": exp}),
    )
}

/// What a new session subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribe {
    /// The user's own queue (RabbitMQ: the user's routing key on `amq.direct`).
    Own,
    /// The time-deal topic only.
    TimeDeals,
    /// The time-deal topic, then the user's own queue.
    TimeDealsAndOwn,
}

/// The gateway's broadcast destination.
pub const TIMEDEALS: &str = "/topic/timedeals";

impl Subscribe {
    pub fn destinations(self, kind: Kind, user: &str) -> Vec<String> {
        let own = match kind {
            Kind::Rabbit => format!("/exchange/amq.direct/{user}"),
            Kind::Raw | Kind::Sockjs => "/user/queue/notifications".to_owned(),
        };
        match self {
            Subscribe::Own => vec![own],
            Subscribe::TimeDeals => vec![TIMEDEALS.to_owned()],
            Subscribe::TimeDealsAndOwn => vec![TIMEDEALS.to_owned(), own],
        }
    }
}

/// Opens one session for `user`, connected but not subscribed.
pub async fn connect(url: &str, kind: Kind, user: &str) -> anyhow::Result<Ws> {
    let url = match kind {
        Kind::Sockjs => format!("{url}/000/{user}/websocket"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request()?;
    if kind != Kind::Sockjs {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "v12.stomp".parse()?);
    }
    // Small client buffers: thousands of clients share the machine with the server.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    if kind == Kind::Sockjs {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t == "o" => {}
            other => anyhow::bail!("no SockJS open frame: {other:?}"),
        }
    }
    let credentials = match kind {
        Kind::Rabbit => "host:/\nlogin:guest\npasscode:guest".to_owned(),
        _ => format!("Authorization:Bearer {}", token(user)),
    };
    let connect = format!("CONNECT\naccept-version:1.2\nheart-beat:0,0\n{credentials}\n\n\0");
    send_frame(&mut ws, kind, &connect).await?;
    let reply = next_text(&mut ws, kind).await?;
    anyhow::ensure!(reply.starts_with("CONNECTED"), "no CONNECTED: {reply}");
    Ok(ws)
}

/// Opens one session for `user` subscribed to `subscribe`'s destinations, each confirmed
/// by its RECEIPT.
pub async fn open_session(
    url: &str,
    kind: Kind,
    user: &str,
    subscribe: Subscribe,
) -> anyhow::Result<Ws> {
    let mut ws = connect(url, kind, user).await?;
    for (id, destination) in subscribe.destinations(kind, user).iter().enumerate() {
        let frame = format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:r{id}\n\n\0");
        send_frame(&mut ws, kind, &frame).await?;
        let receipt = next_text(&mut ws, kind).await?;
        anyhow::ensure!(receipt.starts_with("RECEIPT"), "no RECEIPT: {receipt}");
    }
    Ok(ws)
}

/// Opens `count` sessions, 250 at a time.
pub async fn open_many(
    url: &str,
    kind: Kind,
    prefix: &str,
    first: usize,
    count: usize,
    subscribe: Subscribe,
) -> anyhow::Result<Vec<Ws>> {
    let mut sessions = Vec::with_capacity(count);
    let ids: Vec<usize> = (first..first + count).collect();
    for chunk in ids.chunks(250) {
        let users: Vec<String> = chunk.iter().map(|i| format!("{prefix}{i}")).collect();
        let opened = futures_util::future::join_all(
            users.iter().map(|u| open_session(url, kind, u, subscribe)),
        )
        .await;
        for ws in opened {
            sessions.push(ws?);
        }
    }
    Ok(sessions)
}
