//! `ingest`: consumes the portal's Kafka topics, converts each event into a per-user
//! notification, dedups and stores it in MySQL, and publishes it to Redis.
//!
//! Modules:
//! - [`cli`]: command line (`run`, `migrate`, `convert`, `dlt replay`) and its dispatch.
//! - [`config`]: `run` arguments and the validated [`config::IngestConfig`].
//! - [`consumer`]: the Kafka consumer group, batching and offset commits.
//! - [`pipeline`]: one batch: decode → convert → store → publish, failures by kind.
//! - [`store`]: batch writes with race-free dedup.
//! - [`publish`]: pipelined Redis `PUBLISH`.
//! - [`dlt`]: dead-letter topics and their headers; [`replay`]: `ingest dlt replay`.
//! - [`admin`], [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`dry_run`]: `ingest convert`, the operator's dry run of the converter.

pub mod admin;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dlt;
pub mod dry_run;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod replay;
pub mod store;
