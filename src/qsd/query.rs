//! The QSD's query workers: answer map requests from ITRs and QSCs (seed s3.12;
//! spec: query.md). One [`QueryCore`] per worker thread, each on its own
//! `SO_REUSEPORT` socket of the query port.
//!
//! A worker collects the requests of one receive batch, looks them all up in one
//! batched, lock-free pass over the [`DbReader`] (so memory latencies overlap), and
//! answers each with the whole micronet and a cache time. What it told whom goes to
//! the notifier (a channel; dropped and counted when full), as do acknowledgements.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use ivip_wire::addr::unit_of;
use ivip_wire::query::{MapReply, MappedRange, QueryMessage, Status};
use ivip_wire::{Etr, Mab};

use crate::metrics::{Counter, CounterVec, Registry};
use crate::net::{DatagramCore, IpPrefix, Outbox};
use crate::notify::Told;
use crate::table::{DbReader, Mapping};
use crate::time::{Duration, Instant};

/// What a worker tells the notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierMsg {
    /// A reply with a range went out.
    Told(Told),
    /// A querier acknowledged a notification.
    Ack {
        /// From where.
        from: SocketAddr,
        /// Its id.
        notify_id: u64,
    },
}

/// Status labels for the answer counter.
pub const STATUS_LABELS: [&str; 6] = [
    "found",
    "unassigned",
    "not_spi",
    "resyncing",
    "malformed",
    "refused",
];

/// Metrics shared by the workers.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    /// Answers by status.
    pub answers: CounterVec,
    /// Datagrams dropped: not a request, unparseable without a nonce.
    pub dropped: Counter,
    /// Notifier messages dropped because its channel was full.
    pub told_dropped: Counter,
}

impl QueryMetrics {
    /// Register with `r`.
    pub fn register(r: &Registry) -> QueryMetrics {
        QueryMetrics {
            answers: r.counter_vec("ivip_qsd_answers_total", "Map replies sent, by status.", "status", &STATUS_LABELS),
            dropped: r.counter("ivip_qsd_query_dropped_total", "Datagrams on the query port that were neither requests nor acks."),
            told_dropped: r.counter(
                "ivip_qsd_notifier_backlog_dropped_total",
                "Replies the notifier could not record (its queue was full): those queriers learn of changes when their cache time ends.",
            ),
        }
    }
}

/// Settings shared by every worker.
#[derive(Clone)]
pub struct QueryShared {
    /// The database.
    pub reader: DbReader,
    /// Every MAB in the directory, ascending: an address in one of them that the
    /// database does not hold is in a MAB being loaded (`resyncing`).
    pub known: Arc<ArcSwap<Vec<Mab>>>,
    /// To the notifier.
    pub notifier: Sender<NotifierMsg>,
    /// Cache time of positive and unassigned answers.
    pub cache_time: Duration,
    /// Cache time of not-SPI answers.
    pub negative_cache_time: Duration,
    /// Queriers served; empty = everyone.
    pub clients: Vec<IpPrefix>,
    /// Metrics.
    pub metrics: QueryMetrics,
}

/// Requests one worker collects per receive batch, at most.
const BATCH_MAX: usize = 256;

/// One worker's core.
pub struct QueryCore {
    shared: QueryShared,
    from: Vec<(SocketAddr, u64)>,
    addrs: Vec<IpAddr>,
    results: Vec<Mapping>,
}

impl QueryCore {
    /// A worker core.
    pub fn new(shared: QueryShared) -> QueryCore {
        QueryCore {
            shared,
            from: Vec::with_capacity(BATCH_MAX),
            addrs: Vec::with_capacity(BATCH_MAX),
            results: vec![Mapping::OutsideMab; BATCH_MAX],
        }
    }

    fn reply(&self, out: &mut Outbox, to: SocketAddr, r: MapReply) {
        self.shared.metrics.answers.at(r.status as usize).inc();
        if let Ok(b) = QueryMessage::Reply(r).to_vec() {
            let _ = out.push_to(to, &b);
        }
    }

