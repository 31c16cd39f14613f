//! The phases of the REST case: bad input, paced load for one user, racing read-all,
//! reads and deletes, and the totals against MySQL afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rand::Rng;
use rand::rngs::StdRng;
use sqlx::mysql::MySqlPool;
use tokio::sync::Semaphore;

use super::super::hostile::traffic::{ms, quantile};
use super::super::hostile::wire;
use super::super::report::{Check, Findings, say, shown};
use super::{Api, Params, counted, envelope_error};

/// Requests with bad ids and parameters: each must get its 4xx in the envelope.
/// `foreign` is another user's row: it must answer exactly like a missing one.
pub(super) async fn bad_input(
    api: &Api,
    user: &str,
    foreign: i64,
    out: &mut Findings,
) -> anyhow::Result<()> {
    let long_id = "7".repeat(10_000);
    let mut tries: Vec<(String, String, u16, &str)> = Vec::new();
    for id in [
        "1%20OR%201=1",
        "1;DROP%20TABLE%20notifications",
        "1%27--",
        "%27%20OR%20%271%27=%271",
        "1%20UNION%20SELECT%20user_id%20FROM%20notifications",
        "1)%20OR%20(1=1",
        "%00",
        "%FF%FE",
        "99999999999999999999999",
        "1e3",
        "0x10",
        "0",
        "-1",
        long_id.as_str(),
    ] {
        tries.push(("PUT".into(), format!("/{id}/read"), 400, "C002"));
        tries.push(("DELETE".into(), format!("/{id}"), 400, "C002"));
    }
    for id in ["9223372036854775807".to_owned(), foreign.to_string()] {
        tries.push(("PUT".into(), format!("/{id}/read"), 404, "N001"));
        tries.push(("DELETE".into(), format!("/{id}"), 404, "N001"));
    }
    for query in [
        "page=1%20OR%201=1",
        "size=20;DROP%20TABLE%20notifications",
        "before=1%27",
        "size=101",
        "size=1000000",
        "size=99999999999999999999",
        "size=-1",
        "page=0",
        "page=-5",
        "page=4294967296",
        "page=1&before=5",
    ] {
        tries.push(("GET".into(), format!("?{query}"), 400, "C002"));
        tries.push(("GET".into(), format!("/unread?{query}"), 400, "C002"));
    }
    tries.push((
        "GET".into(),
        "/unread/count?by=category%27%20OR%20%271".into(),
        400,
        "C002",
    ));
    tries.push(("GET".into(), "/../../etc/passwd".into(), 404, "C003"));
    let mut unexpected = Vec::new();
    let mut server_errors = 0;
    for (method, path, status, code) in &tries {
        let answer = api.call(user, method, path).await?;
        server_errors += usize::from(answer.status >= 500);
        match envelope_error(&answer) {
            Ok((s, c)) if s == *status && c == *code => {}
            Ok((s, c)) => unexpected.push(format!(
                "{method} {}: {s} {c}",
                path.chars().take(50).collect::<String>()
            )),
            Err(why) => unexpected.push(format!(
                "{method} {}: {why}",
                path.chars().take(50).collect::<String>()
            )),
        }
    }
    // Huge but valid pages: empty, not an error.
    for query in [
        "page=4294967295&size=100",
        "page=2147483648&size=100",
        "before=1",
    ] {
        let data = api.data(user, &format!("?{query}")).await;
        match data {
            Ok(data) if data["items"].as_array().is_some_and(Vec::is_empty) => {}
            Ok(data) => unexpected.push(format!("GET ?{query}: items {}", data["items"])),
            Err(err) => unexpected.push(format!("GET ?{query}: {err:#}")),
        }
    }
    // The largest page size is served.
    let page = api.data(user, "?size=100").await?;
    if page["items"].as_array().map(Vec::len) != Some(100) {
        unexpected.push(format!("GET ?size=100: {} items", page["items"]));
    }
    say(&format!(
        "rest: {} bad requests, {} unexpected answers",
        tries.len(),
        unexpected.len()
    ));
    out.figure("bad requests", tries.len() as f64, "");
    out.check(Check::none("bad requests answered 5xx", server_errors));
    out.check(Check::holds(
        "bad input answered with its status and code in the error envelope",
        "400 C002 (bad id or parameter), 404 N001 (no such row, another user's row), 404 C003 (unknown path)",
        &if unexpected.is_empty() {
            format!("all {}", tries.len())
        } else {
            unexpected
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        },
        unexpected.is_empty(),
    ));
    Ok(())
}

