//! ivip: Ivip's fast-push mapping distribution system
//! (draft-whittle-ivip-db-fast-push-03).
//!
//! One library, one binary (`ivip <role> --config FILE`). The byte formats live in
//! the `ivip-wire` crate; `spec/` is the normative text.
//!
//! # Reading order
//! 1. `ivip_wire`: every byte format.
//! 2. [`time`], [`sign`]: injected time and signatures, used by every core.
//! 3. The role modules: each has a sans-IO `core` fed `(now, input)` and a thin
//!    driver that owns sockets and clocks.
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod config;
pub mod daemon;
pub mod delegation;
pub mod history;
pub mod keyfile;
pub mod notify;
pub mod qsc;
pub mod range;
pub mod rng;
pub mod ruas;
pub mod sign;
pub mod store;
pub mod time;
