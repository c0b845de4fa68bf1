//! The QSC core: answer from the cache, ask an upstream QSD on a miss (the next one
//! on timeout), take notifications from upstream and pass them on (seed s3.13).
//! Sans-IO: fed `(now, from, bytes)` for each of its two sockets and `now` for
//! timers; writes datagrams into an [`Outbox`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ivip_wire::addr::unit_of;
use ivip_wire::query::{MapReply, MapRequest, MappedRange, QueryMessage, Status};

use super::cache::{Cache, Cached};
use crate::notify::{Notifier, NotifierConfig, Told, Transmit};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct QscCoreConfig {
    /// Upstream query servers, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Time to wait for an upstream reply before asking the next.
    pub query_timeout: Duration,
    /// Most cached answers.
    pub cache_entries_max: usize,
    /// Most misses waiting for an upstream at once.
    pub pending_max: usize,
    /// Notification settings.
    pub notifier: NotifierConfig,
}

/// Datagrams to send, by socket.
#[derive(Debug, Default)]
pub struct Outbox {
    /// To ITRs and downstream QSCs, from the listening socket.
    pub client: Vec<Transmit>,
    /// To upstream QSDs, from the upstream socket.
    pub upstream: Vec<Transmit>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct QscStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that needed an upstream.
    pub misses: u64,
    /// Requests merged into one already asked upstream.
    pub coalesced: u64,
    /// Upstream tries that timed out.
    pub upstream_timeouts: u64,
    /// Misses answered `resyncing` because no upstream answered.
    pub upstream_failures: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// Datagrams dropped as unexpected (wrong source, unknown nonce).
    pub unexpected: u64,
    /// Misses dropped because too many were waiting.
    pub overloaded: u64,
    /// Notifications received from upstream.
    pub upstream_notifications: u64,
}

#[derive(Debug)]
struct Pending {
    addr: IpAddr,
    waiters: Vec<(SocketAddr, u64)>,
    upstream: usize,
    deadline: Instant,
}

/// The core.
#[derive(Debug)]
pub struct QscCore {
    config: QscCoreConfig,
    cache: Cache,
    pending: HashMap<u64, Pending>,
    by_addr: HashMap<IpAddr, u64>,
    notifier: Notifier,
    rng: Rng,
    stats: QscStats,
    /// Upstream nonce → the range the upstream told us about under it, and when
    /// that ends: a notification names the nonce, and covers that range.
    told_by_upstream: HashMap<u64, (ivip_wire::Family, u64, u64, Instant)>,
    next_expiry_sweep: Instant,
}

fn reply_bytes(r: MapReply) -> Option<Vec<u8>> {
    QueryMessage::Reply(r).to_vec().ok()
}

impl QscCore {
    /// A core with an empty cache.
    pub fn new(config: QscCoreConfig, mut rng: Rng) -> QscCore {
        let notifier = Notifier::new(config.notifier, rng.next_u64());
        QscCore {
            cache: Cache::new(config.cache_entries_max),
            config,
            pending: HashMap::new(),
            by_addr: HashMap::new(),
            notifier,
            rng,
            stats: QscStats::default(),
            told_by_upstream: HashMap::new(),
            next_expiry_sweep: Instant::ZERO,
        }
    }

    /// Counters.
    pub fn stats(&self) -> QscStats {
        self.stats
    }

