//! What a case found (figures, and checks against stated bounds) and the result file of one
//! run of it, stamped with the commit, the date and the machine's CPUs and load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Ctx;

/// Prints a progress line of the runner (stderr: the test harness captures it).
#[allow(clippy::print_stderr)]
pub fn say(line: &str) {
    eprintln!("reliability: {line}");
}

/// One measured number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// One pass/fail judgement: what was checked, the bound, what was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub what: String,
    pub bound: String,
    pub measured: String,
    pub pass: bool,
}

impl Check {
    /// `measured` must be 0.
    pub fn none(what: &str, measured: usize) -> Check {
        Check {
            what: what.to_owned(),
            bound: "0".to_owned(),
            measured: measured.to_string(),
            pass: measured == 0,
        }
    }

    /// `measured` must not exceed `bound` (both in `unit`).
    pub fn at_most(what: &str, measured: f64, bound: f64, unit: &str) -> Check {
        Check {
            what: what.to_owned(),
            bound: format!("≤ {} {unit}", shown(bound)),
            measured: format!("{} {unit}", shown(measured)),
            pass: measured <= bound,
        }
    }

    /// `measured` must equal `expected`.
    pub fn equal(what: &str, measured: usize, expected: usize) -> Check {
        Check {
            what: what.to_owned(),
            bound: format!("= {expected}"),
            measured: measured.to_string(),
            pass: measured == expected,
        }
    }

    /// A judgement with a bound and a measurement in words.
    pub fn holds(what: &str, bound: &str, measured: &str, pass: bool) -> Check {
        Check {
            what: what.to_owned(),
            bound: bound.to_owned(),
            measured: measured.to_owned(),
            pass,
        }
    }
}

/// A number as the report shows it: whole numbers without decimals, others with two.
pub fn shown(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// What a case returns: the load it ran, its figures and checks, and notes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Findings {
    pub load: String,
    pub figures: Vec<Figure>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

impl Findings {
    pub fn new(load: impl Into<String>) -> Findings {
        Findings {
            load: load.into(),
            ..Findings::default()
        }
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
    }

    pub fn seconds(&mut self, name: &str, value: Duration) {
        self.figure(name, (value.as_secs_f64() * 100.0).round() / 100.0, "s");
    }

    pub fn check(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// When and where a case ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    /// `git rev-parse --short HEAD`, with `+changes` when the code under test (ingest,
    /// gateway, shared, migrations) had uncommitted changes.
    pub commit: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub cpus: usize,
    /// 1-, 5-, 15-minute load averages at the start and at the end of the case.
    pub load_at_start: [f64; 3],
    pub load_at_end: [f64; 3],
    pub elapsed_secs: f64,
}

/// The result file of one run of one case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub case: String,
    pub title: String,
    pub command: String,
    pub scale: String,
    pub seed: u64,
    pub findings: Findings,
    /// Why the case could not finish (then it failed).
    pub error: Option<String>,
    pub stamp: Stamp,
}

impl Report {
    /// A report of a case about to run.
    pub fn start(case: &str, title: &str, command: &str, ctx: &Ctx) -> Report {
        Report {
            case: case.to_owned(),
            title: title.to_owned(),
            command: command.to_owned(),
            scale: ctx.scale.name().to_owned(),
            seed: ctx.seed,
            findings: Findings::default(),
            error: None,
            stamp: Stamp {
                commit: commit(),
                date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
                load_at_start: devstack::procs::load_averages(),
                load_at_end: [0.0; 3],
                elapsed_secs: 0.0,
            },
        }
    }

    /// Records the case's outcome and the end of its run.
    pub fn finish(&mut self, outcome: anyhow::Result<Findings>, elapsed: Duration) {
        match outcome {
            Ok(findings) => self.findings = findings,
            Err(err) => self.error = Some(format!("{err:#}")),
        }
        self.stamp.load_at_end = devstack::procs::load_averages();
        self.stamp.elapsed_secs = (elapsed.as_secs_f64() * 10.0).round() / 10.0;
    }

    /// Whether the case finished with at least one check and every check passed.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && !self.findings.checks.is_empty()
            && self.findings.checks.iter().all(|c| c.pass)
    }

    /// The failed checks (and the error), one per line.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self.error.iter().map(|e| format!("error: {e}")).collect();
        out.extend(
            self.findings
                .checks
                .iter()
                .filter(|c| !c.pass)
                .map(|c| format!("{}: {} (bound {})", c.what, c.measured, c.bound)),
        );
        out
    }

    /// The report as text lines for the console.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} {} in {:.0} s (load {:.2} → {:.2})\n  load: {}\n",
            self.case,
            if self.passed() { "PASSED" } else { "FAILED" },
            self.stamp.elapsed_secs,
            self.stamp.load_at_start[0],
            self.stamp.load_at_end[0],
            self.findings.load
        );
        for f in &self.findings.figures {
            out.push_str(&format!("  {}: {} {}\n", f.name, shown(f.value), f.unit));
        }
        for c in &self.findings.checks {
            let mark = if c.pass { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "  [{mark}] {}: {} (bound {})\n",
                c.what, c.measured, c.bound
            ));
        }
        for n in &self.findings.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        if let Some(err) = &self.error {
            out.push_str(&format!("  error: {err}\n"));
        }
        out
    }

    /// Writes `{dir}/{case}.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.case));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }

    /// Reads `{dir}/{case}.json`; `None` when the case has no result there.
    pub fn read(dir: &Path, case: &str) -> anyhow::Result<Option<Report>> {
        let path = dir.join(format!("{case}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{} is not a result file: {e}", path.display())
            })?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// The repository's root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `path` relative to the repository when it is inside it (for reports read elsewhere).
pub fn shown_path(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "bins/ingest",
        "bins/gateway",
        "shared",
        "migrations",
    ])
    .is_some_and(|s| !s.is_empty());
    if changed {
        format!("{head}+changes")
    } else {
        head
    }
}
