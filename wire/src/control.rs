//! Feed-control datagrams: how a downstream subscribes to an upstream replicator
//! and keeps the subscription alive (seed s8, s3.10, s3.11).
//!
//! spec: control.md. Every control datagram is exactly [`CONTROL_LEN`] (20) bytes:
//! a fixed [`ControlHeader`] whose last 8 bytes mean different things per kind.
//! Kinds 16..=31 are feed control (spec/README.md §5); this version defines
//! 16..=20 and refuses the rest with [`WireError::UnknownType`].
//!
//! This module only knows bytes. The subscription state machines (cookie check,
//! capacity, silence expiry, failover) live in the `ivip` crate's `feed` module.

use core::fmt;

use zerocopy::network_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::WireError;

/// Bytes of every control datagram.
pub const CONTROL_LEN: usize = 20;
/// The version this implementation writes and reads (the same version byte as
/// payloads: spec/README.md §5).
pub const VERSION: u8 = 1;

/// Kind: a downstream asks for (or keeps alive) a feed.
pub const KIND_SUBSCRIBE: u8 = 16;
/// Kind: the upstream asks the subscriber to prove its address by echoing a cookie.
pub const KIND_CHALLENGE: u8 = 17;
/// Kind: the upstream accepted the subscription and states its timers.
pub const KIND_ACCEPT: u8 = 18;
/// Kind: the upstream refused or ended the subscription, with a reason.
pub const KIND_REFUSE: u8 = 19;
/// Kind: the downstream ends its subscription.
pub const KIND_UNSUBSCRIBE: u8 = 20;

/// The first and last datagram kind reserved for feed control (spec/README.md §5).
pub const KIND_CONTROL_FIRST: u8 = 16;
/// See [`KIND_CONTROL_FIRST`].
pub const KIND_CONTROL_LAST: u8 = 31;

/// `true` when `kind` (byte 1 of a feed datagram) is in the feed-control range.
pub const fn is_control_kind(kind: u8) -> bool {
    kind >= KIND_CONTROL_FIRST && kind <= KIND_CONTROL_LAST
}

/// The fixed layout of a control datagram. spec: control.md §2.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlHeader {
    /// [`VERSION`].
    pub version: u8,
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// Subscribe: the subscriber's [`Role`]; Refuse: the [`RefuseReason`]; else 0.
    pub arg: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// The subscriber's nonce: names one subscription; every answer echoes it.
    pub nonce: U64,
    /// Kind-specific: a cookie (Subscribe, Challenge), two 32-bit timers (Accept),
    /// retry-after and a reserved word (Refuse), or zero (Unsubscribe).
    pub body: [u8; 8],
}

const _: () = assert!(size_of::<ControlHeader>() == CONTROL_LEN);

/// What a subscriber is; an upstream may serve some roles and not others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A replicator (level n, or a level-0 mesh peer).
    Replicator,
    /// A full-database query server.
    Qsd,
    /// A missing payload server.
    Mps,
    /// A history recorder.
    Recorder,
}

impl Role {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Role::Replicator => 1,
            Role::Qsd => 2,
            Role::Mps => 3,
            Role::Recorder => 4,
        }
    }

    /// From the wire code.
    ///
    /// # Errors
    /// [`WireError::UnknownType`] for a code that is not defined.
    pub const fn from_code(c: u8) -> Result<Role, WireError> {
        match c {
            1 => Ok(Role::Replicator),
            2 => Ok(Role::Qsd),
            3 => Ok(Role::Mps),
            4 => Ok(Role::Recorder),
            _ => Err(WireError::UnknownType),
        }
    }

    /// A lower-case name (also used as a metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            Role::Replicator => "replicator",
            Role::Qsd => "qsd",
            Role::Mps => "mps",
            Role::Recorder => "recorder",
        }
    }
}

/// Why an upstream refused or ended a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The upstream already serves as many subscribers as it is configured for.
    CapacityFull,
    /// The subscriber's address is not in the upstream's allow list.
    NotAllowed,
    /// The upstream does not serve subscribers of this role.
    RoleNotServed,
    /// The upstream is stopping; subscribe elsewhere now.
    ShuttingDown,
}

