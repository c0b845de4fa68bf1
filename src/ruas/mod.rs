//! The RUAS: authoritative root for its MABs (seed s3.5, s4.1, s4.3).
//!
//! Reading order: [`config`], [`packer`] (the output stream).

pub mod config;
pub mod packer;
