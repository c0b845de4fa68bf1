//! The history store: a directory of append-only segments and their index files,
//! with crash recovery, damage reporting and retention.
//!
//! spec: history.md §2 (files, durability, recovery), §5 (retention). What it is:
//! the one writer ([`Store`]) and any number of readers ([`StoreReader`]). A record
//! counts as recorded only after the [`Store::commit`] that carried it returned
//! (one `fdatasync` for everything appended since the last commit: group commit).
//! Readers see committed records only. What it is not: the search logic (`query`)
//! or the meaning of records (`ingest`).
//!
//! Layout of a history directory:
//!
//! ```text
//! DIR/segments/NNNNNNNNNNNNNNNNNNNN.log   frames of history records (log.md, kind 3)
//! DIR/index/FFFFFFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLLLLLL.hidx
//!                                        the index of segments F..=L (history.md §4)
//! ```
//!
//! The newest segment is *active*: appended to, indexed in memory. When it passes
//! `segment_bytes_max` it is *sealed*: its index file is written (temporary file,
//! sync, rename, directory sync) and only then is the next segment created.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ivip_wire::Mab;
use ivip_wire::history::{HistoryRecord, Location};
use parking_lot::RwLock;

use super::error::StoreError;
use super::index::{self, ActiveIndex, INDEX_DIR, IndexRun, Pending, RangeSource};
use ivip_wire::history::IndexEntry;

fn sync_dir_of(dir: &Path) -> Result<(), StoreError> {
    segment::sync_dir(&dir.join(INDEX_DIR))
}
use super::segment::{self, Damage, FrameReadError, SEGMENTS_DIR, SegmentWriter};

/// Default size at which a segment is sealed.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 128 << 20;
/// Default index block size: 4 KiB.
pub const BLOCK_SHIFT_DEFAULT: u8 = 12;
/// Index files merged into one at a time: eight files covering the same number of
/// segments, side by side, become one. A search so consults about
/// `MERGE_FANIN × log8(segments)` files instead of one per segment (history.md
/// §4.3).
pub const MERGE_FANIN: usize = 8;

/// What is kept, and for how long (history.md §5). The default keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete sealed segments whose newest record is older than this (µs).
    pub max_age_us: Option<u64>,
    /// Delete the oldest sealed segments while the store is larger than this.
    pub max_bytes: Option<u64>,
}

/// Settings of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Seal the active segment once it is this large.
    pub segment_bytes_max: u64,
    /// log2 of the index block size (9..=16).
    pub block_shift: u8,
    /// On open, read every sealed segment and index block and check their
    /// checksums, reporting damage (history.md §2.4).
    pub verify_on_open: bool,
    /// Retention policy.
    pub retention: Retention,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            block_shift: BLOCK_SHIFT_DEFAULT,
            verify_on_open: true,
            retention: Retention::default(),
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Segments present.
    pub segments: usize,
    /// Frames of the active segment replayed into memory.
    pub active_frames: u64,
    /// Bytes of a torn tail cut off (never acknowledged).
    pub torn_bytes: u64,
    /// Damaged stretches found.
    pub damage: Vec<Damage>,
    /// Index files that were damaged or stale, and were removed: (file, why).
    pub bad_index_files: Vec<(PathBuf, String)>,
    /// Segments whose index file was (re)built from the segment.
    pub rebuilt: Vec<u32>,
}

/// Counters a reader can show.
#[derive(Debug, Default)]
struct Stats {
    frames: AtomicU64,
    commits: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Debug)]
struct State {
    runs: Vec<Arc<IndexRun>>,
    active: ActiveIndex,
    damage: Vec<Damage>,
    /// Bytes of each segment file (sealed and active).
    segment_bytes: HashMap<u32, u64>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: RwLock<State>,
    stats: Stats,
    block_shift: u8,
    /// A merge is running (one at a time).
    merging: std::sync::atomic::AtomicBool,
}

/// A read handle: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

