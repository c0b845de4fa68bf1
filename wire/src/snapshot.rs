//! Per-MAB snapshot files, their standard names, and the bytes of the canonical MAB
//! hash (seed s4.1.2, s4.2.1).
//!
//! spec: snapshot.md. A file is a 56-byte [`SnapshotHeader`], `count` fixed-size
//! entries (12 bytes IPv4, 32 bytes IPv6: start, length, ETR), `ext_len` bytes of
//! extension records, the 32-byte canonical SHA-256 of the MAB's table, and a
//! 64-byte Ed25519 signature over everything before it.
//!
//! This module is bytes only. It does not hash and does not verify: it exposes
//! [`Snapshot::hash_input`] (the exact bytes the canonical hash covers, §4) and
//! [`Snapshot::signed_bytes`] / [`Snapshot::signature`], and `ivip::table` does the
//! SHA-256 and Ed25519 work. [`Snapshot::new_checked`] checks the structure and every
//! entry (ascending, disjoint, inside the MAB) once; the entries are then a zero-copy
//! view over the file, so a 10^7-entry file is checked in one linear pass.
//!
//! Not here: which snapshot to fetch, from where, or what to do with it (QSD), and
//! how a table is turned into entries (`ivip::table`).

use core::fmt;

use zerocopy::network_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;
use crate::addr::{Etr, Family, MAB_LEN, Mab, unit_addr};
use crate::ints::RuasId;

/// The eight bytes that open every snapshot file. spec: snapshot.md §2.
pub const MAGIC: [u8; 8] = *b"IVIPSNAP";
/// The version this implementation writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of [`SnapshotHeader`].
pub const HEADER_LEN: usize = 56;
/// Bytes of one IPv4 entry.
pub const ENTRY_V4_LEN: usize = 12;
/// Bytes of one IPv6 entry.
pub const ENTRY_V6_LEN: usize = 32;
/// Bytes of the stored canonical hash.
pub const HASH_LEN: usize = 32;
/// Bytes of the Ed25519 signature that ends the file.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an extension record's header (kind, flags, length).
pub const EXT_HEADER_LEN: usize = 4;
/// The eight bytes that open the canonical hash input. spec: snapshot.md §4.
pub const HASH_MAGIC: [u8; 8] = *b"IVIPMABH";
/// The version byte of the canonical hash input.
pub const HASH_VERSION: u8 = 1;
/// Bytes of the canonical hash input before the entries: magic, version, MAB,
/// per-MAB sequence, count.
pub const HASH_PREFIX_LEN: usize = 8 + 1 + MAB_LEN + 8 + 8;
/// The file name suffix. spec: snapshot.md §5.
pub const NAME_SUFFIX: &str = ".ivsnap";

/// Bytes of one entry of `family`.
pub const fn entry_len(family: Family) -> usize {
    match family {
        Family::V4 => ENTRY_V4_LEN,
        Family::V6 => ENTRY_V6_LEN,
    }
}

// ---------------------------------------------------------------------------
// Fixed layouts
// ---------------------------------------------------------------------------

/// The fixed snapshot header. spec: snapshot.md §2.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SnapshotHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u8,
    /// The RUAS id in the low 7 bits; the high bit is reserved and zero.
    pub ruas: u8,
    /// Reserved flags, zero in version 1.
    pub flags: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// The MAB (spec: README.md §4), which carries the family.
    pub mab: [u8; MAB_LEN],
    /// Reserved, zero.
    pub reserved1: [u8; 2],
    /// The per-MAB sequence the snapshot reflects: every set up to and including it.
    pub mab_seq: U64,
    /// Creation time, microseconds since 1970-01-01 UTC.
    pub created_us: U64,
    /// Number of entries.
    pub count: U64,
    /// Bytes of extension records after the entries.
    pub ext_len: U32,
    /// Reserved, zero.
    pub reserved2: U32,
}

const _: () = assert!(size_of::<SnapshotHeader>() == HEADER_LEN);

/// One IPv4 entry as it lies in the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryV4 {
    /// First unit (the address).
    pub start: U32,
    /// Length in units.
    pub len: U32,
    /// The ETR, network order.
    pub etr: [u8; 4],
}

const _: () = assert!(size_of::<EntryV4>() == ENTRY_V4_LEN);

/// One IPv6 entry as it lies in the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryV6 {
    /// First unit (the upper 64 bits of the first /64).
    pub start: U64,
    /// Length in /64 units.
    pub len: U64,
    /// The ETR, network order.
    pub etr: [u8; 16],
}

