//! Property tests for the payload, query and SUMUC formats: every value the
//! generators make round-trips through emit and parse, and no parser panics on
//! random bytes or on mutations of valid messages (STYLE practice 11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ivip_wire::payload::{Payload, PayloadRepr, Record, SnapshotAnnouncement, peek_id};
use ivip_wire::query::{
    MapReply, MapRequest, MappedRange, Notification, NotifyAck, QueryMessage, Status,
};
use ivip_wire::sumuc::{Sumuc, SumucView};
use ivip_wire::{Command, Etr, Family, Mab, PayloadId, RuasId, Seq};
use proptest::prelude::*;

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

fn mab(f: Family) -> impl Strategy<Value = Mab> {
    let bits = f.unit_bits();
    (1..=bits, any::<u64>()).prop_map(move |(plen, s)| {
        let host = u32::from(bits - plen);
        let s = if f == Family::V4 { s & 0xffff_ffff } else { s };
        let start = if host >= 64 { 0 } else { (s >> host) << host };
        Mab::new(f, start, plen).expect("aligned by construction")
    })
}

fn etr(f: Family) -> BoxedStrategy<Etr> {
    match f {
        Family::V4 => any::<u32>()
            .prop_map(|a| Etr::V4(Ipv4Addr::from(a)))
            .boxed(),
        Family::V6 => any::<u128>()
            .prop_map(|a| Etr::V6(Ipv6Addr::from(a)))
            .boxed(),
    }
}

/// A valid (start, len) in the family's space.
fn range(f: Family) -> impl Strategy<Value = (u64, u64)> {
    let space = f.unit_space();
    (any::<u64>(), 1u64..1_000_000).prop_map(move |(s, len)| {
        let s = (u128::from(s) % (space - u128::from(len))) as u64;
        (s, len)
    })
}

fn command(f: Family) -> impl Strategy<Value = Command> {
    (range(f), etr(f), 0u8..5, any::<u64>()).prop_filter_map(
        "split needs len >= 2",
        move |((start, len), etr, op, at)| {
            Some(match op {
                0 => Command::SetEtr { start, len, etr },
                1 => Command::Define { start, len, etr },
                2 => {
                    if len < 2 {
                        return None;
                    }
                    Command::Split {
                        start,
                        len,
                        at: 1 + at % (len - 1),
                    }
                }
                3 => Command::Join { start, len },
                _ => Command::Delete { start, len },
            })
        },
    )
}

