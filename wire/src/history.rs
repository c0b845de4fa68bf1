//! The history recorder's on-disk formats: segment records and index files (seed
//! s2.1: "a system which monitors all mapping changes and keeps a lasting record of
//! them").
//!
//! spec: history.md. Two formats:
//!
//! * **Records** (§3), the bodies of the frames in a history segment (log.md, kind
//!   3). A [`PayloadRecord`] holds one verified update payload exactly as signed,
//!   the time it was received, and what the recorder did with it: for every command
//!   set it applied, the ranges that changed, in their final state. A
//!   [`BaselineRecord`] holds (a part of) a MAB's layout loaded from a signed
//!   snapshot. A [`GapRecord`] says what the recorder knows it missed.
//! * **Index files** (§4): fixed-size checksummed blocks of 36-byte
//!   [`IndexEntry`]s sorted by (MAB, length class, start, segment, offset), a
//!   header and a meta section (MAB table, per-segment time ranges, block fences)
//!   that a reader keeps in memory, so a search reads only the blocks it needs.
//!
//! No I/O here: checked parses and emits. Nothing panics on any input.

use core::fmt;

use zerocopy::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;
use crate::addr::{Etr, Family, MAB_LEN, Mab, check_range, read_unit, unit_addr, write_unit};
use crate::frame::crc32c_update;
use crate::ints::{PayloadId, RuasId, Seq};
use crate::payload::{HEADER_LEN, Payload, PayloadRepr, RecordView, SIGNATURE_LEN};

// ===========================================================================
// Records (spec: history.md §3)
// ===========================================================================

/// Record type: a verified update payload and what it did (§3.1).
pub const RECORD_PAYLOAD: u8 = 1;
/// Record type: part of a MAB layout loaded from a snapshot (§3.2).
pub const RECORD_BASELINE: u8 = 2;
/// Record type: something the recorder knows it missed (§3.3).
pub const RECORD_GAP: u8 = 3;

/// Bytes of the fixed part of a payload record.
pub const PAYLOAD_RECORD_FIXED: usize = 12;
/// Bytes of the fixed part of a baseline record.
pub const BASELINE_RECORD_FIXED: usize = 88;
/// The smallest update payload: header and signature, no records.
pub const PAYLOAD_LEN_MIN: usize = HEADER_LEN + SIGNATURE_LEN;

/// Item kind: a command set of the payload and its effect.
pub const ITEM_SET: u8 = 1;
/// Item kind: a snapshot announcement of the payload and how it compared.
pub const ITEM_SNAPSHOT: u8 = 2;

/// Bytes of a set item's fixed part.
const SET_ITEM_FIXED: usize = 8;
/// Bytes of a snapshot item.
const SNAPSHOT_ITEM_LEN: usize = 4;
/// Bytes of one fragment reference.
const FRAGMENT_REF_LEN: usize = 9;

/// What became of a command set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetOutcome {
    /// Applied to the layout; the ranges say what changed.
    Applied,
    /// Refused by the layout (invalid against it): nothing changed. A signed set the
    /// layout refuses means the recorder's copy diverged; it is kept as evidence.
    Refused,
}

impl SetOutcome {
    const fn code(self) -> u8 {
        match self {
            SetOutcome::Applied => 0,
            SetOutcome::Refused => 1,
        }
    }

    const fn from_code(c: u8) -> Result<SetOutcome, WireError> {
        match c {
            0 => Ok(SetOutcome::Applied),
            1 => Ok(SetOutcome::Refused),
            _ => Err(WireError::UnknownStatus),
        }
    }

    /// `applied` or `refused`.
    pub const fn name(self) -> &'static str {
        match self {
            SetOutcome::Applied => "applied",
            SetOutcome::Refused => "refused",
        }
    }
}

/// How an announced snapshot hash compared with the recorder's own layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotCheck {
    /// Not compared (the recorder's layout was not at that per-MAB sequence).
    NotChecked,
    /// The recorder's layout at that sequence has the announced hash.
    Matched,
    /// It does not: the recorder's copy diverged.
    Differed,
}

impl SnapshotCheck {
    const fn code(self) -> u8 {
        match self {
            SnapshotCheck::NotChecked => 0,
            SnapshotCheck::Matched => 1,
            SnapshotCheck::Differed => 2,
        }
    }

    const fn from_code(c: u8) -> Result<SnapshotCheck, WireError> {
        match c {
            0 => Ok(SnapshotCheck::NotChecked),
            1 => Ok(SnapshotCheck::Matched),
            2 => Ok(SnapshotCheck::Differed),
            _ => Err(WireError::UnknownStatus),
        }
    }

    /// `not-checked`, `matched` or `differed`.
    pub const fn name(self) -> &'static str {
        match self {
            SnapshotCheck::NotChecked => "not-checked",
            SnapshotCheck::Matched => "matched",
            SnapshotCheck::Differed => "differed",
        }
    }
}

/// A range whose mapping changed, in its final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangedRange {
    /// First unit.
    pub start: u64,
    /// Length in units (at least 1).
    pub len: u64,
    /// The micronet's ETR (zero = drop), or `None`: the units are now unassigned.
    pub etr: Option<Etr>,
}

impl ChangedRange {
    /// Bytes on the wire for `family`.
    pub const fn buffer_len(&self, family: Family) -> usize {
        1 + 2 * family.unit_len()
            + match self.etr {
                Some(_) => family.etr_len(),
                None => 0,
            }
    }

    /// One past the last unit.
    pub fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.len)
    }

    /// `true` when the range holds `unit`.
    pub fn contains(&self, unit: u64) -> bool {
        unit >= self.start && u128::from(unit) < self.end()
    }
}

/// Where another frame of the same history is: a segment number and the byte
/// offset of its frame in that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The segment number.
    pub segment: u32,
    /// Byte offset of the frame in the segment file.
    pub offset: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// Where one of the other fragments of a fragmented set was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentRef {
    /// The fragment's index in its set.
    pub index: u8,
    /// The payload record that carried it.
    pub at: Location,
}

/// A command set of the payload (a type-1 record, or a fragmented set that a
/// type-2 record of this payload completed) and its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetItem {
    /// Applied or refused.
    pub outcome: SetOutcome,
    /// Index of the record in the payload (0-based).
    pub record_index: u16,
    /// For a fragmented set: where the other fragments were recorded, ascending by
    /// index (count − 1 of them). Empty for a whole set.
    pub fragments: Vec<FragmentRef>,
    /// The ranges whose mapping changed, ascending and disjoint, in their final
    /// state. Empty when refused.
    pub ranges: Vec<ChangedRange>,
}

/// A snapshot announcement of the payload and how it compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotItem {
    /// Index of the record in the payload.
    pub record_index: u16,
    /// How it compared with the recorder's layout.
    pub check: SnapshotCheck,
}

/// One derived item of a payload record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A command set and its effect.
    Set(SetItem),
    /// A snapshot announcement and its check.
    Snapshot(SnapshotItem),
}

/// A verified update payload as recorded (§3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRecord {
    /// When the recorder received it, µs since the Unix epoch.
    pub recv_us: u64,
    /// The payload, exactly as the RUAS signed it.
    pub payload: Vec<u8>,
    /// What the recorder did with its records, in record order.
    pub items: Vec<Item>,
}

/// Part of a MAB's layout loaded from a signed snapshot (§3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRecord {
    /// The RUAS that signed the snapshot.
    pub ruas: RuasId,
    /// The MAB.
    pub mab: Mab,
    /// The per-MAB sequence the snapshot reflects.
    pub mab_seq: u64,
    /// When the RUAS took the snapshot, µs since the Unix epoch.
    pub created_us: u64,
    /// When the recorder loaded it.
    pub recv_us: u64,
    /// The snapshot's canonical hash (snapshot.md §4).
    pub sha256: [u8; 32],
    /// This part's number, `part < part_count`.
    pub part: u32,
    /// How many parts the layout was written in (at least 1).
    pub part_count: u32,
    /// The micronets of this part, ascending and disjoint: `(start, len, etr)`.
    pub micronets: Vec<(u64, u64, Etr)>,
}

/// What the recorder knows it missed (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapRecord {
    /// Payloads `first..=last` of one RUAS epoch could not be obtained.
    Payloads {
        /// When the recorder gave up on them.
        recv_us: u64,
        /// The RUAS.
        ruas: RuasId,
        /// The epoch.
        epoch: u32,
        /// First missing sequence number.
        first: Seq,
        /// Last missing sequence number (serially at or after `first`).
        last: Seq,
    },
    /// Command sets `first..=last` of a MAB were never applied; the layout was
    /// reloaded from a snapshot at `last` (a baseline follows).
    MabSets {
        /// When the recorder noticed.
        recv_us: u64,
        /// The MAB.
        mab: Mab,
        /// First missing per-MAB sequence.
        first: u64,
        /// Last missing per-MAB sequence (`>= first`).
        last: u64,
    },
}

