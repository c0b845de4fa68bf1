//! The QSD's copy of the mapping database, kept in step with the update stream
//! (seed s1.1, s3.12, s4.1.2; spec: payload.md §2, snapshot.md §3.3.1).
//!
//! Sans-IO. The driver hands it payloads whose signatures it has verified (from
//! feeds, or fetched from MPSes), snapshot files it downloaded, and time; it applies
//! every MAB's command sets strictly in per-MAB order to the lock-free
//! [`Database`], and hands back [`Event`]s: what to fetch, which ranges changed
//! (for notifications), which MABs became ready or must be resynced.
//!
//! # Per MAB
//! * **Loading** (boot, or resync after a divergence): the MAB is not in the
//!   database, so queries for it get `resyncing`; its sets are buffered; its newest
//!   snapshot is fetched (the next server on each failure). When a snapshot at
//!   per-MAB sequence `S` verifies, the MAB is loaded, buffered sets above `S` are
//!   applied in order, and it is **Ready**.
//! * **Ready**: a set with the next sequence is applied at once; later ones wait for
//!   the ones before them. A snapshot announcement at the sequence just applied is
//!   checked against the canonical hash; a difference, or a set that does not apply,
//!   means this copy diverged: the MAB goes back to Loading while the others serve.
//!
//! # Per RUAS
//! Payload sequence gaps are noticed by [`SeqTracker`]; after `gap_wait` (the other
//! feed may still bring the payload) the missing runs are fetched from an MPS, the
//! next MPS on each retry, until found or `give_up`. A snapshot's stream position
//! says from which payload on its later sets are carried; payloads between it and
//! the first one the feed brought are fetched too, so nothing falls between.
//!
//! Not here: signature checks (the driver batches them), sockets, HTTP.

use std::collections::{BTreeMap, HashMap};

use ivip_wire::command::Commands;
use ivip_wire::payload::{Payload, RecordView};
use ivip_wire::snapshot::{Snapshot, StreamPosition};
use ivip_wire::{Command, Family, Mab, RuasId, Seq};

use crate::seq::{Observation, SeqTracker};
use crate::sign::{PublicKey, Verifier};
use crate::table::{Database, DbReader, Table};
use crate::time::{Duration, Instant};

/// Timers and bounds.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// How long a gap may wait for the other feed before an MPS is asked.
    pub gap_wait: Duration,
    /// Ask again (the next MPS) after this long without an answer.
    pub fetch_retry: Duration,
    /// Stop looking for a missing payload after this long.
    pub give_up: Duration,
    /// Wait this long before asking for a snapshot again after a failure.
    pub snapshot_retry: Duration,
    /// A Ready MAB whose next set has been missing this long, with nothing left to
    /// fetch, is resynced from a snapshot.
    pub stuck_after: Duration,
    /// Most sets buffered per MAB (boot buffer and out-of-order sets).
    pub pending_max: usize,
    /// Most missing payloads tracked per RUAS.
    pub missing_max: usize,
    /// Most sequence numbers per fetch.
    pub fetch_range_max: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            gap_wait: Duration::from_ms(50),
            fetch_retry: Duration::from_ms(250),
            give_up: Duration::from_secs(60),
            snapshot_retry: Duration::from_ms(500),
            stuck_after: Duration::from_secs(5),
            pending_max: 1 << 20,
            missing_max: 1 << 16,
            fetch_range_max: 1024,
        }
    }
}

/// A RUAS as the directory describes it.
#[derive(Debug, Clone)]
pub struct RuasInfo {
    /// Its id.
    pub id: RuasId,
    /// Its payload and snapshot key.
    pub key: PublicKey,
    /// Its MABs.
    pub mabs: Vec<Mab>,
}

