//! `ivip-wire`: every byte format of ivip, and nothing else.
//!
//! No I/O, no clock, no cryptography: bytes in, typed values or a [`WireError`]
//! out. `spec/` in the repository is the normative text for each format; each
//! module cites the document it implements.
//!
//! # The contract (STYLE practices 1 and 4)
//!
//! * Each format has a *checked view* (`Payload::new_checked`, `Snapshot::new_checked`,
//!   ...) that validates the bytes once; after it succeeds no accessor panics and
//!   iterating its entries cannot fail.
//! * Each format has an owned *representation* (`PayloadRepr`, ...) with
//!   `buffer_len()` and `emit(&self, &mut [u8])`. `emit` into a buffer of exactly
//!   `buffer_len()` bytes never panics; it returns an error only when the value
//!   itself breaks a rule of the format (an ETR of the wrong family, too many
//!   commands), never for a valid value.
//! * A function named `new_checked` or `parse` takes the *whole* input and refuses
//!   trailing bytes; a function named `split_*` returns the value and the rest.
//! * No parser panics on any input; property tests and fuzz targets check it.
//!
//! # Reading order
//! [`addr`] (families, MABs, ETRs, units), [`ints`] (identities, serial numbers),
//! [`command`], then one module per format: [`payload`], [`query`], [`snapshot`],
//! [`sumuc`], [`control`], [`mps`], [`dtls`] (the record headers the link layer routes by).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod addr;
pub mod command;
pub mod control;
pub mod dtls;
mod error;
pub mod frame;
pub mod hex;
pub mod history;
pub mod ints;
pub mod mps;
pub mod payload;
pub mod query;
pub mod snapshot;
pub mod sumuc;
pub mod wal;

pub use addr::{Etr, Family, Mab};
pub use command::Command;
pub use error::WireError;
pub use ints::{PayloadId, RuasId, Seq};