impl GapRecord {
    /// When the recorder wrote it.
    pub const fn recv_us(&self) -> u64 {
        match *self {
            GapRecord::Payloads { recv_us, .. } | GapRecord::MabSets { recv_us, .. } => recv_us,
        }
    }
}

/// One history record: the body of one frame of a history segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRecord {
    /// Type 1.
    Payload(PayloadRecord),
    /// Type 2.
    Baseline(BaselineRecord),
    /// Type 3.
    Gap(GapRecord),
}

/// What a record of the payload is, as far as items need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordContext {
    /// A whole command set (type 1).
    Set {
        /// Its MAB.
        mab: Mab,
        /// Its per-MAB sequence.
        mab_seq: u64,
    },
    /// A fragment (type 2).
    Fragment {
        /// Its MAB.
        mab: Mab,
        /// Its per-MAB sequence.
        mab_seq: u64,
        /// Its index.
        index: u8,
        /// The fragment count of its set.
        count: u8,
    },
    /// A snapshot announcement (type 3).
    Snapshot(crate::payload::SnapshotAnnouncement),
    /// Anything else (heartbeat, unknown type).
    Other,
}

impl RecordContext {
    /// The MAB and per-MAB sequence of a set or fragment record.
    pub const fn set(&self) -> Option<(Mab, u64)> {
        match *self {
            RecordContext::Set { mab, mab_seq } | RecordContext::Fragment { mab, mab_seq, .. } => {
                Some((mab, mab_seq))
            }
            _ => None,
        }
    }
}

/// The context of every record of a checked payload, in order.
pub fn record_contexts(p: &Payload<'_>) -> Vec<RecordContext> {
    p.records()
        .map(|r| match r {
            RecordView::MabUpdate { mab, mab_seq, .. } => RecordContext::Set { mab, mab_seq },
            RecordView::Fragment {
                mab,
                mab_seq,
                index,
                count,
                ..
            } => RecordContext::Fragment {
                mab,
                mab_seq,
                index,
                count,
            },
            RecordView::Snapshot(s) => RecordContext::Snapshot(s),
            _ => RecordContext::Other,
        })
        .collect()
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A byte reader that never panics: every take is checked.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.take(2).map(be16)
    }
}

/// Check a list of ranges: each valid in the family, inside the MAB, ascending and
/// disjoint.
fn check_ranges<I: Iterator<Item = (u64, u64)>>(mab: &Mab, ranges: I) -> Result<(), WireError> {
    let mut prev_end: Option<u128> = None;
    for (start, len) in ranges {
        check_range(mab.family(), start, len)?;
        if !mab.contains_range(start, len) {
            return Err(WireError::OutsideMab);
        }
        if let Some(e) = prev_end
            && u128::from(start) < e
        {
            return Err(WireError::Unsorted);
        }
        prev_end = Some(u128::from(start) + u128::from(len));
    }
    Ok(())
}

impl HistoryRecord {
    /// Parse one whole frame body.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::UnknownType`],
    /// [`WireError::ReservedNonZero`], [`WireError::TrailingBytes`], errors of the
    /// embedded payload (payload.md), and the item and range rules of history.md
    /// §3 ([`WireError::CountOverrun`], [`WireError::UnknownStatus`],
    /// [`WireError::BadFragment`], [`WireError::BadRange`],
    /// [`WireError::OutsideMab`], [`WireError::Unsorted`], [`WireError::BadMab`]).
    pub fn parse(b: &[u8]) -> Result<HistoryRecord, WireError> {
        let kind = *b.first().ok_or(WireError::Truncated)?;
        match kind {
            RECORD_PAYLOAD => parse_payload_record(b).map(HistoryRecord::Payload),
            RECORD_BASELINE => parse_baseline(b).map(HistoryRecord::Baseline),
            RECORD_GAP => parse_gap(b).map(HistoryRecord::Gap),
            _ => Err(WireError::UnknownType),
        }
    }

    /// Bytes of the encoded record.
    ///
    /// # Errors
    /// As [`HistoryRecord::emit`] for records whose payload does not parse.
    pub fn buffer_len(&self) -> Result<usize, WireError> {
        match self {
            HistoryRecord::Payload(p) => {
                let payload = Payload::new_checked(&p.payload)?;
                payload_record_len(p, &record_contexts(&payload))
            }
            HistoryRecord::Baseline(r) => Ok(BASELINE_RECORD_FIXED
                + r.micronets.len() * (2 * r.mab.family().unit_len() + r.mab.family().etr_len())),
            HistoryRecord::Gap(GapRecord::Payloads { .. }) => Ok(GAP_PAYLOADS_LEN),
            HistoryRecord::Gap(GapRecord::MabSets { .. }) => Ok(GAP_MAB_LEN),
        }
    }

    /// Encode into a new vector.
    ///
    /// # Errors
    /// Errors of [`HistoryRecord::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }

    /// Encode into `out` (cleared first), checking the embedded payload once:
    /// the writer's path (a store encodes every record it appends).
    ///
    /// # Errors
    /// Errors of [`HistoryRecord::emit`].
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        match self {
            HistoryRecord::Payload(p) => {
                let payload = Payload::new_checked(&p.payload)?;
                let ctx = record_contexts(&payload);
                out.resize(payload_record_len(p, &ctx)?, 0);
                emit_payload_record(p, &ctx, out)
            }
            _ => {
                out.resize(self.buffer_len()?, 0);
                self.emit(out)
            }
        }
    }

    /// Encode into exactly [`HistoryRecord::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; the embedded payload's errors; any rule of §3
    /// the value breaks (the same checks as [`HistoryRecord::parse`]), so that what
    /// is written always parses.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len()? {
            return Err(WireError::BufferSize);
        }
        match self {
            HistoryRecord::Payload(p) => {
                let payload = Payload::new_checked(&p.payload)?;
                emit_payload_record(p, &record_contexts(&payload), b)
            }
            HistoryRecord::Baseline(r) => emit_baseline(r, b),
            HistoryRecord::Gap(g) => emit_gap(g, b),
        }
    }
}

// ---------------------------------------------------------------------------
// Type 1: payload record
// ---------------------------------------------------------------------------

/// The MAB and per-MAB sequence of the set record at `index`.
fn set_context(ctx: &[RecordContext], index: u16) -> Result<(Mab, u64), WireError> {
    ctx.get(usize::from(index))
        .ok_or(WireError::CountOverrun)?
        .set()
        .ok_or(WireError::UnknownType)
}

fn item_len(it: &Item, ctx: &[RecordContext]) -> Result<usize, WireError> {
    match it {
        Item::Set(s) => {
            let (mab, _) = set_context(ctx, s.record_index)?;
            let f = mab.family();
            Ok(SET_ITEM_FIXED
                + s.fragments.len() * FRAGMENT_REF_LEN
                + s.ranges.iter().map(|r| r.buffer_len(f)).sum::<usize>())
        }
        Item::Snapshot(_) => Ok(SNAPSHOT_ITEM_LEN),
    }
}

/// Check one item against the payload's records.
fn check_item(it: &Item, ctx: &[RecordContext]) -> Result<(), WireError> {
    match it {
        Item::Set(s) => {
            let c = ctx
                .get(usize::from(s.record_index))
                .ok_or(WireError::CountOverrun)?;
            let mab = match *c {
                RecordContext::Set { mab, .. } => {
                    if !s.fragments.is_empty() {
                        return Err(WireError::BadFragment);
                    }
                    mab
                }
                RecordContext::Fragment {
                    mab, index, count, ..
                } => {
                    if s.fragments.len() + 1 != usize::from(count) {
                        return Err(WireError::BadFragment);
                    }
                    let mut prev: Option<u8> = None;
                    for r in &s.fragments {
                        if r.index >= count
                            || r.index == index
                            || prev.is_some_and(|p| r.index <= p)
                        {
                            return Err(WireError::BadFragment);
                        }
                        prev = Some(r.index);
                    }
                    mab
                }
                _ => return Err(WireError::UnknownType),
            };
            if s.outcome == SetOutcome::Refused && !s.ranges.is_empty() {
                return Err(WireError::StatusFieldsNonZero);
            }
            for r in &s.ranges {
                if let Some(e) = r.etr
                    && e.family() != mab.family()
                {
                    return Err(WireError::BadFamily);
                }
            }
            check_ranges(&mab, s.ranges.iter().map(|r| (r.start, r.len)))
        }
        Item::Snapshot(s) => match ctx.get(usize::from(s.record_index)) {
            Some(RecordContext::Snapshot(_)) => Ok(()),
            Some(_) => Err(WireError::UnknownType),
            None => Err(WireError::CountOverrun),
        },
    }
}

/// Items must name records in ascending order, each at most once.
fn check_item_order(items: &[Item]) -> Result<(), WireError> {
    let mut prev: Option<u16> = None;
    for it in items {
        let i = match it {
            Item::Set(s) => s.record_index,
            Item::Snapshot(s) => s.record_index,
        };
        if prev.is_some_and(|p| i <= p) {
            return Err(WireError::Unsorted);
        }
        prev = Some(i);
    }
    Ok(())
}

