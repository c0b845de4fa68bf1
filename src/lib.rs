//! ivip: Ivip's fast-push mapping distribution system
//! (draft-whittle-ivip-db-fast-push-03).
//!
//! One library, one binary (`ivip <role> --config FILE`). The byte formats live in
//! the `ivip-wire` crate; `spec/` is the normative text.
//!
//! # Reading order
//! 1. `ivip_wire`: every byte format.
//! 2. [`time`], [`sign`]: injected time and signatures, used by every core.
//! 3. [`net`]: the core/driver convention every UDP role follows (outbox,
//!    `DatagramCore`, the mio loop), then [`feed`] (subscriptions, failover),
//!    [`seq`], [`metrics`], [`http`].
//! 4. The role modules ([`replicator`], [`mps`], ...): each has a sans-IO `core`
//!    fed `(now, input)` and a thin driver that owns sockets and clocks.
#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)] // allowed only in net::udp, table's page memory, daemon's signal handler, and dtls::ffi

pub mod client;
pub mod config;
pub mod daemon;
pub mod delegation;
pub mod dtls;
pub mod feed;
pub mod history;
pub mod http;
pub mod keyfile;
pub mod metrics;
pub mod mps;
pub mod net;
pub mod notify;
pub mod qsc;
pub mod qsd;
pub mod range;
pub mod replicator;
pub mod rng;
pub mod ruas;
pub mod seq;
pub mod sign;
pub mod store;
pub mod table;
pub mod testnet;
pub mod time;
pub mod uas;
