//! The RUAS: authoritative root for its MABs (seed s3.5, s4.1, s4.3).
//!
//! Reading order: [`packer`] (the output stream).

pub mod packer;
