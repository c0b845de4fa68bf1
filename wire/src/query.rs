//! The query protocol between ITRs/QSCs and QSDs/QSCs (seed s1.1, s3.12, s3.13,
//! s4.3).
//!
//! spec: query.md. Four datagrams, each starting with `version` and `kind`: a map
//! request (nonce, address), a map reply (nonce, status, the whole micronet, its
//! ETR, a cache time), a notification (a changed mapping for a range the querier
//! was told about) and a notification acknowledgement. All fixed-size except the
//! notification, whose entries follow a fixed header.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zerocopy::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;
use crate::addr::{Etr, Family, check_range, read_unit, unit_addr, write_unit};

/// The version this implementation speaks.
pub const VERSION: u8 = 1;
/// Kind of a [`MapRequest`].
pub const KIND_REQUEST: u8 = 1;
/// Kind of a [`MapReply`].
pub const KIND_REPLY: u8 = 2;
/// Kind of a [`Notification`].
pub const KIND_NOTIFY: u8 = 3;
/// Kind of a [`NotifyAck`].
pub const KIND_ACK: u8 = 4;

/// The largest query datagram (a notification with the most entries).
pub const QUERY_LEN_MAX: usize = 1200;
/// Notification flag: too many micronets to list; drop the whole range from the
/// cache and ask again when needed.
pub const NOTIFY_FLAG_FLUSH: u8 = 0x01;

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/// The 12 bytes that start a request and a reply. spec: query.md §3, §4.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct QueryHeader {
    /// [`VERSION`].
    pub version: u8,
    /// [`KIND_REQUEST`] or [`KIND_REPLY`].
    pub kind: u8,
    /// Request: reserved flags (zero). Reply: the [`Status`] code.
    pub flags_or_status: u8,
    /// Address family code of the address or micronet: 4 or 6.
    pub family: u8,
    /// Chosen by the querier; echoed in the reply.
    pub nonce: U64,
}
const _: () = assert!(size_of::<QueryHeader>() == 12);

/// The fixed part of a notification. spec: query.md §5.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NotifyHeader {
    /// [`VERSION`].
    pub version: u8,
    /// [`KIND_NOTIFY`].
    pub kind: u8,
    /// [`NOTIFY_FLAG_FLUSH`] or zero; other bits reserved.
    pub flags: u8,
    /// Address family code.
    pub family: u8,
    /// Identifies this notification; the ack echoes it.
    pub notify_id: U64,
    /// The nonce of the query whose reply this notification updates.
    pub nonce: U64,
    /// Seconds the new mappings may be cached: what remained of the original reply's
    /// cache time (s4.3: they leave the cache when the original would have).
    pub cache_time_s: U32,
    /// Number of entries that follow.
    pub count: U16,
    /// Reserved, zero.
    pub reserved: U16,
}
const _: () = assert!(size_of::<NotifyHeader>() == 28);

/// A notification acknowledgement. spec: query.md §6.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AckHeader {
    /// [`VERSION`].
    pub version: u8,
    /// [`KIND_ACK`].
    pub kind: u8,
    /// Reserved, zero.
    pub reserved: U16,
    /// The notification's id.
    pub notify_id: U64,
}
const _: () = assert!(size_of::<AckHeader>() == 12);

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// The answer's status. spec: query.md §4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The address is in a micronet; the reply carries it and its ETR.
    Found = 0,
    /// The address is in a MAB but in no micronet; the reply carries the extent of
    /// the unassigned gap (packets to it are dropped).
    Unassigned = 1,
    /// The address is not in any MAB: not SPI space.
    NotSpi = 2,
    /// The server's copy of this MAB is being resynced: ask another server.
    Resyncing = 3,
    /// The request was malformed (sent only when its nonce could be read).
    Malformed = 4,
    /// The server does not answer this querier (not in its client list, or rate
    /// limited).
    Refused = 5,
}