    fn in_known_mab(&self, addr: IpAddr) -> bool {
        let (f, u) = unit_of(addr);
        let known = self.shared.known.load();
        let i = known.partition_point(|m| (m.family(), m.start()) <= (f, u));
        i > 0 && known[i - 1].family() == f && known[i - 1].contains(u)
    }

    fn answer_batch(&mut self, now: Instant, out: &mut Outbox) {
        let n = self.addrs.len();
        if n == 0 {
            return;
        }
        self.shared
            .reader
            .lookup_batch(&self.addrs, &mut self.results[..n]);
        let cache = self.shared.cache_time;
        let cache_s = u32::try_from(cache.as_us() / 1_000_000).unwrap_or(u32::MAX);
        for i in 0..n {
            let (to, nonce) = self.from[i];
            let addr = self.addrs[i];
            let (family, _) = unit_of(addr);
            let (status, range) = match self.results[i] {
                Mapping::Micronet(m) => (
                    Status::Found,
                    Some(MappedRange {
                        start: m.start,
                        len: m.len,
                        etr: m.etr,
                    }),
                ),
                Mapping::Unassigned { start, len } => (
                    Status::Unassigned,
                    Some(MappedRange {
                        start,
                        len,
                        etr: Etr::zero(family),
                    }),
                ),
                Mapping::OutsideMab if self.in_known_mab(addr) => (Status::Resyncing, None),
                Mapping::OutsideMab => (Status::NotSpi, None),
            };
            let cache_time_s = match status {
                Status::Found | Status::Unassigned => cache_s,
                Status::NotSpi => {
                    u32::try_from(self.shared.negative_cache_time.as_us() / 1_000_000).unwrap_or(0)
                }
                _ => 0,
            };
            self.reply(
                out,
                to,
                MapReply {
                    nonce,
                    status,
                    family,
                    cache_time_s,
                    range,
                },
            );
            if let Some(r) = range {
                let msg = NotifierMsg::Told(Told {
                    querier: to,
                    nonce,
                    family,
                    start: r.start,
                    len: r.len,
                    expires: now + cache,
                });
                if self.shared.notifier.try_send(msg).is_err() {
                    self.shared.metrics.told_dropped.inc();
                }
            }
        }
        self.from.clear();
        self.addrs.clear();
    }
}

