//! One MAB's table: the writer ([`Table`]), its published versions, and the
//! lock-free readers ([`TableReader`], [`TableView`]).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ivip_wire::{Command, Etr, Family, Mab};

use super::dict::{Dict, DictRaw, DictRef};
use super::error::{ApplyError, BuildError, Reason};
use super::node::{GAP, NodePtr, RawRun, RunIter, TreeRef, Unit};
use super::stage::{Base, Stage, WVal, Window};
use super::tree::{Bag, Mem, Tree};
use super::{Changes, Mapping, Micronet};

// ---------------------------------------------------------------------------
// Read snapshots of a tree
// ---------------------------------------------------------------------------

/// A consistent, readable state of one MAB's table (working or published).
#[derive(Clone, Copy)]
pub(crate) enum Snap<'a> {
    V4(TreeRef<'a, u32>),
    V6(TreeRef<'a, u64>, DictRef<'a>),
}

impl<'a> Snap<'a> {
    #[inline]
    pub(crate) fn decode_raw(&self, r: RawRun) -> Mapping {
        self.decode(r)
    }

    #[inline]
    fn decode(&self, r: RawRun) -> Mapping {
        let len = r.len;
        if r.val == GAP {
            return Mapping::Unassigned {
                start: r.start,
                len,
            };
        }
        let etr = match self {
            Snap::V4(_) => Etr::V4(Ipv4Addr::from(r.val)),
            Snap::V6(_, d) => Etr::from_u128(Family::V6, d.get(r.val)),
        };
        Mapping::Micronet(Micronet {
            start: r.start,
            len,
            etr,
        })
    }

    fn wval(&self, val: u32) -> WVal {
        match (val, self) {
            (GAP, _) => WVal::Gap,
            (v, Snap::V4(_)) => WVal::Net(u128::from(v)),
            (v, Snap::V6(_, d)) => WVal::Net(d.get(v)),
        }
    }

    fn find(&self, u: u64) -> RawRun {
        match self {
            Snap::V4(t) => t.find(u),
            Snap::V6(t, _) => t.find(u),
        }
    }

    fn lo_hi(&self) -> (u64, u128) {
        match self {
            Snap::V4(t) => (t.lo, t.hi),
            Snap::V6(t, _) => (t.lo, t.hi),
        }
    }

    pub(crate) fn lookup(&self, unit: u64) -> Mapping {
        let (lo, hi) = self.lo_hi();
        if unit < lo || u128::from(unit) >= hi {
            return Mapping::OutsideMab;
        }
        self.decode(self.find(unit))
    }

    pub(crate) fn lookup_batch(&self, units: &[u64], out: &mut [Mapping]) {
        /// Look-ups per round: bounds the stack arrays below (kept small: they are
        /// initialised on every call).
        const ROUND: usize = 64;
        let n = units.len().min(out.len());
        let (lo, hi) = self.lo_hi();
        let mut inside = [0u64; ROUND];
        let mut at = [0usize; ROUND];
        let mut raw = [RawRun::default(); ROUND];
        for base in (0..n).step_by(ROUND) {
            // Units outside the MAB are answered at once; the rest go through the
            // batched descent together.
            let mut k = 0;
            for i in base..n.min(base + ROUND) {
                let u = units[i];
                if u < lo || u128::from(u) >= hi {
                    out[i] = Mapping::OutsideMab;
                } else {
                    inside[k] = u;
                    at[k] = i;
                    k += 1;
                }
            }
            match self {
                Snap::V4(t) => t.find_batch(&inside[..k], &mut raw[..k]),
                Snap::V6(t, d) => {
                    t.find_batch(&inside[..k], &mut raw[..k]);
                    for r in &raw[..k] {
                        if r.val != GAP {
                            d.prefetch(r.val);
                        }
                    }
                }
            }
            for j in 0..k {
                out[at[j]] = self.decode(raw[j]);
            }
        }
    }

