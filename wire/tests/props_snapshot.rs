//! Property tests for the snapshot format (spec: snapshot.md): every snapshot the
//! generator makes round-trips through emit and parse; the parser and the name
//! parser never panic on random bytes or on mutations of valid files, and anything a
//! mutation leaves acceptable re-encodes to the same bytes (STYLE practice 11).

use std::net::{Ipv4Addr, Ipv6Addr};

use ivip_wire::snapshot::{Entry, Extension, Snapshot, SnapshotMeta, SnapshotName, SnapshotRepr};
use ivip_wire::{Etr, Family, Mab, RuasId};
use proptest::prelude::*;

fn mab() -> impl Strategy<Value = Mab> {
    prop_oneof![Just(Family::V4), Just(Family::V6)].prop_flat_map(|f| {
        let bits = f.unit_bits();
        (1..=bits, any::<u64>()).prop_map(move |(plen, s)| {
            let host = u32::from(bits - plen);
            let s = if f == Family::V4 { s & 0xffff_ffff } else { s };
            let start = if host >= 64 { 0 } else { (s >> host) << host };
            Mab::new(f, start, plen).expect("aligned by construction")
        })
    })
}

fn etr(f: Family, raw: u128) -> Etr {
    match f {
        Family::V4 => Etr::V4(Ipv4Addr::from(raw as u32)),
        Family::V6 => Etr::V6(Ipv6Addr::from(raw)),
    }
}

fn snapshot() -> impl Strategy<Value = SnapshotRepr> {
    (
        mab(),
        0u8..128,
        any::<u64>(),
        // Names carry years up to 9999 (snapshot.md §5).
        0u64..253_402_300_800_000_000,
        prop::collection::vec((1u64..50, 1u64..50, any::<u128>()), 0..40),
        prop::collection::vec(
            (
                any::<u8>(),
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 0..20),
            ),
            0..3,
        ),
        any::<[u8; 32]>(),
    )
        .prop_map(|(mab, ruas, mab_seq, created_us, parts, exts, sha256)| {
            let f = mab.family();
            let mut entries = Vec::new();
            let mut at = u128::from(mab.start());
            for (gap, len, raw) in parts {
                let start = at + u128::from(gap);
                let end = start + u128::from(len);
                if end > mab.end() {
                    break;
                }
                entries.push(Entry {
                    start: start as u64,
                    len,
                    etr: etr(f, raw),
                });
                at = end;
            }
            SnapshotRepr {
                meta: SnapshotMeta {
                    mab,
                    ruas: RuasId::new(ruas).expect("7 bits"),
                    mab_seq,
                    created_us,
                },
                entries,
                extensions: exts
                    .into_iter()
                    .map(|(kind, flags, body)| Extension { kind, flags, body })
                    .collect(),
                sha256,
                signature: [7; 64],
            }
        })
}

/// Flip, insert or delete bytes of a valid file.
fn mutate(mut b: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, val, op) in edits {
        if b.is_empty() {
            b.push(val);
            continue;
        }
        let i = pos % b.len();
        match op % 3 {
            0 => b[i] ^= val | 1,
            1 => b.insert(i, val),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn snapshot_round_trips(r in snapshot()) {
        let v = r.to_vec().unwrap();
        let s = Snapshot::new_checked(&v).unwrap();
        prop_assert_eq!(SnapshotRepr::parse(&s), r.clone());
        let name = r.meta.name();
        prop_assert_eq!(name.to_string().parse::<SnapshotName>(), Ok(name));
        prop_assert!(name.matches(&s));
    }

    #[test]
    fn snapshot_parser_never_panics_on_random_bytes(b in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(s) = Snapshot::new_checked(&b) {
            let _ = SnapshotRepr::parse(&s);
        }
        let _ = String::from_utf8_lossy(&b).parse::<SnapshotName>();
    }

    #[test]
    fn snapshot_parser_never_panics_on_mutated_files(
        r in snapshot(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let b = mutate(r.to_vec().unwrap(), &edits);
        if let Ok(s) = Snapshot::new_checked(&b) {
            prop_assert_eq!(SnapshotRepr::parse(&s).to_vec().unwrap(), b);
        }
        let name = mutate(r.meta.name().to_string().into_bytes(), &edits);
        if let Ok(n) = String::from_utf8_lossy(&name).parse::<SnapshotName>() {
            // An accepted name is in the one canonical form.
            prop_assert_eq!(n.to_string().into_bytes(), name);
        }
    }
}
