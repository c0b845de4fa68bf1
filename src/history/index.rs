//! The history index: which frames touch which addresses, and when.
//!
//! spec: history.md §4. What it is: the derivation of index entries from records
//! ([`entries_of`]), the in-memory index of the segment being written
//! ([`ActiveIndex`]: sorted chunks plus a small unsorted tail), and sealed index
//! files ([`IndexRun`]: header and meta in memory, entry blocks read on demand and
//! checked by CRC). What it is not: the search (see `query`), which asks both kinds
//! through [`RangeSource`].
//!
//! A range of `len` units is filed under its length class `floor(log16(len))`, so
//! the ranges that hold unit `u` are found by one key-range look-up per class
//! present: starts in `[u - 16^(c+1) + 1, u]` (history.md §4.2).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use ivip_wire::Mab;
use ivip_wire::history::{
    self, EntryKind, HistoryRecord, INDEX_HEADER_LEN, IndexEntry, IndexHeader, IndexMeta, Item,
    Location, MabEntry, SegmentSummary, class_bit, record_contexts,
};

use super::error::StoreError;
use super::segment::sync_dir;

/// Directory of the index files inside a history directory.
pub const INDEX_DIR: &str = "index";

/// Index blocks read from files since the process started (all stores), for
/// benchmarks and metrics: a search's cost in reads.
pub static BLOCKS_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Unsorted entries kept before they are sorted into a chunk.
const TAIL_ENTRIES_MAX: usize = 4096;

/// The path of the index file covering segments `first..=last`.
pub fn run_path(dir: &Path, first: u32, last: u32) -> PathBuf {
    dir.join(INDEX_DIR)
        .join(format!("{first:020}-{last:020}.hidx"))
}

/// The index files present: `(first, last)` ascending.
///
/// # Errors
/// [`StoreError::Io`].
pub fn list_runs(dir: &Path) -> Result<Vec<(u32, u32)>, StoreError> {
    let idir = dir.join(INDEX_DIR);
    let mut v = Vec::new();
    for e in std::fs::read_dir(&idir).map_err(StoreError::io(&idir, "cannot list"))? {
        let e = e.map_err(StoreError::io(&idir, "cannot list"))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".hidx")
            && let Some((a, b)) = stem.split_once('-')
            && a.len() == 20
            && b.len() == 20
            && let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
        {
            v.push((a, b));
        }
    }
    v.sort_unstable();
    Ok(v)
}

// ---------------------------------------------------------------------------
// Entries of a record
// ---------------------------------------------------------------------------

/// An index entry with its MAB resolved: what a look-up returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The MAB.
    pub mab: Mab,
    /// What the entry points at.
    pub kind: EntryKind,
    /// First unit.
    pub start: u64,
    /// Length.
    pub len: u64,
    /// Time, µs since the Unix epoch.
    pub time_us: u64,
    /// The frame.
    pub at: Location,
}

impl Hit {
    /// `true` when the entry's range holds `unit`.
    pub fn contains(&self, unit: u64) -> bool {
        unit >= self.start && u128::from(unit) < u128::from(self.start) + u128::from(self.len)
    }
}

