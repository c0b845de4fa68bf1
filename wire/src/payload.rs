//! The signed update payload: what a RUAS sends and replicators copy (seed s3.9,
//! s4.1.1, s4.2.2).
//!
//! spec: payload.md. Layout: a 24-byte [`PayloadHeader`], `body_len` bytes of
//! records, and a 64-byte Ed25519 signature over everything before it. At most
//! [`PAYLOAD_LEN_MAX`] bytes. A datagram is one payload: [`Payload::new_checked`]
//! takes the whole input and refuses trailing bytes, so the signature covers exactly
//! the bytes that were parsed (STYLE practice 4).
//!
//! Replicators call only [`peek_id`], which checks the header and the total length
//! and nothing else; QSDs, MPSes and recorders call [`Payload::new_checked`], which
//! checks every record.

use core::fmt;

use zerocopy::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;
use crate::addr::{MAB_LEN, Mab};
use crate::command::{Command, Commands, commands_len, emit_commands};
use crate::ints::{PayloadId, RuasId, Seq};

/// The largest payload, signature included (s4.1.1: fits one unfragmented
/// datagram on any path with a 1280-byte MTU, with room for DTLS and UDP headers).
pub const PAYLOAD_LEN_MAX: usize = 1200;
/// Bytes of the Ed25519 signature that ends every payload.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of [`PayloadHeader`].
pub const HEADER_LEN: usize = 24;
/// The largest body: what is left of [`PAYLOAD_LEN_MAX`] after header and signature.
pub const BODY_LEN_MAX: usize = PAYLOAD_LEN_MAX - HEADER_LEN - SIGNATURE_LEN;
/// Bytes of a record header (type, flags, length).
pub const RECORD_HEADER_LEN: usize = 4;

/// The version this implementation writes and reads.
pub const VERSION: u8 = 1;
/// `kind` of an update payload. Other datagram kinds on feed sockets are listed in
/// spec/README.md §5.
pub const KIND_PAYLOAD: u8 = 1;

/// Record type: a command set for one MAB.
pub const RECORD_MAB_UPDATE: u8 = 1;
/// Record type: one fragment of a command set too large for one payload.
pub const RECORD_FRAGMENT: u8 = 2;
/// Record type: a snapshot's hash announced in the stream.
pub const RECORD_SNAPSHOT: u8 = 3;
/// Record type: a heartbeat.
pub const RECORD_HEARTBEAT: u8 = 4;

/// The fixed payload header. spec: payload.md §3.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PayloadHeader {
    /// [`VERSION`].
    pub version: u8,
    /// [`KIND_PAYLOAD`].
    pub kind: u8,
    /// RUAS id in the low 7 bits; the high bit is reserved and zero.
    pub ruas: u8,
    /// Reserved flags, zero in version 1.
    pub flags: u8,
    /// The RUAS's epoch.
    pub epoch: U32,
    /// The payload sequence number within the epoch.
    pub seq: U32,
    /// When the RUAS signed the payload: microseconds since 1970-01-01 UTC.
    pub timestamp_us: U64,
    /// Bytes of records between the header and the signature.
    pub body_len: U16,
    /// Number of records in the body.
    pub record_count: U16,
}

const _: () = assert!(size_of::<PayloadHeader>() == HEADER_LEN);

/// Check the header of a datagram and return the payload's identity, without
/// looking at the records. This is all a replicator needs (s2.2: no signature check
/// and no parsing beyond the identity on the hot path).
///
/// # Errors
/// [`WireError::Truncated`], [`WireError::TooLong`], [`WireError::UnsupportedVersion`],
/// [`WireError::UnknownType`], [`WireError::ReservedNonZero`],
/// [`WireError::LengthMismatch`].
pub fn peek_id(bytes: &[u8]) -> Result<PayloadId, WireError> {
    check_header(bytes).map(|(h, _)| header_id(h))
}

fn header_id(h: &PayloadHeader) -> PayloadId {
    PayloadId {
        // check_header refused a set high bit; masking keeps this total.
        ruas: RuasId::masked(h.ruas),
        epoch: h.epoch.get(),
        seq: Seq(h.seq.get()),
    }
}

