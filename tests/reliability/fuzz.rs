//! The fuzz targets of `fuzz/` (`stomp_decode`, `sockjs_payload`, `event_convert`), whose
//! properties live in `gateway::stomp::properties`, `gateway::sockjs::properties` and
//! `shared::properties`. At full scale each target runs under libFuzzer through
//! `cargo fuzz run <target> -- -max_total_time=600` (cargo-fuzz must be installed: the case
//! fails, naming the install command, when it is not); reported: executions, coverage
//! edges, crashes. At quick scale nothing is built: this process runs the same property
//! functions on the corpus and crash inputs cargo fuzz left in `fuzz/` (when there are
//! any), on seeds of every input shape (the shapes of the bugs fuzzing found included),
//! and on seeded random mutations of them for a few seconds per target. Crashes (a failed
//! property, a panic) must be 0 either way; a crashing input is written to the case's log
//! directory.

mod libfuzzer;

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;

use super::report::{self, Check, Findings, say};
use super::{CaseFuture, Ctx, Scale};

/// One fuzz target: its name in `fuzz/Cargo.toml`, its properties, its seeds.
struct Target {
    name: &'static str,
    check: fn(&[u8]),
    seeds: fn() -> Vec<Vec<u8>>,
}

const TARGETS: [Target; 3] = [
    Target {
        name: "stomp_decode",
        check: gateway::stomp::properties::check,
        seeds: stomp_seeds,
    },
    Target {
        name: "sockjs_payload",
        check: gateway::sockjs::properties::check,
        seeds: sockjs_seeds,
    },
    Target {
        name: "event_convert",
        check: shared::properties::check,
        seeds: event_seeds,
    },
];

/// libFuzzer's time per target at full scale.
const FULL_SECS: u64 = 600;
/// What building the fuzz targets may take, in the full run's time plan.
const BUILD_ALLOWANCE: Duration = Duration::from_secs(600);
/// Mutations per target at quick scale.
const QUICK_FOR: Duration = Duration::from_secs(4);
/// The fewest executions a quick run of a target must make.
const QUICK_LEAST: usize = 500;
/// Longest input a mutation makes.
const MAX_INPUT: usize = 4096;
/// Corpus files replayed per target at most (a long fuzzing run leaves thousands).
const MAX_CORPUS: usize = 20_000;
/// A target stops after this many crashes (each is written out).
const MAX_CRASHES: usize = 5;

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

fn fuzz_dir() -> PathBuf {
    report::repo_root().join("fuzz")
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let log_dir = ctx.case_log_dir("fuzz")?;
    let declared = declared_targets(&fuzz_dir().join("Cargo.toml"))?;
    let known: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    let mut out = match ctx.scale {
        Scale::Full => libfuzzer::full(ctx, &log_dir).await?,
        Scale::Quick => quick(ctx, &log_dir).await?,
    };
    out.check(Check::holds(
        "every target of fuzz/Cargo.toml is run",
        &known.iter().cloned().collect::<Vec<_>>().join(", "),
        &declared.iter().cloned().collect::<Vec<_>>().join(", "),
        declared == known,
    ));
    out.note(format!("logs in {}", report::shown_path(&log_dir)));
    Ok(out)
}

