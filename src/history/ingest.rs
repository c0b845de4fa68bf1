//! The recorder's ingest: feeds in, every payload verified, taken strictly in
//! each RUAS's sequence order, applied to a copy of each MAB's layout, and written
//! to the history with exactly what changed (seed s2.1; spec: history.md §3, §7).
//!
//! Two sans-IO halves, each run on its own thread by the driver:
//!
//! * The **feed side** is an MPS core ([`MpsCore`]): the recorder takes feeds
//!   exactly like an MPS (subscriptions, failover, payload checks, the RUAS
//!   signature verified with the configured key, a bounded in-memory buffer,
//!   per-RUAS sequence tracking), and repairs gaps the same way (range requests to
//!   peer MPSes whose answers go through the same checks). After each batch it
//!   publishes what it holds as [`Trackers`].
//! * The **recording side** ([`IngestCore`]) keeps, per RUAS, a *cursor*: the next
//!   payload to record. A payload is recorded only when it is the cursor's; a
//!   missing one is fetched from peers after a grace time, and given up on —
//!   written as a gap — after `give_up`. Per MAB it keeps the layout
//!   (`ivip::table`), booted from the RUAS's signed snapshot, so the exact effect
//!   of every command set is known from the first change on.
//!
//! Outputs of the recording side: records appended to the history [`Store`]
//! (memory only; the driver commits), [`Job`]s the driver performs (peer fetches,
//! snapshot downloads), snapshot files to keep. Inputs: trackers and the shared
//! buffer, timers, snapshot results, and at start the records already in the
//! history ([`IngestCore::replay`]), so that after a crash it resumes from the
//! last complete record. Verification (feed side) and table work, encoding and
//! `fdatasync` (recording side) thus use two cores.
//!
//! What it is not: a QSD (it answers no queries) or a verifier of its own history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ivip_wire::command::Commands;
use ivip_wire::history::{
    BaselineRecord, ChangedRange, FragmentRef, GapRecord, HistoryRecord, Item, Location,
    PayloadRecord, SetItem, SetOutcome, SnapshotCheck, SnapshotItem,
};
use ivip_wire::payload::{Payload, RecordView, SnapshotAnnouncement};
use ivip_wire::snapshot::Snapshot;
use ivip_wire::{Command, Etr, Mab, PayloadId, RuasId, Seq};

use super::store::Store;
use crate::metrics::{Counter, CounterVec, Gauge, Registry};
use crate::mps::core::FetchJob;
use crate::mps::core::MpsCore;
use crate::mps::store::Store as PayloadBuffer;
use crate::sign::{PublicKey, Verifier};
use crate::table::Table;
use crate::time::{Duration, Instant};

/// Micronets per baseline record.
pub const BASELINE_PART_MICRONETS: usize = 1024;
/// Payloads recorded per call of [`IngestCore::drain`] at most (then the loop
/// gets a turn).
pub const DRAIN_PAYLOADS_MAX: usize = 4096;
/// Fragmented sets waiting for their other fragments, per MAB, at most.
pub const PARTIAL_SETS_MAX: usize = 64;
/// Jobs waiting for the driver at most.
pub const JOBS_MAX: usize = 256;
/// The recording side looks at its timers (repair, resync) at least this often.
pub const TICK: Duration = Duration::from_ms(50);

/// How the cursor waits for and repairs missing payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairSettings {
    /// Wait this long for a missing payload before asking a peer MPS.
    pub grace: Duration,
    /// Ask again (the next peer) after this long.
    pub retry: Duration,
    /// Give up on a missing payload after this long: a gap is recorded.
    pub give_up: Duration,
    /// Most sequence numbers per range request.
    pub range_max: u32,
    /// Hold a RUAS's stream at most this long while one of its MABs waits for a
    /// snapshot (at boot, or a MAB first seen); after that the stream goes on and
    /// the MAB is recorded as out of sync until a new enough snapshot loads.
    pub snapshot_wait: Duration,
    /// Ask for a newer snapshot this often while a MAB is out of sync.
    pub resync_retry: Duration,
    /// Write a checkpoint baseline of a MAB (its layout, at a snapshot
    /// announcement whose hash matched it) when its last baseline is older than
    /// this, in µs of wall time; 0 = never. Restarts replay from the newest
    /// baselines, and retention keeps the record provable.
    pub checkpoint_us: u64,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            grace: Duration::from_ms(200),
            retry: Duration::from_ms(1000),
            give_up: Duration::from_secs(120),
            range_max: 1024,
            snapshot_wait: Duration::from_secs(30),
            resync_retry: Duration::from_secs(10),
            checkpoint_us: 720 * 3_600_000_000,
        }
    }
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A range of payloads from a peer MPS (answer with
    /// [`IngestCore::handle_payloads`]).
    Payloads(FetchJob),
    /// The list of snapshots a RUAS offers (`GET /v1/snapshots`; answer with
    /// [`IngestCore::handle_snapshot_list`]).
    SnapshotList {
        /// The RUAS.
        ruas: RuasId,
    },
    /// The newest snapshot of a MAB (`GET /v1/snapshots/latest?mab=`; answer with
    /// [`IngestCore::handle_snapshot`]).
    Snapshot {
        /// The RUAS.
        ruas: RuasId,
        /// The MAB.
        mab: Mab,
    },
}

/// The recorder's metrics (names under `ivip_history_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Payloads recorded.
    pub payloads: Counter,
    /// Command sets by outcome (`applied`, `refused`, `skipped`, `out_of_sync`).
    pub sets: CounterVec,
    /// Snapshot announcements by check (`matched`, `differed`, `not_checked`).
    pub announcements: CounterVec,
    /// Gaps recorded by kind (`payloads`, `mab_sets`).
    pub gaps: CounterVec,
    /// Snapshots loaded as baselines.
    pub baselines: Counter,
    /// Snapshot downloads or loads that failed, by reason.
    pub snapshot_errors: CounterVec,
    /// MABs out of sync now.
    pub out_of_sync: Gauge,
    /// Payloads waiting in the buffer for the cursor.
    pub behind: Gauge,
}