fn check_header(bytes: &[u8]) -> Result<(&PayloadHeader, &[u8]), WireError> {
    if bytes.len() > PAYLOAD_LEN_MAX {
        return Err(WireError::TooLong);
    }
    let (h, rest) = PayloadHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated)?;
    if h.version != VERSION {
        return Err(WireError::UnsupportedVersion);
    }
    if h.kind != KIND_PAYLOAD {
        return Err(WireError::UnknownType);
    }
    if h.ruas & !RuasId::MAX != 0 || h.flags != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let body_len = usize::from(h.body_len.get());
    if rest.len() != body_len + SIGNATURE_LEN {
        return Err(if rest.len() < body_len + SIGNATURE_LEN {
            WireError::Truncated
        } else {
            WireError::LengthMismatch
        });
    }
    Ok((h, rest))
}

// ---------------------------------------------------------------------------
// Checked view
// ---------------------------------------------------------------------------

/// A fully checked payload, borrowing its bytes. After `new_checked` succeeds no
/// accessor panics and iterating the records cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    bytes: &'a [u8],
    header: &'a PayloadHeader,
}

impl<'a> Payload<'a> {
    /// Check the whole datagram: header, every record, the signature's presence.
    ///
    /// # Errors
    /// Those of [`peek_id`]; [`WireError::CountOverrun`] when records run past the
    /// body or the record count disagrees with the records present; and any error
    /// of a known record's body (see [`RecordView`]).
    pub fn new_checked(bytes: &'a [u8]) -> Result<Payload<'a>, WireError> {
        let (header, rest) = check_header(bytes)?;
        let body = &rest[..usize::from(header.body_len.get())];
        let mut walk = body;
        let mut n = 0u32;
        while !walk.is_empty() {
            let (_, used) = split_record(walk)?;
            walk = &walk[used..];
            n += 1;
        }
        if n != u32::from(header.record_count.get()) {
            return Err(WireError::CountOverrun);
        }
        Ok(Payload { bytes, header })
    }

    /// The header.
    pub fn header(&self) -> &'a PayloadHeader {
        self.header
    }

    /// The identity (RUAS, epoch, sequence).
    pub fn id(&self) -> PayloadId {
        header_id(self.header)
    }

    /// When the RUAS signed it, in microseconds since the Unix epoch.
    pub fn timestamp_us(&self) -> u64 {
        self.header.timestamp_us.get()
    }

    /// The whole payload.
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

    /// The records, in order.
    pub fn records(&self) -> RecordIter<'a> {
        let body = &self.bytes[HEADER_LEN..HEADER_LEN + usize::from(self.header.body_len.get())];
        RecordIter { rest: body }
    }
}

/// A record inside a checked payload.
#[derive(Debug, Clone, Copy)]
pub enum RecordView<'a> {
    /// A complete command set for one MAB.
    MabUpdate {
        /// The MAB.
        mab: Mab,
        /// The set's per-MAB sequence number.
        mab_seq: u64,
        /// The commands, in order.
        commands: Commands<'a>,
    },
    /// One fragment of a command set spread over several payloads.
    Fragment {
        /// The MAB.
        mab: Mab,
        /// The set's per-MAB sequence number.
        mab_seq: u64,
        /// This fragment's index, `0 <= index < count`.
        index: u8,
        /// Number of fragments, at least 2.
        count: u8,
        /// Number of commands in the whole set.
        command_count: u16,
        /// This fragment's share of the encoded command list.
        chunk: &'a [u8],
    },
    /// The hash of a MAB's table at a per-MAB sequence (s4.1.2).
    Snapshot(SnapshotAnnouncement),
    /// The RUAS is alive and idle.
    Heartbeat {
        /// The RUAS's heartbeat interval in milliseconds.
        interval_ms: u32,
    },
    /// A record type this version does not know; skipped by length.
    Unknown {
        /// Its type code.
        kind: u8,
        /// Its flags.
        flags: u8,
        /// Its body.
        body: &'a [u8],
    },
}

/// A snapshot announcement (record type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotAnnouncement {
    /// The MAB.
    pub mab: Mab,
    /// The per-MAB sequence the snapshot reflects: every set up to and including it.
    pub mab_seq: u64,
    /// When the snapshot was taken, microseconds since the Unix epoch; with the MAB
    /// it gives the snapshot's standard file name.
    pub created_us: u64,
    /// The canonical SHA-256 of the MAB's table at `mab_seq` (spec: snapshot.md §4).
    pub sha256: [u8; 32],
}

