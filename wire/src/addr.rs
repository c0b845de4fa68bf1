//! Address families, MABs, ETRs and unit ranges, and how they are written.
//!
//! spec: README.md §3 (units). seed s3.1, s3.2, s3.4: IPv4 SPI space is mapped in
//! units of single addresses, IPv6 in units of /64 prefixes. A *unit* here is a
//! `u64`: the IPv4 address itself, or the upper 64 bits of an IPv6 address. A MAB is
//! a power-of-two aligned block of units; micronets and UABs have any start and
//! length.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::WireError;

/// IPv4 or IPv6. On the wire: one byte, 4 or 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: units are single addresses, ETRs are 4 bytes.
    V4,
    /// IPv6: units are /64 prefixes, ETRs are 16 bytes.
    V6,
}

impl Family {
    /// Decode the one-byte family code.
    pub const fn from_code(code: u8) -> Result<Family, WireError> {
        match code {
            4 => Ok(Family::V4),
            6 => Ok(Family::V6),
            _ => Err(WireError::BadFamily),
        }
    }

    /// The one-byte family code: 4 or 6.
    pub const fn code(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    /// Bits in one unit number: 32 (an IPv4 address) or 64 (an IPv6 /64).
    pub const fn unit_bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 64,
        }
    }

    /// Bytes of one unit number (a start or a length) on the wire: 4 or 8.
    pub const fn unit_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 8,
        }
    }

    /// Bytes of one ETR address on the wire: 4 or 16.
    pub const fn etr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// Bytes of one address (query protocol): 4 or 16.
    pub const fn addr_len(self) -> usize {
        self.etr_len()
    }

    /// One past the largest unit number (2^32 or 2^64).
    pub const fn unit_space(self) -> u128 {
        1u128 << self.unit_bits()
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The unit that holds an address: the IPv4 address, or the /64 of an IPv6 address.
pub fn unit_of(addr: IpAddr) -> (Family, u64) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u64::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, (u128::from(a) >> 64) as u64),
    }
}

/// The first address of a unit, for display.
pub fn unit_addr(family: Family, unit: u64) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(unit as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(u128::from(unit) << 64)),
    }
}

// ---------------------------------------------------------------------------
// ETR
// ---------------------------------------------------------------------------

/// The address a micronet is mapped to. The unspecified address (all zero) means
/// "drop" (seed s3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Etr {
    /// An IPv4 ETR, for micronets in IPv4 MABs.
    V4(Ipv4Addr),
    /// An IPv6 ETR, for micronets in IPv6 MABs.
    V6(Ipv6Addr),
}

impl Etr {
    /// The zero ("drop") mapping of a family.
    pub const fn zero(family: Family) -> Etr {
        match family {
            Family::V4 => Etr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => Etr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// The family of this ETR.
    pub const fn family(&self) -> Family {
        match self {
            Etr::V4(_) => Family::V4,
            Etr::V6(_) => Family::V6,
        }
    }

    /// `true` for the zero ("drop") mapping.
    pub fn is_zero(&self) -> bool {
        match self {
            Etr::V4(a) => a.is_unspecified(),
            Etr::V6(a) => a.is_unspecified(),
        }
    }

    /// The address as a `u128` (IPv4 in the low 32 bits).
    pub fn to_u128(&self) -> u128 {
        match self {
            Etr::V4(a) => u128::from(u32::from(*a)),
            Etr::V6(a) => u128::from(*a),
        }
    }

    /// Rebuild from [`Etr::to_u128`]; IPv4 takes the low 32 bits.
    pub fn from_u128(family: Family, v: u128) -> Etr {
        match family {
            Family::V4 => Etr::V4(Ipv4Addr::from(v as u32)),
            Family::V6 => Etr::V6(Ipv6Addr::from(v)),
        }
    }

    /// The address as an `IpAddr`.
    pub fn ip(&self) -> IpAddr {
        match self {
            Etr::V4(a) => IpAddr::V4(*a),
            Etr::V6(a) => IpAddr::V6(*a),
        }
    }

    /// Read an ETR of `family` from exactly `family.etr_len()` bytes.
    pub(crate) fn read(family: Family, b: &[u8]) -> Etr {
        match family {
            Family::V4 => Etr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            Family::V6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[..16]);
                Etr::V6(Ipv6Addr::from(a))
            }
        }
    }

