//! The MPS's sans-IO core: feeds in, verified payloads stored, gaps noticed and
//! filled from peers (seed s4.1.3).
//!
//! Inputs: datagrams from its feeds ([`DatagramCore::handle_datagram`]), timers,
//! and the results of peer fetches ([`MpsCore::handle_fetch_result`]). Outputs:
//! control datagrams into the outbox, and [`FetchJob`]s the driver performs over
//! HTTP ([`MpsCore::take_jobs`]). A payload, from a feed or a peer, is stored and
//! tracked only after `Payload::new_checked` and its RUAS signature verify with
//! the key from the config (spec: mps.md §1). No clock, socket or thread inside.

use std::net::SocketAddr;
use std::sync::Arc;

use ivip_wire::control::{self, Control, Role};
use ivip_wire::mps::Bundle;
use ivip_wire::payload::{self, Payload, peek_id};
use ivip_wire::{RuasId, Seq, WireError};

use super::store::{Insert, Store};
use crate::feed::{FeedOutcome, FeedSet, FeedSpec, FeedStatus, FeedTiming};
use crate::metrics::{Counter, CounterVec, Gauge, Registry};
use crate::net::{DatagramCore, Outbox};
use crate::seq::{Observation, SeqTable};
use crate::sign::{PublicKey, Verifier};
use crate::time::{Duration, Instant};

/// How often the store is swept for expired payloads.
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);
/// How often gap-fill planning runs while something is missing.
pub const FILL_TICK: Duration = Duration::from_ms(50);
/// Most fetch jobs waiting for the driver.
pub const JOBS_MAX: usize = 256;

/// Why a datagram or fetched payload was dropped (`ivip_mps_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Shorter than its format's fixed part.
    Truncated = 0,
    /// Longer than a payload may be.
    Oversized,
    /// A version byte this implementation does not speak.
    UnknownVersion,
    /// Neither a payload nor feed control.
    UnknownKind,
    /// A payload or control datagram that fails its format's checks.
    Malformed,
    /// A payload from an address that is not a configured upstream.
    UnknownSource,
    /// A payload of a RUAS whose key is not configured.
    UnknownRuas,
    /// A payload whose signature does not verify.
    BadSignature,
    /// A control datagram that fails its checks.
    ControlInvalid,
    /// A valid control datagram this node does not expect.
    ControlUnexpected,
    /// A payload in a peer's answer that was not asked for.
    Unrequested,
}

impl Drop {
    /// Metrics labels in discriminant order.
    pub const LABELS: [&'static str; 11] = [
        "truncated",
        "oversized",
        "unknown_version",
        "unknown_kind",
        "malformed",
        "unknown_source",
        "unknown_ruas",
        "bad_signature",
        "control_invalid",
        "control_unexpected",
        "unrequested",
    ];

    fn from_wire(e: WireError) -> Drop {
        match e {
            WireError::Truncated => Drop::Truncated,
            WireError::TooLong => Drop::Oversized,
            WireError::UnsupportedVersion => Drop::UnknownVersion,
            WireError::UnknownType => Drop::UnknownKind,
            _ => Drop::Malformed,
        }
    }
}

/// The MPS's metrics (names under `ivip_mps_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Payloads stored, by origin (`feed`, `peer`).
    pub stored: CounterVec,
    /// Payloads already held.
    pub repeat: Counter,
    /// Drops by reason ([`Drop::LABELS`]).
    pub dropped: CounterVec,
    /// Sequence numbers noticed missing.
    pub gaps: Counter,
    /// Missing sequence numbers given up on.
    pub given_up: Counter,
    /// Peer fetches by result (`ok`, `error`, `bad_bundle`).
    pub fetches: CounterVec,
    /// Payloads held.
    pub held: Gauge,
    /// Bytes held.
    pub held_bytes: Gauge,
    /// Sequence numbers missing now.
    pub missing: Gauge,
}

