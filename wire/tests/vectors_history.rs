//! spec: history.md §8 — the history record and index file vectors in
//! `spec/vectors/history.txt` (payloads signed with the RFC 8032 TEST 1 key), and
//! property tests: no input makes the parsers panic, and whatever parses
//! re-encodes to the same bytes.

mod common;

use common::Vector;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use ivip_wire::history::{
    self, BaselineRecord, ChangedRange, EntryKind, FragmentRef, GapRecord, HistoryRecord,
    IndexEntry, IndexFile, IndexHeader, IndexMeta, Item, Location, MabEntry, PayloadRecord,
    SegmentSummary, SetItem, SetOutcome, SnapshotCheck, SnapshotItem, class_bit,
};
use ivip_wire::payload::{Payload, PayloadRepr, Record, SnapshotAnnouncement};
use ivip_wire::{Command, Etr, Mab, PayloadId, RuasId, Seq, WireError};
use proptest::prelude::*;

const TEST_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn key() -> SigningKey {
    let seed: [u8; 32] = ivip_wire::hex::decode(TEST_SECRET)
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

fn signed(p: &PayloadRepr) -> Vec<u8> {
    let mut b = p.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key().sign(&b[..n]).to_bytes();
    b[n..].copy_from_slice(&sig);
    b
}

fn v4(s: &str) -> Etr {
    Etr::V4(s.parse().unwrap())
}

fn u4(s: &str) -> u64 {
    u64::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
}

fn mab4() -> Mab {
    "20.0.0.0/14".parse().unwrap()
}

fn mab6() -> Mab {
    "2001:db8::/32".parse().unwrap()
}

fn id(seq: u32) -> PayloadId {
    PayloadId {
        ruas: RuasId::new(3).unwrap(),
        epoch: 1,
        seq: Seq(seq),
    }
}

const T: u64 = 1_764_073_316_000_000;

fn mapped(start: u64, len: u64, etr: Etr) -> ChangedRange {
    ChangedRange {
        start,
        len,
        etr: Some(etr),
    }
}

fn valid_records() -> Vec<(&'static str, HistoryRecord)> {
    let p1 = PayloadRepr {
        id: id(42),
        timestamp_us: T,
        records: vec![
            Record::MabUpdate {
                mab: mab4(),
                mab_seq: 7,
                commands: vec![Command::SetEtr {
                    start: u4("20.0.0.4"),
                    len: 4,
                    etr: v4("192.0.2.1"),
                }],
            },
            Record::MabUpdate {
                mab: mab4(),
                mab_seq: 8,
                commands: vec![Command::Delete {
                    start: u4("20.0.0.16"),
                    len: 4,
                }],
            },
            Record::Snapshot(SnapshotAnnouncement {
                mab: mab4(),
                mab_seq: 8,
                created_us: T - 1_000_000,
                sha256: [0x11; 32],
            }),
            Record::Heartbeat { interval_ms: 1000 },
        ],
        signature: [0; 64],
    };
    let p6 = PayloadRepr {
        id: id(43),
        timestamp_us: T + 1,
        records: vec![Record::MabUpdate {
            mab: mab6(),
            mab_seq: 1,
            commands: vec![Command::Define {
                start: 0x2001_0db8_0000_0010,
                len: 4,
                etr: Etr::V6("2001:db8:ffff::1".parse().unwrap()),
            }],
        }],
        signature: [0; 64],
    };
    let pf = PayloadRepr {
        id: id(45),
        timestamp_us: T + 3,
        records: vec![Record::Fragment {
            mab: mab4(),
            mab_seq: 9,
            index: 1,
            count: 2,
            command_count: 2,
            chunk: vec![5, 0x14, 0, 0, 0x20, 0, 0, 0, 2],
        }],
        signature: [0; 64],
    };
    let pr = PayloadRepr {
        id: id(46),
        timestamp_us: T + 4,
        records: vec![Record::MabUpdate {
            mab: mab4(),
            mab_seq: 10,
            commands: vec![Command::Join {
                start: u4("20.0.0.64"),
                len: 8,
            }],
        }],
        signature: [0; 64],
    };
    vec![
        (
            "payload record: IPv4 set-etr, a delete leaving units unassigned, a matched announcement, a heartbeat",
            HistoryRecord::Payload(PayloadRecord {
                recv_us: T + 250_000,
                payload: signed(&p1),
                items: vec![
                    Item::Set(SetItem {
                        outcome: SetOutcome::Applied,
                        record_index: 0,
                        fragments: vec![],
                        ranges: vec![mapped(u4("20.0.0.4"), 4, v4("192.0.2.1"))],
                    }),
                    Item::Set(SetItem {
                        outcome: SetOutcome::Applied,
                        record_index: 1,
                        fragments: vec![],
                        ranges: vec![ChangedRange {
                            start: u4("20.0.0.16"),
                            len: 4,
                            etr: None,
                        }],
                    }),
                    Item::Snapshot(SnapshotItem {
                        record_index: 2,
                        check: SnapshotCheck::Matched,
                    }),
                ],
            }),
        ),
        (
            "payload record: IPv6 define",
            HistoryRecord::Payload(PayloadRecord {
                recv_us: T + 250_001,
                payload: signed(&p6),
                items: vec![Item::Set(SetItem {
                    outcome: SetOutcome::Applied,
                    record_index: 0,
                    fragments: vec![],
                    ranges: vec![mapped(
                        0x2001_0db8_0000_0010,
                        4,
                        Etr::V6("2001:db8:ffff::1".parse().unwrap()),
                    )],
                })],
            }),
        ),
        (
            "payload record: the last fragment of a set, with a reference to the first; a split into two zero micronets",
            HistoryRecord::Payload(PayloadRecord {
                recv_us: T + 250_003,
                payload: signed(&pf),
                items: vec![Item::Set(SetItem {
                    outcome: SetOutcome::Applied,
                    record_index: 0,
                    fragments: vec![FragmentRef {
                        index: 0,
                        at: Location {
                            segment: 3,
                            offset: 4096,
                        },
                    }],
                    ranges: vec![
                        mapped(u4("20.0.0.32"), 2, v4("0.0.0.0")),
                        mapped(u4("20.0.0.34"), 6, v4("0.0.0.0")),
                    ],
                })],
            }),
        ),
        (
            "payload record: a set the layout refused",
            HistoryRecord::Payload(PayloadRecord {
                recv_us: T + 250_004,
                payload: signed(&pr),
                items: vec![Item::Set(SetItem {
                    outcome: SetOutcome::Refused,
                    record_index: 0,
                    fragments: vec![],
                    ranges: vec![],
                })],
            }),
        ),
        (
            "baseline record: IPv4, part 0 of 2, a zero micronet and two mapped",
            HistoryRecord::Baseline(BaselineRecord {
                ruas: RuasId::new(3).unwrap(),
                mab: mab4(),
                mab_seq: 6,
                created_us: T - 60_000_000,
                recv_us: T - 59_000_000,
                sha256: [0x22; 32],
                part: 0,
                part_count: 2,
                micronets: vec![
                    (u4("20.0.0.0"), 4, v4("0.0.0.0")),
                    (u4("20.0.0.4"), 4, v4("192.0.2.9")),
                    (u4("20.0.0.12"), 1, v4("192.0.2.10")),
                ],
            }),
        ),
        (
            "baseline record: IPv6, an empty last part",
            HistoryRecord::Baseline(BaselineRecord {
                ruas: RuasId::new(3).unwrap(),
                mab: mab6(),
                mab_seq: 0,
                created_us: T - 60_000_000,
                recv_us: T - 59_000_000,
                sha256: [0x33; 32],
                part: 1,
                part_count: 2,
                micronets: vec![],
            }),
        ),
        (
            "gap record: payloads 3/1/10..=12 never came",
            HistoryRecord::Gap(GapRecord::Payloads {
                recv_us: T + 120_000_000,
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                first: Seq(10),
                last: Seq(12),
            }),
        ),
        (
            "gap record: sets 8..=20 of a MAB not applied one by one",
            HistoryRecord::Gap(GapRecord::MabSets {
                recv_us: T + 121_000_000,
                mab: mab4(),
                first: 8,
                last: 20,
            }),
        ),
    ]
}

fn entry(
    mab: u16,
    kind: EntryKind,
    start: u64,
    len: u64,
    time_us: u64,
    segment: u32,
    offset: u32,
) -> IndexEntry {
    IndexEntry {
        mab,
        class: kind.class(len),
        kind,
        start,
        len,
        time_us,
        at: Location { segment, offset },
    }
}

fn valid_index() -> IndexFile {
    let mut entries = vec![
        entry(
            0,
            EntryKind::Baseline,
            u4("20.0.0.0"),
            4,
            T - 60_000_000,
            4,
            24,
        ),
        entry(
            0,
            EntryKind::Baseline,
            u4("20.0.0.4"),
            4,
            T - 60_000_000,
            4,
            24,
        ),
        entry(
            0,
            EntryKind::BaselineStart,
            T - 60_000_000,
            1,
            T - 60_000_000,
            4,
            24,
        ),
        entry(0, EntryKind::ChangeMapped, u4("20.0.0.4"), 4, T, 4, 900),
        entry(
            0,
            EntryKind::ChangeUnassigned,
            u4("20.0.0.16"),
            4,
            T,
            4,
            900,
        ),
        entry(0, EntryKind::Snapshot, T, 1, T, 4, 900),
        entry(0, EntryKind::ChangeMapped, u4("20.0.0.32"), 2, T + 3, 5, 24),
        entry(
            0,
            EntryKind::ChangeMapped,
            u4("20.0.0.64"),
            20,
            T + 4,
            5,
            400,
        ),
        entry(0, EntryKind::NoEffect, T + 4, 1, T + 4, 5, 500),
        entry(0, EntryKind::Gap, T + 5, 1, T + 5, 5, 600),
        entry(
            1,
            EntryKind::ChangeMapped,
            0x2001_0db8_0000_0010,
            4,
            T + 1,
            4,
            2000,
        ),
        entry(
            1,
            EntryKind::ChangeMapped,
            0x2001_0db8_0000_0100,
            300,
            T + 2,
            5,
            700,
        ),
        entry(
            1,
            EntryKind::ChangeUnassigned,
            0x2001_0db8_0001_0000,
            1 << 20,
            T + 2,
            5,
            700,
        ),
        entry(
            1,
            EntryKind::BaselineStart,
            T - 60_000_000,
            1,
            T - 60_000_000,
            4,
            1000,
        ),
        entry(
            1,
            EntryKind::Baseline,
            0x2001_0db8_0000_0000,
            16,
            T - 60_000_000,
            4,
            1000,
        ),
    ];
    entries.sort_by_key(IndexEntry::key);
    let mut classes = [0u32; 2];
    let mut per = [0u32; 2];
    for e in &entries {
        classes[usize::from(e.mab)] |= class_bit(e.class);
        per[(e.at.segment - 4) as usize] += 1;
    }
    IndexFile {
        block_shift: 9,
        first_segment: 4,
        last_segment: 5,
        mabs: vec![
            MabEntry {
                mab: mab4(),
                classes: classes[0],
            },
            MabEntry {
                mab: mab6(),
                classes: classes[1],
            },
        ],
        segments: vec![
            SegmentSummary {
                segment: 4,
                time_min_us: T - 60_000_000,
                time_max_us: T + 1,
                frames: 4,
                entries: per[0],
            },
            SegmentSummary {
                segment: 5,
                time_min_us: T + 2,
                time_max_us: T + 5,
                frames: 5,
                entries: per[1],
            },
        ],
        entries,
    }
}

fn lines(s: &dyn std::fmt::Display) -> Vec<String> {
    common::lines(&s.to_string())
}

fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offsets in the first valid record: after the 12-byte fixed part and the
/// payload come the item count and the items.
fn items_at(b: &[u8]) -> usize {
    12 + usize::from(u16::from_be_bytes([b[2], b[3]])) + 2
}

fn invalid_records(p1: &[u8], base: &[u8], gap: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let mut out = Vec::new();
    let mut m = |name, f: &dyn Fn(&mut Vec<u8>), e| {
        let mut b = p1.to_vec();
        f(&mut b);
        out.push((name, b, e));
    };
    let it = items_at(p1);
    m("empty", &|b| b.clear(), WireError::Truncated);
    m("unknown record type", &|b| b[0] = 9, WireError::UnknownType);
    m("flags not zero", &|b| b[1] = 1, WireError::ReservedNonZero);
    m(
        "payload length below a payload's minimum",
        &|b| set_u16(b, 2, 10),
        WireError::LengthMismatch,
    );
    m(
        "cut in the last range",
        &|b| {
            b.pop();
        },
        WireError::Truncated,
    );
    m(
        "a byte after the last item",
        &|b| b.push(0),
        WireError::TrailingBytes,
    );
    m(
        "embedded payload of another version",
        &|b| b[12] = 2,
        WireError::UnsupportedVersion,
    );
    m("unknown item kind", &|b| b[it] = 9, WireError::UnknownType);
    m(
        "unknown set outcome",
        &|b| b[it + 1] = 5,
        WireError::UnknownStatus,
    );
    m(
        "set item naming a record the payload lacks",
        &|b| set_u16(b, it + 2, 9),
        WireError::CountOverrun,
    );
    m(
        "set item naming the heartbeat",
        &|b| set_u16(b, it + 2, 3),
        WireError::UnknownType,
    );
    m(
        "fragment references on a whole set",
        &|b| b[it + 4] = 1,
        WireError::BadFragment,
    );
    m(
        "reserved item byte not zero",
        &|b| b[it + 5] = 1,
        WireError::ReservedNonZero,
    );
    m(
        "unknown range state",
        &|b| b[it + 8] = 2,
        WireError::UnknownStatus,
    );
    m(
        "range outside the MAB",
        &|b| b[it + 9] = 0x30,
        WireError::OutsideMab,
    );
    m(
        "range of length zero",
        &|b| b[it + 13..it + 17].copy_from_slice(&[0, 0, 0, 0]),
        WireError::BadRange,
    );
    m(
        "items out of record order",
        &|b| {
            // The second set item names record 0 as well.
            let second = it + 8 + 13;
            set_u16(b, second + 2, 0);
        },
        WireError::Unsorted,
    );
    m(
        "refused set with ranges",
        &|b| b[it + 1] = 1,
        WireError::StatusFieldsNonZero,
    );
    let mut n = |name, src: &[u8], f: &dyn Fn(&mut Vec<u8>), e| {
        let mut b = src.to_vec();
        f(&mut b);
        out.push((name, b, e));
    };
    n(
        "baseline: part not below the part count",
        base,
        &|b| b[72..76].copy_from_slice(&[0, 0, 0, 2]),
        WireError::BadFragment,
    );
    n(
        "baseline: more micronets than bytes",
        base,
        &|b| b[83] = 4,
        WireError::CountOverrun,
    );
    n(
        "baseline: fewer micronets than bytes",
        base,
        &|b| b[83] = 2,
        WireError::TrailingBytes,
    );
    n(
        "baseline: RUAS high bit set",
        base,
        &|b| b[2] |= 0x80,
        WireError::ReservedNonZero,
    );
    n(
        "baseline: micronets out of order",
        base,
        &|b| {
            let (x, y) = (88, 100);
            let first: Vec<u8> = b[x..x + 12].to_vec();
            let second: Vec<u8> = b[y..y + 12].to_vec();
            b[x..x + 12].copy_from_slice(&second);
            b[y..y + 12].copy_from_slice(&first);
        },
        WireError::Unsorted,
    );
    n("baseline: bad MAB", base, &|b| b[5] = 40, WireError::BadMab);
    n(
        "gap: unknown reason",
        gap,
        &|b| b[2] = 9,
        WireError::UnknownStatus,
    );
    n(
        "gap: last before first",
        gap,
        &|b| b[39] = 7,
        WireError::BadRange,
    );
    n(
        "gap: a byte too many",
        gap,
        &|b| b.push(0),
        WireError::TrailingBytes,
    );
    n(
        "gap: cut short",
        gap,
        &|b| {
            b.pop();
        },
        WireError::Truncated,
    );
    out
}

fn invalid_index(good: &[u8]) -> Vec<(&'static str, Vec<u8>, WireError)> {
    let h = IndexHeader::parse(good).unwrap();
    let blocks = h.blocks_offset() as usize;
    let recrc_header = |b: &mut Vec<u8>| {
        let c = ivip_wire::frame::crc32c_update(0, &b[..60]);
        b[60..64].copy_from_slice(&c.to_be_bytes());
    };
    let recrc_block = |b: &mut Vec<u8>, at: usize, len: usize| {
        let c = ivip_wire::frame::crc32c_update(0, &b[at + 8..at + len]);
        b[at + 4..at + 8].copy_from_slice(&c.to_be_bytes());
    };
    let mut out = Vec::new();
    let mut m = |name, f: &dyn Fn(&mut Vec<u8>), e| {
        let mut b = good.to_vec();
        f(&mut b);
        out.push((name, b, e));
    };
    m("index: bad magic", &|b| b[0] = b'X', WireError::BadMagic);
    m(
        "index: version 2",
        &|b| b[8] = 2,
        WireError::UnsupportedVersion,
    );
    m(
        "index: header checksum",
        &|b| b[20] ^= 1,
        WireError::HashMismatch,
    );
    m(
        "index: reserved header byte (checksum fixed)",
        &|b| {
            b[11] = 1;
            recrc_header(b);
        },
        WireError::ReservedNonZero,
    );
    m(
        "index: block size 256 (checksum fixed)",
        &|b| {
            b[9] = 8;
            recrc_header(b);
        },
        WireError::BadRange,
    );
    m(
        "index: meta length disagrees (checksum fixed)",
        &|b| {
            b[43] ^= 16;
            recrc_header(b);
        },
        WireError::LengthMismatch,
    );
    m(
        "index: meta checksum",
        &|b| b[64 + 20] ^= 1,
        WireError::HashMismatch,
    );
    m(
        "index: block checksum",
        &|b| b[blocks + 20] ^= 1,
        WireError::HashMismatch,
    );
    m(
        "index: cut short",
        &|b| {
            b.pop();
        },
        WireError::Truncated,
    );
    m(
        "index: a byte too many",
        &|b| b.push(0),
        WireError::TrailingBytes,
    );
    m(
        "index: entries out of order in a block (checksum fixed)",
        &|b| {
            let (x, y) = (blocks + 8, blocks + 8 + 36);
            let first: Vec<u8> = b[x..x + 36].to_vec();
            let second: Vec<u8> = b[y..y + 36].to_vec();
            b[x..x + 36].copy_from_slice(&second);
            b[y..y + 36].copy_from_slice(&first);
            recrc_block(b, blocks, 512);
        },
        WireError::Unsorted,
    );
    m(
        "index: class disagrees with the length (checksum fixed)",
        &|b| {
            b[blocks + 8 + 2] ^= 1;
            recrc_block(b, blocks, 512);
        },
        WireError::LengthMismatch,
    );
    m(
        "index: unknown entry kind (checksum fixed)",
        &|b| {
            b[blocks + 8 + 3] = 9;
            recrc_block(b, blocks, 512);
        },
        WireError::UnknownType,
    );
    m(
        "index: entry of a MAB the table lacks (checksum fixed)",
        &|b| {
            b[blocks + 8 + 1] = 7;
            recrc_block(b, blocks, 512);
        },
        WireError::CountOverrun,
    );
    out
}

fn index_vectors() -> (IndexFile, Vec<u8>) {
    let f = valid_index();
    let b = f.to_vec().unwrap();
    (f, b)
}

#[test]
fn generate_vectors() {
    if !common::regenerate() {
        return;
    }
    let mut out = Vec::new();
    let mut enc = Vec::new();
    for (name, r) in valid_records() {
        let b = r.to_vec().unwrap();
        out.push(Vector::valid(name, b.clone(), lines(&r)));
        enc.push(b);
    }
    let (f, b) = index_vectors();
    out.push(Vector::valid(
        "index file: two MABs, segments 4..=5, 512-byte blocks",
        b.clone(),
        lines(&f),
    ));
    for (name, bytes, e) in invalid_records(&enc[0], &enc[4], &enc[7])
        .into_iter()
        .chain(invalid_index(&b))
    {
        out.push(Vector::reject(name, bytes, e));
    }
    common::write(
        "history.txt",
        "History record and index file vectors (spec/history.md). Payloads inside\n\
         records are signed with the RFC 8032 section 7.1 TEST 1 key (public\n\
         d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a).\n\
         Invalid vectors are mutations of the first payload record, the first\n\
         baseline, the MAB gap and the index file; vectors named `index...` are\n\
         whole index files, the others frame bodies.",
        &out,
    );
}

#[test]
fn history_vectors_parse_emit_and_reject() {
    let vk = key().verifying_key();
    let (mut ok, mut bad) = (0, 0);
    for v in common::load("history.txt") {
        let is_index = v.name.starts_with("index") || v.name.starts_with("reject: index");
        match (v.error, is_index) {
            (None, false) => {
                let r =
                    HistoryRecord::parse(&v.bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
                assert_eq!(lines(&r), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; r.buffer_len().unwrap()];
                r.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                assert_eq!(HistoryRecord::parse(&buf), Ok(r.clone()));
                if let HistoryRecord::Payload(p) = &r {
                    let pl = Payload::new_checked(&p.payload).unwrap();
                    let sig = ed25519_dalek::Signature::from_bytes(&pl.signature());
                    assert!(vk.verify(pl.signed_bytes(), &sig).is_ok(), "{}", v.name);
                }
                ok += 1;
            }
            (None, true) => {
                let f = IndexFile::parse(&v.bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
                assert_eq!(lines(&f), v.fields, "{}", v.name);
                let mut buf = vec![0xa5u8; f.buffer_len().unwrap()];
                f.emit(&mut buf).unwrap();
                assert_eq!(buf, v.bytes, "{}: emit", v.name);
                // The pieces a store reads one by one agree with the whole.
                let h = IndexHeader::parse(&v.bytes).unwrap();
                let meta = IndexMeta::parse(&h, &v.bytes[64..64 + h.meta_len as usize]).unwrap();
                assert_eq!(meta.mabs, f.mabs);
                let at = h.block_offset(1) as usize;
                let b1 =
                    history::parse_block(&h, meta.mabs.len(), &v.bytes[at..at + h.block_len()])
                        .unwrap();
                assert_eq!(b1[0], f.entries[h.block_entries_max()]);
                ok += 1;
            }
            (Some(e), false) => {
                assert_eq!(HistoryRecord::parse(&v.bytes), Err(e), "{}", v.name);
                bad += 1;
            }
            (Some(e), true) => {
                assert_eq!(IndexFile::parse(&v.bytes).map(|_| ()), Err(e), "{}", v.name);
                bad += 1;
            }
        }
    }
    assert!(ok >= 9 && bad >= 40, "{ok} valid, {bad} invalid");
}

#[test]
fn emit_refuses_values_that_would_not_parse() {
    let HistoryRecord::Payload(mut p) = valid_records().remove(0).1 else {
        unreachable!()
    };
    if let Item::Set(s) = &mut p.items[0] {
        s.ranges.push(mapped(u4("20.0.0.5"), 1, v4("192.0.2.2")));
    }
    assert_eq!(HistoryRecord::Payload(p).to_vec(), Err(WireError::Unsorted));
    let mut f = valid_index();
    f.mabs[0].classes ^= 1;
    assert_eq!(f.to_vec(), Err(WireError::LengthMismatch));
    let mut f = valid_index();
    f.entries.swap(0, 1);
    assert_eq!(f.to_vec(), Err(WireError::Unsorted));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = valid_records()
        .iter()
        .map(|(_, r)| r.to_vec().unwrap())
        .collect();
    v.push(index_vectors().1);
    v
}

fn check_no_panic(b: &[u8]) {
    if let Ok(r) = HistoryRecord::parse(b) {
        // What parses re-encodes to the same bytes.
        assert_eq!(r.to_vec().as_deref(), Ok(b));
        let _ = r.to_string();
    }
    if let Ok(f) = IndexFile::parse(b) {
        assert_eq!(f.to_vec().as_deref(), Ok(b));
        let _ = f.to_string();
    }
    if let Ok(h) = IndexHeader::parse(b) {
        let _ = IndexMeta::parse(&h, b.get(64..).unwrap_or(&[]));
        let _ = history::parse_block(&h, 2, b);
        let _ = h.file_len();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(&b);
        let mut with_type = b.clone();
        if let Some(x) = with_type.first_mut() {
            *x = 1 + *x % 3;
        }
        check_no_panic(&with_type);
    }

    #[test]
    fn mutated_vectors_never_panic(which in 0usize..9, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let s = seeds();
        let mut b = s[which % s.len()].clone();
        for (at, x) in flips {
            let n = b.len();
            if n > 0 {
                b[at % n] ^= x | 1;
            }
        }
        check_no_panic(&b);
        let n = b.len();
        b.truncate(cut % (n + 1));
        check_no_panic(&b);
    }
}