    /// Runs from the one holding `from` (inside the MAB) onwards.
    pub(crate) fn runs_from(&self, from: u64) -> Runs<'a> {
        match *self {
            Snap::V4(t) => Runs::V4(t.runs_from(from)),
            Snap::V6(t, d) => Runs::V6(t.runs_from(from), d),
        }
    }

    pub(crate) fn range(&self, start: u64, len: u64) -> RangeIter<'a> {
        let (lo, hi) = self.lo_hi();
        let end = (u128::from(start) + u128::from(len)).min(hi);
        let from = start.max(lo);
        if u128::from(from) >= end || len == 0 {
            return RangeIter {
                runs: None,
                snap: *self,
                end,
            };
        }
        RangeIter {
            runs: Some(self.runs_from(from)),
            snap: *self,
            end,
        }
    }
}

/// Raw runs of either family, with the dictionary to decode IPv6 ones.
pub(crate) enum Runs<'a> {
    V4(RunIter<'a, u32>),
    V6(RunIter<'a, u64>, DictRef<'a>),
}

impl Runs<'_> {
    /// The next run: start, end, ETR as `u128` or `None` for unassigned.
    pub(crate) fn next_run(&mut self) -> Option<(u64, u128, Option<u128>)> {
        match self {
            Runs::V4(it) => it.next().map(|r| {
                (
                    r.start,
                    r.end(),
                    (r.val != GAP).then_some(u128::from(r.val)),
                )
            }),
            Runs::V6(it, d) => it
                .next()
                .map(|r| (r.start, r.end(), (r.val != GAP).then(|| d.get(r.val)))),
        }
    }
}

/// Iterator over the micronets and unassigned ranges meeting a range of units, in
/// order, each whole (not clipped to the range).
pub struct RangeIter<'a> {
    runs: Option<Runs<'a>>,
    snap: Snap<'a>,
    end: u128,
}

impl Iterator for RangeIter<'_> {
    type Item = Mapping;
    fn next(&mut self) -> Option<Mapping> {
        let (start, end, etr) = self.runs.as_mut()?.next_run()?;
        if u128::from(start) >= self.end {
            self.runs = None;
            return None;
        }
        let len = (end - u128::from(start)) as u64;
        Some(match etr {
            None => Mapping::Unassigned { start, len },
            Some(x) => Mapping::Micronet(Micronet {
                start,
                len,
                etr: Etr::from_u128(self.snap.family(), x),
            }),
        })
    }
}

impl Snap<'_> {
    pub(crate) fn family(&self) -> Family {
        match self {
            Snap::V4(_) => Family::V4,
            Snap::V6(..) => Family::V6,
        }
    }
}

/// A snap seen as the base of a staged set.
struct StageBase<'a> {
    snap: Snap<'a>,
    mab: Mab,
}

impl Base for StageBase<'_> {
    fn mab(&self) -> Mab {
        self.mab
    }

    fn find(&self, u: u64) -> (u64, u128, WVal) {
        let r = self.snap.find(u);
        (r.start, r.end(), self.snap.wval(r.val))
    }

    fn runs_between(&self, lo: u64, hi: u128, out: &mut Vec<(u64, WVal)>) {
        let mut it = self.snap.runs_from(lo);
        while let Some((s, _, v)) = it.next_run() {
            if u128::from(s) >= hi {
                break;
            }
            out.push((s, v.map_or(WVal::Gap, WVal::Net)));
        }
    }
}

// ---------------------------------------------------------------------------
// Published versions
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum VTree {
    V4(NodePtr, u8),
    V6(NodePtr, u8, DictRaw),
}

/// One published, immutable state of a table. Its nodes stay alive as long as it
/// does (node.rs invariant 2, through its bag).
pub(crate) struct Version {
    mab: Mab,
    mab_seq: u64,
    micronets: u64,
    runs: u64,
    tree: VTree,
    _bag: Arc<Bag>,
}

impl Version {
    pub(crate) fn snap(&self) -> Snap<'_> {
        let (lo, hi) = (self.mab.start(), self.mab.end());
        // SAFETY: this version's nodes are alive while it is (its bag, invariant 2)
        // and were never written after publication (invariant 1).
        unsafe {
            match self.tree {
                VTree::V4(r, h) => Snap::V4(TreeRef::new(r, h, lo, hi)),
                VTree::V6(r, h, d) => Snap::V6(TreeRef::new(r, h, lo, hi), d.view()),
            }
        }
    }

    pub(crate) fn mab(&self) -> Mab {
        self.mab
    }

    pub(crate) fn mab_seq(&self) -> u64 {
        self.mab_seq
    }

    pub(crate) fn micronets(&self) -> u64 {
        self.micronets
    }
}

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