const _: () = assert!(size_of::<EntryV6>() == ENTRY_V6_LEN);

/// One micronet of a snapshot: `[start, start + len)` mapped to `etr` (zero means
/// drop). Unassigned units have no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// First unit.
    pub start: u64,
    /// Length in units, at least 1.
    pub len: u64,
    /// The mapping.
    pub etr: Etr,
}

impl Entry {
    /// Encode into the first [`entry_len`]`(family)` bytes of `b`.
    ///
    /// # Errors
    /// [`WireError::BufferSize`] when `b` is shorter; [`WireError::BadFamily`] when
    /// the ETR is of the other family; [`WireError::BadRange`] when the range is empty
    /// or does not fit the family.
    pub fn emit(&self, family: Family, b: &mut [u8]) -> Result<(), WireError> {
        crate::addr::check_range(family, self.start, self.len)?;
        if self.etr.family() != family {
            return Err(WireError::BadFamily);
        }
        let b = b
            .get_mut(..entry_len(family))
            .ok_or(WireError::BufferSize)?;
        match self.etr {
            Etr::V4(a) => {
                b[..4].copy_from_slice(&(self.start as u32).to_be_bytes());
                b[4..8].copy_from_slice(&(self.len as u32).to_be_bytes());
                b[8..12].copy_from_slice(&a.octets());
            }
            Etr::V6(a) => {
                b[..8].copy_from_slice(&self.start.to_be_bytes());
                b[8..16].copy_from_slice(&self.len.to_be_bytes());
                b[16..32].copy_from_slice(&a.octets());
            }
        }
        Ok(())
    }

    /// One past the last unit.
    pub fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.len)
    }
}

impl fmt::Display for Entry {
    /// `entry start=20.0.0.5 len=1 etr=192.0.2.1` (the vectors' rendering).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entry start={} len={} etr={}",
            unit_addr(self.etr.family(), self.start),
            self.len,
            self.etr
        )
    }
}

fn entry_v4(e: &EntryV4) -> Entry {
    Entry {
        start: u64::from(e.start.get()),
        len: u64::from(e.len.get()),
        etr: Etr::V4(e.etr.into()),
    }
}

fn entry_v6(e: &EntryV6) -> Entry {
    Entry {
        start: e.start.get(),
        len: e.len.get(),
        etr: Etr::V6(e.etr.into()),
    }
}

// ---------------------------------------------------------------------------
// Canonical hash input
// ---------------------------------------------------------------------------

/// The bytes the canonical MAB hash covers before the entries (spec: snapshot.md
/// §4): `"IVIPMABH"`, version 1, the MAB (10 bytes), the per-MAB sequence (8 bytes),
/// the entry count (8 bytes). The hash is SHA-256 of this followed by every
/// micronet of the table in entry encoding, ascending.
pub fn hash_prefix(mab: &Mab, mab_seq: u64, count: u64) -> [u8; HASH_PREFIX_LEN] {
    let mut b = [0u8; HASH_PREFIX_LEN];
    b[..8].copy_from_slice(&HASH_MAGIC);
    b[8] = HASH_VERSION;
    mab.write(&mut b[9..9 + MAB_LEN]);
    b[9 + MAB_LEN..17 + MAB_LEN].copy_from_slice(&mab_seq.to_be_bytes());
    b[17 + MAB_LEN..].copy_from_slice(&count.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------
// Layout of a whole file
// ---------------------------------------------------------------------------

/// Where each part of a snapshot file of a given shape lies; for writers that fill
/// a buffer in place (a table of 10^8 micronets is not first copied into a `Vec` of
/// [`Entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The family of the entries.
    pub family: Family,
    /// Number of entries.
    pub count: u64,
    /// Bytes of extension records.
    pub ext_len: u32,
}

impl Layout {
    /// Offset of the first entry.
    pub const fn entries_offset(&self) -> usize {
        HEADER_LEN
    }

    /// Bytes of the entries, or `None` if that overflows `usize`.
    pub fn entries_len(&self) -> Option<usize> {
        usize::try_from(self.count)
            .ok()?
            .checked_mul(entry_len(self.family))
    }

    /// Offset of the extension records.
    pub fn ext_offset(&self) -> Option<usize> {
        HEADER_LEN.checked_add(self.entries_len()?)
    }

    /// Offset of the stored hash.
    pub fn hash_offset(&self) -> Option<usize> {
        self.ext_offset()?
            .checked_add(usize::try_from(self.ext_len).ok()?)
    }

    /// Offset of the signature (= the length of the signed bytes).
    pub fn signature_offset(&self) -> Option<usize> {
        self.hash_offset()?.checked_add(HASH_LEN)
    }

    /// Bytes of the whole file, or `None` if that overflows `usize`.
    pub fn buffer_len(&self) -> Option<usize> {
        self.signature_offset()?.checked_add(SIGNATURE_LEN)
    }
}

/// The fields of a snapshot that are not entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The MAB (and so the family).
    pub mab: Mab,
    /// The RUAS that made and signed the snapshot.
    pub ruas: RuasId,
    /// The per-MAB sequence the snapshot reflects.
    pub mab_seq: u64,
    /// Creation time, microseconds since the Unix epoch.
    pub created_us: u64,
}

