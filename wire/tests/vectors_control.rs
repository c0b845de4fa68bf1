//! spec: control.md §6 — the feed-control test vectors, read from
//! `spec/vectors/control.txt`: each valid vector parses to the listed fields,
//! emits back to the same bytes into a buffer prefilled with 0xa5, and re-parses to
//! the same value; each invalid vector fails with exactly the listed error. Also a
//! property test: no input makes the parser panic, and whatever parses re-emits
//! to the same bytes.

mod common;

use common::Vector;
use ivip_wire::WireError;
use ivip_wire::control::{CONTROL_LEN, Control, RefuseReason, Role};
use proptest::prelude::*;

const NONCE: u64 = 0x0123_4567_89ab_cdef;

fn valid() -> Vec<(&'static str, Control)> {
    vec![
        (
            "first subscribe of a replicator (no cookie yet)",
            Control::Subscribe {
                role: Role::Replicator,
                nonce: NONCE,
                cookie: 0,
            },
        ),
        (
            "challenge with a cookie",
            Control::Challenge {
                nonce: NONCE,
                cookie: 0x5a5a_0000_ffff_1234,
            },
        ),
        (
            "subscribe of an MPS echoing the cookie (also the keepalive)",
            Control::Subscribe {
                role: Role::Mps,
                nonce: NONCE,
                cookie: 0x5a5a_0000_ffff_1234,
            },
        ),
        (
            "subscribe of a QSD",
            Control::Subscribe {
                role: Role::Qsd,
                nonce: 1,
                cookie: 2,
            },
        ),
        (
            "subscribe of a recorder",
            Control::Subscribe {
                role: Role::Recorder,
                nonce: u64::MAX,
                cookie: 3,
            },
        ),
        (
            "accept: keepalive 500 ms, expiry 3 s",
            Control::Accept {
                nonce: NONCE,
                keepalive_ms: 500,
                expiry_ms: 3000,
            },
        ),
        (
            "refuse: capacity full, retry after 10 s",
            Control::Refuse {
                nonce: NONCE,
                reason: RefuseReason::CapacityFull,
                retry_after_ms: 10_000,
            },
        ),
        (
            "refuse: not allowed",
            Control::Refuse {
                nonce: NONCE,
                reason: RefuseReason::NotAllowed,
                retry_after_ms: 0,
            },
        ),
        (
            "refuse: role not served",
            Control::Refuse {
                nonce: NONCE,
                reason: RefuseReason::RoleNotServed,
                retry_after_ms: 0,
            },
        ),
        (
            "refuse: shutting down",
            Control::Refuse {
                nonce: NONCE,
                reason: RefuseReason::ShuttingDown,
                retry_after_ms: 0,
            },
        ),
        ("unsubscribe", Control::Unsubscribe { nonce: NONCE }),
    ]
}

fn invalid() -> Vec<(&'static str, Vec<u8>, WireError)> {
    let sub = Control::Subscribe {
        role: Role::Replicator,
        nonce: NONCE,
        cookie: 0,
    }
    .to_bytes()
    .to_vec();
    let refuse = Control::Refuse {
        nonce: NONCE,
        reason: RefuseReason::CapacityFull,
        retry_after_ms: 1,
    }
    .to_bytes()
    .to_vec();
    let unsub = Control::Unsubscribe { nonce: NONCE }.to_bytes().to_vec();
    let accept = Control::Accept {
        nonce: NONCE,
        keepalive_ms: 500,
        expiry_ms: 3000,
    }
    .to_bytes()
    .to_vec();
    let m = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    vec![
        ("empty", vec![], WireError::Truncated),
        ("one byte", vec![1], WireError::Truncated),
        (
            "version 2",
            m(&sub, &|b| b[0] = 2),
            WireError::UnsupportedVersion,
        ),
        (
            "kind 1 is a payload, not control",
            m(&sub, &|b| b[1] = 1),
            WireError::UnknownType,
        ),
        (
            "kind 21 is reserved",
            m(&sub, &|b| b[1] = 21),
            WireError::UnknownType,
        ),
        (
            "kind 31 is reserved",
            m(&sub, &|b| b[1] = 31),
            WireError::UnknownType,
        ),
        (
            "subscribe cut to 19 bytes",
            m(&sub, &|b| {
                b.pop();
            }),
            WireError::Truncated,
        ),
        (
            "subscribe with a trailing byte",
            m(&sub, &|b| b.push(0)),
            WireError::TrailingBytes,
        ),
        (
            "reserved byte set",
            m(&sub, &|b| b[3] = 1),
            WireError::ReservedNonZero,
        ),
        ("role 0", m(&sub, &|b| b[2] = 0), WireError::UnknownType),
        ("role 5", m(&sub, &|b| b[2] = 5), WireError::UnknownType),
        (
            "accept with a non-zero arg",
            m(&accept, &|b| b[2] = 1),
            WireError::ReservedNonZero,
        ),
        (
            "refuse reason 0",
            m(&refuse, &|b| b[2] = 0),
            WireError::UnknownStatus,
        ),
        (
            "refuse reason 5",
            m(&refuse, &|b| b[2] = 5),
            WireError::UnknownStatus,
        ),
        (
            "refuse reserved word set",
            m(&refuse, &|b| b[19] = 1),
            WireError::ReservedNonZero,
        ),
        (
            "unsubscribe with a body",
            m(&unsub, &|b| b[12] = 1),
            WireError::ReservedNonZero,
        ),
    ]
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    for (name, c) in valid() {
        out.push(Vector::valid(
            name,
            c.to_bytes().to_vec(),
            common::lines(&c.to_string()),
        ));
    }
    for (name, b, e) in invalid() {
        out.push(Vector::reject(name, b, e));
    }
    common::write(
        "control.txt",
        "Feed-control datagram test vectors (spec/control.md).\n\
         Every control datagram is 20 bytes: version, kind, arg, reserved, nonce (8),\n\
         body (8). Invalid vectors are mutations of valid ones.",
        &out,
    );
}

#[test]
fn control_vectors_parse_emit_and_reject() {
    let (mut valid_n, mut invalid_n) = (0, 0);
    for v in common::load("control.txt") {
        match v.error {
            None => {
                let c =
                    Control::parse(&v.bytes).unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                assert_eq!(common::lines(&c.to_string()), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; c.buffer_len()];
                c.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(Control::parse(&buf), Ok(c), "{}", v.name);
                valid_n += 1;
            }
            Some(e) => {
                assert_eq!(Control::parse(&v.bytes), Err(e), "{}", v.name);
                invalid_n += 1;
            }
        }
    }
    assert!(
        valid_n >= 10 && invalid_n >= 12,
        "{valid_n} valid, {invalid_n} invalid"
    );
}

proptest! {
    #[test]
    fn control_parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        if let Ok(c) = Control::parse(&bytes) {
            prop_assert_eq!(bytes.len(), CONTROL_LEN);
            prop_assert_eq!(c.to_bytes().to_vec(), bytes);
        }
    }

    #[test]
    fn mutated_control_never_panics(
        i in 0usize..6, pos in 0usize..CONTROL_LEN, val in any::<u8>(), cut in 0usize..=CONTROL_LEN,
    ) {
        let c = valid()[i % valid().len()].1;
        let mut b = c.to_bytes().to_vec();
        b[pos] = val;
        b.truncate(cut.max(pos + 1));
        if let Ok(d) = Control::parse(&b) {
            prop_assert_eq!(d.to_bytes().to_vec(), b);
        }
    }
}