impl Metrics {
    fn register(r: &Registry) -> Metrics {
        Metrics {
            payloads: r.counter(
                "ivip_history_payloads_recorded_total",
                "Verified payloads written to the history.",
            ),
            sets: r.counter_vec(
                "ivip_history_sets_total",
                "Command sets seen, by what became of them.",
                "outcome",
                &["applied", "refused", "skipped", "out_of_sync"],
            ),
            announcements: r.counter_vec(
                "ivip_history_announcements_total",
                "Snapshot announcements, by how the recorder's layout compared.",
                "check",
                &["matched", "differed", "not_checked"],
            ),
            gaps: r.counter_vec(
                "ivip_history_gaps_total",
                "Gaps written to the history.",
                "kind",
                &["payloads", "mab_sets"],
            ),
            baselines: r.counter(
                "ivip_history_baselines_total",
                "Signed snapshots loaded as baselines.",
            ),
            snapshot_errors: r.counter_vec(
                "ivip_history_snapshot_errors_total",
                "Snapshot downloads and loads that failed, by reason.",
                "reason",
                &["fetch", "invalid", "too_old"],
            ),
            out_of_sync: r.gauge(
                "ivip_history_mabs_out_of_sync",
                "MABs whose layout is not known now (waiting for a snapshot).",
            ),
            behind: r.gauge(
                "ivip_history_cursor_waiting",
                "RUASes whose next payload is missing now.",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    epoch: u32,
    next: Seq,
}

#[derive(Debug, Default)]
struct RuasState {
    key: Option<PublicKey>,
    /// The next payload to record; `None` until boot decides it.
    cursor: Option<Cursor>,
    /// Booting since: the stream is held until the snapshot list is answered and
    /// its MABs loaded, at most `snapshot_wait`.
    booting: Option<Instant>,
    /// The snapshot list was answered.
    listed: bool,
    /// Stream positions of the snapshots loaded while booting.
    positions: Vec<Cursor>,
    /// When the cursor's payload was first found missing.
    blocked_since: Option<Instant>,
    next_fetch: Instant,
    rr: usize,
}

#[derive(Debug, Default)]
struct Partial {
    count: u8,
    command_count: u16,
    chunks: BTreeMap<u8, (Vec<u8>, Location)>,
}

struct MabState {
    ruas: RuasId,
    /// The layout, when known.
    table: Option<Table>,
    /// While out of sync: a snapshot must reflect at least this sequence.
    needed: u64,
    /// First set not applied one by one, for the gap record at resync.
    gap_first: Option<u64>,
    /// Waiting for a first snapshot since (holds the RUAS's stream up to
    /// `snapshot_wait`).
    awaiting: Option<Instant>,
    /// A snapshot request is out.
    requested: bool,
    next_request: Instant,
    partial: BTreeMap<u64, Partial>,
    /// When the last baseline of this MAB was recorded (wall µs).
    last_baseline_us: u64,
}

impl MabState {
    fn new(ruas: RuasId) -> MabState {
        MabState {
            ruas,
            table: None,
            needed: 0,
            gap_first: None,
            awaiting: None,
            requested: false,
            next_request: Instant(0),
            partial: BTreeMap::new(),
            last_baseline_us: 0,
        }
    }
}

/// What the core reports about one RUAS (status pages, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RuasProgress {
    /// The RUAS.
    pub ruas: u8,
    /// Its epoch being recorded.
    pub epoch: u32,
    /// The next payload sequence to record.
    pub next_seq: u32,
}

/// The recorder core.
pub struct IngestCore {
    buffer: Arc<PayloadBuffer>,
    store: Store,
    verifier: Arc<dyn Verifier>,
    repair: RepairSettings,
    peers: usize,
    ruas: Vec<RuasState>,
    mabs: BTreeMap<Mab, MabState>,
    jobs: Vec<Job>,
    files: Vec<(String, Vec<u8>)>,
    metrics: Metrics,
    /// A baseline being replayed, by MAB: its first part and the micronets so far.
    replay_baseline: HashMap<Mab, (BaselineRecord, Vec<Micronet3>)>,
    /// Appends that failed (a caller bug or a full segment): the driver stops.
    failed: Option<String>,
    /// Matched announcements of the payload being processed: checkpoint
    /// candidates.
    matched: Vec<(SnapshotAnnouncement, RuasId)>,
    /// Replaying: no jobs, no checkpoints.
    replaying: bool,
}

impl std::fmt::Debug for IngestCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IngestCore({} MABs)", self.mabs.len())
    }
}

/// Build a table at `mab_seq` from micronets (ascending, disjoint), by defining
/// each.
///
/// # Errors
/// The engine's refusal (the micronets are not a valid layout).
pub fn table_from(
    mab: Mab,
    mab_seq: u64,
    micronets: &[(u64, u64, Etr)],
) -> Result<Table, crate::table::ApplyError> {
    let mut t = Table::new(mab);
    for chunk in micronets.chunks(BASELINE_PART_MICRONETS) {
        let cmds: Vec<Command> = chunk
            .iter()
            .map(|&(start, len, etr)| Command::Define { start, len, etr })
            .collect();
        t.apply(&cmds)?;
    }
    t.set_mab_seq(mab_seq);
    Ok(t)
}