impl SnapshotMeta {
    /// Encode the header for `count` entries and `ext_len` bytes of extensions
    /// into the first [`HEADER_LEN`] bytes of `b`.
    ///
    /// # Errors
    /// [`WireError::BufferSize`] when `b` is shorter than [`HEADER_LEN`].
    pub fn emit_header(&self, count: u64, ext_len: u32, b: &mut [u8]) -> Result<(), WireError> {
        let b = b.get_mut(..HEADER_LEN).ok_or(WireError::BufferSize)?;
        let mut mab = [0u8; MAB_LEN];
        self.mab.write(&mut mab);
        let h = SnapshotHeader {
            magic: MAGIC,
            version: VERSION,
            ruas: self.ruas.get(),
            flags: 0,
            reserved0: 0,
            mab,
            reserved1: [0; 2],
            mab_seq: U64::new(self.mab_seq),
            created_us: U64::new(self.created_us),
            count: U64::new(count),
            ext_len: U32::new(ext_len),
            reserved2: U32::new(0),
        };
        b.copy_from_slice(h.as_bytes());
        Ok(())
    }

    /// The standard file name of this snapshot (§5).
    pub fn name(&self) -> SnapshotName {
        SnapshotName {
            mab: self.mab,
            created_s: self.created_us / 1_000_000,
            mab_seq: self.mab_seq,
        }
    }
}

// ---------------------------------------------------------------------------
// Checked view
// ---------------------------------------------------------------------------

/// The entries of a checked snapshot: a zero-copy view over the file.
#[derive(Debug, Clone, Copy)]
pub enum Entries<'a> {
    /// IPv4 entries.
    V4(&'a [EntryV4]),
    /// IPv6 entries.
    V6(&'a [EntryV6]),
}

impl<'a> Entries<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            Entries::V4(e) => e.len(),
            Entries::V6(e) => e.len(),
        }
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th entry, if there is one.
    pub fn get(&self, i: usize) -> Option<Entry> {
        match self {
            Entries::V4(e) => e.get(i).map(entry_v4),
            Entries::V6(e) => e.get(i).map(entry_v6),
        }
    }

    /// The entries' bytes exactly as in the file (they are the tail of the canonical
    /// hash input).
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Entries::V4(e) => e.as_bytes(),
            Entries::V6(e) => e.as_bytes(),
        }
    }

    /// Iterate in file (ascending) order.
    pub fn iter(&self) -> EntryIter<'a> {
        EntryIter {
            entries: *self,
            at: 0,
        }
    }
}

/// Iterator over [`Entries`].
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    entries: Entries<'a>,
    at: usize,
}

impl Iterator for EntryIter<'_> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        let e = self.entries.get(self.at)?;
        self.at += 1;
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.entries.len() - self.at;
        (n, Some(n))
    }
}

impl ExactSizeIterator for EntryIter<'_> {}

/// An extension record inside a checked snapshot (§3.3). Version 1 defines no
/// kinds; a reader skips every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionView<'a> {
    /// Its kind.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its body.
    pub body: &'a [u8],
}

/// Check one extension record at the front of `b`.
fn split_ext(b: &[u8]) -> Result<(ExtensionView<'_>, usize), WireError> {
    if b.len() < EXT_HEADER_LEN {
        return Err(WireError::CountOverrun);
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b
        .get(EXT_HEADER_LEN..EXT_HEADER_LEN + len)
        .ok_or(WireError::CountOverrun)?;
    Ok((
        ExtensionView {
            kind: b[0],
            flags: b[1],
            body,
        },
        EXT_HEADER_LEN + len,
    ))
}

/// Iterator over the extension records of a checked snapshot.
#[derive(Debug, Clone)]
pub struct ExtIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ExtIter<'a> {
    type Item = ExtensionView<'a>;
    fn next(&mut self) -> Option<ExtensionView<'a>> {
        let (e, used) = split_ext(self.rest).ok()?;
        self.rest = &self.rest[used..];
        Some(e)
    }
}

