//! The QSC: a caching query server (seed s3.13).
//!
//! Reading order: [`cache`], [`core`] (sans-IO), then the driver.

pub mod cache;
pub mod core;
