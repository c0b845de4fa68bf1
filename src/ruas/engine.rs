//! The RUAS writer: the master database, the decision on each SUMUC, scheduled
//! sets, and the output stream. Sans-IO: the driver hands it requests and time; it
//! hands back the WAL records to make durable and the payloads to send after that.
//!
//! seed s4.3 ("the RUAS maintains the master database, for each of its MABs"),
//! s4.1.1; spec: wal.md (what is logged, recovery), http.md (the answers).
//!
//! # Durability contract
//! Every call that changes state returns the WAL record bodies it implies
//! ([`Step::wal`]). The driver appends them, commits (fsync), and only then answers
//! the UASes and sends the payloads of that step. If a commit fails the driver
//! stops the process: the in-memory master has moved ahead of the log, and the only
//! safe state is the one recovery rebuilds from the log.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ivip_wire::payload::{Payload, RecordView, SnapshotAnnouncement};
use ivip_wire::sumuc::SumucView;
use ivip_wire::wal::WalRecord;
use ivip_wire::{Command, Mab, PayloadId, Seq};

use super::packer::{Outgoing, Packer, PackerConfig};
use crate::table::{ApplyError, Change, Database, Table};
use crate::time::{Duration, Instant};

/// The decision on one SUMUC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the master with this per-MAB sequence.
    Accepted {
        /// The MAB.
        mab: Mab,
        /// Its new per-MAB sequence.
        mab_seq: u64,
        /// What changed (commands.md §2.1).
        changed: Vec<Change>,
    },
    /// Kept for its execute-at time.
    Scheduled {
        /// µs since the Unix epoch.
        execute_at_us: u64,
    },
    /// A dry run that would succeed with these changes.
    DryRunOk {
        /// The MAB.
        mab: Mab,
        /// What would change.
        changed: Vec<Change>,
    },
    /// The MAB is not one of this RUAS's.
    UnknownMab(Mab),
    /// The set does not fit the master state.
    Invalid(ApplyError),
}

/// What a step asks the driver to do, in this order: make `wal` durable, then
/// answer, then send `send`.
#[derive(Debug, Default)]
pub struct Step {
    /// WAL record bodies to append and commit.
    pub wal: Vec<Vec<u8>>,
    /// Payloads to send once `wal` is durable (their payload records are in `wal`).
    pub send: Vec<Outgoing>,
}

impl Step {
    fn payloads(&mut self, out: Vec<Outgoing>) {
        for o in out {
            self.wal.push(WalRecord::Payload(&o.bytes).to_vec());
            self.send.push(o);
        }
    }
}

/// A request's first outcome, kept for repeats (sumuc.md §2).
#[derive(Debug, Clone)]
struct Remembered {
    outcome: Outcome,
    at_us: u64,
}

#[derive(Debug, Clone)]
struct ScheduledSet {
    mab: Mab,
    commands: Vec<Command>,
    /// The accepted WAL record, re-logged when a segment starts (wal.md §5).
    record: Vec<u8>,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sets replayed into the master.
    pub sets: usize,
    /// The epoch in force.
    pub epoch: u32,
    /// The next payload sequence.
    pub next_seq: u32,
    /// Sets queued again because no logged payload carried them.
    pub requeued: usize,
    /// Recent payloads to send again.
    pub resend: usize,
    /// Scheduled sets waiting.
    pub scheduled: usize,
    /// `true` when the log was empty but snapshots existed: a new epoch was begun.
    pub new_epoch: bool,
}

