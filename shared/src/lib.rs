//! Shared library of the notification pipeline: what both `ingest` and `gateway` need.
//!
//! Crate map:
//! - [`admin`]: the `/metrics`, `/healthz`, `/readyz` router of both binaries' admin listener.
//! - [`backoff`]: capped exponential backoff with jitter, for waiting out a lost dependency.
//! - [`broadcast`]: the time-deal broadcast JSON (pure).
//! - [`category`]: the portal domain (shopping, blog, prism, system) of each type.
//! - [`event`]: the 14 Kafka topics, their payloads and tolerant wire decoding.
//! - [`number`]: exact decimal parsing and the Korean `price` format.
//! - [`convert`]: the pure event → notification converter of SPEC 2.1.
//! - [`notification`]: `NotificationType`, `Status`, the notification and its JSON (SPEC 2.5).
//! - [`inbox`]: the inbox's queries on the notifications table (pages, counts, read marks).
//! - [`time`]: the configurable display time zone of notification timestamps.
//! - [`channel`]: Redis channel naming.
//! - [`redis_link`]: one Redis node or a Redis Cluster (sharded Pub/Sub), for both binaries.
//! - [`config`]: reusable clap argument groups.
//! - [`telemetry`]: tracing subscriber set-up.
//! - [`shutdown`]: SIGTERM/SIGINT → cancellation token.

pub mod admin;
pub mod backoff;
pub mod broadcast;
pub mod category;
pub mod channel;
pub mod config;
pub mod convert;
pub mod event;
pub mod inbox;
pub mod notification;
pub mod number;
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;
pub mod redis_link;
pub mod shutdown;
pub mod telemetry;
pub mod time;
