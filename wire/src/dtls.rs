//! DTLS 1.2 record headers and the start of a ClientHello, as far as a receiver
//! must read them to route a datagram *before* the TLS library sees it.
//!
//! spec: dtls.md §3 (RFC 6347 §4.1 record layer, §4.2.2 handshake header, §4.2.1
//! ClientHello). ivip's link layer hands every datagram of a feed socket to a
//! DTLS association chosen by the sender's address; to choose, it must tell a
//! fresh ClientHello (a new association, perhaps after the peer restarted) from
//! records of an existing association, and compare ClientHello randoms when both
//! sides open at once. That is all this module reads.
//!
//! What it is not: a DTLS implementation. Nothing is decrypted or verified here;
//! OpenSSL does that (the `ivip` crate's `dtls` module). Fields not needed for
//! routing (cipher suites, extensions) are not looked at.

use core::fmt;

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;

/// Bytes of a DTLS record header.
pub const RECORD_HEADER_LEN: usize = 13;
/// Bytes of a DTLS handshake message header.
pub const HANDSHAKE_HEADER_LEN: usize = 12;
/// The largest fragment a record may carry (RFC 6347 §4.1: 2^14 + 2048).
pub const RECORD_FRAGMENT_MAX: usize = 16_384 + 2_048;
/// The major version byte of every DTLS version (DTLS 1.0 is 0xfeff, 1.2 0xfefd).
pub const VERSION_MAJOR: u8 = 0xfe;
/// DTLS 1.2 on the wire.
pub const VERSION_DTLS12: u16 = 0xfefd;
/// DTLS 1.0 on the wire (allowed in record headers of a first ClientHello and of a
/// HelloVerifyRequest, RFC 6347 §4.2.1).
pub const VERSION_DTLS10: u16 = 0xfeff;
/// Handshake message type of a ClientHello.
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Bytes of the ClientHello random.
pub const RANDOM_LEN: usize = 32;

/// A record's content type (RFC 6347 §4.1, RFC 5246 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// 20: change_cipher_spec.
    ChangeCipherSpec,
    /// 21: alert.
    Alert,
    /// 22: handshake.
    Handshake,
    /// 23: application_data.
    ApplicationData,
}

impl ContentType {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            ContentType::ChangeCipherSpec => 20,
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }

    /// From the wire code.
    ///
    /// # Errors
    /// [`WireError::UnknownType`] for any other code (an ivip datagram sent as
    /// plain UDP starts with its version byte, 1, and lands here).
    pub const fn from_code(c: u8) -> Result<ContentType, WireError> {
        match c {
            20 => Ok(ContentType::ChangeCipherSpec),
            21 => Ok(ContentType::Alert),
            22 => Ok(ContentType::Handshake),
            23 => Ok(ContentType::ApplicationData),
            _ => Err(WireError::UnknownType),
        }
    }

    /// A lower-case name (also a metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            ContentType::ChangeCipherSpec => "change_cipher_spec",
            ContentType::Alert => "alert",
            ContentType::Handshake => "handshake",
            ContentType::ApplicationData => "application_data",
        }
    }
}

/// The fixed layout of a record header. spec: dtls.md §3.1.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// [`ContentType`] code.
    pub content_type: u8,
    /// Protocol version: major [`VERSION_MAJOR`], minor 0xfd (1.2) or 0xff (1.0).
    pub version: U16,
    /// Epoch: 0 until the first ChangeCipherSpec, then 1, ...
    pub epoch: U16,
    /// Record sequence number within the epoch, 48 bits.
    pub sequence: [u8; 6],
    /// Bytes of the fragment that follows.
    pub length: U16,
}

const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_LEN);

/// One record: its header fields and its (opaque, maybe encrypted) fragment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordRepr {
    /// The content type.
    pub content_type: ContentType,
    /// The version field as sent.
    pub version: u16,
    /// The epoch.
    pub epoch: u16,
    /// The 48-bit sequence number.
    pub sequence: u64,
    /// The fragment.
    pub fragment: Vec<u8>,
}

/// A record borrowed from a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The content type.
    pub content_type: ContentType,
    /// The version field as sent.
    pub version: u16,
    /// The epoch.
    pub epoch: u16,
    /// The 48-bit sequence number.
    pub sequence: u64,
    /// The fragment.
    pub fragment: &'a [u8],
}