impl Status {
    /// Decode a status code.
    ///
    /// # Errors
    /// [`WireError::UnknownStatus`].
    pub const fn from_code(c: u8) -> Result<Status, WireError> {
        Ok(match c {
            0 => Status::Found,
            1 => Status::Unassigned,
            2 => Status::NotSpi,
            3 => Status::Resyncing,
            4 => Status::Malformed,
            5 => Status::Refused,
            _ => return Err(WireError::UnknownStatus),
        })
    }

    /// `true` when the reply carries a range (Found, Unassigned).
    pub const fn has_range(self) -> bool {
        matches!(self, Status::Found | Status::Unassigned)
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Found => "found",
            Status::Unassigned => "unassigned",
            Status::NotSpi => "not-spi",
            Status::Resyncing => "resyncing",
            Status::Malformed => "malformed",
            Status::Refused => "refused",
        }
    }
}

/// "What is the mapping of this address?"
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapRequest {
    /// Echoed in the reply; a querier matches replies by it.
    pub nonce: u64,
    /// The address (its family decides the reply's).
    pub addr: IpAddr,
}

/// A micronet (or gap) with its mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappedRange {
    /// First unit.
    pub start: u64,
    /// Length in units (at least 1).
    pub len: u64,
    /// The ETR (zero for "drop", and for unassigned gaps).
    pub etr: Etr,
}

/// The answer to a [`MapRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapReply {
    /// The request's nonce.
    pub nonce: u64,
    /// The outcome.
    pub status: Status,
    /// Family of the queried address.
    pub family: Family,
    /// Seconds the answer may be cached (also for negative answers).
    pub cache_time_s: u32,
    /// The micronet (Found) or gap (Unassigned); `None` for other statuses.
    pub range: Option<MappedRange>,
}

/// The new mapping of a range a querier was told about (s4.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Its id; the ack echoes it.
    pub notify_id: u64,
    /// The original query's nonce.
    pub nonce: u64,
    /// Family.
    pub family: Family,
    /// Seconds the entries may be cached.
    pub cache_time_s: u32,
    /// Drop the range from the cache instead of replacing it.
    pub flush: bool,
    /// The micronets (clipped to the originally replied range) now covering it, in
    /// order; units of the range not covered are unassigned. Empty when `flush`.
    pub entries: Vec<MappedRange>,
}

/// "I have your notification."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotifyAck {
    /// The notification's id.
    pub notify_id: u64,
}

/// Any query-protocol datagram.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryMessage {
    /// A map request.
    Request(MapRequest),
    /// A map reply.
    Reply(MapReply),
    /// A notification.
    Notify(Notification),
    /// A notification acknowledgement.
    Ack(NotifyAck),
}

/// Bytes of a request for `family`.
pub const fn request_len(family: Family) -> usize {
    12 + family.addr_len()
}

/// Bytes of a reply for `family`.
pub const fn reply_len(family: Family) -> usize {
    12 + 4 + 2 * family.unit_len() + family.etr_len()
}

/// Bytes of one notification entry for `family`.
pub const fn entry_len(family: Family) -> usize {
    2 * family.unit_len() + family.etr_len()
}

/// The most entries a notification for `family` can carry in [`QUERY_LEN_MAX`].
pub const fn notify_entries_max(family: Family) -> usize {
    (QUERY_LEN_MAX - size_of::<NotifyHeader>()) / entry_len(family)
}

fn read_range(family: Family, b: &[u8]) -> MappedRange {
    let u = family.unit_len();
    MappedRange {
        start: read_unit(family, b),
        len: read_unit(family, &b[u..]),
        etr: Etr::read(family, &b[2 * u..]),
    }
}

fn write_range(family: Family, r: &MappedRange, b: &mut [u8]) {
    let u = family.unit_len();
    write_unit(family, r.start, b);
    write_unit(family, r.len, &mut b[u..]);
    r.etr.write(&mut b[2 * u..]);
}

