//! The mapping database: one engine for the RUAS master copy, every QSD, and
//! snapshots (seed s3.1, s3.2, s3.4, s3.7, s4.1.2, s4.3; spec: commands.md,
//! snapshot.md).
//!
//! # What it is
//! A sans-IO data structure. Per MAB, a [`Table`] holds every unit as part of exactly
//! one micronet `(start, len, ETR)` (the ETR may be zero: drop) or as unassigned. It
//! applies command sets in order and as one ([`Table::apply`]; a failing set changes
//! nothing and names the failing command, [`ApplyError`]), returns the exact ranges
//! whose mapping changed ([`Change`]), answers look-ups one at a time or in batches,
//! iterates ranges, computes the canonical hash at its per-MAB sequence, and writes
//! and loads signed snapshot files. A [`Database`] holds many MABs behind one
//! lock-free [`DbReader`].
//!
//! Not here: sequencing and buffering of sets (QSD, RUAS), who may change what
//! (UAS), whether an ETR is an acceptable address (UAS), files and sockets.
//!
//! # Concurrency: one writer, lock-free readers
//! The writer applies sets to a working copy and calls [`Table::publish`] to make
//! everything applied so far visible at once (`arc_swap` store of a new version;
//! STYLE's arc-swap rule). Readers load the current version once per query or batch
//! ([`TableReader::load`]) and answer from it; they never block and never see part
//! of a set, because publishing happens only between sets. The writer may apply many
//! sets per publish.
//!
//! # Representation, and the memory budget
//! A MAB is stored as **runs** tiling it: each run is a start and a 4-byte value,
//! either a micronet's ETR or "unassigned"; a run ends where the next begins. A
//! micronet therefore costs one run, plus one more for an unassigned gap after it.
//! - IPv4: start 4 bytes + ETR 4 bytes = 8 bytes per run. Unassigned is stored as
//!   the ETR 255.255.255.255, which therefore cannot be a mapping
//!   ([`Reason::ReservedEtr`]; it is the limited-broadcast address, never an ETR).
//! - IPv6: start 8 bytes + a 4-byte index into a per-table ETR dictionary (each
//!   distinct ETR stored once; `dict.rs`) = 12 bytes per run.
//!
//! Runs live in leaves: a head line naming where each of up to 16 lines starts,
//! then 64-byte lines of runs side by side (8 IPv4 runs or 5 IPv6 runs per line),
//! each leaf allocated at its exact line count. Inner nodes hold up to 256 children
//! with a head line of every 16th key. Per IPv4 micronet that is 8 bytes, plus 8 for
//! each unassigned gap, plus leaf heads, the unfilled part of each leaf's last line
//! and the inner nodes (about 1 byte): about 9–10 bytes when gaps are rare (users'
//! micronets tile their UABs), under the 12-byte budget while fewer than about a
//! quarter of micronets are followed by a gap. IPv6: about 16 bytes plus the
//! dictionary (the budget is 24). Nodes come from a process-wide arena of 2 MiB
//! huge-page chunks (`arena.rs`). `cargo bench --bench table` measures all this.
//!
//! # Copy on write
//! Leaves and inner nodes are immutable once published; the writer copies a node
//! (and the path to it) the first time it changes after a publish, and edits fresh
//! copies in place until the next publish. Replaced nodes are freed when no version
//! that can reach them is held (`tree.rs`). No per-node reference counts: a copy is
//! a plain memory copy.
//!
//! # Look-ups
//! A look-up descends inner nodes (head line, then one block of 16 keys and its 16
//! child pointers) to a leaf (head line, then one line of runs), so it reads two
//! uncached lines at the bottom and a few mostly cached ones above. The batched
//! look-up ([`TableView::lookup_batch`], [`DbReader::lookup_batch`]) descends 32 at
//! a time, level by level, each pass prefetching the lines the next pass reads, so
//! their memory latencies overlap (`node.rs`). [`Table::apply_many`] uses the same
//! descent to fetch the pages of the next sets before applying them.
//!
//! # Reading order
//! [`mab`] (the table and its readers), `stage.rs` (command semantics), `tree.rs`
//! (copy on write, reclamation), `node.rs` (layout, look-ups; the `unsafe`),
//! `dict.rs`, `snapshot.rs` (hash and files), [`db`].

#[allow(unsafe_code)] // audited: raw page memory, see the module docs
mod arena;
#[allow(unsafe_code)] // audited: raw page memory, see the module docs
mod dict;
mod error;
#[allow(unsafe_code)] // audited: raw page memory, see the module docs
mod node;
mod snapshot;
mod stage;
#[allow(unsafe_code)] // audited: raw page memory, see the module docs
mod tree;

pub mod db;
#[allow(unsafe_code)] // one audited block: borrowing a published version
pub mod mab;

pub use db::{Database, DbReader};
pub use error::{ApplyError, BuildError, DbError, Reason, SnapshotError};
pub use mab::{RangeIter, Table, TableReader, TableView};

use ivip_wire::Etr;

/// Bytes of node memory the process has mapped for all tables (for metrics; freed
/// nodes are reused, not returned to the system).
pub fn node_memory_mapped_bytes() -> usize {
    arena::mapped_bytes()
}

/// Bytes of node memory in use by all tables and the versions readers still hold.
pub fn node_memory_in_use_bytes() -> usize {
    arena::in_use_bytes()
}

/// A micronet: `len` units from `start`, mapped to `etr` (zero: drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Micronet {
    /// First unit.
    pub start: u64,
    /// Length in units.
    pub len: u64,
    /// The mapping.
    pub etr: Etr,
}

/// The answer to a look-up of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mapping {
    /// The unit is in this micronet.
    Micronet(Micronet),
    /// The unit is unassigned; `[start, start + len)` is the unassigned range around
    /// it (bounded by micronets or the MAB's ends).
    Unassigned {
        /// First unassigned unit of the range.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// The unit is outside the MAB (for a [`DbReader`]: outside every MAB held).
    #[default]
    OutsideMab,
}

/// One range whose mapping changed, in its final state (spec: commands.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change {
    /// First unit.
    pub start: u64,
    /// Length in units.
    pub len: u64,
    /// `Some(etr)`: the range is now exactly one micronet mapped to `etr`. `None`:
    /// the range is now unassigned.
    pub etr: Option<Etr>,
}

/// The changes a command set made: ascending and disjoint; each `Some` entry is a
/// whole micronet of the new state, and adjacent unassigned ranges are coalesced.
pub type Changes = Vec<Change>;

#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
