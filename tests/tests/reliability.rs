//! The reliability cases of `tests/reliability/` at small scale (what the runner's `--quick`
//! runs), each asserted to pass every check. `ingest` and `gateway` run as processes of their
//! own: this test binary run again with the ignored `reliability_child_process` selected,
//! which runs `ingest run` or the gateway as the binaries do. `RELIABILITY_CASES=crash` runs some cases only,
//! `RELIABILITY_SEED=N` repeats a run's random choices (each run prints its seed),
//! `RELIABILITY_KEEP_DATA=1` keeps the cases' databases. Results go to
//! `target/reliability/test/`.

#[path = "../reliability/mod.rs"]
mod reliability;

use std::path::Path;

use reliability::launch::Launcher;
use reliability::services::Services;
use reliability::{Ctx, Scale};

/// The ignored test below, which the cases start as their ingest processes.
const CHILD_TEST: &str = "reliability_child_process";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reliability_case_passes_at_small_scale() {
    let names: Vec<String> = std::env::var("RELIABILITY_CASES").into_iter().collect();
    let cases = reliability::select(&names).expect("RELIABILITY_CASES names cases");
    let seed = std::env::var("RELIABILITY_SEED")
        .ok()
        .map(|s| s.parse().expect("RELIABILITY_SEED is a number"))
        .unwrap_or_else(rand::random);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("reliability")
        .join("test");
    let ctx = Ctx {
        scale: Scale::Quick,
        seed,
        launcher: Launcher::this_test(CHILD_TEST).expect("this test binary"),
        services: Services::from_env(),
        log_dir: target.join("logs"),
        rerun: "RELIABILITY_CASES={case} RELIABILITY_SEED={seed} cargo test -p notify-tests --test reliability"
            .to_owned(),
        keep_data: std::env::var_os("RELIABILITY_KEEP_DATA").is_some(),
    };
    let mut failures = Vec::new();
    for case in cases {
        let report = reliability::run_case(case, &ctx).await;
        report.write(&target).expect("result file");
        for failure in report.failures() {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}; failed:\n{}",
        failures.join("\n")
    );
}

/// Not a test of its own: the cases' ingest and gateway processes (see
/// `reliability::launch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of the reliability cases"]
async fn reliability_child_process() {
    reliability::launch::child_main().await;
}

#[test]
fn urls_are_rewritten_to_reach_a_proxy() {
    let proxy = "127.0.0.1:4000".parse().unwrap();
    let via = reliability::services::via;
    assert_eq!(
        via("mysql://root:pw@127.0.0.1:3306/db_1", proxy).unwrap(),
        "mysql://root:pw@127.0.0.1:4000/db_1"
    );
    assert_eq!(
        via("redis://127.0.0.1:6379/", proxy).unwrap(),
        "redis://127.0.0.1:4000/"
    );
}

#[test]
fn the_document_lists_every_case_and_links_its_section() {
    let empty = std::env::temp_dir().join(format!("reliability-none-{}", std::process::id()));
    let document = reliability::markdown::render(&empty).unwrap();
    for case in reliability::CASES {
        let anchor = reliability::markdown::anchor(case);
        assert!(document.contains(&format!("[{}](#{anchor}) | not run", case.name)));
        assert!(document.contains(&format!("## {}: {}\n\nNot run.", case.name, case.title)));
    }
}

#[test]
fn a_seed_draws_the_same_stream_again() {
    let ctx = |seed| Ctx {
        scale: Scale::Quick,
        seed,
        launcher: Launcher::Release {
            ingest: "ingest".into(),
            gateway: "gateway".into(),
        },
        services: Services::from_env(),
        log_dir: std::env::temp_dir(),
        rerun: String::new(),
        keep_data: false,
    };
    let identities = |seed| {
        let events =
            reliability::stream::plan(&mut ctx(seed).rng("crash"), 300, 10, "u", 0.1).unwrap();
        assert!(events.iter().any(|e| e.copy), "some copies");
        let topics: std::collections::HashSet<_> = events.iter().map(|e| e.topic).collect();
        assert_eq!(topics.len(), 14, "every topic");
        events
            .into_iter()
            .map(|e| (e.topic, e.copy))
            .collect::<Vec<_>>()
    };
    assert_eq!(identities(7), identities(7));
    assert_ne!(identities(7), identities(8));
}