fn record() -> impl Strategy<Value = Record> {
    let update = family().prop_flat_map(|f| {
        (
            mab(f),
            any::<u64>(),
            prop::collection::vec(command(f), 1..8),
        )
            .prop_map(|(mab, mab_seq, commands)| Record::MabUpdate {
                mab,
                mab_seq,
                commands,
            })
    });
    let fragment = (
        family().prop_flat_map(mab),
        any::<u64>(),
        2u8..=255,
        any::<u8>(),
        1u16..,
        prop::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(
            |(mab, mab_seq, count, i, command_count, chunk)| Record::Fragment {
                mab,
                mab_seq,
                index: i % count,
                count,
                command_count,
                chunk,
            },
        );
    let snap = (
        family().prop_flat_map(mab),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(mab, mab_seq, created_us, sha256)| {
            Record::Snapshot(SnapshotAnnouncement {
                mab,
                mab_seq,
                created_us,
                sha256,
            })
        });
    let hb = any::<u32>().prop_map(|interval_ms| Record::Heartbeat { interval_ms });
    let unknown = (
        5u8..,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(kind, flags, body)| Record::Unknown { kind, flags, body });
    prop_oneof![update, fragment, snap, hb, unknown]
}

fn payload() -> impl Strategy<Value = PayloadRepr> {
    (
        0u8..=127,
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(record(), 0..6),
        any::<[u8; 32]>(),
    )
        .prop_map(|(r, epoch, seq, t, mut records, sig)| {
            let mut p = PayloadRepr {
                id: PayloadId {
                    ruas: RuasId::new(r).unwrap(),
                    epoch,
                    seq: Seq(seq),
                },
                timestamp_us: t,
                records: vec![],
                signature: [0; 64],
            };
            p.signature[..32].copy_from_slice(&sig);
            // Keep only as many records as fit in 1200 bytes.
            for rec in records.drain(..) {
                p.records.push(rec);
                if p.buffer_len() > ivip_wire::payload::PAYLOAD_LEN_MAX {
                    p.records.pop();
                }
            }
            p
        })
}

fn query() -> impl Strategy<Value = QueryMessage> {
    let req = (any::<u64>(), any::<bool>(), any::<u128>()).prop_map(|(nonce, v4, a)| {
        let addr = if v4 {
            IpAddr::V4(Ipv4Addr::from(a as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(a))
        };
        QueryMessage::Request(MapRequest { nonce, addr })
    });
    let reply = family().prop_flat_map(|f| {
        (any::<u64>(), 0u8..6, any::<u32>(), range(f), etr(f)).prop_map(
            move |(nonce, st, cache_time_s, (start, len), etr)| {
                let status = Status::from_code(st).unwrap();
                let range = match status {
                    Status::Found => Some(MappedRange { start, len, etr }),
                    Status::Unassigned => Some(MappedRange {
                        start,
                        len,
                        etr: Etr::zero(f),
                    }),
                    _ => None,
                };
                QueryMessage::Reply(MapReply {
                    nonce,
                    status,
                    family: f,
                    cache_time_s,
                    range,
                })
            },
        )
    });
    let notify = family().prop_flat_map(|f| {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>(),
            prop::collection::vec((1u64..100, 1u64..100, etr(f)), 0..20),
        )
            .prop_map(move |(notify_id, nonce, cache_time_s, flush, parts)| {
                let mut at = 0u64;
                let entries = if flush {
                    vec![]
                } else {
                    parts
                        .into_iter()
                        .map(|(gap, len, etr)| {
                            let start = at + gap;
                            at = start + len;
                            MappedRange { start, len, etr }
                        })
                        .collect()
                };
                QueryMessage::Notify(Notification {
                    notify_id,
                    nonce,
                    family: f,
                    cache_time_s,
                    flush,
                    entries,
                })
            })
    });
    let ack = any::<u64>().prop_map(|notify_id| QueryMessage::Ack(NotifyAck { notify_id }));
    prop_oneof![req, reply, notify, ack]
}

fn sumuc() -> impl Strategy<Value = Sumuc> {
    family().prop_flat_map(|f| {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            mab(f),
            "[a-z/-]{0,40}",
            prop::collection::vec(command(f), 1..20),
        )
            .prop_map(
                |(signer, request_id, timestamp_us, execute_at_us, mab, origin, commands)| Sumuc {
                    signer,
                    request_id,
                    timestamp_us,
                    execute_at_us,
                    mab,
                    origin,
                    commands,
                    signature: [3; 64],
                },
            )
    })
}

/// Flip, insert or delete bytes of a valid message.
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
    fn payload_round_trips(p in payload()) {
        let v = p.to_vec().unwrap();
        let view = Payload::new_checked(&v).unwrap();
        prop_assert_eq!(PayloadRepr::parse(&view), p.clone());
        prop_assert_eq!(peek_id(&v), Ok(p.id));
    }

    #[test]
    fn query_round_trips(m in query()) {
        let v = m.to_vec().unwrap();
        prop_assert_eq!(QueryMessage::parse(&v), Ok(m));
    }

    #[test]
    fn sumuc_round_trips(s in sumuc()) {
        let v = s.to_vec().unwrap();
        prop_assert_eq!(SumucView::new_checked(&v).unwrap().to_owned(), s);
    }

    #[test]
    fn parsers_never_panic_on_random_bytes(b in prop::collection::vec(any::<u8>(), 0..1400)) {
        let _ = peek_id(&b);
        let _ = Payload::new_checked(&b).map(|p| PayloadRepr::parse(&p));
        let _ = QueryMessage::parse(&b);
        let _ = SumucView::new_checked(&b).map(|s| s.to_owned());
    }

    #[test]
    fn parsers_never_panic_on_mutated_messages(
        p in payload(), q in query(), s in sumuc(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let pb = mutate(p.to_vec().unwrap(), &edits);
        if let Ok(view) = Payload::new_checked(&pb) {
            // Anything accepted must re-encode to the same bytes.
            prop_assert_eq!(PayloadRepr::parse(&view).to_vec().unwrap(), pb.clone());
        }
        let _ = peek_id(&pb);
        let qb = mutate(q.to_vec().unwrap(), &edits);
        if let Ok(m) = QueryMessage::parse(&qb) {
            prop_assert_eq!(m.to_vec().unwrap(), qb);
        }
        let sb = mutate(s.to_vec().unwrap(), &edits);
        if let Ok(view) = SumucView::new_checked(&sb) {
            prop_assert_eq!(view.to_owned().to_vec().unwrap(), sb);
        }
    }
}