impl IngestCore {
    /// The recording side, reading verified payloads from `buffer` (the feed
    /// side's MPS store; that MPS core is built with no peers of its own: the
    /// recorder plans repairs from its cursors) and writing to the history store.
    /// `peers` is the number of peer MPSes the driver knows.
    pub fn new(
        buffer: Arc<PayloadBuffer>,
        store: Store,
        keys: &[(RuasId, PublicKey)],
        verifier: Arc<dyn Verifier>,
        repair: RepairSettings,
        peers: usize,
        registry: &Registry,
    ) -> IngestCore {
        let mut ruas: Vec<RuasState> = (0..=RuasId::MAX).map(|_| RuasState::default()).collect();
        for (r, k) in keys {
            ruas[usize::from(r.get())].key = Some(*k);
        }
        IngestCore {
            buffer,
            store,
            verifier,
            repair,
            peers,
            ruas,
            mabs: BTreeMap::new(),
            jobs: Vec::new(),
            files: Vec::new(),
            metrics: Metrics::register(registry),
            replay_baseline: HashMap::new(),
            failed: None,
            matched: Vec::new(),
            replaying: false,
        }
    }

    /// The history store (the driver commits it).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The history store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A failed append, if any: the history cannot be written; stop.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Where each RUAS's recording stands.
    pub fn progress(&self) -> Vec<RuasProgress> {
        self.ruas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.cursor.map(|c| RuasProgress {
                    ruas: i as u8,
                    epoch: c.epoch,
                    next_seq: c.next.0,
                })
            })
            .collect()
    }

    /// Every MAB seen, with the per-MAB sequence of its layout, or `None` while
    /// it is out of sync.
    pub fn mab_states(&self) -> Vec<(Mab, Option<u64>)> {
        self.mabs
            .iter()
            .map(|(m, s)| (*m, s.table.as_ref().map(Table::mab_seq)))
            .collect()
    }

    /// The current layout of a MAB, if known.
    pub fn table(&self, mab: &Mab) -> Option<&Table> {
        self.mabs.get(mab).and_then(|m| m.table.as_ref())
    }

    /// Jobs for the driver.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// Snapshot files to keep (standard name, bytes): the signed evidence behind
    /// each baseline. The driver writes them before the next commit.
    pub fn take_files(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.files)
    }

    fn push_job(&mut self, j: Job) {
        if self.jobs.len() < JOBS_MAX && !self.jobs.contains(&j) {
            self.jobs.push(j);
        }
    }

    fn append(&mut self, rec: &HistoryRecord) -> Option<Location> {
        match self.store.append(rec) {
            Ok(at) => Some(at),
            Err(e) => {
                log::error!("history: cannot append a record: {e}");
                self.failed.get_or_insert_with(|| e.to_string());
                None
            }
        }
    }

    fn mab_entry(&mut self, mab: Mab, ruas: RuasId) -> &mut MabState {
        self.mabs.entry(mab).or_insert_with(|| MabState::new(ruas))
    }

    fn request_snapshot(&mut self, now: Instant, mab: Mab) {
        if self.replaying {
            return;
        }
        let Some(m) = self.mabs.get_mut(&mab) else {
            return;
        };
        if m.requested || now < m.next_request {
            return;
        }
        m.requested = true;
        let ruas = m.ruas;
        self.push_job(Job::Snapshot { ruas, mab });
    }

    // -----------------------------------------------------------------------
    // Start-up
    // -----------------------------------------------------------------------

    /// Rebuild the state from one record already in the history (call for every
    /// record, in order, then [`IngestCore::start`]).
    pub fn replay(&mut self, at: Location, rec: &HistoryRecord) {
        match rec {
            HistoryRecord::Baseline(b) => {
                if b.part == 0 {
                    self.replay_baseline.insert(b.mab, (b.clone(), Vec::new()));
                }
                if let Some((_, nets)) = self.replay_baseline.get_mut(&b.mab) {
                    nets.extend_from_slice(&b.micronets);
                }
                if b.part + 1 == b.part_count
                    && let Some((head, nets)) = self.replay_baseline.remove(&b.mab)
                {
                    let m = self.mab_entry(head.mab, head.ruas);
                    m.last_baseline_us = head.recv_us;
                    match table_from(head.mab, head.mab_seq, &nets) {
                        Ok(t) if t.hash() == head.sha256 => {
                            m.table = Some(t);
                            m.gap_first = None;
                            m.needed = 0;
                            m.partial.retain(|&s, _| s > head.mab_seq);
                        }
                        _ => log::error!(
                            "history: the baseline of {} at sequence {} does not rebuild to \
                             its recorded hash; the MAB is out of sync until a new snapshot",
                            head.mab,
                            head.mab_seq
                        ),
                    }
                }
            }
            HistoryRecord::Payload(p) => {
                let Ok(payload) = Payload::new_checked(&p.payload) else {
                    return;
                };
                let id = payload.id();
                self.replaying = true;
                let items = self.process(Instant(0), &payload, Some(at));
                self.replaying = false;
                self.matched.clear();
                if items != p.items {
                    log::warn!(
                        "history: replaying payload {id} at {at} gives other effects than \
                         recorded; the recorded ones stand"
                    );
                }
                self.ruas[usize::from(id.ruas.get())].cursor = Some(Cursor {
                    epoch: id.epoch,
                    next: id.seq.next(),
                });
            }
            HistoryRecord::Gap(GapRecord::Payloads {
                ruas, epoch, last, ..
            }) => {
                self.ruas[usize::from(ruas.get())].cursor = Some(Cursor {
                    epoch: *epoch,
                    next: last.next(),
                });
            }
            HistoryRecord::Gap(GapRecord::MabSets { .. }) => {}
        }
    }

    /// After replay: RUASes never recorded boot (ask for their snapshot list);
    /// MABs out of sync ask for a snapshot.
    pub fn start(&mut self, now: Instant) {
        self.jobs.clear();
        for m in self.mabs.values_mut() {
            m.requested = false;
            m.next_request = now;
        }
        for i in 0..=RuasId::MAX {
            let r = &mut self.ruas[usize::from(i)];
            if r.key.is_some() && r.cursor.is_none() {
                r.booting = Some(now);
                self.push_job(Job::SnapshotList {
                    ruas: RuasId::masked(i),
                });
            }
        }
        let out: Vec<Mab> = self
            .mabs
            .iter()
            .filter(|(_, m)| m.table.is_none())
            .map(|(k, _)| *k)
            .collect();
        for mab in out {
            if let Some(m) = self.mabs.get_mut(&mab) {
                m.gap_first.get_or_insert(m.needed);
            }
            self.request_snapshot(now, mab);
        }
    }

    // -----------------------------------------------------------------------
    // Job results
    // -----------------------------------------------------------------------

    /// The MABs a RUAS offers snapshots of, or why the list could not be had.
    pub fn handle_snapshot_list(
        &mut self,
        now: Instant,
        ruas: RuasId,
        result: Result<Vec<Mab>, String>,
    ) {
        match result {
            Ok(mabs) => {
                self.ruas[usize::from(ruas.get())].listed = true;
                for mab in mabs {
                    let m = self.mab_entry(mab, ruas);
                    if m.table.is_none() {
                        m.awaiting.get_or_insert(now);
                    }
                    self.request_snapshot(now, mab);
                }
            }
            Err(e) => {
                log::warn!("history: snapshot list of RUAS {ruas}: {e}");
                self.metrics.snapshot_errors.at(0).inc();
                let r = &self.ruas[usize::from(ruas.get())];
                if r.booting
                    .is_some_and(|t| now < t + self.repair.snapshot_wait)
                {
                    self.push_job(Job::SnapshotList { ruas });
                }
            }
        }
    }

    /// A downloaded snapshot file (its standard name and bytes), or why there is
    /// none. A valid one that is new enough becomes the MAB's baseline.
    pub fn handle_snapshot(
        &mut self,
        now: Instant,
        now_us: u64,
        ruas: RuasId,
        mab: Mab,
        result: Result<(String, Vec<u8>), String>,
    ) {
        let retry = self.repair.resync_retry;
        let Some(m) = self.mabs.get_mut(&mab) else {
            return;
        };
        m.requested = false;
        m.next_request = now + retry;
        let (name, bytes) = match result {
            Ok(x) => x,
            Err(e) => {
                log::warn!("history: snapshot of {mab} from RUAS {ruas}: {e}");
                self.metrics.snapshot_errors.at(0).inc();
                return;
            }
        };
        let Some(key) = self.ruas[usize::from(ruas.get())].key else {
            return;
        };
        let (table, meta) =
            match Table::load_snapshot(&bytes, self.verifier.as_ref(), &key, Some(mab)) {
                Ok(x) => x,
                Err(e) => {
                    log::warn!("history: snapshot {name} of {mab} refused: {e}");
                    self.metrics.snapshot_errors.at(1).inc();
                    return;
                }
            };
        let Some(m) = self.mabs.get_mut(&mab) else {
            return;
        };
        if m.table.is_some() {
            return; // in sync already
        }
        if meta.mab_seq < m.needed {
            log::info!(
                "history: snapshot {name} of {mab} is at sequence {}, but sets up to {} \
                 were already seen; waiting for a newer one",
                meta.mab_seq,
                m.needed
            );
            self.metrics.snapshot_errors.at(2).inc();
            return;
        }
        let gap_first = m.gap_first.take();
        m.awaiting = None;
        m.needed = 0;
        m.partial.retain(|&s, _| s > meta.mab_seq);
        if let Some(first) = gap_first
            && first <= meta.mab_seq
        {
            self.append(&HistoryRecord::Gap(GapRecord::MabSets {
                recv_us: now_us,
                mab,
                first,
                last: meta.mab_seq,
            }));
            self.metrics.gaps.at(1).inc();
        }
        let hash = table.hash();
        let nets: Vec<(u64, u64, Etr)> = table
            .range(mab.start(), mab.len())
            .filter_map(|x| match x {
                crate::table::Mapping::Micronet(n) => Some((n.start, n.len, n.etr)),
                _ => None,
            })
            .collect();
        self.write_baseline(
            BaselineRecord {
                ruas: meta.ruas,
                mab,
                mab_seq: meta.mab_seq,
                created_us: meta.created_us,
                recv_us: now_us,
                sha256: hash,
                part: 0,
                part_count: 1,
                micronets: Vec::new(),
            },
            &nets,
        );
        log::info!(
            "history: baseline of {mab} at sequence {} from {name} ({} micronets)",
            meta.mab_seq,
            nets.len()
        );
        self.files.push((name, bytes.clone()));
        if let Some(m) = self.mabs.get_mut(&mab) {
            m.table = Some(table);
            m.last_baseline_us = now_us;
        }
        let r = &mut self.ruas[usize::from(ruas.get())];
        if r.booting.is_some()
            && let Some(p) = Snapshot::new_checked(&bytes)
                .ok()
                .and_then(|s| s.stream_position())
        {
            r.positions.push(Cursor {
                epoch: p.epoch,
                next: Seq(p.seq),
            });
        }
    }

    // -----------------------------------------------------------------------
    // Recording
    // -----------------------------------------------------------------------

    /// Apply one set (at the front of a payload's items) and say what became of
    /// it; `None` when it gets no item (already reflected, or out of sync).
    fn apply_set(
        &mut self,
        now: Instant,
        (mab, mab_seq, ruas): (Mab, u64, RuasId),
        record_index: u16,
        fragments: Vec<FragmentRef>,
        commands: &[Command],
    ) -> Option<Item> {
        let sets = &self.metrics.sets;
        let m = self.mabs.entry(mab).or_insert_with(|| MabState::new(ruas));
        let Some(t) = m.table.as_mut() else {
            m.needed = m.needed.max(mab_seq);
            sets.at(3).inc();
            self.request_snapshot(now, mab);
            return None;
        };
        let expected = t.mab_seq().wrapping_add(1);
        if mab_seq < expected {
            sets.at(2).inc();
            return None;
        }
        if mab_seq > expected {
            log::warn!(
                "history: {mab} jumped from set {} to {mab_seq}: sets were lost; out of sync \
                 until a snapshot",
                t.mab_seq()
            );
            m.table = None;
            m.gap_first = Some(expected);
            m.needed = mab_seq;
            sets.at(3).inc();
            self.request_snapshot(now, mab);
            return None;
        }
        let outcome = t.apply_at(mab_seq, commands);
        Some(Item::Set(match outcome {
            Ok(changes) => {
                sets.at(0).inc();
                SetItem {
                    outcome: SetOutcome::Applied,
                    record_index,
                    fragments,
                    ranges: changes
                        .iter()
                        .map(|c| ChangedRange {
                            start: c.start,
                            len: c.len,
                            etr: c.etr,
                        })
                        .collect(),
                }
            }
            Err(e) => {
                // The RUAS applied this set; this layout refuses it: it diverged.
                log::error!(
                    "history: set {mab_seq} of {mab} refused by the layout ({e}); out of sync"
                );
                sets.at(1).inc();
                m.table = None;
                m.gap_first = Some(mab_seq);
                m.needed = mab_seq;
                self.request_snapshot(now, mab);
                SetItem {
                    outcome: SetOutcome::Refused,
                    record_index,
                    fragments,
                    ranges: Vec::new(),
                }
            }
        }))
    }

    fn check_announcement(
        &mut self,
        now: Instant,
        a: &SnapshotAnnouncement,
        ruas: RuasId,
    ) -> SnapshotCheck {
        let metrics = self.metrics.clone();
        let m = self.mab_entry(a.mab, ruas);
        let check = match m.table.as_ref() {
            Some(t) if t.mab_seq() == a.mab_seq => {
                if t.hash() == a.sha256 {
                    SnapshotCheck::Matched
                } else {
                    SnapshotCheck::Differed
                }
            }
            _ => SnapshotCheck::NotChecked,
        };
        match check {
            SnapshotCheck::Matched => {
                metrics.announcements.at(0).inc();
                self.matched.push((*a, ruas));
            }
            SnapshotCheck::Differed => {
                metrics.announcements.at(1).inc();
                log::error!(
                    "history: the RUAS's hash of {} at set {} differs from this layout's; out \
                     of sync",
                    a.mab,
                    a.mab_seq
                );
                m.table = None;
                m.gap_first = Some(a.mab_seq);
                m.needed = a.mab_seq;
                self.request_snapshot(now, a.mab);
            }
            SnapshotCheck::NotChecked => {
                metrics.announcements.at(2).inc();
                // Out of sync and the RUAS has a new enough snapshot: ask now.
                if m.table.is_none() && a.mab_seq >= m.needed {
                    m.next_request = now;
                    self.request_snapshot(now, a.mab);
                }
            }
        }
        check
    }

    /// Work out the items of one payload, applying its sets. `at` is where the
    /// payload is recorded when known (replay); otherwise fragments get their
    /// location after the append.
    fn process(&mut self, now: Instant, p: &Payload<'_>, at: Option<Location>) -> Vec<Item> {
        let ruas = p.id().ruas;
        let mut items = Vec::new();
        for (i, rec) in p.records().enumerate() {
            let index = i as u16;
            match rec {
                RecordView::MabUpdate {
                    mab,
                    mab_seq,
                    commands,
                } => {
                    let cmds: Vec<Command> = commands.iter().collect();
                    if let Some(it) =
                        self.apply_set(now, (mab, mab_seq, ruas), index, Vec::new(), &cmds)
                    {
                        items.push(it);
                    }
                }
                RecordView::Fragment {
                    mab,
                    mab_seq,
                    index: fi,
                    count,
                    command_count,
                    chunk,
                } => {
                    let m = self.mab_entry(mab, ruas);
                    if m.table.as_ref().is_some_and(|t| mab_seq <= t.mab_seq()) {
                        continue;
                    }
                    if !m.partial.contains_key(&mab_seq) && m.partial.len() >= PARTIAL_SETS_MAX {
                        // Drop the oldest partial set: its fragments never came.
                        if let Some(&k) = m.partial.keys().next() {
                            m.partial.remove(&k);
                        }
                    }
                    let part = m.partial.entry(mab_seq).or_insert_with(|| Partial {
                        count,
                        command_count,
                        chunks: BTreeMap::new(),
                    });
                    if part.count != count || part.command_count != command_count {
                        continue; // inconsistent fragments: keep the first ones
                    }
                    let here = at.unwrap_or(PENDING);
                    part.chunks.insert(fi, (chunk.to_vec(), here));
                    if part.chunks.len() < usize::from(count) {
                        continue;
                    }
                    let Some(part) = m.partial.remove(&mab_seq) else {
                        continue;
                    };
                    let mut bytes = Vec::new();
                    let mut refs = Vec::new();
                    for (&k, (c, loc)) in &part.chunks {
                        bytes.extend_from_slice(c);
                        if k != fi {
                            refs.push(FragmentRef { index: k, at: *loc });
                        }
                    }
                    let Ok(cmds) = Commands::new_checked(mab.family(), part.command_count, &bytes)
                    else {
                        log::warn!(
                            "history: fragments of set {mab_seq} of {mab} do not form a command list"
                        );
                        continue;
                    };
                    let cmds: Vec<Command> = cmds.iter().collect();
                    if let Some(it) = self.apply_set(now, (mab, mab_seq, ruas), index, refs, &cmds)
                    {
                        items.push(it);
                    }
                }
                RecordView::Snapshot(a) => {
                    let check = self.check_announcement(now, &a, ruas);
                    items.push(Item::Snapshot(SnapshotItem {
                        record_index: index,
                        check,
                    }));
                }
                RecordView::Heartbeat { .. } | RecordView::Unknown { .. } => {}
            }
        }
        items
    }

    /// Record one payload (the cursor's).
    fn record(&mut self, now: Instant, now_us: u64, bytes: &[u8]) {
        let Ok(p) = Payload::new_checked(bytes) else {
            return;
        };
        let items = self.process(now, &p, None);
        let rec = HistoryRecord::Payload(PayloadRecord {
            recv_us: now_us,
            payload: bytes.to_vec(),
            items,
        });
        if let Some(at) = self.append(&rec) {
            self.metrics.payloads.inc();
            // Fragments buffered from this payload now know where it is.
            for m in self.mabs.values_mut() {
                for part in m.partial.values_mut() {
                    for (_, loc) in part.chunks.values_mut() {
                        if *loc == PENDING {
                            *loc = at;
                        }
                    }
                }
            }
        }
        for (a, ruas) in std::mem::take(&mut self.matched) {
            self.checkpoint(now_us, &a, ruas);
        }
    }

    /// After a payload whose announcement matched this layout: if the MAB's last
    /// baseline is old, record the layout as a baseline — provable, since the
    /// RUAS signed its hash in the announcement just recorded (history.md §5).
    /// Only when the layout is still at the announced sequence (no later set of
    /// the MAB came in the same payload).
    fn checkpoint(&mut self, now_us: u64, a: &SnapshotAnnouncement, ruas: RuasId) {
        let interval = self.repair.checkpoint_us;
        let Some(m) = self.mabs.get(&a.mab) else {
            return;
        };
        let Some(t) = m.table.as_ref() else { return };
        if interval == 0
            || now_us.saturating_sub(m.last_baseline_us) < interval
            || t.mab_seq() != a.mab_seq
        {
            return;
        }
        let nets: Vec<Micronet3> = t
            .range(a.mab.start(), a.mab.len())
            .filter_map(|x| match x {
                crate::table::Mapping::Micronet(n) => Some((n.start, n.len, n.etr)),
                _ => None,
            })
            .collect();
        self.write_baseline(
            BaselineRecord {
                ruas,
                mab: a.mab,
                mab_seq: a.mab_seq,
                created_us: a.created_us,
                recv_us: now_us,
                sha256: a.sha256,
                part: 0,
                part_count: 1,
                micronets: Vec::new(),
            },
            &nets,
        );
        if let Some(m) = self.mabs.get_mut(&a.mab) {
            m.last_baseline_us = now_us;
        }
        log::info!(
            "history: checkpoint baseline of {} at set {} ({} micronets)",
            a.mab,
            a.mab_seq,
            nets.len()
        );
    }

    /// Append a baseline in parts; `head` gives every field but the parts.
    fn write_baseline(&mut self, head: BaselineRecord, nets: &[Micronet3]) {
        let mut parts: Vec<&[Micronet3]> = nets.chunks(BASELINE_PART_MICRONETS).collect();
        if parts.is_empty() {
            parts.push(&[]);
        }
        let count = parts.len() as u32;
        for (i, p) in parts.into_iter().enumerate() {
            self.append(&HistoryRecord::Baseline(BaselineRecord {
                part: i as u32,
                part_count: count,
                micronets: p.to_vec(),
                ..head.clone()
            }));
        }
        self.metrics.baselines.inc();
    }

    /// `true` while a RUAS's stream must wait for snapshots.
    fn held(&self, now: Instant, r: usize) -> bool {
        let st = &self.ruas[r];
        let wait = self.repair.snapshot_wait;
        if let Some(t) = st.booting {
            let pending = !st.listed
                || self
                    .mabs
                    .values()
                    .any(|m| usize::from(m.ruas.get()) == r && m.awaiting.is_some());
            return pending && now < t + wait;
        }
        self.mabs
            .values()
            .any(|m| usize::from(m.ruas.get()) == r && m.awaiting.is_some_and(|t| now < t + wait))
    }

    /// Record every payload that is next in its RUAS's sequence, fetch or give up
    /// on missing ones. Returns payloads recorded.
    pub fn drain(&mut self, now: Instant, now_us: u64, trackers: &Trackers) -> usize {
        let mut done = 0;
        let mut waiting = 0;
        for r in 0..=usize::from(RuasId::MAX) {
            if self.ruas[r].key.is_none() {
                continue;
            }
            let ruas = RuasId::masked(r as u8);
            if self.held(now, r) {
                continue;
            }
            let Some((t_epoch, highest)) = trackers.get(ruas) else {
                continue;
            };
            // Boot ends: the cursor starts at the earliest stream position of the
            // snapshots loaded, or at the oldest payload buffered.
            if self.ruas[r].booting.take().is_some() || self.ruas[r].cursor.is_none() {
                let st = &mut self.ruas[r];
                for m in self.mabs.values_mut() {
                    if m.ruas == ruas {
                        m.awaiting = None;
                    }
                }
                let pos = st
                    .positions
                    .iter()
                    .filter(|c| c.epoch == t_epoch)
                    .min_by(|a, b| {
                        a.next
                            .serial_cmp(b.next)
                            .unwrap_or(core::cmp::Ordering::Equal)
                    })
                    .copied();
                st.positions.clear();
                let cursor = pos.unwrap_or_else(|| {
                    let mut s = highest;
                    let mut n = 0u32;
                    while n < self.repair.range_max.saturating_mul(64)
                        && self.buffer.contains(PayloadId {
                            ruas,
                            epoch: t_epoch,
                            seq: s.wrapping_add(u32::MAX),
                        })
                    {
                        s = s.wrapping_add(u32::MAX);
                        n += 1;
                    }
                    Cursor {
                        epoch: t_epoch,
                        next: s,
                    }
                });
                self.ruas[r].cursor = Some(cursor);
            }
            let Some(mut c) = self.ruas[r].cursor else {
                continue;
            };
            // A new epoch: the RUAS lost its sequence state. Finish the old one
            // only by giving up on what is missing.
            if t_epoch > c.epoch {
                let since = *self.ruas[r].blocked_since.get_or_insert(now);
                if now < since + self.repair.give_up {
                    if let Some(id) = self.next_buffered(ruas, c) {
                        self.take(now, now_us, r, id);
                        done += 1;
                    }
                    waiting += 1;
                    continue;
                }
                self.append(&HistoryRecord::Gap(GapRecord::Payloads {
                    recv_us: now_us,
                    ruas,
                    epoch: c.epoch,
                    first: c.next,
                    last: c.next,
                }));
                self.metrics.gaps.at(0).inc();
                let first = self.lowest_buffered(ruas, t_epoch, highest);
                c = Cursor {
                    epoch: t_epoch,
                    next: first,
                };
                self.ruas[r].cursor = Some(c);
                self.ruas[r].blocked_since = None;
            }
            if t_epoch < c.epoch {
                continue;
            }
            while done < DRAIN_PAYLOADS_MAX {
                let Some(c) = self.ruas[r].cursor else { break };
                if c.next.is_after(highest) {
                    self.ruas[r].blocked_since = None;
                    break;
                }
                let id = PayloadId {
                    ruas,
                    epoch: c.epoch,
                    seq: c.next,
                };
                if self.buffer.contains(id) {
                    self.take(now, now_us, r, id);
                    done += 1;
                    continue;
                }
                // Missing: wait, ask peers, and in the end give up.
                waiting += 1;
                let since = *self.ruas[r].blocked_since.get_or_insert(now);
                if now >= since + self.repair.give_up {
                    // The gap runs to the next payload held (or the highest seen).
                    let mut last = c.next;
                    let mut n = 0;
                    while n < self.repair.range_max
                        && last != highest
                        && !self.buffer.contains(PayloadId {
                            seq: last.next(),
                            ..id
                        })
                    {
                        last = last.next();
                        n += 1;
                    }
                    log::warn!(
                        "history: payloads {ruas}/{}/{}..={} never came; recorded as a gap",
                        c.epoch,
                        c.next,
                        last
                    );
                    self.append(&HistoryRecord::Gap(GapRecord::Payloads {
                        recv_us: now_us,
                        ruas,
                        epoch: c.epoch,
                        first: c.next,
                        last,
                    }));
                    self.metrics.gaps.at(0).inc();
                    self.ruas[r].cursor = Some(Cursor {
                        epoch: c.epoch,
                        next: last.next(),
                    });
                    self.ruas[r].blocked_since = None;
                    continue;
                }
                if self.peers > 0
                    && now >= since + self.repair.grace
                    && now >= self.ruas[r].next_fetch
                {
                    let span = (highest.0.wrapping_sub(c.next.0)).min(self.repair.range_max - 1);
                    let st = &mut self.ruas[r];
                    let peer = st.rr % self.peers;
                    st.rr = st.rr.wrapping_add(1);
                    st.next_fetch = now + self.repair.retry;
                    self.push_job(Job::Payloads(FetchJob {
                        peer,
                        ruas,
                        epoch: c.epoch,
                        from: c.next,
                        to: c.next.wrapping_add(span),
                    }));
                }
                break;
            }
        }
        self.metrics.behind.set(waiting as i64);
        self.metrics
            .out_of_sync
            .set(self.mabs.values().filter(|m| m.table.is_none()).count() as i64);
        done
    }

    fn take(&mut self, now: Instant, now_us: u64, r: usize, id: PayloadId) {
        if let Some(bytes) = self.buffer.get(id) {
            self.record(now, now_us, &bytes);
        }
        self.ruas[r].cursor = Some(Cursor {
            epoch: id.epoch,
            next: id.seq.next(),
        });
        self.ruas[r].blocked_since = None;
    }

    /// The cursor's payload if buffered (old epoch).
    fn next_buffered(&self, ruas: RuasId, c: Cursor) -> Option<PayloadId> {
        let id = PayloadId {
            ruas,
            epoch: c.epoch,
            seq: c.next,
        };
        self.buffer.contains(id).then_some(id)
    }

    fn lowest_buffered(&self, ruas: RuasId, epoch: u32, highest: Seq) -> Seq {
        let mut s = highest;
        let mut n = 0u32;
        while n < self.repair.range_max.saturating_mul(64)
            && self.buffer.contains(PayloadId {
                ruas,
                epoch,
                seq: s.wrapping_add(u32::MAX),
            })
        {
            s = s.wrapping_add(u32::MAX);
            n += 1;
        }
        s
    }

    /// Retry snapshot requests for MABs out of sync.
    fn resync(&mut self, now: Instant) {
        let due: Vec<Mab> = self
            .mabs
            .iter()
            .filter(|(_, m)| m.table.is_none() && !m.requested && now >= m.next_request)
            .map(|(k, _)| *k)
            .collect();
        for mab in due {
            self.request_snapshot(now, mab);
        }
        for r in 0..=RuasId::MAX {
            let st = &self.ruas[usize::from(r)];
            if st.booting.is_some() && !st.listed {
                self.push_job(Job::SnapshotList {
                    ruas: RuasId::masked(r),
                });
            }
        }
    }
}

