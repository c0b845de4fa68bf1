//! Tests of the mapping engine: every command and every error, a reference model
//! (one entry per unit) that random command sets are checked against, copy-on-write
//! and reclamation, batched look-ups, readers on other threads, snapshots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ivip_wire::snapshot::{Entry, hash_prefix};
use ivip_wire::{Command, Etr, Family, Mab};
use proptest::prelude::*;
use sha2::Digest;

use super::*;

// ---------------------------------------------------------------------------
// The reference model: one slot per unit
// ---------------------------------------------------------------------------

/// A micronet as the model stores it in each of its units: (start, len, ETR).
type M = (u64, u64, u128);

#[derive(Clone, Debug, PartialEq)]
struct Model {
    mab: Mab,
    units: Vec<Option<M>>,
}

impl Model {
    fn new(mab: Mab) -> Model {
        Model {
            mab,
            units: vec![None; mab.len() as usize],
        }
    }

    fn family(&self) -> Family {
        self.mab.family()
    }

    fn at(&self, u: u64) -> Option<M> {
        self.units[(u - self.mab.start()) as usize]
    }

    fn set(&mut self, s: u64, len: u64, v: Option<M>) {
        let a = (s - self.mab.start()) as usize;
        for x in &mut self.units[a..a + len as usize] {
            *x = v;
        }
    }

    fn etr(&self, x: u128) -> Etr {
        Etr::from_u128(self.family(), x)
    }

    /// The micronet that starts exactly at `s` and is exactly `len` long.
    fn exact(&self, s: u64, len: u64) -> Result<M, Reason> {
        match self.at(s) {
            Some(m) if m.0 == s => {
                if m.1 != len {
                    Err(Reason::LengthMismatch { actual: m.1 })
                } else {
                    Ok(m)
                }
            }
            _ => Err(Reason::NoSuchMicronet),
        }
    }

    fn apply_one(&mut self, c: &Command) -> Result<(), Reason> {
        let (s, len) = c.range();
        if let Some(e) = c.etr() {
            if e.family() != self.family() {
                return Err(Reason::WrongFamily);
            }
            if e == Etr::V4(Ipv4Addr::BROADCAST) {
                return Err(Reason::ReservedEtr);
            }
        }
        if len == 0 {
            return Err(Reason::EmptyRange);
        }
        if let Command::Split { at, .. } = *c
            && (at == 0 || at >= len)
        {
            return Err(Reason::BadSplitOffset);
        }
        if !self.mab.contains_range(s, len) {
            return Err(Reason::OutsideMab);
        }
        let end = s + len;
        match *c {
            Command::SetEtr { etr, .. } => {
                let m = self.exact(s, len)?;
                self.set(s, len, Some((m.0, m.1, etr.to_u128())));
            }
            Command::Delete { .. } => {
                self.exact(s, len)?;
                self.set(s, len, None);
            }
            Command::Split { at, .. } => {
                let m = self.exact(s, len)?;
                if m.2 != 0 {
                    return Err(Reason::NotZero {
                        start: s,
                        etr: self.etr(m.2),
                    });
                }
                self.set(s, at, Some((s, at, 0)));
                self.set(s + at, len - at, Some((s + at, len - at, 0)));
            }
            Command::Join { .. } => {
                match self.at(s) {
                    Some(m) if m.0 == s => {}
                    _ => return Err(Reason::NoSuchMicronet),
                }
                let mut u = s;
                let mut count = 0;
                while u < end {
                    let Some(m) = self.at(u) else {
                        return Err(Reason::JoinGap { start: u });
                    };
                    if m.2 != 0 {
                        return Err(Reason::NotZero {
                            start: m.0,
                            etr: self.etr(m.2),
                        });
                    }
                    if m.0 + m.1 > end {
                        return Err(Reason::JoinEndsInside {
                            start: m.0,
                            len: m.1,
                        });
                    }
                    count += 1;
                    u = m.0 + m.1;
                }
                if count == 1 {
                    return Err(Reason::JoinSingle);
                }
                self.set(s, len, Some((s, len, 0)));
            }
            Command::Define { etr, .. } => {
                for u in s..end {
                    if let Some(m) = self.at(u)
                        && m.2 != 0
                    {
                        return Err(Reason::Overlap {
                            start: m.0,
                            len: m.1,
                            etr: self.etr(m.2),
                        });
                    }
                }
                if let Some(m) = self.at(s)
                    && m.0 < s
                {
                    self.set(m.0, s - m.0, Some((m.0, s - m.0, 0)));
                }
                if let Some(m) = self.at(end - 1)
                    && m.0 + m.1 > end
                {
                    let r = m.0 + m.1 - end;
                    self.set(end, r, Some((end, r, 0)));
                }
                self.set(s, len, Some((s, len, etr.to_u128())));
            }
        }
        Ok(())
    }

    fn apply(&mut self, cmds: &[Command]) -> Result<Changes, (usize, Reason)> {
        let before = self.clone();
        for (i, c) in cmds.iter().enumerate() {
            if let Err(r) = self.apply_one(c) {
                *self = before;
                return Err((i, r));
            }
        }
        Ok(before.diff(self))
    }

    /// commands.md §2.1, unit by unit: maximal runs of changed units with the same
    /// final state.
    fn diff(&self, after: &Model) -> Changes {
        let mut out: Changes = Vec::new();
        let base = self.mab.start();
        for (i, (a, b)) in self.units.iter().zip(&after.units).enumerate() {
            if a == b {
                continue;
            }
            let u = base + i as u64;
            let etr = b.map(|m| after.etr(m.2));
            if let Some(last) = out.last_mut()
                && last.start + last.len == u
                && last.etr == etr
                && (b.is_none() || after.at(last.start) == *b)
            {
                last.len += 1;
                continue;
            }
            out.push(Change {
                start: u,
                len: 1,
                etr,
            });
        }
        out
    }

    fn lookup(&self, u: u64) -> Mapping {
        if !self.mab.contains(u) {
            return Mapping::OutsideMab;
        }
        match self.at(u) {
            Some(m) => Mapping::Micronet(Micronet {
                start: m.0,
                len: m.1,
                etr: self.etr(m.2),
            }),
            None => {
                let mut s = u;
                while s > self.mab.start() && self.at(s - 1).is_none() {
                    s -= 1;
                }
                let mut e = u + 1;
                while u128::from(e) < self.mab.end() && self.at(e).is_none() {
                    e += 1;
                }
                Mapping::Unassigned {
                    start: s,
                    len: e - s,
                }
            }
        }
    }

    fn micronets(&self) -> Vec<M> {
        let mut v: Vec<M> = self.units.iter().flatten().copied().collect();
        v.dedup();
        v
    }

    fn hash(&self, mab_seq: u64) -> [u8; 32] {
        let nets = self.micronets();
        let mut h = sha2::Sha256::new();
        h.update(hash_prefix(&self.mab, mab_seq, nets.len() as u64));
        let n = ivip_wire::snapshot::entry_len(self.family());
        for (s, len, x) in nets {
            let mut b = [0u8; 32];
            Entry {
                start: s,
                len,
                etr: self.etr(x),
            }
            .emit(self.family(), &mut b)
            .unwrap();
            h.update(&b[..n]);
        }
        h.finalize().into()
    }
}

