//! The QSD: a query server with the full mapping database (seed s1.1, s3.12,
//! s4.1.2).
//!
//! Reading order: [`stream`] (keeping the database in step with the update
//! stream: boot from snapshots, in-order application, gap fetches, hash checks,
//! resync).

pub mod stream;