/// A micronet as `(start, len, etr)`.
type Micronet3 = (u64, u64, Etr);

/// A placeholder location for fragments of the payload being recorded.
const PENDING: Location = Location {
    segment: u32::MAX,
    offset: u32::MAX,
};

impl IngestCore {
    /// Timers (resync requests), then record what is ready.
    pub fn handle_timeout(&mut self, now: Instant, now_us: u64, trackers: &Trackers) {
        self.resync(now);
        self.drain(now, now_us, trackers);
    }
}

/// What the feed side holds, per RUAS: the epoch and the highest sequence seen
/// (everything buffered of that epoch is at or below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trackers(Vec<Option<(u32, Seq)>>);

impl Default for Trackers {
    fn default() -> Self {
        Trackers(vec![None; usize::from(RuasId::MAX) + 1])
    }
}

impl Trackers {
    /// Read them from an MPS core's sequence table.
    pub fn from_mps(mps: &MpsCore) -> Trackers {
        let mut t = Trackers::default();
        for (r, tr) in mps.seq().iter() {
            if let (Some(e), Some(h)) = (tr.epoch(), tr.highest()) {
                t.0[usize::from(r.get())] = Some((e, h));
            }
        }
        t
    }

    /// One RUAS's epoch and highest sequence.
    pub fn get(&self, ruas: RuasId) -> Option<(u32, Seq)> {
        self.0.get(usize::from(ruas.get())).copied().flatten()
    }