/// The entries a record adds to the index (history.md §4.2), with MABs unresolved:
/// `(mab, kind, start, len, time_us)`. Markers have `start = time_us, len = 1`.
/// Returns the record's time ([`record_time`]).
pub fn entries_of(
    rec: &HistoryRecord,
    mut out: impl FnMut(Mab, EntryKind, u64, u64, u64),
) -> Option<u64> {
    match rec {
        HistoryRecord::Payload(p) => {
            let payload = p.checked().ok()?;
            let time = payload.timestamp_us();
            let ctx = record_contexts(&payload);
            for it in &p.items {
                match it {
                    Item::Set(s) => {
                        let Some((mab, _)) =
                            ctx.get(usize::from(s.record_index)).and_then(|c| c.set())
                        else {
                            continue;
                        };
                        if s.ranges.is_empty() {
                            out(mab, EntryKind::NoEffect, time, 1, time);
                        }
                        for r in &s.ranges {
                            let kind = if r.etr.is_some() {
                                EntryKind::ChangeMapped
                            } else {
                                EntryKind::ChangeUnassigned
                            };
                            out(mab, kind, r.start, r.len, time);
                        }
                    }
                    Item::Snapshot(s) => {
                        if let Some(history::RecordContext::Snapshot(a)) =
                            ctx.get(usize::from(s.record_index))
                        {
                            out(a.mab, EntryKind::Snapshot, time, 1, time);
                        }
                    }
                }
            }
            Some(time)
        }
        HistoryRecord::Baseline(b) => {
            if b.part == 0 {
                out(
                    b.mab,
                    EntryKind::BaselineStart,
                    b.created_us,
                    1,
                    b.created_us,
                );
            }
            for &(s, l, _) in &b.micronets {
                out(b.mab, EntryKind::Baseline, s, l, b.created_us);
            }
            Some(b.created_us)
        }
        HistoryRecord::Gap(history::GapRecord::MabSets { mab, recv_us, .. }) => {
            out(*mab, EntryKind::Gap, *recv_us, 1, *recv_us);
            Some(*recv_us)
        }
        HistoryRecord::Gap(g @ history::GapRecord::Payloads { .. }) => Some(g.recv_us()),
    }
}

/// The time a record is filed under: the payload's timestamp, the baseline's
/// creation time, or the gap's recording time.
pub fn record_time(rec: &HistoryRecord) -> Option<u64> {
    match rec {
        HistoryRecord::Payload(p) => p.checked().ok().map(|p| p.timestamp_us()),
        HistoryRecord::Baseline(b) => Some(b.created_us),
        HistoryRecord::Gap(g) => Some(g.recv_us()),
    }
}

/// Entries of frames appended but not yet durable, waiting for their commit.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// The entries.
    pub entries: Vec<Hit>,
    /// Frames.
    pub frames: u32,
    /// Smallest and largest frame time.
    pub times: Option<(u64, u64)>,
}