    /// Notification counters.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Cached answers.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// A datagram on the listening socket (from an ITR or a downstream QSC).
    pub fn handle_client(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Outbox,
    ) {
        match QueryMessage::parse(bytes) {
            Ok(QueryMessage::Request(req)) => self.request(now, from, req, out),
            Ok(QueryMessage::Ack(a)) => {
                if !self.notifier.ack(from, a.notify_id) {
                    self.stats.unexpected += 1;
                }
            }
            Ok(_) => self.stats.unexpected += 1,
            Err(_) => {
                self.stats.malformed += 1;
                if let Some(nonce) = QueryMessage::request_nonce(bytes)
                    && let Some(b) = reply_bytes(MapReply {
                        nonce,
                        status: Status::Malformed,
                        family: ivip_wire::Family::V4,
                        cache_time_s: 0,
                        range: None,
                    })
                {
                    out.client.push(Transmit { to: from, bytes: b });
                }
            }
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        to: SocketAddr,
        nonce: u64,
        addr: IpAddr,
        c: &Cached,
        out: &mut Outbox,
    ) {
        let (family, _) = unit_of(addr);
        let remaining = c.expires.saturating_since(now).as_us() / 1_000_000;
        let cache_time_s = u32::try_from(remaining).unwrap_or(u32::MAX);
        if let Some(b) = reply_bytes(MapReply {
            nonce,
            status: c.status,
            family,
            cache_time_s,
            range: c.range,
        }) {
            out.client.push(Transmit { to, bytes: b });
        }
        if let Some(r) = c.range {
            self.notifier.remember(
                now,
                Told {
                    querier: to,
                    nonce,
                    family,
                    start: r.start,
                    len: r.len,
                    expires: c.expires,
                },
            );
        }
    }

    fn request(&mut self, now: Instant, from: SocketAddr, req: MapRequest, out: &mut Outbox) {
        if let Some(c) = self.cache.get(now, req.addr) {
            self.stats.hits += 1;
            self.answer(now, from, req.nonce, req.addr, &c, out);
            return;
        }
        self.stats.misses += 1;
        if let Some(p) = self
            .by_addr
            .get(&req.addr)
            .and_then(|n| self.pending.get_mut(n))
        {
            p.waiters.push((from, req.nonce));
            self.stats.coalesced += 1;
            return;
        }
        if self.pending.len() >= self.config.pending_max || self.config.upstreams.is_empty() {
            self.stats.overloaded += 1;
            return;
        }
        self.ask(now, req.addr, vec![(from, req.nonce)], 0, out);
    }

    fn ask(
        &mut self,
        now: Instant,
        addr: IpAddr,
        waiters: Vec<(SocketAddr, u64)>,
        upstream: usize,
        out: &mut Outbox,
    ) {
        let nonce = self.rng.next_u64();
        let Some(&to) = self.config.upstreams.get(upstream) else {
            return;
        };
        if let Ok(b) = QueryMessage::Request(MapRequest { nonce, addr }).to_vec() {
            out.upstream.push(Transmit { to, bytes: b });
        }
        self.by_addr.insert(addr, nonce);
        self.pending.insert(
            nonce,
            Pending {
                addr,
                waiters,
                upstream,
                deadline: now + self.config.query_timeout,
            },
        );
    }

    /// Give up on `nonce`'s upstream and try the next, or answer `resyncing`.
    fn next_upstream(&mut self, now: Instant, nonce: u64, out: &mut Outbox) {
        let Some(p) = self.pending.remove(&nonce) else {
            return;
        };
        self.by_addr.remove(&p.addr);
        if p.upstream + 1 < self.config.upstreams.len() {
            self.ask(now, p.addr, p.waiters, p.upstream + 1, out);
            return;
        }
        self.stats.upstream_failures += 1;
        let (family, _) = unit_of(p.addr);
        for (to, n) in p.waiters {
            if let Some(b) = reply_bytes(MapReply {
                nonce: n,
                status: Status::Resyncing,
                family,
                cache_time_s: 0,
                range: None,
            }) {
                out.client.push(Transmit { to, bytes: b });
            }
        }
    }

    /// A datagram on the upstream socket (a reply or notification from a QSD).
    pub fn handle_upstream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Outbox,
    ) {
        if !self.config.upstreams.contains(&from) {
            self.stats.unexpected += 1;
            return;
        }
        match QueryMessage::parse(bytes) {
            Ok(QueryMessage::Reply(r)) => self.upstream_reply(now, from, r, out),
            Ok(QueryMessage::Notify(n)) => {
                self.stats.upstream_notifications += 1;
                if let Ok(b) = QueryMessage::Ack(ivip_wire::query::NotifyAck {
                    notify_id: n.notify_id,
                })
                .to_vec()
                {
                    out.upstream.push(Transmit { to: from, bytes: b });
                }
                self.upstream_notification(now, &n, out);
            }
            Ok(_) => self.stats.unexpected += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn upstream_reply(&mut self, now: Instant, from: SocketAddr, r: MapReply, out: &mut Outbox) {
        let Some(p) = self.pending.get(&r.nonce) else {
            self.stats.unexpected += 1;
            return;
        };
        if self.config.upstreams.get(p.upstream) != Some(&from) {
            self.stats.unexpected += 1;
            return;
        }
        match r.status {
            Status::Resyncing | Status::Refused | Status::Malformed => {
                self.next_upstream(now, r.nonce, out);
            }
            Status::Found | Status::Unassigned | Status::NotSpi => {
                let Some(p) = self.pending.remove(&r.nonce) else {
                    return;
                };
                self.by_addr.remove(&p.addr);
                let c = Cached {
                    status: r.status,
                    range: r.range,
                    expires: now + Duration::from_secs(u64::from(r.cache_time_s)),
                };
                if r.cache_time_s > 0 {
                    self.cache.insert(r.family, p.addr, c);
                    if let Some(range) = r.range
                        && self.told_by_upstream.len() < self.config.cache_entries_max
                    {
                        self.told_by_upstream
                            .insert(r.nonce, (r.family, range.start, range.len, c.expires));
                    }
                }
                for (to, n) in p.waiters {
                    self.answer(now, to, n, p.addr, &c, out);
                }
            }
        }
    }

    fn upstream_notification(
        &mut self,
        now: Instant,
        n: &ivip_wire::query::Notification,
        out: &mut Outbox,
    ) {
        // query.md §5: the notification covers exactly the range the upstream told
        // us about under that nonce.
        let family = n.family;
        let Some(&(f, start, len, _)) = self.told_by_upstream.get(&n.nonce) else {
            self.stats.unexpected += 1;
            return;
        };
        if f != family {
            self.stats.unexpected += 1;
            return;
        }
        self.cache.remove_overlapping(family, start, len);
        let entries: Vec<MappedRange> = if n.flush {
            Vec::new()
        } else {
            clip(&n.entries, start, len)
        };
        if !n.flush && n.cache_time_s > 0 {
            let expires = now + Duration::from_secs(u64::from(n.cache_time_s));
            for (status, r) in tile(family, start, len, &entries) {
                let addr = ivip_wire::addr::unit_addr(family, r.start);
                self.cache.insert(
                    family,
                    addr,
                    Cached {
                        status,
                        range: Some(r),
                        expires,
                    },
                );
            }
        }
        let flush = n.flush;
        let end = u128::from(start) + u128::from(len);
        self.notifier.changed(
            now,
            family,
            start,
            len,
            |s, l| {
                // A downstream watch reaching outside the range we know about
                // cannot be answered exactly: tell it to flush.
                if flush || u128::from(s) < u128::from(start) || u128::from(s) + u128::from(l) > end
                {
                    return None;
                }
                Some(clip(&entries, s, l))
            },
            &mut out.client,
        );
    }

    /// Timers: upstream timeouts, notification resends, cache expiry.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            self.stats.upstream_timeouts += 1;
            self.next_upstream(now, n, out);
        }
        self.notifier.poll(now, &mut out.client);
        if now >= self.next_expiry_sweep {
            self.cache.expire(now);
            self.notifier.expire_watches(now);
            self.told_by_upstream.retain(|_, t| t.3 > now);
            self.next_expiry_sweep = now + Duration::from_secs(1);
        }
    }

