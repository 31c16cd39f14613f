//! The demo inbox page in headless Chromium (Debian's `chromium`, driven by playwright-core;
//! `CHROMIUM_BIN` overrides the path): two pages of one user on a devstack of its own; a
//! sample-event button in the first, the notification appears and the badge goes up; marked
//! read there, the badge goes down in the second; a time deal shows its banner. Screenshots go under target/ and their
//! paths are printed.

#![allow(clippy::print_stdout)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Longest run of the browser script (it bounds each of its steps too).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(480);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_live_notifications_and_syncs_read_marks_across_tabs() {
    support::assert_js_installed("playwright-core");
    let stack = support::start("browser").await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("devstack-screenshots-{}", std::process::id()));
    let user = format!("browser-user-{}", std::process::id());
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let run = tokio::time::timeout(
        BROWSER_TIMEOUT,
        Command::new("node")
            .current_dir(support::package_dir())
            .arg("tests/js/demo_browser.mjs")
            .arg(&stack.page)
            .arg(&user)
            .arg(&shots)
            .env("CHROMIUM_BIN", &chromium)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script did not finish in time")
    .expect("node must be installed");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    for line in out.lines() {
        println!("{line}");
    }
    let log = stack.log();
    let data_dir = stack.data_dir.clone();
    let (_, clean_exit) = stack.interrupt().await;
    assert!(
        run.status.success() && out.lines().any(|l| l == "OK"),
        "browser script failed:\n{out}\n{err}\ndevstack log:\n{log}"
    );
    let screenshots: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("SCREENSHOT "))
        .collect();
    assert_eq!(screenshots.len(), 3, "{out}");
    for path in screenshots {
        assert!(
            std::fs::metadata(path).is_ok_and(|m| m.len() > 10_000),
            "{path}"
        );
    }
    assert!(clean_exit, "devstack exits 0 after SIGINT");
    let _ = std::fs::remove_dir_all(data_dir);
}