/// The single writer.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    config: StoreConfig,
    writer: SegmentWriter,
    pending: Pending,
    scratch: Vec<u8>,
    poisoned: bool,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitReport {
    /// Records made durable.
    pub frames: u32,
    /// The segment sealed afterwards, if any.
    pub sealed: Option<u32>,
}

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed.
    pub segments: Vec<u32>,
    /// Bytes freed.
    pub bytes: u64,
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the history in `dir`: load index files, rebuild
    /// missing ones, report damage, replay the active segment into memory and cut
    /// a torn tail.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be used;
    /// [`StoreError::Config`] for unusable settings. Damage is *not* an error: it
    /// is reported in [`OpenReport::damage`] and the rest stays usable.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        if config.segment_bytes_max < 4096
            || config.segment_bytes_max > segment::SEGMENT_BYTES_MAX_LIMIT
        {
            return Err(StoreError::Config(format!(
                "segment size must be between 4 KiB and {} bytes",
                segment::SEGMENT_BYTES_MAX_LIMIT
            )));
        }
        if !(ivip_wire::history::BLOCK_SHIFT_MIN..=ivip_wire::history::BLOCK_SHIFT_MAX)
            .contains(&config.block_shift)
        {
            return Err(StoreError::Config(
                "index block shift must be 9..=16".into(),
            ));
        }
        for sub in [SEGMENTS_DIR, INDEX_DIR] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(StoreError::io(&p, "cannot create"))?;
        }
        let mut report = OpenReport::default();
        let segs = segment::list_segments(dir)?;
        report.segments = segs.len();
        let mut segment_bytes: HashMap<u32, u64> = segs
            .iter()
            .map(|&n| (n, file_len(&segment::segment_path(dir, n))))
            .collect();

        // Index files: keep the valid ones that cover existing segments, without
        // overlap.
        let mut runs: Vec<Arc<IndexRun>> = Vec::new();
        // A merge interrupted before its rename leaves a temporary file.
        if let Ok(rd) = std::fs::read_dir(dir.join(INDEX_DIR)) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Larger files first: after a merge interrupted before its inputs were
        // deleted, the merged file wins and the inputs it covers are removed.
        let mut listed = index::list_runs(dir)?;
        listed.sort_by_key(|&(f, l)| (f, std::cmp::Reverse(l)));
        for (first, last) in listed {
            let path = index::run_path(dir, first, last);
            let why = match IndexRun::open(&path) {
                Err(e) => Some(e),
                Ok(run) => {
                    let covered = (first..=last).all(|s| segment_bytes.contains_key(&s));
                    let overlaps = runs.last().is_some_and(|r| r.last_segment() >= first);
                    let verified = if config.verify_on_open {
                        run.verify()
                    } else {
                        Ok(())
                    };
                    match (covered, overlaps, verified) {
                        (false, _, _) => Some("its segments are gone".to_string()),
                        (_, true, _) => Some("is covered by a merged index file".to_string()),
                        (_, _, Err(e)) => Some(e),
                        (true, false, Ok(())) => {
                            runs.push(Arc::new(run));
                            None
                        }
                    }
                }
            };
            if let Some(why) = why {
                log::warn!(
                    "history index file {} removed: {why}; rebuilding it from its segment",
                    path.display()
                );
                std::fs::remove_file(&path).map_err(StoreError::io(&path, "cannot remove"))?;
                report.bad_index_files.push((path, why));
            }
        }
        let covered = |runs: &[Arc<IndexRun>], s: u32| {
            runs.iter()
                .any(|r| r.first_segment() <= s && s <= r.last_segment())
        };

        // Sealed segments: verify or rebuild.
        let last = segs.last().copied();
        let mut damage = Vec::new();
        for &n in &segs {
            let is_last = Some(n) == last;
            if covered(&runs, n) {
                if config.verify_on_open {
                    let o = segment::scan(dir, n, false, |_, _| {})?;
                    damage.extend(o.damage);
                }
                continue;
            }
            if is_last {
                continue;
            }
            let mut a = ActiveIndex::new(n);
            let o = segment::scan(dir, n, false, |at, rec| {
                // A segment's MAB table cannot pass 65,536 MABs unless the
                // recorder wrote it that way; skip the excess entries then.
                let _ = a.add(
                    &rec,
                    Location {
                        segment: n,
                        offset: at,
                    },
                );
            })?;
            damage.extend(o.damage);
            let (mabs, entries, summary) = a.sealed();
            let path = index::write_run(dir, config.block_shift, &mabs, &[summary], &entries)?;
            let run = IndexRun::open(&path).map_err(|e| {
                StoreError::Config(format!("index file {} just written: {e}", path.display()))
            })?;
            runs.push(Arc::new(run));
            runs.sort_by_key(|r| r.first_segment());
            report.rebuilt.push(n);
        }

        // The active segment.
        let (writer, active) = match last {
            None => (SegmentWriter::create(dir, 0)?, ActiveIndex::new(0)),
            Some(n) if covered(&runs, n) => {
                let next = n.checked_add(1).ok_or(StoreError::TooLarge {
                    what: "segment number",
                    bytes: u64::from(n),
                })?;
                (SegmentWriter::create(dir, next)?, ActiveIndex::new(next))
            }
            Some(n) => {
                let mut a = ActiveIndex::new(n);
                let mut add_err = None;
                let o = segment::scan(dir, n, true, |at, rec| {
                    if let Err(e) = a.add(
                        &rec,
                        Location {
                            segment: n,
                            offset: at,
                        },
                    ) && add_err.is_none()
                    {
                        add_err = Some(e);
                    }
                })?;
                if let Some(e) = add_err {
                    return Err(e);
                }
                report.active_frames = o.frames;
                if let Some(t) = o.torn_at {
                    report.torn_bytes = segment_bytes.get(&n).copied().unwrap_or(0) - t;
                }
                if o.damage.is_empty() {
                    segment_bytes.insert(
                        n,
                        o.valid_len.max(ivip_wire::frame::SEGMENT_HEADER_LEN as u64),
                    );
                    if o.valid_len < ivip_wire::frame::SEGMENT_HEADER_LEN as u64 {
                        // Torn while being created: start it again.
                        let p = segment::segment_path(dir, n);
                        std::fs::remove_file(&p).map_err(StoreError::io(&p, "cannot remove"))?;
                        (SegmentWriter::create(dir, n)?, a)
                    } else {
                        (SegmentWriter::reopen(dir, n, o.valid_len)?, a)
                    }
                } else {
                    // Damage in the active segment: never append after it. Seal
                    // what is valid and start the next segment.
                    damage.extend(o.damage);
                    let (mabs, entries, summary) = a.sealed();
                    let path =
                        index::write_run(dir, config.block_shift, &mabs, &[summary], &entries)?;
                    let run = IndexRun::open(&path).map_err(|e| {
                        StoreError::Config(format!(
                            "index file {} just written: {e}",
                            path.display()
                        ))
                    })?;
                    runs.push(Arc::new(run));
                    report.rebuilt.push(n);
                    let next = n.checked_add(1).ok_or(StoreError::TooLarge {
                        what: "segment number",
                        bytes: u64::from(n),
                    })?;
                    (SegmentWriter::create(dir, next)?, ActiveIndex::new(next))
                }
            }
        };
        segment_bytes.insert(writer.number(), writer.committed_len());
        for d in &damage {
            log::error!("{d}");
        }
        report.damage = damage.clone();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                runs,
                active,
                damage,
                segment_bytes,
            }),
            stats: Stats::default(),
            block_shift: config.block_shift,
            merging: std::sync::atomic::AtomicBool::new(false),
        });
        let store = Store {
            shared,
            config,
            writer,
            pending: Pending::default(),
            scratch: Vec::new(),
            poisoned: false,
        };
        store.spawn_merges();
        Ok((store, report))
    }

    /// Merge index files in the background if some are due (one merger at a
    /// time).
    fn spawn_merges(&self) {
        let r = self.reader();
        if r.shared.state.read().runs.len() < MERGE_FANIN
            || r.shared.merging.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("history-merge".into())
            .spawn(move || {
                r.merge_while_due();
                r.shared.merging.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::warn!("history: cannot start a merge thread: {e}");
            self.shared.merging.store(false, Ordering::SeqCst);
        }
    }

    /// Merge every group of index files that is due, now, on this thread
    /// (waiting for a background merge to finish first). Returns the merges done.
    ///
    /// # Errors
    /// [`StoreError`] of the merge.
    pub fn merge_now(&self) -> Result<usize, StoreError> {
        let r = self.reader();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        while r.shared.merging.swap(true, Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Config("a merge has run for an hour".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut n = 0;
        let res = loop {
            match r.merge_step() {
                Ok(true) => n += 1,
                Ok(false) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        r.shared.merging.store(false, Ordering::SeqCst);
        res
    }

    /// A read handle for searches on other threads.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Buffer a record; returns where it will be. It is recorded once a later
    /// [`Store::commit`] returns `Ok`.
    ///
    /// # Errors
    /// [`StoreError::Encode`] for a record that breaks its format (a caller bug);
    /// [`StoreError::TooLarge`]; [`StoreError::Poisoned`].
    pub fn append(&mut self, rec: &HistoryRecord) -> Result<Location, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        rec.encode_into(&mut self.scratch)?;
        let offset = self.writer.append(&self.scratch)?;
        let at = Location {
            segment: self.writer.number(),
            offset,
        };
        self.pending.add(rec, at);
        Ok(at)
    }

    /// Records appended and not yet committed.
    pub fn pending_frames(&self) -> u32 {
        self.pending.frames
    }

    /// Bytes appended and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.writer.pending_len()
    }

    /// Make everything appended durable (one `fdatasync`), publish it to readers,
    /// and seal the segment if it has grown past its limit.
    ///
    /// # Errors
    /// [`StoreError::Io`]: nothing appended since the last commit is recorded and
    /// the store refuses further writes ([`StoreError::Poisoned`]); reopen it.
    pub fn commit(&mut self) -> Result<CommitReport, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let frames = self.pending.frames;
        if frames == 0 {
            return Ok(CommitReport::default());
        }
        let bytes = self.writer.pending_len() as u64;
        if let Err(e) = self.writer.commit() {
            self.poisoned = true;
            return Err(e);
        }
        {
            let mut st = self.shared.state.write();
            let r = st.active.add_pending(&self.pending);
            st.segment_bytes
                .insert(self.writer.number(), self.writer.committed_len());
            if let Err(e) = r {
                self.poisoned = true;
                return Err(e);
            }
        }
        self.pending.clear();
        let stats = &self.shared.stats;
        stats.frames.fetch_add(u64::from(frames), Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut report = CommitReport {
            frames,
            sealed: None,
        };
        if self.writer.committed_len() >= self.config.segment_bytes_max {
            report.sealed = Some(self.seal()?);
        }
        Ok(report)
    }

    /// Seal the active segment now (after committing what is pending) and start
    /// the next; returns the sealed segment's number.
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn seal(&mut self) -> Result<u32, StoreError> {
        if self.pending.frames > 0 {
            self.commit()?;
        }
        let n = self.writer.number();
        let (mabs, entries, summary) = self.shared.state.read().active.sealed();
        let dir = self.shared.dir.clone();
        let res = (|| {
            let path =
                index::write_run(&dir, self.config.block_shift, &mabs, &[summary], &entries)?;
            let run = IndexRun::open(&path).map_err(|e| {
                StoreError::Config(format!("index file {} just written: {e}", path.display()))
            })?;
            let next = n.checked_add(1).ok_or(StoreError::TooLarge {
                what: "segment number",
                bytes: u64::from(n),
            })?;
            let w = SegmentWriter::create(&dir, next)?;
            Ok((run, w))
        })();
        let (run, w) = match res {
            Ok(x) => x,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        let mut st = self.shared.state.write();
        st.runs.push(Arc::new(run));
        st.active = ActiveIndex::new(w.number());
        st.segment_bytes.insert(w.number(), w.committed_len());
        self.writer = w;
        log::info!(
            "history segment {n} sealed ({} index entries)",
            entries.len()
        );
        Ok(n)
    }

    /// Apply the retention policy at wall time `now_us`: delete the oldest sealed
    /// segments that are too old, and while the store is too big. The active
    /// segment is never deleted. With the default policy this does nothing.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn apply_retention(&mut self, now_us: u64) -> Result<RetentionReport, StoreError> {
        let policy = self.config.retention;
        let mut report = RetentionReport::default();
        if policy == Retention::default() {
            return Ok(report);
        }
        let dir = self.shared.dir.clone();
        loop {
            let victim = {
                let st = self.shared.state.read();
                let total: u64 = st.segment_bytes.values().sum::<u64>()
                    + st.runs.iter().map(|r| r.file_len()).sum::<u64>();
                st.runs.first().and_then(|r| {
                    let newest = r
                        .segments()
                        .iter()
                        .filter(|s| s.time_min_us <= s.time_max_us)
                        .map(|s| s.time_max_us)
                        .max()
                        .unwrap_or(0);
                    let too_old = policy
                        .max_age_us
                        .is_some_and(|age| newest < now_us.saturating_sub(age));
                    let too_big = policy.max_bytes.is_some_and(|max| total > max);
                    (too_old || too_big).then(|| Arc::clone(r))
                })
            };
            let Some(run) = victim else { break };
            {
                let mut st = self.shared.state.write();
                st.runs.retain(|r| !Arc::ptr_eq(r, &run));
                for s in run.first_segment()..=run.last_segment() {
                    st.segment_bytes.remove(&s);
                    st.damage.retain(|d| d.segment != s);
                }
            }
            let p = run.path().to_path_buf();
            report.bytes += run.file_len();
            std::fs::remove_file(&p).map_err(StoreError::io(&p, "cannot remove"))?;
            for s in run.first_segment()..=run.last_segment() {
                let sp = segment::segment_path(&dir, s);
                report.bytes += file_len(&sp);
                match std::fs::remove_file(&sp) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&sp, "cannot remove")(e)),
                }
                report.segments.push(s);
            }
            log::info!(
                "history retention removed segments {}..={}",
                run.first_segment(),
                run.last_segment()
            );
        }
        if !report.segments.is_empty() {
            segment::sync_dir(&dir.join(INDEX_DIR))?;
            segment::sync_dir(&dir.join(SEGMENTS_DIR))?;
        }
        Ok(report)
    }
}