/// A checked snapshot file, borrowing its bytes. After `new_checked` succeeds no
/// accessor panics, and the entries are ascending, disjoint, non-empty and inside
/// the MAB.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    bytes: &'a [u8],
    header: &'a SnapshotHeader,
    mab: Mab,
    entries: Entries<'a>,
    ext: &'a [u8],
}

impl<'a> Snapshot<'a> {
    /// Check a whole file: header, every entry, every extension record, and that the
    /// hash and signature are present with no byte after them. Does not check the
    /// hash or the signature (no cryptography here; `ivip::table` does both).
    ///
    /// # Errors
    /// In this order: [`WireError::Truncated`] (shorter than a header),
    /// [`WireError::BadMagic`], [`WireError::UnsupportedVersion`],
    /// [`WireError::ReservedNonZero`], [`WireError::BadFamily`] / [`WireError::BadMab`],
    /// [`WireError::CountOverrun`] (the count or extension length runs past the file),
    /// [`WireError::Truncated`] (the hash or signature is cut short),
    /// [`WireError::TrailingBytes`]; then per entry [`WireError::BadRange`] (length
    /// zero), [`WireError::OutsideMab`], [`WireError::Unsorted`] (not ascending or
    /// overlapping the previous one); then per extension record
    /// [`WireError::CountOverrun`].
    pub fn new_checked(bytes: &'a [u8]) -> Result<Snapshot<'a>, WireError> {
        let (header, rest) =
            SnapshotHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated)?;
        if header.magic != MAGIC {
            return Err(WireError::BadMagic);
        }
        if header.version != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if header.ruas & !RuasId::MAX != 0
            || header.flags != 0
            || header.reserved0 != 0
            || header.reserved1 != [0; 2]
            || header.reserved2.get() != 0
        {
            return Err(WireError::ReservedNonZero);
        }
        let mab = Mab::read(&header.mab)?;
        let family = mab.family();
        // spec: snapshot.md §3.1 — count × entry size must fit the bytes present,
        // computed without overflow.
        let entries_len = usize::try_from(header.count.get())
            .ok()
            .and_then(|n| n.checked_mul(entry_len(family)))
            .filter(|&n| n <= rest.len())
            .ok_or(WireError::CountOverrun)?;
        let (entry_bytes, rest) = rest.split_at(entries_len);
        let ext_len = usize::try_from(header.ext_len.get()).map_err(|_| WireError::CountOverrun)?;
        if ext_len > rest.len() {
            return Err(WireError::CountOverrun);
        }
        let (ext, rest) = rest.split_at(ext_len);
        if rest.len() < HASH_LEN + SIGNATURE_LEN {
            return Err(WireError::Truncated);
        }
        if rest.len() > HASH_LEN + SIGNATURE_LEN {
            return Err(WireError::TrailingBytes);
        }
        let entries = match family {
            Family::V4 => Entries::V4(
                <[EntryV4]>::ref_from_bytes(entry_bytes).map_err(|_| WireError::CountOverrun)?,
            ),
            Family::V6 => Entries::V6(
                <[EntryV6]>::ref_from_bytes(entry_bytes).map_err(|_| WireError::CountOverrun)?,
            ),
        };
        check_entries(&mab, &entries)?;
        let mut walk = ext;
        while !walk.is_empty() {
            let (_, used) = split_ext(walk)?;
            walk = &walk[used..];
        }
        Ok(Snapshot {
            bytes,
            header,
            mab,
            entries,
            ext,
        })
    }

