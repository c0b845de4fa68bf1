//! Searches over the history: every mapping an address had in a time window, and
//! every change of one MAB in a window (audits).
//!
//! spec: history.md §6 (search semantics), http.md (History). seed s2.1:
//! "aggrieved parties can search such a system for the address on which they
//! received the unwanted packets, and so determine the micronet involved".
//!
//! What it is: pure functions over a [`StoreReader`] that find candidate frames
//! through the index (a few key-range look-ups per index file, skipping files by
//! their time ranges and classes present), read only those frames, and interpret
//! them. What it is not: HTTP or text rendering (see `http` and the CLI).
//!
//! Times are the RUAS's: a change takes effect at its payload's timestamp, a
//! baseline at its snapshot's creation time. Within one MAB the record's order
//! (segment, offset, item) is the per-MAB sequence order, which is the order of
//! effect.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ivip_wire::addr::{unit_addr, unit_of};
use ivip_wire::history::{
    CLASS_BASELINE_START, CLASS_GAP, CLASS_SNAPSHOT, ChangedRange, GapRecord, HistoryRecord, Item,
    Location, RANGE_CLASSES, RecordContext, SetOutcome, SnapshotCheck, class_bit,
    class_window_start, record_contexts,
};
use ivip_wire::{Etr, Family, Mab, PayloadId, RuasId};
use serde_json::{Value, json};

use super::index::{ActiveIndex, Hit, IndexRun, RangeSource};
use super::store::{FrameReader, StoreReader};

/// The most mappings one answer holds; more set `truncated` (ask again from the
/// last one's time).
pub const MAPPINGS_MAX: usize = 10_000;
/// The most snapshot announcements or gaps one address answer lists.
pub const NOTES_MAX: usize = 1_000;
/// The most changes one MAB audit page holds.
pub const MAB_CHANGES_MAX: usize = 10_000;

/// Why a query was refused (the client's fault: HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// `from` is after `to`.
    BadWindow {
        /// The window start.
        from_us: u64,
        /// The window end.
        to_us: u64,
    },
    /// A limit of 0 or above the maximum.
    BadLimit {
        /// The limit asked for.
        limit: usize,
        /// The largest allowed.
        max: usize,
    },
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::BadWindow { from_us, to_us } => write!(
                f,
                "the window starts ({from_us} µs) after it ends ({to_us} µs); swap `from` and `to`"
            ),
            QueryError::BadLimit { limit, max } => {
                write!(f, "limit {limit} is outside 1..={max}")
            }
        }
    }
}

impl std::error::Error for QueryError {}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// What an address's mapping was during one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingState {
    /// In the micronet `[start, start + len)`, mapped to `etr` (zero = drop).
    Mapped {
        /// The micronet's first unit.
        start: u64,
        /// Its length in units.
        len: u64,
        /// Its ETR.
        etr: Etr,
    },
    /// In no micronet. `range` is the unassigned range a change left, when known
    /// (a baseline says only that no micronet held the address).
    Unassigned {
        /// `(start, len)` of the unassigned range the change named.
        range: Option<(u64, u64)>,
    },
    /// Not known: before the record begins, or the record has no baseline or
    /// change for this address before the window.
    Unknown,
}

/// Who and what established a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// A command set carried by a signed payload.
    Change {
        /// The payload that carried (or completed) the set.
        payload: PayloadId,
        /// The set's per-MAB sequence.
        mab_seq: u64,
        /// When the recorder received the payload.
        recv_us: u64,
    },
    /// A signed snapshot the recorder loaded.
    Baseline {
        /// The RUAS that signed it.
        ruas: RuasId,
        /// Its per-MAB sequence.
        mab_seq: u64,
        /// Its canonical hash.
        sha256: [u8; 32],
        /// When the recorder loaded it.
        recv_us: u64,
    },
    /// Nothing (an unknown mapping).
    None,
}

impl Provenance {
    /// The RUAS responsible, when known.
    pub fn ruas(&self) -> Option<RuasId> {
        match *self {
            Provenance::Change { payload, .. } => Some(payload.ruas),
            Provenance::Baseline { ruas, .. } => Some(ruas),
            Provenance::None => None,
        }
    }
}

/// One stretch of an address's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// When it took effect; `None` for an unknown start.
    pub since_us: Option<u64>,
    /// When the next recorded change took effect, if inside the window.
    pub until_us: Option<u64>,
    /// The mapping.
    pub state: MappingState,
    /// The MAB, when known.
    pub mab: Option<Mab>,
    /// Who set it.
    pub provenance: Provenance,
    /// The record that holds it.
    pub at: Option<Location>,
}