/// Every unit of the MAB (and one on each side) looks up the same in the table,
/// singly and batched; the micronet lists and hashes agree.
fn agree(t: &Table, m: &Model) {
    let mab = m.mab;
    let mut units: Vec<u64> = (mab.start()..=(mab.end() - 1) as u64).collect();
    if mab.start() > 0 {
        units.push(mab.start() - 1);
    }
    if mab.end() < mab.family().unit_space() {
        units.push(mab.end() as u64);
    }
    let mut batch = vec![Mapping::OutsideMab; units.len()];
    t.lookup_batch(&units, &mut batch);
    for (&u, b) in units.iter().zip(&batch) {
        let want = m.lookup(u);
        assert_eq!(t.lookup(u), want, "lookup of unit {u:#x}");
        assert_eq!(*b, want, "batched lookup of unit {u:#x}");
    }
    let nets: Vec<M> = t
        .range(mab.start(), mab.len())
        .filter_map(|x| match x {
            Mapping::Micronet(n) => Some((n.start, n.len, n.etr.to_u128())),
            _ => None,
        })
        .collect();
    assert_eq!(nets, m.micronets(), "micronet lists");
    assert_eq!(t.hash(), m.hash(t.mab_seq()), "canonical hash");
    t.check_structure();
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn mab4() -> Mab {
    "20.0.0.0/24".parse().unwrap()
}

fn u4(last: u8) -> u64 {
    0x1400_0000 + u64::from(last)
}

fn e4(d: u8) -> Etr {
    Etr::V4(Ipv4Addr::new(192, 0, 2, d))
}

fn zero4() -> Etr {
    Etr::zero(Family::V4)
}

fn def(start: u64, len: u64, etr: Etr) -> Command {
    Command::Define { start, len, etr }
}

fn set(start: u64, len: u64, etr: Etr) -> Command {
    Command::SetEtr { start, len, etr }
}

fn net(start: u64, len: u64, etr: Etr) -> Mapping {
    Mapping::Micronet(Micronet { start, len, etr })
}

fn err(t: &mut Table, cmds: &[Command]) -> (usize, Reason) {
    let h = t.hash();
    let e = t.apply(cmds).expect_err("set must fail");
    assert_eq!(t.hash(), h, "a failed set changes nothing");
    (e.index, e.reason)
}

fn change(start: u64, len: u64, etr: Option<Etr>) -> Change {
    Change { start, len, etr }
}

// ---------------------------------------------------------------------------
// Every command
// ---------------------------------------------------------------------------

#[test]
fn new_table_is_one_unassigned_range() {
    let t = Table::new(mab4());
    assert_eq!(
        t.lookup(u4(7)),
        Mapping::Unassigned {
            start: u4(0),
            len: 256
        }
    );
    assert_eq!(t.lookup(u4(0) - 1), Mapping::OutsideMab);
    assert_eq!(t.lookup(u4(0) + 256), Mapping::OutsideMab);
    assert_eq!(t.micronets(), 0);
    assert_eq!(t.runs(), 1);
}

#[test]
fn define_in_unassigned_space() {
    let mut t = Table::new(mab4());
    let ch = t.apply(&[def(u4(10), 5, e4(1))]).unwrap();
    assert_eq!(ch, vec![change(u4(10), 5, Some(e4(1)))]);
    assert_eq!(t.lookup(u4(12)), net(u4(10), 5, e4(1)));
    assert_eq!(
        t.lookup(u4(9)),
        Mapping::Unassigned {
            start: u4(0),
            len: 10
        }
    );
    assert_eq!(
        t.lookup(u4(15)),
        Mapping::Unassigned {
            start: u4(15),
            len: 241
        }
    );
    assert_eq!(t.runs(), 3);
}

#[test]
fn define_over_zero_micronets_keeps_their_remainders_at_zero() {
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(0), 10, zero4()), def(u4(10), 10, zero4())])
        .unwrap();
    // Over the end of the first, the gap-free join point, into the second.
    let ch = t.apply(&[def(u4(5), 10, e4(2))]).unwrap();
    assert_eq!(
        ch,
        vec![
            change(u4(0), 5, Some(zero4())),
            change(u4(5), 10, Some(e4(2))),
            change(u4(15), 5, Some(zero4())),
        ]
    );
    assert_eq!(t.lookup(u4(0)), net(u4(0), 5, zero4()));
    assert_eq!(t.lookup(u4(19)), net(u4(15), 5, zero4()));
    // Inside one zero micronet: both remainders stay.
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(0), 100, zero4())]).unwrap();
    t.apply(&[def(u4(40), 10, e4(3))]).unwrap();
    assert_eq!(t.lookup(u4(39)), net(u4(0), 40, zero4()));
    assert_eq!(t.lookup(u4(50)), net(u4(50), 50, zero4()));
    // Over a zero micronet and unassigned units together.
    t.apply(&[def(u4(95), 20, e4(4))]).unwrap();
    assert_eq!(t.lookup(u4(94)), net(u4(50), 45, zero4()));
    assert_eq!(t.lookup(u4(110)), net(u4(95), 20, e4(4)));
}

#[test]
fn define_with_zero_etr_makes_a_dropping_micronet() {
    let mut t = Table::new(mab4());
    let ch = t.apply(&[def(u4(1), 1, zero4())]).unwrap();
    assert_eq!(ch, vec![change(u4(1), 1, Some(zero4()))]);
    assert_eq!(t.lookup(u4(1)), net(u4(1), 1, zero4()));
}

#[test]
fn set_etr_changes_exactly_one_micronet() {
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(0), 4, e4(1)), def(u4(4), 4, e4(1))])
        .unwrap();
    let ch = t.apply(&[set(u4(4), 4, e4(9))]).unwrap();
    assert_eq!(ch, vec![change(u4(4), 4, Some(e4(9)))]);
    assert_eq!(t.lookup(u4(0)), net(u4(0), 4, e4(1)));
    assert_eq!(t.lookup(u4(7)), net(u4(4), 4, e4(9)));
    // Setting the same ETR again changes nothing.
    assert_eq!(t.apply(&[set(u4(4), 4, e4(9))]).unwrap(), vec![]);
}

#[test]
fn split_of_a_zero_micronet() {
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(0), 8, zero4())]).unwrap();
    let ch = t
        .apply(&[Command::Split {
            start: u4(0),
            len: 8,
            at: 3,
        }])
        .unwrap();
    // Both parts changed bounds (s4.3: queriers of the old micronet are told).
    assert_eq!(
        ch,
        vec![
            change(u4(0), 3, Some(zero4())),
            change(u4(3), 5, Some(zero4()))
        ]
    );
    assert_eq!(t.lookup(u4(2)), net(u4(0), 3, zero4()));
    assert_eq!(t.lookup(u4(3)), net(u4(3), 5, zero4()));
}

#[test]
fn join_of_zero_micronets() {
    let mut t = Table::new(mab4());
    t.apply(&[
        def(u4(0), 2, zero4()),
        def(u4(2), 3, zero4()),
        def(u4(5), 4, zero4()),
    ])
    .unwrap();
    let ch = t
        .apply(&[Command::Join {
            start: u4(0),
            len: 9,
        }])
        .unwrap();
    assert_eq!(ch, vec![change(u4(0), 9, Some(zero4()))]);
    assert_eq!(t.lookup(u4(8)), net(u4(0), 9, zero4()));
    assert_eq!(t.micronets(), 1);
}

