//! Append-only log files: a segment header, then checksummed frames.
//!
//! spec: log.md. Used for the RUAS write-ahead log, the UAS audit trail and the
//! history recorder's segments. A frame is `length (4 bytes) | CRC-32C (4 bytes) |
//! body`; the CRC covers the length and the body, so a torn or corrupted frame is
//! told apart from a valid one. This module only frames bytes; what the bodies mean
//! is each user's format (wal.rs, ...).

use crate::WireError;

/// The eight magic bytes that open a segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"IVIPLOG1";
/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest frame body (16 MiB): bounds what a reader allocates.
pub const FRAME_BODY_MAX: usize = 16 << 20;

/// Segment kinds: which format the bodies are in.
pub mod kind {
    /// RUAS write-ahead log (wal.md).
    pub const RUAS_WAL: u8 = 1;
    /// UAS audit trail.
    pub const UAS_AUDIT: u8 = 2;
    /// History recorder segment.
    pub const HISTORY: u8 = 3;
}

/// A segment header: magic, kind, and the index of the segment's first frame in
/// the whole log (so segments can be deleted from the front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// What the frames hold ([`kind`]).
    pub kind: u8,
    /// The segment's number in its log (0, 1, 2, ...).
    pub number: u64,
}

impl SegmentHeader {
    /// Encode: magic (8), kind (1), reserved (7, zero), number (8).
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8] = self.kind;
        b[16..24].copy_from_slice(&self.number.to_be_bytes());
        b
    }

    /// Decode the first [`SEGMENT_HEADER_LEN`] bytes of a segment.
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::BadMagic`], [`WireError::ReservedNonZero`].
    pub fn parse(b: &[u8]) -> Result<SegmentHeader, WireError> {
        let b = b.get(..SEGMENT_HEADER_LEN).ok_or(WireError::Truncated)?;
        if b[..8] != SEGMENT_MAGIC {
            return Err(WireError::BadMagic);
        }
        if b[9..16].iter().any(|&x| x != 0) {
            return Err(WireError::ReservedNonZero);
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[16..24]);
        Ok(SegmentHeader {
            kind: b[8],
            number: u64::from_be_bytes(n),
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end inside the frame: at the tail of a log this is a torn write.
    Incomplete,
    /// The checksum does not match, or the length is over [`FRAME_BODY_MAX`]: the
    /// frame is damaged.
    Corrupt,
}

/// Encode a frame around `body` into a new vector.
pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    append(&mut v, body);
    v
}

/// Append a frame around `body` to `out`. Bodies over [`FRAME_BODY_MAX`] are a
/// caller bug; they are written anyway and a reader will report them `Corrupt`.
pub fn append(out: &mut Vec<u8>, body: &[u8]) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
    let crc = crc32c_update(crc32c_update(0, &len), body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(body);
}

/// Read the frame at the front of `b`: its body and the bytes it used.
///
/// # Errors
/// [`FrameError`].
pub fn split(b: &[u8]) -> Result<(&[u8], usize), FrameError> {
    if b.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let len_bytes = [b[0], b[1], b[2], b[3]];
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > FRAME_BODY_MAX {
        return Err(FrameError::Corrupt);
    }
    let crc = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let body = b
        .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)
        .ok_or(FrameError::Incomplete)?;
    if crc32c_update(crc32c_update(0, &len_bytes), body) != crc {
        return Err(FrameError::Corrupt);
    }
    Ok((body, FRAME_HEADER_LEN + len))
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc`
/// (start with 0). Eight bytes at a time ("slicing by 8"): history index blocks
/// are checked on every read.
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = CRC_TABLES[7][(lo & 0xff) as usize]
            ^ CRC_TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ CRC_TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ CRC_TABLES[4][(lo >> 24) as usize]
            ^ CRC_TABLES[3][b[4] as usize]
            ^ CRC_TABLES[2][b[5] as usize]
            ^ CRC_TABLES[1][b[6] as usize]
            ^ CRC_TABLES[0][b[7] as usize];
    }
    for &b in chunks.remainder() {
        c = CRC_TABLES[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// `CRC_TABLES[0]` is the classic byte table; table `k` advances a byte that is
/// followed by `k` more.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, as the definition says: the reference for the tables.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn crc32c_tables_agree_with_the_definition_at_every_length_and_split() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for n in 0..data.len() {
            assert_eq!(
                crc32c_update(0, &data[..n]),
                crc32c_bitwise(&data[..n]),
                "{n}"
            );
        }
        for cut in 0..40 {
            assert_eq!(
                crc32c_update(crc32c_update(0, &data[..cut]), &data[cut..]),
                crc32c_bitwise(&data)
            );
        }
    }

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 B.4: CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(crc32c_update(0, b"123456789"), 0xE306_9283);
        assert_eq!(
            crc32c_update(crc32c_update(0, b"1234"), b"56789"),
            0xE306_9283
        );
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut log = Vec::new();
        append(&mut log, b"first");
        append(&mut log, b"");
        append(&mut log, b"third");
        let (a, n) = split(&log).unwrap();
        assert_eq!(a, b"first");
        let (b, m) = split(&log[n..]).unwrap();
        assert_eq!(b, b"");
        let (c, k) = split(&log[n + m..]).unwrap();
        assert_eq!((c, n + m + k), (&b"third"[..], log.len()));
        assert_eq!(
            split(&log[..log.len() - 1]).map(|_| ()),
            Ok(()),
            "first frame intact"
        );
        assert_eq!(
            split(&log[n + m..log.len() - 1]),
            Err(FrameError::Incomplete)
        );
        let mut bad = log.clone();
        bad[9] ^= 1;
        assert_eq!(split(&bad), Err(FrameError::Corrupt));
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(split(&huge), Err(FrameError::Corrupt));
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader {
            kind: kind::RUAS_WAL,
            number: 7,
        };
        assert_eq!(SegmentHeader::parse(&h.to_bytes()), Ok(h));
        let mut b = h.to_bytes();
        b[0] = b'X';
        assert_eq!(SegmentHeader::parse(&b), Err(WireError::BadMagic));
        let mut b = h.to_bytes();
        b[10] = 1;
        assert_eq!(SegmentHeader::parse(&b), Err(WireError::ReservedNonZero));
    }
}