enum State {
    V4(Tree<u32>),
    V6(Tree<u64>, Dict),
}

/// One MAB's mapping table, as held by its single writer: a RUAS master copy, or a
/// QSD's copy of one MAB.
///
/// [`Table::apply`] changes the working state; [`Table::publish`] makes it visible
/// to every [`TableReader`] at once. Reads on the `Table` itself see the working
/// state (what the writer has applied, published or not).
pub struct Table {
    mab: Mab,
    mab_seq: u64,
    micronets: u64,
    state: State,
    mem: Mem,
    shared: Arc<ArcSwap<Version>>,
    last_bag: Arc<Bag>,
    graveyard: VecDeque<Arc<Version>>,
    unpublished: bool,
    /// Buffers reused from set to set (no allocation per set in the common case).
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    windows: Vec<Window>,
    spare: Vec<Window>,
    runs: Vec<(u64, u32)>,
}

impl core::fmt::Debug for Table {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Table")
            .field("mab", &self.mab)
            .field("mab_seq", &self.mab_seq)
            .field("micronets", &self.micronets)
            .finish_non_exhaustive()
    }
}

impl Table {
    /// An empty table: every unit of `mab` unassigned, per-MAB sequence 0.
    pub fn new(mab: Mab) -> Table {
        Table::from_runs(mab, 0, core::iter::empty())
    }

    /// A table holding `micronets` at per-MAB sequence `mab_seq`, built in one pass
    /// (loading a RUAS's state, tests, benchmarks). The micronets must be ascending,
    /// disjoint, inside the MAB, of its family, and not map to 255.255.255.255.
    ///
    /// # Errors
    /// [`BuildError`] naming the first micronet that breaks a rule.
    pub fn from_micronets(
        mab: Mab,
        mab_seq: u64,
        micronets: impl IntoIterator<Item = Micronet>,
    ) -> Result<Table, BuildError> {
        let mut first_err: Option<BuildError> = None;
        let mut prev_end = u128::from(mab.start());
        let mut index = 0u64;
        let checked = micronets.into_iter().map_while(|m| {
            let reason = if m.len == 0 {
                Some(Reason::EmptyRange)
            } else if m.etr.family() != mab.family() {
                Some(Reason::WrongFamily)
            } else if m.etr == Etr::V4(Ipv4Addr::BROADCAST) {
                Some(Reason::ReservedEtr)
            } else if !mab.contains_range(m.start, m.len) {
                Some(Reason::OutsideMab)
            } else if u128::from(m.start) < prev_end {
                Some(Reason::Unsorted)
            } else {
                None
            };
            if let Some(reason) = reason {
                first_err = Some(BuildError {
                    index,
                    micronet: m,
                    reason,
                });
                return None;
            }
            index += 1;
            prev_end = u128::from(m.start) + u128::from(m.len);
            Some((m.start, m.len, m.etr.to_u128()))
        });
        let t = Table::from_runs(mab, mab_seq, checked);
        match first_err {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }

    /// A table from micronets, ascending and disjoint, each inside the MAB, none
    /// mapping to the reserved IPv4 ETR (callers check; `snapshot.rs` does). Gaps
    /// between them become unassigned runs.
    pub(crate) fn from_runs(
        mab: Mab,
        mab_seq: u64,
        micronets: impl Iterator<Item = (u64, u64, u128)>,
    ) -> Table {
        let mut mem = Mem::default();
        let (lo, hi) = (mab.start(), mab.end());
        let mut count = 0u64;
        let state = match mab.family() {
            Family::V4 => {
                // Streamed: a table of 10^8 micronets is not first copied.
                let runs = with_gaps(lo, hi, micronets, &mut count, |x| x as u32);
                State::V4(Tree::build(&mut mem, lo, hi, runs))
            }
            Family::V6 => {
                let mut dict = Dict::new(&mut mem);
                let runs: Vec<(u64, u32)> =
                    with_gaps(lo, hi, micronets, &mut count, |x| dict.intern(&mut mem, x))
                        .collect();
                State::V6(Tree::build(&mut mem, lo, hi, runs), dict)
            }
        };
        // Nothing was ever published: every block is fresh and none is retired.
        let retired = mem.publish();
        debug_assert!(retired.is_empty());
        let bag = Arc::new(Bag::default());
        let version = Version {
            mab,
            mab_seq,
            micronets: count,
            runs: match &state {
                State::V4(t) => t.runs(),
                State::V6(t, _) => t.runs(),
            },
            tree: vtree(&state),
            _bag: bag.clone(),
        };
        Table {
            mab,
            mab_seq,
            micronets: count,
            state,
            mem,
            shared: Arc::new(ArcSwap::from_pointee(version)),
            last_bag: bag,
            graveyard: VecDeque::new(),
            unpublished: false,
            scratch: Scratch::default(),
        }
    }

    /// The MAB.
    pub fn mab(&self) -> Mab {
        self.mab
    }

    /// The per-MAB sequence this table reflects: every set up to and including it.
    pub fn mab_seq(&self) -> u64 {
        self.mab_seq
    }

    /// Record the per-MAB sequence the working state reflects (published with the
    /// next [`Table::publish`]).
    pub fn set_mab_seq(&mut self, mab_seq: u64) {
        if mab_seq != self.mab_seq {
            self.mab_seq = mab_seq;
            self.unpublished = true;
        }
    }

    /// Number of micronets.
    pub fn micronets(&self) -> u64 {
        self.micronets
    }

    /// Bytes of node memory this table's working state holds (leaves, inner nodes,
    /// the IPv6 ETR dictionary and its writer-side index), excluding allocator
    /// overhead and versions still held by readers.
    pub fn memory_bytes(&self) -> usize {
        self.mem.live_bytes
            + match &self.state {
                State::V4(_) => 0,
                State::V6(_, d) => d.side_bytes(),
            }
    }

    /// Number of stored runs (micronets and unassigned ranges).
    pub fn runs(&self) -> u64 {
        match &self.state {
            State::V4(t) => t.runs(),
            State::V6(t, _) => t.runs(),
        }
    }

    pub(crate) fn snap(&self) -> Snap<'_> {
        match &self.state {
            State::V4(t) => Snap::V4(t.view()),
            State::V6(t, d) => Snap::V6(t.view(), d.view()),
        }
    }