    /// The next instant [`QscCore::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.values().map(|p| p.deadline).min();
        [
            p,
            self.notifier.poll_timeout(),
            Some(self.next_expiry_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Tile `[start, start + len)` with the (sorted, disjoint) entries and the
/// unassigned gaps between them.
pub fn tile(
    family: ivip_wire::Family,
    start: u64,
    len: u64,
    entries: &[MappedRange],
) -> Vec<(Status, MappedRange)> {
    let mut v = Vec::new();
    let mut at = u128::from(start);
    let end = u128::from(start) + u128::from(len);
    let gap = |a: u128, b: u128| MappedRange {
        start: a as u64,
        len: (b - a) as u64,
        etr: ivip_wire::Etr::zero(family),
    };
    for e in entries {
        if u128::from(e.start) > at {
            v.push((Status::Unassigned, gap(at, u128::from(e.start))));
        }
        v.push((Status::Found, *e));
        at = u128::from(e.start) + u128::from(e.len);
    }
    if at < end {
        v.push((Status::Unassigned, gap(at, end)));
    }
    v
}

/// The entries clipped to `[s, s + l)`.
pub fn clip(entries: &[MappedRange], s: u64, l: u64) -> Vec<MappedRange> {
    let end = u128::from(s) + u128::from(l);
    entries
        .iter()
        .filter_map(|e| {
            let a = u128::from(e.start).max(u128::from(s));
            let b = (u128::from(e.start) + u128::from(e.len)).min(end);
            (a < b).then(|| MappedRange {
                start: a as u64,
                len: (b - a) as u64,
                etr: e.etr,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivip_wire::query::{Notification, NotifyAck};
    use ivip_wire::{Etr, Family};

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_ms(ms)
    }

    fn core() -> QscCore {
        QscCore::new(
            QscCoreConfig {
                upstreams: vec![a(100), a(101)],
                query_timeout: Duration::from_ms(200),
                cache_entries_max: 100,
                pending_max: 10,
                notifier: NotifierConfig::default(),
            },
            Rng::seeded(1),
        )
    }

    fn req(nonce: u64, addr: &str) -> Vec<u8> {
        QueryMessage::Request(MapRequest {
            nonce,
            addr: addr.parse().unwrap(),
        })
        .to_vec()
        .unwrap()
    }

    fn parse(tx: &Transmit) -> QueryMessage {
        QueryMessage::parse(&tx.bytes).unwrap()
    }

    fn upstream_nonce(tx: &Transmit) -> u64 {
        match parse(tx) {
            QueryMessage::Request(r) => r.nonce,
            other => panic!("{other:?}"),
        }
    }

    fn micronet(etr: &str) -> MappedRange {
        MappedRange {
            start: 0x1400_0004,
            len: 4,
            etr: Etr::V4(etr.parse().unwrap()),
        }
    }

    fn found(nonce: u64, r: MappedRange) -> Vec<u8> {
        QueryMessage::Reply(MapReply {
            nonce,
            status: Status::Found,
            family: Family::V4,
            cache_time_s: 600,
            range: Some(r),
        })
        .to_vec()
        .unwrap()
    }

    #[test]
    fn miss_then_hit_and_coalescing() {
        let mut c = core();
        let mut out = Outbox::default();
        c.handle_client(t(0), a(1), &req(7, "20.0.0.5"), &mut out);
        c.handle_client(t(1), a(2), &req(8, "20.0.0.5"), &mut out);
        assert_eq!(out.upstream.len(), 1, "second miss merged into the first");
        assert_eq!(out.upstream[0].to, a(100));
        let n = upstream_nonce(&out.upstream[0]);
        c.handle_upstream(t(5), a(100), &found(n, micronet("192.0.2.1")), &mut out);
        assert_eq!(out.client.len(), 2);
        for (tx, (to, nonce)) in out.client.iter().zip([(a(1), 7), (a(2), 8)]) {
            assert_eq!(tx.to, to);
            match parse(tx) {
                QueryMessage::Reply(r) => {
                    assert_eq!(r.nonce, nonce);
                    assert_eq!(r.range, Some(micronet("192.0.2.1")));
                }
                other => panic!("{other:?}"),
            }
        }
        out.client.clear();
        c.handle_client(t(10), a(3), &req(9, "20.0.0.7"), &mut out);
        assert_eq!(out.upstream.len(), 1, "answered from the cache");
        assert_eq!(c.stats().hits, 1);
        match parse(&out.client[0]) {
            QueryMessage::Reply(r) => assert_eq!(r.cache_time_s, 599),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeout_moves_to_the_next_upstream_then_answers_resyncing() {
        let mut c = core();
        let mut out = Outbox::default();
        c.handle_client(t(0), a(1), &req(7, "20.0.0.5"), &mut out);
        c.handle_timeout(t(0), &mut out);
        assert_eq!(c.poll_timeout(), Some(t(200)));
        c.handle_timeout(t(199), &mut out);
        assert_eq!(out.upstream.len(), 1);
        c.handle_timeout(t(200), &mut out);
        assert_eq!(out.upstream.len(), 2);
        assert_eq!(out.upstream[1].to, a(101));
        // A late reply from the first upstream is not accepted for the new try.
        let first = upstream_nonce(&out.upstream[0]);
        c.handle_upstream(
            t(210),
            a(100),
            &found(first, micronet("192.0.2.1")),
            &mut out,
        );
        assert!(out.client.is_empty());
        c.handle_timeout(t(400), &mut out);
        match parse(&out.client[0]) {
            QueryMessage::Reply(r) => assert_eq!(r.status, Status::Resyncing),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upstream_notification_updates_cache_and_reaches_downstream_queriers() {
        let mut c = core();
        let mut out = Outbox::default();
        c.handle_client(t(0), a(1), &req(7, "20.0.0.5"), &mut out);
        let n = upstream_nonce(&out.upstream[0]);
        c.handle_upstream(t(1), a(100), &found(n, micronet("192.0.2.1")), &mut out);
        out.client.clear();
        out.upstream.clear();
        // The micronet 20.0.0.4+4 was zeroed and split into +1 and +3.
        let note = QueryMessage::Notify(Notification {
            notify_id: 55,
            nonce: n,
            family: Family::V4,
            cache_time_s: 500,
            flush: false,
            entries: vec![
                MappedRange {
                    start: 0x1400_0004,
                    len: 1,
                    etr: Etr::V4("192.0.2.9".parse().unwrap()),
                },
                MappedRange {
                    start: 0x1400_0005,
                    len: 3,
                    etr: Etr::V4("192.0.2.8".parse().unwrap()),
                },
            ],
        });
        c.handle_upstream(t(2), a(100), &note.to_vec().unwrap(), &mut out);
        assert_eq!(
            parse(&out.upstream[0]),
            QueryMessage::Ack(NotifyAck { notify_id: 55 }),
            "upstream acked"
        );
        let QueryMessage::Notify(fwd) = parse(&out.client[0]) else {
            panic!()
        };
        assert_eq!(out.client[0].to, a(1));
        assert_eq!(fwd.nonce, 7, "the querier's own nonce");
        assert_eq!(fwd.entries.len(), 2);
        // The cache holds the new micronets.
        out.client.clear();
        c.handle_client(t(3), a(4), &req(10, "20.0.0.6"), &mut out);
        let QueryMessage::Reply(r) = parse(&out.client[0]) else {
            panic!()
        };
        assert_eq!(r.range.unwrap().start, 0x1400_0005);
        assert_eq!(r.range.unwrap().len, 3);
        // The downstream ack is matched.
        let ack = QueryMessage::Ack(NotifyAck {
            notify_id: fwd.notify_id,
        })
        .to_vec()
        .unwrap();
        c.handle_client(t(4), a(1), &ack, &mut out);
        assert_eq!(c.notifier().stats().acked, 1);
    }

    #[test]
    fn strangers_and_garbage_are_dropped_and_counted() {
        let mut c = core();
        let mut out = Outbox::default();
        c.handle_upstream(t(0), a(999), &found(1, micronet("192.0.2.1")), &mut out);
        c.handle_client(t(0), a(1), b"garbage", &mut out);
        let mut bad = req(42, "20.0.0.1");
        bad[3] = 9;
        c.handle_client(t(0), a(1), &bad, &mut out);
        assert_eq!(c.stats().unexpected, 1);
        assert_eq!(c.stats().malformed, 2);
        let QueryMessage::Reply(r) = parse(&out.client[0]) else {
            panic!()
        };
        assert_eq!((r.nonce, r.status), (42, Status::Malformed));
    }
}