/// Split the first record off a datagram (a datagram may hold several records,
/// RFC 6347 §4.1.1); returns the record and the bytes after it.
///
/// # Errors
/// In this order (spec: dtls.md §3.1): [`WireError::Truncated`] (fewer than 13
/// bytes), [`WireError::UnknownType`] (content type not 20..=23),
/// [`WireError::UnsupportedVersion`] (major version not 0xfe),
/// [`WireError::TooLong`] (length above [`RECORD_FRAGMENT_MAX`]),
/// [`WireError::Truncated`] (length beyond the datagram).
pub fn split_record(datagram: &[u8]) -> Result<(Record<'_>, &[u8]), WireError> {
    let (h, rest) = RecordHeader::ref_from_prefix(datagram).map_err(|_| WireError::Truncated)?;
    let content_type = ContentType::from_code(h.content_type)?;
    let version = h.version.get();
    if version >> 8 != u16::from(VERSION_MAJOR) {
        return Err(WireError::UnsupportedVersion);
    }
    let len = usize::from(h.length.get());
    if len > RECORD_FRAGMENT_MAX {
        return Err(WireError::TooLong);
    }
    if len > rest.len() {
        return Err(WireError::Truncated);
    }
    let mut seq = [0u8; 8];
    seq[2..].copy_from_slice(&h.sequence);
    Ok((
        Record {
            content_type,
            version,
            epoch: h.epoch.get(),
            sequence: u64::from_be_bytes(seq),
            fragment: &rest[..len],
        },
        &rest[len..],
    ))
}

impl RecordRepr {
    /// Check and decode exactly one record (no bytes after it).
    ///
    /// # Errors
    /// Those of [`split_record`], then [`WireError::TrailingBytes`].
    pub fn parse(bytes: &[u8]) -> Result<RecordRepr, WireError> {
        let (r, rest) = split_record(bytes)?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        Ok(RecordRepr {
            content_type: r.content_type,
            version: r.version,
            epoch: r.epoch,
            sequence: r.sequence,
            fragment: r.fragment.to_vec(),
        })
    }

    /// Bytes [`RecordRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        RECORD_HEADER_LEN + self.fragment.len()
    }

    /// Write the record into `buf` of exactly [`RecordRepr::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`] for a buffer of another size;
    /// [`WireError::TooLong`] for a fragment above [`RECORD_FRAGMENT_MAX`] or a
    /// sequence number above 48 bits; [`WireError::UnsupportedVersion`] for a
    /// version whose major byte is not 0xfe.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        if self.fragment.len() > RECORD_FRAGMENT_MAX || self.sequence >> 48 != 0 {
            return Err(WireError::TooLong);
        }
        if self.version >> 8 != u16::from(VERSION_MAJOR) {
            return Err(WireError::UnsupportedVersion);
        }
        let seq = self.sequence.to_be_bytes();
        let mut sequence = [0u8; 6];
        sequence.copy_from_slice(&seq[2..]);
        let h = RecordHeader {
            content_type: self.content_type.code(),
            version: U16::new(self.version),
            epoch: U16::new(self.epoch),
            sequence,
            // Fits: checked against RECORD_FRAGMENT_MAX above.
            length: U16::new(self.fragment.len() as u16),
        };
        let (head, body) = buf.split_at_mut(RECORD_HEADER_LEN);
        head.copy_from_slice(h.as_bytes());
        body.copy_from_slice(&self.fragment);
        Ok(())
    }

    /// The record as bytes.
    ///
    /// # Errors
    /// As [`RecordRepr::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

impl fmt::Display for RecordRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record={} version=0x{:04x} epoch={} sequence={} length={}",
            self.content_type.name(),
            self.version,
            self.epoch,
            self.sequence,
            self.fragment.len()
        )
    }
}

// ---------------------------------------------------------------------------
// ClientHello
// ---------------------------------------------------------------------------