/// Why recovery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryError {
    /// A WAL record could not be parsed.
    BadRecord {
        /// Its position among the records.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A logged set does not apply to the master rebuilt so far: the log and the
    /// snapshots disagree.
    Diverged {
        /// The MAB.
        mab: Mab,
        /// The set's per-MAB sequence.
        mab_seq: u64,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::BadRecord { index, reason } => {
                write!(f, "write-ahead log record {index} is unreadable: {reason}")
            }
            RecoveryError::Diverged {
                mab,
                mab_seq,
                reason,
            } => write!(
                f,
                "logged set {mab}#{mab_seq} does not apply to the recovered master ({reason}); \
                 the snapshots and the write-ahead log disagree"
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    /// Sets applied (accepted at once or released).
    pub accepted: u64,
    /// Sets scheduled.
    pub scheduled: u64,
    /// Repeated requests answered from memory.
    pub repeats: u64,
    /// Sets refused against the master state.
    pub invalid: u64,
    /// Scheduled sets that failed at their time.
    pub release_failed: u64,
    /// Payloads produced.
    pub payloads: u64,
    /// Bytes of payloads produced.
    pub payload_bytes: u64,
}

/// The writer.
#[derive(Debug)]
pub struct Engine {
    db: Database,
    packer: Packer,
    remembered: HashMap<([u8; 32], u64), Remembered>,
    remembered_order: VecDeque<([u8; 32], u64)>,
    scheduled: BTreeMap<(u64, [u8; 32], u64), ScheduledSet>,
    replay_window: Duration,
    stats: EngineStats,
}

impl Engine {
    /// Rebuild the writer from checkpoint tables (one per MAB, each at its per-MAB
    /// sequence; a MAB without one starts empty at 0) and the WAL records, in order.
    /// `highest_epoch_seen` is the largest epoch any checkpoint recorded (used only
    /// when the log is empty but checkpoints exist, wal.md §4).
    ///
    /// Returns the engine, what recovery found, and a first [`Step`]: the WAL
    /// records that must be written before anything else (a new epoch) and the
    /// recent payloads to send again.
    ///
    /// # Errors
    /// [`RecoveryError`].
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        packer_config: PackerConfig,
        key: crate::sign::KeyPair,
        mabs: &[Mab],
        checkpoints: Vec<Table>,
        highest_epoch_seen: u32,
        wal: &[Vec<u8>],
        replay_window: Duration,
        now: Instant,
    ) -> Result<(Engine, Recovered, Step), RecoveryError> {
        let mut db = Database::new();
        let had_checkpoints = !checkpoints.is_empty();
        for t in checkpoints {
            if mabs.contains(&t.mab()) {
                let _ = db.insert(t);
            }
        }
        for m in mabs {
            if db.table(m).is_none() {
                let _ = db.insert(Table::new(*m));
            }
        }
        let mut rec = Recovered::default();
        let mut epoch: Option<u32> = None;
        let mut last_seq: Option<Seq> = None;
        let mut recent: VecDeque<Vec<u8>> = VecDeque::new();
        // Sets logged but not yet carried by a logged payload, by (MAB, seq).
        let mut unsent: BTreeMap<(Mab, u64), Vec<Command>> = BTreeMap::new();
        let mut remembered = HashMap::new();
        let mut remembered_order = VecDeque::new();
        let mut scheduled: BTreeMap<(u64, [u8; 32], u64), ScheduledSet> = BTreeMap::new();
        let bad = |index: usize, reason: String| RecoveryError::BadRecord { index, reason };
        for (i, body) in wal.iter().enumerate() {
            let r = WalRecord::parse(body).map_err(|e| bad(i, e.to_string()))?;
            match r {
                WalRecord::Epoch(e) => {
                    if epoch != Some(e) {
                        epoch = Some(e);
                        last_seq = None;
                        recent.clear();
                    }
                }
                WalRecord::Accepted {
                    mab_seq,
                    accepted_us,
                    sumuc,
                } => {
                    let s = SumucView::new_checked(sumuc).map_err(|e| bad(i, e.to_string()))?;
                    let mab = s.mab();
                    let cmds: Vec<Command> = s.commands().iter().collect();
                    let key = (*s.signer(), s.header().request_id.get());
                    let outcome = if mab_seq == 0 {
                        let at = s.header().execute_at_us.get();
                        scheduled.insert(
                            (at, key.0, key.1),
                            ScheduledSet {
                                mab,
                                commands: cmds,
                                record: body.clone(),
                            },
                        );
                        Outcome::Scheduled { execute_at_us: at }
                    } else {
                        let changed = replay(&mut db, mab, mab_seq, &cmds)?;
                        if changed.is_some() {
                            rec.sets += 1;
                        }
                        unsent.insert((mab, mab_seq), cmds);
                        Outcome::Accepted {
                            mab,
                            mab_seq,
                            changed: changed.unwrap_or_default(),
                        }
                    };
                    if remembered
                        .insert(
                            key,
                            Remembered {
                                outcome,
                                at_us: accepted_us,
                            },
                        )
                        .is_none()
                    {
                        remembered_order.push_back(key);
                    }
                }
                WalRecord::Released {
                    signer,
                    request_id,
                    mab_seq,
                } => {
                    let found = scheduled
                        .iter()
                        .find(|(k, _)| k.1 == signer && k.2 == request_id)
                        .map(|(k, _)| *k);
                    let Some(k) = found else { continue };
                    let Some(set) = scheduled.remove(&k) else {
                        continue;
                    };
                    if mab_seq > 0 {
                        let changed = replay(&mut db, set.mab, mab_seq, &set.commands)?;
                        if changed.is_some() {
                            rec.sets += 1;
                        }
                        unsent.insert((set.mab, mab_seq), set.commands);
                    }
                }
                WalRecord::Payload(p) => {
                    let view = Payload::new_checked(p).map_err(|e| bad(i, e.to_string()))?;
                    let id = view.id();
                    if epoch.is_none() {
                        epoch = Some(id.epoch);
                    }
                    last_seq = Some(id.seq);
                    for r in view.records() {
                        match r {
                            RecordView::MabUpdate { mab, mab_seq, .. } => {
                                unsent.remove(&(mab, mab_seq));
                            }
                            RecordView::Fragment {
                                mab,
                                mab_seq,
                                index,
                                count,
                                ..
                            } if index + 1 == count => {
                                unsent.remove(&(mab, mab_seq));
                            }
                            _ => {}
                        }
                    }
                    recent.push_back(p.to_vec());
                    // Keep the payloads of about the last two seconds (at the
                    // heartbeat rate, a few; under load, bounded).
                    while recent.len() > RESEND_PAYLOADS_MAX {
                        recent.pop_front();
                    }
                }
            }
        }
        db.publish();
        let mut first = Step::default();
        let (epoch, next_seq) = match (epoch, last_seq) {
            (Some(e), Some(s)) => (e, s.next()),
            (Some(e), None) => (e, Seq(0)),
            (None, _) => {
                // No epoch in the log: a first start, or the log was lost.
                let e = highest_epoch_seen.saturating_add(1).max(1);
                rec.new_epoch = had_checkpoints;
                first.wal.push(WalRecord::Epoch(e).to_vec());
                (e, Seq(0))
            }
        };
        rec.epoch = epoch;
        rec.next_seq = next_seq.0;
        let mut packer = Packer::new(packer_config, key, epoch, next_seq, now);
        rec.requeued = unsent.len();
        for ((mab, mab_seq), cmds) in unsent {
            packer.push_set(now, mab, mab_seq, cmds);
        }
        rec.resend = recent.len();
        rec.scheduled = scheduled.len();
        for p in recent {
            if let Ok(view) = Payload::new_checked(&p) {
                let id: PayloadId = view.id();
                first.send.push(Outgoing {
                    id,
                    bytes: p,
                    sets: vec![],
                    oldest_queued: None,
                });
            }
        }
        Ok((
            Engine {
                db,
                packer,
                remembered,
                remembered_order,
                scheduled,
                replay_window,
                stats: EngineStats::default(),
            },
            rec,
            first,
        ))
    }

    /// The master database (its readers serve the read API and snapshots).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Sets queued for the stream and payloads held by the quota.
    pub fn queue_depth(&self) -> (usize, usize) {
        (self.packer.queued_sets(), self.packer.held_payloads())
    }

    /// Scheduled sets waiting for their time.
    pub fn scheduled(&self) -> usize {
        self.scheduled.len()
    }

    /// The next payload's (epoch, sequence): where the stream stands.
    pub fn stream_position(&self) -> (u32, Seq) {
        (self.packer.epoch(), self.packer.next_seq())
    }

    /// The first outcome of `(signer, request_id)`, if still remembered.
    pub fn remembered(&self, signer: &[u8; 32], request_id: u64) -> Option<&Outcome> {
        self.remembered
            .get(&(*signer, request_id))
            .map(|r| &r.outcome)
    }

    fn remember(&mut self, key: ([u8; 32], u64), outcome: Outcome, now_us: u64) {
        if self
            .remembered
            .insert(
                key,
                Remembered {
                    outcome,
                    at_us: now_us,
                },
            )
            .is_none()
        {
            self.remembered_order.push_back(key);
        }
        // Forget what is older than twice the replay window: a repeat that old is
        // refused as stale before it gets here.
        let horizon = now_us.saturating_sub(2 * self.replay_window.as_us());
        while let Some(k) = self.remembered_order.front() {
            match self.remembered.get(k) {
                Some(r) if r.at_us >= horizon => break,
                _ => {
                    let k = *k;
                    self.remembered.remove(&k);
                    self.remembered_order.pop_front();
                }
            }
        }
    }

    /// Decide on an authorised SUMUC (the signer and delegation were checked by the
    /// caller, `crate::delegation`). `bytes` are the SUMUC as received; they go
    /// into the WAL verbatim.
    pub fn submit(
        &mut self,
        now: Instant,
        now_us: u64,
        s: &SumucView<'_>,
        bytes: &[u8],
        dry_run: bool,
        step: &mut Step,
    ) -> Outcome {
        let key = (*s.signer(), s.header().request_id.get());
        if !dry_run && let Some(r) = self.remembered.get(&key) {
            self.stats.repeats += 1;
            return r.outcome.clone();
        }
        let mab = s.mab();
        let cmds: Vec<Command> = s.commands().iter().collect();
        let Some(table) = self.db.table_mut(&mab) else {
            return Outcome::UnknownMab(mab);
        };
        let execute_at_us = s.header().execute_at_us.get();
        if dry_run {
            return match table.check(&cmds) {
                Ok(changed) => Outcome::DryRunOk { mab, changed },
                Err(e) => Outcome::Invalid(e),
            };
        }
        if execute_at_us > now_us {
            // Checked now so obvious mistakes are refused at once; checked again at
            // its time, when the master may have moved on.
            if let Err(e) = table.check(&cmds) {
                self.stats.invalid += 1;
                return Outcome::Invalid(e);
            }
            let record = WalRecord::Accepted {
                mab_seq: 0,
                accepted_us: now_us,
                sumuc: bytes,
            }
            .to_vec();
            step.wal.push(record.clone());
            self.scheduled.insert(
                (execute_at_us, key.0, key.1),
                ScheduledSet {
                    mab,
                    commands: cmds,
                    record,
                },
            );
            self.stats.scheduled += 1;
            let outcome = Outcome::Scheduled { execute_at_us };
            self.remember(key, outcome.clone(), now_us);
            return outcome;
        }
        let mab_seq = table.mab_seq() + 1;
        match table.apply_at(mab_seq, &cmds) {
            Ok(changed) => {
                step.wal.push(
                    WalRecord::Accepted {
                        mab_seq,
                        accepted_us: now_us,
                        sumuc: bytes,
                    }
                    .to_vec(),
                );
                self.packer.push_set(now, mab, mab_seq, cmds);
                self.stats.accepted += 1;
                let outcome = Outcome::Accepted {
                    mab,
                    mab_seq,
                    changed,
                };
                self.remember(key, outcome.clone(), now_us);
                outcome
            }
            Err(e) => {
                self.stats.invalid += 1;
                Outcome::Invalid(e)
            }
        }
    }

    /// Make applied sets visible to readers (call once per batch of submits).
    pub fn publish(&mut self) {
        self.db.publish();
    }

    /// Release scheduled sets whose time has come, then pack and release payloads.
    pub fn poll(&mut self, now: Instant, now_us: u64, step: &mut Step) {
        while let Some((&k, _)) = self.scheduled.first_key_value() {
            if k.0 > now_us {
                break;
            }
            let Some(set) = self.scheduled.remove(&k) else {
                break;
            };
            let (signer, request_id) = (k.1, k.2);
            let Some(table) = self.db.table_mut(&set.mab) else {
                continue;
            };
            let mab_seq = table.mab_seq() + 1;
            let applied = table.apply_at(mab_seq, &set.commands);
            let (seq_logged, outcome) = match applied {
                Ok(changed) => {
                    self.packer.push_set(now, set.mab, mab_seq, set.commands);
                    self.stats.accepted += 1;
                    (
                        mab_seq,
                        Outcome::Accepted {
                            mab: set.mab,
                            mab_seq,
                            changed,
                        },
                    )
                }
                Err(e) => {
                    self.stats.release_failed += 1;
                    log::warn!(
                        "scheduled set {} of signer {} failed at its time: {e}",
                        request_id,
                        ivip_wire::hex::encode(&signer[..8])
                    );
                    (0, Outcome::Invalid(e))
                }
            };
            step.wal.push(
                WalRecord::Released {
                    signer,
                    request_id,
                    mab_seq: seq_logged,
                }
                .to_vec(),
            );
            if let Some(r) = self.remembered.get_mut(&(signer, request_id)) {
                r.outcome = outcome;
            }
        }
        self.db.publish();
        let out = self.packer.poll(now, now_us);
        for o in &out {
            self.stats.payloads += 1;
            self.stats.payload_bytes += o.bytes.len() as u64;
        }
        step.payloads(out);
    }

    /// On a graceful stop: pack every queued set now, whatever its batch window, and
    /// release what the quota allows.
    pub fn flush(&mut self, now: Instant, now_us: u64, step: &mut Step) {
        let later = now + self.packer_window();
        let out = self.packer.poll(later, now_us);
        for o in &out {
            self.stats.payloads += 1;
            self.stats.payload_bytes += o.bytes.len() as u64;
        }
        step.payloads(out);
    }

    fn packer_window(&self) -> Duration {
        self.packer.batch_window()
    }

    /// The next instant [`Engine::poll`] has work (monotonic), given the wall clock
    /// now (for scheduled sets).
    pub fn poll_timeout(&self, now: Instant, now_us: u64) -> Option<Instant> {
        let sched = self
            .scheduled
            .keys()
            .next()
            .map(|k| now + Duration::from_us(k.0.saturating_sub(now_us)));
        [self.packer.poll_timeout(), sched]
            .into_iter()
            .flatten()
            .min()
    }

    /// Announce the canonical hash of `mab` at its current per-MAB sequence in the
    /// stream (s4.1.2) and return the announcement. The driver writes the snapshot
    /// file from the published version on another thread.
    pub fn announce_snapshot(
        &mut self,
        now: Instant,
        now_us: u64,
        mab: &Mab,
    ) -> Option<SnapshotAnnouncement> {
        let t = self.db.table_mut(mab)?;
        t.publish();
        let a = SnapshotAnnouncement {
            mab: *mab,
            mab_seq: t.mab_seq(),
            created_us: now_us,
            sha256: t.hash(),
        };
        self.packer.push_announcement(now, a);
        Some(a)
    }

    /// WAL records that must open every new segment (wal.md §4, §5): the epoch and
    /// the scheduled sets still waiting, so old segments can be deleted.
    pub fn segment_preamble(&self) -> Vec<Vec<u8>> {
        let mut v = vec![WalRecord::Epoch(self.packer.epoch()).to_vec()];
        v.extend(self.scheduled.values().map(|s| s.record.clone()));
        v
    }
}

/// Most recent payloads kept during recovery to send again.
const RESEND_PAYLOADS_MAX: usize = 64;
// The resend waits in the DTLS queue with the new payloads made while the first
// handshakes run; it must leave them room (spec: dtls.md §5, `pending_max`).
const _: () = assert!(RESEND_PAYLOADS_MAX * 8 <= crate::dtls::link::PENDING_MAX_DEFAULT);

/// Apply a logged set unless the checkpoint already reflects it. `Ok(None)`: already
/// in the checkpoint.
fn replay(
    db: &mut Database,
    mab: Mab,
    mab_seq: u64,
    cmds: &[Command],
) -> Result<Option<Vec<Change>>, RecoveryError> {
    let Some(t) = db.table_mut(&mab) else {
        return Err(RecoveryError::Diverged {
            mab,
            mab_seq,
            reason: "the MAB is no longer configured".into(),
        });
    };
    if mab_seq <= t.mab_seq() {
        return Ok(None);
    }
    if mab_seq != t.mab_seq() + 1 {
        return Err(RecoveryError::Diverged {
            mab,
            mab_seq,
            reason: format!("the master is at {}; a set is missing", t.mab_seq()),
        });
    }
    t.apply_at(mab_seq, cmds)
        .map(Some)
        .map_err(|e| RecoveryError::Diverged {
            mab,
            mab_seq,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::KeyPair;
    use ivip_wire::sumuc::Sumuc;
    use ivip_wire::{Etr, RuasId};

    const T0_US: u64 = 1_764_000_000_000_000;

    fn mab() -> Mab {
        "20.0.0.0/14".parse().unwrap()
    }

    fn pc() -> PackerConfig {
        PackerConfig {
            ruas: RuasId::new(1).unwrap(),
            batch_window: Duration::ZERO,
            heartbeat_interval: Duration::from_secs(1),
            quota_bytes: 0,
            quota_interval: Duration::from_ms(100),
        }
    }

    fn fresh(wal: &[Vec<u8>]) -> (Engine, Recovered, Step) {
        Engine::recover(
            pc(),
            KeyPair::from_seed(&[9; 32]),
            &[mab()],
            vec![],
            0,
            wal,
            Duration::from_secs(300),
            Instant(0),
        )
        .unwrap()
    }

    fn sumuc(req: u64, cmds: Vec<Command>, execute_at_us: u64) -> Vec<u8> {
        let k = KeyPair::from_seed(&[1; 32]);
        let s = Sumuc {
            signer: k.public(),
            request_id: req,
            timestamp_us: T0_US,
            execute_at_us,
            mab: mab(),
            origin: "test".into(),
            commands: cmds,
            signature: [0; 64],
        };
        let mut b = s.to_vec().unwrap();
        let n = b.len() - 64;
        let sig = k.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        b
    }

    fn define(i: u64, last: u8) -> Command {
        Command::Define {
            start: 0x1400_0000 + 10 * i,
            len: 4,
            etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, last)),
        }
    }

    fn submit(
        e: &mut Engine,
        wal: &mut Vec<Vec<u8>>,
        req: u64,
        cmds: Vec<Command>,
        at: u64,
    ) -> (Outcome, Step) {
        let b = sumuc(req, cmds, at);
        let v = SumucView::new_checked(&b).unwrap();
        let mut step = Step::default();
        let o = e.submit(Instant(0), T0_US, &v, &b, false, &mut step);
        wal.extend(step.wal.iter().cloned());
        (o, step)
    }

    #[test]
    fn first_start_writes_epoch_one() {
        let (_, rec, step) = fresh(&[]);
        assert_eq!((rec.epoch, rec.next_seq, rec.new_epoch), (1, 0, false));
        assert_eq!(step.wal, vec![WalRecord::Epoch(1).to_vec()]);
    }

    #[test]
    fn accepted_sets_get_rising_sequences_and_repeats_change_nothing() {
        let (mut e, _, first) = fresh(&[]);
        let mut wal = first.wal;
        let (o1, s1) = submit(&mut e, &mut wal, 1, vec![define(0, 1)], 0);
        assert!(matches!(o1, Outcome::Accepted { mab_seq: 1, .. }));
        assert_eq!(s1.wal.len(), 1);
        let (o2, _) = submit(&mut e, &mut wal, 2, vec![define(1, 1)], 0);
        assert!(matches!(o2, Outcome::Accepted { mab_seq: 2, .. }));
        let (again, s) = submit(&mut e, &mut wal, 1, vec![define(0, 1)], 0);
        assert_eq!(again, o1, "the first outcome, again");
        assert!(s.wal.is_empty(), "nothing logged for a repeat");
        let (bad, s) = submit(&mut e, &mut wal, 3, vec![define(0, 2)], 0);
        assert!(matches!(bad, Outcome::Invalid(ApplyError { index: 0, .. })));
        assert!(s.wal.is_empty());
        assert_eq!(e.stats().repeats, 1);
    }

    #[test]
    fn recovery_rebuilds_the_master_continues_the_sequence_and_requeues_unsent_sets() {
        let (mut e, _, first) = fresh(&[]);
        let mut wal = first.wal;
        submit(&mut e, &mut wal, 1, vec![define(0, 1)], 0);
        let mut step = Step::default();
        e.poll(Instant(0), T0_US, &mut step);
        assert_eq!(step.send.len(), 1, "window 0: sent at once");
        wal.extend(step.wal);
        let sent_seq = step.send[0].id.seq;
        // Accepted and logged, then a crash before its payload was logged.
        submit(&mut e, &mut wal, 2, vec![define(1, 1)], 0);
        let hash = e.db().table(&mab()).unwrap().hash();

        let (mut e2, rec, first) = fresh(&wal);
        assert_eq!(rec.sets, 2);
        assert_eq!(rec.next_seq, sent_seq.next().0, "never reuses a number");
        assert_eq!(
            rec.requeued, 1,
            "set 2 was never carried by a logged payload"
        );
        assert_eq!(rec.resend, 1, "the last logged payload goes out again");
        assert!(first.wal.is_empty());
        assert_eq!(e2.db().table(&mab()).unwrap().hash(), hash);
        let mut step = Step::default();
        e2.poll(Instant(0), T0_US, &mut step);
        assert_eq!(step.send.len(), 1);
        assert_eq!(step.send[0].id.seq, sent_seq.next());
        assert_eq!(step.send[0].sets, vec![(mab(), 2)]);
        // The repeat of request 1 is still answered from the log.
        let (again, _) = submit(&mut e2, &mut Vec::new(), 1, vec![define(0, 1)], 0);
        assert!(matches!(again, Outcome::Accepted { mab_seq: 1, .. }));
    }

    #[test]
    fn scheduled_sets_wait_for_their_time_and_survive_a_restart() {
        let (mut e, _, first) = fresh(&[]);
        let mut wal = first.wal;
        let at = T0_US + 5_000_000;
        let (o, _) = submit(&mut e, &mut wal, 7, vec![define(0, 1)], at);
        assert_eq!(o, Outcome::Scheduled { execute_at_us: at });
        assert_eq!(
            e.poll_timeout(Instant(0), T0_US),
            Some(Instant(1_000_000)),
            "the heartbeat (1 s) comes before the scheduled set (5 s)"
        );
        let mut step = Step::default();
        e.poll(Instant(1_000_000), T0_US + 1_000_000, &mut step);
        assert_eq!(
            e.db().table(&mab()).unwrap().mab_seq(),
            0,
            "not before its time"
        );
        wal.extend(step.wal);
        // Restart before its time: it is still scheduled.
        let (mut e2, rec, _) = fresh(&wal);
        assert_eq!(rec.scheduled, 1);
        let mut step = Step::default();
        e2.poll(Instant(5_000_000), at, &mut step);
        assert_eq!(
            e2.db().table(&mab()).unwrap().mab_seq(),
            1,
            "released at its time"
        );
        assert!(matches!(
            WalRecord::parse(&step.wal[0]).unwrap(),
            WalRecord::Released {
                mab_seq: 1,
                request_id: 7,
                ..
            }
        ));
        assert_eq!(step.send.len(), 1);
        wal.extend(step.wal);
        let (e3, rec, _) = fresh(&wal);
        assert_eq!((rec.scheduled, rec.sets), (0, 1));
        assert!(matches!(
            e3.remembered(&KeyPair::from_seed(&[1; 32]).public(), 7),
            Some(Outcome::Scheduled { .. })
        ));
    }

    #[test]
    fn a_lost_log_with_checkpoints_starts_a_new_epoch() {
        let mut t = Table::new(mab());
        t.apply_at(1, &[define(0, 1)]).unwrap();
        let (_, rec, step) = Engine::recover(
            pc(),
            KeyPair::from_seed(&[9; 32]),
            &[mab()],
            vec![t],
            4,
            &[],
            Duration::from_secs(300),
            Instant(0),
        )
        .unwrap();
        assert_eq!((rec.epoch, rec.next_seq, rec.new_epoch), (5, 0, true));
        assert_eq!(step.wal, vec![WalRecord::Epoch(5).to_vec()]);
    }

    #[test]
    fn a_log_that_disagrees_with_the_checkpoint_is_refused() {
        let (mut e, _, first) = fresh(&[]);
        let mut wal = first.wal;
        submit(&mut e, &mut wal, 1, vec![define(0, 1)], 0);
        submit(&mut e, &mut wal, 2, vec![define(1, 1)], 0);
        // A checkpoint at 0 but the log lost its first set: set 2 cannot follow 0.
        wal.remove(1);
        let r = Engine::recover(
            pc(),
            KeyPair::from_seed(&[9; 32]),
            &[mab()],
            vec![],
            0,
            &wal,
            Duration::from_secs(300),
            Instant(0),
        );
        assert!(matches!(r, Err(RecoveryError::Diverged { mab_seq: 2, .. })));
    }
}