    /// Say what is held of one RUAS (drivers other than the feed loop, tests).
    pub fn set(&mut self, ruas: RuasId, epoch: u32, highest: Seq) {
        if let Some(x) = self.0.get_mut(usize::from(ruas.get())) {
            *x = Some((epoch, highest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::workload::Workload;
    use crate::history::{Store, StoreConfig};
    use crate::sign::{Ed25519Verifier, KeyPair};
    use ivip_wire::payload::{PayloadRepr, Record};
    use ivip_wire::snapshot::StreamPosition;

    const T0: u64 = 1_764_000_000_000_000;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ivip-ingest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn sign(key: &KeyPair, p: &PayloadRepr) -> Vec<u8> {
        let mut b = p.to_vec().unwrap();
        let n = b.len() - 64;
        let sig = key.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        b
    }

    fn core(d: &std::path::Path, key: &KeyPair, buffer: &Arc<PayloadBuffer>) -> IngestCore {
        let (store, _) = Store::open(
            d,
            StoreConfig {
                segment_bytes_max: 16 << 10,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        IngestCore::new(
            buffer.clone(),
            store,
            &[(RuasId::new(5).unwrap(), key.public())],
            Arc::new(Ed25519Verifier),
            RepairSettings {
                checkpoint_us: 1,
                ..RepairSettings::default()
            },
            0,
            &Registry::new(),
        )
    }

    /// history.md §5: a matched announcement becomes a checkpoint baseline, and a
    /// restart replays only from the newest baselines to the same layout.
    #[test]
    fn matched_announcements_checkpoint_the_layout_and_restarts_replay_from_them() {
        let d = tmp("checkpoint");
        let key = KeyPair::from_seed(&[6; 32]);
        let ruas = RuasId::new(5).unwrap();
        let mab: Mab = "20.0.0.0/20".parse().unwrap();
        let mut w = Workload::new(4, &[mab], 200, 4, T0, 10_000);
        let nets: Vec<Micronet3> = w
            .baselines(T0)
            .into_iter()
            .filter_map(|r| match r {
                HistoryRecord::Baseline(b) => Some(b.micronets),
                _ => None,
            })
            .flatten()
            .collect();
        let mut ruas_table = table_from(mab, 0, &nets).unwrap();
        ruas_table.publish();
        let snap = ruas_table.reader().load_owned().write_snapshot_with(
            &key,
            ruas,
            T0,
            &StreamPosition { epoch: 1, seq: 1 }.to_record(),
        );
        let buffer = Arc::new(PayloadBuffer::new(Duration::from_secs(600), 1 << 26));
        let mut c = core(&d, &key, &buffer);
        c.start(Instant(0));
        c.handle_snapshot_list(Instant(0), ruas, Ok(vec![mab]));
        c.handle_snapshot(Instant(0), T0, ruas, mab, Ok(("s".into(), snap)));
        let mut trackers = Trackers::default();
        let mut last = Seq(0);
        for i in 0..300u32 {
            let (rec, _) = w.next_payload(4);
            let HistoryRecord::Payload(p) = rec else {
                unreachable!()
            };
            let pl = Payload::new_checked(&p.payload).unwrap();
            let mut repr = PayloadRepr::parse(&pl);
            for r in pl.records() {
                if let RecordView::MabUpdate {
                    mab_seq, commands, ..
                } = r
                {
                    ruas_table
                        .apply_at(mab_seq, &commands.iter().collect::<Vec<_>>())
                        .unwrap();
                }
            }
            if i % 50 == 49 {
                repr.records.push(Record::Snapshot(SnapshotAnnouncement {
                    mab,
                    mab_seq: ruas_table.mab_seq(),
                    created_us: repr.timestamp_us,
                    sha256: ruas_table.hash(),
                }));
            }
            let b = sign(&key, &repr);
            buffer.insert(Instant(1), repr.id, &b);
            last = repr.id.seq;
            trackers.set(ruas, 1, last);
            c.drain(Instant(1), T0 + u64::from(i), &trackers);
            c.store_mut().commit().unwrap();
        }
        assert_eq!(c.progress()[0].next_seq, last.next().0);
        assert_eq!(
            c.metrics().announcements.at(0).get(),
            6,
            "every announcement matched"
        );
        assert!(
            c.metrics().baselines.get() >= 6,
            "the boot baseline and checkpoints"
        );
        let want = c.table(&mab).unwrap().hash();
        assert_eq!(want, ruas_table.hash());
        let r = c.store().reader();
        drop(c);
        // A restart replays from the newest checkpoint only.
        let from = r.replay_start();
        assert!(from > 0, "the newest baseline is in a later segment");
        let mut c2 = core(&d, &key, &buffer);
        let mut n = 0;
        c2.store()
            .reader()
            .replay(from, |at, rec| {
                c2.replay(at, &rec);
                n += 1;
            })
            .unwrap();
        c2.start(Instant(2));
        assert_eq!(c2.table(&mab).map(Table::hash), Some(want));
        assert_eq!(c2.progress()[0].next_seq, last.next().0);
        assert!(c2.take_jobs().is_empty(), "nothing to ask for: in sync");
        let mut total = 0;
        c2.store().reader().replay(0, |_, _| total += 1).unwrap();
        assert!(n < total, "replayed {n} of {total} records");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