/// `rate` requests/s for one user for `load_for`, paced, a connection each.
pub(super) async fn load(
    api: &Api,
    user: &str,
    ids: &[i64],
    p: &Params,
    rng: &mut StdRng,
    out: &mut Findings,
) {
    let total = (p.rate * p.load_for.as_secs_f64()) as usize;
    let plan: Vec<(&str, String)> = (0..total)
        .map(|_| match rng.random_range(0..10) {
            0..=3 => ("GET", format!("?page={}&size=20", rng.random_range(1..=10))),
            4 | 5 => ("GET", "/unread/count".to_owned()),
            6 => ("GET", "/unread?size=50".to_owned()),
            7 => ("GET", "?before=&size=20".to_owned()),
            _ => (
                "PUT",
                format!("/{}/read", ids[rng.random_range(0..ids.len())]),
            ),
        })
        .collect();
    let in_flight = Arc::new(Semaphore::new(p.in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for (i, (method, path)) in plan.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / p.rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (api, user) = (api.clone(), user.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let from = wire::host(20, (i % 8) as u8 + 1);
            let answer = api.call_from(from, &user, method, &path).await;
            drop(permit);
            (answer.map(|a| a.status), sent.elapsed())
        }));
    }
    let results: Vec<_> = join_all(tasks).await.into_iter().flatten().collect();
    let took = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for (status, _) in &results {
        let key = match status {
            Ok(s) => s.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let failed = results
        .iter()
        .filter(|(s, _)| !matches!(s, Ok(s) if *s < 500))
        .count();
    let p99 = quantile(&latencies, 0.99);
    let mut shown_statuses: Vec<String> =
        statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    shown_statuses.sort();
    say(&format!(
        "rest: {} requests in {:.1} s, p99 {:.1} ms; {}",
        results.len(),
        took.as_secs_f64(),
        ms(p99),
        shown_statuses.join(", ")
    ));
    out.figure("load: requests", results.len() as f64, "");
    out.figure(
        "load: achieved rate",
        (results.len() as f64 / took.as_secs_f64()).round(),
        "req/s",
    );
    out.figure("load: latency p50", ms(quantile(&latencies, 0.5)), "ms");
    out.figure("load: latency p99", ms(p99), "ms");
    out.figure("load: latency max", ms(quantile(&latencies, 1.0)), "ms");
    out.check(Check::holds(
        "load: every request answered below 500",
        "all 2xx/4xx",
        &shown_statuses.join(", "),
        failed == 0 && results.len() == total,
    ));
    out.check(Check::at_most(
        "load: latency p99",
        ms(p99),
        ms(p.p99_bound),
        "ms",
    ));
}

/// `read-all` (repeatedly), a read of every row and two deletes of every other row, all
/// at once. Every answer is 2xx or the envelope's 404; each deleted row is deleted once.
pub(super) async fn race(api: &Api, user: &str, ids: &[i64], p: &Params, out: &mut Findings) {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Op {
        ReadAll,
        Read,
        Delete,
    }
    let mut ops: Vec<(Op, String, i64)> = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        ops.push((Op::Read, format!("/{id}/read"), *id));
        if n % 2 == 0 {
            ops.push((Op::Delete, format!("/{id}"), *id));
            ops.push((Op::Delete, format!("/{id}"), *id));
        }
        if n % (ids.len() / p.read_alls).max(1) == 0 {
            ops.push((Op::ReadAll, "/read-all".to_owned(), 0));
        }
    }
    // Interleave deterministically: the two deletes of a row are apart, read-alls spread.
    let (first, second): (Vec<_>, Vec<_>) =
        ops.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let ops: Vec<(Op, String, i64)> = first.into_iter().chain(second).map(|(_, op)| op).collect();
    let gate = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let tasks = ops.into_iter().map(|(op, path, id)| {
        let (api, user, gate) = (api.clone(), user.to_owned(), gate.clone());
        tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let method = match op {
                Op::Delete => "DELETE",
                _ => "PUT",
            };
            (op, id, api.call(&user, method, &path).await)
        })
    });
    let results: Vec<_> = join_all(tasks).await.into_iter().flatten().collect();
    let mut deleted: HashMap<i64, usize> = HashMap::new();
    let mut wrong = Vec::new();
    let mut server_errors = 0;
    for (op, id, answer) in &results {
        let Ok(answer) = answer else {
            wrong.push(format!("no answer for {id}"));
            continue;
        };
        server_errors += usize::from(answer.status >= 500);
        let fine = match (op, answer.status) {
            (Op::Delete, 200) => {
                *deleted.entry(*id).or_default() += 1;
                true
            }
            (Op::ReadAll, 200) => answer.json().is_some_and(|j| j["data"].is_u64()),
            (Op::Read, 200) => true,
            (Op::Delete | Op::Read, 404) => envelope_error(answer).is_ok_and(|(_, c)| c == "N001"),
            _ => false,
        };
        if !fine {
            wrong.push(format!("{id}: {}", answer.brief()));
        }
    }
    let doubly: usize = deleted.values().filter(|n| **n > 1).count();
    let expected_deletes = ids.len().div_ceil(2);
    say(&format!(
        "rest: race of {} requests in {:.1} s: {} rows deleted, {} wrong answers",
        results.len(),
        started.elapsed().as_secs_f64(),
        deleted.len(),
        wrong.len()
    ));
    out.figure("race: requests", results.len() as f64, "");
    out.check(Check::none("race: answers 5xx", server_errors));
    out.check(Check::holds(
        "race: every answer 200, or 404 N001 in the envelope",
        "all",
        &if wrong.is_empty() {
            format!("all {}", results.len())
        } else {
            wrong.iter().take(4).cloned().collect::<Vec<_>>().join("; ")
        },
        wrong.is_empty(),
    ));
    out.check(Check::holds(
        "race: each row deleted by exactly one of its two DELETEs",
        &format!("{expected_deletes} rows, none twice"),
        &format!("{} rows, {doubly} twice", deleted.len()),
        deleted.len() == expected_deletes && doubly == 0,
    ));
}

/// The unread count and the list totals over REST against the rows in MySQL.
pub(super) async fn consistent(
    api: &Api,
    pool: &MySqlPool,
    user: &str,
    out: &mut Findings,
) -> anyhow::Result<()> {
    let (rows, unread) = counted(pool, user).await?;
    let count = api.data(user, "/unread/count").await?;
    let listed = api.data(user, "?size=1").await?;
    let unread_listed = api.data(user, "/unread?size=1").await?;
    let rest = (
        listed["totalElements"].as_i64(),
        unread_listed["totalElements"].as_i64(),
        count.as_i64(),
    );
    let who = user.rsplit('-').next().unwrap_or(user);
    out.check(Check::holds(
        &format!("{who}: list total, unread total and unread count against MySQL"),
        &format!("{rows}, {unread}, {unread}"),
        &format!(
            "{}, {}, {}",
            shown_i64(rest.0),
            shown_i64(rest.1),
            shown_i64(rest.2)
        ),
        rest == (Some(rows), Some(unread), Some(unread)),
    ));
    Ok(())
}

fn shown_i64(n: Option<i64>) -> String {
    n.map_or_else(|| "none".to_owned(), |n| shown(n as f64))
}
