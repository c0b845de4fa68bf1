//! `WireError`: every reason a byte string can be refused (STYLE practice 3).
//!
//! One variant per rule, checked in the order the spec lists them: size, magic,
//! version, type, reserved bits, length fields, counts, enum ranges, semantic
//! rules. Each `Display` text is a short phrase an operator can grep for; the
//! test vectors in `spec/vectors/` name the variant they expect.

use core::fmt;

/// Why a byte string is not a valid ivip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Fewer bytes than the fixed part of the message, or than a length field says.
    Truncated,
    /// More bytes than the format allows, or bytes left over after the message.
    TrailingBytes,
    /// The message is larger than its format's maximum (e.g. 1200-byte payloads).
    TooLong,
    /// The magic number at the start of a file is wrong.
    BadMagic,
    /// A version this implementation does not speak.
    UnsupportedVersion,
    /// A type code that is not defined where unknown types are not allowed.
    UnknownType,
    /// A reserved field or flag bit is not zero.
    ReservedNonZero,
    /// A length field disagrees with the bytes present.
    LengthMismatch,
    /// A count times an entry size overruns the bytes present (or overflows).
    CountOverrun,
    /// An address family code other than 4 or 6.
    BadFamily,
    /// A MAB prefix length outside 1..=32 (IPv4) or 1..=64 (IPv6 /64 units), or a
    /// start address with bits set below the prefix.
    BadMab,
    /// A command opcode that is not defined.
    UnknownCommand,
    /// A micronet or range of length zero, or one that runs past the end of the
    /// address space.
    BadRange,
    /// A split offset that is not strictly inside the micronet.
    BadSplit,
    /// A status code that is not defined.
    UnknownStatus,
    /// Fields that must be zero for this status are not.
    StatusFieldsNonZero,
    /// A command set or entry list with no entries where at least one is required.
    Empty,
    /// Entries that are not in strictly ascending, non-overlapping order.
    Unsorted,
    /// An entry outside its MAB.
    OutsideMab,
    /// A fragment index not below its fragment count, or a count below two.
    BadFragment,
    /// The hash stored in a file does not match its content.
    HashMismatch,
    /// A text field that is not UTF-8.
    BadText,
    /// A name (file name, URL path element) that does not follow the standard form.
    BadName,
    /// The buffer given to `emit` is not exactly `buffer_len()` bytes.
    BufferSize,
}

impl WireError {
    /// The stable, grep-able name of the variant, as used in the test vectors.
    pub const fn name(self) -> &'static str {
        match self {
            WireError::Truncated => "Truncated",
            WireError::TrailingBytes => "TrailingBytes",
            WireError::TooLong => "TooLong",
            WireError::BadMagic => "BadMagic",
            WireError::UnsupportedVersion => "UnsupportedVersion",
            WireError::UnknownType => "UnknownType",
            WireError::ReservedNonZero => "ReservedNonZero",
            WireError::LengthMismatch => "LengthMismatch",
            WireError::CountOverrun => "CountOverrun",
            WireError::BadFamily => "BadFamily",
            WireError::BadMab => "BadMab",
            WireError::UnknownCommand => "UnknownCommand",
            WireError::BadRange => "BadRange",
            WireError::BadSplit => "BadSplit",
            WireError::UnknownStatus => "UnknownStatus",
            WireError::StatusFieldsNonZero => "StatusFieldsNonZero",
            WireError::Empty => "Empty",
            WireError::Unsorted => "Unsorted",
            WireError::OutsideMab => "OutsideMab",
            WireError::BadFragment => "BadFragment",
            WireError::HashMismatch => "HashMismatch",
            WireError::BadText => "BadText",
            WireError::BadName => "BadName",
            WireError::BufferSize => "BufferSize",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            WireError::Truncated => "message truncated",
            WireError::TrailingBytes => "unexpected bytes after the message",
            WireError::TooLong => "message longer than its format allows",
            WireError::BadMagic => "bad magic number",
            WireError::UnsupportedVersion => "unsupported version",
            WireError::UnknownType => "unknown message or record type",
            WireError::ReservedNonZero => "reserved field or flag is not zero",
            WireError::LengthMismatch => "length field disagrees with the bytes present",
            WireError::CountOverrun => "entry count overruns the message",
            WireError::BadFamily => "address family is neither 4 nor 6",
            WireError::BadMab => "MAB prefix length or start is invalid",
            WireError::UnknownCommand => "unknown command opcode",
            WireError::BadRange => "range has length zero or runs past the address space",
            WireError::BadSplit => "split offset is not inside the micronet",
            WireError::UnknownStatus => "unknown status code",
            WireError::StatusFieldsNonZero => "fields unused by this status are not zero",
            WireError::Empty => "list is empty where at least one entry is required",
            WireError::Unsorted => "entries are not ascending and disjoint",
            WireError::OutsideMab => "entry lies outside its MAB",
            WireError::BadFragment => "fragment index or count is invalid",
            WireError::HashMismatch => "stored hash does not match the content",
            WireError::BadText => "text field is not UTF-8",
            WireError::BadName => "name does not follow the standard form",
            WireError::BufferSize => "emit buffer is not the message's length",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

impl std::error::Error for WireError {}

/// Parse a variant from its [`WireError::name`] (used by the vector tests).
impl core::str::FromStr for WireError {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ALL.iter().copied().find(|e| e.name() == s).ok_or(())
    }
}

const ALL: [WireError; 24] = [
    WireError::Truncated,
    WireError::TrailingBytes,
    WireError::TooLong,
    WireError::BadMagic,
    WireError::UnsupportedVersion,
    WireError::UnknownType,
    WireError::ReservedNonZero,
    WireError::LengthMismatch,
    WireError::CountOverrun,
    WireError::BadFamily,
    WireError::BadMab,
    WireError::UnknownCommand,
    WireError::BadRange,
    WireError::BadSplit,
    WireError::UnknownStatus,
    WireError::StatusFieldsNonZero,
    WireError::Empty,
    WireError::Unsorted,
    WireError::OutsideMab,
    WireError::BadFragment,
    WireError::HashMismatch,
    WireError::BadText,
    WireError::BadName,
    WireError::BufferSize,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str() {
        for e in ALL {
            assert_eq!(e.name().parse::<WireError>(), Ok(e));
            assert!(!e.to_string().is_empty());
        }
        assert!("NoSuchError".parse::<WireError>().is_err());
    }
}