/// A summary of the store for status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatus {
    /// Segments on disk (sealed and active).
    pub segments: usize,
    /// Bytes of segments and index files.
    pub bytes: u64,
    /// Index entries (sealed files and the active segment).
    pub index_entries: u64,
    /// Earliest record time kept, µs since the Unix epoch (`None` when empty).
    pub earliest_us: Option<u64>,
    /// Latest record time kept.
    pub latest_us: Option<u64>,
    /// The active segment.
    pub active_segment: u32,
    /// Frames committed since the store was opened.
    pub frames_committed: u64,
    /// Commits (fsyncs) since the store was opened.
    pub commits: u64,
    /// Damage found, one description each.
    pub damage: Vec<String>,
}

/// The oldest group of [`MERGE_FANIN`] index files side by side that cover the
/// same number of segments each.
fn merge_group(runs: &[Arc<IndexRun>]) -> Option<Vec<Arc<IndexRun>>> {
    let span = |r: &Arc<IndexRun>| u64::from(r.last_segment()) - u64::from(r.first_segment());
    runs.windows(MERGE_FANIN)
        .find(|g| {
            g.iter().all(|r| span(r) == span(&g[0]))
                && g.windows(2)
                    .all(|w| u64::from(w[0].last_segment()) + 1 == u64::from(w[1].first_segment()))
        })
        .map(<[Arc<IndexRun>]>::to_vec)
}