impl DatagramCore for QueryCore {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        if !self.shared.clients.is_empty()
            && !self.shared.clients.iter().any(|p| p.contains(from.ip()))
        {
            if let Some(nonce) = QueryMessage::request_nonce(bytes) {
                self.reply(
                    out,
                    from,
                    MapReply {
                        nonce,
                        status: Status::Refused,
                        family: ivip_wire::Family::V4,
                        cache_time_s: 0,
                        range: None,
                    },
                );
            } else {
                self.shared.metrics.dropped.inc();
            }
            return;
        }
        match QueryMessage::parse(bytes) {
            Ok(QueryMessage::Request(r)) => {
                self.from.push((from, r.nonce));
                self.addrs.push(r.addr);
                if self.addrs.len() >= BATCH_MAX {
                    self.answer_batch(now, out);
                }
            }
            Ok(QueryMessage::Ack(a)) => {
                let msg = NotifierMsg::Ack {
                    from,
                    notify_id: a.notify_id,
                };
                if self.shared.notifier.try_send(msg).is_err() {
                    self.shared.metrics.told_dropped.inc();
                }
            }
            Ok(_) => self.shared.metrics.dropped.inc(),
            Err(_) => match QueryMessage::request_nonce(bytes) {
                Some(nonce) => self.reply(
                    out,
                    from,
                    MapReply {
                        nonce,
                        status: Status::Malformed,
                        family: ivip_wire::Family::V4,
                        cache_time_s: 0,
                        range: None,
                    },
                ),
                None => self.shared.metrics.dropped.inc(),
            },
        }
    }

    fn handle_oversized(&mut self, _now: Instant, _from: SocketAddr) {
        self.shared.metrics.dropped.inc();
    }

    fn handle_batch_end(&mut self, now: Instant, out: &mut Outbox) {
        self.answer_batch(now, out);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.answer_batch(now, out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Database, Table};
    use ivip_wire::Command;

    fn setup() -> (
        Database,
        QueryCore,
        crossbeam_channel::Receiver<NotifierMsg>,
    ) {
        let mut db = Database::new();
        let mab: Mab = "20.0.0.0/14".parse().unwrap();
        let mut t = Table::new(mab);
        t.apply_at(
            1,
            &[Command::Define {
                start: 0x1400_0004,
                len: 4,
                etr: Etr::V4("192.0.2.1".parse().unwrap()),
            }],
        )
        .unwrap();
        db.insert(t).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(16);
        let known: Vec<Mab> = vec![mab, "21.0.0.0/16".parse().unwrap()];
        let core = QueryCore::new(QueryShared {
            reader: db.reader(),
            known: Arc::new(ArcSwap::from_pointee(known)),
            notifier: tx,
            cache_time: Duration::from_secs(600),
            negative_cache_time: Duration::from_secs(60),
            clients: vec![],
            metrics: QueryMetrics::register(&Registry::new()),
        });
        (db, core, rx)
    }

    fn ask(core: &mut QueryCore, addrs: &[&str]) -> Vec<MapReply> {
        let mut out = Outbox::new(64, 1 << 16);
        let from: SocketAddr = "127.0.0.1:999".parse().unwrap();
        for (i, a) in addrs.iter().enumerate() {
            let req = QueryMessage::Request(ivip_wire::query::MapRequest {
                nonce: i as u64,
                addr: a.parse().unwrap(),
            })
            .to_vec()
            .unwrap();
            core.handle_datagram(Instant(0), from, &req, &mut out);
        }
        core.handle_batch_end(Instant(0), &mut out);
        out.iter()
            .map(|(_, b)| match QueryMessage::parse(b).unwrap() {
                QueryMessage::Reply(r) => r,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_status_from_one_batched_pass() {
        let (_db, mut core, rx) = setup();
        let r = ask(&mut core, &["20.0.0.5", "20.0.0.9", "21.0.0.1", "8.8.8.8"]);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].status, Status::Found);
        assert_eq!(r[0].range.unwrap().start, 0x1400_0004);
        assert_eq!(r[0].range.unwrap().len, 4);
        assert_eq!(r[0].cache_time_s, 600);
        assert_eq!(r[1].status, Status::Unassigned);
        assert_eq!(r[2].status, Status::Resyncing, "a MAB still loading");
        assert_eq!(r[3].status, Status::NotSpi);
        assert_eq!(r[3].cache_time_s, 60);
        assert_eq!(
            rx.len(),
            2,
            "the notifier hears of the two replies with ranges"
        );
        assert!(r.iter().enumerate().all(|(i, x)| x.nonce == i as u64));
    }

    #[test]
    fn malformed_and_unknown_datagrams() {
        let (_db, mut core, _rx) = setup();
        let mut out = Outbox::new(8, 4096);
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        core.handle_datagram(Instant(0), from, b"junk", &mut out);
        let mut bad = QueryMessage::Request(ivip_wire::query::MapRequest {
            nonce: 77,
            addr: "20.0.0.1".parse().unwrap(),
        })
        .to_vec()
        .unwrap();
        bad[3] = 9;
        core.handle_datagram(Instant(0), from, &bad, &mut out);
        let replies: Vec<_> = out
            .iter()
            .map(|(_, b)| QueryMessage::parse(b).unwrap())
            .collect();
        assert_eq!(replies.len(), 1);
        assert!(
            matches!(&replies[0], QueryMessage::Reply(r) if r.nonce == 77 && r.status == Status::Malformed)
        );
        assert_eq!(core.shared.metrics.dropped.get(), 1);
    }
}
