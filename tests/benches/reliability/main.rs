//! The reliability runner (issue "Hardening"): runs the cases of `tests/reliability/`
//! against the release `ingest` and `gateway` binaries (built first unless `--no-build`),
//! MariaDB, Redis and tansu, writes each case's result to `target/reliability/<case>.json`,
//! regenerates `RELIABILITY.md` from every result file present, and exits non-zero when a
//! check failed.
//!
//! `cargo bench -p notify-tests --bench reliability [-- --cases crash,cuts] [--quick]
//! [--seed N]`. `--quick` runs the cases small (as the test suite does), writes to
//! `target/reliability/quick/` and leaves `RELIABILITY.md` alone. Every child process is
//! killed when the runner ends, on an error, a panic or Ctrl-C too.

#![allow(clippy::print_stdout)]

#[path = "../../reliability/mod.rs"]
mod reliability;

use std::process::ExitCode;

use clap::Parser;
use reliability::launch::Launcher;
use reliability::report::{self, say};
use reliability::services::Services;
use reliability::{Ctx, Scale};

#[derive(Parser)]
struct Args {
    /// The cases to run, comma-separated (default: every case).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Run the cases small (seconds each); results go to target/reliability/quick/ and
    /// RELIABILITY.md is left alone.
    #[arg(long)]
    quick: bool,
    /// The seed of every random choice (default: a random one, printed and recorded).
    #[arg(long)]
    seed: Option<u64>,
    /// Use the release binaries as they are (no `cargo build --release -p ingest -p gateway`).
    #[arg(long)]
    no_build: bool,
    /// Keep each case's database (named in its notes) instead of dropping it.
    #[arg(long)]
    keep_data: bool,
    /// Only regenerate RELIABILITY.md from the result files present.
    #[arg(long)]
    render_only: bool,
    /// Cargo passes --bench; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cases = reliability::select(&args.cases)?;
    let scale = if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let bins = devstack::procs::binaries(!args.no_build && !args.render_only)?;
    let base = bins.target_dir.join("reliability");
    let results = match scale {
        Scale::Quick => base.join("quick"),
        Scale::Full => base.clone(),
    };
    let document = report::repo_root().join("RELIABILITY.md");
    if args.render_only {
        std::fs::write(&document, reliability::markdown::render(&base)?)?;
        println!("{} regenerated", document.display());
        return Ok(ExitCode::SUCCESS);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let quick = if args.quick { " --quick" } else { "" };
    let ctx = Ctx {
        scale,
        seed,
        launcher: Launcher::Release {
            ingest: bins.ingest.clone(),
            gateway: bins.gateway.clone(),
        },
        services: Services::from_env(),
        log_dir: base.join("logs"),
        rerun: format!(
            "cargo bench -p notify-tests --bench reliability -- --cases {{case}} --seed {{seed}}{quick}"
        ),
        keep_data: args.keep_data,
    };
    say(&format!(
        "{} case(s) at {} scale, seed {seed}; load average {:.2}",
        cases.len(),
        scale.name(),
        devstack::procs::load_average()
    ));
    let mut failed = Vec::new();
    let run = async {
        for case in &cases {
            let report = reliability::run_case(case, &ctx).await;
            let path = report.write(&results)?;
            println!("reliability: result in {}", path.display());
            if !report.passed() {
                failed.push(case.name);
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        outcome = run => outcome?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: every child process is killed"),
    }
    if scale == Scale::Full {
        std::fs::write(&document, reliability::markdown::render(&results)?)?;
        println!(
            "{} regenerated from {}",
            document.display(),
            results.display()
        );
    }
    if failed.is_empty() {
        println!("reliability: every check passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("reliability: FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
