//! Many MABs: the whole mapping database of a QSD (or a RUAS with several MABs).
//!
//! One writer ([`Database`]) owns every [`Table`]; readers ([`DbReader`], `Clone +
//! Send + Sync`) look addresses up across all MABs — find the MAB, then the
//! micronet — without locks. The set of MABs is a directory published through its
//! own `ArcSwap`, changed only when a MAB is added, replaced (a QSD loading a
//! snapshot, or resyncing one MAB while the others keep serving) or removed; each
//! table publishes its own versions, so publishing one MAB costs nothing for the
//! others.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ivip_wire::addr::unit_of;
use ivip_wire::{Command, Family, Mab};

use super::error::DbError;
use super::mab::{Snap, Table, TableView, Version};
use super::node::{RawRun, batch};
use super::{Changes, Mapping};

struct Slot {
    mab: Mab,
    shared: Arc<ArcSwap<Version>>,
}

#[derive(Default)]
struct Directory {
    /// Per family, ascending by start; MABs never overlap.
    v4: Vec<Slot>,
    v6: Vec<Slot>,
}

impl Directory {
    fn slots(&self, f: Family) -> &[Slot] {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The slot whose MAB holds `unit`.
    fn find(&self, f: Family, unit: u64) -> Option<usize> {
        let s = self.slots(f);
        let i = s
            .partition_point(|x| x.mab.start() <= unit)
            .checked_sub(1)?;
        s[i].mab.contains(unit).then_some(i)
    }
}

/// The writer of a many-MAB database.
pub struct Database {
    tables: BTreeMap<Mab, Table>,
    dir: Arc<ArcSwap<Directory>>,
}

impl Default for Database {
    fn default() -> Self {
        Database::new()
    }
}

impl core::fmt::Debug for Database {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Database")
            .field("mabs", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Database {
    /// A database with no MAB.
    pub fn new() -> Database {
        Database {
            tables: BTreeMap::new(),
            dir: Arc::new(ArcSwap::from_pointee(Directory::default())),
        }
    }

    /// A lock-free reader.
    pub fn reader(&self) -> DbReader {
        DbReader {
            dir: self.dir.clone(),
        }
    }

    fn republish_dir(&mut self) {
        let mut d = Directory::default();
        for (mab, t) in &self.tables {
            let slot = Slot {
                mab: *mab,
                shared: t.shared().clone(),
            };
            match mab.family() {
                Family::V4 => d.v4.push(slot),
                Family::V6 => d.v6.push(slot),
            }
        }
        self.dir.store(Arc::new(d));
    }

    /// Add a MAB's table, or replace the table of the same MAB (readers switch to
    /// the new table at once; the others keep serving). The table is published
    /// first. Returns the table it replaced.
    ///
    /// # Errors
    /// [`DbError::MabOverlap`] when the MAB overlaps another MAB held.
    pub fn insert(&mut self, mut table: Table) -> Result<Option<Table>, DbError> {
        let mab = table.mab();
        if let Some(other) = self.tables.keys().find(|m| **m != mab && overlaps(m, &mab)) {
            return Err(DbError::MabOverlap {
                new: mab,
                existing: *other,
            });
        }
        table.publish();
        let old = self.tables.insert(mab, table);
        self.republish_dir();
        Ok(old)
    }

    /// Remove a MAB; readers stop finding it at once.
    pub fn remove(&mut self, mab: &Mab) -> Option<Table> {
        let t = self.tables.remove(mab)?;
        self.republish_dir();
        Some(t)
    }

    /// The table of a MAB.
    pub fn table(&self, mab: &Mab) -> Option<&Table> {
        self.tables.get(mab)
    }

    /// The table of a MAB, to apply to directly. Publish through it, or with
    /// [`Database::publish`].
    pub fn table_mut(&mut self, mab: &Mab) -> Option<&mut Table> {
        self.tables.get_mut(mab)
    }

    /// The MABs held, ascending.
    pub fn mabs(&self) -> impl Iterator<Item = &Mab> {
        self.tables.keys()
    }

    /// Apply a command set to one MAB (see [`Table::apply`]).
    ///
    /// # Errors
    /// [`DbError::NoSuchMab`], [`DbError::Apply`].
    pub fn apply(&mut self, mab: &Mab, cmds: &[Command]) -> Result<Changes, DbError> {
        let t = self.tables.get_mut(mab).ok_or(DbError::NoSuchMab(*mab))?;
        Ok(t.apply(cmds)?)
    }

    /// Apply a command set to one MAB and record its per-MAB sequence (see
    /// [`Table::apply_at`]).
    ///
    /// # Errors
    /// [`DbError::NoSuchMab`], [`DbError::Apply`].
    pub fn apply_at(
        &mut self,
        mab: &Mab,
        mab_seq: u64,
        cmds: &[Command],
    ) -> Result<Changes, DbError> {
        let t = self.tables.get_mut(mab).ok_or(DbError::NoSuchMab(*mab))?;
        Ok(t.apply_at(mab_seq, cmds)?)
    }

    /// Publish every table with unpublished changes.
    pub fn publish(&mut self) {
        for t in self.tables.values_mut() {
            t.publish();
        }
    }
}

fn overlaps(a: &Mab, b: &Mab) -> bool {
    a.family() == b.family() && u128::from(a.start()) < b.end() && u128::from(b.start()) < a.end()
}

/// A lock-free reader of the whole database: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct DbReader {
    dir: Arc<ArcSwap<Directory>>,
}

impl core::fmt::Debug for DbReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DbReader").finish_non_exhaustive()
    }
}