/// The `[[bin]]` names of the fuzz crate's manifest.
fn declared_targets(manifest: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut names = BTreeSet::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(value) = line.strip_prefix("name").map(str::trim) {
                if let Some(name) = value.strip_prefix('=') {
                    names.insert(name.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    Ok(names)
}

/// Quick: the property functions in this process on the corpus, the seeds and mutations.
async fn quick(ctx: &Ctx, log_dir: &Path) -> anyhow::Result<Findings> {
    let mut out = Findings::new(format!(
        "quick: no libFuzzer build; each target's property function run in this process on \
         the corpus and crash inputs under fuzz/corpus/<target> and fuzz/artifacts/<target> \
         (when a fuzzing run left any, at most {MAX_CORPUS}), its seeds, and seeded random \
         mutations (bit flips, interesting bytes and tokens, cuts, copies, splices) for {} s \
         each; no coverage feedback, so no edges are counted. Full scale runs `cargo fuzz run \
         <target> -- -max_total_time={FULL_SECS}`",
        QUICK_FOR.as_secs()
    ));
    let mut rng = ctx.rng("fuzz");
    for target in &TARGETS {
        let corpus = corpus_of(target.name)?;
        let seed: u64 = rng.random();
        let crash_dir = log_dir.to_path_buf();
        let (check, seeds, name) = (target.check, (target.seeds)(), target.name);
        let replayed = corpus.len();
        let run = tokio::task::spawn_blocking(move || {
            replay_and_mutate(name, check, seeds, corpus, seed, &crash_dir)
        })
        .await?;
        say(&format!(
            "fuzz: {name}: {} executions ({replayed} corpus inputs), {} crashes",
            run.executions,
            run.crashes.len()
        ));
        out.figure(&format!("{name}: executions"), run.executions as f64, "");
        out.figure(
            &format!("{name}: corpus inputs replayed"),
            replayed as f64,
            "",
        );
        out.check(Check::holds(
            &format!("{name}: executions"),
            &format!("≥ {QUICK_LEAST}"),
            &run.executions.to_string(),
            run.executions >= QUICK_LEAST,
        ));
        out.check(Check::none(&format!("{name}: crashes"), run.crashes.len()));
        for crash in &run.crashes {
            out.note(format!("{name} crashed: {crash}"));
        }
    }
    Ok(out)
}

/// The files cargo fuzz keeps for `target`: its corpus and its crash artifacts.
fn corpus_of(target: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut inputs = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            if inputs.len() >= MAX_CORPUS {
                break;
            }
            inputs.push(std::fs::read(&path)?);
        }
    }
    Ok(inputs)
}

struct QuickRun {
    executions: usize,
    crashes: Vec<String>,
}

/// Runs `check` on every corpus input and seed, then on mutations for [`QUICK_FOR`].
fn replay_and_mutate(
    name: &str,
    check: fn(&[u8]),
    seeds: Vec<Vec<u8>>,
    corpus: Vec<Vec<u8>>,
    seed: u64,
    crash_dir: &Path,
) -> QuickRun {
    let mut rng: StdRng = rand::SeedableRng::seed_from_u64(seed);
    let mut run = QuickRun {
        executions: 0,
        crashes: Vec::new(),
    };
    let one = |input: &[u8], run: &mut QuickRun| {
        run.executions += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let path = crash_dir.join(format!("{name}-crash-{}", run.crashes.len()));
            let _ = std::fs::write(&path, input);
            run.crashes.push(format!(
                "{} bytes, written to {}",
                input.len(),
                report::shown_path(&path)
            ));
        }
    };
    for input in corpus.iter().chain(&seeds) {
        one(input, &mut run);
    }
    let mut pool: Vec<Vec<u8>> = seeds.into_iter().chain(corpus).collect();
    let base = pool.len();
    let started = Instant::now();
    while started.elapsed() < QUICK_FOR && run.crashes.len() < MAX_CRASHES {
        for _ in 0..32 {
            let parent = &pool[rng.random_range(0..pool.len())];
            let other = &pool[rng.random_range(0..pool.len())];
            let input = mutate(&mut rng, parent, other);
            one(&input, &mut run);
            // Keep some mutants as parents of deeper ones; the seeds always stay.
            if pool.len() < base + 256 {
                pool.push(input);
            } else if rng.random_bool(0.1) {
                let at = rng.random_range(base..pool.len());
                pool[at] = input;
            }
        }
    }
    run
}

/// Tokens the decoders give meaning to.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\0",
    b":",
    b"\\c",
    b"\\n",
    b"\\r",
    b"\\\\",
    b"\\t",
    b"content-length:",
    b"heart-beat:",
    b"receipt:",
    b"CONNECT\n",
    b"SEND\n",
    b"18446744073709551616",
    b"4294967295",
    b"[\"",
    b"\"]",
    b"\",\"",
    b"\\u0000",
    b"\\ud800",
    b"\\u2028",
    b"%",
    b"%2",
    b"%FF",
    b"+",
    b"d=",
    b"&",
    b"\"userId\":",
    b"null",
    b"1e308",
    b"-0",
    b"[2026,2,6,10,0,0,123]",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xa8",
    b"\xf0\x9f\x98\x80",
];