/// A snapshot announcement of the address's MAB inside the window: the RUAS's
/// signed statement of the whole MAB's hash at a per-MAB sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotNote {
    /// The MAB.
    pub mab: Mab,
    /// The per-MAB sequence it reflects.
    pub mab_seq: u64,
    /// When the RUAS took it.
    pub created_us: u64,
    /// The canonical hash.
    pub sha256: [u8; 32],
    /// How the recorder's own layout compared.
    pub check: SnapshotCheck,
    /// The payload that announced it.
    pub payload: PayloadId,
    /// The payload's timestamp.
    pub time_us: u64,
    /// The record.
    pub at: Location,
}

/// Sets of the MAB the recorder never received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapNote {
    /// The MAB.
    pub mab: Mab,
    /// First missing per-MAB sequence.
    pub first: u64,
    /// Last missing per-MAB sequence.
    pub last: u64,
    /// When the recorder noticed.
    pub recv_us: u64,
}

/// The answer to "what was this address mapped to, and when".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressHistory {
    /// The address asked about.
    pub address: IpAddr,
    /// Window start, µs.
    pub from_us: u64,
    /// Window end, µs (`u64::MAX`: open).
    pub to_us: u64,
    /// The MABs of the record that hold the address.
    pub mabs: Vec<Mab>,
    /// The mapping in effect at `from`, then every change up to `to`, in order.
    pub mappings: Vec<Mapping>,
    /// More than [`MAPPINGS_MAX`] changes: ask again from the last one's time.
    pub truncated: bool,
    /// Snapshot announcements of those MABs in the window.
    pub snapshots: Vec<SnapshotNote>,
    /// Known gaps of those MABs from the first mapping's start to `to`.
    pub gaps: Vec<GapNote>,
    /// Damage or read failures that may hide records from this answer.
    pub warnings: Vec<String>,
    /// The earliest time the record holds.
    pub record_begins_us: Option<u64>,
}

/// One change of a MAB, for audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MabEvent {
    /// A command set.
    Set {
        /// Per-MAB sequence.
        mab_seq: u64,
        /// Applied or refused.
        outcome: SetOutcome,
        /// What changed, final state.
        ranges: Vec<ChangedRange>,
        /// Fragments the set came in (1 when whole).
        fragments: usize,
    },
    /// A snapshot announcement.
    Snapshot {
        /// Per-MAB sequence.
        mab_seq: u64,
        /// Creation time.
        created_us: u64,
        /// Hash.
        sha256: [u8; 32],
        /// Comparison with the recorder's layout.
        check: SnapshotCheck,
    },
    /// A baseline part.
    Baseline {
        /// Per-MAB sequence.
        mab_seq: u64,
        /// Snapshot creation time.
        created_us: u64,
        /// Hash.
        sha256: [u8; 32],
        /// Part number.
        part: u32,
        /// Parts.
        part_count: u32,
        /// Micronets in this part.
        micronets: usize,
    },
    /// Missing sets.
    Gap {
        /// First missing per-MAB sequence.
        first: u64,
        /// Last missing.
        last: u64,
    },
}

/// One entry of a MAB audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MabChange {
    /// Time of effect, µs.
    pub time_us: u64,
    /// When the recorder received it.
    pub recv_us: u64,
    /// The carrying payload, for sets and announcements.
    pub payload: Option<PayloadId>,
    /// The RUAS responsible.
    pub ruas: Option<RuasId>,
    /// What happened.
    pub event: MabEvent,
    /// The record.
    pub at: Location,
}

/// One page of a MAB audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MabChanges {
    /// The MAB.
    pub mab: Mab,
    /// Window start.
    pub from_us: u64,
    /// Window end.
    pub to_us: u64,
    /// The changes, in record order.
    pub changes: Vec<MabChange>,
    /// When the page is full: pass as `after` to continue.
    pub next: Option<Location>,
    /// Damage or read failures that may hide records.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------
// Look-ups
// ---------------------------------------------------------------------------

/// Ranges of `mab` holding `unit` with time in `tmin..=tmax`.
fn touching(
    src: &dyn RangeSource,
    mab: &Mab,
    unit: u64,
    tmin: u64,
    tmax: u64,
    out: &mut Vec<Hit>,
) -> Result<(), String> {
    let classes = src.classes(mab);
    let mut tmp = Vec::new();
    for c in 0..RANGE_CLASSES {
        if classes & class_bit(c) == 0 {
            continue;
        }
        tmp.clear();
        src.lookup(mab, c, class_window_start(c, unit), unit, &mut tmp)?;
        out.extend(
            tmp.iter()
                .filter(|h| h.contains(unit) && h.time_us >= tmin && h.time_us <= tmax),
        );
    }
    Ok(())
}

/// Markers of one class of `mab` with time in `tmin..=tmax`.
fn markers(
    src: &dyn RangeSource,
    mab: &Mab,
    class: u8,
    tmin: u64,
    tmax: u64,
    out: &mut Vec<Hit>,
) -> Result<(), String> {
    if src.classes(mab) & class_bit(class) == 0 {
        return Ok(());
    }
    src.lookup(mab, class, tmin, tmax, out)
}

