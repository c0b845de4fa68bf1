//! A seeded stream of mapping changes and a reference model of address histories,
//! for the history tests and benchmark.
//!
//! What it is: [`Workload`] keeps one simple layout per MAB (a `BTreeMap` of
//! micronets) and makes random command sets against it — ETR changes, splits,
//! joins, defines and deletes, each zeroing before splitting or joining as the
//! rules require (commands.md §2) — packs them into update payloads, and says
//! which ranges each set changed, in their final state. [`Model`] replays the same
//! changes by brute force and answers "what was unit `u` mapped to from `a` to
//! `b`", so searches over the store can be checked against it.
//!
//! What it is not: the mapping engine (`ivip::table` is the authority on command
//! semantics; this generator only makes commands whose effect is obvious) or a
//! signer (payload signatures are zero: the store does not check them; the
//! ingest path, which does, is tested with real signatures).

use std::collections::BTreeMap;

use ivip_wire::history::{
    BaselineRecord, ChangedRange, HistoryRecord, Item, PayloadRecord, SetItem, SetOutcome,
};
use ivip_wire::payload::{BODY_LEN_MAX, PayloadRepr, Record};
use ivip_wire::{Command, Etr, Family, Mab, PayloadId, RuasId, Seq};

use super::query::MappingState;
use crate::rng::Rng;

/// Micronets per baseline record part.
pub const BASELINE_PART_MICRONETS: usize = 1024;
/// The largest set this generator makes, as a payload record: four IPv6 commands
/// of at most 33 bytes, and the record's 24-byte header.
const SET_BYTES_MAX: usize = 24 + 4 * 33;

#[derive(Debug, Clone)]
struct Layout {
    mab: Mab,
    micronets: BTreeMap<u64, (u64, Etr)>,
    mab_seq: u64,
}

/// One command set's effect, as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChange {
    /// Time of effect (the payload's timestamp).
    pub time_us: u64,
    /// The MAB.
    pub mab: Mab,
    /// Per-MAB sequence.
    pub mab_seq: u64,
    /// The carrying payload.
    pub payload: PayloadId,
    /// Ranges changed, final state.
    pub ranges: Vec<ChangedRange>,
}

/// A seeded generator of command sets over a few MABs.
#[derive(Debug, Clone)]
pub struct Workload {
    rng: Rng,
    layouts: Vec<Layout>,
    ruas: RuasId,
    epoch: u32,
    seq: Seq,
    time_us: u64,
    step_us: u64,
    max_micronet_len: u64,
}

fn random_etr(rng: &mut Rng, f: Family) -> Etr {
    match f {
        Family::V4 => Etr::V4(std::net::Ipv4Addr::from(
            0xC000_0200
                | (rng.next_u64() as u32 & 0xff)
                | (0x0100_0000 * (1 + rng.below(8) as u32)),
        )),
        Family::V6 => Etr::V6(std::net::Ipv6Addr::from(
            0x2001_0db8_ffff_0000_0000_0000_0000_0000u128 | u128::from(rng.below(1 << 20)),
        )),
    }
}

impl Workload {
    /// A workload over `mabs`, each starting with about `micronets` micronets of
    /// 1..=`max_len` units spread over the MAB, times starting at `start_us` and
    /// rising by `step_us` per payload.
    pub fn new(
        seed: u64,
        mabs: &[Mab],
        micronets: u64,
        max_len: u64,
        start_us: u64,
        step_us: u64,
    ) -> Workload {
        let mut rng = Rng::seeded(seed);
        let layouts = mabs
            .iter()
            .map(|&mab| {
                let mut m = BTreeMap::new();
                let stride = (mab.len() / micronets.max(1)).max(1);
                let mut at = mab.start();
                for _ in 0..micronets {
                    let gap = rng.below(stride.saturating_sub(max_len).max(1));
                    let len = 1 + rng.below(max_len.min(stride).max(1));
                    let s = at.saturating_add(gap);
                    if u128::from(s) + u128::from(len) > mab.end() {
                        break;
                    }
                    m.insert(s, (len, random_etr(&mut rng, mab.family())));
                    at = at.saturating_add(stride);
                }
                Layout {
                    mab,
                    micronets: m,
                    mab_seq: 1,
                }
            })
            .collect();
        Workload {
            rng,
            layouts,
            ruas: RuasId::masked(5),
            epoch: 1,
            seq: Seq(0),
            time_us: start_us,
            step_us,
            max_micronet_len: max_len.max(1),
        }
    }

