//! `ingest`: consumes the portal's Kafka topics, converts each event into a per-user
//! notification, dedups and stores it in MySQL, and publishes it to Redis.
//!
//! Modules:
//! - [`cli`]: command line (`migrate`, `convert`) and its dispatch.
//! - [`dry_run`]: `ingest convert`, the operator's dry run of the converter.
//! - [`store`]: batch writes with race-free dedup.

pub mod cli;
pub mod dry_run;
pub mod store;