/// Bytes of the fixed part of a MAB update record body.
const MAB_UPDATE_FIXED: usize = MAB_LEN + 8 + 2;
/// Bytes of the fixed part of a fragment record body.
const FRAGMENT_FIXED: usize = MAB_LEN + 8 + 1 + 1 + 2;
/// Bytes of a snapshot announcement body.
const SNAPSHOT_LEN: usize = MAB_LEN + 8 + 8 + 32;
/// Bytes of a heartbeat body.
const HEARTBEAT_LEN: usize = 4;

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Check one record at the front of `b`; return it and the bytes it used.
fn split_record(b: &[u8]) -> Result<(RecordView<'_>, usize), WireError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(WireError::CountOverrun);
    }
    let kind = b[0];
    let flags = b[1];
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)
        .ok_or(WireError::CountOverrun)?;
    let used = RECORD_HEADER_LEN + len;
    let known = matches!(
        kind,
        RECORD_MAB_UPDATE | RECORD_FRAGMENT | RECORD_SNAPSHOT | RECORD_HEARTBEAT
    );
    if known && flags != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let rec = match kind {
        RECORD_MAB_UPDATE => {
            if body.len() < MAB_UPDATE_FIXED {
                return Err(WireError::LengthMismatch);
            }
            let mab = Mab::read(body)?;
            let mab_seq = be_u64(&body[MAB_LEN..]);
            let count = u16::from_be_bytes([body[MAB_LEN + 8], body[MAB_LEN + 9]]);
            let commands = Commands::new_checked(mab.family(), count, &body[MAB_UPDATE_FIXED..])?;
            RecordView::MabUpdate {
                mab,
                mab_seq,
                commands,
            }
        }
        RECORD_FRAGMENT => {
            if body.len() <= FRAGMENT_FIXED {
                return Err(WireError::LengthMismatch);
            }
            let mab = Mab::read(body)?;
            let mab_seq = be_u64(&body[MAB_LEN..]);
            let index = body[MAB_LEN + 8];
            let count = body[MAB_LEN + 9];
            let command_count = u16::from_be_bytes([body[MAB_LEN + 10], body[MAB_LEN + 11]]);
            if count < 2 || index >= count {
                return Err(WireError::BadFragment);
            }
            if command_count == 0 {
                return Err(WireError::Empty);
            }
            RecordView::Fragment {
                mab,
                mab_seq,
                index,
                count,
                command_count,
                chunk: &body[FRAGMENT_FIXED..],
            }
        }
        RECORD_SNAPSHOT => {
            if body.len() != SNAPSHOT_LEN {
                return Err(WireError::LengthMismatch);
            }
            let mab = Mab::read(body)?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&body[MAB_LEN + 16..]);
            RecordView::Snapshot(SnapshotAnnouncement {
                mab,
                mab_seq: be_u64(&body[MAB_LEN..]),
                created_us: be_u64(&body[MAB_LEN + 8..]),
                sha256,
            })
        }
        RECORD_HEARTBEAT => {
            if body.len() != HEARTBEAT_LEN {
                return Err(WireError::LengthMismatch);
            }
            RecordView::Heartbeat {
                interval_ms: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            }
        }
        _ => RecordView::Unknown { kind, flags, body },
    };
    Ok((rec, used))
}

/// Iterator over the records of a checked [`Payload`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;
    fn next(&mut self) -> Option<RecordView<'a>> {
        let (rec, used) = split_record(self.rest).ok()?;
        self.rest = &self.rest[used..];
        Some(rec)
    }
}

// ---------------------------------------------------------------------------
// Owned representation
// ---------------------------------------------------------------------------

