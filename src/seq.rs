//! Per-RUAS payload sequence tracking and gap detection (seed s4.1.3, s3.12).
//!
//! What it is: a pure state machine, fed `(now, epoch, seq)` for every payload of
//! one RUAS that a node accepts, that knows the epoch, the highest sequence seen,
//! and the bounded set of sequence numbers it has not seen below that, each with
//! the time it was first noticed missing. MPSes use it to ask peers for what they
//! missed; QSDs and history recorders will use it the same way.
//!
//! What it is not: a store, a reorder buffer or a dedupe filter (a payload at or
//! before the highest that is not missing is reported as [`Observation::Behind`],
//! which covers duplicates and payloads given up on alike). No clock, no I/O.
//!
//! Rules (spec: payload.md §2 identity; ARCHITECTURE "Identities and ordering"):
//! - Sequence numbers rise by one per payload and wrap from 2^32-1 to 0; they are
//!   compared by serial arithmetic ([`Seq::distance_from`]). Internally each is
//!   *unwrapped* to a `u64` relative to the highest seen, so ordering survives the
//!   wrap.
//! - "The epoch changes only if the RUAS loses its sequence state, so numbers are
//!   never reused": a RUAS picks a larger epoch. A larger epoch restarts tracking
//!   (the old epoch's missing entries are abandoned); a smaller one is stale.
//! - Tracking starts at the first payload seen: nothing before it counts as missing.
//! - At most `missing_max` numbers are tracked as missing; when a jump would exceed
//!   that, the oldest are dropped and counted in [`SeqTracker::overflowed`].

use std::collections::BTreeMap;

use ivip_wire::{PayloadId, RuasId, Seq};

use crate::time::Instant;

/// A reasonable default bound on missing entries per RUAS.
pub const MISSING_MAX_DEFAULT: usize = 4096;

/// Unwrapped numbers start here, so that anything up to 2^31 before the first
/// payload still has a non-negative unwrapped value.
const UNWRAP_ORIGIN: u64 = 1 << 32;

/// What one observation meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The first payload of this RUAS: tracking starts here.
    Started,
    /// Exactly one after the highest.
    InOrder,
    /// Ahead of the highest by more than one; `gap` numbers in between are missing
    /// (of which at most `missing_max` are tracked).
    Ahead {
        /// How many sequence numbers were skipped.
        gap: u32,
    },
    /// It was missing and is now filled.
    Filled,
    /// At or before the highest and not missing: a duplicate, a payload from before
    /// tracking started, or one given up on.
    Behind,
    /// A larger epoch: tracking restarted at this payload, and `abandoned` missing
    /// numbers of the old epoch were dropped.
    NewEpoch {
        /// Missing entries of the old epoch dropped.
        abandoned: usize,
    },
    /// A smaller epoch than the one tracked: ignored.
    StaleEpoch,
    /// Exactly 2^31 from the highest, which serial arithmetic cannot order: ignored.
    Unordered,
}

impl Observation {
    /// `true` when the payload was not seen before by this tracker's account: the
    /// caller should use it (store, apply, forward).
    pub fn is_new(self) -> bool {
        matches!(
            self,
            Observation::Started
                | Observation::InOrder
                | Observation::Ahead { .. }
                | Observation::Filled
                | Observation::NewEpoch { .. }
        )
    }
}

/// Sequence state of one RUAS.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    missing_max: usize,
    state: Option<State>,
    overflowed: u64,
}

#[derive(Debug, Clone)]
struct State {
    epoch: u32,
    highest: Seq,
    highest_u: u64,
    /// Unwrapped sequence number → when it was noticed missing.
    missing: BTreeMap<u64, Instant>,
}

impl State {
    fn unwrap(&self, seq: Seq) -> Option<u64> {
        // Exactly 2^31 apart: unordered.
        seq.serial_cmp(self.highest)?;
        // distance_from is within ±2^31, and highest_u ≥ 2^32, so this stays ≥ 0.
        Some(
            self.highest_u
                .wrapping_add_signed(seq.distance_from(self.highest)),
        )
    }

    fn wrap(&self, u: u64) -> Seq {
        Seq(u as u32)
    }
}

impl SeqTracker {
    /// An empty tracker that will track at most `missing_max` missing numbers
    /// (at least 1).
    pub fn new(missing_max: usize) -> SeqTracker {
        SeqTracker {
            missing_max: missing_max.max(1),
            state: None,
            overflowed: 0,
        }
    }