#[test]
fn delete_makes_units_unassigned_and_merges_gaps() {
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(10), 5, e4(1)), def(u4(15), 5, e4(2))])
        .unwrap();
    let ch = t
        .apply(&[Command::Delete {
            start: u4(10),
            len: 5,
        }])
        .unwrap();
    assert_eq!(ch, vec![change(u4(10), 5, None)]);
    assert_eq!(
        t.lookup(u4(12)),
        Mapping::Unassigned {
            start: u4(0),
            len: 15
        }
    );
    t.apply(&[Command::Delete {
        start: u4(15),
        len: 5,
    }])
    .unwrap();
    assert_eq!(t.runs(), 1, "all gaps merged into one");
    assert_eq!(t.micronets(), 0);
}

#[test]
fn s3_7_example_zero_split_and_map() {
    // commands.md §2: zero an 8-long micronet, split it into three, map each.
    let mut t = Table::new(mab4());
    let s = u4(16);
    t.apply(&[def(s, 8, e4(1))]).unwrap();
    let ch = t
        .apply(&[
            set(s, 8, zero4()),
            Command::Split {
                start: s,
                len: 8,
                at: 2,
            },
            Command::Split {
                start: s + 2,
                len: 6,
                at: 3,
            },
            set(s, 2, e4(10)),
            set(s + 2, 3, e4(11)),
            set(s + 5, 3, e4(12)),
        ])
        .unwrap();
    assert_eq!(
        ch,
        vec![
            change(s, 2, Some(e4(10))),
            change(s + 2, 3, Some(e4(11))),
            change(s + 5, 3, Some(e4(12))),
        ]
    );
}

#[test]
fn changes_are_final_state_only() {
    let mut t = Table::new(mab4());
    t.apply(&[def(u4(0), 4, e4(1))]).unwrap();
    // Away and back: nothing changed.
    let ch = t
        .apply(&[set(u4(0), 4, e4(2)), set(u4(0), 4, e4(1))])
        .unwrap();
    assert_eq!(ch, vec![]);
    // Delete then define the same micronet: nothing changed.
    let ch = t
        .apply(&[
            Command::Delete {
                start: u4(0),
                len: 4,
            },
            def(u4(0), 4, e4(1)),
        ])
        .unwrap();
    assert_eq!(ch, vec![]);
    // Unassigned ranges next to each other are coalesced.
    t.apply(&[def(u4(4), 4, e4(1))]).unwrap();
    let ch = t
        .apply(&[
            Command::Delete {
                start: u4(0),
                len: 4,
            },
            Command::Delete {
                start: u4(4),
                len: 4,
            },
        ])
        .unwrap();
    assert_eq!(ch, vec![change(u4(0), 8, None)]);
}

#[test]
fn empty_set_is_a_no_op() {
    let mut t = Table::new(mab4());
    assert_eq!(t.apply(&[]).unwrap(), vec![]);
}

// ---------------------------------------------------------------------------
// Every error
// ---------------------------------------------------------------------------

fn populated() -> Table {
    let mut t = Table::new(mab4());
    t.apply(&[
        def(u4(0), 8, e4(1)),
        def(u4(8), 4, zero4()),
        def(u4(12), 4, zero4()),
        def(u4(20), 4, zero4()),
    ])
    .unwrap();
    t
}

#[test]
fn error_wrong_family() {
    let mut t = populated();
    let e6 = Etr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(err(&mut t, &[set(u4(0), 8, e6)]), (0, Reason::WrongFamily));
    assert_eq!(err(&mut t, &[def(u4(30), 1, e6)]), (0, Reason::WrongFamily));
}

#[test]
fn error_reserved_etr() {
    let mut t = populated();
    let b = Etr::V4(Ipv4Addr::BROADCAST);
    assert_eq!(err(&mut t, &[def(u4(30), 1, b)]), (0, Reason::ReservedEtr));
    assert_eq!(err(&mut t, &[set(u4(0), 8, b)]), (0, Reason::ReservedEtr));
}

#[test]
fn error_empty_range_and_bad_split_offset() {
    let mut t = populated();
    assert_eq!(
        err(&mut t, &[def(u4(30), 0, e4(1))]),
        (0, Reason::EmptyRange)
    );
    for at in [0, 4, 5] {
        assert_eq!(
            err(
                &mut t,
                &[Command::Split {
                    start: u4(8),
                    len: 4,
                    at
                }]
            ),
            (0, Reason::BadSplitOffset)
        );
    }
}

#[test]
fn error_outside_mab() {
    let mut t = populated();
    assert_eq!(
        err(&mut t, &[def(u4(250), 10, e4(1))]),
        (0, Reason::OutsideMab)
    );
    assert_eq!(
        err(&mut t, &[def(u4(0) - 1, 2, e4(1))]),
        (0, Reason::OutsideMab)
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Delete {
                start: u64::from(u32::MAX),
                len: 1
            }]
        ),
        (0, Reason::OutsideMab)
    );
}

#[test]
fn error_no_such_micronet() {
    let mut t = populated();
    // Inside a micronet, not at its start.
    assert_eq!(
        err(&mut t, &[set(u4(1), 7, e4(2))]),
        (0, Reason::NoSuchMicronet)
    );
    // Unassigned units.
    assert_eq!(
        err(
            &mut t,
            &[Command::Delete {
                start: u4(16),
                len: 4
            }]
        ),
        (0, Reason::NoSuchMicronet)
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Split {
                start: u4(40),
                len: 4,
                at: 1
            }]
        ),
        (0, Reason::NoSuchMicronet)
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Join {
                start: u4(9),
                len: 7
            }]
        ),
        (0, Reason::NoSuchMicronet)
    );
}

#[test]
fn error_length_mismatch() {
    let mut t = populated();
    assert_eq!(
        err(&mut t, &[set(u4(0), 4, e4(2))]),
        (0, Reason::LengthMismatch { actual: 8 })
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Delete {
                start: u4(0),
                len: 9
            }]
        ),
        (0, Reason::LengthMismatch { actual: 8 })
    );
}

#[test]
fn error_split_or_join_of_non_zero_micronet() {
    let mut t = populated();
    assert_eq!(
        err(
            &mut t,
            &[Command::Split {
                start: u4(0),
                len: 8,
                at: 4
            }]
        ),
        (
            0,
            Reason::NotZero {
                start: u4(0),
                etr: e4(1)
            }
        )
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Join {
                start: u4(0),
                len: 12
            }]
        ),
        (
            0,
            Reason::NotZero {
                start: u4(0),
                etr: e4(1)
            }
        )
    );
}

#[test]
fn error_define_overlapping_a_mapped_micronet() {
    let mut t = populated();
    assert_eq!(
        err(&mut t, &[def(u4(6), 4, e4(5))]),
        (
            0,
            Reason::Overlap {
                start: u4(0),
                len: 8,
                etr: e4(1)
            }
        )
    );
}