impl DbReader {
    /// The mapping of the unit holding `addr`: its micronet, the unassigned range
    /// around it, or [`Mapping::OutsideMab`] when no MAB held holds it.
    pub fn lookup(&self, addr: IpAddr) -> Mapping {
        let (f, u) = unit_of(addr);
        self.lookup_unit(f, u)
    }

    /// As [`DbReader::lookup`], by family and unit.
    pub fn lookup_unit(&self, family: Family, unit: u64) -> Mapping {
        let dir = self.dir.load();
        match dir.find(family, unit) {
            Some(i) => dir.slots(family)[i].shared.load().snap().lookup(unit),
            None => Mapping::OutsideMab,
        }
    }

    /// The MAB holding `addr`, if any.
    pub fn mab_of(&self, addr: IpAddr) -> Option<Mab> {
        let (f, u) = unit_of(addr);
        let dir = self.dir.load();
        dir.find(f, u).map(|i| dir.slots(f)[i].mab)
    }

    /// The current version of one MAB's table (range iteration, hashes, sequence).
    pub fn view(&self, mab: &Mab) -> Option<TableView> {
        let dir = self.dir.load();
        let s = dir.slots(mab.family());
        let i = s
            .binary_search_by_key(&mab.start(), |x| x.mab.start())
            .ok()?;
        (s[i].mab == *mab).then(|| TableView::from_shared(&s[i].shared))
    }

    /// The MABs held and the per-MAB sequence each currently reflects.
    pub fn mabs(&self) -> Vec<(Mab, u64)> {
        let dir = self.dir.load();
        dir.v4
            .iter()
            .chain(dir.v6.iter())
            .map(|s| (s.mab, s.shared.load().mab_seq()))
            .collect()
    }

    /// Look up many addresses at once, hiding memory latency by overlapping their
    /// descents; `out[i]` receives the answer for `addrs[i]`. Each MAB is answered
    /// from one version for the whole batch.
    pub fn lookup_batch(&self, addrs: &[IpAddr], out: &mut [Mapping]) {
        let n = addrs.len().min(out.len());
        let dir = self.dir.load();
        for family in [Family::V4, Family::V6] {
            let mut items: Vec<(usize, u64, usize)> = Vec::with_capacity(n);
            for (i, a) in addrs[..n].iter().enumerate() {
                let (f, u) = unit_of(*a);
                if f != family {
                    continue;
                }
                match dir.find(f, u) {
                    Some(s) => items.push((s, u, i)),
                    None => out[i] = Mapping::OutsideMab,
                }
            }
            answer(&dir, family, &mut items, out);
        }
    }

    /// As [`DbReader::lookup_batch`], for units of one family.
    pub fn lookup_batch_units(&self, family: Family, units: &[u64], out: &mut [Mapping]) {
        let n = units.len().min(out.len());
        let dir = self.dir.load();
        let mut items: Vec<(usize, u64, usize)> = Vec::with_capacity(n);
        for (i, &u) in units[..n].iter().enumerate() {
            match dir.find(family, u) {
                Some(s) => items.push((s, u, i)),
                None => out[i] = Mapping::OutsideMab,
            }
        }
        answer(&dir, family, &mut items, out);
    }
}

/// Answer `items` = (slot, unit, output index), all of `family` and inside their
/// slot's MAB.
fn answer(dir: &Directory, family: Family, items: &mut [(usize, u64, usize)], out: &mut [Mapping]) {
    if items.is_empty() {
        return;
    }
    // One version per MAB for the whole batch; `pos[k]` is item k's tree.
    let slots = dir.slots(family);
    let mut guards = Vec::new();
    let mut pos = vec![0usize; items.len()];
    let mut last = usize::MAX;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by_key(|&k| items[k].0);
    for &k in &order {
        if items[k].0 != last {
            last = items[k].0;
            guards.push(slots[last].shared.load());
        }
        pos[k] = guards.len() - 1;
    }
    let snaps: Vec<Snap<'_>> = guards.iter().map(|g| g.snap()).collect();
    // Each MAB's units in one batch, in the sorted order.
    let units: Vec<u64> = order.iter().map(|&k| items[k].1).collect();
    let mut raw = vec![RawRun::default(); items.len()];
    let mut at = 0;
    while at < order.len() {
        let p = pos[order[at]];
        let mut end = at;
        while end < order.len() && pos[order[end]] == p {
            end += 1;
        }
        match snaps[p] {
            Snap::V4(t) => batch(&t, &units[at..end], &mut raw[at..end]),
            Snap::V6(t, _) => batch(&t, &units[at..end], &mut raw[at..end]),
        }
        at = end;
    }
    for (j, &k) in order.iter().enumerate() {
        out[items[k].2] = snaps[pos[k]].decode_raw(raw[j]);
    }
}

impl TableView {
    fn from_shared(shared: &Arc<ArcSwap<Version>>) -> TableView {
        TableView::from_arc(shared.load_full())
    }
}
