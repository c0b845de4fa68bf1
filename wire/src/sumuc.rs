//! The SUMUC: a Signed User Mapping Update Command set, carried UAS → UAS → RUAS
//! over HTTP (seed s3.8, s4.3).
//!
//! spec: sumuc.md. A fixed 76-byte header (magic, version, flags, command count,
//! signer key, request id, timestamp, execute-at, MAB, origin length), the origin
//! text, the commands, and a 64-byte Ed25519 signature by the signer over everything
//! before it. Each hop verifies its child's signature, then re-signs with its own key
//! and the same request id, so the RUAS sees one signature: its direct child's.

use core::fmt;

use zerocopy::network_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;
use crate::addr::{MAB_LEN, Mab};
use crate::command::{Command, Commands, commands_len, emit_commands};

/// The four magic bytes: `IVSU`.
pub const MAGIC: [u8; 4] = *b"IVSU";
/// The version this implementation speaks.
pub const VERSION: u8 = 1;
/// Bytes of the signature.
pub const SIGNATURE_LEN: usize = 64;
/// The largest SUMUC (a command set that fits 255 payload fragments, with room).
pub const SUMUC_LEN_MAX: usize = 65_536;
/// The longest origin text in bytes.
pub const ORIGIN_LEN_MAX: usize = 255;

/// The fixed header. spec: sumuc.md §3.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SumucHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Number of commands (at least 1).
    pub command_count: U16,
    /// The Ed25519 public key of the UAS that signed this copy.
    pub signer: [u8; 32],
    /// Chosen by the leaf UAS, kept by every hop: the RUAS answers a repeated
    /// request id with the first outcome, so retries are safe.
    pub request_id: U64,
    /// When this copy was signed, microseconds since the Unix epoch.
    pub timestamp_us: U64,
    /// Execute no earlier than this (microseconds since the Unix epoch); 0 = at once.
    pub execute_at_us: U64,
    /// The MAB every command lies in.
    pub mab: [u8; MAB_LEN],
    /// Bytes of origin text that follow the header.
    pub origin_len: U16,
}
const _: () = assert!(size_of::<SumucHeader>() == 76);

/// A SUMUC, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sumuc {
    /// The signer's public key.
    pub signer: [u8; 32],
    /// The request id (kept by every hop).
    pub request_id: u64,
    /// Signing time of this copy, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// Execute-at time, µs since the Unix epoch; 0 = at once.
    pub execute_at_us: u64,
    /// The MAB.
    pub mab: Mab,
    /// Who asked, for audit trails: free UTF-8 text such as `uas-z/user-u`.
    pub origin: String,
    /// The commands, executed in order and as one.
    pub commands: Vec<Command>,
    /// The signature (all zero until signed).
    pub signature: [u8; SIGNATURE_LEN],
}

/// A checked SUMUC borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct SumucView<'a> {
    bytes: &'a [u8],
    header: &'a SumucHeader,
    mab: Mab,
    origin: &'a str,
    commands: Commands<'a>,
}

impl<'a> SumucView<'a> {
    /// Check a whole SUMUC.
    ///
    /// # Errors
    /// [`WireError::TooLong`], [`WireError::Truncated`], [`WireError::BadMagic`],
    /// [`WireError::UnsupportedVersion`], [`WireError::ReservedNonZero`],
    /// [`WireError::BadFamily`], [`WireError::BadMab`], [`WireError::BadText`],
    /// and command-list errors ([`WireError::Empty`], [`WireError::CountOverrun`],
    /// [`WireError::TrailingBytes`], ...).
    pub fn new_checked(bytes: &'a [u8]) -> Result<SumucView<'a>, WireError> {
        if bytes.len() > SUMUC_LEN_MAX {
            return Err(WireError::TooLong);
        }
        let (header, rest) = SumucHeader::ref_from_prefix(bytes).map_err(|_| {
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                WireError::BadMagic
            } else {
                WireError::Truncated
            }
        })?;
        if header.magic != MAGIC {
            return Err(WireError::BadMagic);
        }
        if header.version != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if header.flags != 0 {
            return Err(WireError::ReservedNonZero);
        }
        let mab = Mab::read(&header.mab)?;
        let origin_len = usize::from(header.origin_len.get());
        if origin_len > ORIGIN_LEN_MAX {
            return Err(WireError::TooLong);
        }
        if rest.len() < origin_len + SIGNATURE_LEN {
            return Err(WireError::Truncated);
        }
        let origin = core::str::from_utf8(&rest[..origin_len]).map_err(|_| WireError::BadText)?;
        let cmd_bytes = &rest[origin_len..rest.len() - SIGNATURE_LEN];
        let commands = Commands::new_checked(mab.family(), header.command_count.get(), cmd_bytes)?;
        Ok(SumucView {
            bytes,
            header,
            mab,
            origin,
            commands,
        })
    }

