//! Why a command set or a snapshot was refused (spec: commands.md §4, snapshot.md).

use core::fmt;

use ivip_wire::addr::unit_addr;
use ivip_wire::{Command, Etr, Family, Mab, WireError};

use crate::sign::SignError;

/// Why one command of a set cannot be applied. The table is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The command's ETR is of the other family than the MAB.
    WrongFamily,
    /// The command's range has length zero.
    EmptyRange,
    /// A split offset not strictly inside the micronet (`1 <= at < len`).
    BadSplitOffset,
    /// The range is not inside the MAB.
    OutsideMab,
    /// The IPv4 ETR 255.255.255.255 (limited broadcast) cannot be a mapping; the
    /// engine uses it internally for unassigned space.
    ReservedEtr,
    /// No micronet starts at the command's start (the units there are unassigned or
    /// inside a micronet that starts earlier).
    NoSuchMicronet,
    /// A micronet starts there but has another length.
    LengthMismatch {
        /// Its actual length.
        actual: u64,
    },
    /// Split or join of a micronet that is not mapped to zero (seed s3.7).
    NotZero {
        /// The micronet's start.
        start: u64,
        /// Its ETR.
        etr: Etr,
    },
    /// Define over a micronet that is not mapped to zero.
    Overlap {
        /// That micronet's start.
        start: u64,
        /// Its length.
        len: u64,
        /// Its ETR.
        etr: Etr,
    },
    /// Join over unassigned units.
    JoinGap {
        /// First unassigned unit in the range.
        start: u64,
    },
    /// Join whose range ends inside a micronet.
    JoinEndsInside {
        /// That micronet's start.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// Join of a range that is a single micronet.
    JoinSingle,
    /// Building a table: a micronet starts before the end of the one before it.
    Unsorted,
}

impl Reason {
    /// A stable token for the reason (the `reason` of a 409 `invalid_commands`
    /// answer at a RUAS or UAS; spec: commands.md §4, http.md, uas-api.md).
    pub const fn code(&self) -> &'static str {
        match self {
            Reason::WrongFamily => "wrong_family",
            Reason::EmptyRange => "empty_range",
            Reason::BadSplitOffset => "bad_split_offset",
            Reason::OutsideMab => "outside_mab",
            Reason::ReservedEtr => "reserved_etr",
            Reason::NoSuchMicronet => "no_such_micronet",
            Reason::LengthMismatch { .. } => "length_mismatch",
            Reason::NotZero { .. } => "not_zero",
            Reason::Overlap { .. } => "overlap",
            Reason::JoinGap { .. } => "join_gap",
            Reason::JoinEndsInside { .. } => "join_ends_inside",
            Reason::JoinSingle => "join_single",
            Reason::Unsorted => "unsorted",
        }
    }
}

