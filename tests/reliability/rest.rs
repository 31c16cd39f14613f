//! The inbox REST API under hostile and heavy use, against a gateway process on a fresh
//! database: SQL-looking and oversized ids and parameters, huge page sizes, 1 000
//! requests/s for one user, and `read-all`, reads and deletes racing on the same rows.
//! Nothing may answer 5xx; bad input gets the spec's error envelope; latency stays within
//! a bound; and afterwards the unread counts and list totals match the rows in MySQL.

mod phases;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::mysql::MySqlPool;

use super::hostile::wire::{self, Answer, Tokens};
use super::launch::{GatewayInstance, GatewaySpec};
use super::report::{self, Check, Findings};
use super::services::{self, Database};
use super::{CaseFuture, Ctx, Scale};

const BASE: &str = "/api/v1/notifications";

struct Params {
    /// Rows of the user under load, of the racing user, of a bystander.
    load_rows: usize,
    race_rows: usize,
    bystander_rows: usize,
    rate: f64,
    load_for: Duration,
    /// Requests in flight at most: the load is paced, and a server slower than the pace
    /// lowers the achieved rate (reported) instead of queueing ever more requests.
    in_flight: usize,
    /// How many times each racing request is made.
    read_alls: usize,
    /// Bound of the p99 latency under load.
    p99_bound: Duration,
}

impl Params {
    fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                load_rows: 5000,
                race_rows: 2000,
                bystander_rows: 500,
                rate: 1000.0,
                load_for: Duration::from_secs(5),
                in_flight: 64,
                read_alls: 40,
                p99_bound: Duration::from_millis(250),
            },
            Scale::Quick => Params {
                load_rows: 300,
                race_rows: 200,
                bystander_rows: 50,
                rate: 1000.0,
                load_for: Duration::from_secs(2),
                in_flight: 64,
                read_alls: 10,
                p99_bound: Duration::from_millis(1000),
            },
        }
    }
}

pub fn case(ctx: &Ctx) -> CaseFuture<'_> {
    Box::pin(run(ctx))
}

/// Stores `count` notifications of `user` with `status` (newest last); their ids.
pub async fn store_rows(
    pool: &MySqlPool,
    user: &str,
    count: usize,
    status: &str,
) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(count);
    let now = Utc::now();
    for n in 0..count {
        let result = sqlx::query(
            "INSERT INTO notifications (user_id, type, title, message, status, created_at, \
             read_at, dedup_key, write_batch) VALUES (?, 'BLOG_LIKE', '좋아요', ?, ?, ?, ?, ?, 0)",
        )
        .bind(user)
        .bind(format!("reliability row {n}"))
        .bind(status)
        .bind(now - chrono::Duration::milliseconds((count - n) as i64))
        .bind((status == "READ").then_some(now))
        .bind(rand::random::<[u8; 32]>().to_vec())
        .execute(pool)
        .await?;
        ids.push(result.last_insert_id() as i64);
    }
    Ok(ids)
}

/// The status and code of an answer in the spec's error envelope
/// (`{"success":false,"error":{"code","message","timestamp"}}`, timestamp
/// `yyyy-MM-ddTHH:mm:ssZ`); `Err` says what is wrong with it.
pub fn envelope_error(answer: &Answer) -> Result<(u16, String), String> {
    let json = answer
        .json()
        .ok_or_else(|| format!("{}: not JSON", answer.brief()))?;
    let error = &json["error"];
    let (code, message, timestamp) = (
        error["code"].as_str(),
        error["message"].as_str(),
        error["timestamp"].as_str(),
    );
    let stamp_ok = timestamp
        .is_some_and(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SZ").is_ok());
    match (json["success"].as_bool(), code, message) {
        (Some(false), Some(code), Some(message)) if !message.is_empty() && stamp_ok => {
            Ok((answer.status, code.to_owned()))
        }
        _ => Err(format!("{}: not the error envelope", answer.brief())),
    }
}

/// A REST client of one gateway, with a token of each user it calls as.
#[derive(Clone)]
struct Api {
    gateway: SocketAddr,
    bearers: Arc<HashMap<String, String>>,
}

impl Api {
    async fn call(&self, user: &str, method: &str, path: &str) -> anyhow::Result<Answer> {
        self.call_from(wire::host(0, 1), user, method, path).await
    }

    async fn call_from(
        &self,
        from: std::net::IpAddr,
        user: &str,
        method: &str,
        path: &str,
    ) -> anyhow::Result<Answer> {
        let bearer = self
            .bearers
            .get(user)
            .ok_or_else(|| anyhow::anyhow!("no token of {user}"))?;
        wire::http(
            from,
            self.gateway,
            method,
            &format!("{BASE}{path}"),
            &[("Authorization", bearer)],
            b"",
        )
        .await
    }

    /// `data` of a successful answer.
    async fn data(&self, user: &str, path: &str) -> anyhow::Result<serde_json::Value> {
        let answer = self.call(user, "GET", path).await?;
        anyhow::ensure!(answer.status == 200, "GET {path}: {}", answer.brief());
        answer
            .json()
            .map(|j| j["data"].clone())
            .ok_or_else(|| anyhow::anyhow!("GET {path}: {}", answer.brief()))
    }
}

/// A user's rows and unread rows in MySQL.
async fn counted(pool: &MySqlPool, user: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(status = 'UNREAD'), 0) AS SIGNED) \
         FROM notifications WHERE user_id = ?",
    )
    .bind(user)
    .fetch_one(pool)
    .await?)
}

