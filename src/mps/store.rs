//! The MPS payload store: verified payloads by identity, for a retention time,
//! within a byte budget (seed s4.1.3: "store the payloads for ten or so minutes").
//!
//! What it is: a map from [`PayloadId`] to the payload's bytes, plus a FIFO in
//! arrival order that drives both expiry (older than `retention`) and eviction
//! (over `bytes_max`, oldest first). Readers (HTTP threads) take a read lock only
//! long enough to clone `Arc`s; the feed thread inserts under the write lock.
//! Time is passed in.
//!
//! What it is not: a verifier. Callers insert only payloads whose signature
//! verified (spec: mps.md §1).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ivip_wire::{PayloadId, RuasId, Seq};
use parking_lot::RwLock;

use crate::time::{Duration, Instant};

/// Bytes counted per stored payload on top of its own length (map and queue
/// entries), so the budget bounds real memory.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored.
    Stored,
    /// Already held.
    Duplicate,
}

#[derive(Debug)]
struct Entry {
    bytes: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<PayloadId, Entry>,
    order: VecDeque<(Instant, PayloadId)>,
    bytes: usize,
    evicted: u64,
    expired: u64,
}

impl Inner {
    fn pop_oldest(&mut self) -> Option<Instant> {
        let (at, id) = self.order.pop_front()?;
        if let Some(e) = self.map.remove(&id) {
            self.bytes -= e.bytes.len() + ENTRY_OVERHEAD_BYTES;
        }
        Some(at)
    }
}

/// The store (`Sync`: shared by the feed thread and HTTP threads).
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    retention: Duration,
    bytes_max: usize,
}

impl Store {
    /// A store keeping payloads for `retention` within `bytes_max`.
    pub fn new(retention: Duration, bytes_max: usize) -> Store {
        Store {
            inner: RwLock::new(Inner::default()),
            retention,
            bytes_max,
        }
    }

    /// `true` when `id` is held.
    pub fn contains(&self, id: PayloadId) -> bool {
        self.inner.read().map.contains_key(&id)
    }

    /// Store a verified payload received at `now` (the clock must not go back).
    /// Evicts the oldest payloads while over the byte budget.
    pub fn insert(&self, now: Instant, id: PayloadId, bytes: &[u8]) -> Insert {
        let mut g = self.inner.write();
        if g.map.contains_key(&id) {
            return Insert::Duplicate;
        }
        g.bytes += bytes.len() + ENTRY_OVERHEAD_BYTES;
        g.map.insert(
            id,
            Entry {
                bytes: Arc::from(bytes),
            },
        );
        g.order.push_back((now, id));
        while g.bytes > self.bytes_max && g.order.len() > 1 {
            g.pop_oldest();
            g.evicted += 1;
        }
        Insert::Stored
    }

    /// The payload with identity `id`.
    pub fn get(&self, id: PayloadId) -> Option<Arc<[u8]>> {
        self.inner.read().map.get(&id).map(|e| e.bytes.clone())
    }

    /// The payloads of one RUAS epoch with sequence numbers `from..=to` in serial
    /// order, at most `max` sequence numbers looked at. Absent ones are skipped.
    pub fn range(&self, ruas: RuasId, epoch: u32, from: Seq, to: Seq, max: u32) -> Vec<Arc<[u8]>> {
        let span = to.0.wrapping_sub(from.0);
        let n = span.min(max.saturating_sub(1));
        let g = self.inner.read();
        (0..=n)
            .filter_map(|k| {
                let id = PayloadId {
                    ruas,
                    epoch,
                    seq: from.wrapping_add(k),
                };
                g.map.get(&id).map(|e| e.bytes.clone())
            })
            .collect()
    }

    /// Drop payloads older than the retention time; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut g = self.inner.write();
        let mut n = 0;
        while let Some(&(at, _)) = g.order.front() {
            if at + self.retention > now {
                break;
            }
            g.pop_oldest();
            n += 1;
        }
        g.expired += n as u64;
        n
    }

    /// Payloads held.
    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes accounted (payloads plus overhead).
    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }

    /// Payloads evicted for the byte budget, and expired, since start.
    pub fn dropped(&self) -> (u64, u64) {
        let g = self.inner.read();
        (g.evicted, g.expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u32) -> PayloadId {
        PayloadId {
            ruas: RuasId::new(3).unwrap(),
            epoch: 1,
            seq: Seq(seq),
        }
    }

    #[test]
    fn stores_gets_and_refuses_duplicates() {
        let s = Store::new(Duration::from_secs(600), 1 << 20);
        assert_eq!(s.insert(Instant(0), id(1), b"one"), Insert::Stored);
        assert_eq!(s.insert(Instant(0), id(1), b"uno"), Insert::Duplicate);
        assert_eq!(s.get(id(1)).as_deref(), Some(&b"one"[..]));
        assert!(s.get(id(2)).is_none());
        assert_eq!(s.bytes(), 3 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn expires_after_retention() {
        let s = Store::new(Duration::from_secs(10), 1 << 20);
        s.insert(Instant(0), id(1), b"a");
        s.insert(Instant(5_000_000), id(2), b"b");
        assert_eq!(s.expire(Instant(9_999_999)), 0);
        assert_eq!(s.expire(Instant(10_000_000)), 1);
        assert_eq!((s.len(), s.contains(id(2))), (1, true));
        assert_eq!(s.dropped(), (0, 1));
    }

    #[test]
    fn byte_budget_evicts_oldest_first() {
        let per = 100 + ENTRY_OVERHEAD_BYTES;
        let s = Store::new(Duration::from_secs(600), 3 * per);
        for i in 0..5 {
            s.insert(Instant(u64::from(i)), id(i), &[0u8; 100]);
        }
        assert_eq!(s.len(), 3);
        assert!(!s.contains(id(1)) && s.contains(id(2)) && s.contains(id(4)));
        assert!(s.bytes() <= 3 * per);
        assert_eq!(s.dropped().0, 2);
    }

    #[test]
    fn range_is_serial_inclusive_and_bounded() {
        let s = Store::new(Duration::from_secs(600), 1 << 20);
        for q in [u32::MAX - 1, u32::MAX, 0, 2] {
            s.insert(Instant(0), id(q), &q.to_be_bytes());
        }
        let got = s.range(RuasId::new(3).unwrap(), 1, Seq(u32::MAX - 1), Seq(2), 100);
        assert_eq!(got.len(), 4);
        assert_eq!(&got[2][..], &0u32.to_be_bytes());
        let capped = s.range(RuasId::new(3).unwrap(), 1, Seq(u32::MAX - 1), Seq(2), 2);
        assert_eq!(capped.len(), 2);
        assert!(
            s.range(RuasId::new(3).unwrap(), 2, Seq(0), Seq(5), 100)
                .is_empty()
        );
    }
}