impl RefuseReason {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            RefuseReason::CapacityFull => 1,
            RefuseReason::NotAllowed => 2,
            RefuseReason::RoleNotServed => 3,
            RefuseReason::ShuttingDown => 4,
        }
    }

    /// From the wire code.
    ///
    /// # Errors
    /// [`WireError::UnknownStatus`] for a code that is not defined.
    pub const fn from_code(c: u8) -> Result<RefuseReason, WireError> {
        match c {
            1 => Ok(RefuseReason::CapacityFull),
            2 => Ok(RefuseReason::NotAllowed),
            3 => Ok(RefuseReason::RoleNotServed),
            4 => Ok(RefuseReason::ShuttingDown),
            _ => Err(WireError::UnknownStatus),
        }
    }

    /// A lower-case name with underscores (also used as a metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            RefuseReason::CapacityFull => "capacity_full",
            RefuseReason::NotAllowed => "not_allowed",
            RefuseReason::RoleNotServed => "role_not_served",
            RefuseReason::ShuttingDown => "shutting_down",
        }
    }
}

/// A control datagram as a value. spec: control.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// Ask for a feed, or keep one alive (sent every keepalive interval).
    /// `cookie` is 0 until the upstream's [`Control::Challenge`] supplied one.
    Subscribe {
        /// What the subscriber is.
        role: Role,
        /// The subscriber's nonce for this subscription.
        nonce: u64,
        /// The cookie last received in a challenge, or 0.
        cookie: u64,
    },
    /// Prove you receive at your source address: subscribe again with this cookie.
    Challenge {
        /// The subscriber's nonce, echoed.
        nonce: u64,
        /// The cookie to echo.
        cookie: u64,
    },
    /// The subscription is active: payloads follow.
    Accept {
        /// The subscriber's nonce, echoed.
        nonce: u64,
        /// How often the subscriber must re-subscribe, in milliseconds.
        keepalive_ms: u32,
        /// After this many milliseconds without a re-subscribe the upstream drops
        /// the subscriber.
        expiry_ms: u32,
    },
    /// The subscription was refused or has ended.
    Refuse {
        /// The subscriber's nonce, echoed.
        nonce: u64,
        /// Why.
        reason: RefuseReason,
        /// A hint: do not ask this upstream again for this many milliseconds
        /// (0: no hint).
        retry_after_ms: u32,
    },
    /// The subscriber ends its subscription.
    Unsubscribe {
        /// The subscriber's nonce.
        nonce: u64,
    },
}