    /// The MABs.
    pub fn mabs(&self) -> Vec<Mab> {
        self.layouts.iter().map(|l| l.mab).collect()
    }

    /// Micronets now in the layouts.
    pub fn micronet_count(&self) -> usize {
        self.layouts.iter().map(|l| l.micronets.len()).sum()
    }

    /// The current time of the stream.
    pub fn now_us(&self) -> u64 {
        self.time_us
    }

    /// Baseline records of the current layouts (taken "now", sequence so far).
    pub fn baselines(&self, recv_us: u64) -> Vec<HistoryRecord> {
        let mut out = Vec::new();
        for l in &self.layouts {
            let all: Vec<(u64, u64, Etr)> =
                l.micronets.iter().map(|(&s, &(n, e))| (s, n, e)).collect();
            let parts = all.chunks(BASELINE_PART_MICRONETS).count().max(1) as u32;
            let mut chunks: Vec<&[(u64, u64, Etr)]> = all.chunks(BASELINE_PART_MICRONETS).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (i, c) in chunks.into_iter().enumerate() {
                out.push(HistoryRecord::Baseline(BaselineRecord {
                    ruas: self.ruas,
                    mab: l.mab,
                    mab_seq: l.mab_seq - 1,
                    created_us: self.time_us,
                    recv_us,
                    sha256: [0; 32],
                    part: i as u32,
                    part_count: parts,
                    micronets: c.to_vec(),
                }));
            }
        }
        out
    }

    fn pick(&mut self, li: usize) -> Option<(u64, u64, Etr)> {
        let l = &self.layouts[li];
        let u = l.mab.start() + self.rng.below(l.mab.len());
        l.micronets
            .range(u..)
            .next()
            .or_else(|| l.micronets.range(..u).next_back())
            .map(|(&s, &(n, e))| (s, n, e))
    }

    /// One random command set on layout `li`: its commands and changed ranges.
    fn one_set(&mut self, li: usize) -> Option<(Vec<Command>, Vec<ChangedRange>)> {
        let fam = self.layouts[li].mab.family();
        let zero = Etr::zero(fam);
        let roll = self.rng.below(100);
        let (s, n, e) = self.pick(li)?;
        let mapped = |start, len, etr| ChangedRange {
            start,
            len,
            etr: Some(etr),
        };
        let out = if roll < 80 || self.layouts[li].micronets.len() < 4 {
            // A different ETR: setting the same one changes nothing.
            let mut etr = random_etr(&mut self.rng, fam);
            while etr == e {
                etr = random_etr(&mut self.rng, fam);
            }
            self.layouts[li].micronets.insert(s, (n, etr));
            (
                vec![Command::SetEtr {
                    start: s,
                    len: n,
                    etr,
                }],
                vec![mapped(s, n, etr)],
            )
        } else if roll < 86 && n >= 2 {
            // Zero, split, map the first part.
            let at = 1 + self.rng.below(n - 1);
            let etr = random_etr(&mut self.rng, fam);
            let mut cmds = Vec::new();
            if e != zero {
                cmds.push(Command::SetEtr {
                    start: s,
                    len: n,
                    etr: zero,
                });
            }
            cmds.push(Command::Split {
                start: s,
                len: n,
                at,
            });
            cmds.push(Command::SetEtr {
                start: s,
                len: at,
                etr,
            });
            let m = &mut self.layouts[li].micronets;
            m.insert(s, (at, etr));
            m.insert(s + at, (n - at, zero));
            (cmds, vec![mapped(s, at, etr), mapped(s + at, n - at, zero)])
        } else if roll < 92 {
            // Join with the right-hand neighbour if adjacent.
            let m = &self.layouts[li].micronets;
            let (&s2, &(n2, e2)) = m.range(s + 1..).next()?;
            if s + n != s2 || n + n2 > 4 * self.max_micronet_len {
                return None;
            }
            let etr = random_etr(&mut self.rng, fam);
            let mut cmds = Vec::new();
            if e != zero {
                cmds.push(Command::SetEtr {
                    start: s,
                    len: n,
                    etr: zero,
                });
            }
            if e2 != zero {
                cmds.push(Command::SetEtr {
                    start: s2,
                    len: n2,
                    etr: zero,
                });
            }
            cmds.push(Command::Join {
                start: s,
                len: n + n2,
            });
            cmds.push(Command::SetEtr {
                start: s,
                len: n + n2,
                etr,
            });
            let m = &mut self.layouts[li].micronets;
            m.remove(&s2);
            m.insert(s, (n + n2, etr));
            (cmds, vec![mapped(s, n + n2, etr)])
        } else if roll < 96 {
            // Define in the gap after this micronet, if there is one.
            let l = &self.layouts[li];
            let gap_start = s + n;
            let gap_end = l
                .micronets
                .range(gap_start..)
                .next()
                .map_or(l.mab.end(), |(&x, _)| u128::from(x));
            if u128::from(gap_start) >= gap_end {
                return None;
            }
            let room =
                (gap_end - u128::from(gap_start)).min(u128::from(self.max_micronet_len)) as u64;
            let len = 1 + self.rng.below(room);
            let etr = random_etr(&mut self.rng, fam);
            self.layouts[li].micronets.insert(gap_start, (len, etr));
            (
                vec![Command::Define {
                    start: gap_start,
                    len,
                    etr,
                }],
                vec![mapped(gap_start, len, etr)],
            )
        } else {
            self.layouts[li].micronets.remove(&s);
            (
                vec![Command::Delete { start: s, len: n }],
                vec![ChangedRange {
                    start: s,
                    len: n,
                    etr: None,
                }],
            )
        };
        Some(out)
    }

