//! Notifications to recent queriers (seed s1.1, s4.3; spec: query.md §5).
//!
//! A query server (QSD or QSC) remembers who was told what: each reply it sends
//! with a range becomes a *watch* — querier, nonce, the replied range, when its cache
//! time ends. When the mapping of some range changes, every watch that intersects it
//! gets a notification covering exactly its own replied range, with the new
//! micronets clipped to it; the notification is resent with back-off until the
//! querier acknowledges it or the cache time ends. Sans-IO: fed `now`, it writes
//! datagrams into the caller's outbox.
//!
//! Memory is bounded by [`NotifierConfig::watches_max`]: past it, the watch whose
//! cache time ends first is forgotten (its querier then learns of changes only when
//! its cache entry expires) and counted.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use ivip_wire::Family;
use ivip_wire::query::{MappedRange, Notification, QueryMessage, notify_entries_max};

use crate::time::{Duration, Instant};

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct NotifierConfig {
    /// Most watches kept.
    pub watches_max: usize,
    /// First resend after this long without an ack; doubles each time.
    pub resend_initial: Duration,
    /// Resends stop after this many (or when the cache time ends).
    pub resend_count_max: u32,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            watches_max: 1_000_000,
            resend_initial: Duration::from_ms(100),
            resend_count_max: 8,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// What a querier was told: `[start, start + len)` under `nonce`, cacheable until
/// `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Told {
    /// Where the reply went.
    pub querier: SocketAddr,
    /// The request's nonce.
    pub nonce: u64,
    /// Family of the range.
    pub family: Family,
    /// First unit of the replied range.
    pub start: u64,
    /// Its length.
    pub len: u64,
    /// When the querier's cache entry ends.
    pub expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WatchKey {
    querier: SocketAddr,
    family: Family,
    start: u64,
    len: u64,
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    nonce: u64,
    expires: Instant,
}

#[derive(Debug)]
struct Outstanding {
    to: SocketAddr,
    bytes: Vec<u8>,
    next: Instant,
    backoff: Duration,
    resends: u32,
    expires: Instant,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Notifications first sent.
    pub sent: u64,
    /// Resends.
    pub resent: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Given up: cache time ended or resends ran out without an ack.
    pub expired: u64,
    /// Watches forgotten because the table was full.
    pub evicted: u64,
}

/// The watch table and the outstanding notifications.
#[derive(Debug)]
pub struct Notifier {
    config: NotifierConfig,
    watches: HashMap<WatchKey, Watch>,
    /// (family, start) → keys, for finding the watches a change touches.
    by_start: BTreeMap<(Family, u64), Vec<WatchKey>>,
    /// Longest watched range per family: bounds the backwards scan.
    longest: [u64; 2],
    outstanding: HashMap<u64, Outstanding>,
    next_id: u64,
    stats: NotifierStats,
}

fn fam_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Notifier {
    /// An empty notifier. `id_seed` starts the notification ids (pass something
    /// random so ids are not predictable across restarts).
    pub fn new(config: NotifierConfig, id_seed: u64) -> Notifier {
        Notifier {
            config,
            watches: HashMap::new(),
            by_start: BTreeMap::new(),
            longest: [0; 2],
            outstanding: HashMap::new(),
            next_id: id_seed,
            stats: NotifierStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> NotifierStats {
        self.stats
    }

    /// Watches held.
    pub fn watches(&self) -> usize {
        self.watches.len()
    }

    /// Notifications waiting for an ack.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Remember what a querier was told.
    pub fn remember(&mut self, now: Instant, told: Told) {
        let Told {
            querier,
            nonce,
            family,
            start,
            len,
            expires,
        } = told;
        if expires <= now || self.config.watches_max == 0 {
            return;
        }
        let key = WatchKey {
            querier,
            family,
            start,
            len,
        };
        if !self.watches.contains_key(&key) {
            if self.watches.len() >= self.config.watches_max {
                self.evict_one(now);
            }
            self.by_start.entry((family, start)).or_default().push(key);
            let l = &mut self.longest[fam_index(family)];
            *l = (*l).max(len);
        }
        self.watches.insert(key, Watch { nonce, expires });
    }

    fn forget(&mut self, key: &WatchKey) {
        self.watches.remove(key);
        if let Some(v) = self.by_start.get_mut(&(key.family, key.start)) {
            v.retain(|k| k != key);
            if v.is_empty() {
                self.by_start.remove(&(key.family, key.start));
            }
        }
    }

    fn evict_one(&mut self, now: Instant) {
        // Expired first; otherwise the one whose cache time ends soonest.
        let victim = self
            .watches
            .iter()
            .min_by_key(|(_, w)| {
                if w.expires <= now {
                    Instant::ZERO
                } else {
                    w.expires
                }
            })
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            self.forget(&k);
            self.stats.evicted += 1;
        }
    }

    /// The mapping of `[start, start + len)` of `family` changed. `mapping` gives the
    /// new micronets covering a range, clipped to it (units not covered are
    /// unassigned), or `None` when the server cannot say (then the querier is told to
    /// flush). Every watch intersecting the range is notified. The watch stays: the
    /// querier now caches the new micronets until the same time (s4.3), so later
    /// changes to them within it are notified too.
    pub fn changed(
        &mut self,
        now: Instant,
        family: Family,
        start: u64,
        len: u64,
        mut mapping: impl FnMut(u64, u64) -> Option<Vec<MappedRange>>,
        out: &mut Vec<Transmit>,
    ) {
        let end = u128::from(start) + u128::from(len);
        let from = start.saturating_sub(self.longest[fam_index(family)]);
        let hit: Vec<WatchKey> = self
            .by_start
            .range((family, from)..)
            .take_while(|((f, s), _)| *f == family && u128::from(*s) < end)
            .flat_map(|(_, keys)| keys.iter().copied())
            .filter(|k| u128::from(k.start) + u128::from(k.len) > u128::from(start))
            .collect();
        for key in hit {
            let Some(w) = self.watches.get(&key).copied() else {
                continue;
            };
            if w.expires <= now {
                self.forget(&key);
                continue;
            }
            let remaining_s = u32::try_from(w.expires.saturating_since(now).as_us() / 1_000_000)
                .unwrap_or(u32::MAX);
            let entries = mapping(key.start, key.len);
            let (flush, entries) = match entries {
                Some(e) if e.len() <= notify_entries_max(family) => (false, e),
                _ => (true, Vec::new()),
            };
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            let msg = QueryMessage::Notify(Notification {
                notify_id: id,
                nonce: w.nonce,
                family,
                cache_time_s: remaining_s,
                flush,
                entries,
            });
            let bytes = match msg.to_vec() {
                Ok(b) => b,
                Err(e) => {
                    log::error!(
                        "notification for {}+{} not encodable: {e}",
                        key.start,
                        key.len
                    );
                    continue;
                }
            };
            out.push(Transmit {
                to: key.querier,
                bytes: bytes.clone(),
            });
            self.stats.sent += 1;
            self.outstanding.insert(
                id,
                Outstanding {
                    to: key.querier,
                    bytes,
                    next: now + self.config.resend_initial,
                    backoff: self.config.resend_initial,
                    resends: 0,
                    expires: w.expires,
                },
            );
        }
    }

    /// An ack arrived from `from`. Returns `true` if it matched an outstanding
    /// notification sent to that address.
    pub fn ack(&mut self, from: SocketAddr, notify_id: u64) -> bool {
        match self.outstanding.get(&notify_id) {
            Some(o) if o.to == from => {
                self.outstanding.remove(&notify_id);
                self.stats.acked += 1;
                true
            }
            _ => false,
        }
    }

    /// Resend what is due; give up on what expired.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let mut done = Vec::new();
        for (id, o) in self.outstanding.iter_mut() {
            if o.expires <= now || o.resends >= self.config.resend_count_max {
                if o.next <= now {
                    done.push(*id);
                }
                continue;
            }
            if o.next <= now {
                out.push(Transmit {
                    to: o.to,
                    bytes: o.bytes.clone(),
                });
                o.resends += 1;
                o.backoff = o.backoff.saturating_mul(2);
                o.next = now + o.backoff;
                self.stats.resent += 1;
            }
        }
        for id in done {
            self.outstanding.remove(&id);
            self.stats.expired += 1;
        }
    }

    /// When [`Notifier::poll`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outstanding.values().map(|o| o.next).min()
    }

    /// Forget watches whose cache time has ended (call now and then).
    pub fn expire_watches(&mut self, now: Instant) {
        let dead: Vec<WatchKey> = self
            .watches
            .iter()
            .filter(|(_, w)| w.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.forget(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::Etr;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn e(s: u64, l: u64, last: u8) -> MappedRange {
        MappedRange {
            start: s,
            len: l,
            etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, last)),
        }
    }

    fn told(querier: SocketAddr, nonce: u64, start: u64, len: u64, expires: Instant) -> Told {
        Told {
            querier,
            nonce,
            family: Family::V4,
            start,
            len,
            expires,
        }
    }

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_ms(ms)
    }

    fn parse(tx: &Transmit) -> Notification {
        match QueryMessage::parse(&tx.bytes).unwrap() {
            QueryMessage::Notify(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_split_notifies_exactly_the_replied_range() {
        let mut n = Notifier::new(NotifierConfig::default(), 1);
        // Querier A was told about micronet 100+8; B about 200+4.
        n.remember(t(0), told(addr(1), 11, 100, 8, t(600_000)));
        n.remember(t(0), told(addr(2), 22, 200, 4, t(600_000)));
        let mut out = Vec::new();
        // 100+8 was split into 100+3 and 103+5 with new ETRs.
        n.changed(
            t(10),
            Family::V4,
            100,
            8,
            |s, l| {
                assert_eq!((s, l), (100, 8), "asked for the replied range");
                Some(vec![e(100, 3, 1), e(103, 5, 2)])
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, addr(1));
        let msg = parse(&out[0]);
        assert_eq!(msg.nonce, 11);
        assert_eq!(msg.entries, vec![e(100, 3, 1), e(103, 5, 2)]);
        assert!(!msg.flush);
        assert_eq!(
            msg.cache_time_s, 599,
            "what remained of the original cache time"
        );
        assert_eq!(n.watches(), 2, "A keeps watching the range it caches");
    }

    #[test]
    fn resent_with_backoff_until_acked() {
        let mut n = Notifier::new(NotifierConfig::default(), 5);
        n.remember(t(0), told(addr(1), 1, 0, 10, t(60_000)));
        let mut out = Vec::new();
        n.changed(t(0), Family::V4, 5, 1, |_, _| Some(vec![]), &mut out);
        let id = parse(&out[0]).notify_id;
        out.clear();
        n.poll(t(99), &mut out);
        assert!(out.is_empty());
        n.poll(t(100), &mut out);
        assert_eq!(out.len(), 1, "first resend after 100 ms");
        n.poll(t(299), &mut out);
        assert_eq!(out.len(), 1, "next after 200 more");
        n.poll(t(300), &mut out);
        assert_eq!(out.len(), 2);
        assert!(!n.ack(addr(9), id), "an ack from elsewhere does not count");
        assert!(n.ack(addr(1), id));
        n.poll(t(10_000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(n.stats().acked, 1);
    }

    #[test]
    fn gives_up_when_the_cache_time_ends() {
        let mut n = Notifier::new(NotifierConfig::default(), 0);
        n.remember(t(0), told(addr(1), 1, 0, 10, t(250)));
        let mut out = Vec::new();
        n.changed(t(0), Family::V4, 0, 10, |_, _| Some(vec![]), &mut out);
        for ms in (0..2000).step_by(50) {
            n.poll(t(ms), &mut out);
        }
        assert_eq!(n.outstanding(), 0);
        assert_eq!(n.stats().expired, 1);
        assert!(out.len() <= 3, "{} sends", out.len());
    }

    #[test]
    fn too_many_entries_means_flush_and_the_table_is_bounded() {
        let mut n = Notifier::new(
            NotifierConfig {
                watches_max: 2,
                ..NotifierConfig::default()
            },
            0,
        );
        for p in 1..=3 {
            n.remember(t(0), told(addr(p), 1, 0, 1000, t(1000 * u64::from(p))));
        }
        assert_eq!(n.watches(), 2);
        assert_eq!(n.stats().evicted, 1);
        let mut out = Vec::new();
        n.changed(
            t(1),
            Family::V4,
            0,
            1000,
            |s, l| Some((s..s + l).map(|i| e(i, 1, 1)).collect()),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|tx| parse(tx).flush));
    }
}
