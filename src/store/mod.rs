//! Durable storage shared by the roles that keep data on disk: the append-only
//! segmented log (RUAS write-ahead log, UAS audit trail, history segments).
//!
//! spec: log.md. This module is I/O; what the records mean belongs to each role.

pub mod log;
