//! The QSC's bounded cache of answers (seed s3.13).
//!
//! Positive and unassigned answers are cached by range (so one answer serves every
//! address of the micronet); not-SPI answers by exact address. Entries leave when
//! their cache time ends; past [`Cache::new`]'s bound the oldest insertion goes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use ivip_wire::Family;
use ivip_wire::addr::unit_of;
use ivip_wire::query::{MappedRange, Status};

use crate::time::Instant;

/// A cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached {
    /// Found or Unassigned (with `range`), or NotSpi (without).
    pub status: Status,
    /// The micronet or gap.
    pub range: Option<MappedRange>,
    /// When it leaves the cache.
    pub expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Range(Family, u64),
    NotSpi(IpAddr),
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    ranges: [BTreeMap<u64, Cached>; 2],
    not_spi: HashMap<IpAddr, Instant>,
    order: VecDeque<Key>,
    entries_max: usize,
}

fn fi(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Cache {
    /// An empty cache holding at most `entries_max` answers.
    pub fn new(entries_max: usize) -> Cache {
        Cache {
            ranges: [BTreeMap::new(), BTreeMap::new()],
            not_spi: HashMap::new(),
            order: VecDeque::new(),
            entries_max,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.ranges[0].len() + self.ranges[1].len() + self.not_spi.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live answer for `addr`, if cached.
    pub fn get(&self, now: Instant, addr: IpAddr) -> Option<Cached> {
        if let Some(&expires) = self.not_spi.get(&addr) {
            return (expires > now).then_some(Cached {
                status: Status::NotSpi,
                range: None,
                expires,
            });
        }
        let (family, unit) = unit_of(addr);
        let (_, c) = self.ranges[fi(family)].range(..=unit).next_back()?;
        let r = c.range?;
        (u128::from(unit) < u128::from(r.start) + u128::from(r.len) && c.expires > now)
            .then_some(*c)
    }

    /// Cache an answer.
    pub fn insert(&mut self, family: Family, addr: IpAddr, c: Cached) {
        let key = match c.range {
            Some(r) => {
                self.remove_overlapping(family, r.start, r.len);
                self.ranges[fi(family)].insert(r.start, c);
                Key::Range(family, r.start)
            }
            None => {
                self.not_spi.insert(addr, c.expires);
                Key::NotSpi(addr)
            }
        };
        self.order.push_back(key);
        while self.len() > self.entries_max {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            match k {
                Key::Range(f, s) => {
                    self.ranges[fi(f)].remove(&s);
                }
                Key::NotSpi(a) => {
                    self.not_spi.remove(&a);
                }
            }
        }
        // Keys of entries already gone linger in `order`; trim them when it grows.
        if self.order.len() > 2 * self.entries_max.max(16) {
            let (ranges, not_spi) = (&self.ranges, &self.not_spi);
            self.order.retain(|k| match k {
                Key::Range(f, s) => ranges[fi(*f)].contains_key(s),
                Key::NotSpi(a) => not_spi.contains_key(a),
            });
        }
    }

    /// Drop every cached range that intersects `[start, start + len)`.
    pub fn remove_overlapping(&mut self, family: Family, start: u64, len: u64) {
        let end = u128::from(start) + u128::from(len);
        let m = &mut self.ranges[fi(family)];
        let mut doomed: Vec<u64> = m
            .range(start..)
            .take_while(|(s, _)| u128::from(**s) < end)
            .map(|(s, _)| *s)
            .collect();
        if let Some((s, c)) = m.range(..start).next_back()
            && let Some(r) = c.range
            && u128::from(r.start) + u128::from(r.len) > u128::from(start)
        {
            doomed.push(*s);
        }
        for s in doomed {
            m.remove(&s);
        }
    }

    /// Forget everything that has expired.
    pub fn expire(&mut self, now: Instant) {
        for m in &mut self.ranges {
            m.retain(|_, c| c.expires > now);
        }
        self.not_spi.retain(|_, e| *e > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::Etr;

    fn found(start: u64, len: u64, exp: u64) -> Cached {
        Cached {
            status: Status::Found,
            range: Some(MappedRange {
                start,
                len,
                etr: Etr::V4("192.0.2.1".parse().unwrap()),
            }),
            expires: Instant(exp),
        }
    }

    #[test]
    fn one_answer_serves_the_whole_micronet_until_it_expires() {
        let mut c = Cache::new(10);
        let a: IpAddr = "20.0.0.5".parse().unwrap();
        c.insert(Family::V4, a, found(0x1400_0004, 4, 100));
        assert!(c.get(Instant(0), "20.0.0.7".parse().unwrap()).is_some());
        assert!(c.get(Instant(0), "20.0.0.8".parse().unwrap()).is_none());
        assert!(c.get(Instant(0), "20.0.0.3".parse().unwrap()).is_none());
        assert!(c.get(Instant(100), a).is_none());
    }

    #[test]
    fn overlapping_ranges_replace_and_size_is_bounded() {
        let mut c = Cache::new(2);
        let a: IpAddr = "20.0.0.5".parse().unwrap();
        c.insert(Family::V4, a, found(0x1400_0004, 4, 100));
        c.insert(Family::V4, a, found(0x1400_0005, 1, 100));
        assert_eq!(c.len(), 1);
        c.insert(Family::V4, a, found(0x1400_0010, 1, 100));
        c.insert(Family::V4, a, found(0x1400_0020, 1, 100));
        assert_eq!(c.len(), 2);
        assert!(
            c.get(Instant(0), "20.0.0.5".parse().unwrap()).is_none(),
            "oldest evicted"
        );
    }
}
