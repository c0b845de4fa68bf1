//! The RUAS output stage: batch accepted sets per MAB, pack them into signed,
//! numbered payloads of at most 1200 bytes, keep within the byte quota, and send a
//! heartbeat when idle. Sans-IO: fed `(now, input)`, it hands back payloads ready
//! to be logged and sent.
//!
//! seed s3.9 ("bundle multiple updates for one MAB together"), s4.1.1 (quota: "if
//! the RUAS needs to send more packets than this, it should buffer the data"),
//! spec: payload.md §2 (sequence, heartbeats), §4.2 (fragments).
//!
//! Not here: durability (the driver logs each payload before sending it), the
//! master database, sockets.

use std::collections::{BTreeMap, VecDeque};

use ivip_wire::payload::{
    self, FRAGMENT_CHUNK_MAX, MAB_UPDATE_COMMANDS_MAX_LEN, PAYLOAD_LEN_MAX, PayloadRepr, Record,
    SnapshotAnnouncement,
};
use ivip_wire::{Command, Mab, PayloadId, RuasId, Seq};

use crate::sign::KeyPair;
use crate::time::{Duration, Instant};

/// Settings of the output stage.
#[derive(Debug, Clone, Copy)]
pub struct PackerConfig {
    /// The RUAS id written into every payload.
    pub ruas: RuasId,
    /// How long a MAB's first queued set waits for others (0 = send at once).
    pub batch_window: Duration,
    /// Send a heartbeat when nothing was sent for this long.
    pub heartbeat_interval: Duration,
    /// Bytes that may be sent per quota interval; 0 = no quota.
    pub quota_bytes: u64,
    /// The quota interval (s4.1.1: "0.1, 0.2 or some other fraction of a second").
    pub quota_interval: Duration,
}

/// Something queued for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Set {
        mab_seq: u64,
        commands: Vec<Command>,
    },
    Announce(SnapshotAnnouncement),
}

/// A signed payload ready to be logged and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its identity.
    pub id: PayloadId,
    /// The signed bytes.
    pub bytes: Vec<u8>,
    /// The (MAB, per-MAB sequence) of every set it completes, for latency tracking.
    pub sets: Vec<(Mab, u64)>,
    /// When the earliest of those sets was queued.
    pub oldest_queued: Option<Instant>,
}

#[derive(Debug)]
struct MabQueue {
    items: VecDeque<(Instant, Item)>,
    deadline: Instant,
}

/// The output stage's state.
#[derive(Debug)]
pub struct Packer {
    config: PackerConfig,
    key: KeyPair,
    epoch: u32,
    next_seq: Seq,
    queues: BTreeMap<Mab, MabQueue>,
    /// Numbered and signed, waiting for quota.
    held: VecDeque<Outgoing>,
    quota_window_start: Instant,
    quota_used: u64,
    last_sent: Instant,
    queued_sets: usize,
}

impl Packer {
    /// A packer that will number its next payload `(epoch, next_seq)`.
    pub fn new(
        config: PackerConfig,
        key: KeyPair,
        epoch: u32,
        next_seq: Seq,
        now: Instant,
    ) -> Packer {
        Packer {
            config,
            key,
            epoch,
            next_seq,
            queues: BTreeMap::new(),
            held: VecDeque::new(),
            quota_window_start: now,
            quota_used: 0,
            last_sent: now,
            queued_sets: 0,
        }
    }

    /// The sequence the next payload will get.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The batch window.
    pub fn batch_window(&self) -> Duration {
        self.config.batch_window
    }

    /// The epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Sets queued and not yet packed.
    pub fn queued_sets(&self) -> usize {
        self.queued_sets
    }

    /// Payloads packed and waiting for quota.
    pub fn held_payloads(&self) -> usize {
        self.held.len()
    }

    fn queue(&mut self, now: Instant, mab: Mab, item: Item) {
        let window = self.config.batch_window;
        let q = self.queues.entry(mab).or_insert_with(|| MabQueue {
            items: VecDeque::new(),
            deadline: now + window,
        });
        if q.items.is_empty() {
            q.deadline = now + window;
        }
        q.items.push_back((now, item));
    }

    /// Queue an accepted set. Sets of one MAB must come in per-MAB order.
    pub fn push_set(&mut self, now: Instant, mab: Mab, mab_seq: u64, commands: Vec<Command>) {
        self.queued_sets += 1;
        self.queue(now, mab, Item::Set { mab_seq, commands });
    }

