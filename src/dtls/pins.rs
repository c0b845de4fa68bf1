//! Pinned peers: who may hold a link with this node, by key fingerprint and,
//! optionally, by the addresses it speaks from.
//!
//! spec: dtls.md §2.2. A pin is one `[[dtls.peer]]`: a name for logs, a
//! [`Fingerprint`], and address patterns (`ip:port`, an IP, or a prefix). A peer
//! at address A presenting key K is accepted when some pin has fingerprint K and
//! either no address patterns or one that covers A. As SSH pins host keys, no CA
//! is involved.
//!
//! For HTTPS (a TCP peer) the port of an `ip:port` pattern is ignored: the pin
//! names a host, and a node's HTTPS port differs from its UDP port.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::identity::Fingerprint;
use crate::net::IpPrefix;

/// Where a pinned peer may speak from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrPattern {
    /// Exactly this address and port.
    Exact(SocketAddr),
    /// Any port of an address in this prefix (a single IP is a full-length prefix).
    Prefix(IpPrefix),
}

impl AddrPattern {
    /// `true` when `a` matches. `any_port` ignores the port of an `Exact` pattern
    /// (HTTPS peers).
    pub fn matches(&self, a: SocketAddr, any_port: bool) -> bool {
        match self {
            AddrPattern::Exact(e) => {
                e.ip().to_canonical() == a.ip().to_canonical() && (any_port || e.port() == a.port())
            }
            AddrPattern::Prefix(p) => p.contains(a.ip()),
        }
    }
}

impl std::str::FromStr for AddrPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<AddrPattern, String> {
        if let Ok(a) = s.trim().parse::<SocketAddr>() {
            return Ok(AddrPattern::Exact(a));
        }
        s.parse::<IpPrefix>().map(AddrPattern::Prefix).map_err(|_| {
            format!("{s:?} is not an address: use ip:port, an IP, or a prefix like 192.0.2.0/24")
        })
    }
}

impl std::fmt::Display for AddrPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddrPattern::Exact(a) => write!(f, "{a}"),
            AddrPattern::Prefix(p) => write!(f, "{p}"),
        }
    }
}

/// One pinned peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// A name for logs and errors.
    pub name: String,
    /// Its key.
    pub fingerprint: Fingerprint,
    /// Where it may speak from (empty: anywhere).
    pub addresses: Vec<AddrPattern>,
}

impl Pin {
    /// `true` when this peer may speak from `a`.
    pub fn covers(&self, a: SocketAddr, any_port: bool) -> bool {
        self.addresses.is_empty() || self.addresses.iter().any(|p| p.matches(a, any_port))
    }

    /// `true` when this peer may speak from `ip` on every port: no address
    /// patterns, or a prefix (or bare IP) containing it.
    pub fn covers_every_port(&self, ip: std::net::IpAddr) -> bool {
        self.addresses.is_empty()
            || self
                .addresses
                .iter()
                .any(|p| matches!(p, AddrPattern::Prefix(x) if x.contains(ip)))
    }

    fn describe(&self) -> String {
        if self.addresses.is_empty() {
            format!("{:?} ({})", self.name, self.fingerprint)
        } else {
            let a: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
            format!(
                "{:?} ({}, from {})",
                self.name,
                self.fingerprint,
                a.join(", ")
            )
        }
    }
}

/// Why a peer's key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// No pin has this key, and some pin names this address: the configured
    /// fingerprint is probably wrong.
    WrongKey {
        /// The peer's address.
        peer: SocketAddr,
        /// The key it presented.
        presented: Fingerprint,
        /// The pins that cover this address.
        expected: Vec<String>,
    },
    /// No pin has this key and none names this address.
    Unpinned {
        /// The peer's address.
        peer: SocketAddr,
        /// The key it presented.
        presented: Fingerprint,
    },
    /// The key is pinned, but not for this address.
    WrongAddress {
        /// The peer's address.
        peer: SocketAddr,
        /// The pin whose key it presented.
        pin: String,
    },
    /// The peer sent no certificate, or one whose key cannot be read.
    NoKey {
        /// The peer's address.
        peer: SocketAddr,
    },
}

impl PinError {
    /// The metrics label of the reason.
    pub fn label(&self) -> &'static str {
        match self {
            PinError::WrongKey { .. } | PinError::Unpinned { .. } | PinError::NoKey { .. } => {
                "failed_unpinned_key"
            }
            PinError::WrongAddress { .. } => "failed_wrong_address",
        }
    }
}

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinError::WrongKey {
                peer,
                presented,
                expected,
            } => write!(
                f,
                "peer {peer} presented key {presented}, but the config pins {} for that address: \
                 check the fingerprint in [[dtls.peer]] (the peer prints its own with `ivip keygen --fingerprint CERT`)",
                expected.join(" or ")
            ),
            PinError::Unpinned { peer, presented } => write!(
                f,
                "peer {peer} presented key {presented}, which no [[dtls.peer]] pins: refused"
            ),
            PinError::WrongAddress { peer, pin } => write!(
                f,
                "peer {peer} presented the key of {pin}, which is not pinned for that address: refused"
            ),
            PinError::NoKey { peer } => {
                write!(f, "peer {peer} presented no usable certificate: refused")
            }
        }
    }
}

