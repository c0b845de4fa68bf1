//! What a UAS checks in a user's command set before it signs anything (seed s3.7).
//!
//! Pure functions, no I/O: every command lies inside the user's UABs; every ETR is
//! of the MAB's family and is neither private, loopback, link-local, multicast,
//! reserved (the IANA special-purpose registries), nor inside any MAB. The micronet
//! rules against current state (zero before split and join, new micronets only in
//! zero or unassigned space) are the mapping engine's (`ivip::table`), applied in
//! [`crate::uas::state`].
//!
//! seed s3.7: "the UAS system would generate an error if the mapping was to a
//! disallowed address - multicast, SPI space, private address space or to some
//! other prefixes to which the Ivip system does not support the tunnelling of
//! packets. Similarly, and error would be generated if the end-user attempted to
//! change the mapping for some address space outside their UAB".

use std::fmt;
use std::net::IpAddr;

use ivip_wire::addr::unit_of;
use ivip_wire::{Command, Etr, Family, Mab};

use crate::range::{UnitRange, covered_by};
use crate::uas::config::Prefix;

/// Why an ETR is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtrReason {
    /// RFC 1918 private space, RFC 6598 shared space, RFC 4193 unique-local.
    Private,
    /// Loopback (RFC 1122, RFC 4291).
    Loopback,
    /// Link-local (RFC 3927, RFC 4291).
    LinkLocal,
    /// Multicast (RFC 5771, RFC 4291), or IPv4 limited broadcast.
    Multicast,
    /// Another special-purpose block (RFC 6890 and successors): documentation,
    /// benchmarking, protocol assignments, translation, future use.
    Reserved,
    /// Inside a MAB: SPI space is not an ETR (seed s3.7).
    InsideMab,
    /// An IPv6 ETR for an IPv4 MAB or the reverse.
    WrongFamily,
}

impl EtrReason {
    /// A stable token (`private`, `loopback`, `link_local`, `multicast`, `reserved`,
    /// `inside_mab`, `wrong_family`).
    pub const fn code(self) -> &'static str {
        match self {
            EtrReason::Private => "private",
            EtrReason::Loopback => "loopback",
            EtrReason::LinkLocal => "link_local",
            EtrReason::Multicast => "multicast",
            EtrReason::Reserved => "reserved",
            EtrReason::InsideMab => "inside_mab",
            EtrReason::WrongFamily => "wrong_family",
        }
    }
}

/// An ETR refused, with the block it fell in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtrRejection {
    /// The address.
    pub etr: Etr,
    /// The rule.
    pub reason: EtrReason,
    /// The block and its source, e.g. `10.0.0.0/8 (private use, RFC 1918)`.
    pub block: String,
}

impl fmt::Display for EtrRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ETR {} is not allowed ({}): it is in {}",
            self.etr,
            self.reason.code().replace('_', " "),
            self.block
        )
    }
}

/// One special-purpose block.
#[derive(Debug, Clone, Copy)]
struct Block {
    addr: u128,
    len: u8,
    reason: EtrReason,
    what: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, reason: EtrReason, what: &'static str) -> Block {
    Block {
        addr: ((a as u128) << 24) | ((b as u128) << 16) | ((c as u128) << 8) | d as u128,
        len,
        reason,
        what,
    }
}

const fn v6(addr: u128, len: u8, reason: EtrReason, what: &'static str) -> Block {
    Block {
        addr,
        len,
        reason,
        what,
    }
}

use EtrReason::{LinkLocal, Loopback, Multicast, Private, Reserved};