    /// Queue a snapshot announcement; it goes out after the sets queued before it.
    pub fn push_announcement(&mut self, now: Instant, a: SnapshotAnnouncement) {
        self.queue(now, a.mab, Item::Announce(a));
    }

    /// The next instant [`Packer::poll`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let batch = self
            .queues
            .values()
            .filter(|q| !q.items.is_empty())
            .map(|q| q.deadline)
            .min();
        let quota =
            (!self.held.is_empty()).then(|| self.quota_window_start + self.config.quota_interval);
        let heartbeat = (self.config.heartbeat_interval > Duration::ZERO)
            .then(|| self.last_sent + self.config.heartbeat_interval);
        [batch, quota, heartbeat].into_iter().flatten().min()
    }

    /// Pack what is due, then release what the quota allows. Returns payloads in
    /// sequence order; the caller logs them durably, then sends them.
    pub fn poll(&mut self, now: Instant, unix_us: u64) -> Vec<Outgoing> {
        self.pack_due(now, unix_us);
        if self.held.is_empty()
            && self.config.heartbeat_interval > Duration::ZERO
            && now.saturating_since(self.last_sent) >= self.config.heartbeat_interval
            && self.queues.values().all(|q| q.items.is_empty())
        {
            let interval_ms =
                u32::try_from(self.config.heartbeat_interval.as_ms()).unwrap_or(u32::MAX);
            let out = self.seal(
                vec![Record::Heartbeat { interval_ms }],
                vec![],
                None,
                unix_us,
            );
            self.held.push_back(out);
        }
        self.release(now)
    }

    fn release(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.config.quota_bytes == 0 {
            out.extend(self.held.drain(..));
        } else {
            if now.saturating_since(self.quota_window_start) >= self.config.quota_interval {
                self.quota_window_start = now;
                self.quota_used = 0;
            }
            while let Some(p) = self.held.front() {
                let n = p.bytes.len() as u64;
                // A payload always fits an empty window, even a quota below 1200.
                if self.quota_used > 0 && self.quota_used + n > self.config.quota_bytes {
                    break;
                }
                self.quota_used += n;
                out.extend(self.held.pop_front());
            }
        }
        if !out.is_empty() {
            self.last_sent = now;
        }
        out
    }

    fn pack_due(&mut self, now: Instant, unix_us: u64) {
        let due: Vec<Mab> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.items.is_empty() && q.deadline <= now)
            .map(|(m, _)| *m)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut records: Vec<Record> = Vec::new();
        let mut sets: Vec<(Mab, u64)> = Vec::new();
        let mut oldest: Option<Instant> = None;
        let mut len = payload::HEADER_LEN + payload::SIGNATURE_LEN;
        for mab in due {
            let Some(q) = self.queues.get_mut(&mab) else {
                continue;
            };
            let items: Vec<(Instant, Item)> = q.items.drain(..).collect();
            for (queued, item) in items {
                let rec = match item {
                    Item::Announce(a) => Record::Snapshot(a),
                    Item::Set { mab_seq, commands } => {
                        self.queued_sets -= 1;
                        let encoded_len = ivip_wire::command::commands_len(mab.family(), &commands);
                        if encoded_len > MAB_UPDATE_COMMANDS_MAX_LEN {
                            // Too big for one payload: flush what we have, then send
                            // the set as fragments, each in its own payload.
                            if !records.is_empty() {
                                let p = self.seal(
                                    std::mem::take(&mut records),
                                    std::mem::take(&mut sets),
                                    oldest.take(),
                                    unix_us,
                                );
                                self.held.push_back(p);
                                len = payload::HEADER_LEN + payload::SIGNATURE_LEN;
                            }
                            self.push_fragments(mab, mab_seq, &commands, queued, unix_us);
                            continue;
                        }
                        sets.push((mab, mab_seq));
                        Record::MabUpdate {
                            mab,
                            mab_seq,
                            commands,
                        }
                    }
                };
                let n = rec.buffer_len();
                if len + n > PAYLOAD_LEN_MAX && !records.is_empty() {
                    let last_set = matches!(rec, Record::MabUpdate { .. })
                        .then(|| sets.pop())
                        .flatten();
                    let p = self.seal(
                        std::mem::take(&mut records),
                        std::mem::take(&mut sets),
                        oldest.take(),
                        unix_us,
                    );
                    self.held.push_back(p);
                    len = payload::HEADER_LEN + payload::SIGNATURE_LEN;
                    sets.extend(last_set);
                }
                len += n;
                oldest = Some(oldest.map_or(queued, |o| o.min(queued)));
                records.push(rec);
            }
        }
        if !records.is_empty() {
            let p = self.seal(records, sets, oldest, unix_us);
            self.held.push_back(p);
        }
    }

    fn push_fragments(
        &mut self,
        mab: Mab,
        mab_seq: u64,
        commands: &[Command],
        queued: Instant,
        unix_us: u64,
    ) {
        let mut encoded = vec![0u8; ivip_wire::command::commands_len(mab.family(), commands)];
        if ivip_wire::command::emit_commands(mab.family(), commands, &mut encoded).is_err() {
            // Commands were checked on ingest; an unencodable set cannot happen.
            log::error!("set {mab}#{mab_seq} could not be encoded; dropped from the stream");
            return;
        }
        let Some(chunks) = payload::fragment_chunks(&encoded, FRAGMENT_CHUNK_MAX) else {
            log::error!(
                "set {mab}#{mab_seq} needs more than 255 fragments; dropped from the stream"
            );
            return;
        };
        let count = chunks.len() as u8;
        let command_count = commands.len() as u16;
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let rec = Record::Fragment {
                mab,
                mab_seq,
                index: i as u8,
                count,
                command_count,
                chunk: chunk.to_vec(),
            };
            let sets = if last { vec![(mab, mab_seq)] } else { vec![] };
            let p = self.seal(vec![rec], sets, Some(queued), unix_us);
            self.held.push_back(p);
        }
    }

    /// Number and sign a payload.
    fn seal(
        &mut self,
        records: Vec<Record>,
        sets: Vec<(Mab, u64)>,
        oldest_queued: Option<Instant>,
        unix_us: u64,
    ) -> Outgoing {
        let id = PayloadId {
            ruas: self.config.ruas,
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.next();
        let repr = PayloadRepr {
            id,
            timestamp_us: unix_us,
            records,
            signature: [0; 64],
        };
        let mut bytes = vec![0u8; repr.buffer_len()];
        // The packer keeps every payload within 1200 bytes and every record valid.
        if let Err(e) = repr.emit(&mut bytes) {
            log::error!("payload {id} could not be encoded: {e}");
        }
        let n = bytes.len() - payload::SIGNATURE_LEN;
        let sig = self.key.sign(&bytes[..n]);
        bytes[n..].copy_from_slice(&sig);
        debug_assert!(payload::Payload::new_checked(&bytes).is_ok());
        Outgoing {
            id,
            bytes,
            sets,
            oldest_queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::Etr;
    use ivip_wire::payload::{Payload, RecordView};

    fn cfg(window_ms: u64) -> PackerConfig {
        PackerConfig {
            ruas: RuasId::new(1).unwrap(),
            batch_window: Duration::from_ms(window_ms),
            heartbeat_interval: Duration::from_secs(1),
            quota_bytes: 0,
            quota_interval: Duration::from_ms(100),
        }
    }

    fn mab() -> Mab {
        "20.0.0.0/14".parse().unwrap()
    }

    fn set_etr(i: u64) -> Command {
        Command::SetEtr {
            start: 0x1400_0000 + i,
            len: 1,
            etr: Etr::V4("192.0.2.1".parse().unwrap()),
        }
    }

    fn packer(c: PackerConfig) -> Packer {
        Packer::new(
            c,
            KeyPair::from_seed(&[7; 32]),
            3,
            Seq(u32::MAX),
            Instant(0),
        )
    }

    fn decode(p: &Outgoing) -> Vec<u64> {
        let v = Payload::new_checked(&p.bytes).unwrap();
        v.records()
            .filter_map(|r| match r {
                RecordView::MabUpdate { mab_seq, .. } => Some(mab_seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn batch_window_holds_sets_until_it_ends() {
        let mut p = packer(cfg(100));
        p.push_set(Instant(0), mab(), 1, vec![set_etr(1)]);
        p.push_set(
            Instant::ZERO + Duration::from_ms(50),
            mab(),
            2,
            vec![set_etr(2)],
        );
        assert!(p.poll(Instant::ZERO + Duration::from_ms(99), 0).is_empty());
        assert_eq!(
            p.poll_timeout(),
            Some(Instant::ZERO + Duration::from_ms(100))
        );
        let out = p.poll(Instant::ZERO + Duration::from_ms(100), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(decode(&out[0]), vec![1, 2]);
        assert_eq!(out[0].sets, vec![(mab(), 1), (mab(), 2)]);
        assert_eq!(out[0].id.seq, Seq(u32::MAX), "numbering starts where told");
    }

    #[test]
    fn window_zero_sends_at_once_and_sequence_wraps() {
        let mut p = packer(cfg(0));
        p.push_set(Instant(5), mab(), 1, vec![set_etr(1)]);
        let a = p.poll(Instant(5), 0);
        p.push_set(Instant(6), mab(), 2, vec![set_etr(2)]);
        let b = p.poll(Instant(6), 0);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(b[0].id.seq, Seq(0));
        assert!(b[0].id.seq.is_after(a[0].id.seq));
    }

    #[test]
    fn many_sets_split_across_payloads_of_at_most_1200_bytes() {
        let mut p = packer(cfg(0));
        for i in 0..500 {
            p.push_set(Instant(0), mab(), i + 1, vec![set_etr(i)]);
        }
        let out = p.poll(Instant(0), 0);
        assert!(out.len() > 1);
        let mut seen = Vec::new();
        for o in &out {
            assert!(o.bytes.len() <= PAYLOAD_LEN_MAX);
            let ids = decode(o);
            assert_eq!(o.sets.iter().map(|s| s.1).collect::<Vec<_>>(), ids);
            seen.extend(ids);
        }
        assert_eq!(seen, (1..=500).collect::<Vec<_>>());
        for w in out.windows(2) {
            assert_eq!(w[1].id.seq, w[0].id.seq.next());
        }
    }

    #[test]
    fn an_oversized_set_goes_out_as_fragments() {
        let mut p = packer(cfg(0));
        let cmds: Vec<Command> = (0..300).map(set_etr).collect();
        p.push_set(Instant(0), mab(), 1, cmds.clone());
        let out = p.poll(Instant(0), 0);
        assert!(out.len() >= 4, "300 x 13 bytes need 4 fragments");
        let mut joined = Vec::new();
        for (i, o) in out.iter().enumerate() {
            let v = Payload::new_checked(&o.bytes).unwrap();
            for r in v.records() {
                match r {
                    RecordView::Fragment {
                        index,
                        count,
                        command_count,
                        chunk,
                        ..
                    } => {
                        assert_eq!((usize::from(index), usize::from(count)), (i, out.len()));
                        assert_eq!(command_count, 300);
                        joined.extend_from_slice(chunk);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(out.last().unwrap().sets, vec![(mab(), 1)]);
        let list = ivip_wire::command::Commands::new_checked(mab().family(), 300, &joined).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), cmds);
    }

    #[test]
    fn heartbeat_after_a_quiet_second() {
        let mut p = packer(cfg(0));
        assert!(p.poll(Instant::ZERO + Duration::from_ms(999), 0).is_empty());
        let out = p.poll(Instant::ZERO + Duration::from_ms(1000), 0);
        assert_eq!(out.len(), 1);
        let v = Payload::new_checked(&out[0].bytes).unwrap();
        assert!(matches!(
            v.records().next(),
            Some(RecordView::Heartbeat { interval_ms: 1000 })
        ));
        assert!(
            p.poll(Instant::ZERO + Duration::from_ms(1500), 0)
                .is_empty()
        );
    }

    #[test]
    fn quota_holds_payloads_and_drops_none() {
        let mut c = cfg(0);
        c.quota_bytes = 2400;
        let mut p = packer(c);
        for i in 0..1000 {
            p.push_set(Instant(0), mab(), i + 1, vec![set_etr(i)]);
        }
        let mut t = Instant(0);
        let mut got = Vec::new();
        let mut bytes_per_window = Vec::new();
        for _ in 0..100 {
            let out = p.poll(t, 0);
            bytes_per_window.push(out.iter().map(|o| o.bytes.len()).sum::<usize>());
            got.extend(out.iter().flat_map(decode));
            if p.held_payloads() == 0 && p.queued_sets() == 0 {
                break;
            }
            t = t + Duration::from_ms(100);
        }
        assert_eq!(
            got,
            (1..=1000).collect::<Vec<_>>(),
            "nothing dropped, order kept"
        );
        assert!(
            bytes_per_window.iter().all(|&b| b <= 2400),
            "{bytes_per_window:?}"
        );
        assert!(bytes_per_window.len() > 5, "the burst was spread out");
    }
}
