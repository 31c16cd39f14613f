//! Processes for benchmarks and reliability runs: a child that is killed when its handle is
//! dropped (also on a panic), SIGKILL or SIGTERM on request; the release `ingest` and
//! `gateway` binaries built and found; a tansu broker; `ingest migrate`; and what `/proc`
//! tells about any process (CPU time, resident memory, open descriptors, load average).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for a started process to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// A child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Starts `command` as the child called `name` (in errors and logs).
    pub fn spawn(name: impl Into<String>, mut command: Command) -> anyhow::Result<Proc> {
        let name = name.into();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { child, name })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status, once the process has exited (it is reaped then).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.exit_status() {
            Some(status) => anyhow::bail!("{} exited: {status}", self.name),
            None => Ok(()),
        }
    }

    /// SIGKILL, then reaps the process: nothing of it runs after this returns.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM). A process already exited (and reaped) is left
    /// alone, so the signal never reaches another process that got its pid.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.name);
        Ok(())
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The release `ingest` and `gateway` binaries, built by cargo next to the running
/// benchmark (`cargo bench` builds the bench profile into `target/release`).
pub struct Binaries {
    pub ingest: PathBuf,
    pub gateway: PathBuf,
    /// `target/`: where results and private data go.
    pub target_dir: PathBuf,
}

/// Builds (when `build`: cargo does nothing when they are fresh) and finds the release
/// binaries, next to the running executable (`target/release/deps/<bench>-<hash>`).
pub fn binaries(build: bool) -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell the target directory from the benchmark's path")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .context("no target directory")?
        .to_path_buf();
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "ingest", "-p", "gateway"])
            .arg("--bins")
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .context("cannot run cargo build")?;
        anyhow::ensure!(status.success(), "cargo build of ingest and gateway failed");
    }
    let binaries = Binaries {
        ingest: profile_dir.join("ingest"),
        gateway: profile_dir.join("gateway"),
        target_dir,
    };
    for bin in [&binaries.ingest, &binaries.gateway] {
        anyhow::ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    Ok(binaries)
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts connections; fails when the process exits first or after
/// 30 s.
pub async fn wait_listening(proc: &mut Proc, addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        proc.check_alive()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not listen on {addr} within {START_TIMEOUT:?}",
            proc.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Creates (truncates) `{dir}/{name}.log`.
pub fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .with_context(|| format!("cannot create {name}.log in {}", dir.display()))
}

/// Starts a tansu broker with memory storage on a free loopback port; returns it and its
/// bootstrap address.
pub async fn start_tansu(bin: &str, log_dir: &Path) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let bootstrap = format!("127.0.0.1:{port}");
    let proc = start_tansu_advertising(bin, port, &bootstrap, log_dir).await?;
    Ok((proc, bootstrap))
}

/// Starts a tansu broker with memory storage listening on loopback `port` and naming
/// `advertised` (host:port) as its address in metadata: clients connect there after
/// bootstrapping (a proxy in front of the broker, say).
pub async fn start_tansu_advertising(
    bin: &str,
    port: u16,
    advertised: &str,
    log_dir: &Path,
) -> anyhow::Result<Proc> {
    let listen = format!("127.0.0.1:{port}");
    let log = log_file(log_dir, "tansu")?;
    let mut command = Command::new(bin);
    command
        .args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(["--storage-engine", "memory://tansu/"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut proc = Proc::spawn("tansu", command).with_context(|| {
        format!(
            "cannot start {bin}: install it with `cargo install tansu --version 0.6.0 --locked --features dynostore`, or name it with TANSU_BIN"
        )
    })?;
    wait_listening(&mut proc, &listen).await?;
    Ok(proc)
}

/// Runs `ingest migrate` on `database_url` (the database is created when missing).
pub fn migrate(bin: &Path, database_url: &str) -> anyhow::Result<()> {
    let output = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .context("cannot run ingest migrate")?;
    anyhow::ensure!(
        output.status.success(),
        "ingest migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// CPU seconds a process has used (user + system), 0 when it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    (ticks(11) + ticks(12)) / 100.0
}

/// The resident memory of a process in bytes (`VmRSS`), `None` when it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The file descriptors a process holds open, `None` when it is gone.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The first process whose command name is `name`.
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == name).then_some(pid)
        })
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    load_averages()[0]
}

/// The 1-, 5- and 15-minute load averages (zeros when unknown).
pub fn load_averages() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [(); 3].map(|_| fields.next().unwrap_or(0.0))
}

/// `GET path` on the HTTP/1.0 listener at `addr` (an admin port): the status code and the
/// body, `None` when it does not answer within `timeout`.
pub async fn http_get(addr: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(timeout, fetch).await.ok()?.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(open_fds(pid).is_some_and(|n| n >= 3));
        assert!(load_averages().iter().all(|l| *l >= 0.0));
    }

    #[test]
    fn a_killed_child_is_reaped_and_terminate_leaves_it_alone() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut proc = Proc::spawn("sleep", command).unwrap();
        assert!(proc.exit_status().is_none());
        proc.kill();
        assert!(proc.exit_status().is_some());
        proc.terminate().unwrap();
    }
}
