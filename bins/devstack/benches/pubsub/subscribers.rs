//! The receiving side: plain RESP3 connections that `SUBSCRIBE` (node) or `SSUBSCRIBE`
//! (the master that owns each channel's slot) and count every message pushed to them. They
//! run on a thread of their own, so that their CPU time is told apart from the
//! publishers'; and the CPU time of any process or thread, from `/proc`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, ensure};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Subscriptions sent in one pipeline.
const SUBSCRIBE_PIPELINE: usize = 500;

/// The subscribers' thread: a single-threaded runtime that drives every subscriber
/// connection; stopped when dropped.
pub struct SubscriberThread {
    handle: Handle,
    /// `/proc/self/task/<tid>/stat` of the thread.
    stat: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SubscriberThread {
    pub fn start() -> anyhow::Result<SubscriberThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("subscribers".to_owned())
            .spawn(move || {
                // `/proc/thread-self` reads as `<pid>/task/<tid>`.
                let _ = tid_tx.send(std::fs::read_link("/proc/thread-self"));
                runtime.block_on(stopped.cancelled());
            })?;
        let task = tid_rx.recv()??;
        Ok(SubscriberThread {
            handle,
            stat: format!("/proc/{}/stat", task.display()),
            stop,
            thread: Some(thread),
        })
    }

    /// CPU seconds the thread has used.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.stat)
    }

    /// Subscribes `channels` on the server at `port` with `command` (`SUBSCRIBE` or
    /// `SSUBSCRIBE`), spread over `connections` connections driven by this thread; every
    /// message counts in `received`.
    pub async fn subscribe(
        &self,
        port: u16,
        command: &'static str,
        channels: Vec<String>,
        connections: usize,
        received: Arc<AtomicU64>,
    ) -> anyhow::Result<Vec<MultiplexedConnection>> {
        self.handle
            .spawn(subscribe(port, command, channels, connections, received))
            .await?
    }
}

impl Drop for SubscriberThread {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn subscribe(
    port: u16,
    command: &'static str,
    channels: Vec<String>,
    connections: usize,
    received: Arc<AtomicU64>,
) -> anyhow::Result<Vec<MultiplexedConnection>> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/?protocol=resp3"))?;
    let mut subscribers = Vec::new();
    for part in 0..connections {
        let counter = received.clone();
        // Called on the connection's own task for each push: count, nothing else.
        let pushes = move |push: PushInfo| -> Result<(), Infallible> {
            if matches!(push.kind, PushKind::Message | PushKind::SMessage) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new().set_push_sender(pushes);
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("cannot connect a subscriber to :{port}"))?;
        let mine: Vec<&String> = channels.iter().skip(part).step_by(connections).collect();
        // One channel per command: each is answered by exactly one push.
        for chunk in mine.chunks(SUBSCRIBE_PIPELINE) {
            let mut pipe = redis::pipe();
            for channel in chunk {
                pipe.cmd(command).arg(channel.as_str());
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .with_context(|| format!("{command} on :{port}"))?;
        }
        subscribers.push(connection);
    }
    let list = if command == "SSUBSCRIBE" {
        "SHARDCHANNELS"
    } else {
        "CHANNELS"
    };
    let subscribed: Vec<String> = redis::cmd("PUBSUB")
        .arg(list)
        .query_async(&mut client.get_multiplexed_async_connection().await?)
        .await?;
    ensure!(
        subscribed.len() == channels.len(),
        ":{port} has {} channels subscribed, expected {}",
        subscribed.len(),
        channels.len()
    );
    Ok(subscribers)
}

/// CPU seconds a process has used (user + system), 0 when it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds from a `stat` file of `/proc` (a process's or a thread's).
fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After the command: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}