fn parse_payload_record(b: &[u8]) -> Result<PayloadRecord, WireError> {
    let mut r = Reader { b };
    let fixed = r.take(PAYLOAD_RECORD_FIXED)?;
    if fixed[1] != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let payload_len = usize::from(be16(&fixed[2..]));
    let recv_us = be64(&fixed[4..]);
    if payload_len < PAYLOAD_LEN_MIN {
        return Err(WireError::LengthMismatch);
    }
    let payload_bytes = r.take(payload_len)?;
    let payload = Payload::new_checked(payload_bytes)?;
    let ctx = record_contexts(&payload);
    let count = r.u16()?;
    let mut items = Vec::with_capacity(usize::from(count).min(ctx.len() + 1));
    for _ in 0..count {
        let kind = r.u8()?;
        let item = match kind {
            ITEM_SET => {
                let outcome = SetOutcome::from_code(r.u8()?)?;
                let record_index = r.u16()?;
                let fragment_refs = r.u8()?;
                if r.u8()? != 0 {
                    return Err(WireError::ReservedNonZero);
                }
                let range_count = r.u16()?;
                let (mab, _) = set_context(&ctx, record_index)?;
                // The reference count follows from the record: checked before
                // the references are read.
                let want_refs = match ctx.get(usize::from(record_index)) {
                    Some(RecordContext::Fragment { count, .. }) => count.saturating_sub(1),
                    _ => 0,
                };
                if fragment_refs != want_refs {
                    return Err(WireError::BadFragment);
                }
                let mut fragments = Vec::with_capacity(usize::from(fragment_refs));
                for _ in 0..fragment_refs {
                    let f = r.take(FRAGMENT_REF_LEN)?;
                    fragments.push(FragmentRef {
                        index: f[0],
                        at: Location {
                            segment: be32(&f[1..]),
                            offset: be32(&f[5..]),
                        },
                    });
                }
                let fam = mab.family();
                let mut ranges = Vec::with_capacity(usize::from(range_count).min(r.b.len() / 9));
                for _ in 0..range_count {
                    let state = r.u8()?;
                    let u = r.take(2 * fam.unit_len())?;
                    let start = read_unit(fam, u);
                    let len = read_unit(fam, &u[fam.unit_len()..]);
                    let etr = match state {
                        0 => None,
                        1 => Some(Etr::read(fam, r.take(fam.etr_len())?)),
                        _ => return Err(WireError::UnknownStatus),
                    };
                    ranges.push(ChangedRange { start, len, etr });
                }
                Item::Set(SetItem {
                    outcome,
                    record_index,
                    fragments,
                    ranges,
                })
            }
            ITEM_SNAPSHOT => {
                let check = SnapshotCheck::from_code(r.u8()?)?;
                let record_index = r.u16()?;
                Item::Snapshot(SnapshotItem {
                    record_index,
                    check,
                })
            }
            _ => return Err(WireError::UnknownType),
        };
        check_item(&item, &ctx)?;
        items.push(item);
    }
    if !r.b.is_empty() {
        return Err(WireError::TrailingBytes);
    }
    check_item_order(&items)?;
    Ok(PayloadRecord {
        recv_us,
        payload: payload_bytes.to_vec(),
        items,
    })
}

fn payload_record_len(p: &PayloadRecord, ctx: &[RecordContext]) -> Result<usize, WireError> {
    let mut n = PAYLOAD_RECORD_FIXED + p.payload.len() + 2;
    for it in &p.items {
        n += item_len(it, ctx)?;
    }
    Ok(n)
}

fn emit_payload_record(
    p: &PayloadRecord,
    ctx: &[RecordContext],
    b: &mut [u8],
) -> Result<(), WireError> {
    let payload_len = u16::try_from(p.payload.len()).map_err(|_| WireError::TooLong)?;
    let count = u16::try_from(p.items.len()).map_err(|_| WireError::TooLong)?;
    check_item_order(&p.items)?;
    b[0] = RECORD_PAYLOAD;
    b[1] = 0;
    b[2..4].copy_from_slice(&payload_len.to_be_bytes());
    b[4..12].copy_from_slice(&p.recv_us.to_be_bytes());
    let mut at = PAYLOAD_RECORD_FIXED;
    b[at..at + p.payload.len()].copy_from_slice(&p.payload);
    at += p.payload.len();
    b[at..at + 2].copy_from_slice(&count.to_be_bytes());
    at += 2;
    for it in &p.items {
        check_item(it, ctx)?;
        match it {
            Item::Set(s) => {
                let fam = set_context(ctx, s.record_index)?.0.family();
                let refs = u8::try_from(s.fragments.len()).map_err(|_| WireError::BadFragment)?;
                let ranges = u16::try_from(s.ranges.len()).map_err(|_| WireError::TooLong)?;
                b[at] = ITEM_SET;
                b[at + 1] = s.outcome.code();
                b[at + 2..at + 4].copy_from_slice(&s.record_index.to_be_bytes());
                b[at + 4] = refs;
                b[at + 5] = 0;
                b[at + 6..at + 8].copy_from_slice(&ranges.to_be_bytes());
                at += SET_ITEM_FIXED;
                for f in &s.fragments {
                    b[at] = f.index;
                    b[at + 1..at + 5].copy_from_slice(&f.at.segment.to_be_bytes());
                    b[at + 5..at + 9].copy_from_slice(&f.at.offset.to_be_bytes());
                    at += FRAGMENT_REF_LEN;
                }
                let u = fam.unit_len();
                for r in &s.ranges {
                    b[at] = u8::from(r.etr.is_some());
                    write_unit(fam, r.start, &mut b[at + 1..]);
                    write_unit(fam, r.len, &mut b[at + 1 + u..]);
                    if let Some(e) = r.etr {
                        e.write(&mut b[at + 1 + 2 * u..]);
                    }
                    at += r.buffer_len(fam);
                }
            }
            Item::Snapshot(s) => {
                b[at] = ITEM_SNAPSHOT;
                b[at + 1] = s.check.code();
                b[at + 2..at + 4].copy_from_slice(&s.record_index.to_be_bytes());
                at += SNAPSHOT_ITEM_LEN;
            }
        }
    }
    Ok(())
}

impl PayloadRecord {
    /// The embedded payload, checked.
    ///
    /// # Errors
    /// The payload's errors (never, for a record that came from
    /// [`HistoryRecord::parse`]).
    pub fn checked(&self) -> Result<Payload<'_>, WireError> {
        Payload::new_checked(&self.payload)
    }

    /// The payload's identity; `None` if the payload does not parse.
    pub fn id(&self) -> Option<PayloadId> {
        self.checked().ok().map(|p| p.id())
    }
}

// ---------------------------------------------------------------------------
// Type 2: baseline record
// ---------------------------------------------------------------------------

fn parse_baseline(b: &[u8]) -> Result<BaselineRecord, WireError> {
    let mut r = Reader { b };
    let h = r.take(BASELINE_RECORD_FIXED)?;
    if h[1] != 0
        || h[2] & !RuasId::MAX != 0
        || h[3] != 0
        || h[14..16] != [0, 0]
        || be32(&h[84..]) != 0
    {
        return Err(WireError::ReservedNonZero);
    }
    let mab = Mab::read(&h[4..14])?;
    let part = be32(&h[72..]);
    let part_count = be32(&h[76..]);
    if part_count == 0 || part >= part_count {
        return Err(WireError::BadFragment);
    }
    let count = be32(&h[80..]) as usize;
    let fam = mab.family();
    let entry = 2 * fam.unit_len() + fam.etr_len();
    let need = count.checked_mul(entry).ok_or(WireError::CountOverrun)?;
    if need > r.b.len() {
        return Err(WireError::CountOverrun);
    }
    if need < r.b.len() {
        return Err(WireError::TrailingBytes);
    }
    let mut micronets = Vec::with_capacity(count);
    for e in r.b.chunks_exact(entry) {
        let u = fam.unit_len();
        micronets.push((
            read_unit(fam, e),
            read_unit(fam, &e[u..]),
            Etr::read(fam, &e[2 * u..]),
        ));
    }
    check_ranges(&mab, micronets.iter().map(|&(s, l, _)| (s, l)))?;
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&h[40..72]);
    Ok(BaselineRecord {
        ruas: RuasId::masked(h[2]),
        mab,
        mab_seq: be64(&h[16..]),
        created_us: be64(&h[24..]),
        recv_us: be64(&h[32..]),
        sha256,
        part,
        part_count,
        micronets,
    })
}

