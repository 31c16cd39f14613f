//! The deploy test's harness: runs `tests/deploy/check.py` in the tools' venv, reads the
//! variables each binary accepts from its `--help`, and picks values out of the report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use serde_json::Value;

static ACCEPTED: LazyLock<BTreeMap<Program, BTreeSet<String>>> = LazyLock::new(|| {
    [Program::IngestRun, Program::IngestMigrate, Program::Gateway]
        .into_iter()
        .map(|p| (p, accepted(p)))
        .collect()
});

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn venv() -> PathBuf {
    let dir = std::env::var_os("DEPLOY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/deploy-venv"));
    assert!(
        dir.join("bin/python").exists(),
        "the deploy test tools are missing at {}: run .ci/run (see README, Testing)",
        dir.display()
    );
    dir
}

/// Runs `tests/deploy/check.py` with `cases` (the renders to make) and returns its report.
pub fn run_check(cases: &Value) -> Value {
    let mut child = Command::new(venv().join("bin/python"))
        .arg(repo().join("tests/deploy/check.py"))
        .arg(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/deploy/check.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "check.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("check.py prints JSON")
}

/// How many manifests of each kind.
pub fn kinds(docs: &[&Value]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for doc in docs {
        *kinds
            .entry(doc["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    kinds
}

/// The manifest of `kind` named `name`.
pub fn find<'a>(docs: &[&'a Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A JSON array of strings (nothing for anything else).
pub fn strs(value: &Value) -> Vec<String> {
    value.as_array().map_or_else(Vec::new, |items| {
        items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect()
    })
}

/// What a container runs, as far as its environment is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Program {
    IngestRun,
    IngestMigrate,
    Gateway,
}

impl Program {
    /// The program a container or service command (`command` + `args`) runs.
    pub fn of(argv: &[String]) -> Program {
        match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["ingest"] | ["ingest", "run"] => Program::IngestRun,
            ["ingest", "migrate"] => Program::IngestMigrate,
            ["gateway"] => Program::Gateway,
            _ => panic!("unexpected command {argv:?}"),
        }
    }

    fn help_argv(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Program::IngestRun => ("ingest", &["run", "--help"]),
            Program::IngestMigrate => ("ingest", &["migrate", "--help"]),
            Program::Gateway => ("gateway", &["--help"]),
        }
    }

    /// Variables read from the environment without a flag; `--help` names them in prose.
    fn env_only(self) -> &'static [&'static str] {
        match self {
            Program::Gateway => &["RUST_LOG", "JWT_KEYS"],
            Program::IngestRun | Program::IngestMigrate => &["RUST_LOG"],
        }
    }
}

/// The binary `cargo test --workspace` built beside this test (`ingest` and `gateway` have
/// integration tests of their own, so cargo builds them): target/<profile>/<name>.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p ingest -p gateway`)",
        path.display()
    );
    path
}

/// The variables `program` reads: every `[env: NAME=...]` of its `--help`, and the
/// environment-only ones, which its help must mention.
fn accepted(program: Program) -> BTreeSet<String> {
    let (name, args) = program.help_argv();
    let output = Command::new(binary(name))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{name} {args:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut names: BTreeSet<String> = help
        .match_indices("[env: ")
        .map(|(at, marker)| {
            let rest = &help[at + marker.len()..];
            rest[..rest.find('=').unwrap()].to_owned()
        })
        .collect();
    assert!(names.contains("DATABASE_URL"), "{name} {args:?}: {help}");
    for only in program.env_only() {
        assert!(
            help.contains(only),
            "{name} {args:?} does not mention {only}"
        );
        names.insert((*only).to_owned());
    }
    names
}

/// Fails unless `program` reads every one of `names`.
pub fn assert_accepted(program: Program, names: &BTreeSet<String>, place: &str) {
    let unknown: Vec<_> = names.difference(&ACCEPTED[&program]).collect();
    assert!(
        unknown.is_empty(),
        "{place} sets {unknown:?}, which {program:?} does not read (its --help)"
    );
}

/// A compose service that runs once (`restart: "no"`).
pub fn is_one_shot(service: &Value) -> bool {
    service["restart"] == "no"
}

/// A compose service's `depends_on`: service -> condition.
pub fn waits_on(service: &Value) -> BTreeMap<String, String> {
    service["depends_on"]
        .as_object()
        .map(|deps| {
            deps.iter()
                .map(|(name, dep)| (name.clone(), dep["condition"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A compose service's environment, as a map or as a list of `NAME=value`.
pub fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let (k, v) = i.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}