    /// The header.
    pub fn header(&self) -> &'a SnapshotHeader {
        self.header
    }

    /// The MAB.
    pub fn mab(&self) -> Mab {
        self.mab
    }

    /// The family (the MAB's).
    pub fn family(&self) -> Family {
        self.mab.family()
    }

    /// The fields that are not entries.
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            mab: self.mab,
            // new_checked refused a set high bit; masking keeps this total.
            ruas: RuasId::masked(self.header.ruas),
            mab_seq: self.header.mab_seq.get(),
            created_us: self.header.created_us.get(),
        }
    }

    /// The per-MAB sequence the snapshot reflects.
    pub fn mab_seq(&self) -> u64 {
        self.header.mab_seq.get()
    }

    /// Number of entries.
    pub fn count(&self) -> u64 {
        self.header.count.get()
    }

    /// The entries, ascending.
    pub fn entries(&self) -> Entries<'a> {
        self.entries
    }

    /// The extension records (spec: snapshot.md §3.3).
    pub fn extensions(&self) -> ExtIter<'a> {
        ExtIter { rest: self.ext }
    }

    /// The stream position extension (kind [`EXT_STREAM_POSITION`]), if present and
    /// well formed; a malformed one is ignored like an unknown record.
    pub fn stream_position(&self) -> Option<StreamPosition> {
        self.extensions()
            .filter(|e| e.kind == EXT_STREAM_POSITION)
            .find_map(|e| StreamPosition::parse(e.body))
    }

    /// The canonical hash input (spec: snapshot.md §4), as two slices to hash one
    /// after the other: the prefix, then the entries exactly as they lie in the file.
    pub fn hash_input(&self) -> ([u8; HASH_PREFIX_LEN], &'a [u8]) {
        (
            hash_prefix(&self.mab, self.mab_seq(), self.count()),
            self.entries.as_bytes(),
        )
    }

    /// The canonical hash stored in the file.
    pub fn stored_sha256(&self) -> [u8; HASH_LEN] {
        let at = self.bytes.len() - SIGNATURE_LEN - HASH_LEN;
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(&self.bytes[at..at + HASH_LEN]);
        h
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes the signature covers: everything before it.
    pub fn signed_bytes(&self) -> &'a [u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }

    /// The Ed25519 signature.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&self.bytes[self.bytes.len() - SIGNATURE_LEN..]);
        s
    }
}

/// spec: snapshot.md §3.2 — every entry is non-empty, inside the MAB, and starts at
/// or after the end of the one before it.
fn check_entries(mab: &Mab, entries: &Entries<'_>) -> Result<(), WireError> {
    let lo = u128::from(mab.start());
    let hi = mab.end();
    let mut prev_end = lo;
    let mut check = |start: u64, len: u64| -> Result<(), WireError> {
        if len == 0 {
            return Err(WireError::BadRange);
        }
        let (s, e) = (u128::from(start), u128::from(start) + u128::from(len));
        if s < lo || e > hi {
            return Err(WireError::OutsideMab);
        }
        if s < prev_end {
            return Err(WireError::Unsorted);
        }
        prev_end = e;
        Ok(())
    };
    match entries {
        Entries::V4(es) => es
            .iter()
            .try_for_each(|e| check(u64::from(e.start.get()), u64::from(e.len.get()))),
        Entries::V6(es) => es
            .iter()
            .try_for_each(|e| check(e.start.get(), e.len.get())),
    }
}

// ---------------------------------------------------------------------------
// Owned representation
// ---------------------------------------------------------------------------

/// An extension record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Its kind.
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its body (at most 65535 bytes).
    pub body: Vec<u8>,
}

/// A whole snapshot, owned: for tests, vectors and small tables. Large tables are
/// written in place with [`Layout`] and [`SnapshotMeta::emit_header`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRepr {
    /// Header fields.
    pub meta: SnapshotMeta,
    /// The micronets, ascending and disjoint.
    pub entries: Vec<Entry>,
    /// Extension records.
    pub extensions: Vec<Extension>,
    /// The canonical hash (§4).
    pub sha256: [u8; HASH_LEN],
    /// The signature (all zero until signed).
    pub signature: [u8; SIGNATURE_LEN],
}

impl SnapshotRepr {
    /// Copy a checked snapshot into an owned value.
    pub fn parse(s: &Snapshot<'_>) -> SnapshotRepr {
        SnapshotRepr {
            meta: s.meta(),
            entries: s.entries().iter().collect(),
            extensions: s
                .extensions()
                .map(|e| Extension {
                    kind: e.kind,
                    flags: e.flags,
                    body: e.body.to_vec(),
                })
                .collect(),
            sha256: s.stored_sha256(),
            signature: s.signature(),
        }
    }

    fn ext_len(&self) -> usize {
        self.extensions
            .iter()
            .map(|e| EXT_HEADER_LEN + e.body.len())
            .sum()
    }

    /// The file's layout.
    ///
    /// # Errors
    /// [`WireError::TooLong`] when the extensions exceed `u32::MAX` bytes.
    pub fn layout(&self) -> Result<Layout, WireError> {
        Ok(Layout {
            family: self.meta.mab.family(),
            count: self.entries.len() as u64,
            ext_len: u32::try_from(self.ext_len()).map_err(|_| WireError::TooLong)?,
        })
    }

