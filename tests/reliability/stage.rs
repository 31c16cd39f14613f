//! The whole path for the delivery cases (`restart`, `soak`): a fresh database, a Kafka
//! broker (librdkafka's mock cluster or tansu), one `ingest` instance consuming from it,
//! and two gateways on the same Redis prefix and store (so a SUBSCRIBE with `last-id`
//! recovers), JWT authentication with a key of the run's own; plus the users the case's
//! sessions are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Ctx;
use super::clients::{Delivery, Fleet, FleetSpec};
use super::flood::{self, Flooded};
use super::launch::{GatewayInstance, GatewaySpec, IngestSpec, Instance};
use super::report::{Check, Findings};
use super::services::{self, Broker, Database};

/// Longest wait for ingest to join its group before the stream starts.
const INGEST_READY: Duration = Duration::from_secs(60);
/// The `kid` of the run's JWT key.
const KID: &str = "rel";

/// Which broker a stage runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// librdkafka's mock cluster on a thread of the runner: quick to start, but it keeps at
    /// most 5 MB (or 100 000 produce batches) a partition and finds an offset by walking
    /// every batch it keeps, so a long stream slows it down and ages out unread data.
    Mock,
    /// tansu as a process of its own (memory storage): for long streams.
    Tansu,
}

/// What a delivery case runs on.
pub struct Stage {
    pub name: String,
    pub log_dir: PathBuf,
    pub db: Database,
    pub broker: Broker,
    pub ingest: Instance,
    /// `gateway-a` and `gateway-b`.
    pub gateways: Vec<GatewayInstance>,
    pub gateway_spec: GatewaySpec,
    /// The sessions' users: `{name}-u{i}`.
    pub users: Arc<Vec<String>>,
    jwt_secret: String,
}

impl Stage {
    /// Starts everything for `case` with `users` users; ingest is ready (in its group)
    /// and both gateways listen when it returns.
    pub async fn up(
        ctx: &Ctx,
        case: &str,
        users: usize,
        broker: BrokerKind,
    ) -> anyhow::Result<Stage> {
        let log_dir = ctx.case_log_dir(case)?;
        let name = services::unique_name(case);
        let mut db = Database::create(&ctx.services.mysql_url, &name).await?;
        db.keep = ctx.keep_data;
        let broker = match broker {
            BrokerKind::Mock => Broker::mock().await?,
            BrokerKind::Tansu => Broker::tansu(&ctx.services.tansu, &log_dir, false).await?,
        };
        let prefix = format!("{name}:notification:");
        let ingest_spec = IngestSpec {
            bootstrap: broker.bootstrap.clone(),
            group: name.clone(),
            database_url: db.url.clone(),
            redis_url: ctx.services.redis_url.clone(),
            prefix: prefix.clone(),
            kafka_properties: String::new(),
            log_dir: log_dir.clone(),
        };
        let ingest = Instance::start(&ctx.launcher, &ingest_spec, "ingest").await?;
        ingest.wait_ready(INGEST_READY).await?;
        let jwt_secret = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let gateway_spec = GatewaySpec {
            database_url: Some(db.url.clone()),
            redis_url: ctx.services.redis_url.clone(),
            prefix,
            jwt_keys: format!("{KID}={jwt_secret}"),
            ticket_prefix: format!("{name}:ws-ticket:"),
            env: Vec::new(),
            log_dir: log_dir.clone(),
        };
        let mut gateways = Vec::new();
        for gateway in ["gateway-a", "gateway-b"] {
            gateways.push(GatewayInstance::start(&ctx.launcher, &gateway_spec, gateway).await?);
        }
        let users = (0..users).map(|i| format!("{name}-u{i}")).collect();
        Ok(Stage {
            name,
            log_dir,
            db,
            broker,
            ingest,
            gateways,
            gateway_spec,
            users: Arc::new(users),
            jwt_secret,
        })
    }

    /// Sessions for every user, spread over both gateways in turn.
    pub fn fleet_spec(&self, reconnect_delay: Duration, give_up: Duration) -> FleetSpec {
        FleetSpec {
            users: self.users.to_vec(),
            gateways: self.gateways.iter().map(|g| g.addr.clone()).collect(),
            jwt_kid: KID.to_owned(),
            jwt_secret: self.jwt_secret.clone(),
            reconnect_delay,
            give_up,
        }
    }