fn emit_baseline(r: &BaselineRecord, b: &mut [u8]) -> Result<(), WireError> {
    if r.part_count == 0 || r.part >= r.part_count {
        return Err(WireError::BadFragment);
    }
    let count = u32::try_from(r.micronets.len()).map_err(|_| WireError::TooLong)?;
    check_ranges(&r.mab, r.micronets.iter().map(|&(s, l, _)| (s, l)))?;
    let fam = r.mab.family();
    if r.micronets.iter().any(|(_, _, e)| e.family() != fam) {
        return Err(WireError::BadFamily);
    }
    b[..BASELINE_RECORD_FIXED].fill(0);
    b[0] = RECORD_BASELINE;
    b[2] = r.ruas.get();
    r.mab.write(&mut b[4..14]);
    b[16..24].copy_from_slice(&r.mab_seq.to_be_bytes());
    b[24..32].copy_from_slice(&r.created_us.to_be_bytes());
    b[32..40].copy_from_slice(&r.recv_us.to_be_bytes());
    b[40..72].copy_from_slice(&r.sha256);
    b[72..76].copy_from_slice(&r.part.to_be_bytes());
    b[76..80].copy_from_slice(&r.part_count.to_be_bytes());
    b[80..84].copy_from_slice(&count.to_be_bytes());
    let u = fam.unit_len();
    let entry = 2 * u + fam.etr_len();
    for (i, &(s, l, e)) in r.micronets.iter().enumerate() {
        let at = BASELINE_RECORD_FIXED + i * entry;
        write_unit(fam, s, &mut b[at..]);
        write_unit(fam, l, &mut b[at + u..]);
        e.write(&mut b[at + 2 * u..]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Type 3: gap record
// ---------------------------------------------------------------------------

/// Gap reason: payloads of a RUAS epoch never obtained.
pub const GAP_PAYLOADS: u8 = 1;
/// Gap reason: command sets of a MAB never applied.
pub const GAP_MAB_SETS: u8 = 2;
const GAP_PAYLOADS_LEN: usize = 28;
const GAP_MAB_LEN: usize = 40;

fn parse_gap(b: &[u8]) -> Result<GapRecord, WireError> {
    if b.len() < 12 {
        return Err(WireError::Truncated);
    }
    if b[1] != 0 || b[3] != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let recv_us = be64(&b[4..]);
    let want = match b[2] {
        GAP_PAYLOADS => GAP_PAYLOADS_LEN,
        GAP_MAB_SETS => GAP_MAB_LEN,
        _ => return Err(WireError::UnknownStatus),
    };
    if b.len() < want {
        return Err(WireError::Truncated);
    }
    if b.len() > want {
        return Err(WireError::TrailingBytes);
    }
    if b[2] == GAP_PAYLOADS {
        if b[12] & !RuasId::MAX != 0 || b[13..16] != [0, 0, 0] {
            return Err(WireError::ReservedNonZero);
        }
        let first = Seq(be32(&b[20..]));
        let last = Seq(be32(&b[24..]));
        if last.serial_cmp(first).is_none_or(|o| o.is_lt()) {
            return Err(WireError::BadRange);
        }
        Ok(GapRecord::Payloads {
            recv_us,
            ruas: RuasId::masked(b[12]),
            epoch: be32(&b[16..]),
            first,
            last,
        })
    } else {
        if b[22..24] != [0, 0] {
            return Err(WireError::ReservedNonZero);
        }
        let mab = Mab::read(&b[12..22])?;
        let first = be64(&b[24..]);
        let last = be64(&b[32..]);
        if last < first {
            return Err(WireError::BadRange);
        }
        Ok(GapRecord::MabSets {
            recv_us,
            mab,
            first,
            last,
        })
    }
}

fn emit_gap(g: &GapRecord, b: &mut [u8]) -> Result<(), WireError> {
    b.fill(0);
    b[0] = RECORD_GAP;
    b[4..12].copy_from_slice(&g.recv_us().to_be_bytes());
    match *g {
        GapRecord::Payloads {
            ruas,
            epoch,
            first,
            last,
            ..
        } => {
            if last.serial_cmp(first).is_none_or(|o| o.is_lt()) {
                return Err(WireError::BadRange);
            }
            b[2] = GAP_PAYLOADS;
            b[12] = ruas.get();
            b[16..20].copy_from_slice(&epoch.to_be_bytes());
            b[20..24].copy_from_slice(&first.0.to_be_bytes());
            b[24..28].copy_from_slice(&last.0.to_be_bytes());
        }
        GapRecord::MabSets {
            mab, first, last, ..
        } => {
            if last < first {
                return Err(WireError::BadRange);
            }
            b[2] = GAP_MAB_SETS;
            mab.write(&mut b[12..22]);
            b[24..32].copy_from_slice(&first.to_be_bytes());
            b[32..40].copy_from_slice(&last.to_be_bytes());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rendering for the test vectors
// ---------------------------------------------------------------------------

fn range_text(fam: Family, start: u64, len: u64) -> String {
    format!("start={} len={len}", unit_addr(fam, start))
}

impl fmt::Display for HistoryRecord {
    /// The `fields:` rendering used by the test vectors (spec: README.md §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryRecord::Payload(p) => {
                let Ok(payload) = p.checked() else {
                    return writeln!(f, "record=payload (payload does not parse)");
                };
                let ctx = record_contexts(&payload);
                writeln!(
                    f,
                    "record=payload recv_us={} payload={} time_us={} payload_len={} items={}",
                    p.recv_us,
                    payload.id(),
                    payload.timestamp_us(),
                    p.payload.len(),
                    p.items.len()
                )?;
                for it in &p.items {
                    match it {
                        Item::Set(s) => {
                            let Some((mab, mab_seq)) = ctx
                                .get(usize::from(s.record_index))
                                .and_then(RecordContext::set)
                            else {
                                writeln!(
                                    f,
                                    "item=set record={} (no such set record)",
                                    s.record_index
                                )?;
                                continue;
                            };
                            writeln!(
                                f,
                                "item=set record={} mab={mab} mab_seq={mab_seq} outcome={} fragments={} ranges={}",
                                s.record_index,
                                s.outcome.name(),
                                s.fragments.len(),
                                s.ranges.len()
                            )?;
                            for r in &s.fragments {
                                writeln!(f, "fragment index={} at={}", r.index, r.at)?;
                            }
                            for r in &s.ranges {
                                match r.etr {
                                    Some(e) => writeln!(
                                        f,
                                        "range {} etr={e}",
                                        range_text(mab.family(), r.start, r.len)
                                    )?,
                                    None => writeln!(
                                        f,
                                        "range {} unassigned",
                                        range_text(mab.family(), r.start, r.len)
                                    )?,
                                }
                            }
                        }
                        Item::Snapshot(s) => {
                            writeln!(
                                f,
                                "item=snapshot record={} check={}",
                                s.record_index,
                                s.check.name()
                            )?;
                        }
                    }
                }
                Ok(())
            }
            HistoryRecord::Baseline(r) => {
                writeln!(
                    f,
                    "record=baseline ruas={} mab={} mab_seq={} created_us={} recv_us={} sha256={} part={}/{} micronets={}",
                    r.ruas,
                    r.mab,
                    r.mab_seq,
                    r.created_us,
                    r.recv_us,
                    crate::hex::encode(&r.sha256),
                    r.part,
                    r.part_count,
                    r.micronets.len()
                )?;
                for &(s, l, e) in &r.micronets {
                    writeln!(f, "micronet {} etr={e}", range_text(r.mab.family(), s, l))?;
                }
                Ok(())
            }
            HistoryRecord::Gap(GapRecord::Payloads {
                recv_us,
                ruas,
                epoch,
                first,
                last,
            }) => writeln!(
                f,
                "record=gap reason=payloads recv_us={recv_us} ruas={ruas} epoch={epoch} first={first} last={last}"
            ),
            HistoryRecord::Gap(GapRecord::MabSets {
                recv_us,
                mab,
                first,
                last,
            }) => writeln!(
                f,
                "record=gap reason=mab-sets recv_us={recv_us} mab={mab} first={first} last={last}"
            ),
        }
    }
}

/// Build an owned payload record for a payload value (tests and tools).
///
/// # Errors
/// Errors of [`PayloadRepr::to_vec`].
pub fn payload_record(
    recv_us: u64,
    p: &PayloadRepr,
    items: Vec<Item>,
) -> Result<PayloadRecord, WireError> {
    Ok(PayloadRecord {
        recv_us,
        payload: p.to_vec()?,
        items,
    })
}

// ===========================================================================
// Index files (spec: history.md §4)
// ===========================================================================

/// The eight magic bytes that open an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"IVIPHIDX";
/// The index file version this implementation writes and reads.
pub const INDEX_VERSION: u8 = 1;
/// Bytes of the index header.
pub const INDEX_HEADER_LEN: usize = 64;
/// Bytes of one index entry.
pub const ENTRY_LEN: usize = 36;
/// Bytes of a block's header.
pub const BLOCK_HEADER_LEN: usize = 8;
/// Smallest and largest block size exponent (512 bytes to 64 KiB).
pub const BLOCK_SHIFT_MIN: u8 = 9;
/// See [`BLOCK_SHIFT_MIN`].
pub const BLOCK_SHIFT_MAX: u8 = 16;
/// Bytes of one MAB table entry.
pub const MAB_ENTRY_LEN: usize = 16;
/// Bytes of one segment summary.
pub const SEGMENT_SUMMARY_LEN: usize = 32;
/// Bytes of one block fence.
pub const FENCE_LEN: usize = 16;
/// Number of range length classes (§4.2).
pub const RANGE_CLASSES: u8 = 16;
/// Class of [`EntryKind::BaselineStart`] markers (§4.2).
pub const CLASS_BASELINE_START: u8 = 251;
/// Class of [`EntryKind::Snapshot`] markers.
pub const CLASS_SNAPSHOT: u8 = 252;
/// Class of [`EntryKind::Gap`] markers.
pub const CLASS_GAP: u8 = 253;
/// Class of [`EntryKind::NoEffect`] markers.
pub const CLASS_NO_EFFECT: u8 = 254;

/// What an index entry points at (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// A range a set changed, now mapped (a micronet).
    ChangeMapped,
    /// A range a set changed, now unassigned.
    ChangeUnassigned,
    /// A micronet of a baseline.
    Baseline,
    /// Marker: a baseline of the MAB starts here (the first part).
    BaselineStart,
    /// Marker: a snapshot announcement of the MAB.
    Snapshot,
    /// Marker: a gap in the MAB's sets.
    Gap,
    /// Marker: a set that changed nothing (refused, or no effect).
    NoEffect,
}

impl EntryKind {
    /// The code on disk.
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::ChangeMapped => 1,
            EntryKind::ChangeUnassigned => 2,
            EntryKind::Baseline => 3,
            EntryKind::BaselineStart => 4,
            EntryKind::Snapshot => 5,
            EntryKind::Gap => 6,
            EntryKind::NoEffect => 7,
        }
    }

    /// Decode.
    ///
    /// # Errors
    /// [`WireError::UnknownType`].
    pub const fn from_code(c: u8) -> Result<EntryKind, WireError> {
        Ok(match c {
            1 => EntryKind::ChangeMapped,
            2 => EntryKind::ChangeUnassigned,
            3 => EntryKind::Baseline,
            4 => EntryKind::BaselineStart,
            5 => EntryKind::Snapshot,
            6 => EntryKind::Gap,
            7 => EntryKind::NoEffect,
            _ => return Err(WireError::UnknownType),
        })
    }

    /// `true` for the kinds that index a range (classes 0..16); the others are
    /// markers of the whole MAB, filed by time (§4.2).
    pub const fn is_range(self) -> bool {
        matches!(
            self,
            EntryKind::ChangeMapped | EntryKind::ChangeUnassigned | EntryKind::Baseline
        )
    }

    /// The class an entry of this kind and `len` units is filed under: the
    /// length class for ranges, the kind's marker class otherwise.
    pub const fn class(self, len: u64) -> u8 {
        match self {
            EntryKind::ChangeMapped | EntryKind::ChangeUnassigned | EntryKind::Baseline => {
                length_class(len)
            }
            EntryKind::BaselineStart => CLASS_BASELINE_START,
            EntryKind::Snapshot => CLASS_SNAPSHOT,
            EntryKind::Gap => CLASS_GAP,
            EntryKind::NoEffect => CLASS_NO_EFFECT,
        }
    }

    /// A short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::ChangeMapped => "change-mapped",
            EntryKind::ChangeUnassigned => "change-unassigned",
            EntryKind::Baseline => "baseline",
            EntryKind::BaselineStart => "baseline-start",
            EntryKind::Snapshot => "snapshot",
            EntryKind::Gap => "gap",
            EntryKind::NoEffect => "no-effect",
        }
    }
}

