//! `ingest`: consumes the portal's Kafka topics, converts each event into a per-user
//! notification, dedups and stores it in MySQL, and publishes it to Redis.
//!
//! Modules, top down (each uses only modules listed below it):
//! - [`cli`]: command line (`run`, `migrate`, `convert`, `dlt replay`) and its dispatch.
//! - [`dry_run`]: `ingest convert`, the operator's dry run of the converter.
//! - [`replay`]: `ingest dlt replay`, dead letters back to their original topic.
//! - [`consumer`]: the run loop: batching, flow control (pause, keep polling), the two stages.
//! - [`group`]: the consumer group: callbacks, rebalances, pause/resume, offset commits.
//! - [`pending`]: records received and not yet in a batch.
//! - [`pipeline`]: one batch: decode → convert → store → publish, failures by kind.
//! - [`parallel`]: a batch split into concurrent store transactions.
//! - [`store`]: batch writes with race-free dedup.
//! - [`conflict`]: write conflicts between concurrent store transactions, run again.
//! - [`publish`]: pipelined Redis `PUBLISH`.
//! - [`dlt`]: dead-letter topics, their partitions and headers.
//! - [`record`]: a consumed record, and the dead letter of one that cannot be a notification.
//! - [`error`]: a record's fault or an outage: database and dead-letter producer errors.
//! - [`kafka_log`]: librdkafka's logs and errors, throttled into readable warnings.
//! - [`admin`], [`metrics`]: `/metrics`, `/healthz`, `/readyz` and readiness.
//! - [`config`]: `run` arguments and the validated [`config::IngestConfig`].

pub mod admin;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod consumer;
pub mod dlt;
pub mod dry_run;
pub mod error;
pub mod group;
pub mod kafka_log;
pub mod metrics;
pub mod parallel;
pub mod pending;
pub mod pipeline;
pub mod publish;
pub mod record;
pub mod replay;
pub mod store;
