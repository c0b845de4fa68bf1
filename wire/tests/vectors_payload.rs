//! spec: payload.md §7 — the payload test vectors, read from
//! `spec/vectors/payload.txt`: each valid vector parses to the listed fields,
//! emits back to the same bytes into a buffer prefilled with 0xa5, and re-parses to
//! the same value; each invalid vector fails with exactly the listed error.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::Vector;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use ivip_wire::payload::{Payload, PayloadRepr, Record, SnapshotAnnouncement, peek_id};
use ivip_wire::{Command, Etr, Mab, PayloadId, RuasId, Seq, WireError};

/// RFC 8032 §7.1 TEST 1 secret key: the vectors' signing key.
const TEST_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key() -> SigningKey {
    let seed: [u8; 32] = ivip_wire::hex::decode(TEST_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

fn signed(mut r: PayloadRepr) -> (PayloadRepr, Vec<u8>) {
    let mut b = r.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key().sign(&b[..n]).to_bytes();
    b[n..].copy_from_slice(&sig);
    r.signature = sig;
    (r, b)
}

fn id(seq: u32) -> PayloadId {
    PayloadId {
        ruas: RuasId::new(3).unwrap(),
        epoch: 1,
        seq: Seq(seq),
    }
}

fn valid_reprs() -> Vec<(&'static str, PayloadRepr)> {
    let m4: Mab = "20.0.0.0/14".parse().unwrap();
    let m6: Mab = "2001:db8::/32".parse().unwrap();
    let etr4 = Etr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let etr6 = Etr::V6("2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap());
    let t = 1_764_073_316_000_000;
    let base = |seq, records| PayloadRepr {
        id: id(seq),
        timestamp_us: t,
        records,
        signature: [0; 64],
    };
    vec![
        (
            "one IPv4 set-etr",
            base(
                42,
                vec![Record::MabUpdate {
                    mab: m4,
                    mab_seq: 7,
                    commands: vec![Command::SetEtr {
                        start: 0x1400_0005,
                        len: 1,
                        etr: etr4,
                    }],
                }],
            ),
        ),
        (
            "IPv4 zero, split, define and set in one set (s3.7)",
            base(
                43,
                vec![Record::MabUpdate {
                    mab: m4,
                    mab_seq: 8,
                    commands: vec![
                        Command::SetEtr {
                            start: 0x1400_0100,
                            len: 8,
                            etr: Etr::zero(ivip_wire::Family::V4),
                        },
                        Command::Split {
                            start: 0x1400_0100,
                            len: 8,
                            at: 3,
                        },
                        Command::SetEtr {
                            start: 0x1400_0100,
                            len: 3,
                            etr: etr4,
                        },
                        Command::Join {
                            start: 0x1400_0200,
                            len: 16,
                        },
                        Command::Delete {
                            start: 0x1400_0300,
                            len: 2,
                        },
                        Command::Define {
                            start: 0x1400_0400,
                            len: 4,
                            etr: etr4,
                        },
                    ],
                }],
            ),
        ),
        (
            "IPv6 define",
            base(
                44,
                vec![Record::MabUpdate {
                    mab: m6,
                    mab_seq: 1,
                    commands: vec![Command::Define {
                        start: 0x2001_0db8_0000_0010,
                        len: 4,
                        etr: etr6,
                    }],
                }],
            ),
        ),
        (
            "two MABs, snapshot announcement and heartbeat",
            base(
                45,
                vec![
                    Record::MabUpdate {
                        mab: m6,
                        mab_seq: 2,
                        commands: vec![Command::Delete {
                            start: 0x2001_0db8_0000_0010,
                            len: 4,
                        }],
                    },
                    Record::Snapshot(SnapshotAnnouncement {
                        mab: m4,
                        mab_seq: 8,
                        created_us: t - 1_000_000,
                        sha256: [0x5a; 32],
                    }),
                    Record::Heartbeat { interval_ms: 1000 },
                ],
            ),
        ),
        (
            "heartbeat only",
            base(46, vec![Record::Heartbeat { interval_ms: 1000 }]),
        ),
        (
            "fragment 1 of 2",
            base(
                47,
                vec![Record::Fragment {
                    mab: m4,
                    mab_seq: 9,
                    index: 0,
                    count: 2,
                    command_count: 2,
                    chunk: vec![1, 0x14, 0, 0, 5, 0, 0],
                }],
            ),
        ),
        (
            "unknown record type 200 is skipped by length (s4.1.2 extensibility)",
            base(
                48,
                vec![
                    Record::Unknown {
                        kind: 200,
                        flags: 0x80,
                        body: vec![0xde, 0xad],
                    },
                    Record::Heartbeat { interval_ms: 250 },
                ],
            ),
        ),
    ]
}

fn invalid_vectors(good: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let mut v = Vec::new();
    let mut push = |name, f: &dyn Fn(&mut Vec<u8>), e| {
        let mut b = good.to_vec();
        f(&mut b);
        v.push((name, b, e));
    };
    push("empty", &|b| b.clear(), WireError::Truncated);
    push("header only", &|b| b.truncate(24), WireError::Truncated);
    push(
        "signature cut short",
        &|b| {
            b.pop();
        },
        WireError::Truncated,
    );
    push("trailing byte", &|b| b.push(0), WireError::LengthMismatch);
    push("version 2", &|b| b[0] = 2, WireError::UnsupportedVersion);
    push("kind 9", &|b| b[1] = 9, WireError::UnknownType);
    push(
        "ruas high bit set",
        &|b| b[2] |= 0x80,
        WireError::ReservedNonZero,
    );
    push("flags set", &|b| b[3] = 1, WireError::ReservedNonZero);
    push(
        "record count too high",
        &|b| b[23] += 1,
        WireError::CountOverrun,
    );
    push(
        "record flags set",
        &|b| b[25] = 1,
        WireError::ReservedNonZero,
    );
    push(
        "record length past body",
        &|b| b[27] += 1,
        WireError::CountOverrun,
    );
    push("family 5", &|b| b[28] = 5, WireError::BadFamily);
    push("MAB prefix 0", &|b| b[29] = 0, WireError::BadMab);
    push(
        "command count 0",
        &|b| b[46..48].copy_from_slice(&[0, 0]),
        WireError::Empty,
    );
    push("command count 2", &|b| b[47] = 2, WireError::CountOverrun);
    push("opcode 9", &|b| b[48] = 9, WireError::UnknownCommand);
    push(
        "micronet length 0",
        &|b| b[53..57].copy_from_slice(&[0; 4]),
        WireError::BadRange,
    );
    v.push(("1201 bytes", vec![1u8; 1201], WireError::TooLong));
    v
}

fn fields(r: &PayloadRepr) -> Vec<String> {
    common::lines(&r.to_string())
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    let mut first = None;
    for (name, r) in valid_reprs() {
        let (r, b) = signed(r);
        first.get_or_insert_with(|| b.clone());
        out.push(Vector::valid(name, b, fields(&r)));
    }
    for (name, b, e) in invalid_vectors(first.as_ref().unwrap()) {
        out.push(Vector::reject(name, b, e));
    }
    common::write(
        "payload.txt",
        "Update payload test vectors (spec/payload.md).\n\
         Signed with the RFC 8032 section 7.1 TEST 1 key:\n\
         secret 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n\
         public d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\n\
         Invalid vectors are mutations of the first valid vector.",
        &out,
    );
}

#[test]
fn payload_vectors_parse_emit_and_reject() {
    let vk = key().verifying_key();
    let mut valid = 0;
    let mut invalid = 0;
    for v in common::load("payload.txt") {
        match v.error {
            None => {
                let p = Payload::new_checked(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                let r = PayloadRepr::parse(&p);
                assert_eq!(fields(&r), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; r.buffer_len()];
                r.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(
                    PayloadRepr::parse(&Payload::new_checked(&buf).unwrap()),
                    r,
                    "{}",
                    v.name
                );
                assert_eq!(peek_id(&v.bytes), Ok(r.id));
                let sig = ed25519_dalek::Signature::from_bytes(&p.signature());
                assert!(
                    vk.verify(p.signed_bytes(), &sig).is_ok(),
                    "{}: signature",
                    v.name
                );
                valid += 1;
            }
            Some(e) => {
                assert_eq!(
                    Payload::new_checked(&v.bytes).map(|_| ()),
                    Err(e),
                    "{}",
                    v.name
                );
                invalid += 1;
            }
        }
    }
    assert!(
        valid >= 5 && invalid >= 10,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn vectors_public_key_is_rfc8032_test_1() {
    let vk: VerifyingKey = key().verifying_key();
    assert_eq!(
        ivip_wire::hex::encode(vk.as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
}
