//! Fresh/Repeat: the lock-free window of payload identities a replicator has seen.
//!
//! seed s3.11: "The first time a packet with a particular payload arrives at a
//! Replicator, it is detected as being "Fresh" and then the payload is replicated
//! ... When another packet with the same payload arrives later ... the second one
//! is recognised as a "Repeat" and no further action is taken with it."
//!
//! # Design
//! One `AtomicU64` slot per (RUAS id, sequence mod `window`): `128 × window`
//! slots, allocated once. A slot holds the *latest* identity seen that maps to
//! it, packed exactly (epoch in the high 32 bits, the sequence's bits above the
//! slot index below, bit 0 set when occupied; the slot index supplies the low
//! sequence bits). For an identity `x` in slot `s`:
//! - `s` holds `x`: **Repeat**.
//! - `s` is empty or holds an identity *earlier* than `x`: `x` was never seen
//!   (had it been, `s` would hold `x` or something later); CAS `x` in: **Fresh**.
//! - `s` holds an identity *later* than `x` (or one serial arithmetic cannot
//!   order, 2^31 away): `x` is at least `window` sequence numbers behind what was
//!   seen: **TooOld**, dropped.
//!
//! "Earlier/later" is the epoch as an integer first (a RUAS that lost its
//! sequence state picks a larger epoch), then the sequence by serial arithmetic,
//! so the window is correct across the 2^32 wrap and across an epoch change. A
//! duplicate is never reported Fresh, whatever the interleaving of threads: the
//! only transition that yields Fresh is a successful compare-and-swap from a
//! value that is not the identity itself. O(1) per payload, no allocation, no
//! lock: threads race only by CAS on the one slot concerned.

use std::sync::atomic::{AtomicU64, Ordering};

use ivip_wire::{PayloadId, RuasId, Seq};

/// The smallest window (sequence numbers per RUAS).
pub const WINDOW_MIN: usize = 64;
/// The largest window: 2^20 × 128 RUAS × 8 bytes = 1 GiB.
pub const WINDOW_MAX: usize = 1 << 20;
/// The default window: 4096 sequence numbers per RUAS (4 MiB in all).
pub const WINDOW_DEFAULT: usize = 4096;

/// The verdict on one payload identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First copy: send it on.
    Fresh,
    /// Seen before: drop.
    Repeat,
    /// Older than the window: drop.
    TooOld,
}

/// The shared window. `Sync`: every worker checks against the same one.
#[derive(Debug)]
pub struct Dedupe {
    slots: Box<[AtomicU64]>,
    mask: u32,
}

impl Dedupe {
    /// A window of `window` sequence numbers per RUAS.
    ///
    /// # Errors
    /// A message when `window` is not a power of two in
    /// [`WINDOW_MIN`]..=[`WINDOW_MAX`].
    pub fn new(window: usize) -> Result<Dedupe, String> {
        if !window.is_power_of_two() || !(WINDOW_MIN..=WINDOW_MAX).contains(&window) {
            return Err(format!(
                "the dedupe window must be a power of two from {WINDOW_MIN} to {WINDOW_MAX}, not {window}"
            ));
        }
        let n = window * (usize::from(RuasId::MAX) + 1);
        Ok(Dedupe {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: (window - 1) as u32,
        })
    }

    /// Sequence numbers remembered per RUAS.
    pub fn window(&self) -> usize {
        self.mask as usize + 1
    }

    /// Bytes of memory the window takes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    #[inline]
    fn pack(&self, id: PayloadId) -> u64 {
        (u64::from(id.epoch) << 32) | u64::from(id.seq.0 & !self.mask) | 1
    }

    #[inline]
    fn unpack(&self, v: u64, seq_low: u32) -> (u32, Seq) {
        ((v >> 32) as u32, Seq((v as u32 & !self.mask) | seq_low))
    }

    /// Check `id` and remember it.
    #[inline]
    pub fn check(&self, id: PayloadId) -> Verdict {
        let low = id.seq.0 & self.mask;
        let i = usize::from(id.ruas.get()) * (self.mask as usize + 1) + low as usize;
        let slot = &self.slots[i];
        let new = self.pack(id);
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if cur == new {
                return Verdict::Repeat;
            }
            if cur != 0 {
                let (epoch, seq) = self.unpack(cur, low);
                let later = match id.epoch.cmp(&epoch) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => id.seq.is_after(seq),
                };
                if !later {
                    return Verdict::TooOld;
                }
            }
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Verdict::Fresh,
                Err(v) => cur = v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn id(ruas: u8, epoch: u32, seq: u32) -> PayloadId {
        PayloadId {
            ruas: RuasId::new(ruas).unwrap(),
            epoch,
            seq: Seq(seq),
        }
    }

    #[test]
    fn first_copy_is_fresh_later_copies_repeat() {
        let d = Dedupe::new(64).unwrap();
        assert_eq!(d.check(id(3, 1, 42)), Verdict::Fresh);
        assert_eq!(d.check(id(3, 1, 42)), Verdict::Repeat);
        assert_eq!(d.check(id(4, 1, 42)), Verdict::Fresh);
        assert_eq!(d.check(id(3, 2, 42)), Verdict::Fresh);
        // seq 0 of epoch 0 is a real identity, not "empty".
        assert_eq!(d.check(id(0, 0, 0)), Verdict::Fresh);
        assert_eq!(d.check(id(0, 0, 0)), Verdict::Repeat);
    }