    /// Write into exactly `family().etr_len()` bytes.
    pub(crate) fn write(&self, b: &mut [u8]) {
        match self {
            Etr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            Etr::V6(a) => b[..16].copy_from_slice(&a.octets()),
        }
    }
}

impl From<IpAddr> for Etr {
    fn from(a: IpAddr) -> Etr {
        match a {
            IpAddr::V4(a) => Etr::V4(a),
            IpAddr::V6(a) => Etr::V6(a),
        }
    }
}

impl fmt::Display for Etr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

// ---------------------------------------------------------------------------
// Units on the wire
// ---------------------------------------------------------------------------

/// Read a big-endian unit number of `family` (4 or 8 bytes).
pub(crate) fn read_unit(family: Family, b: &[u8]) -> u64 {
    match family {
        Family::V4 => u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        Family::V6 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            u64::from_be_bytes(a)
        }
    }
}

/// Write a unit number of `family` big-endian (4 or 8 bytes). For IPv4 the value
/// has been checked to fit 32 bits by whoever built it.
pub(crate) fn write_unit(family: Family, v: u64, b: &mut [u8]) {
    match family {
        Family::V4 => b[..4].copy_from_slice(&(v as u32).to_be_bytes()),
        Family::V6 => b[..8].copy_from_slice(&v.to_be_bytes()),
    }
}

/// Check that `[start, start + len)` is non-empty and inside the family's space.
pub fn check_range(family: Family, start: u64, len: u64) -> Result<(), WireError> {
    if len == 0 || u128::from(start) + u128::from(len) > family.unit_space() {
        return Err(WireError::BadRange);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// MAB
// ---------------------------------------------------------------------------

/// A Mapped Address Block: a power-of-two aligned block of units (seed s3.2).
///
/// On the wire (spec: README.md §4): family (1 byte), prefix length (1 byte), then
/// the start unit as 8 bytes big-endian for both families (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mab {
    family: Family,
    start: u64,
    prefix_len: u8,
}

/// Bytes a MAB takes on the wire.
pub const MAB_LEN: usize = 10;

impl Mab {
    /// A MAB of `family` starting at unit `start` with `prefix_len` bits of prefix
    /// (counted in unit bits: 1..=32 for IPv4, 1..=64 for IPv6 /64 units, which
    /// equals the IPv6 prefix length for prefixes up to /64).
    ///
    /// # Errors
    /// [`WireError::BadMab`] when the prefix length is out of range or `start` has
    /// bits set below the prefix.
    pub fn new(family: Family, start: u64, prefix_len: u8) -> Result<Mab, WireError> {
        let bits = family.unit_bits();
        if prefix_len == 0 || prefix_len > bits {
            return Err(WireError::BadMab);
        }
        if u128::from(start) >= family.unit_space() {
            return Err(WireError::BadMab);
        }
        let host_bits = u32::from(bits - prefix_len);
        let mask = if host_bits == 64 {
            u64::MAX
        } else {
            (1u64 << host_bits) - 1
        };
        if start & mask != 0 {
            return Err(WireError::BadMab);
        }
        Ok(Mab {
            family,
            start,
            prefix_len,
        })
    }

    /// The family.
    pub const fn family(&self) -> Family {
        self.family
    }

    /// The first unit.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// The prefix length in unit bits.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Number of units in the MAB (at most 2^63, since the prefix is at least 1).
    pub const fn len(&self) -> u64 {
        1u64 << (self.family.unit_bits() - self.prefix_len)
    }

    /// A MAB is never empty; present for clippy's `len_without_is_empty`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// One past the last unit, as `u128` (it may be 2^64 for IPv6).
    pub fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.len())
    }

    /// `true` when `[start, start + len)` lies inside the MAB.
    pub fn contains_range(&self, start: u64, len: u64) -> bool {
        len > 0 && start >= self.start && u128::from(start) + u128::from(len) <= self.end()
    }

    /// `true` when the unit lies inside the MAB.
    pub fn contains(&self, unit: u64) -> bool {
        unit >= self.start && u128::from(unit) < self.end()
    }

    /// Decode from exactly [`MAB_LEN`] bytes.
    ///
    /// # Errors
    /// [`WireError::BadFamily`], [`WireError::BadMab`].
    pub fn read(b: &[u8]) -> Result<Mab, WireError> {
        if b.len() < MAB_LEN {
            return Err(WireError::Truncated);
        }
        let family = Family::from_code(b[0])?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[2..10]);
        Mab::new(family, u64::from_be_bytes(s), b[1])
    }

    /// Encode into the first [`MAB_LEN`] bytes of `b`.
    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.family.code();
        b[1] = self.prefix_len;
        b[2..10].copy_from_slice(&self.start.to_be_bytes());
    }
}