impl Pending {
    /// Collect the entries of `rec`, to be recorded at `at`.
    pub fn add(&mut self, rec: &HistoryRecord, at: Location) {
        self.frames += 1;
        let entries = &mut self.entries;
        let t = entries_of(rec, |mab, kind, start, len, time_us| {
            entries.push(Hit {
                mab,
                kind,
                start,
                len,
                time_us,
                at,
            });
        });
        if let Some(t) = t {
            self.times = Some(self.times.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.frames = 0;
        self.times = None;
    }
}

/// Something that answers key-range look-ups: the active index or an index file.
pub trait RangeSource {
    /// Bitmask of classes present for `mab` ([`class_bit`]); 0 when none.
    fn classes(&self, mab: &Mab) -> u32;

    /// Every entry of `mab` and `class` whose start lies in `lo..=hi`, appended to
    /// `out`.
    ///
    /// # Errors
    /// A damaged index block: its description.
    fn lookup(
        &self,
        mab: &Mab,
        class: u8,
        lo: u64,
        hi: u64,
        out: &mut Vec<Hit>,
    ) -> Result<(), String>;

    /// Every MAB it has entries for.
    fn mabs(&self) -> Vec<Mab>;
}

// ---------------------------------------------------------------------------
// The active segment's index, in memory
// ---------------------------------------------------------------------------

/// The index of the segment being written: committed entries only.
#[derive(Debug, Clone, Default)]
pub struct ActiveIndex {
    mabs: Vec<Mab>,
    ids: HashMap<Mab, u16>,
    classes: Vec<u32>,
    chunks: Vec<Vec<IndexEntry>>,
    tail: Vec<IndexEntry>,
    summary: SegmentSummary,
    entries: u64,
}

impl ActiveIndex {
    /// An empty index for segment `segment`.
    pub fn new(segment: u32) -> ActiveIndex {
        ActiveIndex {
            summary: SegmentSummary {
                segment,
                time_min_us: u64::MAX,
                time_max_us: 0,
                frames: 0,
                entries: 0,
            },
            ..ActiveIndex::default()
        }
    }

    /// The segment it indexes.
    pub fn segment(&self) -> u32 {
        self.summary.segment
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// `true` when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Frames counted.
    pub fn frames(&self) -> u32 {
        self.summary.frames
    }

    /// The time range of its frames, if any.
    pub fn time_range(&self) -> Option<(u64, u64)> {
        (self.summary.time_min_us <= self.summary.time_max_us)
            .then_some((self.summary.time_min_us, self.summary.time_max_us))
    }

    /// The segment summary so far.
    pub fn summary(&self) -> SegmentSummary {
        self.summary
    }

    /// Add the entries of `rec`, recorded at `at`.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] past 65,536 MABs in one segment.
    pub fn add(&mut self, rec: &HistoryRecord, at: Location) -> Result<(), StoreError> {
        let mut pending = Pending::default();
        pending.add(rec, at);
        self.add_pending(&pending)
    }

    /// Add entries collected while their frames were not yet durable.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] past 65,536 MABs in one segment.
    pub fn add_pending(&mut self, p: &Pending) -> Result<(), StoreError> {
        self.summary.frames += p.frames;
        if let Some((lo, hi)) = p.times {
            self.summary.time_min_us = self.summary.time_min_us.min(lo);
            self.summary.time_max_us = self.summary.time_max_us.max(hi);
        }
        for e in &p.entries {
            let id = self.mab_id(e.mab)?;
            let class = e.kind.class(e.len);
            self.classes[usize::from(id)] |= class_bit(class);
            self.summary.entries += 1;
            self.entries += 1;
            self.tail.push(IndexEntry {
                mab: id,
                class,
                kind: e.kind,
                start: e.start,
                len: e.len,
                time_us: e.time_us,
                at: e.at,
            });
            if self.tail.len() >= TAIL_ENTRIES_MAX {
                self.flush_tail();
            }
        }
        Ok(())
    }

    fn mab_id(&mut self, mab: Mab) -> Result<u16, StoreError> {
        if let Some(&id) = self.ids.get(&mab) {
            return Ok(id);
        }
        let id = u16::try_from(self.mabs.len()).map_err(|_| StoreError::TooLarge {
            what: "MAB table of one segment",
            bytes: self.mabs.len() as u64,
        })?;
        self.mabs.push(mab);
        self.classes.push(0);
        self.ids.insert(mab, id);
        Ok(id)
    }

    fn flush_tail(&mut self) {
        let mut t = std::mem::take(&mut self.tail);
        t.sort_unstable_by_key(IndexEntry::key);
        self.chunks.push(t);
        // Keep O(log n) chunks: merge while the older chunk is not much bigger.
        while self.chunks.len() >= 2 {
            let n = self.chunks.len();
            if self.chunks[n - 2].len() >= 2 * self.chunks[n - 1].len() {
                break;
            }
            let b = self.chunks.pop().unwrap_or_default();
            let a = self.chunks.pop().unwrap_or_default();
            self.chunks.push(merge_sorted(a, b));
        }
    }

    /// Everything, ready for an index file: the MAB table in ascending order, the
    /// entries re-numbered and sorted with exact duplicates removed, the summary.
    pub fn sealed(&self) -> (Vec<MabEntry>, Vec<IndexEntry>, SegmentSummary) {
        let mut order: Vec<u16> = (0..self.mabs.len() as u16).collect();
        order.sort_by_key(|&i| self.mabs[usize::from(i)]);
        let mut remap = vec![0u16; self.mabs.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[usize::from(old)] = new as u16;
        }
        let mabs = order
            .iter()
            .map(|&i| MabEntry {
                mab: self.mabs[usize::from(i)],
                classes: self.classes[usize::from(i)],
            })
            .collect();
        let mut all: Vec<IndexEntry> = Vec::with_capacity(self.entries as usize);
        for c in &self.chunks {
            all.extend(c.iter().map(|e| IndexEntry {
                mab: remap[usize::from(e.mab)],
                ..*e
            }));
        }
        all.extend(self.tail.iter().map(|e| IndexEntry {
            mab: remap[usize::from(e.mab)],
            ..*e
        }));
        all.sort_unstable_by_key(IndexEntry::key);
        all.dedup_by_key(|e| e.key());
        let mut summary = self.summary;
        summary.entries = all.len() as u32;
        (mabs, all, summary)
    }
}

fn merge_sorted(a: Vec<IndexEntry>, b: Vec<IndexEntry>) -> Vec<IndexEntry> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].key() <= b[j].key() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl RangeSource for ActiveIndex {
    fn classes(&self, mab: &Mab) -> u32 {
        self.ids
            .get(mab)
            .map_or(0, |&id| self.classes[usize::from(id)])
    }

    fn lookup(
        &self,
        mab: &Mab,
        class: u8,
        lo: u64,
        hi: u64,
        out: &mut Vec<Hit>,
    ) -> Result<(), String> {
        let Some(&id) = self.ids.get(mab) else {
            return Ok(());
        };
        let hit = |e: &IndexEntry| Hit {
            mab: *mab,
            kind: e.kind,
            start: e.start,
            len: e.len,
            time_us: e.time_us,
            at: e.at,
        };
        for c in &self.chunks {
            let from = c.partition_point(|e| (e.mab, e.class, e.start) < (id, class, lo));
            for e in &c[from..] {
                if (e.mab, e.class, e.start) > (id, class, hi) {
                    break;
                }
                out.push(hit(e));
            }
        }
        for e in &self.tail {
            if e.mab == id && e.class == class && e.start >= lo && e.start <= hi {
                out.push(hit(e));
            }
        }
        Ok(())
    }

    fn mabs(&self) -> Vec<Mab> {
        self.mabs.clone()
    }
}

// ---------------------------------------------------------------------------
// Index files
// ---------------------------------------------------------------------------

/// A sealed index file: header and meta in memory, blocks read on demand.
#[derive(Debug)]
pub struct IndexRun {
    path: PathBuf,
    file: File,
    header: IndexHeader,
    meta: IndexMeta,
}

impl IndexRun {
    /// Open an index file and check its header and meta section (not its blocks).
    ///
    /// # Errors
    /// A description of what is wrong (I/O or format), for the operator.
    pub fn open(path: &Path) -> Result<IndexRun, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut hb = [0u8; INDEX_HEADER_LEN];
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        let header = IndexHeader::parse(&hb).map_err(|e| format!("header: {e}"))?;
        let mut mb = vec![0u8; header.meta_len as usize];
        file.read_exact_at(&mut mb, INDEX_HEADER_LEN as u64)
            .map_err(|e| format!("cannot read the meta section: {e}"))?;
        let meta = IndexMeta::parse(&header, &mb).map_err(|e| format!("meta section: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot stat: {e}"))?
            .len();
        if len != header.file_len() {
            return Err(format!(
                "file is {len} bytes, its header says {}",
                header.file_len()
            ));
        }
        Ok(IndexRun {
            path: path.to_path_buf(),
            file,
            header,
            meta,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// First segment covered.
    pub fn first_segment(&self) -> u32 {
        self.header.first_segment
    }

    /// Last segment covered.
    pub fn last_segment(&self) -> u32 {
        self.header.last_segment
    }

    /// Entries in the file.
    pub fn entry_count(&self) -> u64 {
        self.header.entry_count
    }

    /// Per-segment summaries.
    pub fn segments(&self) -> &[SegmentSummary] {
        &self.meta.segments
    }

    /// Bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.header.file_len()
    }

    /// Read and check block `i`.
    fn block(&self, i: u32) -> Result<Vec<IndexEntry>, String> {
        BLOCKS_READ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = vec![0u8; self.header.block_len()];
        self.file
            .read_exact_at(&mut b, self.header.block_offset(i))
            .map_err(|e| {
                format!(
                    "index file {}: cannot read block {i}: {e}",
                    self.path.display()
                )
            })?;
        history::parse_block(&self.header, self.meta.mabs.len(), &b).map_err(|e| {
            format!(
                "index file {} block {i} (byte {}) is damaged: {e}",
                self.path.display(),
                self.header.block_offset(i)
            )
        })
    }

    /// Check every block (start-up verification).
    ///
    /// # Errors
    /// The first damaged block's description.
    pub fn verify(&self) -> Result<(), String> {
        for i in 0..self.header.block_count {
            self.block(i)?;
        }
        Ok(())
    }

    fn mab_id(&self, mab: &Mab) -> Option<u16> {
        self.meta
            .mabs
            .binary_search_by(|m| m.mab.cmp(mab))
            .ok()
            .map(|i| i as u16)
    }
}

impl RangeSource for IndexRun {
    fn classes(&self, mab: &Mab) -> u32 {
        self.mab_id(mab)
            .map_or(0, |id| self.meta.mabs[usize::from(id)].classes)
    }

    fn lookup(
        &self,
        mab: &Mab,
        class: u8,
        lo: u64,
        hi: u64,
        out: &mut Vec<Hit>,
    ) -> Result<(), String> {
        let Some(id) = self.mab_id(mab) else {
            return Ok(());
        };
        let lo_key = (id, class, lo);
        let hi_key = (id, class, hi);
        let fences = &self.meta.fences;
        // The first block whose fence is >= lo may be preceded by a block ending in
        // keys >= lo: start one block earlier.
        let first = fences
            .partition_point(|f| (f.mab, f.class, f.start) < lo_key)
            .saturating_sub(1);
        for (i, f) in fences.iter().enumerate().skip(first) {
            if (f.mab, f.class, f.start) > hi_key {
                break;
            }
            for e in self.block(i as u32)? {
                let k = (e.mab, e.class, e.start);
                if k > hi_key {
                    break;
                }
                if k >= lo_key {
                    out.push(Hit {
                        mab: *mab,
                        kind: e.kind,
                        start: e.start,
                        len: e.len,
                        time_us: e.time_us,
                        at: e.at,
                    });
                }
            }
        }
        Ok(())
    }

    fn mabs(&self) -> Vec<Mab> {
        self.meta.mabs.iter().map(|m| m.mab).collect()
    }
}

/// Write an index file for segments `first..=last` (through a temporary file,
/// synced, renamed, directory synced): after it returns the file is complete or
/// absent.
///
/// # Errors
/// [`StoreError::Io`]; [`StoreError::Encode`] for inconsistent input (a bug).
pub fn write_run(
    dir: &Path,
    block_shift: u8,
    mabs: &[MabEntry],
    segments: &[SegmentSummary],
    entries: &[IndexEntry],
) -> Result<PathBuf, StoreError> {
    write_run_iter(
        dir,
        block_shift,
        mabs,
        segments,
        entries.len() as u64,
        entries.iter().map(|e| Ok(*e)),
    )
}

/// [`write_run`] from a stream of `count` sorted entries (merging files that do
/// not fit in memory): the blocks are written first, after room for the header
/// and meta section (whose size the counts fix), and the header and meta last.
///
/// # Errors
/// As [`write_run`]; an error the stream yields (a damaged input block) aborts
/// the write and leaves no file.
pub fn write_run_iter(
    dir: &Path,
    block_shift: u8,
    mabs: &[MabEntry],
    segments: &[SegmentSummary],
    count: u64,
    entries: impl Iterator<Item = Result<IndexEntry, String>>,
) -> Result<PathBuf, StoreError> {
    use std::io::{Seek as _, SeekFrom};
    let first = segments.first().map_or(0, |s| s.segment);
    let last = segments.last().map_or(0, |s| s.segment);
    let per = ((1usize << block_shift) - ivip_wire::history::BLOCK_HEADER_LEN)
        / ivip_wire::history::ENTRY_LEN;
    let blocks = count.div_ceil(per as u64);
    let meta_len = mabs.len() as u64 * ivip_wire::history::MAB_ENTRY_LEN as u64
        + segments.len() as u64 * ivip_wire::history::SEGMENT_SUMMARY_LEN as u64
        + blocks * ivip_wire::history::FENCE_LEN as u64;
    let block_len = 1u64 << block_shift;
    let blocks_offset = (INDEX_HEADER_LEN as u64 + meta_len).div_ceil(block_len) * block_len;
    let path = run_path(dir, first, last);
    let tmp = path.with_extension("hidx.tmp");
    let werr = || StoreError::io(&tmp, "cannot write index file");
    let mut f = File::create(&tmp).map_err(StoreError::io(&tmp, "cannot create index file"))?;
    f.seek(SeekFrom::Start(blocks_offset)).map_err(werr())?;
    // A header for emit_block: only the block size and segments matter to it.
    let draft = IndexHeader {
        block_shift,
        first_segment: first,
        last_segment: last,
        entry_count: count,
        block_count: blocks as u32,
        mab_count: mabs.len() as u32,
        meta_len: meta_len as u32,
        meta_crc: 0,
    };
    let mut fences: Vec<IndexEntry> = Vec::with_capacity(blocks as usize);
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut chunk: Vec<IndexEntry> = Vec::with_capacity(per);
    let mut block = vec![0u8; block_len as usize];
    let mut written = 0u64;
    let mut flush =
        |chunk: &mut Vec<IndexEntry>, w: &mut BufWriter<File>| -> Result<(), StoreError> {
            if chunk.is_empty() {
                return Ok(());
            }
            fences.push(chunk[0]);
            history::emit_block(&draft, chunk, &mut block)?;
            w.write_all(&block).map_err(werr())?;
            written += chunk.len() as u64;
            chunk.clear();
            Ok(())
        };
    let mut abort = None;
    for e in entries {
        match e {
            Ok(e) => {
                chunk.push(e);
                if chunk.len() == per {
                    flush(&mut chunk, &mut w)?;
                }
            }
            Err(m) => {
                abort = Some(m);
                break;
            }
        }
    }
    flush(&mut chunk, &mut w)?;
    if abort.is_some() || written != count {
        drop(w);
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::Config(abort.unwrap_or_else(|| {
            format!("index stream gave {written} entries, {count} announced")
        })));
    }
    let (h, meta) = history::plan(block_shift, first, last, mabs, segments, count, |i| {
        fences.get((i / per as u64) as usize).copied()
    })?;
    debug_assert_eq!(h.blocks_offset(), blocks_offset);
    let mut mb = vec![0u8; meta.buffer_len()];
    meta.emit(&mut mb)?;
    let res = (|| -> std::io::Result<()> {
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&h.to_bytes())?;
        f.write_all(&mb)?;
        let pad = blocks_offset as usize - INDEX_HEADER_LEN - mb.len();
        f.write_all(&vec![0u8; pad])?;
        f.sync_all()
    })();
    res.map_err(werr())?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io(&path, "cannot rename index file to"))?;
    sync_dir(&dir.join(INDEX_DIR))?;
    Ok(path)
}

