//! The demo page's client libraries: the real `@stomp/stompjs` and `sockjs-client` packages,
//! declared in `bins/devstack/package.json`, installed by `npm ci` into its `node_modules`
//! and served from there (never copied into the repository).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::launch;

/// Longest wait for `npm ci`.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);

/// The browser bundles the page loads: (URL under `/vendor/`, path under the package dir).
pub const BUNDLES: [(&str, &str); 2] = [
    (
        "sockjs.min.js",
        "node_modules/sockjs-client/dist/sockjs.min.js",
    ),
    (
        "stomp.umd.min.js",
        "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js",
    ),
];

/// The directory of devstack's package.json (and of `web/`).
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether both bundles are installed under `dir`.
pub fn installed(dir: &Path) -> bool {
    BUNDLES.iter().all(|(_, path)| dir.join(path).is_file())
}

/// Installs the page's packages with `npm ci` when they are missing.
pub async fn ensure(dir: &Path, shutdown: &CancellationToken) -> anyhow::Result<()> {
    if installed(dir) {
        return Ok(());
    }
    let Some(npm) = launch::find_program("npm") else {
        bail!(
            "npm is not installed (the demo page's client libraries come from npm): {}",
            launch::install_command(&["nodejs", "npm"])
        );
    };
    tracing::info!(dir = %dir.display(), "installing the demo page's client libraries (npm ci)");
    let mut child = Command::new(npm)
        .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run npm")?;
    let status = tokio::select! {
        _ = shutdown.cancelled() => bail!("stopped during npm ci"),
        status = tokio::time::timeout(NPM_TIMEOUT, child.wait()) => status,
    };
    match status {
        Ok(Ok(status)) if status.success() && installed(dir) => Ok(()),
        Ok(Ok(status)) => bail!(
            "`npm ci` in {} failed ({status}); run it there by hand to see why",
            dir.display()
        ),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => {
            let _ = child.kill().await;
            bail!("`npm ci` did not finish within {NPM_TIMEOUT:?}")
        }
    }
}