    /// Bytes of the whole file.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.entries.len() * entry_len(self.meta.mab.family())
            + self.ext_len()
            + HASH_LEN
            + SIGNATURE_LEN
    }

    /// The canonical hash input of the entries as they will be written: the prefix
    /// and the encoded entries.
    ///
    /// # Errors
    /// Those of [`Entry::emit`].
    pub fn hash_input(&self) -> Result<Vec<u8>, WireError> {
        let family = self.meta.mab.family();
        let n = entry_len(family);
        let mut v =
            hash_prefix(&self.meta.mab, self.meta.mab_seq, self.entries.len() as u64).to_vec();
        let at = v.len();
        v.resize(at + self.entries.len() * n, 0);
        for (e, b) in self.entries.iter().zip(v[at..].chunks_mut(n)) {
            e.emit(family, b)?;
        }
        Ok(v)
    }

    /// Encode into exactly [`SnapshotRepr::buffer_len`] bytes; the hash and the
    /// signature are copied from `self`.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] for an extension body over
    /// 65535 bytes; [`WireError::BadFamily`] / [`WireError::BadRange`] from an entry;
    /// [`WireError::OutsideMab`] and [`WireError::Unsorted`] when the entries break
    /// the rules a reader checks.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        let family = self.meta.mab.family();
        let layout = self.layout()?;
        self.meta
            .emit_header(layout.count, layout.ext_len, &mut b[..HEADER_LEN])?;
        let mut prev_end = u128::from(self.meta.mab.start());
        let n = entry_len(family);
        for (e, out) in self.entries.iter().zip(b[HEADER_LEN..].chunks_mut(n)) {
            e.emit(family, out)?;
            if !self.meta.mab.contains_range(e.start, e.len) {
                return Err(WireError::OutsideMab);
            }
            if u128::from(e.start) < prev_end {
                return Err(WireError::Unsorted);
            }
            prev_end = e.end();
        }
        let mut at = HEADER_LEN + self.entries.len() * n;
        for x in &self.extensions {
            let len = u16::try_from(x.body.len()).map_err(|_| WireError::TooLong)?;
            b[at] = x.kind;
            b[at + 1] = x.flags;
            b[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
            b[at + 4..at + 4 + x.body.len()].copy_from_slice(&x.body);
            at += EXT_HEADER_LEN + x.body.len();
        }
        b[at..at + HASH_LEN].copy_from_slice(&self.sha256);
        b[at + HASH_LEN..].copy_from_slice(&self.signature);
        Ok(())
    }

    /// Encode into a new vector.
    ///
    /// # Errors
    /// As [`SnapshotRepr::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

impl fmt::Display for SnapshotRepr {
    /// The `fields:` rendering used by the test vectors (spec: README.md §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "snapshot mab={} ruas={} mab_seq={} created_us={} count={} extensions={}",
            self.meta.mab,
            self.meta.ruas,
            self.meta.mab_seq,
            self.meta.created_us,
            self.entries.len(),
            self.extensions.len()
        )?;
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        for x in &self.extensions {
            writeln!(
                f,
                "extension kind={} flags={} body_len={}",
                x.kind,
                x.flags,
                x.body.len()
            )?;
        }
        writeln!(f, "sha256={}", crate::hex::encode(&self.sha256))
    }
}

// ---------------------------------------------------------------------------
// Standard file names
// ---------------------------------------------------------------------------

/// The standard name of a snapshot file (seed s4.1.2: "indicates at least the MAB
/// starting address and length, and the time of the snapshot"). spec: snapshot.md §5.
///
/// `v4-020.000.000.000-14-20261125T122156Z-0000000000000007.ivsnap`: family, the
/// MAB's start (IPv4: four 3-digit octets; IPv6: the upper 64 bits as four 4-digit
/// hex groups), its prefix length (2 digits), the creation time in UTC to the
/// second, and the per-MAB sequence (16 hex digits), which keeps two snapshots made
/// in the same second apart. Every field has a fixed width, so names sort by MAB,
/// then time, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotName {
    /// The MAB.
    pub mab: Mab,
    /// Creation time in whole seconds since the Unix epoch.
    pub created_s: u64,
    /// The per-MAB sequence.
    pub mab_seq: u64,
}

/// The last second a name can carry (9999-12-31T23:59:59Z).
const NAME_SECONDS_MAX: u64 = 253_402_300_799;

