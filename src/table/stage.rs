//! Applying a command set "in order, but as if at once" (seed s3.7, s4.3; spec:
//! commands.md §2): the commands run against *windows*, private copies of the runs
//! they touch, over a base table that is only read. If a command fails the windows
//! are dropped and the table is untouched; if all succeed the caller writes each
//! window back with one range replacement. The same code is the dry run
//! (`Table::check`).
//!
//! A window covers `[lo, hi)` where `lo` and `hi` are run boundaries of the base, so
//! windows are independent patches; windows that would touch are merged. Each window
//! also keeps a copy of the base runs it covers, from which the exact changes are
//! computed (commands.md §2.1).

use ivip_wire::{Command, Etr, Family, Mab};

use super::error::Reason;
use super::{Change, Changes};

/// A run's value while a set is staged: unassigned, or a micronet with its ETR (as
/// `Etr::to_u128`; zero means drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WVal {
    Gap,
    Net(u128),
}

/// What a staged set reads: the table as it was before the set.
pub(crate) trait Base {
    fn mab(&self) -> Mab;
    /// The run holding `u` (inside the MAB): start, end, value.
    fn find(&self, u: u64) -> (u64, u128, WVal);
    /// Append the runs starting in `[lo, hi)` (both run boundaries).
    fn runs_between(&self, lo: u64, hi: u128, out: &mut Vec<(u64, WVal)>);
}

/// A private copy of the runs tiling `[lo, hi)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    pub(crate) lo: u64,
    pub(crate) hi: u128,
    /// The runs as the set leaves them (ascending; the first starts at `lo`).
    pub(crate) runs: Vec<(u64, WVal)>,
    /// The runs as they were.
    pub(crate) base: Vec<(u64, WVal)>,
}

impl Window {
    fn end(&self, i: usize) -> u128 {
        self.runs.get(i + 1).map_or(self.hi, |r| u128::from(r.0))
    }

    fn base_end(&self, i: usize) -> u128 {
        self.base.get(i + 1).map_or(self.hi, |r| u128::from(r.0))
    }

    /// The index of the run holding `u` (`lo <= u < hi`).
    fn index(&self, u: u64) -> usize {
        self.runs.partition_point(|r| r.0 <= u).max(1) - 1
    }
}

/// A command set being staged over a base.
pub(crate) struct Stage<'b, T> {
    base: &'b T,
    mab: Mab,
    pub(crate) windows: Vec<Window>,
    /// Windows to reuse (their vectors keep their capacity between sets).
    pub(crate) spare: Vec<Window>,
}

impl<'b, T: Base> Stage<'b, T> {
    pub(crate) fn new(base: &'b T) -> Stage<'b, T> {
        Stage::with_spare(base, Vec::new(), Vec::new())
    }

    /// A stage reusing `windows` (empty) and `spare` windows from earlier sets.
    pub(crate) fn with_spare(
        base: &'b T,
        mut windows: Vec<Window>,
        spare: Vec<Window>,
    ) -> Stage<'b, T> {
        windows.clear();
        Stage {
            base,
            mab: base.mab(),
            windows,
            spare,
        }
    }

    fn new_window(&mut self, lo: u64, hi: u128) -> Window {
        let mut w = self.spare.pop().unwrap_or_default();
        w.lo = lo;
        w.hi = hi;
        w.runs.clear();
        w.base.clear();
        w
    }