/// One record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A complete command set for one MAB.
    MabUpdate {
        /// The MAB.
        mab: Mab,
        /// The set's per-MAB sequence number.
        mab_seq: u64,
        /// The commands, in order (at least one, at most 65535).
        commands: Vec<Command>,
    },
    /// One fragment of a command set spread over several payloads.
    Fragment {
        /// The MAB.
        mab: Mab,
        /// The set's per-MAB sequence number.
        mab_seq: u64,
        /// This fragment's index.
        index: u8,
        /// Number of fragments (2..=255).
        count: u8,
        /// Commands in the whole set.
        command_count: u16,
        /// This fragment's share of the encoded command list (not empty).
        chunk: Vec<u8>,
    },
    /// A snapshot announcement.
    Snapshot(SnapshotAnnouncement),
    /// A heartbeat.
    Heartbeat {
        /// The RUAS's heartbeat interval in milliseconds.
        interval_ms: u32,
    },
    /// A record of a type this version does not know.
    Unknown {
        /// Its type code.
        kind: u8,
        /// Its flags.
        flags: u8,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Record {
    /// Copy a record out of a checked view.
    pub fn from_view(v: &RecordView<'_>) -> Record {
        match *v {
            RecordView::MabUpdate {
                mab,
                mab_seq,
                commands,
            } => Record::MabUpdate {
                mab,
                mab_seq,
                commands: commands.iter().collect(),
            },
            RecordView::Fragment {
                mab,
                mab_seq,
                index,
                count,
                command_count,
                chunk,
            } => Record::Fragment {
                mab,
                mab_seq,
                index,
                count,
                command_count,
                chunk: chunk.to_vec(),
            },
            RecordView::Snapshot(s) => Record::Snapshot(s),
            RecordView::Heartbeat { interval_ms } => Record::Heartbeat { interval_ms },
            RecordView::Unknown { kind, flags, body } => Record::Unknown {
                kind,
                flags,
                body: body.to_vec(),
            },
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Record::MabUpdate { mab, commands, .. } => {
                MAB_UPDATE_FIXED + commands_len(mab.family(), commands)
            }
            Record::Fragment { chunk, .. } => FRAGMENT_FIXED + chunk.len(),
            Record::Snapshot(_) => SNAPSHOT_LEN,
            Record::Heartbeat { .. } => HEARTBEAT_LEN,
            Record::Unknown { body, .. } => body.len(),
        }
    }

    /// Bytes the record takes in a payload body, its header included.
    pub fn buffer_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body_len()
    }

    fn kind_flags(&self) -> (u8, u8) {
        match self {
            Record::MabUpdate { .. } => (RECORD_MAB_UPDATE, 0),
            Record::Fragment { .. } => (RECORD_FRAGMENT, 0),
            Record::Snapshot(_) => (RECORD_SNAPSHOT, 0),
            Record::Heartbeat { .. } => (RECORD_HEARTBEAT, 0),
            Record::Unknown { kind, flags, .. } => (*kind, *flags),
        }
    }

    /// Encode into exactly [`Record::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] when the body exceeds
    /// 65535 bytes or a set has more than 65535 commands; [`WireError::Empty`] for a
    /// set with no commands; [`WireError::BadFragment`]; command errors.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        let body_len = u16::try_from(self.body_len()).map_err(|_| WireError::TooLong)?;
        let (kind, flags) = self.kind_flags();
        b[0] = kind;
        b[1] = flags;
        b[2..4].copy_from_slice(&body_len.to_be_bytes());
        let body = &mut b[RECORD_HEADER_LEN..];
        match self {
            Record::MabUpdate {
                mab,
                mab_seq,
                commands,
            } => {
                let count = u16::try_from(commands.len()).map_err(|_| WireError::TooLong)?;
                if count == 0 {
                    return Err(WireError::Empty);
                }
                mab.write(body);
                body[MAB_LEN..MAB_LEN + 8].copy_from_slice(&mab_seq.to_be_bytes());
                body[MAB_LEN + 8..MAB_LEN + 10].copy_from_slice(&count.to_be_bytes());
                emit_commands(mab.family(), commands, &mut body[MAB_UPDATE_FIXED..])?;
            }
            Record::Fragment {
                mab,
                mab_seq,
                index,
                count,
                command_count,
                chunk,
            } => {
                if *count < 2 || index >= count || chunk.is_empty() {
                    return Err(WireError::BadFragment);
                }
                if *command_count == 0 {
                    return Err(WireError::Empty);
                }
                mab.write(body);
                body[MAB_LEN..MAB_LEN + 8].copy_from_slice(&mab_seq.to_be_bytes());
                body[MAB_LEN + 8] = *index;
                body[MAB_LEN + 9] = *count;
                body[MAB_LEN + 10..MAB_LEN + 12].copy_from_slice(&command_count.to_be_bytes());
                body[FRAGMENT_FIXED..].copy_from_slice(chunk);
            }
            Record::Snapshot(s) => {
                s.mab.write(body);
                body[MAB_LEN..MAB_LEN + 8].copy_from_slice(&s.mab_seq.to_be_bytes());
                body[MAB_LEN + 8..MAB_LEN + 16].copy_from_slice(&s.created_us.to_be_bytes());
                body[MAB_LEN + 16..].copy_from_slice(&s.sha256);
            }
            Record::Heartbeat { interval_ms } => body.copy_from_slice(&interval_ms.to_be_bytes()),
            Record::Unknown { body: src, .. } => body.copy_from_slice(src),
        }
        Ok(())
    }
}