impl Metrics {
    /// Register under `ivip_mps_`.
    pub fn register(r: &Registry) -> Metrics {
        Metrics {
            stored: r.counter_vec(
                "ivip_mps_payloads_stored_total",
                "Verified payloads stored, by where they came from.",
                "origin",
                &["feed", "peer"],
            ),
            repeat: r.counter("ivip_mps_payloads_repeat_total", "Payloads already held."),
            dropped: r.counter_vec(
                "ivip_mps_dropped_total",
                "Datagrams and fetched payloads dropped, by reason.",
                "reason",
                &Drop::LABELS,
            ),
            gaps: r.counter(
                "ivip_mps_missing_noticed_total",
                "Sequence numbers noticed missing in a RUAS's stream.",
            ),
            given_up: r.counter(
                "ivip_mps_missing_given_up_total",
                "Missing sequence numbers no peer supplied in time.",
            ),
            fetches: r.counter_vec(
                "ivip_mps_peer_fetches_total",
                "Range requests to peer MPSes, by result.",
                "result",
                &["ok", "error", "bad_bundle"],
            ),
            held: r.gauge("ivip_mps_payloads_held", "Payloads held now."),
            held_bytes: r.gauge(
                "ivip_mps_bytes_held",
                "Bytes held now (payloads and bookkeeping).",
            ),
            missing: r.gauge(
                "ivip_mps_missing",
                "Sequence numbers missing now, over all RUASes.",
            ),
        }
    }
}

/// Gap filling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillSettings {
    /// Wait this long after noticing a gap before asking a peer (the other feed
    /// usually fills it within milliseconds).
    pub grace: Duration,
    /// Ask again (the next peer) this long after a fetch for a RUAS.
    pub retry: Duration,
    /// Give up on a missing payload noticed this long ago.
    pub give_up: Duration,
    /// Most ranges asked for per RUAS per round.
    pub ranges_per_fetch_max: usize,
    /// Most missing sequence numbers tracked per RUAS.
    pub missing_max: usize,
}

impl Default for FillSettings {
    fn default() -> Self {
        FillSettings {
            grace: Duration::from_ms(200),
            retry: Duration::from_ms(1000),
            give_up: Duration::from_secs(120),
            ranges_per_fetch_max: 8,
            missing_max: crate::seq::MISSING_MAX_DEFAULT,
        }
    }
}

/// Everything the core needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RUAS public keys.
    pub keys: Vec<(RuasId, PublicKey)>,
    /// Upstream feeds.
    pub feeds: Vec<FeedSpec>,
    /// Feed timers.
    pub timing: FeedTiming,
    /// Number of peer MPSes (the driver knows their URLs).
    pub peers: usize,
    /// Most sequence numbers per range request.
    pub range_max: u32,
    /// Gap filling.
    pub fill: FillSettings,
}

/// One range request for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchJob {
    /// Which peer (index into the configured list).
    pub peer: usize,
    /// The RUAS.
    pub ruas: RuasId,
    /// The epoch.
    pub epoch: u32,
    /// First sequence number.
    pub from: Seq,
    /// Last sequence number (inclusive).
    pub to: Seq,
}

#[derive(Debug, Clone, Copy, Default)]
struct Fill {
    in_flight: usize,
    in_flight_since: Instant,
    next_at: Instant,
    rr: usize,
}

/// The MPS core.
pub struct MpsCore {
    settings: Settings,
    feeds: FeedSet,
    keys: Vec<Option<PublicKey>>,
    verifier: Arc<dyn Verifier>,
    store: Arc<Store>,
    seq: SeqTable,
    fill: Vec<Fill>,
    jobs: Vec<FetchJob>,
    metrics: Metrics,
    next_expire: Instant,
    next_fill: Instant,
}

impl std::fmt::Debug for MpsCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpsCore({} held)", self.store.len())
    }
}

