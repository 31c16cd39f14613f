//! Worker processes: the benchmark runs itself with `--worker` to open sessions beyond one
//! process's descriptor limit (20 000 here), and holds them until its stdin closes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::Args;
use crate::arrivals::listen_reporting;
use crate::client::{Kind, Subscribe, open_many};

/// Sessions one worker process opens (the descriptor limit is 20 000 per process here).
const PER_WORKER: usize = 9_000;

/// Worker mode: open, say how many, hold until the parent closes stdin. With `--timedeals`
/// the sessions listen to the time-deal topic and report each broadcast's arrivals.
pub async fn worker(args: &Args, kind: Kind) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (prefix, subscribe) = match args.timedeals {
        true => ("deal-", Subscribe::TimeDeals),
        false => ("idle-", Subscribe::Own),
    };
    let sessions = open_many(&args.url, kind, prefix, args.first, args.count, subscribe).await?;
    println!("ready {}", sessions.len());
    // Idle sessions are held unread; time-deal listeners read and report.
    let (held, listeners) = match args.timedeals {
        true => (Vec::new(), listen_reporting(sessions)),
        false => (sessions, Vec::new()),
    };
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    for listener in listeners {
        listener.abort();
    }
    drop(held);
    Ok(())
}

/// A worker process and its output after the `ready` line.
pub struct Worker {
    pub child: Child,
    pub lines: BufReader<ChildStdout>,
}

/// Opens `total` sessions from worker processes (idle ones, or time-deal listeners); they
/// live until [`stop_workers`].
pub fn start_workers(
    url: &str,
    kind: Kind,
    total: usize,
    timedeals: bool,
) -> anyhow::Result<Vec<Worker>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut first = 0;
    while first < total {
        let count = PER_WORKER.min(total - first);
        let mut command = Command::new(&exe);
        command
            .arg("--worker")
            .arg(format!("{kind:?}").to_lowercase())
            .args(["--url", url])
            .args(["--first", &first.to_string(), "--count", &count.to_string()]);
        if timedeals {
            command.arg("--timedeals");
        }
        children.push(
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?,
        );
        first += count;
    }
    let mut workers = Vec::new();
    for mut child in children {
        let mut lines = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        lines.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("ready"), "a worker failed: {line:?}");
        workers.push(Worker { child, lines });
    }
    Ok(workers)
}

/// Closes the workers' stdin (they close their sessions and exit) and waits for them.
pub fn stop_workers(children: impl IntoIterator<Item = Child>) {
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}
