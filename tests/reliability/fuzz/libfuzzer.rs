//! The fuzz case at full scale: `cargo fuzz build`, then `cargo fuzz run <target> --
//! -max_total_time=600` for each target (one after another when the case's time limit
//! allows it), libFuzzer's final figures read from its output, crash inputs from
//! `fuzz/artifacts/<target>/`. cargo and the fuzzer run in a process group of their own,
//! killed together when the case ends early.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use super::super::report::{self, Check, Findings, say};
use super::super::{CASES, Ctx};
use super::{BUILD_ALLOWANCE, FULL_SECS, TARGETS, Target, fuzz_dir};

/// Full: `cargo fuzz run` of every target for [`FULL_SECS`] each.
pub(super) async fn full(ctx: &Ctx, log_dir: &Path) -> anyhow::Result<Findings> {
    let version = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .context(
            "cargo-fuzz is not installed: `cargo install cargo-fuzz` (the full fuzz case runs \
             `cargo fuzz run`; the quick one needs nothing)",
        )?;
    let built = Instant::now();
    let build = fuzz_command(&["build"], &log_dir.join("build.log"))?
        .wait()
        .await?;
    anyhow::ensure!(
        build.success(),
        "cargo fuzz build failed: see {}",
        report::shown_path(&log_dir.join("build.log"))
    );
    let build_took = built.elapsed();
    // Side by side when one after another would not fit in the case's time limit.
    let sequential = BUILD_ALLOWANCE + Duration::from_secs((FULL_SECS + 60) * TARGETS.len() as u64);
    let limit = CASES
        .iter()
        .find(|c| c.name == "fuzz")
        .map_or(ctx.scale.case_limit(), |c| c.limit(ctx.scale));
    let side_by_side = sequential > limit;
    let mut out = Findings::new(format!(
        "{version}: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- \
         -max_total_time={FULL_SECS} -print_final_stats=1` for each target{}, starting from the \
         corpus fuzz/corpus/<target> left by earlier runs",
        if side_by_side {
            format!(
                ", the {} side by side on {} CPUs (one after another would not fit in the \
                 case's {} s limit)",
                TARGETS.len(),
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                limit.as_secs()
            )
        } else {
            " one after another".to_owned()
        }
    ));
    out.seconds("build of the fuzz targets", build_took);
    let runs: Vec<(&Target, anyhow::Result<FuzzRun>)> = if side_by_side {
        let runs = TARGETS.iter().map(|t| fuzz_target(t.name, log_dir));
        TARGETS
            .iter()
            .zip(futures_util::future::join_all(runs).await)
            .collect()
    } else {
        let mut runs = Vec::new();
        for target in &TARGETS {
            runs.push((target, fuzz_target(target.name, log_dir).await));
        }
        runs
    };
    for (target, run) in runs {
        let name = target.name;
        match run {
            Ok(run) => {
                say(&format!(
                    "fuzz: {name}: {} executions, {} edges, {} crashes",
                    run.executions, run.edges, run.crashes
                ));
                out.figure(&format!("{name}: executions"), run.executions as f64, "");
                out.figure(&format!("{name}: coverage edges"), run.edges as f64, "");
                out.figure(&format!("{name}: features"), run.features as f64, "");
                out.figure(&format!("{name}: corpus"), run.corpus as f64, "inputs");
                out.seconds(&format!("{name}: ran for"), run.took);
                if let Some(secs) = run.reported_secs {
                    out.figure(
                        &format!("{name}: ran for, by libFuzzer's own count"),
                        secs as f64,
                        "s",
                    );
                }
                out.check(Check::none(&format!("{name}: crashes"), run.crashes));
                // libFuzzer counts its time on the wall clock, this process on the
                // monotonic one; they part when the machine is paused (a VM suspended),
                // so the fuzzer's own count decides when it reports one.
                let secs = run.reported_secs.unwrap_or(run.took.as_secs());
                out.check(Check::holds(
                    &format!("{name}: ran its time and reported"),
                    &format!(
                        "exit 0, ≥ {FULL_SECS} s by libFuzzer's count (`Done … in N \
                         second(s)`), executions counted"
                    ),
                    &format!(
                        "{}, {secs} s ({:.0} s on this process's monotonic clock), {} \
                         executions",
                        run.status,
                        run.took.as_secs_f64(),
                        run.executions
                    ),
                    run.status.success() && secs >= FULL_SECS && run.executions > 0,
                ));
                for artifact in &run.artifacts {
                    out.note(format!("{name}: crash input {artifact}"));
                }
            }
            Err(err) => out.check(Check::holds(
                &format!("{name}: ran"),
                "ran",
                &format!("{err:#}"),
                false,
            )),
        }
    }
    Ok(out)
}

/// What one libFuzzer run reported.
struct FuzzRun {
    status: std::process::ExitStatus,
    took: Duration,
    /// The seconds libFuzzer reports it ran (`Done N runs in S second(s)`).
    reported_secs: Option<u64>,
    executions: u64,
    edges: u64,
    features: u64,
    corpus: u64,
    crashes: usize,
    artifacts: Vec<String>,
}

/// `cargo fuzz run <target>` for [`FULL_SECS`], its output in `{log_dir}/{target}.log`.
async fn fuzz_target(target: &str, log_dir: &Path) -> anyhow::Result<FuzzRun> {
    let log = log_dir.join(format!("{target}.log"));
    let artifacts = fuzz_dir().join("artifacts").join(target);
    let started = SystemTime::now();
    let began = Instant::now();
    let max_time = format!("-max_total_time={FULL_SECS}");
    let status = fuzz_command(
        &["run", target, "--", &max_time, "-print_final_stats=1"],
        &log,
    )?
    .wait()
    .await?;
    let took = began.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stat = |name: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    // libFuzzer's status lines: `#N  DONE  cov: E ft: F corp: C/...`.
    let last = |key: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with('#'))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == key)?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .next_back()
            .unwrap_or(0)
    };
    let new_artifacts: Vec<String> = std::fs::read_dir(&artifacts)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|m| m >= started)
                })
                .map(|e| report::shown_path(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    let reported_crash = text.contains("==ERROR: libFuzzer") || text.contains("deadly signal");
    let reported_secs = text
        .lines()
        .filter_map(|l| l.strip_prefix("Done "))
        .filter_map(|l| l.split(" runs in ").nth(1)?.split(' ').next()?.parse().ok())
        .next_back();
    Ok(FuzzRun {
        status,
        took,
        reported_secs,
        executions: stat("number_of_executed_units"),
        edges: last("cov:"),
        features: last("ft:"),
        corpus: last("corp:"),
        crashes: new_artifacts
            .len()
            .max(usize::from(reported_crash || !status.success())),
        artifacts: new_artifacts,
    })
}

/// `cargo fuzz <args>` in `fuzz/` as the README runs it, in a process group of its own
/// (cargo and the fuzzer it starts are killed together when the handle is dropped).
fn fuzz_command(args: &[&str], log: &Path) -> anyhow::Result<Group> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(log)?;
    let mut command = Command::new("cargo");
    command
        .arg("fuzz")
        .args(args)
        .current_dir(fuzz_dir())
        .env("RUSTC_BOOTSTRAP", "1")
        // The workspace's settings are not the fuzz crate's (its own workspace, target/).
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = command.spawn().context("cannot run cargo fuzz")?;
    Ok(Group { child })
}

/// A child leading a process group of its own; the whole group is killed on drop.
struct Group {
    child: std::process::Child,
}

impl Group {
    async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}