async fn run(ctx: &Ctx) -> anyhow::Result<Findings> {
    let p = Params::of(ctx.scale);
    let mut rng = ctx.rng("rest");
    let log_dir = ctx.case_log_dir("rest")?;
    let name = services::unique_name("rest");
    let mut db = Database::create(&ctx.services.mysql_url, &name).await?;
    db.keep = ctx.keep_data;
    let tokens = Tokens::random();
    let spec = GatewaySpec {
        database_url: Some(db.url.clone()),
        redis_url: ctx.services.redis_url.clone(),
        prefix: format!("{name}:notification:"),
        jwt_keys: tokens.keys(),
        ticket_prefix: format!("{name}:ws-ticket:"),
        env: Vec::new(),
        log_dir: log_dir.clone(),
    };
    let mut gw = GatewayInstance::start(&ctx.launcher, &spec, "gateway").await?;
    let (alice, carol, bob) = (
        format!("{name}-alice"),
        format!("{name}-carol"),
        format!("{name}-bob"),
    );
    let api = Api {
        gateway: gw.addr.parse()?,
        bearers: Arc::new(
            [&alice, &carol]
                .iter()
                .map(|u| (u.to_string(), format!("Bearer {}", tokens.valid(u))))
                .collect(),
        ),
    };
    let mut alice_ids = store_rows(&db.pool, &alice, p.load_rows * 2 / 3, "UNREAD").await?;
    alice_ids.extend(store_rows(&db.pool, &alice, p.load_rows / 3, "READ").await?);
    let carol_ids = store_rows(&db.pool, &carol, p.race_rows, "UNREAD").await?;
    let bob_ids = store_rows(&db.pool, &bob, p.bystander_rows, "UNREAD").await?;
    let bob_before = counted(&db.pool, &bob).await?;

    let mut out = Findings::new(format!(
        "{} served by {} (shipped limits: a pool of 10 database connections), on a fresh \
         database with {} rows of the user under load, {} of the racing user and {} of a \
         bystander; bad input (SQL-looking and oversized ids and parameters, huge page \
         sizes), then {:.0} requests/s for {} s for one user (paced, at most {} in flight, a \
         connection each: pages, keyset slices, the unread count and list, marks read), then `read-all`, \
         reads and deletes of the same rows racing",
        ctx.scale.name(),
        ctx.launcher.describe_gateway(),
        alice_ids.len(),
        carol_ids.len(),
        p.bystander_rows,
        p.rate,
        p.load_for.as_secs(),
        p.in_flight,
    ));
    let before = counted(&db.pool, &alice).await?;
    phases::bad_input(&api, &alice, bob_ids[0], &mut out).await?;
    out.check(Check::holds(
        "rows after the bad input",
        &format!("{} rows, {} unread (as before)", before.0, before.1),
        &{
            let after = counted(&db.pool, &alice).await?;
            format!("{} rows, {} unread", after.0, after.1)
        },
        counted(&db.pool, &alice).await? == before,
    ));
    phases::load(&api, &alice, &alice_ids, &p, &mut rng, &mut out).await;
    phases::race(&api, &carol, &carol_ids, &p, &mut out).await;
    for user in [&alice, &carol] {
        phases::consistent(&api, &db.pool, user, &mut out).await?;
    }
    let bob_after = counted(&db.pool, &bob).await?;
    out.check(Check::holds(
        "the bystander's rows",
        &format!("{} rows, {} unread, untouched", bob_before.0, bob_before.1),
        &format!("{} rows, {} unread", bob_after.0, bob_after.1),
        bob_after == bob_before,
    ));
    out.check(Check::holds(
        "the gateway kept running",
        "running",
        &gw.exited()
            .map_or("running".to_owned(), |s| format!("exited: {s}")),
        gw.exited().is_none(),
    ));
    out.note(format!(
        "logs in {}{}",
        report::shown_path(&log_dir),
        db.kept_note()
    ));
    let _ = gw.stop(Duration::from_secs(15)).await;
    Ok(out)
}