impl SnapshotName {
    /// `true` when a checked snapshot is the one this name stands for (same MAB,
    /// sequence, and creation second).
    pub fn matches(&self, s: &Snapshot<'_>) -> bool {
        let m = s.meta();
        m.mab == self.mab && m.mab_seq == self.mab_seq && m.created_us / 1_000_000 == self.created_s
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mab.family() {
            Family::V4 => {
                let a = (self.mab.start() as u32).to_be_bytes();
                write!(f, "v4-{:03}.{:03}.{:03}.{:03}", a[0], a[1], a[2], a[3])?;
            }
            Family::V6 => {
                let s = self.mab.start();
                write!(
                    f,
                    "v6-{:04x}.{:04x}.{:04x}.{:04x}",
                    s >> 48,
                    (s >> 32) & 0xffff,
                    (s >> 16) & 0xffff,
                    s & 0xffff
                )?;
            }
        }
        // Seconds past year 9999 are clamped so the name keeps its width; such a
        // time cannot come from a working clock.
        let secs = self.created_s.min(NAME_SECONDS_MAX);
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(
            f,
            "-{:02}-{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z-{:016x}{NAME_SUFFIX}",
            self.mab.prefix_len(),
            rem / 3600,
            (rem / 60) % 60,
            rem % 60,
            self.mab_seq
        )
    }
}

fn digits(s: &str, radix: u32) -> Result<u64, WireError> {
    let ok = match radix {
        10 => s.bytes().all(|c| c.is_ascii_digit()),
        _ => s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
    };
    if s.is_empty() || !ok {
        return Err(WireError::BadName);
    }
    u64::from_str_radix(s, radix).map_err(|_| WireError::BadName)
}

impl core::str::FromStr for SnapshotName {
    type Err = WireError;