    /// The next payload: up to `sets` command sets on random MABs, packed into one
    /// payload of at most 1200 bytes (fewer sets when they do not fit). Returns
    /// the payload record (received at its own time) and the model's view.
    ///
    pub fn next_payload(&mut self, sets: usize) -> (HistoryRecord, Vec<ModelChange>) {
        self.seq = self.seq.next();
        self.time_us += self.step_us;
        let id = PayloadId {
            ruas: self.ruas,
            epoch: self.epoch,
            seq: self.seq,
        };
        let mut records = Vec::new();
        let mut items = Vec::new();
        let mut changes = Vec::new();
        let mut body = 0usize;
        let mut tries = 0;
        while records.len() < sets
            && tries < 4 * sets.max(1)
            && body + SET_BYTES_MAX <= BODY_LEN_MAX
        {
            tries += 1;
            let li = self.rng.below(self.layouts.len() as u64) as usize;
            let Some((commands, ranges)) = self.one_set(li) else {
                continue;
            };
            let l = &mut self.layouts[li];
            let rec = Record::MabUpdate {
                mab: l.mab,
                mab_seq: l.mab_seq,
                commands,
            };
            body += rec.buffer_len();
            items.push(Item::Set(SetItem {
                outcome: SetOutcome::Applied,
                record_index: records.len() as u16,
                fragments: vec![],
                ranges: ranges.clone(),
            }));
            changes.push(ModelChange {
                time_us: self.time_us,
                mab: l.mab,
                mab_seq: l.mab_seq,
                payload: id,
                ranges,
            });
            l.mab_seq += 1;
            records.push(rec);
        }
        let p = PayloadRepr {
            id,
            timestamp_us: self.time_us,
            records,
            signature: [0; 64],
        };
        let rec = HistoryRecord::Payload(PayloadRecord {
            recv_us: self.time_us + 1_000,
            payload: p.to_vec().unwrap_or_default(),
            items,
        });
        (rec, changes)
    }
}

// ---------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum ModelEvent {
    Baseline {
        mab: Mab,
        time_us: u64,
        micronets: Vec<(u64, u64, Etr)>,
    },
    Change(ModelChange),
}

/// Every change and baseline, in record order, answered by brute force.
#[derive(Debug, Clone, Default)]
pub struct Model {
    events: Vec<ModelEvent>,
}