    /// Record a payload `(epoch, seq)` accepted at `now`.
    pub fn observe(&mut self, now: Instant, epoch: u32, seq: Seq) -> Observation {
        let Some(st) = self.state.as_mut() else {
            self.start(epoch, seq);
            return Observation::Started;
        };
        if epoch < st.epoch {
            return Observation::StaleEpoch;
        }
        if epoch > st.epoch {
            let abandoned = st.missing.len();
            self.start(epoch, seq);
            return Observation::NewEpoch { abandoned };
        }
        let Some(u) = st.unwrap(seq) else {
            return Observation::Unordered;
        };
        if u <= st.highest_u {
            return if st.missing.remove(&u).is_some() {
                Observation::Filled
            } else {
                Observation::Behind
            };
        }
        let gap = u - st.highest_u - 1;
        // Track at most missing_max of the newly skipped numbers: the latest ones.
        let track = gap.min(self.missing_max as u64);
        for m in (u - track)..u {
            st.missing.insert(m, now);
        }
        self.overflowed += gap - track;
        while st.missing.len() > self.missing_max {
            st.missing.pop_first();
            self.overflowed += 1;
        }
        st.highest = seq;
        st.highest_u = u;
        if gap == 0 {
            Observation::InOrder
        } else {
            // gap < 2^31 because u came from a serial distance below 2^31.
            Observation::Ahead { gap: gap as u32 }
        }
    }

    fn start(&mut self, epoch: u32, seq: Seq) {
        self.state = Some(State {
            epoch,
            highest: seq,
            highest_u: UNWRAP_ORIGIN + u64::from(seq.0),
            missing: BTreeMap::new(),
        });
    }

    /// The epoch tracked, once a payload was seen.
    pub fn epoch(&self) -> Option<u32> {
        self.state.as_ref().map(|s| s.epoch)
    }

    /// The highest sequence number seen in the current epoch.
    pub fn highest(&self) -> Option<Seq> {
        self.state.as_ref().map(|s| s.highest)
    }

    /// `true` when `seq` of the current epoch is tracked as missing.
    pub fn is_missing(&self, seq: Seq) -> bool {
        self.state
            .as_ref()
            .and_then(|s| s.unwrap(seq).map(|u| s.missing.contains_key(&u)))
            .unwrap_or(false)
    }

    /// Number of sequence numbers tracked as missing.
    pub fn missing_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.missing.len())
    }

    /// The missing numbers, oldest first, with when each was noticed.
    pub fn missing(&self) -> impl Iterator<Item = (Seq, Instant)> + '_ {
        self.state
            .iter()
            .flat_map(|s| s.missing.iter().map(move |(&u, &t)| (s.wrap(u), t)))
    }

    /// Runs of consecutive missing numbers noticed at or before `noticed_by`, as
    /// inclusive `(first, last)` pairs in order, at most `ranges_max` runs of at
    /// most `run_len_max` numbers each (a longer run is split).
    pub fn missing_ranges(
        &self,
        noticed_by: Instant,
        ranges_max: usize,
        run_len_max: u32,
    ) -> Vec<(Seq, Seq)> {
        let mut out: Vec<(Seq, Seq)> = Vec::new();
        let Some(s) = self.state.as_ref() else {
            return out;
        };
        let run_len_max = u64::from(run_len_max.max(1));
        let mut run: Option<(u64, u64)> = None;
        for (&u, &t) in &s.missing {
            if t > noticed_by {
                continue;
            }
            run = match run {
                Some((a, b)) if b + 1 == u && u - a < run_len_max => Some((a, u)),
                Some((a, b)) => {
                    out.push((s.wrap(a), s.wrap(b)));
                    if out.len() >= ranges_max {
                        return out;
                    }
                    Some((u, u))
                }
                None => Some((u, u)),
            };
        }
        if let Some((a, b)) = run
            && out.len() < ranges_max
        {
            out.push((s.wrap(a), s.wrap(b)));
        }
        out
    }

    /// Stop tracking numbers noticed missing before `noticed_before`; returns how
    /// many were dropped.
    pub fn give_up(&mut self, noticed_before: Instant) -> usize {
        let Some(s) = self.state.as_mut() else {
            return 0;
        };
        let before = s.missing.len();
        s.missing.retain(|_, t| *t >= noticed_before);
        before - s.missing.len()
    }

    /// Missing numbers dropped because of the `missing_max` bound.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

/// One [`SeqTracker`] per RUAS id (128), created on first use.
#[derive(Debug, Clone)]
pub struct SeqTable {
    trackers: Vec<SeqTracker>,
}

