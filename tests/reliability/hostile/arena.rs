//! What every attack of the hostile case gets ([`Arena`]): the gateway's addresses, the
//! case's token key, Redis, the store and the canary; with the steps attacks share (a
//! connected session, a real user getting in, a ticket, a REST call, a close counter, SockJS
//! sessions over polling and streaming).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlPool;

use super::Size;
use super::wire::{self, Next, Stomp, Tokens};

/// What every attack gets: the gateway, credentials, Redis, the store and the canary.
pub struct Arena {
    pub(super) gateway: SocketAddr,
    pub(super) admin: String,
    pub(super) tokens: Tokens,
    pub(super) redis: redis::aio::MultiplexedConnection,
    pub(super) prefix: String,
    pub(super) ticket_prefix: String,
    pub(super) canary: String,
    /// A stored notification of the canary's.
    pub(super) canary_row: i64,
    pub(super) pool: MySqlPool,
    pub(super) first_frame: Duration,
    pub(super) max_frame: usize,
    pub(super) pending_per_ip: usize,
    pub(super) allowed_origin: &'static str,
    pub(super) size: Size,
}

impl Arena {
    /// A session of `user` (a valid token), CONNECTED.
    pub async fn connected(&self, user: &str) -> anyhow::Result<Stomp> {
        let (stomp, first) = Stomp::connect(
            wire::host(0, 1),
            self.gateway,
            &self.tokens.bearer_line(user),
        )
        .await?;
        match first {
            Next::Frame(f) if f.starts_with("CONNECTED\n") => Ok(stomp),
            other => anyhow::bail!("CONNECT as {user} answered {other:?}"),
        }
    }

    /// A new user (own token) CONNECTED and subscribed from 127.0.0.1: how long it took.
    pub async fn real_user(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let user = format!("{}-real", self.canary);
        let stomp = Stomp::subscribed(
            wire::host(0, 1),
            self.gateway,
            &self.tokens.bearer_line(&user),
        )
        .await?;
        let took = started.elapsed();
        stomp.close().await;
        Ok(took)
    }