impl Control {
    /// Check and decode a whole datagram.
    ///
    /// # Errors
    /// In this order: [`WireError::Truncated`] (fewer than 2 bytes),
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownType`] (a kind
    /// outside 16..=20), [`WireError::Truncated`] (fewer than 20 bytes),
    /// [`WireError::TrailingBytes`] (more than 20), [`WireError::ReservedNonZero`],
    /// then [`WireError::UnknownType`] for an unknown role and
    /// [`WireError::UnknownStatus`] for an unknown refuse reason.
    pub fn parse(bytes: &[u8]) -> Result<Control, WireError> {
        // spec: control.md §4 — checks in this order.
        if bytes.len() < 2 {
            return Err(WireError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        if !(KIND_SUBSCRIBE..=KIND_UNSUBSCRIBE).contains(&bytes[1]) {
            return Err(WireError::UnknownType);
        }
        let h = ControlHeader::ref_from_bytes(bytes).map_err(|_| {
            if bytes.len() < CONTROL_LEN {
                WireError::Truncated
            } else {
                WireError::TrailingBytes
            }
        })?;
        if h.reserved != 0 {
            return Err(WireError::ReservedNonZero);
        }
        let nonce = h.nonce.get();
        let word =
            |i: usize| u32::from_be_bytes([h.body[i], h.body[i + 1], h.body[i + 2], h.body[i + 3]]);
        let cookie = u64::from_be_bytes(h.body);
        let arg_zero = || {
            if h.arg == 0 {
                Ok(())
            } else {
                Err(WireError::ReservedNonZero)
            }
        };
        match h.kind {
            KIND_SUBSCRIBE => Ok(Control::Subscribe {
                role: Role::from_code(h.arg)?,
                nonce,
                cookie,
            }),
            KIND_CHALLENGE => {
                arg_zero()?;
                Ok(Control::Challenge { nonce, cookie })
            }
            KIND_ACCEPT => {
                arg_zero()?;
                Ok(Control::Accept {
                    nonce,
                    keepalive_ms: word(0),
                    expiry_ms: word(4),
                })
            }
            KIND_REFUSE => {
                if word(4) != 0 {
                    return Err(WireError::ReservedNonZero);
                }
                Ok(Control::Refuse {
                    nonce,
                    reason: RefuseReason::from_code(h.arg)?,
                    retry_after_ms: word(0),
                })
            }
            _ => {
                arg_zero()?;
                if cookie != 0 {
                    return Err(WireError::ReservedNonZero);
                }
                Ok(Control::Unsubscribe { nonce })
            }
        }
    }

    /// The subscription nonce every kind carries.
    pub const fn nonce(&self) -> u64 {
        match *self {
            Control::Subscribe { nonce, .. }
            | Control::Challenge { nonce, .. }
            | Control::Accept { nonce, .. }
            | Control::Refuse { nonce, .. }
            | Control::Unsubscribe { nonce } => nonce,
        }
    }

    /// Bytes of the encoding: always [`CONTROL_LEN`].
    pub const fn buffer_len(&self) -> usize {
        CONTROL_LEN
    }

    /// The encoding.
    pub fn to_bytes(&self) -> [u8; CONTROL_LEN] {
        let (kind, arg, body) = match *self {
            Control::Subscribe { role, cookie, .. } => {
                (KIND_SUBSCRIBE, role.code(), cookie.to_be_bytes())
            }
            Control::Challenge { cookie, .. } => (KIND_CHALLENGE, 0, cookie.to_be_bytes()),
            Control::Accept {
                keepalive_ms,
                expiry_ms,
                ..
            } => (
                KIND_ACCEPT,
                0,
                ((u64::from(keepalive_ms) << 32) | u64::from(expiry_ms)).to_be_bytes(),
            ),
            Control::Refuse {
                reason,
                retry_after_ms,
                ..
            } => (
                KIND_REFUSE,
                reason.code(),
                (u64::from(retry_after_ms) << 32).to_be_bytes(),
            ),
            Control::Unsubscribe { .. } => (KIND_UNSUBSCRIBE, 0, [0; 8]),
        };
        let h = ControlHeader {
            version: VERSION,
            kind,
            arg,
            reserved: 0,
            nonce: U64::new(self.nonce()),
            body,
        };
        let mut out = [0u8; CONTROL_LEN];
        out.copy_from_slice(h.as_bytes());
        out
    }

    /// Encode into exactly [`CONTROL_LEN`] bytes.
    ///
    /// # Errors
    /// [`WireError::BufferSize`] when `b` is not [`CONTROL_LEN`] bytes.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if b.len() != CONTROL_LEN {
            return Err(WireError::BufferSize);
        }
        b.copy_from_slice(&self.to_bytes());
        Ok(())
    }
}

impl fmt::Display for Control {
    /// The `fields:` rendering used by the test vectors (spec: README.md §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Control::Subscribe {
                role,
                nonce,
                cookie,
            } => write!(
                f,
                "control=subscribe role={} nonce={nonce:#018x} cookie={cookie:#018x}",
                role.name()
            ),
            Control::Challenge { nonce, cookie } => write!(
                f,
                "control=challenge nonce={nonce:#018x} cookie={cookie:#018x}"
            ),
            Control::Accept {
                nonce,
                keepalive_ms,
                expiry_ms,
            } => write!(
                f,
                "control=accept nonce={nonce:#018x} keepalive_ms={keepalive_ms} expiry_ms={expiry_ms}"
            ),
            Control::Refuse {
                nonce,
                reason,
                retry_after_ms,
            } => write!(
                f,
                "control=refuse nonce={nonce:#018x} reason={} retry_after_ms={retry_after_ms}",
                reason.name()
            ),
            Control::Unsubscribe { nonce } => write!(f, "control=unsubscribe nonce={nonce:#018x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Control> {
        vec![
            Control::Subscribe {
                role: Role::Mps,
                nonce: 7,
                cookie: 0,
            },
            Control::Challenge {
                nonce: 7,
                cookie: u64::MAX,
            },
            Control::Accept {
                nonce: 7,
                keepalive_ms: 500,
                expiry_ms: 3000,
            },
            Control::Refuse {
                nonce: 7,
                reason: RefuseReason::CapacityFull,
                retry_after_ms: 9,
            },
            Control::Unsubscribe { nonce: 7 },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for c in all() {
            let b = c.to_bytes();
            assert_eq!(Control::parse(&b), Ok(c), "{c}");
            let mut buf = [0xa5u8; CONTROL_LEN];
            c.emit(&mut buf).unwrap();
            assert_eq!(buf, b);
            assert_eq!(c.emit(&mut [0u8; 19]), Err(WireError::BufferSize));
        }
    }

    #[test]
    fn control_kinds_are_16_to_31() {
        assert!(is_control_kind(16) && is_control_kind(31));
        assert!(!is_control_kind(1) && !is_control_kind(32));
        let mut b = all()[0].to_bytes();
        b[1] = 21;
        assert_eq!(Control::parse(&b), Err(WireError::UnknownType));
    }
}