impl MpsCore {
    /// A core storing into `store`, verifying with `verifier`, subscribing with
    /// `nonce`.
    pub fn new(
        settings: Settings,
        store: Arc<Store>,
        verifier: Arc<dyn Verifier>,
        nonce: u64,
        now: Instant,
        registry: &Registry,
    ) -> MpsCore {
        let feeds = FeedSet::new(
            Role::Mps,
            nonce,
            &settings.feeds,
            settings.timing,
            now,
            registry,
            "ivip_mps_feed",
        );
        let mut keys = vec![None; usize::from(RuasId::MAX) + 1];
        for (r, k) in &settings.keys {
            keys[usize::from(r.get())] = Some(*k);
        }
        MpsCore {
            seq: SeqTable::new(settings.fill.missing_max),
            fill: vec![Fill::default(); usize::from(RuasId::MAX) + 1],
            jobs: Vec::with_capacity(JOBS_MAX),
            metrics: Metrics::register(registry),
            next_expire: now + EXPIRE_INTERVAL,
            next_fill: now,
            settings,
            feeds,
            keys,
            verifier,
            store,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What each feed is doing.
    pub fn feed_status(&self) -> Vec<FeedStatus> {
        self.feeds.status()
    }

    /// The sequence trackers.
    pub fn seq(&self) -> &SeqTable {
        &self.seq
    }

    fn drop(&self, why: Drop) {
        self.metrics.dropped.at(why as usize).inc();
    }

    /// Check, verify, store and track one payload. Returns `true` when stored.
    fn accept(&mut self, now: Instant, bytes: &[u8], origin: usize) -> bool {
        let p = match Payload::new_checked(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.drop(Drop::from_wire(e));
                return false;
            }
        };
        let id = p.id();
        let Some(key) = self.keys[usize::from(id.ruas.get())] else {
            self.drop(Drop::UnknownRuas);
            return false;
        };
        if self.store.contains(id) {
            self.metrics.repeat.inc();
            return false;
        }
        // spec: mps.md §1 — "A payload whose signature fails is never stored or served."
        if self
            .verifier
            .verify(&key, p.signed_bytes(), &p.signature())
            .is_err()
        {
            self.drop(Drop::BadSignature);
            return false;
        }
        if self.store.insert(now, id, bytes) == Insert::Duplicate {
            self.metrics.repeat.inc();
            return false;
        }
        self.metrics.stored.at(origin).inc();
        if let Observation::Ahead { gap } = self.seq.observe(now, id) {
            self.metrics.gaps.add(u64::from(gap));
        }
        true
    }

    /// Hand waiting fetch jobs to `send`; a job `send` refuses (returns `false`)
    /// counts as failed at once.
    pub fn take_jobs(&mut self, now: Instant, mut send: impl FnMut(FetchJob) -> bool) {
        let jobs = std::mem::take(&mut self.jobs);
        for j in &jobs {
            if !send(*j) {
                self.handle_fetch_result(now, *j, Err("fetch queue full".into()));
            }
        }
        self.jobs = jobs;
        self.jobs.clear();
    }

    /// The answer to a fetch job: the response body, or why there is none.
    pub fn handle_fetch_result(
        &mut self,
        now: Instant,
        job: FetchJob,
        result: Result<Vec<u8>, String>,
    ) {
        let f = &mut self.fill[usize::from(job.ruas.get())];
        f.in_flight = f.in_flight.saturating_sub(1);
        let body = match result {
            Ok(b) => b,
            Err(e) => {
                log::debug!(
                    "peer {} fetch {}/{}/{}..{}: {e}",
                    job.peer,
                    job.ruas,
                    job.epoch,
                    job.from,
                    job.to
                );
                self.metrics.fetches.at(1).inc();
                return;
            }
        };
        let bundle = match Bundle::new_checked(&body) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("peer {} sent a bad bundle: {e}", job.peer);
                self.metrics.fetches.at(2).inc();
                return;
            }
        };
        self.metrics.fetches.at(0).inc();
        let span = job.to.0.wrapping_sub(job.from.0);
        for (id, bytes) in bundle.iter() {
            let inside = id.ruas == job.ruas
                && id.epoch == job.epoch
                && id.seq.0.wrapping_sub(job.from.0) <= span;
            if !inside {
                self.drop(Drop::Unrequested);
                continue;
            }
            self.accept(now, bytes, 1);
        }
    }

    fn plan_fills(&mut self, now: Instant) {
        let fs = self.settings.fill;
        let peers = self.settings.peers;
        let stale = fs.retry.saturating_mul(2);
        for r in 0..=RuasId::MAX {
            let ruas = RuasId::masked(r);
            let tracker = self.seq.get_mut(ruas);
            let Some(epoch) = tracker.epoch() else {
                continue;
            };
            let gave_up = tracker.give_up(now - fs.give_up);
            self.metrics.given_up.add(gave_up as u64);
            if peers == 0 || tracker.missing_len() == 0 {
                continue;
            }
            let f = &mut self.fill[usize::from(r)];
            if f.in_flight > 0 && now < f.in_flight_since + stale {
                continue;
            }
            if now < f.next_at {
                continue;
            }
            let ranges = self.seq.get(ruas).missing_ranges(
                now - fs.grace,
                fs.ranges_per_fetch_max,
                self.settings.range_max,
            );
            if ranges.is_empty() {
                continue;
            }
            let f = &mut self.fill[usize::from(r)];
            let peer = f.rr % peers;
            f.rr = f.rr.wrapping_add(1);
            f.next_at = now + fs.retry;
            f.in_flight_since = now;
            f.in_flight = 0;
            for (from, to) in ranges {
                if self.jobs.len() >= JOBS_MAX {
                    break;
                }
                self.jobs.push(FetchJob {
                    peer,
                    ruas,
                    epoch,
                    from,
                    to,
                });
                self.fill[usize::from(r)].in_flight += 1;
            }
        }
    }
}