fn check_mapped(family: Family, r: &MappedRange) -> Result<(), WireError> {
    check_range(family, r.start, r.len)?;
    if r.etr.family() != family {
        return Err(WireError::BadFamily);
    }
    Ok(())
}

impl QueryMessage {
    /// Parse one whole datagram.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::TrailingBytes`], [`WireError::TooLong`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownType`],
    /// [`WireError::ReservedNonZero`], [`WireError::BadFamily`],
    /// [`WireError::UnknownStatus`], [`WireError::StatusFieldsNonZero`],
    /// [`WireError::BadRange`], [`WireError::CountOverrun`], [`WireError::Unsorted`].
    pub fn parse(b: &[u8]) -> Result<QueryMessage, WireError> {
        if b.len() > QUERY_LEN_MAX {
            return Err(WireError::TooLong);
        }
        if b.len() < 2 {
            return Err(WireError::Truncated);
        }
        if b[0] != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        match b[1] {
            KIND_REQUEST => parse_request(b).map(QueryMessage::Request),
            KIND_REPLY => parse_reply(b).map(QueryMessage::Reply),
            KIND_NOTIFY => parse_notify(b).map(QueryMessage::Notify),
            KIND_ACK => {
                let h = AckHeader::ref_from_bytes(exact(b, size_of::<AckHeader>())?)
                    .map_err(|_| WireError::Truncated)?;
                if h.reserved.get() != 0 {
                    return Err(WireError::ReservedNonZero);
                }
                Ok(QueryMessage::Ack(NotifyAck {
                    notify_id: h.notify_id.get(),
                }))
            }
            _ => Err(WireError::UnknownType),
        }
    }

    /// Read just the nonce of something that looks like a request (version 1, kind
    /// request, at least 12 bytes), so a server can answer `Malformed` to a request
    /// it cannot otherwise parse.
    pub fn request_nonce(b: &[u8]) -> Option<u64> {
        let (h, _) = QueryHeader::ref_from_prefix(b).ok()?;
        (h.version == VERSION && h.kind == KIND_REQUEST).then(|| h.nonce.get())
    }

    /// Bytes of the encoded message.
    pub fn buffer_len(&self) -> usize {
        match self {
            QueryMessage::Request(r) => request_len(crate::addr::unit_of(r.addr).0),
            QueryMessage::Reply(r) => reply_len(r.family),
            QueryMessage::Notify(n) => {
                size_of::<NotifyHeader>() + n.entries.len() * entry_len(n.family)
            }
            QueryMessage::Ack(_) => size_of::<AckHeader>(),
        }
    }

