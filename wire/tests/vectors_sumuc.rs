//! spec: sumuc.md §7 — the SUMUC test vectors in `spec/vectors/sumuc.txt`,
//! signed with the RFC 8032 TEST 1 key.

mod common;

use common::Vector;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use ivip_wire::sumuc::{Sumuc, SumucView};
use ivip_wire::{Command, Etr, WireError};

const TEST_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key() -> SigningKey {
    let seed: [u8; 32] = ivip_wire::hex::decode(TEST_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

fn signed(mut s: Sumuc) -> (Sumuc, Vec<u8>) {
    s.signer = key().verifying_key().to_bytes();
    let mut b = s.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key().sign(&b[..n]).to_bytes();
    b[n..].copy_from_slice(&sig);
    s.signature = sig;
    (s, b)
}

fn valid() -> Vec<(&'static str, Sumuc)> {
    let e4 = Etr::V4("192.0.2.1".parse().unwrap());
    let base = Sumuc {
        signer: [0; 32],
        request_id: 0x1122_3344_5566_7788,
        timestamp_us: 1_764_073_316_000_000,
        execute_at_us: 0,
        mab: "20.0.0.0/14".parse().unwrap(),
        origin: "uas-z/user-u".into(),
        commands: vec![Command::SetEtr {
            start: 0x1400_0005,
            len: 1,
            etr: e4,
        }],
        signature: [0; 64],
    };
    vec![
        ("one IPv4 set-etr, at once", base.clone()),
        (
            "s3.7 example: zero an 8-long micronet, split it, map the parts; execute later",
            Sumuc {
                execute_at_us: 1_764_073_376_000_000,
                commands: vec![
                    Command::SetEtr {
                        start: 0x1400_0008,
                        len: 8,
                        etr: Etr::zero(ivip_wire::Family::V4),
                    },
                    Command::Split {
                        start: 0x1400_0008,
                        len: 8,
                        at: 2,
                    },
                    Command::Split {
                        start: 0x1400_000a,
                        len: 6,
                        at: 3,
                    },
                    Command::SetEtr {
                        start: 0x1400_0008,
                        len: 2,
                        etr: e4,
                    },
                ],
                ..base.clone()
            },
        ),
        (
            "IPv6 define, empty origin",
            Sumuc {
                mab: "2001:db8::/32".parse().unwrap(),
                origin: String::new(),
                commands: vec![Command::Define {
                    start: 0x2001_0db8_0000_0010,
                    len: 4,
                    etr: Etr::V6("2001:db8:ffff::1".parse().unwrap()),
                }],
                ..base
            },
        ),
    ]
}

fn invalid(good: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let m = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.to_vec();
        f(&mut v);
        v
    };
    vec![
        ("empty", vec![], WireError::Truncated),
        ("bad magic", m(&|v| v[0] = b'X'), WireError::BadMagic),
        ("version 2", m(&|v| v[4] = 2), WireError::UnsupportedVersion),
        ("flags set", m(&|v| v[5] = 1), WireError::ReservedNonZero),
        ("no commands", m(&|v| v[6..8].fill(0)), WireError::Empty),
        (
            "count 2 for 1 command",
            m(&|v| v[7] = 2),
            WireError::CountOverrun,
        ),
        ("family 5", m(&|v| v[64] = 5), WireError::BadFamily),
        (
            "MAB start not aligned",
            m(&|v| v[73] = 1),
            WireError::BadMab,
        ),
        (
            "origin longer than the body",
            m(&|v| v[75] = 0xff),
            WireError::Truncated,
        ),
        (
            "origin over 255 bytes",
            m(&|v| v[74] = 1),
            WireError::TooLong,
        ),
        ("origin not UTF-8", m(&|v| v[76] = 0xff), WireError::BadText),
        (
            "one byte short",
            m(&|v| v.truncate(v.len() - 1)),
            WireError::CountOverrun,
        ),
        ("too long", vec![0u8; 65_537], WireError::TooLong),
    ]
}

fn fields(s: &Sumuc) -> Vec<String> {
    common::lines(&s.to_string())
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    let mut first = None;
    for (name, s) in valid() {
        let (s, b) = signed(s);
        first.get_or_insert_with(|| b.clone());
        out.push(Vector::valid(name, b, fields(&s)));
    }
    for (name, b, e) in invalid(first.as_ref().unwrap()) {
        out.push(Vector::reject(name, b, e));
    }
    common::write(
        "sumuc.txt",
        "SUMUC test vectors (spec/sumuc.md), signed with the RFC 8032 section 7.1\n\
         TEST 1 key (public d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a).\n\
         Invalid vectors are mutations of the first valid vector.",
        &out,
    );
}

#[test]
fn sumuc_vectors_parse_emit_verify_and_reject() {
    let vk = key().verifying_key();
    let (mut ok, mut bad) = (0, 0);
    for v in common::load("sumuc.txt") {
        match v.error {
            None => {
                let view = SumucView::new_checked(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                let s = view.to_owned();
                assert_eq!(fields(&s), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; s.buffer_len()];
                s.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                let sig = ed25519_dalek::Signature::from_bytes(&view.signature());
                assert!(vk.verify(view.signed_bytes(), &sig).is_ok(), "{}", v.name);
                assert_eq!(view.signer(), vk.as_bytes());
                ok += 1;
            }
            Some(e) => {
                assert_eq!(
                    SumucView::new_checked(&v.bytes).map(|_| ()),
                    Err(e),
                    "{}",
                    v.name
                );
                bad += 1;
            }
        }
    }
    assert!(ok >= 3 && bad >= 10, "{ok} valid, {bad} invalid");
}