    /// Make sure one window covers every run meeting `[a, b)`; returns its index.
    fn ensure(&mut self, a: u64, b: u128) -> usize {
        let pos = self.windows.partition_point(|w| w.hi <= u128::from(a));
        if let Some(w) = self.windows.get(pos)
            && w.lo <= a
            && w.hi >= b
        {
            return pos;
        }
        let (s0, e0, v0) = self.base.find(a);
        // Most commands name one run: one descent is enough.
        let single = (b <= e0).then_some(v0);
        let (mut lo, mut hi) = (s0, e0);
        if single.is_none() {
            hi = self.base.find((b - 1) as u64).1;
        }
        // Windows that overlap or touch [lo, hi] are merged into one.
        let first = self.windows.partition_point(|w| w.hi < u128::from(lo));
        let mut last = first;
        while last < self.windows.len() && u128::from(self.windows[last].lo) <= hi {
            last += 1;
        }
        if first == last
            && let Some(v) = single
        {
            let mut w = self.new_window(lo, hi);
            w.runs.push((lo, v));
            w.base.push((lo, v));
            self.windows.insert(first, w);
            return first;
        }
        if first < last {
            lo = lo.min(self.windows[first].lo);
            hi = hi.max(self.windows[last - 1].hi);
        }
        let mut merged = self.new_window(lo, hi);
        let mut runs = core::mem::take(&mut merged.runs);
        let mut base = core::mem::take(&mut merged.base);
        let mut cursor = u128::from(lo);
        let fill = |from: u128, to: u128, runs: &mut Vec<_>, base: &mut Vec<_>| {
            if from < to {
                let at = base.len();
                self.base.runs_between(from as u64, to, base);
                runs.extend_from_slice(&base[at..]);
            }
        };
        for w in self.windows.drain(first..last) {
            fill(cursor, u128::from(w.lo), &mut runs, &mut base);
            runs.extend_from_slice(&w.runs);
            base.extend_from_slice(&w.base);
            cursor = w.hi;
            self.spare.push(w);
        }
        fill(cursor, hi, &mut runs, &mut base);
        merged.runs = runs;
        merged.base = base;
        self.windows.insert(first, merged);
        first
    }

    /// Apply one command to the staged state.
    pub(crate) fn apply(&mut self, cmd: &Command) -> Result<(), Reason> {
        let family = self.mab.family();
        let (start, len) = cmd.range();
        if let Some(etr) = cmd.etr() {
            if etr.family() != family {
                return Err(Reason::WrongFamily);
            }
            if etr == Etr::V4(std::net::Ipv4Addr::BROADCAST) {
                return Err(Reason::ReservedEtr);
            }
        }
        if len == 0 {
            return Err(Reason::EmptyRange);
        }
        if let Command::Split { at, .. } = *cmd
            && (at == 0 || at >= len)
        {
            return Err(Reason::BadSplitOffset);
        }
        if !self.mab.contains_range(start, len) {
            return Err(Reason::OutsideMab);
        }
        let end = u128::from(start) + u128::from(len);
        let wi = self.ensure(start, end);
        let w = &mut self.windows[wi];
        let i = w.index(start);
        let etr_of = |x: u128| Etr::from_u128(family, x);
        // The micronet that starts exactly at `start` and is exactly `len` long.
        let exact = |w: &Window| -> Result<u128, Reason> {
            match w.runs[i] {
                (s, WVal::Net(x)) if s == start => {
                    let actual = (w.end(i) - u128::from(start)) as u64;
                    if actual != len {
                        return Err(Reason::LengthMismatch { actual });
                    }
                    Ok(x)
                }
                _ => Err(Reason::NoSuchMicronet),
            }
        };
        match *cmd {
            Command::SetEtr { etr, .. } => {
                exact(w)?;
                w.runs[i].1 = WVal::Net(etr.to_u128());
            }
            Command::Delete { .. } => {
                exact(w)?;
                w.runs[i].1 = WVal::Gap;
            }
            Command::Split { at, .. } => {
                let x = exact(w)?;
                if x != 0 {
                    return Err(Reason::NotZero {
                        start,
                        etr: etr_of(x),
                    });
                }
                w.runs.insert(i + 1, (start + at, WVal::Net(0)));
            }
            Command::Join { .. } => {
                if w.runs[i].0 != start || w.runs[i].1 == WVal::Gap {
                    return Err(Reason::NoSuchMicronet);
                }
                let mut j = i;
                loop {
                    match w.runs[j] {
                        (s, WVal::Gap) => return Err(Reason::JoinGap { start: s }),
                        (s, WVal::Net(x)) if x != 0 => {
                            return Err(Reason::NotZero {
                                start: s,
                                etr: etr_of(x),
                            });
                        }
                        _ => {}
                    }
                    let e = w.end(j);
                    if e == end {
                        break;
                    }
                    if e > end {
                        let s = w.runs[j].0;
                        return Err(Reason::JoinEndsInside {
                            start: s,
                            len: (e - u128::from(s)) as u64,
                        });
                    }
                    j += 1;
                }
                if j == i {
                    return Err(Reason::JoinSingle);
                }
                w.runs.drain(i + 1..=j);
            }
            Command::Define { etr, .. } => {
                let mut k = i;
                loop {
                    if let (s, WVal::Net(x)) = w.runs[k]
                        && x != 0
                    {
                        return Err(Reason::Overlap {
                            start: s,
                            len: (w.end(k) - u128::from(s)) as u64,
                            etr: etr_of(x),
                        });
                    }
                    if w.end(k) >= end {
                        break;
                    }
                    k += 1;
                }
                let right_end = w.end(k);
                let right_val = w.runs[k].1;
                let mut repl = Vec::with_capacity(3);
                if w.runs[i].0 < start {
                    repl.push(w.runs[i]);
                }
                repl.push((start, WVal::Net(etr.to_u128())));
                if right_end > end {
                    repl.push((end as u64, right_val));
                }
                w.runs.splice(i..=k, repl);
            }
        }
        Ok(())
    }

