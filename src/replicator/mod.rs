//! `ivip replicator`: Fast Payload Replication (seed s1.1, s3.10, s3.11, s8).
//!
//! A replicator copies update payloads: the first copy of each identity (RUAS,
//! epoch, sequence) goes at once to every subscriber; later copies are dropped
//! (Fresh/Repeat). Level 0 takes payloads from the configured RUASes and is fully
//! meshed with the other level-0 replicators; level n takes two or more upstream
//! feeds, each with ordered alternatives it fails over to when the feed falls
//! silent, and returns from when the primary is back. Downstreams (replicators,
//! QSDs, MPSes, recorders) subscribe (spec: control.md).
//!
//! Not here: signature checks, storage, re-requests (s2.2: "best-effort copying";
//! MPSes fill gaps), DTLS (issue 9 wraps the send path in `net`).
//!
//! Reading order: [`dedupe`] (Fresh/Repeat), [`core`] (sans-IO, shared across
//! worker threads), [`config`], [`driver`] (threads and sockets).

pub mod config;
pub mod core;
pub mod dedupe;
pub mod driver;

pub use config::{ReplicatorConfig, ReplicatorSettings};
pub use driver::{Replicator, ReplicatorError, run, start};