    /// The processes that exited without being told to (the gateway `killed` aside).
    pub fn early_exits(&mut self, killed: Option<usize>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(status) = self.ingest.exited() {
            out.push(format!("ingest: {status}"));
        }
        for (index, gateway) in self.gateways.iter_mut().enumerate() {
            if Some(index) == killed {
                continue;
            }
            if let Some(status) = gateway.exited() {
                out.push(format!("{}: {status}", gateway.name));
            }
        }
        out
    }
}

/// After the stream: waits until the store holds every acknowledged event (while it still
/// grows, up to `timeout` without progress) and every session every notification of its
/// user (or `timeout` passes), listens `quiet` more for late copies, stops the sessions,
/// and reports deliveries with their checks, against the store as it is then.
pub async fn settle(
    stage: &Stage,
    fleet: &mut Fleet,
    flooded: &Flooded,
    timeout: Duration,
    quiet: Duration,
    out: &mut Findings,
) -> anyhow::Result<Delivery> {
    let waited = Instant::now();
    let stored = flood::wait_stored(&stage.db, flooded.acked, timeout).await?;
    let waited = waited.elapsed();
    let expected = flood::ids_by_user(&stage.db).await?;
    let delivered = fleet.wait_delivered(&expected, timeout).await;
    tokio::time::sleep(quiet).await;
    fleet.stop().await;
    // Rows stored since the snapshot above (when the store was still behind) were
    // delivered too: judge every delivery against the store as it is now.
    let expected = flood::ids_by_user(&stage.db).await?;
    let delivery = fleet.delivery(&expected);
    let (truncated, gave_up, errors) = fleet.with_logs(|logs| {
        (
            logs.iter().map(|l| l.truncated as usize).sum::<usize>(),
            logs.iter()
                .filter_map(|l| l.gave_up.clone())
                .collect::<Vec<_>>(),
            logs.iter().map(|l| l.errors as usize).sum::<usize>(),
        )
    });
    out.figure("events produced", flooded.sent as f64, "events");
    out.figure(
        "flood rate",
        (flooded.rate() * 10.0).round() / 10.0,
        "events/s",
    );
    out.figure("notifications stored", stored as f64, "rows");
    out.seconds("the stream's end → every acknowledged event stored", waited);
    out.figure(
        "notifications delivered (user, id)",
        delivery.delivered as f64,
        "deliveries",
    );
    if let Some(at) = delivered {
        out.seconds(
            "the stream's last event → every session complete",
            at.saturating_duration_since(flooded.last_sent),
        );
    }
    out.figure(
        "notifications recovered from the store on a reconnect",
        delivery.recovered as f64,
        "notifications",
    );
    out.figure("ERROR frames on open sessions", errors as f64, "frames");
    out.check(Check::none("producer failures", flooded.failures));
    out.check(Check::equal(
        "every acknowledged event stored as one notification",
        stored,
        flooded.acked,
    ));
    out.check(Check::holds(
        "every session got every notification of its user",
        &format!("within {} s of the stream's end", timeout.as_secs()),
        if delivered.is_some() { "yes" } else { "no" },
        delivered.is_some(),
    ));
    out.check(Check::none("notifications lost (user, id)", delivery.lost));
    out.check(Check::none(
        "notifications duplicated (extra copies)",
        delivery.duplicated,
    ));
    out.check(Check::none(
        "notifications of another user (or not stored) delivered",
        delivery.unexpected,
    ));
    out.check(Check::none(
        "recoveries cut short (recovery-truncated)",
        truncated,
    ));
    out.check(Check::holds(
        "no session gave up reconnecting",
        "none",
        &gave_up
            .first()
            .cloned()
            .unwrap_or_else(|| "none".to_owned()),
        gave_up.is_empty(),
    ));
    if let Some(note) = flooded.first_failure.as_ref() {
        out.note(format!("first producer failure: {note}"));
    }
    if !delivery.lost_examples.is_empty() {
        out.note(format!(
            "lost, e.g. (user, id): {:?}",
            delivery.lost_examples
        ));
    }
    if !delivery.duplicated_examples.is_empty() {
        out.note(format!(
            "duplicated, e.g. (user, id): {:?}",
            delivery.duplicated_examples
        ));
    }
    Ok(delivery)
}

/// The `q` quantile of `values`, sorted here.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    super::verdict::quantile(&sorted, q)
}