/// Every pin of one node, indexed by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct PinSet {
    pins: Vec<Pin>,
    by_key: HashMap<Fingerprint, Vec<usize>>,
}

impl PinSet {
    /// A set of pins.
    pub fn new(pins: Vec<Pin>) -> PinSet {
        let mut by_key: HashMap<Fingerprint, Vec<usize>> = HashMap::new();
        for (i, p) in pins.iter().enumerate() {
            by_key.entry(p.fingerprint).or_default().push(i);
        }
        PinSet { pins, by_key }
    }

    /// The pins.
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }

    /// `true` when some pinned peer may speak from `a`: the only addresses this
    /// node opens a link to.
    pub fn covers(&self, a: SocketAddr) -> bool {
        self.pins.iter().any(|p| p.covers(a, false))
    }

    /// The pins that name an address covering `a` (for messages).
    pub fn naming(&self, a: SocketAddr, any_port: bool) -> Vec<&Pin> {
        self.pins
            .iter()
            .filter(|p| !p.addresses.is_empty() && p.covers(a, any_port))
            .collect()
    }

    /// Accept or refuse key `fp` presented by `peer` (`any_port` for HTTPS).
    /// Returns the index of the pin that accepts it.
    ///
    /// # Errors
    /// [`PinError`], naming the peer and what the config expected.
    pub fn check(
        &self,
        peer: SocketAddr,
        fp: Fingerprint,
        any_port: bool,
    ) -> Result<usize, PinError> {
        match self.by_key.get(&fp) {
            Some(idx) => idx
                .iter()
                .copied()
                .find(|&i| self.pins[i].covers(peer, any_port))
                .ok_or_else(|| PinError::WrongAddress {
                    peer,
                    pin: self.pins[idx[0]].describe(),
                }),
            None => {
                let expected: Vec<String> = self
                    .naming(peer, any_port)
                    .iter()
                    .map(|p| p.describe())
                    .collect();
                if expected.is_empty() {
                    Err(PinError::Unpinned {
                        peer,
                        presented: fp,
                    })
                } else {
                    Err(PinError::WrongKey {
                        peer,
                        presented: fp,
                        expected,
                    })
                }
            }
        }
    }

    /// The name of pin `i`.
    pub fn name(&self, i: usize) -> &str {
        self.pins.get(i).map_or("?", |p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn set() -> PinSet {
        PinSet::new(vec![
            Pin {
                name: "l0-a".into(),
                fingerprint: fp(1),
                addresses: vec!["127.0.0.1:4500".parse().unwrap()],
            },
            Pin {
                name: "qsds".into(),
                fingerprint: fp(2),
                addresses: vec!["10.1.0.0/16".parse().unwrap()],
            },
            Pin {
                name: "roaming".into(),
                fingerprint: fp(3),
                addresses: vec![],
            },
        ])
    }

    #[test]
    fn keys_are_accepted_only_from_their_addresses() {
        let s = set();
        assert_eq!(s.check(a("127.0.0.1:4500"), fp(1), false), Ok(0));
        assert_eq!(s.check(a("[::ffff:127.0.0.1]:4500"), fp(1), false), Ok(0));
        assert_eq!(s.check(a("10.1.9.9:7"), fp(2), false), Ok(1));
        assert_eq!(s.check(a("192.0.2.1:1"), fp(3), false), Ok(2));
        let e = s.check(a("127.0.0.1:4501"), fp(1), false).unwrap_err();
        assert!(matches!(e, PinError::WrongAddress { .. }));
        assert!(e.to_string().contains("l0-a"), "{e}");
        // HTTPS ignores the port of an exact pattern.
        assert_eq!(s.check(a("127.0.0.1:8443"), fp(1), true), Ok(0));
    }

    #[test]
    fn refusals_name_the_peer_and_the_pin_expected() {
        let s = set();
        let e = s.check(a("127.0.0.1:4500"), fp(9), false).unwrap_err();
        let t = e.to_string();
        assert!(matches!(e, PinError::WrongKey { .. }));
        assert!(
            t.contains("127.0.0.1:4500") && t.contains("\"l0-a\""),
            "{t}"
        );
        assert!(
            t.contains(&fp(1).to_string()) && t.contains(&fp(9).to_string()),
            "{t}"
        );
        let e = s.check(a("192.0.2.1:1"), fp(9), false).unwrap_err();
        assert!(matches!(e, PinError::Unpinned { .. }), "{e}");
        assert_eq!(e.label(), "failed_unpinned_key");
    }

    #[test]
    fn coverage_decides_where_links_may_be_opened() {
        let s = set();
        assert!(s.covers(a("127.0.0.1:4500")));
        assert!(
            s.covers(a("203.0.113.5:1")),
            "the roaming pin covers everything"
        );
        let strict = PinSet::new(set().pins[..2].to_vec());
        assert!(!strict.covers(a("127.0.0.1:4501")));
        assert!(strict.covers(a("10.1.0.1:1")));
        assert!("nonsense".parse::<AddrPattern>().is_err());
        // Every port: a prefix or no addresses, never an exact ip:port.
        let p = set().pins;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(!p[0].covers_every_port(ip("127.0.0.1")));
        assert!(p[1].covers_every_port(ip("10.1.2.3")));
        assert!(!p[1].covers_every_port(ip("10.2.0.1")));
        assert!(p[2].covers_every_port(ip("192.0.2.1")));
    }
}