impl SeqTable {
    /// Trackers bounded to `missing_max` missing numbers each.
    pub fn new(missing_max: usize) -> SeqTable {
        SeqTable {
            trackers: (0..=RuasId::MAX)
                .map(|_| SeqTracker::new(missing_max))
                .collect(),
        }
    }

    /// Record a payload accepted at `now`.
    pub fn observe(&mut self, now: Instant, id: PayloadId) -> Observation {
        self.trackers[usize::from(id.ruas.get())].observe(now, id.epoch, id.seq)
    }

    /// The tracker of one RUAS.
    pub fn get(&self, ruas: RuasId) -> &SeqTracker {
        &self.trackers[usize::from(ruas.get())]
    }

    /// The tracker of one RUAS, to give up on entries.
    pub fn get_mut(&mut self, ruas: RuasId) -> &mut SeqTracker {
        &mut self.trackers[usize::from(ruas.get())]
    }

    /// Every RUAS that has been seen, with its tracker.
    pub fn iter(&self) -> impl Iterator<Item = (RuasId, &SeqTracker)> {
        self.trackers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.epoch().is_some())
            .map(|(i, t)| (RuasId::masked(i as u8), t))
    }

    /// Total missing numbers over all RUASes.
    pub fn missing_len(&self) -> usize {
        self.trackers.iter().map(SeqTracker::missing_len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    const T0: Instant = Instant(1_000);

    #[test]
    fn gap_is_noticed_and_filled() {
        let mut t = SeqTracker::new(100);
        assert_eq!(t.observe(T0, 1, Seq(10)), Observation::Started);
        assert_eq!(t.observe(T0, 1, Seq(11)), Observation::InOrder);
        assert_eq!(t.observe(T0, 1, Seq(15)), Observation::Ahead { gap: 3 });
        assert_eq!(
            t.missing().map(|(s, _)| s.0).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        assert_eq!(t.missing_ranges(T0, 8, 100), [(Seq(12), Seq(14))]);
        assert_eq!(t.observe(T0, 1, Seq(13)), Observation::Filled);
        assert_eq!(
            t.missing_ranges(T0, 8, 100),
            [(Seq(12), Seq(12)), (Seq(14), Seq(14))]
        );
        assert_eq!(t.observe(T0, 1, Seq(13)), Observation::Behind);
        assert_eq!(t.observe(T0, 1, Seq(3)), Observation::Behind);
        assert!(t.is_missing(Seq(12)) && !t.is_missing(Seq(13)));
    }

    #[test]
    fn gap_across_sequence_wrap() {
        let mut t = SeqTracker::new(100);
        t.observe(T0, 7, Seq(u32::MAX - 1));
        assert_eq!(t.observe(T0, 7, Seq(2)), Observation::Ahead { gap: 3 });
        assert_eq!(
            t.missing().map(|(s, _)| s.0).collect::<Vec<_>>(),
            [u32::MAX, 0, 1]
        );
        assert_eq!(t.missing_ranges(T0, 8, 100), [(Seq(u32::MAX), Seq(1))]);
        assert_eq!(t.observe(T0, 7, Seq(0)), Observation::Filled);
        assert_eq!(t.highest(), Some(Seq(2)));
    }

    #[test]
    fn epoch_change_restarts_and_stale_epoch_is_ignored() {
        let mut t = SeqTracker::new(100);
        t.observe(T0, 5, Seq(100));
        t.observe(T0, 5, Seq(110));
        assert_eq!(t.missing_len(), 9);
        assert_eq!(
            t.observe(T0, 6, Seq(0)),
            Observation::NewEpoch { abandoned: 9 }
        );
        assert_eq!(t.missing_len(), 0);
        assert_eq!(t.observe(T0, 5, Seq(105)), Observation::StaleEpoch);
        assert_eq!(t.observe(T0, 6, Seq(1)), Observation::InOrder);
    }

    #[test]
    fn missing_set_is_bounded_and_overflow_counted() {
        let mut t = SeqTracker::new(4);
        t.observe(T0, 1, Seq(0));
        assert_eq!(t.observe(T0, 1, Seq(11)), Observation::Ahead { gap: 10 });
        assert_eq!(
            t.missing().map(|(s, _)| s.0).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(t.overflowed(), 6);
        assert_eq!(t.observe(T0, 1, Seq(3)), Observation::Behind);
    }

    #[test]
    fn unordered_half_way_is_ignored() {
        let mut t = SeqTracker::new(4);
        t.observe(T0, 1, Seq(0));
        assert_eq!(t.observe(T0, 1, Seq(0x8000_0000)), Observation::Unordered);
        assert_eq!(t.highest(), Some(Seq(0)));
    }

    #[test]
    fn give_up_drops_old_entries_only() {
        let mut t = SeqTracker::new(100);
        t.observe(Instant(0), 1, Seq(0));
        t.observe(Instant(10), 1, Seq(3));
        t.observe(Instant(20), 1, Seq(6));
        assert_eq!(t.missing_ranges(Instant(15), 8, 100), [(Seq(1), Seq(2))]);
        assert_eq!(t.give_up(Instant(15)), 2);
        assert_eq!(t.missing().map(|(s, _)| s.0).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn ranges_are_capped_in_count_and_length() {
        let mut t = SeqTracker::new(100);
        t.observe(T0, 1, Seq(0));
        t.observe(T0, 1, Seq(10));
        assert_eq!(
            t.missing_ranges(T0, 2, 4),
            [(Seq(1), Seq(4)), (Seq(5), Seq(8))]
        );
    }

    #[test]
    fn table_keeps_ruas_apart() {
        let mut tab = SeqTable::new(10);
        let id = |r, s| PayloadId {
            ruas: RuasId::new(r).unwrap(),
            epoch: 1,
            seq: Seq(s),
        };
        assert_eq!(tab.observe(T0, id(1, 5)), Observation::Started);
        assert_eq!(tab.observe(T0, id(2, 9)), Observation::Started);
        assert_eq!(tab.observe(T0, id(1, 7)), Observation::Ahead { gap: 1 });
        assert_eq!(tab.missing_len(), 1);
        assert_eq!(tab.iter().count(), 2);
    }

    /// The model works in plain i64 sequence space (no wrap, no serial
    /// arithmetic); the tracker sees the same numbers wrapped into u32 around a
    /// base near 2^32, so every run crosses the wrap.
    #[derive(Default)]
    struct Model {
        epoch: Option<u32>,
        seen: HashSet<i64>,
        highest: i64,
        missing: BTreeSet<i64>,
    }

    impl Model {
        fn observe(&mut self, epoch: u32, s: i64, max: usize) -> Observation {
            match self.epoch {
                None => {}
                Some(e) if epoch < e => return Observation::StaleEpoch,
                Some(e) if epoch == e => {
                    if s <= self.highest {
                        let filled = self.missing.remove(&s);
                        self.seen.insert(s);
                        return if filled {
                            Observation::Filled
                        } else {
                            Observation::Behind
                        };
                    }
                    let gap = s - self.highest - 1;
                    for m in self.highest + 1..s {
                        self.missing.insert(m);
                    }
                    while self.missing.len() > max {
                        self.missing.pop_first();
                    }
                    self.highest = s;
                    self.seen.insert(s);
                    return if gap == 0 {
                        Observation::InOrder
                    } else {
                        Observation::Ahead { gap: gap as u32 }
                    };
                }
                Some(_) => {
                    let abandoned = self.missing.len();
                    *self = Model::default();
                    self.epoch = Some(epoch);
                    self.highest = s;
                    self.seen.insert(s);
                    return Observation::NewEpoch { abandoned };
                }
            }
            self.epoch = Some(epoch);
            self.highest = s;
            self.seen.insert(s);
            Observation::Started
        }
    }

    proptest! {
        #[test]
        fn tracker_matches_model_across_wrap_and_epochs(
            base in (u32::MAX - 300)..=u32::MAX,
            max in 1usize..64,
            ops in proptest::collection::vec((0u32..3, 0i64..200), 1..200),
        ) {
            let mut t = SeqTracker::new(max);
            let mut m = Model::default();
            for (epoch_bump, s) in ops {
                // Epochs mostly stay, sometimes go up, sometimes a stale one appears.
                let epoch = match (m.epoch, epoch_bump) {
                    (Some(e), 0) | (Some(e), 1) => e,
                    (Some(e), _) if s % 7 == 0 => e.saturating_sub(1),
                    (Some(e), _) if s % 5 == 0 => e + 1,
                    (Some(e), _) => e,
                    (None, _) => 10,
                };
                let seq = Seq(base.wrapping_add(s as u32));
                let want = m.observe(epoch, s, max);
                let got = t.observe(T0, epoch, seq);
                prop_assert_eq!(got, want);
                let got_missing: Vec<u32> = t.missing().map(|(q, _)| q.0).collect();
                let want_missing: Vec<u32> =
                    m.missing.iter().map(|&x| base.wrapping_add(x as u32)).collect();
                prop_assert_eq!(got_missing, want_missing);
                prop_assert!(t.missing_len() <= max);
            }
        }
    }
}