/// The length class of a range of `len` units: `floor(log16(len))`, 0..=15
/// (§4.2). A range of class `c` that holds unit `u` starts in
/// `[u - (16^(c+1) - 1), u]`.
pub const fn length_class(len: u64) -> u8 {
    if len == 0 {
        0
    } else {
        ((63 - len.leading_zeros()) / 4) as u8
    }
}

/// The lowest start a range of class `class` holding `unit` can have.
pub const fn class_window_start(class: u8, unit: u64) -> u64 {
    let shift = 4 * (class as u32 + 1);
    if shift >= 64 {
        0
    } else {
        unit.saturating_sub((1u64 << shift) - 1)
    }
}

/// One index entry on disk (36 bytes, §4.3).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndexEntryBytes {
    /// Index into the file's MAB table.
    pub mab: U16,
    /// Length class, or the kind's marker class.
    pub class: u8,
    /// [`EntryKind`] code.
    pub kind: u8,
    /// First unit; for markers, the time again (so markers sort by time).
    pub start: U64,
    /// Length in units; 1 for markers.
    pub len: U64,
    /// Time: the payload's timestamp, a baseline's creation time, or a gap's
    /// recording time; µs since the Unix epoch.
    pub time_us: U64,
    /// Segment of the frame.
    pub segment: U32,
    /// Byte offset of the frame in the segment.
    pub offset: U32,
}

const _: () = assert!(size_of::<IndexEntryBytes>() == ENTRY_LEN);

/// An index entry, decoded; the MAB is an index into the file's MAB table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexEntry {
    /// Index into the MAB table.
    pub mab: u16,
    /// Length class, or the kind's marker class.
    pub class: u8,
    /// What it points at.
    pub kind: EntryKind,
    /// First unit; for markers, the time.
    pub start: u64,
    /// Length in units; 1 for markers.
    pub len: u64,
    /// Time, µs since the Unix epoch.
    pub time_us: u64,
    /// Where the frame is.
    pub at: Location,
}

impl IndexEntry {
    /// The sort key: (MAB, class, start, segment, offset, length, kind). Entries
    /// of one file ascend strictly by it.
    pub const fn key(&self) -> (u16, u8, u64, u32, u32, u64, u8) {
        (
            self.mab,
            self.class,
            self.start,
            self.at.segment,
            self.at.offset,
            self.len,
            self.kind.code(),
        )
    }

    fn check(&self, mab_count: usize) -> Result<(), WireError> {
        if usize::from(self.mab) >= mab_count {
            return Err(WireError::CountOverrun);
        }
        if self.len == 0 || (!self.kind.is_range() && self.len != 1) {
            return Err(WireError::BadRange);
        }
        if self.class != self.kind.class(self.len) {
            return Err(WireError::LengthMismatch);
        }
        Ok(())
    }

    fn decode(e: &IndexEntryBytes) -> Result<IndexEntry, WireError> {
        Ok(IndexEntry {
            mab: e.mab.get(),
            class: e.class,
            kind: EntryKind::from_code(e.kind)?,
            start: e.start.get(),
            len: e.len.get(),
            time_us: e.time_us.get(),
            at: Location {
                segment: e.segment.get(),
                offset: e.offset.get(),
            },
        })
    }

    fn encode(&self) -> IndexEntryBytes {
        IndexEntryBytes {
            mab: U16::new(self.mab),
            class: self.class,
            kind: self.kind.code(),
            start: U64::new(self.start),
            len: U64::new(self.len),
            time_us: U64::new(self.time_us),
            segment: U32::new(self.at.segment),
            offset: U32::new(self.at.offset),
        }
    }
}

/// The index header (64 bytes, §4.1).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IndexHeaderBytes {
    /// [`INDEX_MAGIC`].
    pub magic: [u8; 8],
    /// [`INDEX_VERSION`].
    pub version: u8,
    /// log2 of the block size, 9..=16.
    pub block_shift: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 6],
    /// First segment covered.
    pub first_segment: U32,
    /// Last segment covered.
    pub last_segment: U32,
    /// Number of entries.
    pub entry_count: U64,
    /// Number of blocks.
    pub block_count: U32,
    /// Number of MABs in the MAB table.
    pub mab_count: U32,
    /// Bytes of the meta section.
    pub meta_len: U32,
    /// CRC-32C of the meta section.
    pub meta_crc: U32,
    /// Reserved, zero.
    pub reserved1: [u8; 12],
    /// CRC-32C of the 60 bytes before it.
    pub header_crc: U32,
}

const _: () = assert!(size_of::<IndexHeaderBytes>() == INDEX_HEADER_LEN);

/// The index header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// log2 of the block size.
    pub block_shift: u8,
    /// First segment covered.
    pub first_segment: u32,
    /// Last segment covered (`>= first_segment`).
    pub last_segment: u32,
    /// Number of entries.
    pub entry_count: u64,
    /// Number of blocks.
    pub block_count: u32,
    /// Number of MABs.
    pub mab_count: u32,
    /// Bytes of the meta section.
    pub meta_len: u32,
    /// CRC-32C of the meta section.
    pub meta_crc: u32,
}

impl IndexHeader {
    /// Bytes of one block.
    pub const fn block_len(&self) -> usize {
        1usize << self.block_shift
    }

    /// Entries one block holds at most.
    pub const fn block_entries_max(&self) -> usize {
        (self.block_len() - BLOCK_HEADER_LEN) / ENTRY_LEN
    }

    /// Number of segments covered.
    pub const fn segment_count(&self) -> u64 {
        self.last_segment as u64 - self.first_segment as u64 + 1
    }