    /// Encode into exactly [`QueryMessage::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] for a notification with too
    /// many entries; [`WireError::StatusFieldsNonZero`] for a range on a status
    /// without one or none on one with; range and family errors; [`WireError::Unsorted`].
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        match self {
            QueryMessage::Request(r) => {
                let (family, _) = crate::addr::unit_of(r.addr);
                let h = QueryHeader {
                    version: VERSION,
                    kind: KIND_REQUEST,
                    flags_or_status: 0,
                    family: family.code(),
                    nonce: U64::new(r.nonce),
                };
                b[..12].copy_from_slice(h.as_bytes());
                match r.addr {
                    IpAddr::V4(a) => b[12..].copy_from_slice(&a.octets()),
                    IpAddr::V6(a) => b[12..].copy_from_slice(&a.octets()),
                }
            }
            QueryMessage::Reply(r) => {
                if r.status.has_range() != r.range.is_some() {
                    return Err(WireError::StatusFieldsNonZero);
                }
                if let Some(range) = &r.range {
                    check_mapped(r.family, range)?;
                }
                let h = QueryHeader {
                    version: VERSION,
                    kind: KIND_REPLY,
                    flags_or_status: r.status as u8,
                    family: r.family.code(),
                    nonce: U64::new(r.nonce),
                };
                b[..12].copy_from_slice(h.as_bytes());
                b[12..16].copy_from_slice(&r.cache_time_s.to_be_bytes());
                match &r.range {
                    Some(range) => write_range(r.family, range, &mut b[16..]),
                    None => b[16..].fill(0),
                }
            }
            QueryMessage::Notify(n) => {
                if n.entries.len() > notify_entries_max(n.family) {
                    return Err(WireError::TooLong);
                }
                check_entries(n.family, n.flush, &n.entries)?;
                let h = NotifyHeader {
                    version: VERSION,
                    kind: KIND_NOTIFY,
                    flags: if n.flush { NOTIFY_FLAG_FLUSH } else { 0 },
                    family: n.family.code(),
                    notify_id: U64::new(n.notify_id),
                    nonce: U64::new(n.nonce),
                    cache_time_s: U32::new(n.cache_time_s),
                    count: U16::new(n.entries.len() as u16),
                    reserved: U16::new(0),
                };
                let hl = size_of::<NotifyHeader>();
                b[..hl].copy_from_slice(h.as_bytes());
                let el = entry_len(n.family);
                for (i, e) in n.entries.iter().enumerate() {
                    write_range(n.family, e, &mut b[hl + i * el..]);
                }
            }
            QueryMessage::Ack(a) => {
                let h = AckHeader {
                    version: VERSION,
                    kind: KIND_ACK,
                    reserved: U16::new(0),
                    notify_id: U64::new(a.notify_id),
                };
                b.copy_from_slice(h.as_bytes());
            }
        }
        Ok(())
    }

    /// Encode into a new vector.
    ///
    /// # Errors
    /// As [`QueryMessage::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

fn exact(b: &[u8], n: usize) -> Result<&[u8], WireError> {
    match b.len().cmp(&n) {
        core::cmp::Ordering::Less => Err(WireError::Truncated),
        core::cmp::Ordering::Greater => Err(WireError::TrailingBytes),
        core::cmp::Ordering::Equal => Ok(b),
    }
}

fn parse_request(b: &[u8]) -> Result<MapRequest, WireError> {
    let (h, rest) = QueryHeader::ref_from_prefix(b).map_err(|_| WireError::Truncated)?;
    if h.flags_or_status != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let family = Family::from_code(h.family)?;
    let a = exact(rest, family.addr_len())?;
    let addr = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        Family::V6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    Ok(MapRequest {
        nonce: h.nonce.get(),
        addr,
    })
}

fn parse_reply(b: &[u8]) -> Result<MapReply, WireError> {
    let (h, rest) = QueryHeader::ref_from_prefix(b).map_err(|_| WireError::Truncated)?;
    let status = Status::from_code(h.flags_or_status)?;
    let family = Family::from_code(h.family)?;
    let rest = exact(rest, reply_len(family) - 12)?;
    let cache_time_s = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let fields = &rest[4..];
    let range = if status.has_range() {
        let r = read_range(family, fields);
        check_range(family, r.start, r.len)?;
        if status == Status::Unassigned && !r.etr.is_zero() {
            return Err(WireError::StatusFieldsNonZero);
        }
        Some(r)
    } else {
        if fields.iter().any(|&x| x != 0) {
            return Err(WireError::StatusFieldsNonZero);
        }
        None
    };
    Ok(MapReply {
        nonce: h.nonce.get(),
        status,
        family,
        cache_time_s,
        range,
    })
}

fn check_entries(family: Family, flush: bool, entries: &[MappedRange]) -> Result<(), WireError> {
    if flush && !entries.is_empty() {
        return Err(WireError::StatusFieldsNonZero);
    }
    let mut end: u128 = 0;
    for e in entries {
        check_mapped(family, e)?;
        if u128::from(e.start) < end {
            return Err(WireError::Unsorted);
        }
        end = u128::from(e.start) + u128::from(e.len);
    }
    Ok(())
}

