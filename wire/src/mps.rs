//! The MPS payload bundle: many update payloads in one HTTP body (seed s4.1.3).
//!
//! spec: mps.md. A 4-byte header (version, reserved, count) and `count` entries,
//! each a 2-byte length and one whole update payload. [`Bundle::new_checked`]
//! checks the framing and each entry's payload header ([`crate::payload::peek_id`]),
//! and refuses trailing bytes. It does not check records or signatures: a
//! receiver checks each payload with `Payload::new_checked` and its RUAS
//! signature before storing or using it, exactly as for a payload from a feed.

use core::fmt;

use crate::WireError;
use crate::ints::PayloadId;
use crate::payload::{HEADER_LEN, PAYLOAD_LEN_MAX, SIGNATURE_LEN, peek_id};

/// The version this implementation writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the bundle header.
pub const BUNDLE_HEADER_LEN: usize = 4;
/// Bytes of each entry's length prefix.
pub const ENTRY_LEN_LEN: usize = 2;
/// The smallest entry: a payload with an empty body.
pub const ENTRY_PAYLOAD_LEN_MIN: usize = HEADER_LEN + SIGNATURE_LEN;
/// The most entries one bundle can hold.
pub const BUNDLE_COUNT_MAX: usize = u16::MAX as usize;

/// A checked bundle, borrowing its bytes. After `new_checked` succeeds iterating
/// the entries cannot fail and no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Bundle<'a> {
    count: u16,
    entries: &'a [u8],
}

impl<'a> Bundle<'a> {
    /// Check a whole HTTP body.
    ///
    /// # Errors
    /// In this order: [`WireError::Truncated`] (shorter than the header),
    /// [`WireError::UnsupportedVersion`], [`WireError::ReservedNonZero`]; then per
    /// entry [`WireError::CountOverrun`] (the entries run past the body),
    /// [`WireError::TooLong`] (an entry longer than a payload may be),
    /// [`WireError::Truncated`] (an entry shorter than an empty payload) and any
    /// error of `peek_id` on the entry; finally [`WireError::TrailingBytes`].
    pub fn new_checked(bytes: &'a [u8]) -> Result<Bundle<'a>, WireError> {
        // spec: mps.md §2.
        if bytes.len() < BUNDLE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if bytes[1] != 0 {
            return Err(WireError::ReservedNonZero);
        }
        let count = u16::from_be_bytes([bytes[2], bytes[3]]);
        let entries = &bytes[BUNDLE_HEADER_LEN..];
        let mut walk = entries;
        for _ in 0..count {
            let (_, _, rest) = split_entry(walk)?;
            walk = rest;
        }
        if !walk.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        Ok(Bundle { count, entries })
    }

    /// Number of payloads.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// `true` when the bundle holds no payload.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payloads in order, each with its identity.
    pub fn iter(&self) -> BundleIter<'a> {
        BundleIter {
            left: self.count,
            rest: self.entries,
        }
    }
}

fn split_entry(b: &[u8]) -> Result<(PayloadId, &[u8], &[u8]), WireError> {
    if b.len() < ENTRY_LEN_LEN {
        return Err(WireError::CountOverrun);
    }
    let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
    if len > PAYLOAD_LEN_MAX {
        return Err(WireError::TooLong);
    }
    if len < ENTRY_PAYLOAD_LEN_MIN {
        return Err(WireError::Truncated);
    }
    let payload = b
        .get(ENTRY_LEN_LEN..ENTRY_LEN_LEN + len)
        .ok_or(WireError::CountOverrun)?;
    let id = peek_id(payload)?;
    Ok((id, payload, &b[ENTRY_LEN_LEN + len..]))
}

/// Iterator over the entries of a checked [`Bundle`].
#[derive(Debug, Clone)]
pub struct BundleIter<'a> {
    left: u16,
    rest: &'a [u8],
}

impl<'a> Iterator for BundleIter<'a> {
    type Item = (PayloadId, &'a [u8]);
    fn next(&mut self) -> Option<(PayloadId, &'a [u8])> {
        if self.left == 0 {
            return None;
        }
        let (id, p, rest) = split_entry(self.rest).ok()?;
        self.left -= 1;
        self.rest = rest;
        Some((id, p))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

/// Builds a bundle body payload by payload, without an intermediate list.
#[derive(Debug, Clone)]
pub struct BundleWriter {
    buf: Vec<u8>,
    count: u16,
}

impl Default for BundleWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BundleWriter {
    /// An empty bundle.
    pub fn new() -> BundleWriter {
        BundleWriter {
            buf: vec![VERSION, 0, 0, 0],
            count: 0,
        }
    }

    /// Append one payload. The bytes are checked with `peek_id` so that a writer
    /// cannot produce a bundle its reader refuses.
    ///
    /// # Errors
    /// [`WireError::TooLong`] when the bundle already holds [`BUNDLE_COUNT_MAX`]
    /// payloads; [`WireError::Truncated`] for a payload shorter than an empty one;
    /// errors of `peek_id`.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), WireError> {
        if usize::from(self.count) >= BUNDLE_COUNT_MAX {
            return Err(WireError::TooLong);
        }
        if payload.len() < ENTRY_PAYLOAD_LEN_MIN {
            return Err(WireError::Truncated);
        }
        peek_id(payload)?;
        // peek_id refused anything above PAYLOAD_LEN_MAX, so the length fits.
        let len = payload.len() as u16;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.count += 1;
        self.buf[2..4].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }

    /// Number of payloads so far.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// `true` before the first push.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished body.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A bundle as a value: what a test compares and a vector renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRepr {
    /// The payloads, in order, each a whole update payload.
    pub payloads: Vec<Vec<u8>>,
}

impl BundleRepr {
    /// Copy a checked bundle.
    pub fn parse(b: &Bundle<'_>) -> BundleRepr {
        BundleRepr {
            payloads: b.iter().map(|(_, p)| p.to_vec()).collect(),
        }
    }

    /// Bytes of the encoding.
    pub fn buffer_len(&self) -> usize {
        BUNDLE_HEADER_LEN
            + self
                .payloads
                .iter()
                .map(|p| ENTRY_LEN_LEN + p.len())
                .sum::<usize>()
    }

    /// Encode into exactly [`BundleRepr::buffer_len`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] for more than
    /// [`BUNDLE_COUNT_MAX`] payloads; errors of [`BundleWriter::push`] for a
    /// payload whose header is invalid.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != self.buffer_len() {
            return Err(WireError::BufferSize);
        }
        let mut w = BundleWriter::new();
        for p in &self.payloads {
            w.push(p)?;
        }
        b.copy_from_slice(&w.finish());
        Ok(())
    }
}

impl fmt::Display for BundleRepr {
    /// The `fields:` rendering used by the test vectors (spec: README.md §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bundle count={}", self.payloads.len())?;
        for p in &self.payloads {
            match peek_id(p) {
                Ok(id) => writeln!(f, "entry id={id} len={}", p.len())?,
                Err(e) => writeln!(f, "entry invalid={} len={}", e.name(), p.len())?,
            }
        }
        Ok(())
    }
}