impl fmt::Display for Mab {
    /// Written as the prefix in address notation: `20.0.0.0/14`, `2001:db8::/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            unit_addr(self.family, self.start),
            self.prefix_len
        )
    }
}

impl core::str::FromStr for Mab {
    type Err = WireError;

    /// Parse `20.0.0.0/14` or `2001:db8::/32` (IPv6 prefixes up to /64).
    fn from_str(s: &str) -> Result<Mab, WireError> {
        let (addr, len) = s.split_once('/').ok_or(WireError::BadMab)?;
        let addr: IpAddr = addr.parse().map_err(|_| WireError::BadMab)?;
        let len: u8 = len.parse().map_err(|_| WireError::BadMab)?;
        let (family, unit) = unit_of(addr);
        if let IpAddr::V6(a) = addr
            && u128::from(a) as u64 != 0
        {
            return Err(WireError::BadMab);
        }
        Mab::new(family, unit, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mab_rules() {
        assert!(Mab::new(Family::V4, 0x1400_0000, 14).is_ok());
        assert_eq!(
            Mab::new(Family::V4, 0x1400_0001, 14),
            Err(WireError::BadMab)
        );
        assert_eq!(Mab::new(Family::V4, 0, 0), Err(WireError::BadMab));
        assert_eq!(Mab::new(Family::V4, 0, 33), Err(WireError::BadMab));
        assert_eq!(
            Mab::new(Family::V4, 1 << 32, 32),
            Err(WireError::BadMab),
            "IPv4 start must fit 32 bits"
        );
        assert!(Mab::new(Family::V6, 0x2001_0db8_0000_0000, 32).is_ok());
        assert!(Mab::new(Family::V6, 0x8000_0000_0000_0000, 1).is_ok());
        let m: Mab = "20.0.0.0/14".parse().unwrap();
        assert_eq!(m.len(), 1 << 18);
        assert_eq!(m.to_string(), "20.0.0.0/14");
        assert!(m.contains_range(0x1400_0000, 1 << 18));
        assert!(!m.contains_range(0x1400_0000, (1 << 18) + 1));
        let m6: Mab = "2001:db8::/32".parse().unwrap();
        assert_eq!(m6.to_string(), "2001:db8::/32");
        assert!("2001:db8::1/32".parse::<Mab>().is_err());
    }

    #[test]
    fn mab_bytes_round_trip() {
        let m: Mab = "2001:db8::/32".parse().unwrap();
        let mut b = [0xa5u8; MAB_LEN];
        m.write(&mut b);
        assert_eq!(Mab::read(&b), Ok(m));
        b[0] = 5;
        assert_eq!(Mab::read(&b), Err(WireError::BadFamily));
    }

    #[test]
    fn ranges() {
        assert!(check_range(Family::V4, u64::from(u32::MAX), 1).is_ok());
        assert_eq!(
            check_range(Family::V4, u64::from(u32::MAX), 2),
            Err(WireError::BadRange)
        );
        assert_eq!(check_range(Family::V4, 5, 0), Err(WireError::BadRange));
        assert!(check_range(Family::V6, u64::MAX, 1).is_ok());
    }
}