    /// The meta section's length implied by the counts.
    pub fn expected_meta_len(&self) -> Option<u64> {
        (u64::from(self.mab_count) * MAB_ENTRY_LEN as u64)
            .checked_add(self.segment_count() * SEGMENT_SUMMARY_LEN as u64)?
            .checked_add(u64::from(self.block_count) * FENCE_LEN as u64)
    }

    /// Byte offset of the first block: after header and meta, rounded up to a
    /// whole block.
    pub fn blocks_offset(&self) -> u64 {
        let end = INDEX_HEADER_LEN as u64 + u64::from(self.meta_len);
        let b = self.block_len() as u64;
        end.div_ceil(b) * b
    }

    /// Byte offset of block `i`.
    pub fn block_offset(&self, i: u32) -> u64 {
        self.blocks_offset() + u64::from(i) * self.block_len() as u64
    }

    /// Total bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.block_offset(self.block_count)
    }

    /// Parse the first [`INDEX_HEADER_LEN`] bytes of an index file.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::HashMismatch`] (header
    /// CRC), [`WireError::ReservedNonZero`], [`WireError::BadRange`] (segments or
    /// block size), [`WireError::LengthMismatch`] (meta length or entry count
    /// disagree with the counts).
    pub fn parse(b: &[u8]) -> Result<IndexHeader, WireError> {
        let (h, _) = IndexHeaderBytes::ref_from_prefix(b).map_err(|_| WireError::Truncated)?;
        if h.magic != INDEX_MAGIC {
            return Err(WireError::BadMagic);
        }
        if h.version != INDEX_VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if crc32c_update(0, &b[..INDEX_HEADER_LEN - 4]) != h.header_crc.get() {
            return Err(WireError::HashMismatch);
        }
        if h.reserved0 != [0; 6] || h.reserved1 != [0; 12] {
            return Err(WireError::ReservedNonZero);
        }
        let out = IndexHeader {
            block_shift: h.block_shift,
            first_segment: h.first_segment.get(),
            last_segment: h.last_segment.get(),
            entry_count: h.entry_count.get(),
            block_count: h.block_count.get(),
            mab_count: h.mab_count.get(),
            meta_len: h.meta_len.get(),
            meta_crc: h.meta_crc.get(),
        };
        out.check()?;
        Ok(out)
    }

    fn check(&self) -> Result<(), WireError> {
        if !(BLOCK_SHIFT_MIN..=BLOCK_SHIFT_MAX).contains(&self.block_shift)
            || self.last_segment < self.first_segment
        {
            return Err(WireError::BadRange);
        }
        if self.mab_count > u32::from(u16::MAX) + 1 {
            return Err(WireError::CountOverrun);
        }
        if self.expected_meta_len() != Some(u64::from(self.meta_len)) {
            return Err(WireError::LengthMismatch);
        }
        let max = u64::from(self.block_count) * self.block_entries_max() as u64;
        let min =
            u64::from(self.block_count.saturating_sub(1)) + u64::from(self.block_count.min(1));
        // Every block holds at least one entry, at most block_entries_max.
        if self.entry_count > max || self.entry_count < min {
            return Err(WireError::LengthMismatch);
        }
        Ok(())
    }

    /// Encode.
    pub fn to_bytes(&self) -> [u8; INDEX_HEADER_LEN] {
        let h = IndexHeaderBytes {
            magic: INDEX_MAGIC,
            version: INDEX_VERSION,
            block_shift: self.block_shift,
            reserved0: [0; 6],
            first_segment: U32::new(self.first_segment),
            last_segment: U32::new(self.last_segment),
            entry_count: U64::new(self.entry_count),
            block_count: U32::new(self.block_count),
            mab_count: U32::new(self.mab_count),
            meta_len: U32::new(self.meta_len),
            meta_crc: U32::new(self.meta_crc),
            reserved1: [0; 12],
            header_crc: U32::new(0),
        };
        let mut b = [0u8; INDEX_HEADER_LEN];
        b.copy_from_slice(h.as_bytes());
        let crc = crc32c_update(0, &b[..INDEX_HEADER_LEN - 4]);
        b[INDEX_HEADER_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// What one covered segment holds (§4.1 segment table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentSummary {
    /// The segment number.
    pub segment: u32,
    /// Smallest entry time in it (`u64::MAX` when it has no entries).
    pub time_min_us: u64,
    /// Largest entry time in it (0 when it has no entries).
    pub time_max_us: u64,
    /// Frames in the segment.
    pub frames: u32,
    /// Entries pointing into it.
    pub entries: u32,
}

/// The first key of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence {
    /// MAB table index.
    pub mab: u16,
    /// Class.
    pub class: u8,
    /// Start.
    pub start: u64,
}

/// One MAB of an index file's MAB table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MabEntry {
    /// The MAB.
    pub mab: Mab,
    /// The [`class_bit`]s of the classes this file has entries of for this MAB.
    pub classes: u32,
}

/// The [`MabEntry::classes`] bit of a class: bits 0..16 for the length classes,
/// bits 16..20 for the marker classes 251..=254; 0 for any other value.
pub const fn class_bit(class: u8) -> u32 {
    match class {
        0..RANGE_CLASSES => 1 << class,
        CLASS_BASELINE_START..=CLASS_NO_EFFECT => 1 << (16 + (class - CLASS_BASELINE_START)),
        _ => 0,
    }
}

/// Bits of [`MabEntry::classes`] that may be set.
pub const CLASSES_MASK: u32 = (1 << 20) - 1;

/// The meta section (§4.1): MAB table, segment table, block fences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexMeta {
    /// The MABs, strictly ascending; entries refer to them by position.
    pub mabs: Vec<MabEntry>,
    /// One summary per covered segment, ascending from `first_segment`.
    pub segments: Vec<SegmentSummary>,
    /// The first key of each block.
    pub fences: Vec<Fence>,
}

impl IndexMeta {
    /// Bytes of the encoded section.
    pub fn buffer_len(&self) -> usize {
        self.mabs.len() * MAB_ENTRY_LEN
            + self.segments.len() * SEGMENT_SUMMARY_LEN
            + self.fences.len() * FENCE_LEN
    }

    /// Parse the meta section of a file with header `h`; checks its CRC and that
    /// MABs ascend, segments are `first..=last` in order, and fences ascend.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::TrailingBytes`],
    /// [`WireError::HashMismatch`], [`WireError::BadMab`], [`WireError::BadFamily`],
    /// [`WireError::ReservedNonZero`], [`WireError::Unsorted`],
    /// [`WireError::CountOverrun`].
    pub fn parse(h: &IndexHeader, b: &[u8]) -> Result<IndexMeta, WireError> {
        let want = h.meta_len as usize;
        if b.len() < want {
            return Err(WireError::Truncated);
        }
        if b.len() > want {
            return Err(WireError::TrailingBytes);
        }
        if crc32c_update(0, b) != h.meta_crc {
            return Err(WireError::HashMismatch);
        }
        let mut r = Reader { b };
        let mut mabs: Vec<MabEntry> = Vec::with_capacity(h.mab_count as usize);
        for _ in 0..h.mab_count {
            let e = r.take(MAB_ENTRY_LEN)?;
            let classes = be32(&e[12..]);
            if e[MAB_LEN..12].iter().any(|&x| x != 0) || classes & !CLASSES_MASK != 0 {
                return Err(WireError::ReservedNonZero);
            }
            let m = Mab::read(e)?;
            if mabs.last().is_some_and(|p| p.mab >= m) {
                return Err(WireError::Unsorted);
            }
            mabs.push(MabEntry { mab: m, classes });
        }
        let mut segments = Vec::with_capacity(h.segment_count() as usize);
        for i in 0..h.segment_count() {
            let e = r.take(SEGMENT_SUMMARY_LEN)?;
            let s = SegmentSummary {
                segment: be32(e),
                frames: be32(&e[4..]),
                time_min_us: be64(&e[8..]),
                time_max_us: be64(&e[16..]),
                entries: be32(&e[24..]),
            };
            if be32(&e[28..]) != 0 {
                return Err(WireError::ReservedNonZero);
            }
            if u64::from(s.segment) != u64::from(h.first_segment) + i {
                return Err(WireError::Unsorted);
            }
            segments.push(s);
        }
        let mut fences: Vec<Fence> = Vec::with_capacity(h.block_count as usize);
        for _ in 0..h.block_count {
            let e = r.take(FENCE_LEN)?;
            if e[3..8].iter().any(|&x| x != 0) {
                return Err(WireError::ReservedNonZero);
            }
            let f = Fence {
                mab: be16(e),
                class: e[2],
                start: be64(&e[8..]),
            };
            if u32::from(f.mab) >= h.mab_count {
                return Err(WireError::CountOverrun);
            }
            if fences.last().is_some_and(|p| *p > f) {
                return Err(WireError::Unsorted);
            }
            fences.push(f);
        }
        Ok(IndexMeta {
            mabs,
            segments,
            fences,
        })
    }