fn parse_notify(b: &[u8]) -> Result<Notification, WireError> {
    let (h, rest) = NotifyHeader::ref_from_prefix(b).map_err(|_| WireError::Truncated)?;
    if h.flags & !NOTIFY_FLAG_FLUSH != 0 || h.reserved.get() != 0 {
        return Err(WireError::ReservedNonZero);
    }
    let family = Family::from_code(h.family)?;
    let el = entry_len(family);
    let count = usize::from(h.count.get());
    let need = count.checked_mul(el).ok_or(WireError::CountOverrun)?;
    if rest.len() < need {
        return Err(WireError::CountOverrun);
    }
    if rest.len() > need {
        return Err(WireError::TrailingBytes);
    }
    let entries: Vec<MappedRange> = rest
        .chunks_exact(el)
        .map(|c| read_range(family, c))
        .collect();
    let flush = h.flags & NOTIFY_FLAG_FLUSH != 0;
    check_entries(family, flush, &entries)?;
    Ok(Notification {
        notify_id: h.notify_id.get(),
        nonce: h.nonce.get(),
        family,
        cache_time_s: h.cache_time_s.get(),
        flush,
        entries,
    })
}

impl fmt::Display for QueryMessage {
    /// The `fields:` rendering used by the test vectors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = |f: &mut fmt::Formatter<'_>, family, r: &MappedRange| {
            write!(
                f,
                "start={} len={} etr={}",
                unit_addr(family, r.start),
                r.len,
                r.etr
            )
        };
        match self {
            QueryMessage::Request(r) => writeln!(f, "request nonce={} addr={}", r.nonce, r.addr),
            QueryMessage::Reply(r) => {
                write!(
                    f,
                    "reply nonce={} status={} family={} cache_time_s={}",
                    r.nonce,
                    r.status.name(),
                    r.family.code(),
                    r.cache_time_s
                )?;
                if let Some(x) = &r.range {
                    f.write_str(" ")?;
                    range(f, r.family, x)?;
                }
                writeln!(f)
            }
            QueryMessage::Notify(n) => {
                writeln!(
                    f,
                    "notify id={} nonce={} family={} cache_time_s={} flush={} entries={}",
                    n.notify_id,
                    n.nonce,
                    n.family.code(),
                    n.cache_time_s,
                    n.flush,
                    n.entries.len()
                )?;
                for e in &n.entries {
                    f.write_str("entry ")?;
                    range(f, n.family, e)?;
                    writeln!(f)?;
                }
                Ok(())
            }
            QueryMessage::Ack(a) => writeln!(f, "ack id={}", a.notify_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(request_len(Family::V4), 16);
        assert_eq!(request_len(Family::V6), 28);
        assert_eq!(reply_len(Family::V4), 28);
        assert_eq!(reply_len(Family::V6), 48);
        assert_eq!(notify_entries_max(Family::V4), 97);
        assert_eq!(notify_entries_max(Family::V6), 36);
    }

    #[test]
    fn reply_without_range_must_be_zero() {
        let r = QueryMessage::Reply(MapReply {
            nonce: 1,
            status: Status::NotSpi,
            family: Family::V4,
            cache_time_s: 60,
            range: None,
        });
        let mut b = r.to_vec().unwrap();
        assert_eq!(QueryMessage::parse(&b), Ok(r));
        b[20] = 1;
        assert_eq!(QueryMessage::parse(&b), Err(WireError::StatusFieldsNonZero));
    }

    #[test]
    fn nonce_of_a_bad_request_is_readable() {
        let mut b = QueryMessage::Request(MapRequest {
            nonce: 77,
            addr: "20.0.0.1".parse().unwrap(),
        })
        .to_vec()
        .unwrap();
        b[3] = 5;
        assert_eq!(QueryMessage::parse(&b), Err(WireError::BadFamily));
        assert_eq!(QueryMessage::request_nonce(&b), Some(77));
    }
}