/// What the driver should do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Fetch payloads `from..=to` of `(ruas, epoch)` from MPS number `mps` (an index
    /// the driver maps to its configured list, modulo its length).
    FetchPayloads {
        /// The RUAS.
        ruas: RuasId,
        /// The epoch.
        epoch: u32,
        /// First sequence.
        from: Seq,
        /// Last sequence (inclusive).
        to: Seq,
        /// Which MPS to ask.
        mps: usize,
    },
    /// Fetch the newest snapshot of `mab` from snapshot server number `attempt`
    /// (modulo the RUAS's list).
    FetchSnapshot {
        /// The MAB.
        mab: Mab,
        /// Its RUAS.
        ruas: RuasId,
        /// Which try this is (0, 1, ...).
        attempt: u32,
    },
    /// The mapping of `[start, start + len)` changed (notify watchers).
    Changed {
        /// Family.
        family: Family,
        /// First unit.
        start: u64,
        /// Length.
        len: u64,
    },
    /// A set was applied.
    Applied {
        /// The MAB.
        mab: Mab,
        /// Its per-MAB sequence.
        mab_seq: u64,
    },
    /// A MAB became ready at this sequence.
    Ready {
        /// The MAB.
        mab: Mab,
        /// Its per-MAB sequence.
        mab_seq: u64,
    },
    /// A MAB diverged (or got stuck) and is being reloaded from a snapshot.
    Resync {
        /// The MAB.
        mab: Mab,
        /// Why.
        reason: &'static str,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamStats {
    /// Payloads processed.
    pub payloads: u64,
    /// Payloads already seen (repeats from the other feed).
    pub repeats: u64,
    /// Payload sequence numbers skipped on arrival (each later fetched or given up).
    pub gaps: u64,
    /// Sets applied.
    pub sets_applied: u64,
    /// Sets for MABs not in the directory, or of another RUAS's MAB.
    pub foreign_sets: u64,
    /// Hash checks passed.
    pub hash_ok: u64,
    /// Hash checks failed (each starts a resync).
    pub hash_mismatch: u64,
    /// Announcements that could not be checked (the table had moved past them).
    pub hash_skipped: u64,
    /// Resyncs started.
    pub resyncs: u64,
    /// Snapshots loaded.
    pub snapshots_loaded: u64,
    /// Snapshots refused (bad signature, hash, MAB, format).
    pub snapshots_refused: u64,
    /// Payloads asked of MPSes.
    pub fetch_requests: u64,
    /// Missing payloads given up on.
    pub given_up: u64,
    /// Fragmented sets that could not be reassembled.
    pub bad_fragments: u64,
    /// Sets dropped because a MAB's buffer was full.
    pub pending_overflow: u64,
}

#[derive(Debug)]
enum State {
    Loading {
        attempt: u32,
        next_try: Instant,
        in_flight: bool,
    },
    Ready,
}

#[derive(Debug)]
struct MabEntry {
    ruas: RuasId,
    state: State,
    applied: u64,
    pending: BTreeMap<u64, Vec<Command>>,
    announced: BTreeMap<u64, [u8; 32]>,
    /// Since when the next set has been missing while later ones wait.
    waiting_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Fragments {
    count: u8,
    command_count: u16,
    chunks: BTreeMap<u8, Vec<u8>>,
}

#[derive(Debug)]
struct RuasState {
    key: PublicKey,
    seq: SeqTracker,
    /// The first payload the feed brought in the current epoch.
    first: Option<(u32, Seq)>,
    fragments: HashMap<(Mab, u64), Fragments>,
    next_fetch: Instant,
    rr: usize,
    /// A loaded snapshot's stream position, kept until the feed's first payload
    /// says where the feed began (then the payloads between are fetched).
    boot_fill: Option<StreamPosition>,
}

/// The stream core.
pub struct Stream {
    config: StreamConfig,
    db: Database,
    ruases: BTreeMap<RuasId, RuasState>,
    mabs: BTreeMap<Mab, MabEntry>,
    events: Vec<Event>,
    stats: StreamStats,
    dirty: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({} MABs)", self.mabs.len())
    }
}

/// Most fragmented sets being reassembled per RUAS.
const FRAGMENTED_SETS_MAX: usize = 1024;

impl Stream {
    /// A stream for the RUASes and MABs of the directory; every MAB starts Loading.
    pub fn new(config: StreamConfig, directory: &[RuasInfo], now: Instant) -> Stream {
        let mut s = Stream {
            config,
            db: Database::new(),
            ruases: BTreeMap::new(),
            mabs: BTreeMap::new(),
            events: Vec::new(),
            stats: StreamStats::default(),
            dirty: false,
        };
        s.set_directory(directory, now);
        s
    }

    /// Replace the directory (seed s5: fetched daily): new RUASes and MABs start
    /// Loading, removed ones are dropped, the others keep their state.
    pub fn set_directory(&mut self, directory: &[RuasInfo], now: Instant) {
        let mut keep: Vec<Mab> = Vec::new();
        for r in directory {
            let st = self.ruases.entry(r.id).or_insert_with(|| RuasState {
                key: r.key,
                seq: SeqTracker::new(self.config.missing_max),
                first: None,
                fragments: HashMap::new(),
                next_fetch: now,
                rr: 0,
                boot_fill: None,
            });
            if st.key != r.key {
                // A new key: nothing of the old one is trusted any more.
                st.key = r.key;
            }
            for m in &r.mabs {
                keep.push(*m);
                self.mabs.entry(*m).or_insert_with(|| MabEntry {
                    ruas: r.id,
                    state: State::Loading {
                        attempt: 0,
                        next_try: now,
                        in_flight: false,
                    },
                    applied: 0,
                    pending: BTreeMap::new(),
                    announced: BTreeMap::new(),
                    waiting_since: None,
                });
            }
        }
        let ids: Vec<RuasId> = directory.iter().map(|r| r.id).collect();
        self.ruases.retain(|id, _| ids.contains(id));
        let gone: Vec<Mab> = self
            .mabs
            .keys()
            .filter(|m| !keep.contains(m))
            .copied()
            .collect();
        for m in gone {
            self.mabs.remove(&m);
            self.db.remove(&m);
        }
    }