    #[test]
    fn identities_older_than_the_window_are_dropped() {
        let d = Dedupe::new(64).unwrap();
        assert_eq!(d.check(id(1, 1, 100 + 64)), Verdict::Fresh);
        assert_eq!(d.check(id(1, 1, 100)), Verdict::TooOld);
        // Within the window and never seen: fresh, even out of order.
        assert_eq!(d.check(id(1, 1, 101)), Verdict::Fresh);
        assert_eq!(d.check(id(1, 1, 101)), Verdict::Repeat);
    }

    #[test]
    fn correct_across_sequence_wrap() {
        let d = Dedupe::new(64).unwrap();
        for s in (u32::MAX - 40)..=u32::MAX {
            assert_eq!(d.check(id(5, 9, s)), Verdict::Fresh);
        }
        for s in 0..40u32 {
            assert_eq!(d.check(id(5, 9, s)), Verdict::Fresh, "{s}");
        }
        for s in (u32::MAX - 20)..=u32::MAX {
            assert_eq!(d.check(id(5, 9, s)), Verdict::Repeat);
        }
        for s in 0..40u32 {
            assert_eq!(d.check(id(5, 9, s)), Verdict::Repeat);
        }
        // 2^32 - 64 + 1 .. and 0 .. 40 share slots; the ones the window has
        // moved past are too old, never fresh again.
        assert_eq!(d.check(id(5, 9, u32::MAX - 40)), Verdict::TooOld);
    }

    #[test]
    fn correct_across_epoch_change() {
        let d = Dedupe::new(64).unwrap();
        assert_eq!(d.check(id(2, 7, 1000)), Verdict::Fresh);
        // A new epoch restarts sequences; same slot, later epoch: fresh.
        assert_eq!(d.check(id(2, 8, 1000)), Verdict::Fresh);
        assert_eq!(d.check(id(2, 8, 1)), Verdict::Fresh);
        // Old-epoch stragglers whose slot moved on are dropped; repeats too.
        assert_eq!(d.check(id(2, 7, 1000)), Verdict::TooOld);
        assert_eq!(d.check(id(2, 8, 1000)), Verdict::Repeat);
        // An old-epoch payload whose slot was never reused is still fresh once.
        assert_eq!(d.check(id(2, 7, 5)), Verdict::Fresh);
        assert_eq!(d.check(id(2, 7, 5)), Verdict::Repeat);
    }

    #[test]
    fn window_must_be_a_power_of_two_in_range() {
        assert!(Dedupe::new(100).is_err());
        assert!(Dedupe::new(32).is_err());
        assert!(Dedupe::new(WINDOW_MAX * 2).is_err());
        let d = Dedupe::new(WINDOW_DEFAULT).unwrap();
        assert_eq!((d.window(), d.bytes()), (4096, 4096 * 128 * 8));
    }

    #[test]
    fn many_threads_get_exactly_one_fresh_per_identity() {
        let d = Arc::new(Dedupe::new(1024).unwrap());
        let fresh: Vec<usize> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    (0..20_000u32)
                        .filter(|s| d.check(id((s % 3) as u8, 1, *s / 3)) == Verdict::Fresh)
                        .count()
                })
            })
            .map(|t| t.join().unwrap())
            .collect();
        // Each identity is fresh exactly once over all threads.
        assert_eq!(fresh.iter().sum::<usize>(), 20_000);
    }

    proptest! {
        /// Against a model: never Fresh twice for one identity; and Fresh for the
        /// first copy of any identity whose epoch is the newest seen for its RUAS
        /// and whose sequence is within the window of every identity seen before
        /// in that epoch (it cannot have been overwritten).
        #[test]
        fn dedupe_matches_model(
            base in prop_oneof![Just(0u32), Just(u32::MAX - 100), any::<u32>()],
            ops in proptest::collection::vec((0u8..2, 0u32..2, 0u32..200), 1..400),
        ) {
            let d = Dedupe::new(64).unwrap();
            let mut seen: HashSet<(u8, u32, u32)> = HashSet::new();
            let mut history: Vec<(u8, u32, u32)> = Vec::new();
            for (r, e, s) in ops {
                let seq = base.wrapping_add(s);
                let v = d.check(id(r, e, seq));
                let first = seen.insert((r, e, seq));
                if !first {
                    prop_assert_ne!(v, Verdict::Fresh);
                }
                let newest_epoch = history.iter().filter(|h| h.0 == r).all(|h| h.1 <= e);
                let near = history
                    .iter()
                    .filter(|h| h.0 == r && h.1 == e)
                    .all(|h| Seq(h.2).distance_from(Seq(seq)).unsigned_abs() < 64);
                if first && newest_epoch && near {
                    prop_assert_eq!(v, Verdict::Fresh);
                }
                history.push((r, e, seq));
            }
        }
    }
}