    /// After the last command: merge unassigned runs that meet, inside windows and
    /// across their edges (a window grows to take in an unassigned run next to it).
    pub(crate) fn finish(&mut self) {
        let (mab_lo, mab_hi) = (self.mab.start(), self.mab.end());
        // Each round either merges windows or grows one by a base run that ends the
        // growth on that side; the loop ends within 2 rounds per window.
        let mut rounds = 0usize;
        'grow: loop {
            rounds += 1;
            debug_assert!(rounds <= 4 * self.windows.len() + 4);
            for wi in 0..self.windows.len() {
                let (lo, hi) = (self.windows[wi].lo, self.windows[wi].hi);
                let w = &self.windows[wi];
                let first_gap = w.runs.first().map(|r| r.1) == Some(WVal::Gap);
                let last_gap = w.runs.last().map(|r| r.1) == Some(WVal::Gap);
                if first_gap && lo > mab_lo && self.base.find(lo - 1).2 == WVal::Gap {
                    // Only grow if the gap is not already inside this window.
                    self.ensure(lo - 1, u128::from(lo));
                    continue 'grow;
                }
                if last_gap && hi < mab_hi && self.base.find(hi as u64).2 == WVal::Gap {
                    self.ensure(hi as u64, hi + 1);
                    continue 'grow;
                }
            }
            break;
        }
        for w in &mut self.windows {
            w.runs
                .dedup_by(|next, prev| next.1 == WVal::Gap && prev.1 == WVal::Gap);
        }
    }

    /// The exact changes (commands.md §2.1): every micronet of the final state that
    /// did not exist with the same bounds and ETR before, and the ranges that were in
    /// a micronet and are now unassigned; ascending, unassigned ranges coalesced.
    pub(crate) fn changes(&self) -> Changes {
        let family = self.mab.family();
        let mut out: Changes = Vec::new();
        for w in &self.windows {
            let mut bi = 0usize;
            for (ri, &(s, v)) in w.runs.iter().enumerate() {
                let e = w.end(ri);
                match v {
                    WVal::Net(x) => {
                        while bi < w.base.len() && w.base[bi].0 < s {
                            bi += 1;
                        }
                        let same = bi < w.base.len()
                            && w.base[bi].0 == s
                            && w.base[bi].1 == v
                            && w.base_end(bi) == e;
                        if !same {
                            out.push(Change {
                                start: s,
                                len: (e - u128::from(s)) as u64,
                                etr: Some(Etr::from_u128(family, x)),
                            });
                        }
                    }
                    WVal::Gap => {
                        let mut j = w.base.partition_point(|r| r.0 <= s).max(1) - 1;
                        while j < w.base.len() && u128::from(w.base[j].0) < e {
                            if let WVal::Net(_) = w.base[j].1 {
                                let cs = w.base[j].0.max(s);
                                let ce = w.base_end(j).min(e);
                                push_unassigned(&mut out, cs, ce);
                            }
                            j += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// The family of the staged MAB.
    pub(crate) fn family(&self) -> Family {
        self.mab.family()
    }
}

fn push_unassigned(out: &mut Changes, s: u64, e: u128) {
    if let Some(last) = out.last_mut()
        && last.etr.is_none()
        && u128::from(last.start) + u128::from(last.len) == u128::from(s)
    {
        last.len = (e - u128::from(last.start)) as u64;
        return;
    }
    out.push(Change {
        start: s,
        len: (e - u128::from(s)) as u64,
        etr: None,
    });
}