    /// A lock-free reader for query workers.
    pub fn reader(&self) -> DbReader {
        self.db.reader()
    }

    /// The database (read-only use).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The key of a RUAS, for the driver's signature checks.
    pub fn key_of(&self, ruas: RuasId) -> Option<PublicKey> {
        self.ruases.get(&ruas).map(|r| r.key)
    }

    /// Every MAB with its state: `Some(seq)` when ready at `seq`, `None` when loading.
    pub fn mab_states(&self) -> Vec<(Mab, Option<u64>)> {
        self.mabs
            .iter()
            .map(|(m, e)| (*m, matches!(e.state, State::Ready).then_some(e.applied)))
            .collect()
    }

    /// Missing payloads tracked, over all RUASes.
    pub fn missing(&self) -> usize {
        self.ruases.values().map(|r| r.seq.missing_len()).sum()
    }

    /// Take the events produced so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// `true` when a feed payload with this identity would be new (not a repeat):
    /// checked before the signature, to spend no time verifying repeats.
    pub fn is_new(&self, id: ivip_wire::PayloadId) -> bool {
        let Some(r) = self.ruases.get(&id.ruas) else {
            return false;
        };
        match (r.seq.epoch(), r.seq.highest()) {
            (Some(e), Some(h)) if e == id.epoch => id.seq.is_after(h) || r.seq.is_missing(id.seq),
            (Some(e), _) => id.epoch > e,
            _ => true,
        }
    }

