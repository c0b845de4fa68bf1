//! spec: snapshot.md §7 — the snapshot test vectors, read from
//! `spec/vectors/snapshot.txt`: each valid file parses to the listed fields, emits
//! back to the same bytes into a buffer prefilled with 0xa5, re-parses to the same
//! value, carries the canonical SHA-256 of its entries (§4) and a signature that
//! verifies; each invalid file fails with exactly the listed error. Vectors named
//! `file name: ...` hold a standard file name (§5) as ASCII.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::Vector;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use ivip_wire::snapshot::{
    Entry, Extension, Snapshot, SnapshotMeta, SnapshotName, SnapshotRepr, hash_prefix,
};
use ivip_wire::{Etr, Family, Mab, RuasId, WireError};
use sha2::Digest;

/// RFC 8032 §7.1 TEST 1 secret key: the vectors' signing key.
const TEST_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key() -> SigningKey {
    let seed: [u8; 32] = ivip_wire::hex::decode(TEST_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

fn canonical_hash(r: &SnapshotRepr) -> [u8; 32] {
    sha2::Sha256::digest(r.hash_input().unwrap()).into()
}

/// Fill in the canonical hash and the signature.
fn finish(mut r: SnapshotRepr) -> (SnapshotRepr, Vec<u8>) {
    r.sha256 = canonical_hash(&r);
    let mut b = r.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key().sign(&b[..n]).to_bytes();
    b[n..].copy_from_slice(&sig);
    r.signature = sig;
    (r, b)
}

fn meta(mab: &str, seq: u64) -> SnapshotMeta {
    SnapshotMeta {
        mab: mab.parse().unwrap(),
        ruas: RuasId::new(3).unwrap(),
        mab_seq: seq,
        created_us: 1_764_073_316_250_000,
    }
}

fn e4(start: u32, len: u64, etr: [u8; 4]) -> Entry {
    Entry {
        start: u64::from(start),
        len,
        etr: Etr::V4(Ipv4Addr::from(etr)),
    }
}

fn valid_reprs() -> Vec<(&'static str, SnapshotRepr)> {
    let blank = |m| SnapshotRepr {
        meta: m,
        entries: vec![],
        extensions: vec![],
        sha256: [0; 32],
        signature: [0; 64],
    };
    let v6 = |s: &str| Etr::V6(s.parse::<Ipv6Addr>().unwrap());
    vec![
        (
            "IPv4 MAB with three micronets, one mapped to zero, and a gap",
            SnapshotRepr {
                entries: vec![
                    e4(0x1400_0005, 1, [192, 0, 2, 1]),
                    e4(0x1400_0006, 10, [0, 0, 0, 0]),
                    e4(0x1400_0100, 256, [198, 51, 100, 7]),
                ],
                ..blank(meta("20.0.0.0/14", 8))
            },
        ),
        (
            "IPv4 MAB with no micronets (all unassigned)",
            blank(meta("20.0.0.0/14", 0)),
        ),
        (
            "IPv4 micronets at both ends of the MAB",
            SnapshotRepr {
                entries: vec![
                    e4(0x1400_0000, 1, [192, 0, 2, 9]),
                    e4(0x1403_fff0, 16, [192, 0, 2, 10]),
                ],
                ..blank(meta("20.0.0.0/14", 1_000_000))
            },
        ),
        (
            "IPv6 MAB with two micronets",
            SnapshotRepr {
                entries: vec![
                    Entry {
                        start: 0x2001_0db8_0000_0010,
                        len: 4,
                        etr: v6("2001:db8:ffff::1"),
                    },
                    Entry {
                        start: 0x2001_0db8_0001_0000,
                        len: 1 << 16,
                        etr: Etr::zero(Family::V6),
                    },
                ],
                ..blank(meta("2001:db8::/32", 2))
            },
        ),
        (
            "unknown extension record kind 200 is skipped (s4.1.2 extensibility)",
            SnapshotRepr {
                entries: vec![e4(0x1400_0005, 1, [192, 0, 2, 1])],
                extensions: vec![Extension {
                    kind: 200,
                    flags: 0x80,
                    body: vec![0xde, 0xad, 0xbe, 0xef],
                }],
                ..blank(meta("20.0.0.0/14", 9))
            },
        ),
    ]
}

/// Mutations of the first valid vector (three IPv4 entries: header 0..56, entries
/// 56..92, hash 92..124, signature 124..188).
fn invalid_vectors(good: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let mut v = Vec::new();
    let mut push = |name, f: &dyn Fn(&mut Vec<u8>), e| {
        let mut b = good.to_vec();
        f(&mut b);
        v.push((name, b, e));
    };
    push("empty", &|b| b.clear(), WireError::Truncated);
    push(
        "header cut short",
        &|b| b.truncate(55),
        WireError::Truncated,
    );
    push("bad magic", &|b| b[0] = b'X', WireError::BadMagic);
    push("version 2", &|b| b[8] = 2, WireError::UnsupportedVersion);
    push(
        "ruas high bit set",
        &|b| b[9] |= 0x80,
        WireError::ReservedNonZero,
    );
    push("flags set", &|b| b[10] = 1, WireError::ReservedNonZero);
    push(
        "reserved byte after MAB set",
        &|b| b[22] = 1,
        WireError::ReservedNonZero,
    );
    push("family 5", &|b| b[12] = 5, WireError::BadFamily);
    push("MAB prefix 0", &|b| b[13] = 0, WireError::BadMab);
    push("MAB start not aligned", &|b| b[21] = 1, WireError::BadMab);
    push(
        "count one too high, so the hash and signature are cut short",
        &|b| b[47] = 4,
        WireError::Truncated,
    );
    push(
        "count past the end of the file",
        &|b| b[47] = 100,
        WireError::CountOverrun,
    );
    push(
        "count near 2^64",
        &|b| b[40..48].copy_from_slice(&[0xff; 8]),
        WireError::CountOverrun,
    );
    push(
        "extension length past the end",
        &|b| b[51] = 200,
        WireError::CountOverrun,
    );
    push(
        "signature cut short",
        &|b| {
            b.pop();
        },
        WireError::Truncated,
    );
    push("trailing byte", &|b| b.push(0), WireError::TrailingBytes);
    push(
        "entry of length zero",
        &|b| b[60..64].copy_from_slice(&[0; 4]),
        WireError::BadRange,
    );
    push(
        "entry before the MAB",
        &|b| b[56] = 0x13,
        WireError::OutsideMab,
    );
    push(
        "entry running past the MAB",
        &|b| b[84..88].copy_from_slice(&0x0004_0000u32.to_be_bytes()),
        WireError::OutsideMab,
    );
    push("entries overlapping", &|b| b[74] = 1, WireError::Unsorted);
    push(
        "entries out of order",
        &|b| {
            let (a, c) = (b[56..68].to_vec(), b[68..80].to_vec());
            b[56..68].copy_from_slice(&c);
            b[68..80].copy_from_slice(&a);
        },
        WireError::Unsorted,
    );
    v
}

fn name_vectors() -> Vec<(&'static str, &'static str, Result<SnapshotName, WireError>)> {
    let n4 = SnapshotName {
        mab: "20.0.0.0/14".parse().unwrap(),
        created_s: 1_764_073_316,
        mab_seq: 8,
    };
    let n6 = SnapshotName {
        mab: "2001:db8::/32".parse().unwrap(),
        created_s: 1_764_073_316,
        mab_seq: 0x1234_5678_9abc,
    };
    let bad = Err(WireError::BadName);
    vec![
        (
            "IPv4",
            "v4-020.000.000.000-14-20251125T122156Z-0000000000000008.ivsnap",
            Ok(n4),
        ),
        (
            "IPv6",
            "v6-2001.0db8.0000.0000-32-20251125T122156Z-0000123456789abc.ivsnap",
            Ok(n6),
        ),
        (
            "octet not zero-padded",
            "v4-20.000.000.000-14-20251125T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "octet over 255",
            "v4-256.000.000.000-14-20251125T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "start not aligned to the prefix",
            "v4-020.000.000.001-14-20251125T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "prefix length 33",
            "v4-020.000.000.000-33-20251125T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "no such day",
            "v4-020.000.000.000-14-20251131T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "hour 24",
            "v4-020.000.000.000-14-20251125T242156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "upper-case hex sequence",
            "v6-2001.0db8.0000.0000-32-20251125T122156Z-0000123456789ABC.ivsnap",
            bad,
        ),
        (
            "sequence not 16 digits",
            "v4-020.000.000.000-14-20251125T122156Z-8.ivsnap",
            bad,
        ),
        (
            "wrong suffix",
            "v4-020.000.000.000-14-20251125T122156Z-0000000000000008.snap",
            bad,
        ),
        (
            // Found by the property test: byte offsets inside a multi-byte
            // character must be refused, not sliced.
            "a multi-byte character where the year's digits go",
            "v4-020.000.000.000-14-202\u{20ac}25T122156Z-0000000000000008.ivsnap",
            bad,
        ),
        (
            "family v5",
            "v5-020.000.000.000-14-20251125T122156Z-0000000000000008.ivsnap",
            bad,
        ),
    ]
}

fn fields(r: &SnapshotRepr) -> Vec<String> {
    common::lines(&r.to_string())
}

fn name_fields(n: &SnapshotName) -> Vec<String> {
    vec![format!(
        "snapshot-name mab={} created_s={} mab_seq={}",
        n.mab, n.created_s, n.mab_seq
    )]
}

const NAME_PREFIX: &str = "file name: ";

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    let mut first = None;
    for (name, r) in valid_reprs() {
        let (r, b) = finish(r);
        first.get_or_insert_with(|| b.clone());
        out.push(Vector::valid(name, b, fields(&r)));
    }
    for (name, b, e) in invalid_vectors(first.as_ref().unwrap()) {
        out.push(Vector::reject(name, b, e));
    }
    for (name, text, expect) in name_vectors() {
        let (fields, error) = match expect {
            Ok(n) => (name_fields(&n), None),
            Err(e) => (vec![], Some(e)),
        };
        out.push(Vector {
            name: format!("{NAME_PREFIX}{name}"),
            bytes: text.as_bytes().to_vec(),
            fields,
            error,
        });
    }
    common::write(
        "snapshot.txt",
        "Snapshot file test vectors (spec/snapshot.md).\n\
         Signed with the RFC 8032 section 7.1 TEST 1 key:\n\
         secret 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n\
         public d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\n\
         Each valid file's sha256 is the canonical hash of section 4.\n\
         Invalid vectors are mutations of the first valid vector.\n\
         Vectors named `file name: ...` hold a standard file name (section 5) as ASCII.",
        &out,
    );
}

#[test]
fn snapshot_vectors_parse_emit_hash_verify_and_reject() {
    let vk = key().verifying_key();
    let (mut valid, mut invalid, mut names) = (0, 0, 0);
    for v in common::load("snapshot.txt") {
        if let Some(_name) = v.name.strip_prefix(NAME_PREFIX) {
            let text = std::str::from_utf8(&v.bytes).expect("names are ASCII");
            match v.error {
                None => {
                    let n: SnapshotName = text
                        .parse()
                        .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                    assert_eq!(name_fields(&n), v.fields, "{}", v.name);
                    assert_eq!(n.to_string(), text, "{}: display", v.name);
                }
                Some(e) => assert_eq!(text.parse::<SnapshotName>(), Err(e), "{}", v.name),
            }
            names += 1;
            continue;
        }
        match v.error {
            None => {
                let s = Snapshot::new_checked(&v.bytes)
                    .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
                let r = SnapshotRepr::parse(&s);
                assert_eq!(fields(&r), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; r.buffer_len()];
                r.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(
                    SnapshotRepr::parse(&Snapshot::new_checked(&buf).unwrap()),
                    r,
                    "{}",
                    v.name
                );
                let (prefix, entries) = s.hash_input();
                let mut h = sha2::Sha256::new();
                h.update(prefix);
                h.update(entries);
                let h: [u8; 32] = h.finalize().into();
                assert_eq!(h, s.stored_sha256(), "{}: canonical hash", v.name);
                let sig = ed25519_dalek::Signature::from_bytes(&s.signature());
                assert!(
                    vk.verify(s.signed_bytes(), &sig).is_ok(),
                    "{}: signature",
                    v.name
                );
                assert!(s.meta().name().matches(&s), "{}: name", v.name);
                valid += 1;
            }
            Some(e) => {
                assert_eq!(
                    Snapshot::new_checked(&v.bytes).map(|_| ()),
                    Err(e),
                    "{}",
                    v.name
                );
                invalid += 1;
            }
        }
    }
    assert!(
        valid >= 5 && invalid >= 15 && names >= 10,
        "{valid} valid, {invalid} invalid, {names} names"
    );
}

#[test]
fn canonical_hash_prefix_layout() {
    // spec: snapshot.md §4 — "IVIPMABH", 1, MAB, mab_seq, count.
    let mab: Mab = "20.0.0.0/14".parse().unwrap();
    let p = hash_prefix(&mab, 0x0102, 3);
    assert_eq!(
        ivip_wire::hex::encode(&p),
        "495649504d414248\
         01\
         040e0000000014000000\
         0000000000000102\
         0000000000000003"
    );
}