    /// The header.
    pub fn header(&self) -> &'a SumucHeader {
        self.header
    }

    /// The MAB.
    pub fn mab(&self) -> Mab {
        self.mab
    }

    /// The origin text.
    pub fn origin(&self) -> &'a str {
        self.origin
    }

    /// The commands.
    pub fn commands(&self) -> Commands<'a> {
        self.commands
    }

    /// The signer's public key.
    pub fn signer(&self) -> &'a [u8; 32] {
        &self.header.signer
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &'a [u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }

    /// The signature.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&self.bytes[self.bytes.len() - SIGNATURE_LEN..]);
        s
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Sumuc {
        Sumuc {
            signer: self.header.signer,
            request_id: self.header.request_id.get(),
            timestamp_us: self.header.timestamp_us.get(),
            execute_at_us: self.header.execute_at_us.get(),
            mab: self.mab,
            origin: self.origin.to_string(),
            commands: self.commands.iter().collect(),
            signature: self.signature(),
        }
    }
}

impl Sumuc {
    /// Bytes of the encoded SUMUC.
    pub fn buffer_len(&self) -> usize {
        size_of::<SumucHeader>()
            + self.origin.len()
            + commands_len(self.mab.family(), &self.commands)
            + SIGNATURE_LEN
    }

    /// Encode into exactly [`Sumuc::buffer_len`] bytes, signature included as it
    /// stands; a signer then overwrites the last 64 bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`]; [`WireError::TooLong`] (over [`SUMUC_LEN_MAX`], an
    /// origin over 255 bytes, more than 65535 commands); [`WireError::Empty`];
    /// command errors.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let n = self.buffer_len();
        if b.len() != n {
            return Err(WireError::BufferSize);
        }
        if n > SUMUC_LEN_MAX || self.origin.len() > ORIGIN_LEN_MAX {
            return Err(WireError::TooLong);
        }
        let count = u16::try_from(self.commands.len()).map_err(|_| WireError::TooLong)?;
        if count == 0 {
            return Err(WireError::Empty);
        }
        let mut mab = [0u8; MAB_LEN];
        self.mab.write(&mut mab);
        let h = SumucHeader {
            magic: MAGIC,
            version: VERSION,
            flags: 0,
            command_count: U16::new(count),
            signer: self.signer,
            request_id: U64::new(self.request_id),
            timestamp_us: U64::new(self.timestamp_us),
            execute_at_us: U64::new(self.execute_at_us),
            mab,
            origin_len: U16::new(self.origin.len() as u16),
        };
        let hl = size_of::<SumucHeader>();
        b[..hl].copy_from_slice(h.as_bytes());
        let o_end = hl + self.origin.len();
        b[hl..o_end].copy_from_slice(self.origin.as_bytes());
        let c_end = o_end + emit_commands(self.mab.family(), &self.commands, &mut b[o_end..])?;
        b[c_end..].copy_from_slice(&self.signature);
        Ok(())
    }

    /// Encode into a new vector.
    ///
    /// # Errors
    /// As [`Sumuc::emit`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

impl fmt::Display for Sumuc {
    /// The `fields:` rendering used by the test vectors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sumuc signer={} request_id={} time_us={} execute_at_us={} mab={} origin={:?} commands={}",
            crate::hex::encode(&self.signer),
            self.request_id,
            self.timestamp_us,
            self.execute_at_us,
            self.mab,
            self.origin,
            self.commands.len()
        )?;
        for c in &self.commands {
            writeln!(f, "{}", c.display(self.mab.family()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Etr;

    #[test]
    fn round_trip() {
        let s = Sumuc {
            signer: [1; 32],
            request_id: 9,
            timestamp_us: 10,
            execute_at_us: 0,
            mab: "20.0.0.0/14".parse().unwrap(),
            origin: "uas-z/user-u".into(),
            commands: vec![Command::SetEtr {
                start: 0x1400_0001,
                len: 1,
                etr: Etr::V4("192.0.2.9".parse().unwrap()),
            }],
            signature: [2; 64],
        };
        let v = s.to_vec().unwrap();
        let view = SumucView::new_checked(&v).unwrap();
        assert_eq!(view.to_owned(), s);
        assert_eq!(view.signed_bytes().len(), v.len() - 64);
        let mut bad = v.clone();
        bad[76] = 0xff;
        assert_eq!(
            SumucView::new_checked(&bad).unwrap_err(),
            WireError::BadText
        );
    }
}
