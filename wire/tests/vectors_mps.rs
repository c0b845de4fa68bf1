//! spec: mps.md §5 — the MPS bundle test vectors, read from
//! `spec/vectors/mps.txt`: each valid vector parses to the listed fields, emits
//! back to the same bytes into a buffer prefilled with 0xa5, and re-parses to the
//! same value; each invalid vector fails with exactly the listed error. Also a
//! property test: no input makes the parser panic, and accepted bundles re-emit to
//! the same bytes.

mod common;

use common::Vector;
use ed25519_dalek::{Signer, SigningKey};
use ivip_wire::WireError;
use ivip_wire::mps::{Bundle, BundleRepr, BundleWriter};
use ivip_wire::payload::{PayloadRepr, Record};
use ivip_wire::{PayloadId, RuasId, Seq};
use proptest::prelude::*;

/// RFC 8032 §7.1 TEST 1 secret key (as in the payload vectors).
const TEST_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn heartbeat(seq: u32, interval_ms: u32) -> Vec<u8> {
    let seed: [u8; 32] = ivip_wire::hex::decode(TEST_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    let r = PayloadRepr {
        id: PayloadId {
            ruas: RuasId::new(3).unwrap(),
            epoch: 1,
            seq: Seq(seq),
        },
        timestamp_us: 1_764_073_316_000_000,
        records: vec![Record::Heartbeat { interval_ms }],
        signature: [0; 64],
    };
    let mut b = r.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = SigningKey::from_bytes(&seed).sign(&b[..n]).to_bytes();
    b[n..].copy_from_slice(&sig);
    b
}

fn valid() -> Vec<(&'static str, BundleRepr)> {
    vec![
        ("empty bundle", BundleRepr { payloads: vec![] }),
        (
            "one heartbeat payload",
            BundleRepr {
                payloads: vec![heartbeat(46, 1000)],
            },
        ),
        (
            "three payloads of RUAS 3 epoch 1, seq 100..=102",
            BundleRepr {
                payloads: vec![
                    heartbeat(100, 250),
                    heartbeat(101, 250),
                    heartbeat(102, 250),
                ],
            },
        ),
        (
            "sequence wrap: seq 4294967295 then 0",
            BundleRepr {
                payloads: vec![heartbeat(u32::MAX, 250), heartbeat(0, 250)],
            },
        ),
    ]
}

fn emit(r: &BundleRepr) -> Vec<u8> {
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b).unwrap();
    b
}

fn invalid() -> Vec<(&'static str, Vec<u8>, WireError)> {
    let one = emit(&valid()[1].1);
    let two = emit(&BundleRepr {
        payloads: vec![heartbeat(1, 250), heartbeat(2, 250)],
    });
    let m = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    vec![
        ("empty body", vec![], WireError::Truncated),
        ("three bytes", vec![1, 0, 0], WireError::Truncated),
        (
            "version 2",
            m(&one, &|b| b[0] = 2),
            WireError::UnsupportedVersion,
        ),
        (
            "reserved byte set",
            m(&one, &|b| b[1] = 1),
            WireError::ReservedNonZero,
        ),
        (
            "count 2 with one entry",
            m(&one, &|b| b[3] = 2),
            WireError::CountOverrun,
        ),
        (
            "count 0 with one entry",
            m(&one, &|b| b[3] = 0),
            WireError::TrailingBytes,
        ),
        (
            "trailing byte",
            m(&one, &|b| b.push(0)),
            WireError::TrailingBytes,
        ),
        (
            "entry cut short",
            m(&one, &|b| {
                b.pop();
            }),
            WireError::CountOverrun,
        ),
        (
            "entry length 1201",
            m(&one, &|b| b[4..6].copy_from_slice(&1201u16.to_be_bytes())),
            WireError::TooLong,
        ),
        (
            "entry length 87, below an empty payload",
            m(&one, &|b| b[4..6].copy_from_slice(&87u16.to_be_bytes())),
            WireError::Truncated,
        ),
        (
            "entry length one more than its payload",
            m(&two, &|b| {
                let l = u16::from_be_bytes([b[4], b[5]]) + 1;
                b[4..6].copy_from_slice(&l.to_be_bytes());
            }),
            WireError::LengthMismatch,
        ),
        (
            "entry payload version 2",
            m(&one, &|b| b[6] = 2),
            WireError::UnsupportedVersion,
        ),
        (
            "entry payload kind 16 (control)",
            m(&one, &|b| b[7] = 16),
            WireError::UnknownType,
        ),
    ]
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    for (name, r) in valid() {
        out.push(Vector::valid(name, emit(&r), common::lines(&r.to_string())));
    }
    for (name, b, e) in invalid() {
        out.push(Vector::reject(name, b, e));
    }
    common::write(
        "mps.txt",
        "MPS bundle test vectors (spec/mps.md).\n\
         Entries are heartbeat payloads of RUAS 3, epoch 1, signed with the RFC 8032\n\
         section 7.1 TEST 1 key. Invalid vectors are mutations of valid ones.",
        &out,
    );
}

#[test]
fn mps_vectors_parse_emit_and_reject() {
    let (mut valid_n, mut invalid_n) = (0, 0);
    for v in common::load("mps.txt") {
        match v.error {
            None => {
                let b = Bundle::new_checked(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                let r = BundleRepr::parse(&b);
                assert_eq!(common::lines(&r.to_string()), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; r.buffer_len()];
                r.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(
                    BundleRepr::parse(&Bundle::new_checked(&buf).unwrap()),
                    r,
                    "{}",
                    v.name
                );
                assert_eq!(b.len(), r.payloads.len());
                valid_n += 1;
            }
            Some(e) => {
                assert_eq!(
                    Bundle::new_checked(&v.bytes).map(|_| ()),
                    Err(e),
                    "{}",
                    v.name
                );
                invalid_n += 1;
            }
        }
    }
    assert!(
        valid_n >= 4 && invalid_n >= 12,
        "{valid_n} valid, {invalid_n} invalid"
    );
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let mut w = BundleWriter::new();
    assert_eq!(w.push(&[1u8; 10]), Err(WireError::Truncated));
    let mut bad = heartbeat(1, 250);
    bad[0] = 9;
    assert_eq!(w.push(&bad), Err(WireError::UnsupportedVersion));
    w.push(&heartbeat(1, 250)).unwrap();
    assert_eq!(w.len(), 1);
    let body = w.finish();
    assert_eq!(Bundle::new_checked(&body).unwrap().len(), 1);
}

proptest! {
    #[test]
    fn bundle_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(b) = Bundle::new_checked(&bytes) {
            let r = BundleRepr::parse(&b);
            prop_assert_eq!(emit(&r), bytes);
        }
    }

    #[test]
    fn mutated_bundle_never_panics(pos in 0usize..300, val in any::<u8>(), cut in 0usize..300) {
        let mut b = emit(&BundleRepr { payloads: vec![heartbeat(7, 250), heartbeat(8, 250)] });
        let p = pos % b.len();
        b[p] = val;
        b.truncate(cut.max(p + 1));
        if let Ok(x) = Bundle::new_checked(&b) {
            let n = x.iter().count();
            prop_assert_eq!(n, x.len());
            prop_assert_eq!(emit(&BundleRepr::parse(&x)), b);
        }
    }
}
