//! The mapping history recorder (seed s2.1): a lasting, searchable record of every
//! mapping change.
//!
//! seed s2.1: "there will need to be a system which monitors all mapping changes
//! and keeps a lasting record of them. Then, aggrieved parties can search such a
//! system for the address on which they received the unwanted packets, and so
//! determine the micronet involved." spec: history.md (formats, files, search),
//! http.md (History).
//!
//! # Reading order
//! 1. [`segment`]: segment files (frames of history records), scanning past damage.
//! 2. [`index`]: index entries, the active segment's in-memory index, index files.
//! 3. [`store`]: the writer (group commit, sealing, recovery, retention) and readers.
//! 4. [`query`]: "every mapping this address had in a window" and MAB audits.
//!
//! What this module is not: the mapping engine (`ivip::table` applies command sets
//! and says what changed) or the feed machinery (shared with QSDs and MPSes).

pub mod config;
pub mod driver;
pub mod error;
pub mod http;
pub mod index;
pub mod ingest;
pub mod query;
pub mod segment;
pub mod store;
pub mod text;
pub mod workload;

pub use error::StoreError;
pub use store::{Retention, Store, StoreConfig, StoreReader};