/// `true` when some segment of the run has a record with time in `tmin..=tmax`.
fn run_overlaps(run: &IndexRun, tmin: u64, tmax: u64) -> bool {
    run.segments()
        .iter()
        .any(|s| s.time_min_us <= s.time_max_us && s.time_min_us <= tmax && s.time_max_us >= tmin)
}

fn run_min_time(run: &IndexRun) -> u64 {
    run.segments()
        .iter()
        .filter(|s| s.time_min_us <= s.time_max_us)
        .map(|s| s.time_min_us)
        .min()
        .unwrap_or(u64::MAX)
}

/// What one source said about the state at `from`.
#[derive(Default)]
struct StateHits {
    latest_touch: Option<Hit>,
    latest_baseline: Option<Hit>,
}

impl StateHits {
    fn found(&self) -> bool {
        self.latest_touch.is_some() || self.latest_baseline.is_some()
    }

    fn merge(&mut self, hits: &[Hit], baselines: &[Hit]) {
        for h in hits {
            if self.latest_touch.is_none_or(|t| h.at > t.at) {
                self.latest_touch = Some(*h);
            }
        }
        for h in baselines {
            if self.latest_baseline.is_none_or(|t| h.at > t.at) {
                self.latest_baseline = Some(*h);
            }
        }
    }
}

/// Everything the index said, before frames are read.
#[derive(Default)]
struct Candidates {
    state: StateHits,
    window: Vec<Hit>,
    snapshots: Vec<Hit>,
    warnings: Vec<String>,
}

/// What to look up in one source.
struct Ask<'a> {
    mabs: &'a [Mab],
    unit: u64,
    from_us: u64,
    to_us: u64,
    state: bool,
    window: bool,
}