/// What a receiver reads of a ClientHello: enough to tell a new association from a
/// retransmission and to break a tie when both sides open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientHelloPeek {
    /// The record's sequence number (a HelloVerifyRequest echoes it).
    pub record_sequence: u64,
    /// The handshake message sequence: 0 for the first ClientHello, 1 for the one
    /// that echoes a cookie.
    pub message_seq: u16,
    /// The client_version field (0xfefd for DTLS 1.2).
    pub client_version: u16,
    /// The client random: the same in both ClientHellos of one handshake
    /// (RFC 6347 §4.2.1), so it names the attempt.
    pub random: [u8; RANDOM_LEN],
}

/// Read the ClientHello at the start of a datagram.
///
/// # Errors
/// Those of [`split_record`] for the first record; then, in this order (spec:
/// dtls.md §3.2): [`WireError::UnknownType`] (not a handshake record),
/// [`WireError::UnsupportedVersion`] (epoch not 0: a ClientHello that opens an
/// association is never encrypted), [`WireError::UnknownType`] (a handshake
/// message other than ClientHello), [`WireError::Truncated`] (fragment shorter than the handshake header plus
/// version and random), [`WireError::BadFragment`] (a fragment that does not
/// start at offset 0, or that claims more than the message length or than the
/// record holds), [`WireError::Truncated`] (a declared fragment length too short
/// to hold the version and random).
pub fn peek_client_hello(datagram: &[u8]) -> Result<ClientHelloPeek, WireError> {
    let (r, _) = split_record(datagram)?;
    if r.content_type != ContentType::Handshake {
        return Err(WireError::UnknownType);
    }
    if r.epoch != 0 {
        return Err(WireError::UnsupportedVersion);
    }
    let f = r.fragment;
    // msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)
    if let Some(&t) = f.first()
        && t != HANDSHAKE_CLIENT_HELLO
    {
        return Err(WireError::UnknownType);
    }
    if f.len() < HANDSHAKE_HEADER_LEN + 2 + RANDOM_LEN {
        return Err(WireError::Truncated);
    }
    let u24 = |i: usize| u32::from_be_bytes([0, f[i], f[i + 1], f[i + 2]]) as usize;
    let length = u24(1);
    let message_seq = u16::from_be_bytes([f[4], f[5]]);
    let offset = u24(6);
    let frag_len = u24(9);
    if offset != 0 || frag_len > length || frag_len > f.len() - HANDSHAKE_HEADER_LEN {
        return Err(WireError::BadFragment);
    }
    // The version and random must lie inside the declared fragment, not merely
    // inside the record.
    if frag_len < 2 + RANDOM_LEN {
        return Err(WireError::Truncated);
    }
    let body = &f[HANDSHAKE_HEADER_LEN..];
    let mut random = [0u8; RANDOM_LEN];
    random.copy_from_slice(&body[2..2 + RANDOM_LEN]);
    Ok(ClientHelloPeek {
        record_sequence: r.sequence,
        message_seq,
        client_version: u16::from_be_bytes([body[0], body[1]]),
        random,
    })
}

impl fmt::Display for ClientHelloPeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client_hello record_sequence={} message_seq={} client_version=0x{:04x} random={}",
            self.record_sequence,
            self.message_seq,
            self.client_version,
            crate::hex::encode(&self.random)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ivip_datagrams_are_not_records() {
        // An ivip payload starts with version 1, kind 1.
        let mut plain = vec![1u8, 1];
        plain.resize(100, 0);
        assert_eq!(split_record(&plain).err(), Some(WireError::UnknownType));
    }

    #[test]
    fn several_records_split_in_order() {
        let a = RecordRepr {
            content_type: ContentType::Handshake,
            version: VERSION_DTLS12,
            epoch: 0,
            sequence: 1,
            fragment: vec![1, 2, 3],
        };
        let b = RecordRepr {
            content_type: ContentType::ChangeCipherSpec,
            version: VERSION_DTLS12,
            epoch: 0,
            sequence: 2,
            fragment: vec![1],
        };
        let mut d = a.to_vec().unwrap();
        d.extend(b.to_vec().unwrap());
        let (r1, rest) = split_record(&d).unwrap();
        assert_eq!((r1.sequence, r1.fragment), (1, &[1u8, 2, 3][..]));
        let (r2, rest) = split_record(rest).unwrap();
        assert_eq!(r2.content_type, ContentType::ChangeCipherSpec);
        assert!(rest.is_empty());
        assert_eq!(RecordRepr::parse(&d).err(), Some(WireError::TrailingBytes));
    }
}