    /// The mapping of one unit in the working state.
    pub fn lookup(&self, unit: u64) -> Mapping {
        self.snap().lookup(unit)
    }

    /// Look up many units at once (faster per unit than [`Table::lookup`] on large
    /// tables); `out[i]` receives the answer for `units[i]`.
    pub fn lookup_batch(&self, units: &[u64], out: &mut [Mapping]) {
        self.snap().lookup_batch(units, out)
    }

    /// The micronets and unassigned ranges meeting `[start, start + len)`, whole,
    /// in order.
    pub fn range(&self, start: u64, len: u64) -> RangeIter<'_> {
        self.snap().range(start, len)
    }

    /// The canonical SHA-256 of the working state at [`Table::mab_seq`] (spec:
    /// snapshot.md §4).
    pub fn hash(&self) -> [u8; 32] {
        super::snapshot::canonical_hash(&self.snap(), &self.mab, self.mab_seq, self.micronets)
    }

    /// Check a command set without applying it (a dry run): the changes it would
    /// make, or the first command that would fail and why.
    ///
    /// # Errors
    /// [`ApplyError`] naming the failing command.
    pub fn check(&self, cmds: &[Command]) -> Result<Changes, ApplyError> {
        let base = StageBase {
            snap: self.snap(),
            mab: self.mab,
        };
        let mut st = Stage::new(&base);
        stage_all(&mut st, cmds)?;
        Ok(st.changes())
    }

    /// Apply a command set in order and as one (spec: commands.md). On success
    /// returns the exact changes (commands.md §2.1); on failure nothing changed.
    /// The change is visible to readers after the next [`Table::publish`].
    ///
    /// # Errors
    /// [`ApplyError`] naming the failing command and why.
    pub fn apply(&mut self, cmds: &[Command]) -> Result<Changes, ApplyError> {
        let windows = core::mem::take(&mut self.scratch.windows);
        let spare = core::mem::take(&mut self.scratch.spare);
        let staged = {
            let base = StageBase {
                snap: self.snap(),
                mab: self.mab,
            };
            let mut st = Stage::with_spare(&base, windows, spare);
            match stage_all(&mut st, cmds) {
                Ok(()) => {
                    let ch = st.changes();
                    Ok((st.windows, st.spare, ch))
                }
                Err(e) => Err((st.windows, st.spare, e)),
            }
        };
        let (windows, spare, changes) = match staged {
            Ok(x) => x,
            Err((w, sp, e)) => {
                self.recycle(w, sp);
                return Err(e);
            }
        };
        for w in &windows {
            self.commit(w);
        }
        self.recycle(windows, spare);
        Ok(changes)
    }

    fn recycle(&mut self, mut windows: Vec<Window>, mut spare: Vec<Window>) {
        spare.append(&mut windows);
        // Keep a few windows' buffers; a huge set does not pin its memory.
        spare.truncate(8);
        for w in &mut spare {
            if w.runs.capacity() > 1024 {
                *w = Window::default();
            }
        }
        self.scratch.windows = windows;
        self.scratch.spare = spare;
    }

    /// Apply several command sets in order, each exactly as [`Table::apply`] would
    /// (in order, as one, nothing changed if it fails); `each` receives each set's
    /// result in turn. Faster than one `apply` per set when there are many: the
    /// pages the next sets will touch are fetched into the cache, all at once, before
    /// they are applied, so their memory latencies overlap.
    pub fn apply_many<'c>(
        &mut self,
        sets: impl IntoIterator<Item = &'c [Command]>,
        mut each: impl FnMut(Result<Changes, ApplyError>),
    ) {
        /// Sets fetched ahead at once.
        const AHEAD: usize = 32;
        let mut chunk: Vec<&[Command]> = Vec::with_capacity(AHEAD);
        let mut units: Vec<u64> = Vec::with_capacity(2 * AHEAD);
        let mut sets = sets.into_iter().peekable();
        while sets.peek().is_some() {
            chunk.clear();
            chunk.extend(sets.by_ref().take(AHEAD));
            units.clear();
            for c in chunk.iter().flat_map(|s| s.iter()).take(2 * AHEAD) {
                let (s, len) = c.range();
                if len > 0 && self.mab.contains(s) {
                    units.push(s);
                }
            }
            match self.snap() {
                Snap::V4(t) => super::node::warm(&t, &units),
                Snap::V6(t, _) => super::node::warm(&t, &units),
            }
            for set in &chunk {
                each(self.apply(set));
            }
        }
    }

    /// [`Table::apply`], then record `mab_seq` as the sequence the table reflects.
    /// The caller applies a MAB's sets in per-MAB order (payload.md §2).
    ///
    /// # Errors
    /// As [`Table::apply`]; on error the sequence is unchanged too.
    pub fn apply_at(&mut self, mab_seq: u64, cmds: &[Command]) -> Result<Changes, ApplyError> {
        let ch = self.apply(cmds)?;
        self.set_mab_seq(mab_seq);
        Ok(ch)
    }

    fn commit(&mut self, w: &Window) {
        if w.runs == w.base {
            return;
        }
        let nets = |r: &[(u64, WVal)]| r.iter().filter(|x| x.1 != WVal::Gap).count() as u64;
        self.micronets = self.micronets + nets(&w.runs) - nets(&w.base);
        self.unpublished = true;
        // Only values changed (set-etr, or a define over exactly one zero micronet or
        // gap): the fast path keeps every boundary.
        let same_bounds =
            w.runs.len() == w.base.len() && w.runs.iter().zip(&w.base).all(|(a, b)| a.0 == b.0);
        let mem = &mut self.mem;
        let mut runs = core::mem::take(&mut self.scratch.runs);
        runs.clear();
        match &mut self.state {
            State::V4(_) => runs.extend(w.runs.iter().map(|&(s, v)| match v {
                WVal::Gap => (s, GAP),
                WVal::Net(x) => (s, x as u32),
            })),
            State::V6(_, d) => {
                runs.extend(w.runs.iter().map(|&(s, v)| match v {
                    WVal::Gap => (s, GAP),
                    WVal::Net(x) => (s, d.intern(mem, x)),
                }));
                for &(_, v) in &w.base {
                    if let WVal::Net(x) = v {
                        d.release_etr(x);
                    }
                }
            }
        }
        match &mut self.state {
            State::V4(t) => {
                if !(same_bounds && t.set_vals(mem, &runs)) {
                    t.replace(mem, w.lo, w.hi, &runs);
                }
            }
            State::V6(t, _) => {
                if !(same_bounds && t.set_vals(mem, &runs)) {
                    t.replace(mem, w.lo, w.hi, &runs);
                }
            }
        }
        if runs.capacity() <= 4096 {
            self.scratch.runs = runs;
        }
    }

    /// Make the working state visible to every reader, atomically: a reader sees
    /// either everything applied before this call or nothing of it. Cheap when
    /// nothing changed. Copies made since the last publish become the shared pages.
    pub fn publish(&mut self) {
        if self.unpublished {
            self.publish_now();
        }
    }

    fn publish_now(&mut self) {
        let garbage = self.mem.publish();
        let bag = Arc::new(Bag::default());
        self.last_bag.close(garbage, bag.clone());
        self.last_bag = bag.clone();
        let tree = vtree(&self.state);
        let v = Arc::new(Version {
            mab: self.mab,
            mab_seq: self.mab_seq,
            micronets: self.micronets,
            runs: self.runs(),
            tree,
            _bag: bag,
        });
        let old = self.shared.swap(v);
        self.graveyard.push_back(old);
        // A version only the graveyard holds has no reader left: drop it here, on
        // the writer's thread, so readers never run the freeing.
        self.graveyard.retain(|v| Arc::strong_count(v) > 1);
        self.unpublished = false;
    }

    /// `true` when changes were applied since the last publish.
    pub fn has_unpublished(&self) -> bool {
        self.unpublished
    }

    /// A lock-free reader of this table's published versions.
    pub fn reader(&self) -> TableReader {
        TableReader {
            shared: self.shared.clone(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ArcSwap<Version>> {
        &self.shared
    }

    /// Versions still held by readers (for tests and metrics).
    pub fn versions_held(&self) -> usize {
        self.graveyard
            .iter()
            .filter(|v| Arc::strong_count(v) > 1)
            .count()
    }

    #[cfg(test)]
    pub(crate) fn check_structure(&self) {
        let runs = match &self.state {
            State::V4(t) => t.check(),
            State::V6(t, _) => t.check(),
        };
        let nets = self
            .range(self.mab.start(), self.mab.len())
            .filter(|m| matches!(m, Mapping::Micronet(_)))
            .count() as u64;
        assert_eq!(nets, self.micronets, "micronet count");
        assert!(runs >= nets);
        // Canonical: no two unassigned runs meet.
        let mut prev_gap = false;
        for m in self.range(self.mab.start(), self.mab.len()) {
            let gap = matches!(m, Mapping::Unassigned { .. });
            assert!(!(gap && prev_gap), "two unassigned runs meet");
            prev_gap = gap;
        }
    }
}

fn stage_all<T: Base>(st: &mut Stage<'_, T>, cmds: &[Command]) -> Result<(), ApplyError> {
    for (index, c) in cmds.iter().enumerate() {
        st.apply(c).map_err(|reason| ApplyError {
            index,
            command: *c,
            family: st.family(),
            reason,
        })?;
    }
    st.finish();
    Ok(())
}

/// Runs from micronets (start, len, ETR), with unassigned runs in the gaps.
fn with_gaps<'a>(
    lo: u64,
    hi: u128,
    micronets: impl Iterator<Item = (u64, u64, u128)> + 'a,
    count: &'a mut u64,
    mut val: impl FnMut(u128) -> u32 + 'a,
) -> impl Iterator<Item = (u64, u32)> + 'a {
    let mut cursor = u128::from(lo);
    let mut pending: Option<(u64, u32)> = None;
    let mut micronets = micronets.fuse();
    let mut done = false;
    core::iter::from_fn(move || {
        if let Some(p) = pending.take() {
            return Some(p);
        }
        if done {
            return None;
        }
        match micronets.next() {
            Some((s, len, x)) => {
                *count += 1;
                let net = (s, val(x));
                let gap = (u128::from(s) > cursor).then_some((cursor as u64, GAP));
                cursor = u128::from(s) + u128::from(len);
                match gap {
                    Some(g) => {
                        pending = Some(net);
                        Some(g)
                    }
                    None => Some(net),
                }
            }
            None => {
                done = true;
                (cursor < hi).then_some((cursor as u64, GAP))
            }
        }
    })
}