/// One stretch of the model's answer: `(since, until, state)`.
pub type ModelMapping = (Option<u64>, Option<u64>, MappingState);

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    /// Changes and baselines held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Add a baseline record (all parts of one baseline must be added in order;
    /// each part is its own event, the first resets the MAB).
    pub fn add_baseline(&mut self, rec: &HistoryRecord) {
        if let HistoryRecord::Baseline(b) = rec {
            if b.part == 0 {
                self.events.push(ModelEvent::Baseline {
                    mab: b.mab,
                    time_us: b.created_us,
                    micronets: Vec::new(),
                });
            }
            if let Some(ModelEvent::Baseline { micronets, .. }) = self.events.last_mut() {
                micronets.extend_from_slice(&b.micronets);
            }
        }
    }

    /// Add changes in order.
    pub fn add(&mut self, changes: &[ModelChange]) {
        self.events
            .extend(changes.iter().cloned().map(ModelEvent::Change));
    }

    /// What `unit` of `family` was mapped to from `from_us` to `to_us`: the state
    /// at `from_us`, then each change in `(from_us, to_us]`.
    pub fn history(
        &self,
        family: Family,
        unit: u64,
        from_us: u64,
        to_us: u64,
    ) -> Vec<ModelMapping> {
        let mut initial: Option<(u64, MappingState)> = None;
        let mut out: Vec<ModelMapping> = Vec::new();
        for e in &self.events {
            let (t, state) = match e {
                ModelEvent::Baseline {
                    mab,
                    time_us,
                    micronets,
                } => {
                    if mab.family() != family || !mab.contains(unit) {
                        continue;
                    }
                    let st = micronets
                        .iter()
                        .find(|&&(s, l, _)| {
                            unit >= s && u128::from(unit) < u128::from(s) + u128::from(l)
                        })
                        .map_or(MappingState::Unassigned { range: None }, |&(s, l, etr)| {
                            MappingState::Mapped {
                                start: s,
                                len: l,
                                etr,
                            }
                        });
                    (*time_us, st)
                }
                ModelEvent::Change(c) => {
                    if c.mab.family() != family || !c.mab.contains(unit) {
                        continue;
                    }
                    let Some(r) = c.ranges.iter().find(|r| r.contains(unit)) else {
                        continue;
                    };
                    let st = match r.etr {
                        Some(etr) => MappingState::Mapped {
                            start: r.start,
                            len: r.len,
                            etr,
                        },
                        None => MappingState::Unassigned {
                            range: Some((r.start, r.len)),
                        },
                    };
                    (c.time_us, st)
                }
            };
            if t <= from_us {
                initial = Some((t, state));
            } else if t <= to_us {
                out.push((Some(t), None, state));
            }
        }
        let mut all: Vec<ModelMapping> = vec![match initial {
            Some((t, s)) => (Some(t), None, s),
            None => (None, None, MappingState::Unknown),
        }];
        all.extend(out);
        for i in 1..all.len() {
            all[i - 1].1 = all[i].0;
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_reproducible_and_the_model_follows_it() {
        let mabs: Vec<Mab> = vec!["20.0.0.0/20".parse().unwrap()];
        let mut a = Workload::new(7, &mabs, 200, 8, 1_000_000, 1_000);
        let mut b = Workload::new(7, &mabs, 200, 8, 1_000_000, 1_000);
        let mut model = Model::new();
        for r in a.baselines(0) {
            model.add_baseline(&r);
        }
        for _ in 0..200 {
            let (ra, ca) = a.next_payload(5);
            let (rb, _) = b.next_payload(5);
            assert_eq!(ra, rb);
            assert!(!ca.is_empty());
            // What each payload record says parses back.
            assert_eq!(HistoryRecord::parse(&ra.to_vec().unwrap()), Ok(ra));
            model.add(&ca);
        }
        // The layout the workload ends with is what the model says at the end.
        for (&s, &(n, etr)) in &a.layouts[0].micronets {
            let h = model.history(Family::V4, s + n - 1, u64::MAX - 1, u64::MAX);
            assert_eq!(h.len(), 1);
            assert_eq!(
                h[0].2,
                MappingState::Mapped {
                    start: s,
                    len: n,
                    etr
                }
            );
        }
    }
}
