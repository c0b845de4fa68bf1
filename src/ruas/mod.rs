//! The RUAS: authoritative root for its MABs (seed s3.5, s4.1, s4.3).
//!
//! Reading order: [`config`], [`engine`] (the writer: master database, decisions,
//! recovery), [`packer`] (the output stream), [`http`] (ingest and read API),
//! [`snapshots`] (files), [`driver`] (threads, WAL, sockets).

pub mod config;
pub mod driver;
pub mod engine;
pub mod http;
pub mod packer;
pub mod snapshots;

pub use config::RuasConfig;
pub use driver::{Ruas, RuasError, run, start};