impl Drop for Table {
    fn drop(&mut self) {
        match &mut self.state {
            State::V4(t) => t.discard_all(&mut self.mem),
            State::V6(t, d) => {
                t.discard_all(&mut self.mem);
                d.discard_all(&mut self.mem);
            }
        }
        // Fresh blocks are freed; every other block is in the last published version
        // and is freed with it, when its last reader lets go.
        let rest = self.mem.publish();
        self.last_bag.close_last(rest);
        self.graveyard.clear();
    }
}

// ---------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------

/// A lock-free handle on a table's published versions: `Clone + Send + Sync`; any
/// number of threads read while the writer applies and publishes.
#[derive(Clone)]
pub struct TableReader {
    shared: Arc<ArcSwap<Version>>,
}

impl core::fmt::Debug for TableReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TableReader").finish_non_exhaustive()
    }
}

impl TableReader {
    /// The current version, for one query or one batch (STYLE: load once per query,
    /// do not hold it across loop iterations: a held version keeps its pages alive).
    pub fn load(&self) -> TableView {
        TableView {
            v: Hold::Guard(self.shared.load()),
        }
    }

    /// The current version as an owned handle that may move to another thread (for
    /// writing a snapshot while the writer goes on).
    pub fn load_owned(&self) -> TableView {
        TableView {
            v: Hold::Arc(self.shared.load_full()),
        }
    }
}