/// IPv4 blocks no ETR may be in. Source: the IANA IPv4 Special-Purpose Address
/// Registry (RFC 6890, updated by RFC 8190), plus the multicast space (RFC 5771)
/// which that registry does not list. Every entry of the registry is refused,
/// including the few marked globally reachable (AS112, AMT, anycast service
/// addresses): none is a place to tunnel a micronet's packets to. `0.0.0.0` itself
/// is the "drop" mapping and is allowed (seed s3.4).
const V4_BLOCKS: &[Block] = &[
    v4(0, 0, 0, 0, 8, Reserved, "\"this network\", RFC 791 §3.2"),
    v4(10, 0, 0, 0, 8, Private, "private use, RFC 1918"),
    v4(100, 64, 0, 0, 10, Private, "shared address space, RFC 6598"),
    v4(127, 0, 0, 0, 8, Loopback, "loopback, RFC 1122 §3.2.1.3"),
    v4(169, 254, 0, 0, 16, LinkLocal, "link local, RFC 3927"),
    v4(172, 16, 0, 0, 12, Private, "private use, RFC 1918"),
    v4(
        192,
        0,
        0,
        0,
        24,
        Reserved,
        "IETF protocol assignments, RFC 6890 §2.1 (RFC 7335, RFC 7600, RFC 7723, RFC 8155, RFC 8880)",
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        Reserved,
        "documentation (TEST-NET-1), RFC 5737",
    ),
    v4(192, 31, 196, 0, 24, Reserved, "AS112-v4, RFC 7535"),
    v4(192, 52, 193, 0, 24, Reserved, "AMT, RFC 7450"),
    v4(
        192,
        88,
        99,
        0,
        24,
        Reserved,
        "deprecated 6to4 relay anycast, RFC 7526",
    ),
    v4(192, 168, 0, 0, 16, Private, "private use, RFC 1918"),
    v4(
        192,
        175,
        48,
        0,
        24,
        Reserved,
        "direct delegation AS112 service, RFC 7534",
    ),
    v4(198, 18, 0, 0, 15, Reserved, "benchmarking, RFC 2544"),
    v4(
        198,
        51,
        100,
        0,
        24,
        Reserved,
        "documentation (TEST-NET-2), RFC 5737",
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        Reserved,
        "documentation (TEST-NET-3), RFC 5737",
    ),
    v4(224, 0, 0, 0, 4, Multicast, "multicast, RFC 5771"),
    v4(
        255,
        255,
        255,
        255,
        32,
        Multicast,
        "limited broadcast, RFC 8190 / RFC 919",
    ),
    v4(
        240,
        0,
        0,
        0,
        4,
        Reserved,
        "reserved for future use, RFC 1112 §4",
    ),
];

/// IPv6 blocks no ETR may be in. Source: the IANA IPv6 Special-Purpose Address
/// Registry (RFC 6890, RFC 8190) and the IPv6 Address Space registry (RFC 4291):
/// everything outside global unicast `2000::/3` is refused as reserved, after the
/// more specific entries that give a better reason. `::` is the "drop" mapping and
/// is allowed.
const V6_BLOCKS: &[Block] = &[
    v6(1, 128, Loopback, "::1/128, loopback, RFC 4291 §2.5.3"),
    v6(
        0xffff_0000_0000,
        96,
        Reserved,
        "::ffff:0:0/96, IPv4-mapped, RFC 4291 §2.5.5.2",
    ),
    v6(
        0x0064_ff9b << 96,
        96,
        Reserved,
        "64:ff9b::/96, IPv4/IPv6 translation, RFC 6052",
    ),
    v6(
        (0x0064_ff9b_0001u128) << 80,
        48,
        Reserved,
        "64:ff9b:1::/48, local-use translation, RFC 8215",
    ),
    v6(
        0x0100u128 << 112,
        64,
        Reserved,
        "100::/64, discard-only, RFC 6666",
    ),
    v6(
        0xfc00u128 << 112,
        7,
        Private,
        "fc00::/7, unique-local, RFC 4193",
    ),
    v6(
        0xfe80u128 << 112,
        10,
        LinkLocal,
        "fe80::/10, link-local unicast, RFC 4291 §2.5.6",
    ),
    v6(
        0xfec0u128 << 112,
        10,
        Reserved,
        "fec0::/10, deprecated site-local, RFC 3879",
    ),
    v6(
        0xff00u128 << 112,
        8,
        Multicast,
        "ff00::/8, multicast, RFC 4291 §2.7",
    ),
    v6(
        0x2001u128 << 112,
        23,
        Reserved,
        "2001::/23, IETF protocol assignments, RFC 2928 (Teredo RFC 4380, benchmarking RFC 5180, ORCHIDv2 RFC 7343, ...)",
    ),
    v6(
        0x2001_0db8u128 << 96,
        32,
        Reserved,
        "2001:db8::/32, documentation, RFC 3849",
    ),
    v6(0x2002u128 << 112, 16, Reserved, "2002::/16, 6to4, RFC 3056"),
    v6(
        0x2620_004f_8000u128 << 80,
        48,
        Reserved,
        "2620:4f:8000::/48, direct delegation AS112 service, RFC 7534",
    ),
    v6(
        0x3fffu128 << 112,
        20,
        Reserved,
        "3fff::/20, documentation, RFC 9637",
    ),
    v6(
        0x5f00u128 << 112,
        16,
        Reserved,
        "5f00::/16, segment routing SIDs, RFC 9602",
    ),
];