#[test]
fn error_join_over_gap_inside_or_single() {
    let mut t = populated();
    assert_eq!(
        err(
            &mut t,
            &[Command::Join {
                start: u4(12),
                len: 12
            }]
        ),
        (0, Reason::JoinGap { start: u4(16) })
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Join {
                start: u4(8),
                len: 6
            }]
        ),
        (
            0,
            Reason::JoinEndsInside {
                start: u4(12),
                len: 4
            }
        )
    );
    assert_eq!(
        err(
            &mut t,
            &[Command::Join {
                start: u4(8),
                len: 4
            }]
        ),
        (0, Reason::JoinSingle)
    );
}

#[test]
fn failing_command_is_named_and_earlier_ones_are_undone() {
    let mut t = populated();
    let before: Vec<Mapping> = t.range(u4(0), 256).collect();
    let e = t
        .apply(&[
            set(u4(0), 8, zero4()),
            Command::Split {
                start: u4(0),
                len: 8,
                at: 2,
            },
            set(u4(0), 3, e4(7)),
        ])
        .unwrap_err();
    assert_eq!(e.index, 2);
    assert_eq!(e.reason, Reason::LengthMismatch { actual: 2 });
    assert_eq!(t.range(u4(0), 256).collect::<Vec<_>>(), before);
    let msg = e.to_string();
    assert!(
        msg.starts_with("command 2 (command=set-etr start=20.0.0.0 len=3"),
        "{msg}"
    );
    assert!(msg.contains("2 units long"), "{msg}");
}

#[test]
fn dry_run_reports_changes_and_changes_nothing() {
    let t = populated();
    let h = t.hash();
    let ch = t.check(&[set(u4(0), 8, e4(3))]).unwrap();
    assert_eq!(ch, vec![change(u4(0), 8, Some(e4(3)))]);
    assert_eq!(t.hash(), h);
    assert_eq!(
        t.check(&[set(u4(0), 7, e4(3))]).unwrap_err().reason,
        Reason::LengthMismatch { actual: 8 }
    );
}

#[test]
fn error_messages_say_what_to_do() {
    let mut t = populated();
    let e = t
        .apply(&[Command::Split {
            start: u4(0),
            len: 8,
            at: 1,
        }])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "command 0 (command=split start=20.0.0.0 len=8 at=1): the micronet at 20.0.0.0 is \
         mapped to 192.0.2.1; set its ETR to zero first (seed s3.7)"
    );
}

// ---------------------------------------------------------------------------
// IPv6
// ---------------------------------------------------------------------------

fn mab6() -> Mab {
    "2001:db8::/56".parse().unwrap()
}

fn e6(d: u16) -> Etr {
    Etr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, d))
}

#[test]
fn ipv6_commands_and_etr_dictionary() {
    let mut t = Table::new(mab6());
    let s = mab6().start();
    t.apply(&[def(s, 4, e6(1)), def(s + 4, 4, e6(1)), def(s + 8, 4, e6(2))])
        .unwrap();
    assert_eq!(t.lookup(s + 5), net(s + 4, 4, e6(1)));
    assert_eq!(t.lookup(s + 9), net(s + 8, 4, e6(2)));
    if let super::mab::Snap::V6(_, _) = t.snap() {
    } else {
        panic!("IPv6 table");
    }
    // An ETR no longer used frees its index, and a new ETR reuses it without
    // changing what the published version reads.
    t.publish();
    let r = t.reader();
    let v = r.load();
    t.apply(&[set(s + 8, 4, e6(3))]).unwrap();
    t.publish();
    assert_eq!(
        v.lookup(s + 9),
        net(s + 8, 4, e6(2)),
        "old version unchanged"
    );
    assert_eq!(r.load().lookup(s + 9), net(s + 8, 4, e6(3)));
    assert_eq!(
        err(&mut t, &[def(s + 20, 1, e4(1))]),
        (0, Reason::WrongFamily)
    );
    let m = Model::new(mab6());
    let _ = m;
}

#[test]
fn ipv6_mab_at_the_top_of_the_space() {
    // A /1 at 0x8000…: its end is 2^64, which needs care in every bound.
    let mab = Mab::new(Family::V6, 1 << 63, 1).unwrap();
    let mut t = Table::new(mab);
    let last = u64::MAX;
    t.apply(&[def(last - 9, 10, e6(1))]).unwrap();
    assert_eq!(t.lookup(last), net(last - 9, 10, e6(1)));
    assert_eq!(
        t.lookup(1 << 63),
        Mapping::Unassigned {
            start: 1 << 63,
            len: (1 << 63) - 10
        }
    );
    assert_eq!(err(&mut t, &[def(last, 2, e6(1))]), (0, Reason::OutsideMab));
    t.apply(&[Command::Delete {
        start: last - 9,
        len: 10,
    }])
    .unwrap();
    assert_eq!(t.runs(), 1);
}

// ---------------------------------------------------------------------------
// Random command sets against the model
// ---------------------------------------------------------------------------

/// A command to be made from the model's state: (kind, a, b, c).
type Recipe = (u8, u32, u32, u32);

fn palette(f: Family, i: u32) -> Etr {
    match (f, i % 6) {
        (_, 0) => Etr::zero(f),
        (Family::V4, k) => e4(k as u8),
        (Family::V6, k) => e6(k as u16),
    }
}

/// Turn a recipe into a command, mostly a valid one given `m` (commands earlier in
/// the set are already applied to `m`).
fn make(m: &Model, nets: &[M], r: Recipe) -> Command {
    let (kind, a, b, c) = r;
    let f = m.family();
    let n = m.mab.len();
    let lo = m.mab.start();
    let pick = |i: u32| nets.get(i as usize % nets.len().max(1)).copied();
    match kind % 10 {
        0 | 1 => match pick(a) {
            Some((s, len, _)) => set(s, len, palette(f, b)),
            None => def(lo + u64::from(a) % n, 1 + u64::from(b) % 4, palette(f, c)),
        },
        2 => match pick(a) {
            Some((s, len, _)) => set(s, len, Etr::zero(f)),
            None => def(lo, 1, Etr::zero(f)),
        },
        3 => match pick(a) {
            Some((s, len, _)) if len >= 2 => Command::Split {
                start: s,
                len,
                at: 1 + u64::from(b) % (len - 1),
            },
            _ => Command::Split {
                start: lo + u64::from(a) % n,
                len: 2,
                at: 1,
            },
        },
        4 => match pick(a) {
            Some((s, _, _)) => {
                // Join with the next few micronets (valid if all zero and adjacent).
                let i = nets.iter().position(|x| x.0 == s).unwrap_or(0);
                let j = (i + 1 + b as usize % 3).min(nets.len() - 1);
                let end = nets[j].0 + nets[j].1;
                Command::Join {
                    start: s,
                    len: end - s,
                }
            }
            None => Command::Join { start: lo, len: 2 },
        },
        5 | 6 => def(
            lo + u64::from(a) % n,
            1 + u64::from(b) % if kind % 10 == 5 { 6 } else { 40 },
            palette(f, c),
        ),
        7 => match pick(a) {
            Some((s, len, _)) => Command::Delete { start: s, len },
            None => Command::Delete { start: lo, len: 1 },
        },
        8 => {
            // Define exactly an unassigned range, or part of it.
            let u = lo + u64::from(a) % n;
            match m.lookup(u) {
                Mapping::Unassigned { start, len } => {
                    let off = u64::from(b) % len;
                    def(start + off, 1 + u64::from(c) % (len - off), palette(f, c))
                }
                _ => def(u, 1, palette(f, c)),
            }
        }
        _ => {
            // Anything at all, mostly refused: every error path.
            let s = lo.wrapping_add(u64::from(a) % (n + 8)).wrapping_sub(4);
            let len = u64::from(b % 12);
            let etr = match c % 9 {
                7 => Etr::V4(Ipv4Addr::BROADCAST),
                8 => match f {
                    Family::V4 => e6(1),
                    Family::V6 => e4(1),
                },
                k => palette(f, k),
            };
            match c % 5 {
                0 => set(s, len, etr),
                1 => def(s, len, etr),
                2 => Command::Split {
                    start: s,
                    len,
                    at: u64::from(c % 4),
                },
                3 => Command::Join { start: s, len },
                _ => Command::Delete { start: s, len },
            }
        }
    }
}