/// A whole payload, owned: what a RUAS builds and a test compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRepr {
    /// Identity.
    pub id: PayloadId,
    /// Signing time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Records, in order.
    pub records: Vec<Record>,
    /// The signature (all zero until signed).
    pub signature: [u8; SIGNATURE_LEN],
}

impl PayloadRepr {
    /// Copy a checked payload into an owned value.
    pub fn parse(p: &Payload<'_>) -> PayloadRepr {
        PayloadRepr {
            id: p.id(),
            timestamp_us: p.timestamp_us(),
            records: p.records().map(|r| Record::from_view(&r)).collect(),
            signature: p.signature(),
        }
    }

    /// Bytes of the body (all records).
    pub fn body_len(&self) -> usize {
        self.records.iter().map(Record::buffer_len).sum()
    }

    /// Bytes of the whole payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len() + SIGNATURE_LEN
    }

    /// Encode into exactly [`PayloadRepr::buffer_len`] bytes. The signature bytes
    /// are copied from `self.signature`; a signer then overwrites them with a
    /// signature over `b[..b.len() - SIGNATURE_LEN]`.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] above [`PAYLOAD_LEN_MAX`];
    /// errors of [`Record::emit`].
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let total = self.buffer_len();
        if b.len() != total {
            return Err(WireError::BufferSize);
        }
        if total > PAYLOAD_LEN_MAX {
            return Err(WireError::TooLong);
        }
        let records = u16::try_from(self.records.len()).map_err(|_| WireError::TooLong)?;
        let header = PayloadHeader {
            version: VERSION,
            kind: KIND_PAYLOAD,
            ruas: self.id.ruas.get(),
            flags: 0,
            epoch: U32::new(self.id.epoch),
            seq: U32::new(self.id.seq.0),
            timestamp_us: U64::new(self.timestamp_us),
            body_len: U16::new(self.body_len() as u16),
            record_count: U16::new(records),
        };
        b[..HEADER_LEN].copy_from_slice(header.as_bytes());
        let mut at = HEADER_LEN;
        for r in &self.records {
            let n = r.buffer_len();
            r.emit(&mut b[at..at + n])?;
            at += n;
        }
        b[at..].copy_from_slice(&self.signature);
        Ok(())
    }

    /// Encode into a new vector.
    ///
    /// # Errors
    /// As [`PayloadRepr::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

