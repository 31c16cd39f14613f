//! How private servers are launched: the programs they need (found on `PATH` or in the
//! system directories), the install command when one is missing, and the command lines of
//! `mariadb-install-db`, `mariadbd` and `redis-server`: loopback only, data and logs in the
//! server's own directory, no persistence for Redis, and a process group of their own (so a
//! terminal's Ctrl-C reaches devstack, which stops them in order).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::services::Kind;

/// Longest wait for a private database's files to be created.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);
/// A small redo log (the default takes 96 MiB of disk for a demo's few rows).
const INNODB_LOG_SIZE: &str = "--innodb-log-file-size=16M";
/// The longest Unix socket path the kernel takes, less a margin.
const MAX_SOCKET_PATH: usize = 100;

/// The programs a private server of `kind` needs that cannot be found.
pub fn missing_programs(kind: Kind) -> Vec<&'static str> {
    let mut needed = vec![kind.program()];
    if kind == Kind::MariaDb {
        needed.push("mariadb-install-db");
    }
    needed
        .into_iter()
        .filter(|program| find_program(program).is_none())
        .collect()
}

/// A program on `PATH` or in the system directories (`mariadbd` lives in /usr/sbin, which
/// an ordinary user's `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The last lines of a log file, for an error message.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn program(kind_program: &str, package: &str) -> anyhow::Result<PathBuf> {
    find_program(kind_program).with_context(|| {
        format!(
            "{kind_program} is not installed: {}",
            install_command(&[package])
        )
    })
}

/// The exact command that installs Debian packages, as this user would type it.
pub fn install_command(packages: &[&str]) -> String {
    let sudo = if running_as_root() { "" } else { "sudo " };
    format!("{sudo}apt-get install -y {}", packages.join(" "))
}

pub async fn spawn_mariadb(
    port: u16,
    dir: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<Child> {
    let mariadbd = program("mariadbd", Kind::MariaDb.package())?;
    let data = dir.join("data");
    let root = running_as_root();
    if !data.join("mysql").is_dir() {
        let install_db = program("mariadb-install-db", Kind::MariaDb.package())?;
        let _ = std::fs::remove_dir_all(&data);
        tracing::info!(dir = %data.display(), "creating a private MariaDB data directory");
        let log = std::fs::File::create(dir.join("install.log"))?;
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                INNODB_LOG_SIZE,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        if root {
            install.arg("--user=root");
        }
        let mut child = install.spawn()?;
        let status = tokio::select! {
            _ = shutdown.cancelled() => bail!("stopped while MariaDB's data directory was being created"),
            status = tokio::time::timeout(INSTALL_TIMEOUT, child.wait()) => status,
        };
        match status {
            Ok(Ok(status)) if status.success() => {}
            _ => {
                let _ = child.kill().await;
                let _ = std::fs::remove_dir_all(&data);
                bail!(
                    "mariadb-install-db failed; its log:\n{}",
                    log_tail(&dir.join("install.log"))
                );
            }
        }
    }
    let mut socket = dir.join("mariadbd.sock");
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        socket = std::env::temp_dir().join(format!("devstack-mariadb-{port}.sock"));
    }
    let mut command = Command::new(mariadbd);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .args([
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--innodb-buffer-pool-size=64M",
            INNODB_LOG_SIZE,
            "--skip-name-resolve",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if root {
        command.arg("--user=root");
    }
    Ok(command.spawn()?)
}

pub fn spawn_redis(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let redis_server = program("redis-server", Kind::Redis.package())?;
    Ok(Command::new(redis_server)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?)
}
