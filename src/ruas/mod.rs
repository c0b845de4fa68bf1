//! The RUAS: authoritative root for its MABs (seed s3.5, s4.1, s4.3).
//!
//! Reading order: [`config`], [`engine`] (the writer: master database, decisions,
//! recovery), [`packer`] (the output stream).

pub mod config;
pub mod engine;
pub mod packer;