impl IndexRun {
    /// Every entry, block by block, in key order (merging reads files this way).
    pub fn iter_entries(&self) -> impl Iterator<Item = Result<IndexEntry, String>> + '_ {
        (0..self.header.block_count).flat_map(move |i| match self.block(i) {
            Ok(b) => b.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }

    /// The MAB table.
    pub fn mab_table(&self) -> &[MabEntry] {
        &self.meta.mabs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::history::GapRecord;

    #[test]
    fn active_index_finds_what_it_was_given_across_chunks() {
        let m: Mab = "20.0.0.0/14".parse().unwrap();
        let mut a = ActiveIndex::new(0);
        for i in 0..10_000u32 {
            let rec = HistoryRecord::Gap(GapRecord::MabSets {
                recv_us: u64::from(i),
                mab: m,
                first: 1,
                last: 1,
            });
            a.add(
                &rec,
                Location {
                    segment: 0,
                    offset: i,
                },
            )
            .unwrap();
        }
        assert!(
            !a.chunks.is_empty() && !a.tail.is_empty(),
            "both chunks and tail are searched"
        );
        let mut out = Vec::new();
        a.lookup(&m, history::CLASS_GAP, 0, u64::MAX, &mut out)
            .unwrap();
        assert_eq!(out.len(), 10_000);
        let (mabs, all, s) = a.sealed();
        assert_eq!((mabs.len(), all.len(), s.frames), (1, 10_000, 10_000));
        assert!(all.windows(2).all(|w| w[0].key() < w[1].key()));
    }
}
