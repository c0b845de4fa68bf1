//! Identifiers and sequence numbers with the arithmetic the spec requires.
//!
//! spec: payload.md §2 (identity). Payload sequence numbers are 32 bits and wrap;
//! they compare with serial-number arithmetic (RFC 1982), never with `<` on the raw
//! integer, and there is deliberately no `Add` impl that could panic on overflow
//! (STYLE practice 13).

use core::cmp::Ordering;
use core::fmt;

/// A RUAS identifier: 7 bits (seed s5, "the 7 bit ruas field").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuasId(u8);

impl RuasId {
    /// The largest identifier (127).
    pub const MAX: u8 = 0x7f;

    /// `Some` when `id` fits in 7 bits.
    pub const fn new(id: u8) -> Option<RuasId> {
        if id <= Self::MAX {
            Some(RuasId(id))
        } else {
            None
        }
    }

    /// The low 7 bits of `id` (for fields whose high bit was already checked).
    pub const fn masked(id: u8) -> RuasId {
        RuasId(id & Self::MAX)
    }

    /// The identifier as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for RuasId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A payload sequence number: 32 bits, compared by serial-number arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seq(pub u32);

impl Seq {
    /// The next sequence number (wraps from `u32::MAX` to 0).
    pub const fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }

    /// `self + n`, wrapping.
    pub const fn wrapping_add(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// The signed distance from `earlier` to `self`: positive when `self` is later.
    /// Meaningful while the true distance is below 2^31.
    pub const fn distance_from(self, earlier: Seq) -> i64 {
        self.0.wrapping_sub(earlier.0) as i32 as i64
    }

    /// Serial-number order (RFC 1982 §3.2). Two numbers exactly 2^31 apart are
    /// unordered; this returns `None` for them.
    pub fn serial_cmp(self, other: Seq) -> Option<Ordering> {
        let d = self.0.wrapping_sub(other.0);
        match d {
            0 => Some(Ordering::Equal),
            0x8000_0000 => None,
            d if d < 0x8000_0000 => Some(Ordering::Greater),
            _ => Some(Ordering::Less),
        }
    }

    /// `true` when `self` is strictly later than `other` in serial order.
    pub fn is_after(self, other: Seq) -> bool {
        self.serial_cmp(other) == Some(Ordering::Greater)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of one update payload: (RUAS id, epoch, sequence).
///
/// spec: payload.md §2. Fresh/Repeat in replicators and look-ups in MPSes key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadId {
    /// The RUAS that signed the payload.
    pub ruas: RuasId,
    /// Changes only when the RUAS lost its sequence state.
    pub epoch: u32,
    /// Rises by one per payload within an epoch.
    pub seq: Seq,
}

impl fmt::Display for PayloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.ruas, self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruas_id_is_seven_bits() {
        assert_eq!(RuasId::new(127).map(RuasId::get), Some(127));
        assert_eq!(RuasId::new(128), None);
    }

    #[test]
    fn serial_order_survives_wrap() {
        let a = Seq(u32::MAX);
        let b = a.next();
        assert_eq!(b, Seq(0));
        assert!(b.is_after(a));
        assert!(!a.is_after(b));
        assert_eq!(b.distance_from(a), 1);
        assert_eq!(a.distance_from(b), -1);
        assert_eq!(Seq(5).serial_cmp(Seq(5)), Some(Ordering::Equal));
        assert_eq!(Seq(0).serial_cmp(Seq(0x8000_0000)), None);
    }
}
