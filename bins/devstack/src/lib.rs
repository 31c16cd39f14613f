//! `devstack`: the whole notification pipeline on one machine with one command, for
//! development only (never deployed): embedded Kafka, MariaDB and Redis (found or started
//! privately), `ingest` and `gateway` in-process, and a demo inbox page with dev-only
//! token minting and event producing.
//!
//! Modules, top down: [`cli`] — the command line; [`stack`] — start in order, stop in
//! reverse; [`services`] — MariaDB and Redis, found or started and stopped; [`launch`] — the
//! programs and command lines of private servers; [`kafka`] — the
//! embedded cluster, its fixed bootstrap port, topics and the producer; [`web`] — the page
//! and the dev endpoints; [`produce`] — checked requests to send events (the page's buttons
//! and `devstack produce`); [`samples`] — a sample event per topic; [`npm`] — the page's
//! client packages; [`redis_cluster`] — a private 3-master, 3-replica Redis Cluster for
//! tests and benchmarks; [`procs`] — child processes for benchmarks and reliability runs
//! (killed on drop, the release binaries, tansu) and what `/proc` tells about them.

pub mod cli;
pub mod kafka;
pub mod launch;
pub mod npm;
pub mod procs;
pub mod produce;
pub mod redis_cluster;
pub mod samples;
pub mod services;
pub mod stack;
pub mod web;