fn block_contains(b: &Block, bits: u32, v: u128) -> bool {
    let shift = bits - u32::from(b.len);
    if shift >= 128 {
        return true;
    }
    (v >> shift) == (b.addr >> shift)
}

/// Check one ETR for an ETR of a micronet in `mab_family`.
///
/// `mabs` is every MAB of the system; `allow` exempts prefixes from the
/// special-purpose rules (never from the MAB rule or the family rule).
///
/// # Errors
/// [`EtrRejection`] naming the rule and the block.
pub fn check_etr(
    etr: Etr,
    mab_family: Family,
    mabs: &[Mab],
    allow: &[Prefix],
) -> Result<(), EtrRejection> {
    let reject = |reason, block: String| EtrRejection { etr, reason, block };
    if etr.family() != mab_family {
        return Err(reject(
            EtrReason::WrongFamily,
            format!("{} space, but the MAB is {mab_family}", etr.family()),
        ));
    }
    if etr.is_zero() {
        return Ok(()); // seed s3.4: mapping to zero means drop.
    }
    let ip: IpAddr = etr.ip();
    let (family, unit) = unit_of(ip);
    if let Some(m) = mabs
        .iter()
        .find(|m| m.family() == family && m.contains(unit))
    {
        return Err(reject(EtrReason::InsideMab, format!("MAB {m} (SPI space)")));
    }
    if allow.iter().any(|p| p.contains(ip)) {
        return Ok(());
    }
    let (blocks, bits, v) = match ip {
        IpAddr::V4(a) => (V4_BLOCKS, 32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (V6_BLOCKS, 128, u128::from(a)),
    };
    if let Some(b) = blocks.iter().find(|b| block_contains(b, bits, v)) {
        let what = if bits == 32 {
            format!(
                "{}/{}, {}",
                std::net::Ipv4Addr::from(b.addr as u32),
                b.len,
                b.what
            )
        } else {
            b.what.to_string()
        };
        return Err(reject(b.reason, what));
    }
    if bits == 128 && (v >> 125) != 0b001 {
        return Err(reject(
            EtrReason::Reserved,
            "space outside global unicast 2000::/3, reserved by the IETF (RFC 4291 §2.4)".into(),
        ));
    }
    Ok(())
}

/// The first command (its index) that touches units outside `uabs`.
pub fn first_outside(uabs: &[UnitRange], family: Family, cmds: &[Command]) -> Option<usize> {
    cmds.iter().position(|c| {
        let (start, len) = c.range();
        !covered_by(uabs, family, start, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mabs() -> Vec<Mab> {
        vec![
            "20.0.0.0/14".parse().unwrap(),
            "2001:db9::/32".parse().unwrap(),
        ]
    }

    fn etr(s: &str) -> Etr {
        Etr::from(s.parse::<IpAddr>().unwrap())
    }

    fn reason(s: &str) -> Option<EtrReason> {
        let e = etr(s);
        check_etr(e, e.family(), &mabs(), &[])
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn disallowed_etrs_are_refused_with_their_reason() {
        use EtrReason::*;
        for (a, want) in [
            ("10.1.2.3", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("127.0.0.1", Loopback),
            ("169.254.1.1", LinkLocal),
            ("224.0.0.5", Multicast),
            ("239.255.255.255", Multicast),
            ("255.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("0.1.2.3", Reserved),
            ("192.0.2.1", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
            ("198.19.0.1", Reserved),
            ("192.0.0.9", Reserved),
            ("20.1.2.3", InsideMab),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("fd00::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("2002::1", Reserved),
            ("::ffff:1.2.3.4", Reserved),
            ("64:ff9b::1.2.3.4", Reserved),
            ("3fff::1", Reserved),
            ("4000::1", Reserved),
            ("2001:db9::5", InsideMab),
        ] {
            assert_eq!(reason(a), Some(want), "{a}");
        }
    }

    #[test]
    fn ordinary_unicast_and_zero_are_allowed() {
        for a in [
            "0.0.0.0",
            "11.0.0.1",
            "20.4.0.0",
            "19.255.255.255",
            "192.0.3.1",
            "223.255.255.254",
            "::",
            "2a00:1450::1",
            "2001:4860::8888",
        ] {
            assert_eq!(reason(a), None, "{a}");
        }
    }

    #[test]
    fn the_boundaries_of_a_block_are_exact() {
        assert_eq!(reason("172.15.255.255"), None);
        assert_eq!(reason("172.16.0.0"), Some(EtrReason::Private));
        assert_eq!(reason("172.31.255.255"), Some(EtrReason::Private));
        assert_eq!(reason("172.32.0.0"), None);
        assert_eq!(reason("19.255.255.255"), None);
        assert_eq!(reason("20.3.255.255"), Some(EtrReason::InsideMab));
        assert_eq!(reason("20.4.0.0"), None);
    }

    #[test]
    fn family_must_match_and_allow_never_opens_mab_space() {
        let e = etr("11.0.0.1");
        assert_eq!(
            check_etr(e, Family::V6, &mabs(), &[]).unwrap_err().reason,
            EtrReason::WrongFamily
        );
        let allow: Vec<Prefix> = vec![
            "192.0.2.0/24".parse().unwrap(),
            "20.0.0.0/8".parse().unwrap(),
        ];
        assert!(check_etr(etr("192.0.2.1"), Family::V4, &mabs(), &allow).is_ok());
        assert_eq!(
            check_etr(etr("20.0.0.1"), Family::V4, &mabs(), &allow)
                .unwrap_err()
                .reason,
            EtrReason::InsideMab
        );
        let msg = check_etr(etr("10.0.0.1"), Family::V4, &mabs(), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "ETR 10.0.0.1 is not allowed (private): it is in 10.0.0.0/8, private use, RFC 1918"
        );
    }

    #[test]
    fn commands_outside_the_uab_are_found() {
        let uab: Vec<UnitRange> = vec!["20.0.0.8+8".parse().unwrap()];
        let s = 0x1400_0000u64;
        let inside = Command::Join {
            start: s + 8,
            len: 8,
        };
        let straddles = Command::Delete {
            start: s + 12,
            len: 8,
        };
        assert_eq!(first_outside(&uab, Family::V4, &[inside]), None);
        assert_eq!(
            first_outside(&uab, Family::V4, &[inside, straddles]),
            Some(1)
        );
        assert_eq!(first_outside(&uab, Family::V6, &[inside]), Some(0));
    }
}