    /// Encode into exactly [`IndexMeta::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`].
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        b.fill(0);
        let mut at = 0;
        for m in &self.mabs {
            m.mab.write(&mut b[at..]);
            b[at + 12..at + 16].copy_from_slice(&m.classes.to_be_bytes());
            at += MAB_ENTRY_LEN;
        }
        for s in &self.segments {
            b[at..at + 4].copy_from_slice(&s.segment.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&s.frames.to_be_bytes());
            b[at + 8..at + 16].copy_from_slice(&s.time_min_us.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&s.time_max_us.to_be_bytes());
            b[at + 24..at + 28].copy_from_slice(&s.entries.to_be_bytes());
            at += SEGMENT_SUMMARY_LEN;
        }
        for f in &self.fences {
            b[at..at + 2].copy_from_slice(&f.mab.to_be_bytes());
            b[at + 2] = f.class;
            b[at + 8..at + 16].copy_from_slice(&f.start.to_be_bytes());
            at += FENCE_LEN;
        }
        Ok(())
    }
}

/// Parse one block of a file with header `h` and `mab_count` MABs: the whole
/// block slot of `h.block_len()` bytes.
///
/// # Errors
/// [`WireError::Truncated`]/[`WireError::TrailingBytes`] (slot size),
/// [`WireError::HashMismatch`] (block CRC), [`WireError::ReservedNonZero`],
/// [`WireError::CountOverrun`] (entry count 0 or over the block, a MAB index
/// outside the table), [`WireError::UnknownType`], [`WireError::BadRange`],
/// [`WireError::LengthMismatch`] (class disagrees with the length),
/// [`WireError::Unsorted`], [`WireError::OutsideMab`] (segment outside the file's).
pub fn parse_block(
    h: &IndexHeader,
    mab_count: usize,
    b: &[u8],
) -> Result<Vec<IndexEntry>, WireError> {
    if b.len() < h.block_len() {
        return Err(WireError::Truncated);
    }
    if b.len() > h.block_len() {
        return Err(WireError::TrailingBytes);
    }
    let count = usize::from(be16(b));
    if count == 0 || count > h.block_entries_max() {
        return Err(WireError::CountOverrun);
    }
    if b[2..4] != [0, 0] {
        return Err(WireError::ReservedNonZero);
    }
    if crc32c_update(0, &b[BLOCK_HEADER_LEN..]) != be32(&b[4..]) {
        return Err(WireError::HashMismatch);
    }
    let used = BLOCK_HEADER_LEN + count * ENTRY_LEN;
    if b[used..].iter().any(|&x| x != 0) {
        return Err(WireError::ReservedNonZero);
    }
    let mut out: Vec<IndexEntry> = Vec::with_capacity(count);
    for raw in b[BLOCK_HEADER_LEN..used].chunks_exact(ENTRY_LEN) {
        let (e, _) = IndexEntryBytes::ref_from_prefix(raw).map_err(|_| WireError::Truncated)?;
        let e = IndexEntry::decode(e)?;
        e.check(mab_count)?;
        if e.at.segment < h.first_segment || e.at.segment > h.last_segment {
            return Err(WireError::OutsideMab);
        }
        if out.last().is_some_and(|p| p.key() >= e.key()) {
            return Err(WireError::Unsorted);
        }
        out.push(e);
    }
    Ok(out)
}

/// Encode `entries` (1..=`h.block_entries_max()`, sorted) as one block slot of
/// exactly `h.block_len()` bytes.
///
/// # Errors
/// [`WireError::BufferSize`], [`WireError::CountOverrun`].
pub fn emit_block(h: &IndexHeader, entries: &[IndexEntry], b: &mut [u8]) -> Result<(), WireError> {
    if b.len() != h.block_len() {
        return Err(WireError::BufferSize);
    }
    if entries.is_empty() || entries.len() > h.block_entries_max() {
        return Err(WireError::CountOverrun);
    }
    b.fill(0);
    b[..2].copy_from_slice(&(entries.len() as u16).to_be_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = BLOCK_HEADER_LEN + i * ENTRY_LEN;
        b[at..at + ENTRY_LEN].copy_from_slice(e.encode().as_bytes());
    }
    let crc = crc32c_update(0, &b[BLOCK_HEADER_LEN..]);
    b[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A whole index file, owned: for building small files, tests and vectors. The
/// store streams large files through [`IndexHeader`], [`IndexMeta`] and
/// [`emit_block`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// log2 of the block size.
    pub block_shift: u8,
    /// First segment covered.
    pub first_segment: u32,
    /// Last segment covered.
    pub last_segment: u32,
    /// MAB table.
    pub mabs: Vec<MabEntry>,
    /// Segment summaries (`first..=last`).
    pub segments: Vec<SegmentSummary>,
    /// All entries, sorted by key.
    pub entries: Vec<IndexEntry>,
}

impl IndexFile {
    /// The header and meta section for these entries, packing blocks full.
    ///
    /// # Errors
    /// [`WireError::BadRange`], [`WireError::LengthMismatch`],
    /// [`WireError::CountOverrun`] for inconsistent values.
    pub fn layout(&self) -> Result<(IndexHeader, IndexMeta), WireError> {
        plan(
            self.block_shift,
            self.first_segment,
            self.last_segment,
            &self.mabs,
            &self.segments,
            self.entries.len() as u64,
            |i| self.entries.get(i as usize).copied(),
        )
    }

    /// Bytes of the whole file.
    ///
    /// # Errors
    /// As [`IndexFile::layout`].
    pub fn buffer_len(&self) -> Result<usize, WireError> {
        let (h, _) = self.layout()?;
        usize::try_from(h.file_len()).map_err(|_| WireError::TooLong)
    }

    /// Encode the whole file into exactly [`IndexFile::buffer_len`] bytes.
    ///
    /// # Errors
    /// As [`IndexFile::layout`]; [`WireError::BufferSize`];
    /// [`WireError::Unsorted`] when entries are not strictly ascending;
    /// [`WireError::LengthMismatch`] when the MAB table's class bits or the
    /// segment table's entry counts disagree with the entries.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if self.entries.windows(2).any(|w| w[0].key() >= w[1].key()) {
            return Err(WireError::Unsorted);
        }
        let mut classes = vec![0u32; self.mabs.len()];
        let mut per_segment = vec![0u64; self.segments.len()];
        for e in &self.entries {
            e.check(self.mabs.len())?;
            if e.at.segment < self.first_segment || e.at.segment > self.last_segment {
                return Err(WireError::OutsideMab);
            }
            if let Some(n) = per_segment.get_mut((e.at.segment - self.first_segment) as usize) {
                *n += 1;
            }
            classes[usize::from(e.mab)] |= class_bit(e.class);
        }
        if self.mabs.iter().zip(&classes).any(|(m, &c)| m.classes != c)
            || self
                .segments
                .iter()
                .zip(&per_segment)
                .any(|(s, &n)| u64::from(s.entries) != n)
        {
            return Err(WireError::LengthMismatch);
        }
        let (h, meta) = self.layout()?;
        if b.len() as u64 != h.file_len() {
            return Err(WireError::BufferSize);
        }
        b[..INDEX_HEADER_LEN].copy_from_slice(&h.to_bytes());
        let meta_end = INDEX_HEADER_LEN + meta.buffer_len();
        meta.emit(&mut b[INDEX_HEADER_LEN..meta_end])?;
        b[meta_end..h.blocks_offset() as usize].fill(0);
        let per = h.block_entries_max();
        for (i, chunk) in self.entries.chunks(per).enumerate() {
            let at = h.block_offset(i as u32) as usize;
            emit_block(&h, chunk, &mut b[at..at + h.block_len()])?;
        }
        Ok(())
    }

    /// Encode the whole file into a new vector.
    ///
    /// # Errors
    /// As [`IndexFile::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()?];
        self.emit(&mut v)?;
        Ok(v)
    }

    /// Parse and check a whole file.
    ///
    /// # Errors
    /// Errors of [`IndexHeader::parse`], [`IndexMeta::parse`] and [`parse_block`];
    /// [`WireError::Truncated`] / [`WireError::TrailingBytes`] when the length is
    /// not the header's; [`WireError::ReservedNonZero`] for non-zero padding;
    /// [`WireError::Unsorted`] when a fence is not its block's first key or keys
    /// do not ascend across blocks; [`WireError::LengthMismatch`] when the entry
    /// count or the per-segment entry counts disagree.
    pub fn parse(b: &[u8]) -> Result<IndexFile, WireError> {
        let h = IndexHeader::parse(b)?;
        let meta_end = INDEX_HEADER_LEN + h.meta_len as usize;
        let meta = IndexMeta::parse(
            &h,
            b.get(INDEX_HEADER_LEN..meta_end)
                .ok_or(WireError::Truncated)?,
        )?;
        let total = h.file_len();
        if (b.len() as u64) < total {
            return Err(WireError::Truncated);
        }
        if (b.len() as u64) > total {
            return Err(WireError::TrailingBytes);
        }
        if b[meta_end..h.blocks_offset() as usize]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(WireError::ReservedNonZero);
        }
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut per_segment = vec![0u64; meta.segments.len()];
        let mut classes = vec![0u32; meta.mabs.len()];
        for (i, fence) in meta.fences.iter().enumerate() {
            let at = h.block_offset(i as u32) as usize;
            let block = parse_block(&h, meta.mabs.len(), &b[at..at + h.block_len()])?;
            let first = block.first().ok_or(WireError::CountOverrun)?;
            if (Fence {
                mab: first.mab,
                class: first.class,
                start: first.start,
            }) != *fence
            {
                return Err(WireError::Unsorted);
            }
            if entries.last().is_some_and(|p| p.key() >= first.key()) {
                return Err(WireError::Unsorted);
            }
            for e in &block {
                per_segment[(e.at.segment - h.first_segment) as usize] += 1;
                classes[usize::from(e.mab)] |= class_bit(e.class);
            }
            entries.extend(block);
        }
        if entries.len() as u64 != h.entry_count
            || meta
                .segments
                .iter()
                .zip(&per_segment)
                .any(|(s, &n)| u64::from(s.entries) != n)
            || meta.mabs.iter().zip(&classes).any(|(m, &c)| m.classes != c)
        {
            return Err(WireError::LengthMismatch);
        }
        Ok(IndexFile {
            block_shift: h.block_shift,
            first_segment: h.first_segment,
            last_segment: h.last_segment,
            mabs: meta.mabs,
            segments: meta.segments,
            entries,
        })
    }
}