/// Apply `sets` (lists of recipes) to a table and the model, checking after every
/// set that results, look-ups, micronet lists and hashes agree; also that the
/// published version agrees while the writer has moved on.
fn run_sets(mab: Mab, sets: &[Vec<Recipe>]) -> (usize, usize) {
    let mut t = Table::new(mab);
    let mut m = Model::new(mab);
    let reader = t.reader();
    let (mut ok, mut failed) = (0, 0);
    for (k, recipes) in sets.iter().enumerate() {
        let mut scratch = m.clone();
        let cmds: Vec<Command> = recipes
            .iter()
            .map(|&r| {
                let c = make(&scratch, &scratch.micronets(), r);
                let _ = scratch.apply_one(&c);
                c
            })
            .collect();
        let want = m.apply(&cmds);
        let dry = t.check(&cmds);
        let got = t.apply(&cmds);
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(g, w, "set {k} changes: {cmds:?}");
                assert_eq!(dry.as_ref().ok(), Some(w), "dry run of set {k}");
                ok += 1;
            }
            (Err((i, r)), Err(e)) => {
                assert_eq!((e.index, e.reason), (*i, *r), "set {k} error: {cmds:?}");
                assert_eq!(dry.err(), Some(*e));
                failed += 1;
            }
            _ => panic!("set {k}: model {want:?}, table {got:?}; {cmds:?}"),
        }
        t.set_mab_seq(k as u64 + 1);
        agree(&t, &m);
        if k % 3 == 0 {
            let before = reader.load();
            t.publish();
            let after = reader.load();
            assert_eq!(
                after.hash(),
                t.hash(),
                "published version is the working state"
            );
            assert_eq!(after.mab_seq(), t.mab_seq());
            drop(before);
        }
    }
    (ok, failed)
}

fn recipes() -> impl Strategy<Value = Vec<Vec<Recipe>>> {
    prop::collection::vec(
        prop::collection::vec(
            (any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()),
            1..6,
        ),
        40..80,
    )
}

proptest! {
    // 48 cases of 40-80 sets each, IPv4 and IPv6: about 5,000 random sets.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_sets_agree_with_the_unit_model_ipv4(sets in recipes()) {
        run_sets("20.0.0.0/25".parse().unwrap(), &sets);
    }

    #[test]
    fn random_sets_agree_with_the_unit_model_ipv6(sets in recipes()) {
        run_sets("2001:db8::/57".parse().unwrap(), &sets);
    }
}

#[test]
fn random_sets_succeed_often_enough_to_mean_something() {
    // The generator must exercise successful sets, not only errors.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sets: Vec<Vec<Recipe>> = (0..400)
        .map(|_| {
            (0..1 + next() % 4)
                .map(|_| {
                    let x = next();
                    (x as u8, (x >> 8) as u32, (x >> 24) as u32, next() as u32)
                })
                .collect()
        })
        .collect();
    let (ok, failed) = run_sets("20.0.0.0/25".parse().unwrap(), &sets);
    assert!(ok >= 100 && failed >= 40, "{ok} applied, {failed} refused");
}

// ---------------------------------------------------------------------------
// Large tables: many leaves and levels
// ---------------------------------------------------------------------------

/// A /16 with every unit its own micronet: 65,536 runs, three levels. Random sets
/// against the unit model, checking the units each set touched plus a sample, and
/// everything every 100 sets; joins and deletes shrink the tree back down.
#[test]
fn random_sets_on_a_multi_level_tree() {
    let mab: Mab = "21.7.0.0/16".parse().unwrap();
    let lo = mab.start();
    let mut t = Table::from_runs(
        mab,
        0,
        (0..65_536u64).map(|i| {
            (
                lo + i,
                1,
                u128::from((i as u32).is_multiple_of(7)) * 0x0a00_0001,
            )
        }),
    );
    let mut m = Model::new(mab);
    for i in 0..65_536u64 {
        let v = u128::from((i as u32).is_multiple_of(7)) * 0x0a00_0001;
        m.units[i as usize] = Some((lo + i, 1, v));
    }
    t.check_structure();
    let mut rng = 42u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for k in 0..1500 {
        if std::time::Instant::now() > deadline {
            break;
        }
        let mut scratch = m.clone();
        let nets = m.micronets();
        let n = 1 + next() % 4;
        let cmds: Vec<Command> = (0..n)
            .map(|_| {
                let x = next();
                // Bias towards shrinking: zero, join and delete big runs.
                let kind = match x % 8 {
                    0 => 2,
                    1 | 2 => 4,
                    3 => 7,
                    4 => 6,
                    5 => 3,
                    _ => x as u8,
                };
                let r = (kind, (x >> 8) as u32, (x >> 24) as u32, next() as u32);
                let c = make(&scratch, &nets, r);
                let _ = scratch.apply_one(&c);
                c
            })
            .collect();
        let want = m.apply(&cmds);
        let got = t.apply(&cmds);
        match (&want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "set {k}"),
            (Err((i, r)), Err(e)) => assert_eq!((e.index, e.reason), (*i, *r), "set {k}"),
            _ => panic!("set {k}: model {want:?}, table {got:?}; {cmds:?}"),
        }
        for c in &cmds {
            let (s, len) = c.range();
            for u in s.saturating_sub(2)..s.saturating_add(len.min(64)).saturating_add(2) {
                assert_eq!(t.lookup(u), m.lookup(u), "set {k} unit {u:#x}");
            }
        }
        if k % 100 == 99 {
            t.check_structure();
            let nets: Vec<M> = t
                .range(mab.start(), mab.len())
                .filter_map(|x| match x {
                    Mapping::Micronet(n) => Some((n.start, n.len, n.etr.to_u128())),
                    _ => None,
                })
                .collect();
            assert_eq!(nets, m.micronets(), "after set {k}");
            assert_eq!(t.hash(), m.hash(t.mab_seq()));
            t.publish();
        }
    }
}

