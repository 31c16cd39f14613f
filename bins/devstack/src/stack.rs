//! `devstack run`: brings the whole pipeline up in order, prints where everything is, and
//! at Ctrl-C (SIGINT) or SIGTERM takes it down in reverse order:
//!
//! 1. checks what is missing (servers, programs, the page's packages) and says how to install it;
//! 2. MariaDB and Redis: found running, or started privately (see [`crate::services`]);
//! 3. the database, created when missing, and its migrations;
//! 4. Kafka: the embedded mock cluster with every topic (or `KAFKA_BOOTSTRAP_SERVERS`);
//! 5. ingest and the gateway, in this process, with a JWT key made for this run;
//! 6. the demo page and the dev endpoints ([`crate::web`]).
//!
//! Stopping: the one cancellation token stops the page, the gateway (sessions get a
//! going-away frame) and ingest (finishes its batch, commits); then the Kafka cluster is
//! destroyed and the private servers are stopped and waited for.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gateway::{Gateway, GatewayConfig};
use ingest::config::IngestConfig;
use ingest::consumer::Ingest;
use shared::config::DatabaseArgs;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::services::{self, Kind, Probe, Service};
use crate::web::{self, Dev};
use crate::{kafka, launch, npm};

/// Longest wait for ingest, the gateway and the page to finish after the stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The line printed once everything is up (tests wait for it).
pub const READY_LINE: &str = "devstack is ready";

/// Runs the stack until a stop signal; everything it started is stopped before it returns.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = shared::shutdown::on_signal();
    let mut services = Vec::new();
    let outcome = run_stack(&args, &shutdown, &mut services).await;
    shutdown.cancel();
    for service in services.iter_mut().rev() {
        service.stop().await;
    }
    say("devstack stopped");
    outcome
}

fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The data directory: the flag, or `target/devstack` of this workspace.
fn data_dir(args: &RunArgs) -> anyhow::Result<PathBuf> {
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| npm::package_dir().join("../../target/devstack"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

/// What to do about MariaDB and Redis, decided before anything starts so that everything
/// missing is named at once.
async fn preflight(args: &RunArgs, package_dir: &Path) -> anyhow::Result<[Probe; 2]> {
    let mysql = services::probe(Kind::MariaDb, args.mysql_port).await;
    let redis = services::probe(Kind::Redis, args.redis_port).await;
    let mut problems = Vec::new();
    let mut packages = Vec::new();
    for (kind, port, probe) in [
        (Kind::MariaDb, args.mysql_port, &mysql),
        (Kind::Redis, args.redis_port, &redis),
    ] {
        let missing = launch::missing_programs(kind);
        if !matches!(probe, Probe::Running) && !missing.is_empty() {
            problems.push(format!(
                "{} is not running on 127.0.0.1:{port}, and devstack cannot start one: {} not found",
                kind.name(),
                missing.join(", ")
            ));
            packages.push(kind.package());
        }
    }
    if !npm::installed(package_dir) && launch::find_program("npm").is_none() {
        problems.push("npm is not installed (it installs the demo page's client libraries)".into());
        packages.extend(["nodejs", "npm"]);
    }
    if !problems.is_empty() {
        bail!(
            "{}\ninstall what is missing with:\n    {}",
            problems.join("\n"),
            launch::install_command(&packages)
        );
    }
    Ok([mysql, redis])
}

async fn server(
    kind: Kind,
    port: u16,
    probe: Probe,
    data_dir: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service> {
    match probe {
        Probe::Running => {
            tracing::info!(
                server = kind.name(),
                port,
                "using the server already running"
            );
            Ok(Service::found(kind, port))
        }
        Probe::Free => {
            tracing::info!(server = kind.name(), port, "starting a private server");
            Service::start(kind, port, data_dir, shutdown).await
        }
        Probe::Unusable(why) => {
            let port = services::free_port()?;
            tracing::warn!(
                server = kind.name(),
                port,
                "{why}: starting a private server on a free port instead"
            );
            Service::start(kind, port, data_dir, shutdown).await
        }
    }
}

fn describe(service: &Service) -> String {
    match service.data_dir() {
        Some(dir) => format!("started by devstack, data in {}", dir.display()),
        None => "already running; left running".to_owned(),
    }
}

fn valid_database_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

async fn run_stack(
    args: &RunArgs,
    shutdown: &CancellationToken,
    services: &mut Vec<Service>,
) -> anyhow::Result<()> {
    if !valid_database_name(&args.database) {
        bail!("--database takes letters, digits and underscores (at most 64)");
    }
    let package_dir = npm::package_dir();
    let data_dir = data_dir(args)?;
    let [mysql_probe, redis_probe] = preflight(args, &package_dir).await?;
    npm::ensure(&package_dir, shutdown).await?;

    services.push(
        server(
            Kind::MariaDb,
            args.mysql_port,
            mysql_probe,
            &data_dir,
            shutdown,
        )
        .await?,
    );
    services.push(
        server(
            Kind::Redis,
            args.redis_port,
            redis_probe,
            &data_dir,
            shutdown,
        )
        .await?,
    );
    let database_url = format!(
        "{}/{}",
        services::mysql_server_url(services[0].port),
        args.database
    );
    let redis_url = services::redis_url(services[1].port);
    ingest::cli::migrate(&DatabaseArgs {
        url: database_url.clone(),
        max_connections: 1,
    })
    .await
    .context("cannot create or migrate the database")?;

    // Kafka: embedded (kept here: it is not Send) or the broker named in the environment.
    let (embedded, internal_bootstrap, public_bootstrap, kafka_note) =
        match &args.kafka_bootstrap_servers {
            Some(servers) => {
                kafka::create_topics(servers).await?;
                (
                    None,
                    servers.clone(),
                    servers.clone(),
                    "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
                )
            }
            None => {
                let embedded = kafka::Embedded::start()?;
                let public =
                    kafka::forward(args.kafka_port, &embedded.direct, shutdown.clone()).await?;
                let direct = embedded.direct.clone();
                let note = format!("embedded mock cluster, broker at {direct}");
                (Some(embedded), direct, public.to_string(), note)
            }
        };

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let outcome = serve(
        args,
        shutdown,
        &mut tasks,
        &database_url,
        &redis_url,
        &internal_bootstrap,
        &public_bootstrap,
    )
    .await;
    match &outcome {
        Ok(urls) => {
            say(&format!(
                "\n{READY_LINE}\n\
                 \x20 demo inbox    {}\n\
                 \x20 gateway       http://127.0.0.1:{}  (SockJS /ws/notifications, REST /api/v1/notifications)\n\
                 \x20 kafka         {public_bootstrap}  ({kafka_note}; 14 topics and their .DLT)\n\
                 \x20 mariadb       {database_url}  ({})\n\
                 \x20 redis         {redis_url}  ({})\n\
                 \x20 metrics       http://127.0.0.1:{}/metrics (ingest), http://127.0.0.1:{}/metrics (gateway)\n\
                 \x20 send events   cargo run -p devstack -- produce --topic all --user user-1{}\n\
                 Ctrl-C stops everything devstack started.",
                urls,
                args.gateway_port,
                describe(&services[0]),
                describe(&services[1]),
                args.ingest_admin_port,
                args.gateway_admin_port,
                if public_bootstrap == "127.0.0.1:19092" {
                    String::new()
                } else {
                    format!(" --bootstrap {public_bootstrap}")
                },
            ));
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(ended) = tasks.join_next() => {
                    match ended {
                        Ok((name, Err(err))) => tracing::error!("{name} failed: {err:#}"),
                        Ok((name, Ok(()))) => tracing::error!("{name} stopped by itself"),
                        Err(err) => tracing::error!(%err, "a task panicked"),
                    }
                }
            }
        }
        Err(err) => tracing::error!("{err:#}"),
    }
    say("stopping...");
    shutdown.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = tasks.join_next().await {
            if let Ok((name, Err(err))) = ended {
                tracing::warn!("{name}: {err:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("still running after {DRAIN_TIMEOUT:?}; stopping it hard");
        tasks.shutdown().await;
    }
    // Every client of the embedded cluster is gone now.
    drop(embedded);
    outcome.map(drop)
}

/// Starts ingest, the gateway and the page as tasks; returns the page's URL.
async fn serve(
    args: &RunArgs,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    database_url: &str,
    redis_url: &str,
    internal_bootstrap: &str,
    public_bootstrap: &str,
) -> anyhow::Result<String> {
    let mut config = IngestConfig::new(internal_bootstrap, database_url, redis_url);
    config.admin_addr = Some(loopback(args.ingest_admin_port));
    config.shutdown_deadline = Duration::from_secs(10);
    let ingest = Ingest::new(config).await.context("cannot start ingest")?;
    ingest.serve_admin(shutdown).await.with_context(|| {
        format!(
            "port {} (ingest admin) is taken: pass --ingest-admin-port",
            args.ingest_admin_port
        )
    })?;
    let stop = shutdown.clone();
    tasks.spawn(async move { ("ingest", ingest.run(stop).await) });

    let jwt_secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut config = GatewayConfig::new(loopback(args.gateway_port), redis_url);
    config.database_url = Some(database_url.to_owned());
    config.jwt_keys = format!("{}={jwt_secret}", web::KID);
    config.admin_addr = Some(loopback(args.gateway_admin_port));
    config.sockjs_client_url = format!("http://127.0.0.1:{}/vendor/sockjs.min.js", args.http_port);
    let gateway = Gateway::bind(&config, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot start the gateway on ports {} and {} (pass --gateway-port, --gateway-admin-port)",
                args.gateway_port, args.gateway_admin_port
            )
        })?;
    let gateway_url = format!("http://{}", gateway.local_addr()?);
    tasks.spawn(async move { ("gateway", gateway.run().await.map_err(Into::into)) });

    let listener = web::bind(args.http_port).await?;
    let url = web::url(listener.local_addr()?);
    let dev = Arc::new(Dev {
        dir: npm::package_dir(),
        gateway: gateway_url,
        kafka: public_bootstrap.to_owned(),
        jwt_secret,
        producer: kafka::producer(internal_bootstrap)?,
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        (
            "demo page",
            web::serve(listener, dev, stop).await.map_err(Into::into),
        )
    });
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        assert!(valid_database_name("notification_db"));
        assert!(!valid_database_name("a-b"));
        assert!(!valid_database_name("x`; DROP"));
        assert!(!valid_database_name(""));
    }
}