    pub async fn publish(&self, user: &str, json: &str) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{}{user}", self.prefix))
            .arg(json)
            .query_async(&mut redis)
            .await?;
        Ok(())
    }

    /// A REST call under `/api/v1/notifications` with `token` as the bearer.
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<wire::Answer> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        wire::http(
            wire::host(0, 1),
            self.gateway,
            method,
            &format!("/api/v1/notifications{path}"),
            &headers,
            b"",
        )
        .await
    }

    /// A WebSocket ticket of `user`, from the REST API.
    pub async fn ticket(&self, user: &str) -> anyhow::Result<String> {
        let answer = self
            .rest("POST", "/ws-ticket", Some(&self.tokens.valid(user)))
            .await?;
        answer
            .json()
            .and_then(|j| j["data"]["ticket"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow::anyhow!("ws-ticket answered {}", answer.brief()))
    }

    /// The sum of `gateway_closes_total` over `reasons`, from the admin listener.
    pub async fn closes(&self, reasons: &[&str]) -> anyhow::Result<f64> {
        let (status, body) =
            devstack::procs::http_get(&self.admin, "/metrics", Duration::from_secs(5))
                .await
                .ok_or_else(|| anyhow::anyhow!("no /metrics"))?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(body
            .lines()
            .filter(|l| l.starts_with("gateway_closes_total{"))
            .filter(|l| {
                reasons
                    .iter()
                    .any(|r| l.contains(&format!("reason=\"{r}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// An xhr-polling SockJS session of `user` from 127.0.0.1, CONNECTed with a ticket.
    pub async fn sockjs_session(&self, user: &str, name: &str) -> anyhow::Result<Polling> {
        let session = Polling {
            path: format!("{}/000/{name}{}/", wire::SOCKJS, rand::random::<u32>()),
        };
        let open = session.call(self, "xhr", b"").await?;
        anyhow::ensure!(open.text() == "o\n", "xhr answered {}", open.brief());
        let connect = format!(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\nX-WS-Ticket:{}\n\n\0",
            self.ticket(user).await?
        );
        let sent = session.send(self, &serde_json::to_vec(&[connect])?).await?;
        anyhow::ensure!(sent.status == 204, "xhr_send answered {}", sent.brief());
        let connected = session.call(self, "xhr", b"").await?;
        anyhow::ensure!(
            connected.text().contains("CONNECTED"),
            "xhr answered {}",
            connected.brief()
        );
        Ok(session)
    }

    /// An xhr_streaming SockJS session of `user` from 127.0.0.1 with its `/info` cookie,
    /// CONNECTed with a ticket and subscribed.
    pub async fn streaming_session(&self, user: &str, name: &str) -> anyhow::Result<Streaming> {
        let info = wire::http(
            wire::host(0, 1),
            self.gateway,
            "GET",
            &format!("{}/info", wire::SOCKJS),
            &[],
            b"",
        )
        .await?;
        let cookie = info
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("/info set no cookie"))?;
        let session = format!("{name}{}", rand::random::<u32>());
        let path = format!("{}/000/{session}", wire::SOCKJS);
        let mut tcp = wire::tcp_from(wire::host(0, 1), self.gateway, None).await?;
        let request = wire::request_bytes(
            "POST",
            &format!("{path}/xhr_streaming"),
            &[("Cookie", &cookie)],
            b"",
        );
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &request).await?;
        let mut stream = Streaming {
            tcp,
            raw: Vec::new(),
            session,
        };
        anyhow::ensure!(stream.until("o\n", wire::WAIT).await, "no open frame");
        let frames = [
            format!(
                "CONNECT\naccept-version:1.2\nheart-beat:0,0\nX-WS-Ticket:{}\n\n\0",
                self.ticket(user).await?
            ),
            "SUBSCRIBE\nid:0\ndestination:/user/queue/notifications\nreceipt:in\n\n\0".to_owned(),
        ];
        let sent = wire::http(
            wire::host(0, 1),
            self.gateway,
            "POST",
            &format!("{path}/xhr_send"),
            &[("Cookie", &cookie), ("Content-Type", "text/plain")],
            &serde_json::to_vec(&frames)?,
        )
        .await?;
        anyhow::ensure!(sent.status == 204, "xhr_send answered {}", sent.brief());
        anyhow::ensure!(
            stream.until("receipt-id:in", wire::WAIT).await,
            "no RECEIPT on the stream"
        );
        Ok(stream)
    }
}

/// An xhr-polling session's URLs.
pub struct Polling {
    pub(super) path: String,
}

impl Polling {
    async fn call(&self, a: &Arena, transport: &str, body: &[u8]) -> anyhow::Result<wire::Answer> {
        wire::http(
            wire::host(0, 1),
            a.gateway,
            "POST",
            &format!("{}{transport}", self.path),
            &[("Content-Type", "text/plain")],
            body,
        )
        .await
    }

    /// `xhr_send` with `body` as it is.
    pub async fn send(&self, a: &Arena, body: &[u8]) -> anyhow::Result<wire::Answer> {
        self.call(a, "xhr_send", body).await
    }
}

/// An xhr_streaming answer read as it arrives.
pub struct Streaming {
    tcp: tokio::net::TcpStream,
    raw: Vec<u8>,
    pub session: String,
}

impl Streaming {
    /// Reads until the stream holds `needle` (true), or `within` passes or it ends.
    pub async fn until(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.text().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let before = self.raw.len();
            let open = wire::read_for(
                &mut self.tcp,
                &mut self.raw,
                left.min(Duration::from_millis(100)),
            )
            .await;
            if !open && self.raw.len() == before {
                return self.text().contains(needle);
            }
        }
        true
    }

    /// The stream's body so far.
    pub fn text(&self) -> String {
        wire::Answer::parse(&self.raw).map_or_else(String::new, |a| a.text())
    }

    /// The owners (`userId`) of the notifications the stream carried.
    pub fn owners(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|line| line.strip_prefix('a'))
            .filter_map(|array| serde_json::from_str::<Vec<String>>(array).ok())
            .flatten()
            .filter(|frame| frame.starts_with("MESSAGE\n"))
            .filter_map(|frame| {
                let json: serde_json::Value =
                    serde_json::from_str(wire::body_of(&frame).trim_end_matches('\0')).ok()?;
                json["userId"].as_str().map(str::to_owned)
            })
            .collect()
    }
}