#[test]
fn a_define_over_many_leaves_collapses_the_tree() {
    // 65,536 zero micronets, then one define over all of them.
    let mab: Mab = "21.7.0.0/16".parse().unwrap();
    let lo = mab.start();
    let mut t = Table::from_runs(mab, 0, (0..65_536u64).map(|i| (lo + i, 1, 0)));
    t.publish();
    let r = t.reader();
    let old = r.load();
    let ch = t.apply(&[def(lo + 1, 65_534, e4(1))]).unwrap();
    assert_eq!(ch, vec![change(lo + 1, 65_534, Some(e4(1)))]);
    assert_eq!(t.runs(), 3);
    t.check_structure();
    t.publish();
    // The old version still answers from its own pages.
    assert_eq!(old.lookup(lo + 77), net(lo + 77, 1, zero4()));
    assert_eq!(r.load().lookup(lo + 77), net(lo + 1, 65_534, e4(1)));
    drop(old);
    // Split it back into many pieces.
    t.apply(&[set(lo + 1, 65_534, zero4())]).unwrap();
    let mut len = 65_534u64;
    let mut s = lo + 1;
    while len > 1 {
        t.apply(&[Command::Split {
            start: s,
            len,
            at: 1,
        }])
        .unwrap();
        s += 1;
        len -= 1;
        if len.is_multiple_of(5000) {
            t.publish();
        }
    }
    t.check_structure();
    assert_eq!(t.micronets(), 65_536);
}

#[test]
fn batched_lookups_equal_single_lookups_on_a_big_table() {
    let mab: Mab = "10.0.0.0/8".parse().unwrap();
    let lo = mab.start();
    let mut rng = 7u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // 200,000 micronets with gaps: three levels of nodes.
    let mut at = lo;
    let nets: Vec<(u64, u64, u128)> = (0..200_000)
        .map(|_| {
            at += next() % 3;
            let len = 1 + next() % 40;
            let n = (at, len, u128::from(next() as u32 >> 1));
            at += len;
            n
        })
        .collect();
    let t = Table::from_runs(mab, 0, nets.into_iter());
    let units: Vec<u64> = (0..20_000)
        .map(|_| lo + next() % (mab.len() + 5000) - 2000)
        .collect();
    let mut out = vec![Mapping::OutsideMab; units.len()];
    t.lookup_batch(&units, &mut out);
    for (u, o) in units.iter().zip(&out) {
        assert_eq!(*o, t.lookup(*u));
    }
}

// ---------------------------------------------------------------------------
// Readers on other threads
// ---------------------------------------------------------------------------

/// A set that swaps the ETRs of two micronets and moves a third's boundary: a
/// reader on another thread must see every set whole or not at all (the two ETRs
/// always differ, and the two halves always meet).
#[test]
fn readers_never_see_half_a_set() {
    let mab = mab4();
    let mut t = Table::new(mab);
    t.apply(&[
        def(u4(0), 4, e4(1)),
        def(u4(100), 4, e4(2)),
        def(u4(200), 10, zero4()),
        Command::Split {
            start: u4(200),
            len: 10,
            at: 5,
        },
    ])
    .unwrap();
    t.publish();
    let reader = t.reader();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started2 = started.clone();
    let h = std::thread::spawn(move || {
        let mut seen = 0u64;
        started2.store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            let v = reader.load();
            let (a, b) = (v.lookup(u4(1)), v.lookup(u4(101)));
            let (Mapping::Micronet(a), Mapping::Micronet(b)) = (a, b) else {
                panic!("micronets vanished: {a:?} {b:?}");
            };
            assert_ne!(a.etr, b.etr, "half a swap seen at seq {}", v.mab_seq());
            assert_eq!(
                a.etr == e4(1),
                v.mab_seq().is_multiple_of(2),
                "ETRs and sequence from different sets"
            );
            let (Mapping::Micronet(l), Mapping::Micronet(r)) =
                (v.lookup(u4(200)), v.lookup(u4(209)))
            else {
                panic!("split micronets vanished");
            };
            assert_eq!(l.start + l.len, r.start, "halves do not meet");
            let mut batch = [Mapping::OutsideMab; 2];
            v.lookup_batch(&[u4(2), u4(102)], &mut batch);
            assert_ne!(batch[0], batch[1]);
            seen += 1;
        }
        seen
    });
    // Start writing once the reader runs (bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !started.load(std::sync::atomic::Ordering::Relaxed)
        && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    for seq in 1..=4000u64 {
        let (x, y) = if seq % 2 == 0 {
            (e4(1), e4(2))
        } else {
            (e4(2), e4(1))
        };
        t.apply_at(
            seq,
            &[
                set(u4(0), 4, x),
                set(u4(100), 4, y),
                Command::Join {
                    start: u4(200),
                    len: 10,
                },
                Command::Split {
                    start: u4(200),
                    len: 10,
                    at: 1 + (seq % 9),
                },
            ],
        )
        .unwrap();
        t.publish();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = h.join().unwrap();
    assert!(seen > 0);
}

#[test]
fn old_versions_are_freed_once_readers_let_go() {
    let mut t = populated();
    t.publish();
    let r = t.reader();
    let held = r.load_owned();
    for i in 0..50u8 {
        t.apply(&[set(u4(0), 8, e4(i % 5 + 1))]).unwrap();
        t.publish();
    }
    assert!(t.versions_held() >= 1, "the held version is kept");
    assert_eq!(held.lookup(u4(0)), net(u4(0), 8, e4(1)));
    drop(held);
    t.apply(&[set(u4(0), 8, e4(9))]).unwrap();
    t.publish();
    assert_eq!(t.versions_held(), 0);
}

#[test]
fn readers_outlive_the_table() {
    let mut t = populated();
    t.publish();
    let r = t.reader();
    let v = r.load_owned();
    t.apply(&[set(u4(0), 8, e4(4))]).unwrap();
    drop(t);
    assert_eq!(v.lookup(u4(3)), net(u4(0), 8, e4(1)));
    assert_eq!(r.load().lookup(u4(3)), net(u4(0), 8, e4(1)));
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

use crate::sign::{Ed25519Verifier, KeyPair};
use ivip_wire::RuasId;

fn key() -> KeyPair {
    KeyPair::from_seed(&[7; 32])
}

#[test]
fn snapshot_round_trip_ipv4_and_ipv6() {
    for mut t in [populated(), {
        let mut t = Table::new(mab6());
        let s = mab6().start();
        t.apply(&[def(s + 3, 4, e6(1)), def(s + 7, 9, zero4_6())])
            .unwrap();
        t
    }] {
        t.set_mab_seq(42);
        let b = t.write_snapshot(&key(), RuasId::new(3).unwrap(), 1_764_073_316_000_000);
        let (u, meta) =
            Table::load_snapshot(&b, &Ed25519Verifier, &key().public(), Some(t.mab())).unwrap();
        assert_eq!(meta.mab_seq, 42);
        assert_eq!(meta.ruas.get(), 3);
        assert_eq!(u.mab_seq(), 42);
        assert_eq!(u.hash(), t.hash());
        assert_eq!(
            u.range(t.mab().start(), t.mab().len()).collect::<Vec<_>>(),
            t.range(t.mab().start(), t.mab().len()).collect::<Vec<_>>()
        );
        u.check_structure();
        // The hash in the file is the canonical hash.
        let s = ivip_wire::snapshot::Snapshot::new_checked(&b).unwrap();
        assert_eq!(s.stored_sha256(), t.hash());
        // A published view writes the same file.
        t.publish();
        assert_eq!(
            t.reader().load_owned().write_snapshot(
                &key(),
                RuasId::new(3).unwrap(),
                1_764_073_316_000_000
            ),
            b
        );
    }
}

fn zero4_6() -> Etr {
    Etr::zero(Family::V6)
}

#[test]
fn snapshot_refuses_a_flipped_byte_anywhere() {
    let mut t = populated();
    t.set_mab_seq(9);
    let b = t.write_snapshot(&key(), RuasId::new(3).unwrap(), 5);
    for i in 0..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x10;
        assert!(
            Table::load_snapshot(&c, &Ed25519Verifier, &key().public(), Some(mab4())).is_err(),
            "byte {i} flipped and accepted"
        );
    }
    let mut c = b.clone();
    c[67] ^= 1; // the first entry's ETR: well-formed, so the signature fails
    assert!(matches!(
        Table::load_snapshot(&c, &Ed25519Verifier, &key().public(), None),
        Err(SnapshotError::Signature(_))
    ));
    c = b.clone();
    c.truncate(b.len() - 1);
    assert_eq!(
        Table::load_snapshot(&c, &Ed25519Verifier, &key().public(), None).unwrap_err(),
        SnapshotError::Malformed(ivip_wire::WireError::Truncated)
    );
}

