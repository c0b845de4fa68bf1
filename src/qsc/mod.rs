//! The QSC: a caching query server (seed s3.13).
//!
//! Reading order: [`cache`], [`core`] (sans-IO), [`config`], [`driver`].

pub mod cache;
pub mod config;
pub mod core;
pub mod driver;

pub use config::QscConfig;
pub use driver::{Qsc, run, start};
