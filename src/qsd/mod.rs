//! The QSD: a query server with the full mapping database (seed s1.1, s3.12,
//! s4.1.2).
//!
//! Reading order: [`stream`] (keeping the database in step with the update
//! stream: boot from snapshots, in-order application, gap fetches, hash checks,
//! resync), [`query`] (the workers answering ITRs), [`feed`] (the feed loop:
//! subscriptions, batched signature checks, fetches, notifications),
//! [`directory`], [`config`], [`driver`].

pub mod config;
pub mod directory;
pub mod driver;
pub mod feed;
pub mod query;
pub mod stream;

pub use config::{QsdConfig, QsdSettings};
pub use driver::{Qsd, QsdError, run, start};