impl fmt::Display for PayloadRepr {
    /// The `fields:` rendering used by the test vectors (spec: README.md §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "payload ruas={} epoch={} seq={} time_us={} records={}",
            self.id.ruas,
            self.id.epoch,
            self.id.seq,
            self.timestamp_us,
            self.records.len()
        )?;
        for r in &self.records {
            match r {
                Record::MabUpdate {
                    mab,
                    mab_seq,
                    commands,
                } => {
                    writeln!(
                        f,
                        "record=mab-update mab={mab} mab_seq={mab_seq} commands={}",
                        commands.len()
                    )?;
                    for c in commands {
                        writeln!(f, "{}", c.display(mab.family()))?;
                    }
                }
                Record::Fragment {
                    mab,
                    mab_seq,
                    index,
                    count,
                    command_count,
                    chunk,
                } => writeln!(
                    f,
                    "record=fragment mab={mab} mab_seq={mab_seq} index={index} count={count} \
                     command_count={command_count} chunk_len={}",
                    chunk.len()
                )?,
                Record::Snapshot(s) => writeln!(
                    f,
                    "record=snapshot mab={} mab_seq={} created_us={} sha256={}",
                    s.mab,
                    s.mab_seq,
                    s.created_us,
                    crate::hex::encode(&s.sha256)
                )?,
                Record::Heartbeat { interval_ms } => {
                    writeln!(f, "record=heartbeat interval_ms={interval_ms}")?
                }
                Record::Unknown { kind, flags, body } => writeln!(
                    f,
                    "record=unknown kind={kind} flags={flags} body_len={}",
                    body.len()
                )?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

/// Split an encoded command list into chunks of at most `chunk_max` bytes, for
/// [`Record::Fragment`]s. Returns `None` when more than 255 chunks would be needed.
pub fn fragment_chunks(encoded: &[u8], chunk_max: usize) -> Option<Vec<&[u8]>> {
    if chunk_max == 0 || encoded.is_empty() {
        return None;
    }
    let chunks: Vec<&[u8]> = encoded.chunks(chunk_max).collect();
    (chunks.len() >= 2 && chunks.len() <= 255).then_some(chunks)
}

/// The most command-list bytes one fragment record can carry in an otherwise
/// empty payload.
pub const FRAGMENT_CHUNK_MAX: usize = BODY_LEN_MAX - RECORD_HEADER_LEN - FRAGMENT_FIXED;

/// The most command-list bytes a single MAB update record can carry in an
/// otherwise empty payload; larger sets must be fragmented.
pub const MAB_UPDATE_COMMANDS_MAX_LEN: usize = BODY_LEN_MAX - RECORD_HEADER_LEN - MAB_UPDATE_FIXED;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Etr, Family};
    use std::net::Ipv4Addr;

    fn sample() -> PayloadRepr {
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        PayloadRepr {
            id: PayloadId {
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                seq: Seq(42),
            },
            timestamp_us: 1_764_000_000_000_000,
            records: vec![
                Record::MabUpdate {
                    mab,
                    mab_seq: 7,
                    commands: vec![Command::SetEtr {
                        start: 0x1400_0005,
                        len: 1,
                        etr: Etr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    }],
                },
                Record::Heartbeat { interval_ms: 1000 },
                Record::Unknown {
                    kind: 200,
                    flags: 1,
                    body: vec![1, 2, 3],
                },
            ],
            signature: [7; 64],
        }
    }

    #[test]
    fn round_trip_and_peek() {
        let r = sample();
        let v = r.to_vec().unwrap();
        let p = Payload::new_checked(&v).unwrap();
        assert_eq!(PayloadRepr::parse(&p), r);
        assert_eq!(peek_id(&v), Ok(r.id));
        assert_eq!(p.signed_bytes().len(), v.len() - 64);
    }

    #[test]
    fn header_rejections() {
        let v = sample().to_vec().unwrap();
        let mut b = v.clone();
        b[0] = 2;
        assert_eq!(peek_id(&b), Err(WireError::UnsupportedVersion));
        let mut b = v.clone();
        b[1] = 9;
        assert_eq!(peek_id(&b), Err(WireError::UnknownType));
        let mut b = v.clone();
        b[2] |= 0x80;
        assert_eq!(peek_id(&b), Err(WireError::ReservedNonZero));
        assert_eq!(peek_id(&v[..v.len() - 1]), Err(WireError::Truncated));
        let mut b = v.clone();
        b.push(0);
        assert_eq!(peek_id(&b), Err(WireError::LengthMismatch));
        assert_eq!(peek_id(&[0u8; 1201]), Err(WireError::TooLong));
    }

    #[test]
    fn too_long_repr_is_refused() {
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        let commands = vec![
            Command::Join {
                start: 0x1400_0000,
                len: 2
            };
            200
        ];
        let r = PayloadRepr {
            records: vec![Record::MabUpdate {
                mab,
                mab_seq: 1,
                commands,
            }],
            ..sample()
        };
        assert_eq!(r.to_vec(), Err(WireError::TooLong));
        assert_eq!(Family::V4.unit_len(), 4);
    }
}