    /// Parse the exact form written by `Display`; anything else (other widths,
    /// upper-case hex, an impossible date, a start not aligned to the prefix) is
    /// [`WireError::BadName`].
    fn from_str(s: &str) -> Result<SnapshotName, WireError> {
        // Every valid name is ASCII; the fixed offsets below are byte offsets.
        if !s.is_ascii() {
            return Err(WireError::BadName);
        }
        let body = s.strip_suffix(NAME_SUFFIX).ok_or(WireError::BadName)?;
        let parts: Vec<&str> = body.split('-').collect();
        let [fam, start, plen, time, seq] = parts[..] else {
            return Err(WireError::BadName);
        };
        let groups: Vec<&str> = start.split('.').collect();
        let (family, unit) = match (fam, groups.as_slice()) {
            ("v4", [a, b, c, d]) => {
                let mut unit = 0u64;
                for g in [a, b, c, d] {
                    let v = if g.len() == 3 {
                        digits(g, 10)?
                    } else {
                        return Err(WireError::BadName);
                    };
                    if v > 255 {
                        return Err(WireError::BadName);
                    }
                    unit = (unit << 8) | v;
                }
                (Family::V4, unit)
            }
            ("v6", [a, b, c, d]) => {
                let mut unit = 0u64;
                for g in [a, b, c, d] {
                    if g.len() != 4 {
                        return Err(WireError::BadName);
                    }
                    unit = (unit << 16) | digits(g, 16)?;
                }
                (Family::V6, unit)
            }
            _ => return Err(WireError::BadName),
        };
        if plen.len() != 2 {
            return Err(WireError::BadName);
        }
        let plen = u8::try_from(digits(plen, 10)?).map_err(|_| WireError::BadName)?;
        let mab = Mab::new(family, unit, plen).map_err(|_| WireError::BadName)?;
        // YYYYMMDDTHHMMSSZ
        let t = time.as_bytes();
        if t.len() != 16 || t[8] != b'T' || t[15] != b'Z' {
            return Err(WireError::BadName);
        }
        let num = |r: core::ops::Range<usize>| digits(time.get(r).ok_or(WireError::BadName)?, 10);
        let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || se > 59 {
            return Err(WireError::BadName);
        }
        let days = days_from_civil(y as i64, mo as u32, d as u32);
        if d == 0 || civil_from_days(days) != (y as i64, mo as u32, d as u32) {
            return Err(WireError::BadName);
        }
        let created_s = days as u64 * 86_400 + h * 3600 + mi * 60 + se;
        if seq.len() != 16 {
            return Err(WireError::BadName);
        }
        let mab_seq = digits(seq, 16)?;
        Ok(SnapshotName {
            mab,
            created_s,
            mab_seq,
        })
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (H. Hinnant's `days_from_civil`).
/// Out-of-range days give a date that [`civil_from_days`] does not map back.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sample() -> SnapshotRepr {
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        SnapshotRepr {
            meta: SnapshotMeta {
                mab,
                ruas: RuasId::new(3).unwrap(),
                mab_seq: 7,
                created_us: 1_764_073_316_000_000,
            },
            entries: vec![
                Entry {
                    start: 0x1400_0005,
                    len: 1,
                    etr: Etr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                },
                Entry {
                    start: 0x1400_0006,
                    len: 10,
                    etr: Etr::V4(Ipv4Addr::UNSPECIFIED),
                },
            ],
            extensions: vec![],
            sha256: [1; 32],
            signature: [2; 64],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let v = r.to_vec().unwrap();
        let s = Snapshot::new_checked(&v).unwrap();
        assert_eq!(SnapshotRepr::parse(&s), r);
        assert_eq!(s.signed_bytes().len(), v.len() - SIGNATURE_LEN);
        let (prefix, entries) = s.hash_input();
        let mut joined = prefix.to_vec();
        joined.extend_from_slice(entries);
        assert_eq!(joined, r.hash_input().unwrap());
        let layout = r.layout().unwrap();
        assert_eq!(layout.buffer_len(), Some(v.len()));
        assert_eq!(layout.hash_offset(), Some(v.len() - 96));
    }

    #[test]
    fn emit_refuses_what_a_reader_refuses() {
        let mut r = sample();
        r.entries.swap(0, 1);
        assert_eq!(r.to_vec(), Err(WireError::Unsorted));
        let mut r = sample();
        r.entries[0].start = 0x1300_0000;
        assert_eq!(r.to_vec(), Err(WireError::OutsideMab));
    }

    #[test]
    fn names_round_trip_and_sort() {
        let m = sample().meta;
        let n = m.name();
        assert_eq!(
            n.to_string(),
            "v4-020.000.000.000-14-20251125T122156Z-0000000000000007.ivsnap"
        );
        assert_eq!(n.to_string().parse::<SnapshotName>(), Ok(n));
        let m6 = SnapshotMeta {
            mab: "2001:db8::/32".parse().unwrap(),
            ..m
        };
        let n6 = m6.name();
        assert_eq!(
            n6.to_string(),
            "v6-2001.0db8.0000.0000-32-20251125T122156Z-0000000000000007.ivsnap"
        );
        assert_eq!(n6.to_string().parse::<SnapshotName>(), Ok(n6));
        let later = SnapshotName { mab_seq: 16, ..n };
        assert!(n.to_string() < later.to_string());
    }

    #[test]
    fn dates_are_exact() {
        for days in [-1, 0, 59, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert!(
            "v4-020.000.000.000-14-20250229T000000Z-0000000000000007.ivsnap"
                .parse::<SnapshotName>()
                .is_err()
        );
        assert!(
            "v4-020.000.000.000-14-20240229T000000Z-0000000000000007.ivsnap"
                .parse::<SnapshotName>()
                .is_ok()
        );
    }
}

// ---------------------------------------------------------------------------
// Extension kind 1: stream position
// ---------------------------------------------------------------------------

/// Extension kind: where the RUAS's payload stream stood when the snapshot was
/// taken (spec: snapshot.md §3.3.1).
pub const EXT_STREAM_POSITION: u8 = 1;

/// Every command set of this MAB with a per-MAB sequence above the snapshot's is
/// carried by a payload of this RUAS at or after `(epoch, seq)`. A QSD that loads
/// the snapshot after its feed started fetches the payloads from here up to the
/// first one it received from an MPS, so no set falls between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The RUAS's epoch.
    pub epoch: u32,
    /// The first payload sequence that may carry a later set.
    pub seq: u32,
}

impl StreamPosition {
    /// Bytes of the body.
    pub const BODY_LEN: usize = 8;

    /// Decode a body of exactly 8 bytes.
    pub fn parse(b: &[u8]) -> Option<StreamPosition> {
        if b.len() != Self::BODY_LEN {
            return None;
        }
        Some(StreamPosition {
            epoch: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// The whole extension record (header and body).
    pub fn to_record(&self) -> [u8; EXT_HEADER_LEN + Self::BODY_LEN] {
        let mut r = [0u8; EXT_HEADER_LEN + Self::BODY_LEN];
        r[0] = EXT_STREAM_POSITION;
        r[3] = Self::BODY_LEN as u8;
        r[4..8].copy_from_slice(&self.epoch.to_be_bytes());
        r[8..12].copy_from_slice(&self.seq.to_be_bytes());
        r
    }
}

#[cfg(test)]
mod stream_position_tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let p = StreamPosition {
            epoch: 3,
            seq: 0xfffe_0001,
        };
        let r = p.to_record();
        let (e, n) = split_ext(&r).unwrap();
        assert_eq!((e.kind, n), (EXT_STREAM_POSITION, r.len()));
        assert_eq!(StreamPosition::parse(e.body), Some(p));
        assert_eq!(StreamPosition::parse(&e.body[..7]), None);
    }
}