    /// Process one payload whose signature the driver verified. `fetched`: it came
    /// from an MPS on request (so it is processed even if older than the feed's
    /// first payload).
    pub fn handle_payload(&mut self, now: Instant, p: &Payload<'_>, fetched: bool) {
        let id = p.id();
        let Some(r) = self.ruases.get_mut(&id.ruas) else {
            return;
        };
        let obs = r.seq.observe(now, id.epoch, id.seq);
        if let Observation::Ahead { gap } = obs {
            self.stats.gaps += u64::from(gap);
        }
        if matches!(obs, Observation::Started | Observation::NewEpoch { .. }) {
            r.first = Some((id.epoch, id.seq));
            if let Some(pos) = r.boot_fill.take() {
                self.fetch_from_position(id.ruas, pos);
            }
        }
        if !obs.is_new() && !fetched {
            self.stats.repeats += 1;
            return;
        }
        self.stats.payloads += 1;
        for rec in p.records() {
            match rec {
                RecordView::MabUpdate {
                    mab,
                    mab_seq,
                    commands,
                } => self.set_arrived(now, id.ruas, mab, mab_seq, commands.iter().collect()),
                RecordView::Fragment {
                    mab,
                    mab_seq,
                    index,
                    count,
                    command_count,
                    chunk,
                } => {
                    if let Some(cmds) =
                        self.fragment(id.ruas, mab, mab_seq, index, count, command_count, chunk)
                    {
                        self.set_arrived(now, id.ruas, mab, mab_seq, cmds);
                    }
                }
                RecordView::Snapshot(a) => {
                    if let Some(e) = self.mabs.get_mut(&a.mab)
                        && e.ruas == id.ruas
                        && a.mab_seq >= e.applied
                    {
                        e.announced.insert(a.mab_seq, a.sha256);
                        self.check_announced(a.mab);
                    }
                }
                RecordView::Heartbeat { .. } | RecordView::Unknown { .. } => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fragment(
        &mut self,
        ruas: RuasId,
        mab: Mab,
        mab_seq: u64,
        index: u8,
        count: u8,
        command_count: u16,
        chunk: &[u8],
    ) -> Option<Vec<Command>> {
        let r = self.ruases.get_mut(&ruas)?;
        if !r.fragments.contains_key(&(mab, mab_seq)) && r.fragments.len() >= FRAGMENTED_SETS_MAX {
            self.stats.bad_fragments += 1;
            return None;
        }
        let f = r.fragments.entry((mab, mab_seq)).or_default();
        if f.chunks.is_empty() {
            f.count = count;
            f.command_count = command_count;
        } else if f.count != count || f.command_count != command_count {
            r.fragments.remove(&(mab, mab_seq));
            self.stats.bad_fragments += 1;
            return None;
        }
        f.chunks.insert(index, chunk.to_vec());
        if f.chunks.len() < usize::from(f.count) {
            return None;
        }
        let f = r.fragments.remove(&(mab, mab_seq))?;
        let bytes: Vec<u8> = f.chunks.into_values().flatten().collect();
        match Commands::new_checked(mab.family(), f.command_count, &bytes) {
            Ok(c) => Some(c.iter().collect()),
            Err(_) => {
                self.stats.bad_fragments += 1;
                None
            }
        }
    }

    fn set_arrived(
        &mut self,
        now: Instant,
        ruas: RuasId,
        mab: Mab,
        mab_seq: u64,
        cmds: Vec<Command>,
    ) {
        let pending_max = self.config.pending_max;
        let Some(e) = self.mabs.get_mut(&mab) else {
            self.stats.foreign_sets += 1;
            return;
        };
        // A RUAS may only change its own MABs (the directory says whose they are).
        if e.ruas != ruas {
            self.stats.foreign_sets += 1;
            return;
        }
        if mab_seq <= e.applied && matches!(e.state, State::Ready) {
            return;
        }
        if e.pending.len() >= pending_max && !e.pending.contains_key(&mab_seq) {
            self.stats.pending_overflow += 1;
            return;
        }
        e.pending.insert(mab_seq, cmds);
        if matches!(e.state, State::Ready) {
            self.apply_ready(now, mab);
        }
    }

    /// Apply every pending set that is next in line.
    fn apply_ready(&mut self, now: Instant, mab: Mab) {
        loop {
            let Some(e) = self.mabs.get_mut(&mab) else {
                return;
            };
            let next = e.applied + 1;
            // Drop what is already applied.
            while let Some((&s, _)) = e.pending.first_key_value() {
                if s < next {
                    e.pending.pop_first();
                } else {
                    break;
                }
            }
            let Some(cmds) = e.pending.remove(&next) else {
                e.waiting_since = if e.pending.is_empty() {
                    None
                } else {
                    e.waiting_since.or(Some(now))
                };
                return;
            };
            let Some(t) = self.db.table_mut(&mab) else {
                return;
            };
            match t.apply_at(next, &cmds) {
                Ok(changes) => {
                    e.applied = next;
                    e.waiting_since = None;
                    self.stats.sets_applied += 1;
                    self.dirty = true;
                    for c in changes {
                        self.events.push(Event::Changed {
                            family: mab.family(),
                            start: c.start,
                            len: c.len,
                        });
                    }
                    self.events.push(Event::Applied { mab, mab_seq: next });
                    if !self.check_announced(mab) {
                        return;
                    }
                }
                Err(err) => {
                    log::warn!("set {mab}#{next} does not apply here ({err}): this copy diverged");
                    self.resync(mab, "a set did not apply");
                    return;
                }
            }
        }
    }

    /// Check the announcements at the applied sequence; `false` when one failed and
    /// the MAB is being resynced.
    fn check_announced(&mut self, mab: Mab) -> bool {
        let Some(e) = self.mabs.get_mut(&mab) else {
            return false;
        };
        if !matches!(e.state, State::Ready) {
            return true;
        }
        let applied = e.applied;
        let stale: Vec<u64> = e.announced.range(..applied).map(|(s, _)| *s).collect();
        for s in stale {
            e.announced.remove(&s);
            self.stats.hash_skipped += 1;
        }
        let Some(want) = e.announced.remove(&applied) else {
            return true;
        };
        let Some(t) = self.db.table(&mab) else {
            return true;
        };
        if t.hash() == want {
            self.stats.hash_ok += 1;
            true
        } else {
            self.stats.hash_mismatch += 1;
            log::warn!(
                "MAB {mab} at sequence {applied}: hash differs from the RUAS's announcement"
            );
            self.resync(mab, "hash mismatch");
            false
        }
    }

    /// Reload a MAB from a snapshot while the others keep serving.
    fn resync(&mut self, mab: Mab, reason: &'static str) {
        let Some(e) = self.mabs.get_mut(&mab) else {
            return;
        };
        self.stats.resyncs += 1;
        e.state = State::Loading {
            attempt: 0,
            next_try: Instant::ZERO,
            in_flight: false,
        };
        e.announced.clear();
        e.waiting_since = None;
        self.db.remove(&mab);
        self.events.push(Event::Resync { mab, reason });
    }

    /// The answer to a [`Event::FetchSnapshot`]: the file, or why there is none.
    pub fn handle_snapshot(
        &mut self,
        now: Instant,
        mab: Mab,
        result: Result<Vec<u8>, String>,
        verifier: &dyn Verifier,
    ) {
        let retry = self.config.snapshot_retry;
        let Some(e) = self.mabs.get_mut(&mab) else {
            return;
        };
        let State::Loading { attempt, .. } = e.state else {
            return;
        };
        let Some(key) = self.ruases.get(&e.ruas).map(|r| r.key) else {
            return;
        };
        let loaded = result.and_then(|bytes| {
            let pos = Snapshot::new_checked(&bytes)
                .ok()
                .and_then(|s| s.stream_position());
            Table::load_snapshot(&bytes, verifier, &key, Some(mab))
                .map(|(t, _)| (t, pos))
                .map_err(|e| e.to_string())
        });
        let (table, pos) = match loaded {
            Ok(x) => x,
            Err(why) => {
                log::warn!("snapshot of {mab} (try {attempt}): {why}");
                self.stats.snapshots_refused += 1;
                e.state = State::Loading {
                    attempt: attempt + 1,
                    next_try: now + retry,
                    in_flight: false,
                };
                return;
            }
        };
        let seq = table.mab_seq();
        e.applied = seq;
        e.state = State::Ready;
        e.announced.retain(|s, _| *s >= seq);
        let ruas = e.ruas;
        let first_pending = e.pending.keys().find(|s| **s > seq).copied();
        let _ = self.db.insert(table);
        self.stats.snapshots_loaded += 1;
        self.dirty = true;
        self.events.push(Event::Ready { mab, mab_seq: seq });
        // The whole MAB may have changed: every watcher is told.
        self.events.push(Event::Changed {
            family: mab.family(),
            start: mab.start(),
            len: mab.len(),
        });
        // Sets between the snapshot and the first the feed brought are carried by
        // payloads from the snapshot's stream position on: fetch those.
        if first_pending != Some(seq + 1)
            && let Some(pos) = pos
        {
            match self.ruases.get_mut(&ruas) {
                Some(r) if r.first.is_none() => {
                    // The feed has not started: fetch once it says where it began.
                    let keep = match r.boot_fill {
                        Some(p)
                            if p.epoch == pos.epoch
                                && Seq(p.seq).distance_from(Seq(pos.seq)) <= 0 =>
                        {
                            p
                        }
                        _ => pos,
                    };
                    r.boot_fill = Some(keep);
                }
                _ => self.fetch_from_position(ruas, pos),
            }
        }
        self.check_announced(mab);
        self.apply_ready(now, mab);
    }

    /// Fetch the payloads from a snapshot's stream position up to the one before the
    /// feed's first.
    fn fetch_from_position(&mut self, ruas: RuasId, pos: StreamPosition) {
        let range_max = self.config.fetch_range_max;
        let Some(r) = self.ruases.get_mut(&ruas) else {
            return;
        };
        let to = match r.first {
            Some((e, first)) if e == pos.epoch => first.wrapping_add(u32::MAX), // first - 1
            // The feed began in another epoch: the position's epoch ended, and the
            // sets after it were sent again in the new one, which the feed brings.
            _ => return,
        };
        let from = Seq(pos.seq);
        if to.distance_from(from) < 0 {
            return;
        }
        let mut at = from;
        loop {
            let end = if to.distance_from(at) >= i64::from(range_max) {
                at.wrapping_add(range_max - 1)
            } else {
                to
            };
            self.stats.fetch_requests += 1;
            self.events.push(Event::FetchPayloads {
                ruas,
                epoch: pos.epoch,
                from: at,
                to: end,
                mps: r.rr,
            });
            r.rr = r.rr.wrapping_add(1);
            if end == to {
                break;
            }
            at = end.next();
        }
    }

    /// Timers: snapshot requests, gap fetches, stuck MABs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cfg = self.config;
        for (mab, e) in &mut self.mabs {
            if let State::Loading {
                attempt,
                next_try,
                in_flight,
            } = &mut e.state
                && !*in_flight
                && *next_try <= now
            {
                *in_flight = true;
                self.events.push(Event::FetchSnapshot {
                    mab: *mab,
                    ruas: e.ruas,
                    attempt: *attempt,
                });
            }
        }
        for (id, r) in &mut self.ruases {
            self.stats.given_up += r.seq.give_up(now - cfg.give_up) as u64;
            if r.seq.missing_len() == 0 || now < r.next_fetch {
                continue;
            }
            let Some(epoch) = r.seq.epoch() else { continue };
            let ranges = r
                .seq
                .missing_ranges(now - cfg.gap_wait, 8, cfg.fetch_range_max);
            if ranges.is_empty() {
                continue;
            }
            for (from, to) in ranges {
                self.stats.fetch_requests += 1;
                self.events.push(Event::FetchPayloads {
                    ruas: *id,
                    epoch,
                    from,
                    to,
                    mps: r.rr,
                });
            }
            // The next try goes to the next MPS (a near one, then a far one).
            r.rr = r.rr.wrapping_add(1);
            r.next_fetch = now + cfg.fetch_retry;
        }
        // A MAB waiting for a set that nothing will bring any more: reload it.
        let stuck: Vec<Mab> = self
            .mabs
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Ready)
                    && e.waiting_since
                        .is_some_and(|t| now.saturating_since(t) >= cfg.stuck_after)
            })
            .map(|(m, _)| *m)
            .collect();
        for m in stuck {
            let ruas = self.mabs.get(&m).map(|e| e.ruas);
            let fetching = ruas
                .and_then(|r| self.ruases.get(&r))
                .is_some_and(|r| r.seq.missing_len() > 0);
            if !fetching {
                log::warn!(
                    "MAB {m}: a set has been missing for {} with nothing left to fetch",
                    cfg.stuck_after
                );
                self.resync(m, "a set never arrived");
            }
        }
    }

    /// When [`Stream::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let load = self
            .mabs
            .values()
            .filter_map(|e| match e.state {
                State::Loading {
                    next_try,
                    in_flight: false,
                    ..
                } => Some(next_try),
                _ => None,
            })
            .min();
        let fetch = self
            .ruases
            .values()
            .filter(|r| r.seq.missing_len() > 0)
            .map(|r| {
                let oldest = r
                    .seq
                    .missing()
                    .map(|(_, t)| t)
                    .min()
                    .unwrap_or(r.next_fetch);
                r.next_fetch.max(oldest + self.config.gap_wait)
            })
            .min();
        let stuck = self
            .mabs
            .values()
            .filter_map(|e| e.waiting_since.map(|t| t + self.config.stuck_after))
            .min();
        [load, fetch, stuck].into_iter().flatten().min()
    }

    /// Publish everything applied since the last call (once per batch).
    pub fn publish(&mut self) {
        if self.dirty {
            self.db.publish();
            self.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruas::packer::{Outgoing, Packer, PackerConfig};
    use crate::sign::{Ed25519Verifier, KeyPair};
    use crate::table::Mapping;
    use ivip_wire::Etr;
    use ivip_wire::payload::SnapshotAnnouncement;

    fn mab() -> Mab {
        "20.0.0.0/14".parse().unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_ms(ms)
    }

    /// A RUAS in miniature: a master table and a packer.
    struct Source {
        key: KeyPair,
        master: Table,
        packer: Packer,
    }

    impl Source {
        fn new() -> Source {
            let key = KeyPair::from_seed(&[5; 32]);
            Source {
                packer: Packer::new(
                    PackerConfig {
                        ruas: RuasId::new(2).unwrap(),
                        batch_window: Duration::ZERO,
                        heartbeat_interval: Duration::from_secs(3600),
                        quota_bytes: 0,
                        quota_interval: Duration::from_ms(100),
                    },
                    key.clone(),
                    1,
                    Seq(100),
                    Instant::ZERO,
                ),
                key,
                master: Table::new(mab()),
            }
        }

        fn info(&self) -> RuasInfo {
            RuasInfo {
                id: RuasId::new(2).unwrap(),
                key: self.key.public(),
                mabs: vec![mab()],
            }
        }

        /// Apply a set to the master and return the payload(s) carrying it.
        fn set(&mut self, cmds: Vec<Command>) -> Vec<Outgoing> {
            let seq = self.master.mab_seq() + 1;
            self.master.apply_at(seq, &cmds).unwrap();
            self.packer.push_set(Instant::ZERO, mab(), seq, cmds);
            self.packer.poll(Instant::ZERO, 0)
        }

        fn announce(&mut self) -> Vec<Outgoing> {
            self.packer.push_announcement(
                Instant::ZERO,
                SnapshotAnnouncement {
                    mab: mab(),
                    mab_seq: self.master.mab_seq(),
                    created_us: 1,
                    sha256: self.master.hash(),
                },
            );
            self.packer.poll(Instant::ZERO, 0)
        }

        fn snapshot(&mut self) -> Vec<u8> {
            self.master.publish();
            let pos = StreamPosition {
                epoch: self.packer.epoch(),
                seq: self.packer.next_seq().0,
            };
            self.master.reader().load_owned().write_snapshot_with(
                &self.key,
                RuasId::new(2).unwrap(),
                1,
                &pos.to_record(),
            )
        }
    }

    fn define(i: u64, last: u8) -> Vec<Command> {
        vec![Command::Define {
            start: 0x1400_0000 + 16 * i,
            len: 8,
            etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, last)),
        }]
    }

    fn feed(s: &mut Stream, now: Instant, out: &[Outgoing], fetched: bool) {
        for o in out {
            let p = Payload::new_checked(&o.bytes).unwrap();
            s.handle_payload(now, &p, fetched);
        }
        s.publish();
    }

    fn ready(s: &Stream) -> Option<u64> {
        s.mab_states()[0].1
    }

    fn boot(s: &mut Stream, src: &mut Source, now: Instant) {
        s.handle_timeout(now);
        assert!(
            s.take_events()
                .iter()
                .any(|e| matches!(e, Event::FetchSnapshot { attempt: 0, .. }))
        );
        let snap = src.snapshot();
        s.handle_snapshot(now, mab(), Ok(snap), &Ed25519Verifier);
    }

    #[test]
    fn boots_from_a_snapshot_while_buffering_and_ends_with_the_masters_hash() {
        let mut src = Source::new();
        for i in 0..5 {
            src.set(define(i, 1));
        }
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        // The feed brings sets 6..8 before the snapshot (taken at 5) arrives.
        let mut early = Vec::new();
        for i in 5..8 {
            early.extend(src.set(define(i, 2)));
        }
        let snap_at_5 = {
            let mut m = Table::new(mab());
            for i in 0..5 {
                m.apply_at(i + 1, &define(i, 1)).unwrap();
            }
            m.publish();
            m.reader()
                .load_owned()
                .write_snapshot_with(&src.key, RuasId::new(2).unwrap(), 1, &[])
        };
        feed(&mut s, t(1), &early, false);
        assert_eq!(ready(&s), None, "loading: queries get resyncing");
        assert_eq!(
            s.reader().lookup("20.0.0.1".parse().unwrap()),
            Mapping::OutsideMab
        );
        s.handle_timeout(t(2));
        s.handle_snapshot(t(3), mab(), Ok(snap_at_5), &Ed25519Verifier);
        s.publish();
        assert_eq!(ready(&s), Some(8));
        assert_eq!(s.db().table(&mab()).unwrap().hash(), src.master.hash());
        let ev = s.take_events();
        assert!(ev.contains(&Event::Ready {
            mab: mab(),
            mab_seq: 5
        }));
        assert!(ev.contains(&Event::Applied {
            mab: mab(),
            mab_seq: 8
        }));
    }

    #[test]
    fn sets_between_snapshot_and_feed_are_fetched_from_the_stream_position() {
        let mut src = Source::new();
        src.set(define(0, 1));
        let snap = src.snapshot(); // at 1, position = next payload
        let missed = src.set(define(1, 1)); // sent before the QSD subscribed
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        let live = src.set(define(2, 1));
        feed(&mut s, t(1), &live, false);
        s.handle_timeout(t(1));
        s.take_events();
        s.handle_snapshot(t(2), mab(), Ok(snap), &Ed25519Verifier);
        let ev = s.take_events();
        let want = missed[0].id.seq;
        assert!(
            ev.iter().any(|e| matches!(e, Event::FetchPayloads { from, to, .. } if *from == want && *to == want)),
            "{ev:?}"
        );
        assert_eq!(ready(&s), Some(1), "set 3 waits for set 2");
        feed(&mut s, t(3), &missed, true);
        assert_eq!(ready(&s), Some(3));
        assert_eq!(s.db().table(&mab()).unwrap().hash(), src.master.hash());
    }

    #[test]
    fn a_gap_is_fetched_after_the_gap_wait_and_filled() {
        let mut src = Source::new();
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        boot(&mut s, &mut src, t(0));
        let a = src.set(define(0, 1));
        let lost = src.set(define(1, 1));
        let c = src.set(define(2, 1));
        feed(&mut s, t(10), &a, false);
        feed(&mut s, t(11), &c, false);
        assert_eq!(ready(&s), Some(1));
        s.take_events();
        s.handle_timeout(t(30));
        assert!(s.take_events().is_empty(), "waits for the other feed first");
        assert_eq!(s.poll_timeout(), Some(t(61)));
        s.handle_timeout(t(61));
        let ev = s.take_events();
        let lost_seq = lost[0].id.seq;
        assert!(
            ev.iter().any(
                |e| matches!(e, Event::FetchPayloads { from, mps: 0, .. } if *from == lost_seq)
            ),
            "{ev:?}"
        );
        // No answer: the next MPS is asked after the retry time.
        s.handle_timeout(t(61 + 250));
        assert!(
            s.take_events()
                .iter()
                .any(|e| matches!(e, Event::FetchPayloads { mps: 1, .. }))
        );
        feed(&mut s, t(400), &lost, true);
        assert_eq!(ready(&s), Some(3));
        assert_eq!(s.missing(), 0);
        // A repeat from the other feed changes nothing.
        feed(&mut s, t(401), &lost, false);
        assert_eq!(s.stats().repeats, 1);
    }

    #[test]
    fn a_hash_mismatch_resyncs_only_that_mab() {
        let mut src = Source::new();
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        boot(&mut s, &mut src, t(0));
        feed(&mut s, t(1), &src.set(define(0, 1)), false);
        feed(&mut s, t(2), &src.announce(), false);
        assert_eq!(s.stats().hash_ok, 1);
        // Force a divergence: change this copy behind the stream's back.
        s.db.table_mut(&mab())
            .unwrap()
            .apply(&define(9, 9))
            .unwrap();
        feed(&mut s, t(3), &src.set(define(1, 1)), false);
        feed(&mut s, t(4), &src.announce(), false);
        assert_eq!(s.stats().hash_mismatch, 1);
        assert_eq!(ready(&s), None);
        assert!(s.take_events().iter().any(|e| matches!(
            e,
            Event::Resync {
                reason: "hash mismatch",
                ..
            }
        )));
        s.handle_timeout(t(5));
        assert!(
            s.take_events()
                .iter()
                .any(|e| matches!(e, Event::FetchSnapshot { .. }))
        );
        s.handle_snapshot(t(6), mab(), Ok(src.snapshot()), &Ed25519Verifier);
        assert_eq!(ready(&s), Some(2));
        assert_eq!(s.db().table(&mab()).unwrap().hash(), src.master.hash());
    }

    #[test]
    fn a_refused_snapshot_is_retried_from_the_next_server() {
        let mut src = Source::new();
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        s.handle_timeout(t(0));
        s.take_events();
        let mut bad = src.snapshot();
        let n = bad.len();
        bad[n - 1] ^= 1;
        s.handle_snapshot(t(1), mab(), Ok(bad), &Ed25519Verifier);
        assert_eq!(s.stats().snapshots_refused, 1);
        s.handle_timeout(t(600));
        assert!(s.take_events().contains(&Event::FetchSnapshot {
            mab: mab(),
            ruas: RuasId::new(2).unwrap(),
            attempt: 1
        }));
    }

    #[test]
    fn another_ruas_cannot_change_this_mab_and_big_sets_are_reassembled() {
        let mut src = Source::new();
        let mut s = Stream::new(StreamConfig::default(), &[src.info()], t(0));
        boot(&mut s, &mut src, t(0));
        // A set from RUAS 9, which does not own the MAB, is ignored.
        let mut other = Source::new();
        other.packer = Packer::new(
            PackerConfig {
                ruas: RuasId::new(9).unwrap(),
                batch_window: Duration::ZERO,
                heartbeat_interval: Duration::from_secs(3600),
                quota_bytes: 0,
                quota_interval: Duration::from_ms(100),
            },
            other.key.clone(),
            1,
            Seq(0),
            Instant::ZERO,
        );
        let mut s2 = Stream::new(
            StreamConfig::default(),
            &[
                src.info(),
                RuasInfo {
                    id: RuasId::new(9).unwrap(),
                    key: other.key.public(),
                    mabs: vec![],
                },
            ],
            t(0),
        );
        boot(&mut s2, &mut src, t(0));
        feed(&mut s2, t(1), &other.set(define(0, 7)), false);
        assert_eq!(s2.stats().foreign_sets, 1);
        assert_eq!(s2.mab_states()[0].1, Some(0));
        // 300 commands need fragments.
        let big: Vec<Command> = (0..300).flat_map(|i| define(i, 3)).collect();
        let out = src.set(big);
        assert!(out.len() > 1);
        feed(&mut s, t(2), &out, false);
        assert_eq!(ready(&s), Some(1));
        assert_eq!(s.db().table(&mab()).unwrap().hash(), src.master.hash());
    }

    #[test]
    fn a_set_that_never_arrives_leads_to_a_resync() {
        let mut src = Source::new();
        let cfg = StreamConfig {
            give_up: Duration::from_secs(1),
            ..StreamConfig::default()
        };
        let mut s = Stream::new(cfg, &[src.info()], t(0));
        boot(&mut s, &mut src, t(0));
        feed(&mut s, t(1), &src.set(define(0, 1)), false);
        let _lost = src.set(define(1, 1));
        feed(&mut s, t(2), &src.set(define(2, 1)), false);
        s.take_events();
        // Fetches fail; the missing payload is given up, then the MAB is stuck.
        let mut now = t(2);
        for _ in 0..200 {
            now = now + Duration::from_ms(50);
            s.handle_timeout(now);
            if s.take_events()
                .iter()
                .any(|e| matches!(e, Event::Resync { .. }))
            {
                break;
            }
        }
        assert_eq!(ready(&s), None, "reloading from a snapshot");
        s.handle_timeout(now + Duration::from_ms(1));
        s.handle_snapshot(now, mab(), Ok(src.snapshot()), &Ed25519Verifier);
        assert_eq!(ready(&s), Some(3));
    }
}