enum Hold {
    Guard(arc_swap::Guard<Arc<Version>>),
    Arc(Arc<Version>),
}

/// One published version of a table: every read answers from the same state.
pub struct TableView {
    v: Hold,
}

impl core::fmt::Debug for TableView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TableView")
            .field("mab", &self.mab())
            .field("mab_seq", &self.mab_seq())
            .finish_non_exhaustive()
    }
}

impl TableView {
    pub(crate) fn from_arc(v: Arc<Version>) -> TableView {
        TableView { v: Hold::Arc(v) }
    }

    pub(crate) fn version(&self) -> &Version {
        match &self.v {
            Hold::Guard(g) => g,
            Hold::Arc(a) => a,
        }
    }

    /// The MAB.
    pub fn mab(&self) -> Mab {
        self.version().mab
    }

    /// The per-MAB sequence this version reflects.
    pub fn mab_seq(&self) -> u64 {
        self.version().mab_seq
    }

    /// Number of micronets.
    pub fn micronets(&self) -> u64 {
        self.version().micronets
    }

    /// Number of stored runs (micronets and unassigned ranges).
    pub fn runs(&self) -> u64 {
        self.version().runs
    }

    /// The mapping of one unit.
    pub fn lookup(&self, unit: u64) -> Mapping {
        self.version().snap().lookup(unit)
    }

    /// Look up many units at once; `out[i]` receives the answer for `units[i]`.
    pub fn lookup_batch(&self, units: &[u64], out: &mut [Mapping]) {
        self.version().snap().lookup_batch(units, out)
    }

    /// The micronets and unassigned ranges meeting `[start, start + len)`, whole,
    /// in order.
    pub fn range(&self, start: u64, len: u64) -> RangeIter<'_> {
        self.version().snap().range(start, len)
    }

    /// The canonical SHA-256 of this version (spec: snapshot.md §4).
    pub fn hash(&self) -> [u8; 32] {
        let v = self.version();
        super::snapshot::canonical_hash(&v.snap(), &v.mab, v.mab_seq, v.micronets)
    }
}

fn vtree(state: &State) -> VTree {
    match state {
        State::V4(t) => {
            let (r, h) = t.raw();
            VTree::V4(r, h)
        }
        State::V6(t, d) => {
            let (r, h) = t.raw();
            VTree::V6(r, h, d.raw())
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<TableReader>();
    is::<Table>();
    let _ = |_: &TableView| ();
    let _: fn(u64) -> u32 = <u32 as Unit>::from_u64;
}