/// Plan the header and meta of an index file of `entry_count` sorted entries,
/// where `entry(i)` gives entry `i` (only the first of each block is asked for).
///
/// # Errors
/// [`WireError::BadRange`] (block shift, segments), [`WireError::LengthMismatch`]
/// (segment table length), [`WireError::CountOverrun`] (too many MABs or blocks).
pub fn plan(
    block_shift: u8,
    first_segment: u32,
    last_segment: u32,
    mabs: &[MabEntry],
    segments: &[SegmentSummary],
    entry_count: u64,
    entry: impl Fn(u64) -> Option<IndexEntry>,
) -> Result<(IndexHeader, IndexMeta), WireError> {
    if !(BLOCK_SHIFT_MIN..=BLOCK_SHIFT_MAX).contains(&block_shift) || last_segment < first_segment {
        return Err(WireError::BadRange);
    }
    if segments.len() as u64 != u64::from(last_segment) - u64::from(first_segment) + 1 {
        return Err(WireError::LengthMismatch);
    }
    let per = ((1usize << block_shift) - BLOCK_HEADER_LEN) / ENTRY_LEN;
    let blocks = entry_count.div_ceil(per as u64);
    let block_count = u32::try_from(blocks).map_err(|_| WireError::CountOverrun)?;
    let mab_count = u32::try_from(mabs.len()).map_err(|_| WireError::CountOverrun)?;
    let mut fences = Vec::with_capacity(blocks as usize);
    for b in 0..blocks {
        let e = entry(b * per as u64).ok_or(WireError::CountOverrun)?;
        fences.push(Fence {
            mab: e.mab,
            class: e.class,
            start: e.start,
        });
    }
    let meta = IndexMeta {
        mabs: mabs.to_vec(),
        segments: segments.to_vec(),
        fences,
    };
    let meta_len = u32::try_from(meta.buffer_len()).map_err(|_| WireError::CountOverrun)?;
    let mut mb = vec![0u8; meta.buffer_len()];
    meta.emit(&mut mb)?;
    let h = IndexHeader {
        block_shift,
        first_segment,
        last_segment,
        entry_count,
        block_count,
        mab_count,
        meta_len,
        meta_crc: crc32c_update(0, &mb),
    };
    h.check()?;
    Ok((h, meta))
}

impl fmt::Display for IndexFile {
    /// The `fields:` rendering used by the test vectors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "index block_len={} segments={}..={} mabs={} entries={}",
            1u32 << self.block_shift,
            self.first_segment,
            self.last_segment,
            self.mabs.len(),
            self.entries.len()
        )?;
        for m in &self.mabs {
            writeln!(f, "mab {} classes={:#x}", m.mab, m.classes)?;
        }
        for s in &self.segments {
            writeln!(
                f,
                "segment {} frames={} entries={} time_us={}..={}",
                s.segment, s.frames, s.entries, s.time_min_us, s.time_max_us
            )?;
        }
        for e in &self.entries {
            let fam = self
                .mabs
                .get(usize::from(e.mab))
                .map_or(Family::V4, |m| m.mab.family());
            writeln!(
                f,
                "entry mab={} class={} kind={} {} time_us={} at={}",
                e.mab,
                e.class,
                e.kind.name(),
                range_text(fam, e.start, e.len),
                e.time_us,
                e.at
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::payload::{Record, SnapshotAnnouncement};
    use std::net::Ipv4Addr;

    fn mab() -> Mab {
        "20.0.0.0/14".parse().unwrap()
    }

    fn payload() -> PayloadRepr {
        PayloadRepr {
            id: PayloadId {
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                seq: Seq(9),
            },
            timestamp_us: 1_764_073_316_000_000,
            records: vec![
                Record::MabUpdate {
                    mab: mab(),
                    mab_seq: 4,
                    commands: vec![Command::SetEtr {
                        start: 0x1400_0004,
                        len: 4,
                        etr: Etr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    }],
                },
                Record::Snapshot(SnapshotAnnouncement {
                    mab: mab(),
                    mab_seq: 4,
                    created_us: 1_764_073_315_000_000,
                    sha256: [0xab; 32],
                }),
            ],
            signature: [1; 64],
        }
    }

    #[test]
    fn payload_record_round_trips_and_checks_items() {
        let rec = HistoryRecord::Payload(
            payload_record(
                7,
                &payload(),
                vec![
                    Item::Set(SetItem {
                        outcome: SetOutcome::Applied,
                        record_index: 0,
                        fragments: vec![],
                        ranges: vec![ChangedRange {
                            start: 0x1400_0004,
                            len: 4,
                            etr: Some(Etr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                        }],
                    }),
                    Item::Snapshot(SnapshotItem {
                        record_index: 1,
                        check: SnapshotCheck::Matched,
                    }),
                ],
            )
            .unwrap(),
        );
        let v = rec.to_vec().unwrap();
        assert_eq!(HistoryRecord::parse(&v), Ok(rec.clone()));
        let mut long = v.clone();
        long.push(0);
        assert_eq!(HistoryRecord::parse(&long), Err(WireError::TrailingBytes));
        // A set item that names the snapshot record is refused.
        let HistoryRecord::Payload(mut p) = rec else {
            unreachable!()
        };
        p.items.remove(1);
        if let Item::Set(s) = &mut p.items[0] {
            s.record_index = 1;
        }
        assert_eq!(
            HistoryRecord::Payload(p).to_vec(),
            Err(WireError::UnknownType)
        );
    }

    #[test]
    fn length_classes_bound_the_start_window() {
        assert_eq!(length_class(1), 0);
        assert_eq!(length_class(15), 0);
        assert_eq!(length_class(16), 1);
        assert_eq!(length_class(u64::MAX), 15);
        assert_eq!(class_window_start(0, 100), 85);
        assert_eq!(class_window_start(0, 3), 0);
        assert_eq!(class_window_start(15, 100), 0);
        // Any range of class c holding u starts inside the window.
        for len in [1u64, 7, 15, 16, 255, 256, 4096, 70_000] {
            let c = length_class(len);
            let u = 1_000_000u64;
            let start = u - (len - 1);
            assert!(start >= class_window_start(c, u));
        }
    }

    #[test]
    fn index_file_round_trips() {
        let e = |start: u64, len: u64, seg: u32, off: u32| IndexEntry {
            mab: 0,
            class: length_class(len),
            kind: EntryKind::ChangeMapped,
            start,
            len,
            time_us: 5,
            at: Location {
                segment: seg,
                offset: off,
            },
        };
        let mut entries: Vec<IndexEntry> = (0..40)
            .map(|i| e(0x1400_0000 + i, 1 + i % 20, i as u32 % 2, 24 + i as u32))
            .collect();
        entries.sort_by_key(IndexEntry::key);
        let f = IndexFile {
            block_shift: 9,
            first_segment: 0,
            last_segment: 1,
            mabs: vec![MabEntry {
                mab: mab(),
                classes: 0b11,
            }],
            segments: vec![
                SegmentSummary {
                    segment: 0,
                    time_min_us: 5,
                    time_max_us: 5,
                    frames: 20,
                    entries: 20,
                },
                SegmentSummary {
                    segment: 1,
                    time_min_us: 5,
                    time_max_us: 5,
                    frames: 20,
                    entries: 20,
                },
            ],
            entries,
        };
        let v = f.to_vec().unwrap();
        assert_eq!(IndexFile::parse(&v), Ok(f.clone()));
        let mut bad = v.clone();
        let last = bad.len() - 1 - 300;
        bad[last] ^= 1;
        assert!(IndexFile::parse(&bad).is_err());
    }
}