/// Merge sorted entry streams, each with its MAB ids remapped to the merged
/// table (an order-preserving map, so each stream stays sorted).
struct Merged<'a> {
    inputs: Vec<Box<dyn Iterator<Item = Result<IndexEntry, String>> + 'a>>,
    heads: std::collections::BinaryHeap<std::cmp::Reverse<(EntryKey, usize)>>,
    pending: Vec<Option<IndexEntry>>,
    failed: bool,
}

type EntryKey = (u16, u8, u64, u32, u32, u64, u8);

impl Merged<'_> {
    fn refill(&mut self, i: usize) -> Result<(), String> {
        match self.inputs[i].next() {
            Some(Ok(e)) => {
                self.heads.push(std::cmp::Reverse((e.key(), i)));
                self.pending[i] = Some(e);
                Ok(())
            }
            Some(Err(m)) => Err(m),
            None => Ok(()),
        }
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<IndexEntry, String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let std::cmp::Reverse((_, i)) = self.heads.pop()?;
        let e = self.pending[i].take()?;
        if let Err(m) = self.refill(i) {
            self.failed = true;
            return Some(Err(m));
        }
        Some(Ok(e))
    }
}

impl StoreReader {
    /// Merge one due group of index files into one, swap it in for readers, and
    /// delete the inputs. `Ok(false)` when nothing is due (or the group changed
    /// meanwhile, e.g. by retention). Callers hold the merge flag.
    fn merge_step(&self) -> Result<bool, StoreError> {
        let Some(group) = merge_group(&self.shared.state.read().runs) else {
            return Ok(false);
        };
        let mut table: std::collections::BTreeMap<Mab, u32> = std::collections::BTreeMap::new();
        for r in &group {
            for m in r.mab_table() {
                *table.entry(m.mab).or_default() |= m.classes;
            }
        }
        let ids: HashMap<Mab, u16> = table
            .keys()
            .enumerate()
            .map(|(i, m)| (*m, i as u16))
            .collect();
        let mabs: Vec<ivip_wire::history::MabEntry> = table
            .iter()
            .map(|(m, c)| ivip_wire::history::MabEntry {
                mab: *m,
                classes: *c,
            })
            .collect();
        let segments: Vec<ivip_wire::history::SegmentSummary> =
            group.iter().flat_map(|r| r.segments().to_vec()).collect();
        let count: u64 = group.iter().map(|r| r.entry_count()).sum();
        let mut merged = Merged {
            inputs: Vec::new(),
            heads: std::collections::BinaryHeap::new(),
            pending: vec![None; group.len()],
            failed: false,
        };
        for r in &group {
            let remap: Vec<u16> = r.mab_table().iter().map(|m| ids[&m.mab]).collect();
            merged.inputs.push(Box::new(r.iter_entries().map(move |e| {
                e.map(|e| IndexEntry {
                    mab: remap[usize::from(e.mab)],
                    ..e
                })
            })));
        }
        for i in 0..group.len() {
            merged.refill(i).map_err(StoreError::Config)?;
        }
        let dir = self.shared.dir.clone();
        let path = index::write_run_iter(
            &dir,
            self.shared.block_shift,
            &mabs,
            &segments,
            count,
            merged,
        )?;
        let run = IndexRun::open(&path).map_err(|e| {
            StoreError::Config(format!("index file {} just written: {e}", path.display()))
        })?;
        let swapped = {
            let mut st = self.shared.state.write();
            match st.runs.iter().position(|r| Arc::ptr_eq(r, &group[0])) {
                Some(p)
                    if st.runs.len() >= p + group.len()
                        && st.runs[p..p + group.len()]
                            .iter()
                            .zip(&group)
                            .all(|(a, b)| Arc::ptr_eq(a, b)) =>
                {
                    st.runs.splice(p..p + group.len(), [Arc::new(run)]);
                    true
                }
                _ => false,
            }
        };
        if !swapped {
            std::fs::remove_file(&path).map_err(StoreError::io(&path, "cannot remove"))?;
            return Ok(false);
        }
        for r in &group {
            let p = r.path();
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(p, "cannot remove merged index file")(e)),
            }
        }
        sync_dir_of(&dir)?;
        log::info!(
            "history: index files of segments {}..={} merged ({count} entries)",
            group[0].first_segment(),
            group[group.len() - 1].last_segment()
        );
        Ok(true)
    }

    fn merge_while_due(&self) {
        loop {
            match self.merge_step() {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    log::error!(
                        "history: merging index files failed: {e}; searches stay correct, only slower"
                    );
                    return;
                }
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Run `f` on the active index (and the list of sealed index files) while
    /// holding the read lock, and return its result with the sealed index files
    /// of the same instant. `f` must not do I/O: the writer waits for it.
    pub fn view<R>(
        &self,
        f: impl FnOnce(&ActiveIndex, &[Arc<IndexRun>]) -> R,
    ) -> (R, Vec<Arc<IndexRun>>) {
        let st = self.shared.state.read();
        let r = f(&st.active, &st.runs);
        (r, st.runs.clone())
    }

    /// Damage known to the store.
    pub fn damage(&self) -> Vec<Damage> {
        self.shared.state.read().damage.clone()
    }

    /// A summary.
    pub fn status(&self) -> StoreStatus {
        let st = self.shared.state.read();
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        let mut widen = |a: u64, b: u64| {
            if a <= b {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        };
        for r in &st.runs {
            for s in r.segments() {
                widen(s.time_min_us, s.time_max_us);
            }
        }
        if let Some((a, b)) = st.active.time_range() {
            widen(a, b);
        }
        let stats = &self.shared.stats;
        StoreStatus {
            segments: st.segment_bytes.len(),
            bytes: st.segment_bytes.values().sum::<u64>()
                + st.runs.iter().map(|r| r.file_len()).sum::<u64>(),
            index_entries: st.runs.iter().map(|r| r.entry_count()).sum::<u64>() + st.active.len(),
            earliest_us: (lo <= hi).then_some(lo),
            latest_us: (lo <= hi).then_some(hi),
            active_segment: st.active.segment(),
            frames_committed: stats.frames.load(Ordering::Relaxed),
            commits: stats.commits.load(Ordering::Relaxed),
            damage: st.damage.iter().map(ToString::to_string).collect(),
        }
    }

    /// A frame reader for one search (keeps the segment files it opens).
    pub fn frames(&self) -> FrameReader {
        FrameReader {
            dir: self.shared.dir.clone(),
            files: HashMap::new(),
        }
    }

    /// Where a restart must start replaying: the segment of the oldest among
    /// each MAB's newest baseline (every MAB's layout can then be rebuilt from a
    /// baseline and what follows). MABs with no baseline do not count (they are
    /// resynchronised from a snapshot). 0 when nothing is known.
    pub fn replay_start(&self) -> u32 {
        let (active, runs) = self.view(|a, _| {
            let mut v: Vec<(Mab, Location)> = Vec::new();
            for mab in a.mabs() {
                let mut h = Vec::new();
                let _ = a.lookup(
                    &mab,
                    ivip_wire::history::CLASS_BASELINE_START,
                    0,
                    u64::MAX,
                    &mut h,
                );
                if let Some(x) = h.iter().map(|x| x.at).max() {
                    v.push((mab, x));
                }
            }
            v
        });
        let mut newest: HashMap<Mab, Location> = active.into_iter().collect();
        for r in runs.iter().rev() {
            for mab in r.mabs() {
                if newest.contains_key(&mab) {
                    continue;
                }
                let mut h = Vec::new();
                if r.lookup(
                    &mab,
                    ivip_wire::history::CLASS_BASELINE_START,
                    0,
                    u64::MAX,
                    &mut h,
                )
                .is_ok()
                    && let Some(x) = h.iter().map(|x| x.at).max()
                {
                    newest.insert(mab, x);
                }
            }
        }
        newest.values().map(|l| l.segment).min().unwrap_or(0)
    }

    /// Visit every readable record of segments `from..`, in order (used to rebuild
    /// a recorder's state after a restart). Damage is skipped (it was reported at
    /// open).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn replay(
        &self,
        from: u32,
        mut visit: impl FnMut(Location, HistoryRecord),
    ) -> Result<(), StoreError> {
        let segs = segment::list_segments(&self.shared.dir)?;
        for n in segs.into_iter().filter(|&n| n >= from) {
            segment::scan(&self.shared.dir, n, true, |offset, rec| {
                visit(Location { segment: n, offset }, rec);
            })?;
        }
        Ok(())
    }
}

/// Frames read by location since the process started (all stores), for
/// benchmarks and metrics.
pub static FRAMES_READ: AtomicU64 = AtomicU64::new(0);

/// Reads frames by location, keeping each segment file open for the search.
#[derive(Debug)]
pub struct FrameReader {
    dir: PathBuf,
    files: HashMap<u32, File>,
}

impl FrameReader {
    /// Read and check the record at `at`.
    ///
    /// # Errors
    /// [`FrameReadError`] (removed file, damage).
    pub fn read(&mut self, at: Location) -> Result<HistoryRecord, FrameReadError> {
        FRAMES_READ.fetch_add(1, Ordering::Relaxed);
        if !self.files.contains_key(&at.segment) {
            let p = segment::segment_path(&self.dir, at.segment);
            let f =
                File::open(&p).map_err(|e| FrameReadError::Io(format!("{}: {e}", p.display())))?;
            self.files.insert(at.segment, f);
        }
        let f = self
            .files
            .get(&at.segment)
            .ok_or_else(|| FrameReadError::Io("segment file not open".into()))?;
        segment::read_record(f, at.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::Mab;
    use ivip_wire::history::GapRecord;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-hstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn gap(i: u64) -> HistoryRecord {
        HistoryRecord::Gap(GapRecord::MabSets {
            recv_us: 1_000 + i,
            mab: "20.0.0.0/14".parse::<Mab>().unwrap(),
            first: i,
            last: i,
        })
    }

    fn small() -> StoreConfig {
        StoreConfig {
            segment_bytes_max: 4096,
            ..StoreConfig::default()
        }
    }

    fn count(r: &StoreReader) -> usize {
        let mut n = 0;
        r.replay(0, |_, _| n += 1).unwrap();
        n
    }

    #[test]
    fn records_survive_reopen_and_segments_seal_with_index_files() {
        let d = tmp("reopen");
        let mut locs = Vec::new();
        {
            let (mut s, rep) = Store::open(&d, small()).unwrap();
            assert_eq!(rep.segments, 0);
            for i in 0..300 {
                locs.push(s.append(&gap(i)).unwrap());
                if i % 10 == 9 {
                    s.commit().unwrap();
                }
            }
            assert!(
                s.reader().view(|_, _| ()).1.len() >= 2,
                "sealed several segments"
            );
        }
        let (s, rep) = Store::open(&d, small()).unwrap();
        assert!(rep.damage.is_empty() && rep.rebuilt.is_empty(), "{rep:?}");
        let r = s.reader();
        assert_eq!(count(&r), 300);
        let mut fr = r.frames();
        assert_eq!(fr.read(locs[123]).unwrap(), gap(123));
        let st = r.status();
        assert_eq!((st.earliest_us, st.latest_us), (Some(1_000), Some(1_299)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn uncommitted_records_are_not_seen_and_a_lost_index_file_is_rebuilt() {
        let d = tmp("rebuild");
        {
            let (mut s, _) = Store::open(&d, small()).unwrap();
            for i in 0..200 {
                s.append(&gap(i)).unwrap();
            }
            s.commit().unwrap();
            s.append(&gap(999)).unwrap();
            // Not committed: a reader does not see it in the index.
            let (n, _) = s.reader().view(|a, _| a.frames());
            assert!(n < 200);
        }
        let runs = index::list_runs(&d).unwrap();
        std::fs::remove_file(index::run_path(&d, runs[0].0, runs[0].1)).unwrap();
        let (s, rep) = Store::open(&d, small()).unwrap();
        assert_eq!(rep.rebuilt, vec![runs[0].0]);
        assert_eq!(
            count(&s.reader()),
            200,
            "the uncommitted record never reached disk"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_by_size_removes_the_oldest_sealed_segments_only() {
        let d = tmp("retention");
        let cfg = StoreConfig {
            retention: Retention {
                max_age_us: None,
                max_bytes: Some(8192),
            },
            ..small()
        };
        let (mut s, _) = Store::open(&d, cfg).unwrap();
        for i in 0..400 {
            s.append(&gap(i)).unwrap();
            s.commit().unwrap();
        }
        let before = s.reader().status();
        let rep = s.apply_retention(0).unwrap();
        let after = s.reader().status();
        assert!(!rep.segments.is_empty());
        assert!(after.bytes <= 8192 + 4096 + 8192, "{after:?}");
        assert!(after.earliest_us > before.earliest_us);
        assert_eq!(after.latest_us, before.latest_us, "the newest records stay");
        // The default policy keeps everything.
        let (mut s2, _) = Store::open(&tmp("keep"), small()).unwrap();
        assert_eq!(
            s2.apply_retention(u64::MAX).unwrap(),
            RetentionReport::default()
        );
        std::fs::remove_dir_all(&d).unwrap();
        let _ = std::fs::remove_dir_all(tmp("keep"));
    }

    #[test]
    fn index_files_merge_and_a_merge_cut_short_recovers() {
        let d = tmp("merge");
        let cfg = StoreConfig {
            segment_bytes_max: 4096,
            ..small()
        };
        let before;
        {
            let (mut s, _) = Store::open(&d, cfg).unwrap();
            for i in 0..1500 {
                s.append(&gap(i)).unwrap();
                if i % 10 == 9 {
                    s.commit().unwrap();
                }
            }
            s.merge_now().unwrap();
            let r = s.reader();
            let (spans, n) = r
                .view(|_, runs| {
                    (
                        runs.iter()
                            .map(|x| x.last_segment() - x.first_segment() + 1)
                            .collect::<Vec<_>>(),
                        runs.len(),
                    )
                })
                .0;
            assert!(spans.iter().any(|&x| x >= 8), "{spans:?}");
            assert!(n < spans.iter().sum::<u32>() as usize);
            before = r.status();
        }
        // A crash after the merged file was renamed in, before its inputs were
        // deleted: put back an input file that the merged one covers.
        let runs = index::list_runs(&d).unwrap();
        let &(f, l) = runs.iter().find(|(f, l)| l > f).unwrap();
        let merged = std::fs::read(index::run_path(&d, f, l)).unwrap();
        std::fs::write(index::run_path(&d, f, f), &merged).unwrap();
        std::fs::write(d.join(INDEX_DIR).join("x.hidx.tmp"), b"half").unwrap();
        let (s, rep) = Store::open(&d, cfg).unwrap();
        assert_eq!(rep.bad_index_files.len(), 1, "{rep:?}");
        assert!(rep.damage.is_empty());
        let after = s.reader().status();
        assert_eq!(
            (after.index_entries, after.earliest_us, after.latest_us),
            (before.index_entries, before.earliest_us, before.latest_us)
        );
        assert!(!d.join(INDEX_DIR).join("x.hidx.tmp").exists());
        assert_eq!(count(&s.reader()), 1500);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn retention_by_age_keeps_recent_segments() {
        let d = tmp("age");
        let cfg = StoreConfig {
            retention: Retention {
                max_age_us: Some(100),
                max_bytes: None,
            },
            ..small()
        };
        let (mut s, _) = Store::open(&d, cfg).unwrap();
        for i in 0..400 {
            s.append(&gap(i)).unwrap();
            s.commit().unwrap();
        }
        // Records are timed 1000..1399; now = 1450: anything whose newest record is
        // before 1350 goes.
        s.apply_retention(1_450).unwrap();
        let st = s.reader().status();
        let e = st.earliest_us.unwrap();
        assert!(e > 1_000 && e <= 1_350, "{st:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