fn collect_source(src: &dyn RangeSource, ask: &Ask<'_>, c: &mut Candidates) {
    let Ask {
        mabs,
        unit,
        from_us,
        to_us,
        state: want_state,
        window: want_window,
    } = *ask;
    let mut run = || -> Result<(), String> {
        for mab in mabs {
            if want_window && from_us < to_us {
                touching(src, mab, unit, from_us + 1, to_us, &mut c.window)?;
                markers(
                    src,
                    mab,
                    CLASS_BASELINE_START,
                    from_us + 1,
                    to_us,
                    &mut c.window,
                )?;
                markers(src, mab, CLASS_SNAPSHOT, from_us, to_us, &mut c.snapshots)?;
            }
            if want_state {
                let mut t = Vec::new();
                let mut b = Vec::new();
                touching(src, mab, unit, 0, from_us, &mut t)?;
                markers(src, mab, CLASS_BASELINE_START, 0, from_us, &mut b)?;
                c.state.merge(&t, &b);
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        c.warnings.push(e);
    }
}

// ---------------------------------------------------------------------------
// Reading frames
// ---------------------------------------------------------------------------

/// A change of one address found in a frame.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: Location,
    order: u32,
    time_us: u64,
    state: MappingState,
    mab: Mab,
    provenance: Provenance,
    /// For a baseline's first part: its identity, to tell whether another part
    /// covered the address.
    baseline_start: Option<(Mab, u64, u64)>,
    /// For a baseline micronet: its baseline's identity.
    baseline_of: Option<(Mab, u64, u64)>,
}

/// The events of `rec` (at `at`) for `unit` in any of `mabs`, in item order.
fn events_in(rec: &HistoryRecord, at: Location, mabs: &[Mab], unit: u64, out: &mut Vec<Event>) {
    match rec {
        HistoryRecord::Payload(p) => {
            let Ok(payload) = p.checked() else { return };
            let ctx = record_contexts(&payload);
            for (order, it) in p.items.iter().enumerate() {
                let Item::Set(s) = it else { continue };
                let Some((mab, mab_seq)) = ctx
                    .get(usize::from(s.record_index))
                    .and_then(RecordContext::set)
                else {
                    continue;
                };
                if !mabs.contains(&mab) {
                    continue;
                }
                for r in s.ranges.iter().filter(|r| r.contains(unit)) {
                    out.push(Event {
                        at,
                        order: order as u32,
                        time_us: payload.timestamp_us(),
                        state: match r.etr {
                            Some(etr) => MappingState::Mapped {
                                start: r.start,
                                len: r.len,
                                etr,
                            },
                            None => MappingState::Unassigned {
                                range: Some((r.start, r.len)),
                            },
                        },
                        mab,
                        provenance: Provenance::Change {
                            payload: payload.id(),
                            mab_seq,
                            recv_us: p.recv_us,
                        },
                        baseline_start: None,
                        baseline_of: None,
                    });
                }
            }
        }
        HistoryRecord::Baseline(b) => {
            if !mabs.contains(&b.mab) {
                return;
            }
            let id = (b.mab, b.mab_seq, b.created_us);
            let prov = Provenance::Baseline {
                ruas: b.ruas,
                mab_seq: b.mab_seq,
                sha256: b.sha256,
                recv_us: b.recv_us,
            };
            if b.part == 0 {
                out.push(Event {
                    at,
                    order: 0,
                    time_us: b.created_us,
                    state: MappingState::Unassigned { range: None },
                    mab: b.mab,
                    provenance: prov,
                    baseline_start: Some(id),
                    baseline_of: None,
                });
            }
            let i = b.micronets.partition_point(|&(s, _, _)| s <= unit);
            if let Some(&(s, l, etr)) = i.checked_sub(1).and_then(|i| b.micronets.get(i))
                && u128::from(unit) < u128::from(s) + u128::from(l)
            {
                out.push(Event {
                    at,
                    order: 1,
                    time_us: b.created_us,
                    state: MappingState::Mapped {
                        start: s,
                        len: l,
                        etr,
                    },
                    mab: b.mab,
                    provenance: prov,
                    baseline_start: None,
                    baseline_of: Some(id),
                });
            }
        }
        HistoryRecord::Gap(_) => {}
    }
}

/// Turn events (sorted) into transitions: a baseline start becomes "unassigned"
/// only when no part of the same baseline covered the address.
fn transitions(events: &[Event]) -> Vec<Event> {
    let covered: BTreeSet<(Mab, u64, u64)> = events.iter().filter_map(|e| e.baseline_of).collect();
    events
        .iter()
        .filter(|e| e.baseline_start.is_none_or(|id| !covered.contains(&id)))
        .copied()
        .collect()
}

fn read_into(
    frames: &mut FrameReader,
    at: Location,
    warnings: &mut Vec<String>,
) -> Option<HistoryRecord> {
    match frames.read(at) {
        Ok(r) => Some(r),
        Err(e) => {
            warnings.push(format!(
                "record at segment {} offset {} could not be read ({}); changes it held \
                 are missing from this answer",
                at.segment,
                at.offset,
                match e {
                    super::segment::FrameReadError::Io(m)
                    | super::segment::FrameReadError::Damaged(m) => m,
                }
            ));
            None
        }
    }
}

fn damage_warnings(reader: &StoreReader) -> Vec<String> {
    reader.damage().iter().map(ToString::to_string).collect()
}

// ---------------------------------------------------------------------------
// Address history
// ---------------------------------------------------------------------------

/// Every mapping `addr` had from `from_us` to `to_us` (inclusive): the one in
/// effect at `from_us`, then each recorded change up to `to_us`.
///
/// # Errors
/// [`QueryError::BadWindow`].
pub fn address_history(
    reader: &StoreReader,
    addr: IpAddr,
    from_us: u64,
    to_us: u64,
) -> Result<AddressHistory, QueryError> {
    if from_us > to_us {
        return Err(QueryError::BadWindow { from_us, to_us });
    }
    let (family, unit) = unit_of(addr);
    let status = reader.status();
    let mut c = Candidates::default();
    // The active segment, under the read lock; then the sealed files, newest first.
    let (active_part, runs) = reader.view(|active: &ActiveIndex, runs: &[Arc<IndexRun>]| {
        let mut m: BTreeSet<Mab> = active.mabs().into_iter().collect();
        for r in runs {
            m.extend(r.mabs());
        }
        let mabs: Vec<Mab> = m
            .into_iter()
            .filter(|m| m.family() == family && m.contains(unit))
            .collect();
        let mut ac = Candidates::default();
        let overlaps = active
            .time_range()
            .is_some_and(|(lo, hi)| lo <= to_us && hi >= from_us);
        let before = active.time_range().is_some_and(|(lo, _)| lo <= from_us);
        let ask = Ask {
            mabs: &mabs,
            unit,
            from_us,
            to_us,
            state: before,
            window: overlaps,
        };
        collect_source(active, &ask, &mut ac);
        (mabs, ac)
    });
    let (mabs, ac) = active_part;
    c.state.merge(
        ac.state.latest_touch.as_slice(),
        ac.state.latest_baseline.as_slice(),
    );
    c.window.extend(ac.window);
    c.snapshots.extend(ac.snapshots);
    c.warnings.extend(ac.warnings);
    let runs: Vec<Arc<IndexRun>> = runs;
    for run in runs.iter().rev() {
        let want_state = !c.state.found() && run_min_time(run) <= from_us;
        let want_window = run_overlaps(run, from_us, to_us);
        if want_state || want_window {
            let ask = Ask {
                mabs: &mabs,
                unit,
                from_us,
                to_us,
                state: want_state,
                window: want_window,
            };
            collect_source(run.as_ref(), &ask, &mut c);
        }
    }

    let mut frames = reader.frames();
    let mut warnings = std::mem::take(&mut c.warnings);
    let mut mappings = Vec::new();

    // The state at `from`.
    let use_touch = match (c.state.latest_touch, c.state.latest_baseline) {
        // The same frame holds a baseline's start and the micronet: the micronet.
        (Some(t), Some(b)) => t.at >= b.at,
        (Some(_), None) => true,
        _ => false,
    };
    let initial = if use_touch {
        c.state.latest_touch.and_then(|t| {
            let mut ev = Vec::new();
            if let Some(rec) = read_into(&mut frames, t.at, &mut warnings) {
                events_in(&rec, t.at, &mabs, unit, &mut ev);
            }
            ev.into_iter().rfind(|e| e.baseline_start.is_none())
        })
    } else {
        c.state.latest_baseline.and_then(|b| {
            let mut ev = Vec::new();
            if let Some(rec) = read_into(&mut frames, b.at, &mut warnings) {
                events_in(&rec, b.at, &mabs, unit, &mut ev);
            }
            ev.into_iter().find(|e| e.baseline_start.is_some())
        })
    };
    match initial {
        Some(e) => mappings.push(Mapping {
            since_us: Some(e.time_us),
            until_us: None,
            state: e.state,
            mab: Some(e.mab),
            provenance: e.provenance,
            at: Some(e.at),
        }),
        None => mappings.push(Mapping {
            since_us: None,
            until_us: None,
            state: MappingState::Unknown,
            mab: None,
            provenance: Provenance::None,
            at: None,
        }),
    }

    // Changes in the window, in record order.
    let locs: BTreeSet<Location> = c.window.iter().map(|h| h.at).collect();
    let mut events = Vec::new();
    for at in locs {
        if let Some(rec) = read_into(&mut frames, at, &mut warnings) {
            events_in(&rec, at, &mabs, unit, &mut events);
        }
    }
    events.retain(|e| e.time_us > from_us && e.time_us <= to_us);
    events.sort_by_key(|e| (e.at, e.order));
    let mut truncated = false;
    for e in transitions(&events) {
        if mappings.len() > MAPPINGS_MAX {
            truncated = true;
            break;
        }
        mappings.push(Mapping {
            since_us: Some(e.time_us),
            until_us: None,
            state: e.state,
            mab: Some(e.mab),
            provenance: e.provenance,
            at: Some(e.at),
        });
    }
    for i in 1..mappings.len() {
        mappings[i - 1].until_us = mappings[i].since_us;
    }

    // Snapshot announcements in the window, and gaps since the first mapping.
    let mut snapshots = Vec::new();
    let snap_locs: BTreeSet<Location> = c.snapshots.iter().map(|h| h.at).collect();
    for at in snap_locs.into_iter().take(NOTES_MAX) {
        let Some(HistoryRecord::Payload(p)) = read_into(&mut frames, at, &mut warnings) else {
            continue;
        };
        let Ok(payload) = p.checked() else { continue };
        let ctx = record_contexts(&payload);
        for it in &p.items {
            if let Item::Snapshot(s) = it
                && let Some(RecordContext::Snapshot(a)) = ctx.get(usize::from(s.record_index))
                && mabs.contains(&a.mab)
            {
                snapshots.push(SnapshotNote {
                    mab: a.mab,
                    mab_seq: a.mab_seq,
                    created_us: a.created_us,
                    sha256: a.sha256,
                    check: s.check,
                    payload: payload.id(),
                    time_us: payload.timestamp_us(),
                    at,
                });
            }
        }
    }
    let gap_from = mappings
        .first()
        .and_then(|m| m.since_us)
        .unwrap_or(0)
        .min(from_us);
    let gaps = find_gaps(reader, &mabs, gap_from, to_us, &mut frames, &mut warnings);
    warnings.extend(damage_warnings(reader));
    Ok(AddressHistory {
        address: addr,
        from_us,
        to_us,
        mabs,
        mappings,
        truncated,
        snapshots,
        gaps,
        warnings,
        record_begins_us: status.earliest_us,
    })
}

fn find_gaps(
    reader: &StoreReader,
    mabs: &[Mab],
    from_us: u64,
    to_us: u64,
    frames: &mut FrameReader,
    warnings: &mut Vec<String>,
) -> Vec<GapNote> {
    let (mut hits, runs) = reader.view(|a, _| {
        let mut out = Vec::new();
        for m in mabs {
            let _ = markers(a, m, CLASS_GAP, from_us, to_us, &mut out);
        }
        out
    });
    for r in runs.iter().filter(|r| run_overlaps(r, from_us, to_us)) {
        for m in mabs {
            if let Err(e) = markers(r.as_ref(), m, CLASS_GAP, from_us, to_us, &mut hits) {
                warnings.push(e);
            }
        }
    }
    let locs: BTreeSet<Location> = hits.iter().map(|h| h.at).collect();
    let mut out = Vec::new();
    for at in locs.into_iter().take(NOTES_MAX) {
        if let Some(HistoryRecord::Gap(GapRecord::MabSets {
            recv_us,
            mab,
            first,
            last,
        })) = read_into(frames, at, warnings)
        {
            out.push(GapNote {
                mab,
                first,
                last,
                recv_us,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MAB audit
// ---------------------------------------------------------------------------

/// Every change of `mab` from `from_us` to `to_us` (inclusive), in record order,
/// at most `limit`, starting after record `after`.
///
/// # Errors
/// [`QueryError::BadWindow`], [`QueryError::BadLimit`].
pub fn mab_changes(
    reader: &StoreReader,
    mab: Mab,
    from_us: u64,
    to_us: u64,
    after: Option<Location>,
    limit: usize,
) -> Result<MabChanges, QueryError> {
    if from_us > to_us {
        return Err(QueryError::BadWindow { from_us, to_us });
    }
    if limit == 0 || limit > MAB_CHANGES_MAX {
        return Err(QueryError::BadLimit {
            limit,
            max: MAB_CHANGES_MAX,
        });
    }
    let collect = |src: &dyn RangeSource, out: &mut Vec<Hit>| -> Result<(), String> {
        let classes = src.classes(&mab);
        for c in
            (0..RANGE_CLASSES).chain(CLASS_BASELINE_START..=ivip_wire::history::CLASS_NO_EFFECT)
        {
            if classes & class_bit(c) == 0 {
                continue;
            }
            if c < RANGE_CLASSES {
                let mut tmp = Vec::new();
                src.lookup(&mab, c, 0, u64::MAX, &mut tmp)?;
                out.extend(
                    tmp.into_iter()
                        .filter(|h| h.time_us >= from_us && h.time_us <= to_us),
                );
            } else {
                src.lookup(&mab, c, from_us, to_us, out)?;
            }
        }
        Ok(())
    };
    let mut warnings = Vec::new();
    let ((mut hits, e), runs) = reader.view(|a, _| {
        let mut out = Vec::new();
        let e = collect(a, &mut out);
        (out, e)
    });
    if let Err(e) = e {
        warnings.push(e);
    }
    for r in runs.iter().filter(|r| run_overlaps(r, from_us, to_us)) {
        if after.is_some_and(|a| r.last_segment() < a.segment) {
            continue;
        }
        if let Err(e) = collect(r.as_ref(), &mut hits) {
            warnings.push(e);
        }
    }
    let locs: BTreeSet<Location> = hits
        .iter()
        .map(|h| h.at)
        .filter(|l| after.is_none_or(|a| *l > a))
        .collect();
    let mut frames = reader.frames();
    let mut changes = Vec::new();
    let mut next = None;
    for at in locs {
        if changes.len() >= limit {
            break;
        }
        let Some(rec) = read_into(&mut frames, at, &mut warnings) else {
            continue;
        };
        mab_events_in(&rec, at, &mab, from_us, to_us, &mut changes);
        if changes.len() >= limit {
            next = Some(at);
        }
    }
    warnings.extend(damage_warnings(reader));
    Ok(MabChanges {
        mab,
        from_us,
        to_us,
        changes,
        next,
        warnings,
    })
}

fn mab_events_in(
    rec: &HistoryRecord,
    at: Location,
    mab: &Mab,
    from_us: u64,
    to_us: u64,
    out: &mut Vec<MabChange>,
) {
    match rec {
        HistoryRecord::Payload(p) => {
            let Ok(payload) = p.checked() else { return };
            let t = payload.timestamp_us();
            if t < from_us || t > to_us {
                return;
            }
            let ctx = record_contexts(&payload);
            for it in &p.items {
                let event = match it {
                    Item::Set(s) => match ctx.get(usize::from(s.record_index)) {
                        Some(c) if c.set().is_some_and(|(m, _)| m == *mab) => MabEvent::Set {
                            mab_seq: c.set().map_or(0, |(_, q)| q),
                            outcome: s.outcome,
                            ranges: s.ranges.clone(),
                            fragments: s.fragments.len() + 1,
                        },
                        _ => continue,
                    },
                    Item::Snapshot(s) => match ctx.get(usize::from(s.record_index)) {
                        Some(RecordContext::Snapshot(a)) if a.mab == *mab => MabEvent::Snapshot {
                            mab_seq: a.mab_seq,
                            created_us: a.created_us,
                            sha256: a.sha256,
                            check: s.check,
                        },
                        _ => continue,
                    },
                };
                out.push(MabChange {
                    time_us: t,
                    recv_us: p.recv_us,
                    payload: Some(payload.id()),
                    ruas: Some(payload.id().ruas),
                    event,
                    at,
                });
            }
        }
        HistoryRecord::Baseline(b) if b.mab == *mab => out.push(MabChange {
            time_us: b.created_us,
            recv_us: b.recv_us,
            payload: None,
            ruas: Some(b.ruas),
            event: MabEvent::Baseline {
                mab_seq: b.mab_seq,
                created_us: b.created_us,
                sha256: b.sha256,
                part: b.part,
                part_count: b.part_count,
                micronets: b.micronets.len(),
            },
            at,
        }),
        HistoryRecord::Gap(GapRecord::MabSets {
            recv_us,
            mab: m,
            first,
            last,
        }) if m == mab => out.push(MabChange {
            time_us: *recv_us,
            recv_us: *recv_us,
            payload: None,
            ruas: None,
            event: MabEvent::Gap {
                first: *first,
                last: *last,
            },
            at,
        }),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Times and JSON (spec: http.md, History)
// ---------------------------------------------------------------------------

/// Parse a time: microseconds since the Unix epoch (digits only), or RFC 3339 in
/// UTC or with an offset (`2025-11-25T12:21:56Z`, `2025-11-25T12:21:56.5+01:00`),
/// or a date alone (`2025-11-25`, midnight UTC).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map_err(|_| format!("`{s}` is too large for a time in µs"));
    }
    let bad =
        || format!("`{s}` is not a time: use µs since 1970 or RFC 3339, e.g. 2025-11-25T12:21:56Z");
    let num = |t: &str| -> Result<i64, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i64>().map_err(|_| bad())
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, "00:00:00Z"),
    };
    let mut d = date.split('-');
    let (y, mo, da) = (
        num(d.next().ok_or_else(bad)?)?,
        num(d.next().ok_or_else(bad)?)?,
        num(d.next().ok_or_else(bad)?)?,
    );
    if d.next().is_some() || !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return Err(bad());
    }
    let days_in = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if da < 1 || da > days_in[(mo - 1) as usize] {
        return Err(bad());
    }
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let sign = if rest.as_bytes()[i] == b'+' { 1 } else { -1 };
        let (oh, om) = rest[i + 1..].split_once(':').ok_or_else(bad)?;
        let (oh, om) = (num(oh)?, num(om)?);
        if oh > 23 || om > 59 {
            return Err(bad());
        }
        (&rest[..i], sign * (oh * 3600 + om * 60))
    } else {
        return Err(bad());
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, f),
        None => (clock, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (
        num(t.next().ok_or_else(bad)?)?,
        num(t.next().ok_or_else(bad)?)?,
        num(t.next().ok_or_else(bad)?)?,
    );
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let micros = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 {
            return Err(bad());
        }
        let mut f = frac.to_string();
        while f.len() < 6 {
            f.push('0');
        }
        num(&f[..6])?
    };
    let days = days_from_civil(y, mo as u32, da as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    if secs < 0 {
        return Err(format!("`{s}` is before 1970"));
    }
    Ok(secs as u64 * 1_000_000 + micros as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unit_text(f: Family, u: u64) -> String {
    unit_addr(f, u).to_string()
}

fn range_json(f: Family, start: u64, len: u64) -> Value {
    let last = start.saturating_add(len.saturating_sub(1));
    json!({"start": unit_text(f, start), "len": len, "last": unit_text(f, last)})
}

fn payload_json(p: &PayloadId) -> Value {
    json!({"ruas": p.ruas.get(), "epoch": p.epoch, "seq": p.seq.0})
}

fn location_text(l: &Location) -> String {
    format!("{}:{}", l.segment, l.offset)
}

fn opt_time(t: u64) -> Value {
    if t == u64::MAX { Value::Null } else { json!(t) }
}

impl Mapping {
    /// The JSON rendering (http.md, History).
    pub fn to_json(&self) -> Value {
        let family = self.mab.map_or(Family::V4, |m| m.family());
        let mut v = json!({
            "since_us": self.since_us,
            "until_us": self.until_us,
            "mab": self.mab.map(|m| m.to_string()),
            "ruas": self.provenance.ruas().map(RuasId::get),
            "record": self.at.as_ref().map(location_text),
        });
        let o = v.as_object_mut().map(std::mem::take).unwrap_or_default();
        let mut o = o;
        match self.state {
            MappingState::Mapped { start, len, etr } => {
                o.insert("state".into(), json!("mapped"));
                o.insert("micronet".into(), range_json(family, start, len));
                o.insert("etr".into(), json!(etr.to_string()));
                o.insert("drop".into(), json!(etr.is_zero()));
            }
            MappingState::Unassigned { range } => {
                o.insert("state".into(), json!("unassigned"));
                o.insert(
                    "range".into(),
                    range.map_or(Value::Null, |(s, l)| range_json(family, s, l)),
                );
            }
            MappingState::Unknown => {
                o.insert("state".into(), json!("unknown"));
            }
        }
        match self.provenance {
            Provenance::Change {
                payload,
                mab_seq,
                recv_us,
            } => {
                o.insert("source".into(), json!("change"));
                o.insert("payload".into(), payload_json(&payload));
                o.insert("mab_seq".into(), json!(mab_seq));
                o.insert("recorded_us".into(), json!(recv_us));
            }
            Provenance::Baseline {
                mab_seq,
                sha256,
                recv_us,
                ..
            } => {
                o.insert("source".into(), json!("baseline"));
                o.insert("mab_seq".into(), json!(mab_seq));
                o.insert(
                    "snapshot_sha256".into(),
                    json!(ivip_wire::hex::encode(&sha256)),
                );
                o.insert("recorded_us".into(), json!(recv_us));
            }
            Provenance::None => {
                o.insert("source".into(), Value::Null);
            }
        }
        Value::Object(o)
    }
}

impl AddressHistory {
    /// The JSON rendering (http.md, History).
    pub fn to_json(&self) -> Value {
        json!({
            "address": self.address.to_string(),
            "from_us": self.from_us,
            "to_us": opt_time(self.to_us),
            "mabs": self.mabs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "record_begins_us": self.record_begins_us,
            "mappings": self.mappings.iter().map(Mapping::to_json).collect::<Vec<_>>(),
            "truncated": self.truncated,
            "snapshots": self.snapshots.iter().map(|s| json!({
                "mab": s.mab.to_string(),
                "mab_seq": s.mab_seq,
                "created_us": s.created_us,
                "sha256": ivip_wire::hex::encode(&s.sha256),
                "check": s.check.name(),
                "payload": payload_json(&s.payload),
                "time_us": s.time_us,
                "record": location_text(&s.at),
            })).collect::<Vec<_>>(),
            "gaps": self.gaps.iter().map(|g| json!({
                "mab": g.mab.to_string(),
                "first_mab_seq": g.first,
                "last_mab_seq": g.last,
                "recorded_us": g.recv_us,
            })).collect::<Vec<_>>(),
            "warnings": self.warnings,
        })
    }
}

impl MabChanges {
    /// The JSON rendering (http.md, History).
    pub fn to_json(&self) -> Value {
        let f = self.mab.family();
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                let mut v = json!({
                    "time_us": c.time_us,
                    "recorded_us": c.recv_us,
                    "ruas": c.ruas.map(RuasId::get),
                    "payload": c.payload.as_ref().map(payload_json),
                    "record": location_text(&c.at),
                });
                let extra = match &c.event {
                    MabEvent::Set {
                        mab_seq,
                        outcome,
                        ranges,
                        fragments,
                    } => json!({
                        "kind": "set",
                        "mab_seq": mab_seq,
                        "outcome": outcome.name(),
                        "fragments": fragments,
                        "changed": ranges.iter().map(|r| {
                            let mut x = range_json(f, r.start, r.len);
                            if let Some(o) = x.as_object_mut() {
                                o.insert("etr".into(), r.etr.map_or(Value::Null, |e| json!(e.to_string())));
                            }
                            x
                        }).collect::<Vec<_>>(),
                    }),
                    MabEvent::Snapshot {
                        mab_seq,
                        created_us,
                        sha256,
                        check,
                    } => json!({
                        "kind": "snapshot",
                        "mab_seq": mab_seq,
                        "created_us": created_us,
                        "sha256": ivip_wire::hex::encode(sha256),
                        "check": check.name(),
                    }),
                    MabEvent::Baseline {
                        mab_seq,
                        created_us,
                        sha256,
                        part,
                        part_count,
                        micronets,
                    } => json!({
                        "kind": "baseline",
                        "mab_seq": mab_seq,
                        "created_us": created_us,
                        "sha256": ivip_wire::hex::encode(sha256),
                        "part": part,
                        "part_count": part_count,
                        "micronets": micronets,
                    }),
                    MabEvent::Gap { first, last } => json!({
                        "kind": "gap",
                        "first_mab_seq": first,
                        "last_mab_seq": last,
                    }),
                };
                if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                    o.extend(e);
                }
                v
            })
            .collect();
        json!({
            "mab": self.mab.to_string(),
            "from_us": self.from_us,
            "to_us": opt_time(self.to_us),
            "changes": changes,
            "next": self.next.as_ref().map(location_text),
            "warnings": self.warnings,
        })
    }
}

/// Parse a record location `SEGMENT:OFFSET` (as written in answers).
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_location(s: &str) -> Result<Location, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a record location SEGMENT:OFFSET"))?;
    let segment = a
        .parse()
        .map_err(|_| format!("`{s}`: segment is not a number"))?;
    let offset = b
        .parse()
        .map_err(|_| format!("`{s}`: offset is not a number"))?;
    Ok(Location { segment, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_forms() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1764073316000000"), Ok(1_764_073_316_000_000));
        assert_eq!(
            parse_time("2025-11-25T12:21:56Z"),
            Ok(1_764_073_316_000_000)
        );
        assert_eq!(
            parse_time("2025-11-25T13:21:56.5+01:00"),
            Ok(1_764_073_316_500_000)
        );
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000_000));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30T00:00:00Z",
            "2025-11-25T12:21:56",
            "-5",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(
            crate::time::format_unix_us(parse_time("2024-02-29T23:59:59.999999Z").unwrap()),
            "2024-02-29T23:59:59.999999Z"
        );
    }

    #[test]
    fn locations_parse() {
        assert_eq!(
            parse_location("3:4096"),
            Ok(Location {
                segment: 3,
                offset: 4096
            })
        );
        assert!(parse_location("3").is_err());
        assert!(parse_location("a:1").is_err());
    }
}
