//! Runs the real `devstack` binary as a child process from a clean state: every port free
//! and chosen here, a database name of its own, a fresh data directory (so it starts private
//! MariaDB and Redis servers), and no `KAFKA_BOOTSTRAP_SERVERS` (the embedded Kafka).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest wait for the stack to be ready (a private MariaDB is created on a busy machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for devstack to stop everything after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// The line devstack prints once everything is up.
const READY_LINE: &str = "devstack is ready";

/// One running devstack.
pub struct Stack {
    pub child: Child,
    pub pid: u32,
    /// The demo page, e.g. `http://127.0.0.1:40123/`.
    pub page: String,
    pub kafka: String,
    /// Every port it was given.
    pub ports: Vec<u16>,
    pub data_dir: PathBuf,
    /// Its stdout lines after the ready line.
    pub lines: mpsc::UnboundedReceiver<String>,
}

/// Ports nothing listens on (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// devstack's package directory (its package.json, node_modules and tests/js).
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with the fix when the JavaScript packages are missing.
pub fn assert_js_installed(package: &str) {
    assert!(
        package_dir().join("node_modules").join(package).exists(),
        "{package} is missing: run `npm ci --prefix bins/devstack` (the test command does)"
    );
}

/// Starts `devstack run` and waits for its ready line.
pub async fn start(name: &str) -> Stack {
    let ports = free_ports(7);
    let [
        http,
        gateway,
        gateway_admin,
        ingest_admin,
        kafka,
        mysql,
        redis,
    ] = ports[..]
    else {
        unreachable!()
    };
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("devstack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).unwrap();
    let log = std::fs::File::create(data_dir.join("devstack.log")).unwrap();
    let database = format!("devstack_{name}_{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_devstack"))
        .arg("run")
        .args(["--http-port", &http.to_string()])
        .args(["--gateway-port", &gateway.to_string()])
        .args(["--gateway-admin-port", &gateway_admin.to_string()])
        .args(["--ingest-admin-port", &ingest_admin.to_string()])
        .args(["--kafka-port", &kafka.to_string()])
        .args(["--mysql-port", &mysql.to_string()])
        .args(["--redis-port", &redis.to_string()])
        .args(["--database", &database])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("devstack binary");
    let pid = child.id().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.trim() == READY_LINE {
                return true;
            }
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.kill().await;
        panic!(
            "devstack was not ready within {READY_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(data_dir.join("devstack.log")).unwrap_or_default()
        );
    }
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            let _ = tx.send(line);
        }
    });
    Stack {
        child,
        pid,
        page: format!("http://127.0.0.1:{http}/"),
        kafka: format!("127.0.0.1:{kafka}"),
        ports,
        data_dir,
        lines,
    }
}

/// A process as /proc shows it: (pid, start time, command name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
    pub comm: String,
}

/// Every process below `root` (children, their children, ...).
pub fn descendants(root: u32) -> Vec<Proc> {
    let mut by_parent: HashMap<u32, Vec<Proc>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, proc)) = stat(pid) {
            by_parent.entry(ppid).or_default().push(proc);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in by_parent.remove(&pid).unwrap_or_default() {
            queue.push(child.pid);
            found.push(child);
        }
    }
    found
}

/// (parent pid, the process) from /proc/<pid>/stat; None when it is gone.
fn stat(pid: u32) -> Option<(u32, Proc)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the name: state(0) ppid(1) ... starttime is field 22 of the line, index 19 here.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    if fields.first() == Some(&"Z") {
        return None; // a zombie has exited already
    }
    Some((ppid, Proc { pid, start, comm }))
}

/// Whether `proc` (the same process, not a reused pid) still runs.
pub fn alive(proc: &Proc) -> bool {
    stat(proc.pid).is_some_and(|(_, now)| now.start == proc.start)
}

impl Stack {
    /// Sends SIGINT (Ctrl-C) and waits for devstack to exit; returns its stdout after the
    /// ready line and whether it exited successfully.
    pub async fn interrupt(mut self) -> (Vec<String>, bool) {
        let sent = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -INT {}", self.pid);
        let status = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("devstack did not exit within {STOP_TIMEOUT:?} of SIGINT"))
            .unwrap();
        let mut lines = Vec::new();
        // The reader task ends with the pipe; what it read is all here, bounded by the pipe.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(line) = self.lines.recv().await {
                lines.push(line);
            }
        })
        .await;
        (lines, status.success())
    }

    /// The log devstack wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("devstack.log")).unwrap_or_default()
    }
}

/// Whether a listener can be bound on `port` again.
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