/// One to four random edits of `input`, with `other` to splice from.
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..7) {
            0 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out[at] = [0, 0x7f, 0x80, 0xff, b'\n', b'\0', b':', b'"'][rng.random_range(0..8)];
            }
            2 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + rng.random_range(1..=8)).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let end = (at + rng.random_range(1..=16)).min(out.len());
                let span = out[at..end].to_vec();
                out.splice(at..at, span);
            }
            5 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let end = (from + rng.random_range(1..=32)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => out.truncate(at.max(1)),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// `stomp_decode`'s inputs: a control byte (version, split point), then the bytes.
fn stomp_seeds() -> Vec<Vec<u8>> {
    let frames: [&[u8]; 7] = [
        b"CONNECT\naccept-version:1.2\nheart-beat:10000,10000\nX-WS-Ticket:t-1\n\n\0",
        b"STOMP\naccept-version:1.0,1.1\nhost:portal\n\n\0",
        b"SUBSCRIBE\nid:0\ndestination:/user/u-1/queue/notifications\nlast-id:41\nreceipt:r\n\n\0",
        b"SEND\ndestination:/app/notifications.read\ncontent-length:14\n\n{\"ids\":[1,2]}\0\n\n",
        b"SUBSCRIBE\nid:a\\cb\\n\ndestination:/topic/timedeals\n\n\0\n",
        b"SEND\ndestination:/x\ncontent-length:18446744073709551615\n\nbody\0",
        b"\n\n\r\nDISCONNECT\nreceipt:bye\n\n\0",
    ];
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let mut seed = vec![(i * 37) as u8];
            seed.extend_from_slice(frame);
            seed
        })
        .collect()
}

/// `sockjs_payload`'s inputs: the transport (0 `xhr_send`, 1 `jsonp_send` form, 2 raw),
/// then the body.
fn sockjs_seeds() -> Vec<Vec<u8>> {
    let bodies: [(u8, &[u8]); 7] = [
        (0, b"[\"CONNECT\\naccept-version:1.2\\n\\n\\u0000\"]"),
        (0, b"[\"a\",\"\\u2028\\ud83d\\ude00\",\"\"]"),
        (1, b"d=%5B%22SEND%5Cn%5Cn%5Cu0000%22%5D"),
        (1, b"d=[\"\xff\xfe\xfd\"]&x=1"),
        (2, b"[\"h\\u00e9\",\"\\\\\"]"),
        (0, b"  \n"),
        (1, b"d=%E2%80%A8+%2B"),
    ];
    bodies
        .iter()
        .map(|(transport, body)| {
            let mut seed = vec![*transport];
            seed.extend_from_slice(body);
            seed
        })
        .collect()
}

/// `event_convert`'s inputs: the topic's kind, then the record value. One value with a
/// field of every topic for each kind, and values with bytes that are not UTF-8.
fn event_seeds() -> Vec<Vec<u8>> {
    let value = concat!(
        r#"{"userId":"u-7","name":"이영희","orderNumber":"O-7","itemCount":2,"#,
        r#""totalAmount":12345.678,"cancelReason":"재고 없음","paymentNumber":"P-7","#,
        r#""amount":990,"failureReason":"잔액 부족","trackingNumber":"TR-7","#,
        r#""carrier":"우체국","couponCode":"CP-7","couponName":"가을","discountValue":3000,"#,
        r#""discountType":"FIXED","timeDealId":11,"timeDealName":"반짝","authorId":"a-7","#,
        r#""postId":"post-7","postTitle":"글","likerId":"l-7","likerName":"철수","#,
        r#""likeId":"like-7","commenterId":"c-7","commenterName":"민지","#,
        r#""commentId":"cm-7","content":"댓글 내용","parentCommentAuthorId":"pa-7","#,
        r#""parentCommentId":"pc-7","replierId":"rp-7","replierName":"준호","#,
        r#""replyId":"re-7","followeeId":"fe-7","followerId":"fr-7","#,
        r#""followerName":"소라","followId":"fw-7","taskId":70,"boardId":7,"#,
        r#""title":"작업","agentName":"봇","errorMessage":"실패","#,
        r#""createdAt":[2026,2,6,10,0,0,123]}"#
    );
    let mut seeds: Vec<Vec<u8>> = (0..14u8)
        .map(|kind| {
            let mut seed = vec![kind];
            seed.extend_from_slice(value.as_bytes());
            seed
        })
        .collect();
    seeds.push(b"\x00{\"userId\":\"u\",\"name\":\"n\",\"unread\":\"\xff\xfe\"}".to_vec());
    seeds.push(b"\x05{\"userId\":12345678901234567890,\"couponCode\":\"c\"}".to_vec());
    seeds
}