#[test]
fn snapshot_refuses_wrong_key_wrong_mab_and_hash_mismatch() {
    let mut t = populated();
    t.set_mab_seq(9);
    let b = t.write_snapshot(&key(), RuasId::new(3).unwrap(), 5);
    let other = KeyPair::from_seed(&[8; 32]);
    assert!(matches!(
        Table::load_snapshot(&b, &Ed25519Verifier, &other.public(), None),
        Err(SnapshotError::Signature(
            crate::sign::SignError::BadSignature
        ))
    ));
    let wrong: Mab = "20.0.1.0/24".parse().unwrap();
    assert_eq!(
        Table::load_snapshot(&b, &Ed25519Verifier, &key().public(), Some(wrong)).unwrap_err(),
        SnapshotError::WrongMab {
            expected: wrong,
            found: mab4()
        }
    );
    // A validly signed file whose stored hash is not its entries' hash.
    let mut c = b.clone();
    let n = c.len();
    c[n - 96] ^= 1;
    let sig = key().sign(&c[..n - 64]);
    c[n - 64..].copy_from_slice(&sig);
    assert_eq!(
        Table::load_snapshot(&c, &Ed25519Verifier, &key().public(), None).unwrap_err(),
        SnapshotError::HashMismatch
    );
    // A validly signed, correctly hashed file that maps to 255.255.255.255.
    let mut r = ivip_wire::snapshot::SnapshotRepr::parse(
        &ivip_wire::snapshot::Snapshot::new_checked(&b).unwrap(),
    );
    r.entries[0].etr = Etr::V4(Ipv4Addr::BROADCAST);
    r.sha256 = sha2::Sha256::digest(r.hash_input().unwrap()).into();
    let mut c = r.to_vec().unwrap();
    let n = c.len();
    let sig = key().sign(&c[..n - 64]);
    c[n - 64..].copy_from_slice(&sig);
    assert_eq!(
        Table::load_snapshot(&c, &Ed25519Verifier, &key().public(), None).unwrap_err(),
        SnapshotError::ReservedEtr { start: u4(0) }
    );
    let msg = SnapshotError::HashMismatch.to_string();
    assert!(msg.contains("fetch it again"), "{msg}");
}

#[test]
fn empty_table_snapshot_and_hash() {
    let t = Table::new(mab4());
    let b = t.write_snapshot(&key(), RuasId::new(1).unwrap(), 0);
    let (u, _) = Table::load_snapshot(&b, &Ed25519Verifier, &key().public(), None).unwrap();
    assert_eq!(u.runs(), 1);
    assert_eq!(u.hash(), Model::new(mab4()).hash(0));
}

// ---------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------

