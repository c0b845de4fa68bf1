//! Ranges of units in configuration and APIs: delegations to UASes and users'
//! UABs (seed s3.3, s3.6, s4.3: "any start and length, not only prefixes").
//!
//! Text forms: `START+LEN` (`20.1.0.0+65536`, `2001:db8:0:10::+4`) or
//! `FIRST-LAST` inclusive (`20.1.0.0-20.1.255.255`). IPv6 addresses name /64 units,
//! so their low 64 bits must be zero.

use std::fmt;
use std::net::IpAddr;

use ivip_wire::Family;
use ivip_wire::addr::{unit_addr, unit_of};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-empty range of units of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitRange {
    /// IPv4 or IPv6.
    pub family: Family,
    /// First unit.
    pub start: u64,
    /// Length in units, at least 1.
    pub len: u64,
}

/// Why a range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeParseError(pub String);

impl fmt::Display for RangeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RangeParseError {}

fn parse_unit(s: &str) -> Result<(Family, u64), RangeParseError> {
    let a: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| RangeParseError(format!("`{s}` is not an IP address")))?;
    if let IpAddr::V6(v6) = a
        && u128::from(v6) as u64 != 0
    {
        return Err(RangeParseError(format!(
            "`{s}`: IPv6 ranges are in /64 units; the low 64 bits must be zero"
        )));
    }
    Ok(unit_of(a))
}

impl UnitRange {
    /// One past the last unit.
    pub fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.len)
    }

    /// `true` when `[start, start + len)` of `family` lies inside this range.
    pub fn contains(&self, family: Family, start: u64, len: u64) -> bool {
        family == self.family
            && start >= self.start
            && u128::from(start) + u128::from(len) <= self.end()
    }

    /// `true` when the two ranges share a unit.
    pub fn overlaps(&self, other: &UnitRange) -> bool {
        self.family == other.family
            && u128::from(self.start) < other.end()
            && u128::from(other.start) < self.end()
    }
}

impl std::str::FromStr for UnitRange {
    type Err = RangeParseError;

    fn from_str(s: &str) -> Result<UnitRange, RangeParseError> {
        let r = if let Some((a, n)) = s.split_once('+') {
            let (family, start) = parse_unit(a)?;
            let len: u64 = n
                .trim()
                .parse()
                .map_err(|_| RangeParseError(format!("`{n}` is not a length in units")))?;
            UnitRange { family, start, len }
        } else if let Some((a, b)) = s.rsplit_once('-') {
            let (fa, first) = parse_unit(a)?;
            let (fb, last) = parse_unit(b)?;
            if fa != fb || last < first {
                return Err(RangeParseError(format!(
                    "`{s}`: last is before first or families differ"
                )));
            }
            let len = (last - first)
                .checked_add(1)
                .ok_or_else(|| RangeParseError(format!("`{s}` is too long")))?;
            UnitRange {
                family: fa,
                start: first,
                len,
            }
        } else {
            return Err(RangeParseError(format!(
                "`{s}`: write a range as START+LEN or FIRST-LAST"
            )));
        };
        ivip_wire::addr::check_range(r.family, r.start, r.len).map_err(|_| {
            RangeParseError(format!("`{s}`: empty or past the end of the address space"))
        })?;
        Ok(r)
    }
}

impl fmt::Display for UnitRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", unit_addr(self.family, self.start), self.len)
    }
}

impl<'de> Deserialize<'de> for UnitRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UnitRange, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for UnitRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `true` when every unit of `[start, start + len)` lies in some range of `set`.
pub fn covered_by(set: &[UnitRange], family: Family, start: u64, len: u64) -> bool {
    let mut ranges: Vec<&UnitRange> = set.iter().filter(|r| r.family == family).collect();
    ranges.sort_by_key(|r| r.start);
    let end = u128::from(start) + u128::from(len);
    let mut at = u128::from(start);
    for r in ranges {
        if u128::from(r.start) > at {
            break;
        }
        at = at.max(r.end());
        if at >= end {
            return true;
        }
    }
    at >= end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_print() {
        let a: UnitRange = "20.1.0.0+65536".parse().unwrap();
        let b: UnitRange = "20.1.0.0-20.1.255.255".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "20.1.0.0+65536");
        let c: UnitRange = "2001:db8:0:10::+4".parse().unwrap();
        assert_eq!(c.start, 0x2001_0db8_0000_0010);
        assert!("2001:db8::1+4".parse::<UnitRange>().is_err());
        assert!("20.1.0.0+0".parse::<UnitRange>().is_err());
        assert!("255.255.255.255+2".parse::<UnitRange>().is_err());
        assert!("20.1.0.9-20.1.0.1".parse::<UnitRange>().is_err());
        assert!("nonsense".parse::<UnitRange>().is_err());
    }

    #[test]
    fn coverage_by_several_ranges() {
        let set: Vec<UnitRange> = ["20.0.0.0+10", "20.0.0.10+5", "20.0.0.20+5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let s = 0x1400_0000;
        assert!(covered_by(&set, Family::V4, s, 15));
        assert!(!covered_by(&set, Family::V4, s, 16));
        assert!(covered_by(&set, Family::V4, s + 20, 5));
        assert!(!covered_by(&set, Family::V6, s, 1));
        assert!(!covered_by(&[], Family::V4, s, 1));
    }
}