/// A command set that could not be applied: which command, and why. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyError {
    /// Index of the failing command in the set, from 0.
    pub index: usize,
    /// The failing command.
    pub command: Command,
    /// The MAB's family (for rendering).
    pub family: Family,
    /// Why it failed.
    pub reason: Reason,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = self.family;
        let a = |u: u64| unit_addr(fam, u);
        write!(
            f,
            "command {} ({}): ",
            self.index,
            self.command.display(fam)
        )?;
        match self.reason {
            Reason::WrongFamily => write!(f, "the ETR is not {fam}, the MAB's family"),
            Reason::EmptyRange => f.write_str("the range has length zero"),
            Reason::BadSplitOffset => {
                f.write_str("the split offset must be at least 1 and below the length")
            }
            Reason::OutsideMab => f.write_str("the range is not inside the MAB"),
            Reason::ReservedEtr => {
                f.write_str("255.255.255.255 cannot be an ETR; use 0.0.0.0 to drop")
            }
            Reason::NoSuchMicronet => {
                f.write_str("no micronet starts there; the start must be a micronet's first unit")
            }
            Reason::LengthMismatch { actual } => write!(
                f,
                "the micronet there is {actual} units long; give its exact length"
            ),
            Reason::NotZero { start, etr } => write!(
                f,
                "the micronet at {} is mapped to {etr}; set its ETR to zero first (seed s3.7)",
                a(start)
            ),
            Reason::Overlap { start, len, etr } => write!(
                f,
                "overlaps the micronet {}+{len} mapped to {etr}; zero or delete it first",
                a(start)
            ),
            Reason::JoinGap { start } => write!(
                f,
                "the range includes unassigned units from {}; join only covers micronets",
                a(start)
            ),
            Reason::JoinEndsInside { start, len } => write!(
                f,
                "the range ends inside the micronet {}+{len}; it must end on a micronet boundary",
                a(start)
            ),
            Reason::JoinSingle => {
                f.write_str("the range is a single micronet; join needs two or more")
            }
            Reason::Unsorted => f.write_str("micronets must be ascending and disjoint"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// A micronet that cannot go into a table being built ([`super::Table::from_micronets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildError {
    /// Its position in the input, from 0.
    pub index: u64,
    /// The micronet.
    pub micronet: super::Micronet,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.micronet;
        write!(
            f,
            "micronet {} ({}+{} -> {}): ",
            self.index,
            unit_addr(m.etr.family(), m.start),
            m.len,
            m.etr
        )?;
        match self.reason {
            Reason::EmptyRange => f.write_str("length zero"),
            Reason::WrongFamily => f.write_str("ETR of the other family"),
            Reason::ReservedEtr => f.write_str("255.255.255.255 cannot be an ETR"),
            Reason::OutsideMab => f.write_str("not inside the MAB"),
            _ => f.write_str("starts before the end of the micronet before it"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a snapshot could not be loaded. Each variant says what was wrong with the
/// file; the table that was to receive it is not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes are not a well-formed snapshot (truncated, corrupted structure,
    /// entries out of order, ...).
    Malformed(WireError),
    /// The signature does not verify with the RUAS key given, or the key is bad.
    Signature(SignError),
    /// The stored hash is not the canonical hash of the entries.
    HashMismatch,
    /// The snapshot is of another MAB than the one asked for.
    WrongMab {
        /// The MAB asked for.
        expected: Mab,
        /// The MAB in the file.
        found: Mab,
    },
    /// An entry maps to the reserved IPv4 ETR 255.255.255.255.
    ReservedEtr {
        /// The entry's start.
        start: u64,
    },
    /// The snapshot was made by another RUAS than the one expected.
    WrongRuas {
        /// The RUAS id asked for.
        expected: u8,
        /// The RUAS id in the file.
        found: u8,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Malformed(e) => write!(f, "snapshot is malformed: {e} ({})", e.name()),
            SnapshotError::Signature(e) => write!(
                f,
                "snapshot signature refused: {e}; check the RUAS public key, or fetch the file again"
            ),
            SnapshotError::HashMismatch => f.write_str(
                "snapshot hash does not match its entries; the file is corrupt, fetch it again",
            ),
            SnapshotError::WrongMab { expected, found } => {
                write!(f, "snapshot is of MAB {found}, expected {expected}")
            }
            SnapshotError::ReservedEtr { start } => write!(
                f,
                "snapshot entry at unit {start} maps to 255.255.255.255, which cannot be an ETR"
            ),
            SnapshotError::WrongRuas { expected, found } => {
                write!(
                    f,
                    "snapshot was made by RUAS {found}, expected RUAS {expected}"
                )
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<WireError> for SnapshotError {
    fn from(e: WireError) -> SnapshotError {
        SnapshotError::Malformed(e)
    }
}

/// Why a database operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbError {
    /// No table for this MAB.
    NoSuchMab(Mab),
    /// The new MAB overlaps one already held.
    MabOverlap {
        /// The MAB being added.
        new: Mab,
        /// The MAB it overlaps.
        existing: Mab,
    },
    /// The command set failed.
    Apply(ApplyError),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::NoSuchMab(m) => write!(f, "no table for MAB {m}"),
            DbError::MabOverlap { new, existing } => {
                write!(
                    f,
                    "MAB {new} overlaps MAB {existing}, which is already held"
                )
            }
            DbError::Apply(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<ApplyError> for DbError {
    fn from(e: ApplyError) -> DbError {
        DbError::Apply(e)
    }
}