impl DatagramCore for MpsCore {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        let (Some(&version), Some(&kind)) = (bytes.first(), bytes.get(1)) else {
            return self.drop(Drop::Truncated);
        };
        if version != payload::VERSION {
            return self.drop(Drop::UnknownVersion);
        }
        if kind == payload::KIND_PAYLOAD {
            let Some(t) = self.feeds.target_of(from) else {
                return self.drop(Drop::UnknownSource);
            };
            let id = match peek_id(bytes) {
                Ok(id) => id,
                Err(e) => return self.drop(Drop::from_wire(e)),
            };
            self.feeds.note_payload(t, now);
            // Cheap repeat check before the full parse and signature check.
            if self.store.contains(id) {
                self.metrics.repeat.inc();
                return;
            }
            self.accept(now, bytes, 0);
        } else if control::is_control_kind(kind) {
            match Control::parse(bytes) {
                Err(_) => self.drop(Drop::ControlInvalid),
                Ok(
                    m @ (Control::Challenge { .. }
                    | Control::Accept { .. }
                    | Control::Refuse { .. }),
                ) => {
                    if self.feeds.handle_control(now, from, &m, out) == FeedOutcome::Ignored {
                        self.drop(Drop::ControlUnexpected);
                    }
                }
                // An MPS serves no feeds.
                Ok(_) => self.drop(Drop::ControlUnexpected),
            }
        } else {
            self.drop(Drop::UnknownKind);
        }
    }

    fn handle_oversized(&mut self, _now: Instant, _from: SocketAddr) {
        self.drop(Drop::Oversized);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.feeds.handle_timeout(now, out);
        if now >= self.next_expire {
            self.store.expire(now);
            self.next_expire = now + EXPIRE_INTERVAL;
        }
        if now >= self.next_fill {
            self.plan_fills(now);
            self.next_fill = now + FILL_TICK;
        }
        self.metrics.held.set(self.store.len() as i64);
        self.metrics.held_bytes.set(self.store.bytes() as i64);
        self.metrics.missing.set(self.seq.missing_len() as i64);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_expire.min(self.next_fill);
        if let Some(f) = self.feeds.poll_timeout() {
            t = t.min(f);
        }
        Some(t)
    }

    fn shutdown(&mut self, _now: Instant, out: &mut Outbox) -> bool {
        self.feeds.shutdown(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{FakeVerifier, KeyPair};
    use ivip_wire::PayloadId;
    use ivip_wire::mps::BundleWriter;
    use ivip_wire::payload::{PayloadRepr, Record};

    const UP: &str = "127.0.0.2:4000";

    fn key() -> PublicKey {
        [9; 32]
    }

    fn payload(seq: u32, forged: bool) -> Vec<u8> {
        let mut b = PayloadRepr {
            id: PayloadId {
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                seq: Seq(seq),
            },
            timestamp_us: 0,
            records: vec![Record::Heartbeat { interval_ms: 100 }],
            signature: [0; 64],
        }
        .to_vec()
        .unwrap();
        let n = b.len() - 64;
        let mut sig = FakeVerifier::sign(&key(), &b[..n]);
        if forged {
            sig[0] ^= 1;
        }
        b[n..].copy_from_slice(&sig);
        b
    }

    fn core(peers: usize) -> MpsCore {
        let settings = Settings {
            keys: vec![(RuasId::new(3).unwrap(), key())],
            feeds: vec![
                FeedSpec {
                    primary: UP.parse().unwrap(),
                    alternatives: vec![],
                },
                FeedSpec {
                    primary: "127.0.0.3:4000".parse().unwrap(),
                    alternatives: vec![],
                },
            ],
            timing: FeedTiming::default(),
            peers,
            range_max: 1024,
            fill: FillSettings::default(),
        };
        MpsCore::new(
            settings,
            Arc::new(Store::new(Duration::from_secs(600), 1 << 20)),
            Arc::new(FakeVerifier),
            7,
            Instant(0),
            &Registry::new(),
        )
    }

    fn id(seq: u32) -> PayloadId {
        PayloadId {
            ruas: RuasId::new(3).unwrap(),
            epoch: 1,
            seq: Seq(seq),
        }
    }

    #[test]
    fn verified_payloads_are_stored_forgeries_never() {
        let mut c = core(0);
        let mut out = Outbox::new(16, 8192);
        let up = UP.parse().unwrap();
        c.handle_datagram(Instant(1), up, &payload(1, true), &mut out);
        assert!(!c.store().contains(id(1)));
        assert_eq!(c.metrics().dropped.at(Drop::BadSignature as usize).get(), 1);
        c.handle_datagram(Instant(2), up, &payload(1, false), &mut out);
        assert!(c.store().contains(id(1)));
        c.handle_datagram(Instant(3), up, &payload(1, false), &mut out);
        assert_eq!(c.metrics().repeat.get(), 1);
        // A stranger's payload is not even parsed.
        c.handle_datagram(
            Instant(3),
            "127.0.0.99:1".parse().unwrap(),
            &payload(2, false),
            &mut out,
        );
        assert!(!c.store().contains(id(2)));
        assert_eq!(
            c.metrics().dropped.at(Drop::UnknownSource as usize).get(),
            1
        );
        // Unknown RUAS key.
        let mut other = payload(5, false);
        other[2] = 4;
        c.handle_datagram(Instant(3), up, &other, &mut out);
        assert_eq!(c.metrics().dropped.at(Drop::UnknownRuas as usize).get(), 1);
    }

    #[test]
    fn gaps_become_fetch_jobs_after_the_grace_and_peer_answers_fill_them() {
        let mut c = core(2);
        let mut out = Outbox::new(16, 8192);
        let up = UP.parse().unwrap();
        for s in [10, 11, 15, 16] {
            c.handle_datagram(Instant(1_000), up, &payload(s, false), &mut out);
        }
        assert_eq!(c.metrics().gaps.get(), 3);
        // Within the grace time: no job.
        c.handle_timeout(Instant(100_000), &mut out);
        let mut jobs = Vec::new();
        c.take_jobs(Instant(100_000), |j| {
            jobs.push(j);
            true
        });
        assert!(jobs.is_empty());
        c.handle_timeout(Instant(201_000), &mut out);
        c.take_jobs(Instant(201_000), |j| {
            jobs.push(j);
            true
        });
        assert_eq!(
            jobs,
            [FetchJob {
                peer: 0,
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                from: Seq(12),
                to: Seq(14)
            }]
        );
        // The peer answers with 12..=14 (and one forged, and one unasked-for).
        let mut w = BundleWriter::new();
        w.push(&payload(12, false)).unwrap();
        w.push(&payload(13, true)).unwrap();
        w.push(&payload(14, false)).unwrap();
        w.push(&payload(40, false)).unwrap();
        c.handle_fetch_result(Instant(202_000), jobs[0], Ok(w.finish()));
        assert!(c.store().contains(id(12)) && c.store().contains(id(14)));
        assert!(!c.store().contains(id(13)) && !c.store().contains(id(40)));
        assert_eq!(c.metrics().stored.at(1).get(), 2);
        assert_eq!(c.metrics().dropped.at(Drop::Unrequested as usize).get(), 1);
        assert_eq!(c.seq().get(RuasId::new(3).unwrap()).missing_len(), 1);
        // The next round goes to the next peer, after the retry time.
        jobs.clear();
        c.handle_timeout(Instant(1_000_000), &mut out);
        c.take_jobs(Instant(1_000_000), |j| {
            jobs.push(j);
            true
        });
        assert!(jobs.is_empty());
        c.handle_timeout(Instant(1_202_000), &mut out);
        c.take_jobs(Instant(1_202_000), |j| {
            jobs.push(j);
            true
        });
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].peer, jobs[0].from, jobs[0].to),
            (1, Seq(13), Seq(13))
        );
        // A failed or garbled answer is counted, not fatal.
        c.handle_fetch_result(Instant(1_203_000), jobs[0], Err("timeout".into()));
        c.handle_fetch_result(Instant(1_203_000), jobs[0], Ok(vec![9, 9]));
        assert_eq!(c.metrics().fetches.at(1).get(), 1);
        assert_eq!(c.metrics().fetches.at(2).get(), 1);
    }

    #[test]
    fn real_ed25519_rejects_a_forgery() {
        let k = KeyPair::from_seed(&[4; 32]);
        let mut b = payload(1, false);
        let n = b.len() - 64;
        let sig = k.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        let settings = Settings {
            keys: vec![(RuasId::new(3).unwrap(), k.public())],
            ..core(0).settings.clone()
        };
        let mut c = MpsCore::new(
            settings,
            Arc::new(Store::new(Duration::from_secs(600), 1 << 20)),
            Arc::new(crate::sign::Ed25519Verifier),
            7,
            Instant(0),
            &Registry::new(),
        );
        let mut out = Outbox::new(16, 8192);
        let mut forged = b.clone();
        forged[30] ^= 1;
        c.handle_datagram(Instant(1), UP.parse().unwrap(), &forged, &mut out);
        assert!(!c.store().contains(id(1)));
        c.handle_datagram(Instant(1), UP.parse().unwrap(), &b, &mut out);
        assert!(c.store().contains(id(1)));
    }
}