#[test]
fn database_looks_up_across_mabs_and_replaces_one_while_others_serve() {
    let mut db = Database::new();
    let r = db.reader();
    assert_eq!(r.lookup("20.0.0.1".parse().unwrap()), Mapping::OutsideMab);
    db.insert(populated()).unwrap();
    let mut t6 = Table::new(mab6());
    let s6 = mab6().start();
    t6.apply(&[def(s6, 4, e6(1))]).unwrap();
    db.insert(t6).unwrap();
    let other: Mab = "20.0.1.0/24".parse().unwrap();
    db.insert(Table::new(other)).unwrap();
    assert_eq!(
        db.insert(Table::new("20.0.0.0/16".parse().unwrap()))
            .unwrap_err(),
        DbError::MabOverlap {
            new: "20.0.0.0/16".parse().unwrap(),
            existing: mab4()
        }
    );
    let a4: IpAddr = "20.0.0.3".parse().unwrap();
    let a6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(r.lookup(a4), net(u4(0), 8, e4(1)));
    assert_eq!(r.lookup(a6), net(s6, 4, e6(1)));
    assert_eq!(r.mab_of(a4), Some(mab4()));
    assert_eq!(
        r.lookup("20.0.1.9".parse().unwrap()),
        Mapping::Unassigned {
            start: other.start(),
            len: 256
        }
    );
    // Apply and publish through the database.
    db.apply(&mab4(), &[set(u4(0), 8, e4(2))]).unwrap();
    assert_eq!(r.lookup(a4), net(u4(0), 8, e4(1)), "not published yet");
    db.publish();
    assert_eq!(r.lookup(a4), net(u4(0), 8, e4(2)));
    assert!(matches!(
        db.apply(&"30.0.0.0/8".parse().unwrap(), &[]),
        Err(DbError::NoSuchMab(_))
    ));
    // Batched, across families and MABs, with addresses in no MAB.
    let addrs: Vec<IpAddr> = [
        "20.0.0.3",
        "2001:db8::1",
        "20.0.1.9",
        "9.9.9.9",
        "20.0.0.9",
        "::1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut out = vec![Mapping::OutsideMab; addrs.len()];
    r.lookup_batch(&addrs, &mut out);
    for (a, o) in addrs.iter().zip(&out) {
        assert_eq!(*o, r.lookup(*a), "{a}");
    }
    // Replace one MAB (a resync from a snapshot) while the others keep serving.
    let mut fresh = Table::new(mab4());
    fresh.apply(&[def(u4(0), 2, e4(8))]).unwrap();
    fresh.set_mab_seq(100);
    let old = db.insert(fresh).unwrap().unwrap();
    assert_eq!(old.lookup(u4(0)), net(u4(0), 8, e4(2)));
    assert_eq!(
        r.lookup(a4),
        Mapping::Unassigned {
            start: u4(2),
            len: 254
        }
    );
    assert_eq!(r.lookup(a6), net(s6, 4, e6(1)));
    assert!(r.mabs().contains(&(mab4(), 100)));
    assert_eq!(r.view(&mab4()).unwrap().mab_seq(), 100);
    db.remove(&mab6()).unwrap();
    assert_eq!(r.lookup(a6), Mapping::OutsideMab);
}

// ---------------------------------------------------------------------------
// The tree alone: random range replacements against a vector
// ---------------------------------------------------------------------------

#[test]
fn tree_random_replacements_against_a_vector() {
    use super::tree::{Mem, Tree};
    let lo = 0u64;
    let hi = 1u128 << 32;
    let mut rng = 99u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut model: Vec<(u64, u32)> = (0..100_000u64).map(|i| (i * 1000, i as u32)).collect();
    let mut mem = Mem::default();
    let mut tree: Tree<u32> = Tree::build(&mut mem, lo, hi, model.iter().copied());
    for round in 0..300 {
        // Replace the runs between two existing boundaries.
        let a = next() as usize % model.len();
        let span = match round % 3 {
            0 => 1 + next() as usize % 3,
            1 => next() as usize % 700,
            _ => next() as usize % 40_000,
        };
        let b = (a + span).min(model.len());
        let rlo = model[a].0;
        let rhi = if b < model.len() {
            u128::from(model[b].0)
        } else {
            hi
        };
        let count = if round % 4 == 0 {
            1
        } else {
            1 + next() as usize % 600
        };
        let step = ((rhi - u128::from(rlo)) / count as u128).max(1) as u64;
        let new: Vec<(u64, u32)> = (0..count as u64)
            .map(|i| (rlo + i * step, next() as u32))
            .take_while(|r| u128::from(r.0) < rhi)
            .collect();
        tree.replace(&mut mem, rlo, rhi, &new);
        model.splice(a..b, new);
        if round % 10 == 0 {
            if round % 20 == 0 {
                for b in mem.publish() {
                    // SAFETY: nothing was published to readers in this test.
                    unsafe { b.free() }
                }
            }
            assert_eq!(tree.check(), model.len() as u64, "round {round}");
            let got: Vec<(u64, u32)> = tree.view().runs_from(0).map(|r| (r.start, r.val)).collect();
            assert_eq!(got, model, "round {round}");
        }
    }
    tree.discard_all(&mut mem);
    for b in mem.publish() {
        // SAFETY: nothing was published to readers in this test.
        unsafe { b.free() }
    }
}

// ---------------------------------------------------------------------------
// Bulk building, many sets at once, the value-only fast path
// ---------------------------------------------------------------------------

#[test]
fn from_micronets_builds_and_refuses_bad_input() {
    let m = |start, len, etr| Micronet { start, len, etr };
    let t = Table::from_micronets(
        mab4(),
        7,
        [m(u4(1), 2, e4(1)), m(u4(3), 1, zero4()), m(u4(9), 4, e4(2))],
    )
    .unwrap();
    assert_eq!(t.mab_seq(), 7);
    assert_eq!(t.micronets(), 3);
    assert_eq!(t.runs(), 6, "gap, 2 micronets, gap, micronet, gap");
    assert_eq!(
        t.lookup(u4(4)),
        Mapping::Unassigned {
            start: u4(4),
            len: 5
        }
    );
    t.check_structure();
    let bad = |v: Vec<Micronet>| Table::from_micronets(mab4(), 0, v).unwrap_err();
    let e = bad(vec![m(u4(1), 2, e4(1)), m(u4(2), 1, e4(1))]);
    assert_eq!((e.index, e.reason), (1, Reason::Unsorted));
    assert_eq!(bad(vec![m(u4(1), 0, e4(1))]).reason, Reason::EmptyRange);
    assert_eq!(bad(vec![m(u4(250), 9, e4(1))]).reason, Reason::OutsideMab);
    assert_eq!(bad(vec![m(u4(1), 1, e6(1))]).reason, Reason::WrongFamily);
    assert_eq!(
        bad(vec![m(u4(1), 1, Etr::V4(Ipv4Addr::BROADCAST))]).reason,
        Reason::ReservedEtr
    );
    assert!(
        bad(vec![m(u4(1), 2, e4(1)), m(u4(2), 1, e4(1))])
            .to_string()
            .contains("starts before the end")
    );
}

#[test]
fn apply_many_equals_one_apply_per_set() {
    let mab: Mab = "21.7.0.0/16".parse().unwrap();
    let lo = mab.start();
    let nets = (0..20_000u64).map(|i| Micronet {
        start: lo + 3 * i,
        len: 2,
        etr: e4((i % 7) as u8 + 1),
    });
    let mut a = Table::from_micronets(mab, 0, nets.clone()).unwrap();
    let mut b = Table::from_micronets(mab, 0, nets).unwrap();
    let mut rng = 5u64;
    let mut sets: Vec<Vec<Command>> = Vec::new();
    for k in 0..3000u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = rng % 20_000;
        let s = lo + 3 * i;
        sets.push(match k % 5 {
            0 => vec![
                set(s, 2, zero4()),
                Command::Split {
                    start: s,
                    len: 2,
                    at: 1,
                },
            ],
            1 => vec![set(s, 3, e4(1))], // wrong length: refused
            2 => vec![def(s + 2, 1, e4(9))],
            3 => vec![Command::Delete { start: s, len: 2 }],
            _ => vec![set(s, 2, e4((k % 5) as u8 + 2))],
        });
    }
    let mut from_many = Vec::new();
    a.apply_many(sets.iter().map(|s| &s[..]), |r| from_many.push(r));
    let one_by_one: Vec<_> = sets.iter().map(|s| b.apply(s)).collect();
    assert_eq!(from_many, one_by_one);
    assert_eq!(a.hash(), b.hash());
    a.check_structure();
}

#[test]
fn set_etr_fast_path_copies_only_what_readers_share() {
    // Many set-etr sets between publishes, with a reader holding each version: every
    // held version keeps answering with its own ETRs.
    let mab: Mab = "21.7.0.0/16".parse().unwrap();
    let lo = mab.start();
    let mut t = Table::from_micronets(
        mab,
        0,
        (0..30_000u64).map(|i| Micronet {
            start: lo + 2 * i,
            len: 2,
            etr: e4(1),
        }),
    )
    .unwrap();
    let r = t.reader();
    let mut held = Vec::new();
    for round in 0..20u8 {
        for i in (0..30_000u64).step_by(97) {
            t.apply(&[set(lo + 2 * i, 2, e4(round + 2))]).unwrap();
            // Twice in the same batch: the fresh copy is edited in place.
            t.apply(&[set(lo + 2 * i, 2, e4(round + 2))]).unwrap();
        }
        t.publish();
        held.push((round, r.load_owned()));
    }
    for (round, v) in &held {
        assert_eq!(v.lookup(lo + 2 * 97), net(lo + 2 * 97, 2, e4(round + 2)));
        assert_eq!(v.lookup(lo + 2 * 98), net(lo + 2 * 98, 2, e4(1)));
    }
    t.check_structure();
    drop(held);
    t.publish();
}

#[test]
fn ipv6_dictionary_reuses_indices_without_disturbing_old_versions() {
    let mut t = Table::new(mab6());
    let s = mab6().start();
    t.apply(
        &(0..50u64)
            .map(|i| def(s + i, 1, e6(i as u16 + 1)))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    t.publish();
    let r = t.reader();
    let old = r.load_owned();
    // Replace every ETR: old indices are freed and reused for new ETRs.
    for round in 0..5u16 {
        let cmds: Vec<Command> = (0..50u64)
            .map(|i| set(s + i, 1, e6(1000 * (round + 1) + i as u16)))
            .collect();
        t.apply(&cmds).unwrap();
        t.publish();
    }
    for i in 0..50u64 {
        assert_eq!(old.lookup(s + i), net(s + i, 1, e6(i as u16 + 1)));
        assert_eq!(r.load().lookup(s + i), net(s + i, 1, e6(5000 + i as u16)));
    }
}
