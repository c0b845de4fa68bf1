//! `ivip mps`: the missing payload server (seed s4.1.3).
//!
//! An MPS takes two or more feeds like a QSD, keeps every payload whose RUAS
//! signature verifies for a configured time (default 10 minutes) within a byte
//! budget, serves them over HTTP one by one and as sequence ranges (spec: http.md
//! §2, mps.md), notices gaps in each RUAS's sequence and fetches what it missed
//! from peer MPSes. It never stores or serves a payload whose signature fails.
//!
//! Reading order: [`store`], [`core`] (sans-IO), [`http`], [`config`], [`driver`].

pub mod config;
pub mod core;
pub mod driver;
pub mod http;
pub mod store;

pub use config::{MpsConfig, MpsSettings};
pub use driver::{Mps, MpsError, run, start};
