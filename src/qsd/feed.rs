//! The QSD's feed loop core: subscriptions to upstream replicators, signature
//! checks (batched), the [`Stream`], fetches from MPSes and snapshot servers, and
//! the notifier (seed s1.1, s3.12, s4.1.2, s4.3).
//!
//! Driven by the feed socket's [`crate::net::UdpLoop`]. Fetches are handed to the
//! fetcher threads as [`FetchJob`]s; their [`FetchResult`]s come back through a
//! channel and the loop's waker. Notifications leave from the query port (so the
//! querier sees the address it asked) through an injected sender.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ivip_wire::control::{self, Control, Role};
use ivip_wire::mps::Bundle;
use ivip_wire::payload::{self, Payload, peek_id};
use ivip_wire::query::MappedRange;
use ivip_wire::{Mab, RuasId, Seq};
use parking_lot::Mutex;

use super::query::NotifierMsg;
use super::stream::{Event, Stream};
use crate::feed::{FeedOutcome, FeedSet, FeedSpec, FeedTiming};
use crate::metrics::{Counter, CounterVec, Gauge, Registry};
use crate::net::{DatagramCore, Outbox};
use crate::notify::{Notifier, NotifierConfig, Transmit};
use crate::sign::{PublicKey, Verifier};
use crate::table::{DbReader, Mapping};
use crate::time::{Duration, Instant, WallClock};

/// Work for the fetcher threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchJob {
    /// `GET {mps}/payloads/{ruas}/{epoch}?from=&to=`.
    Payloads {
        /// The RUAS.
        ruas: RuasId,
        /// The epoch.
        epoch: u32,
        /// First.
        from: Seq,
        /// Last (inclusive).
        to: Seq,
        /// Which MPS (index, modulo the list).
        mps: usize,
    },
    /// `GET {server}/v1/snapshots/latest?mab=`.
    Snapshot {
        /// The MAB.
        mab: Mab,
        /// The server's base URL.
        server: String,
    },
}

/// What a fetch brought back.
#[derive(Debug)]
pub enum FetchResult {
    /// A payload bundle (mps.md), or why there is none.
    Payloads(Result<Vec<u8>, String>),
    /// A snapshot file, or why there is none.
    Snapshot(Mab, Result<Vec<u8>, String>),
    /// A new directory (s5: fetched again daily).
    Directory(super::directory::Directory),
}

/// Applied sets kept per MAB for `/v1/applied` (whole-system latency checks).
pub const APPLIED_KEPT_PER_MAB: usize = 1 << 16;

/// When each recent set was applied, per MAB: `(mab_seq, unix µs)`.
#[derive(Debug, Default)]
pub struct AppliedLog {
    inner: Mutex<BTreeMap<Mab, VecDeque<(u64, u64)>>>,
}

impl AppliedLog {
    fn record(&self, mab: Mab, seq: u64, at_us: u64) {
        let mut m = self.inner.lock();
        let q = m.entry(mab).or_default();
        q.push_back((seq, at_us));
        if q.len() > APPLIED_KEPT_PER_MAB {
            q.pop_front();
        }
    }

    /// The applications of `mab` with sequences in `from..=to`.
    pub fn range(&self, mab: &Mab, from: u64, to: u64) -> Vec<(u64, u64)> {
        self.inner
            .lock()
            .get(mab)
            .map(|q| {
                q.iter()
                    .filter(|(s, _)| (from..=to).contains(s))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Drop reasons on the feed socket.
pub const DROP_LABELS: [&str; 9] = [
    "truncated",
    "malformed",
    "unknown_version",
    "unknown_kind",
    "unknown_source",
    "unknown_ruas",
    "bad_signature",
    "control",
    "oversized",
];

#[derive(Clone, Copy)]
#[repr(usize)]
enum Drop {
    Truncated = 0,
    Malformed,
    UnknownVersion,
    UnknownKind,
    UnknownSource,
    UnknownRuas,
    BadSignature,
    Control,
    Oversized,
}

struct Metrics {
    dropped: CounterVec,
    verified: Counter,
    repeats: Counter,
    gaps: Counter,
    sets_applied: Counter,
    resyncs: Counter,
    hash_mismatch: Counter,
    hash_ok: Counter,
    snapshots_loaded: Counter,
    snapshots_refused: Counter,
    fetch_requests: Counter,
    fetched_payloads: Counter,
    fetch_failures: Counter,
    fetch_queue_full: Counter,
    missing: Gauge,
    mabs_ready: Gauge,
    mabs_loading: Gauge,
    notify_sent: Counter,
    notify_resent: Counter,
    notify_acked: Counter,
    notify_expired: Counter,
    watches: Gauge,
}

impl Metrics {
    fn register(r: &Registry) -> Metrics {
        Metrics {
            dropped: r.counter_vec(
                "ivip_qsd_feed_dropped_total",
                "Datagrams dropped on the feed socket, by reason.",
                "reason",
                &DROP_LABELS,
            ),
            verified: r.counter(
                "ivip_qsd_payloads_verified_total",
                "Payloads whose RUAS signature verified.",
            ),
            repeats: r.counter(
                "ivip_qsd_payload_repeats_total",
                "Payloads already seen (the other feed's copy).",
            ),
            gaps: r.counter(
                "ivip_qsd_payload_gaps_total",
                "Payload sequence numbers missing on arrival (lost on every feed).",
            ),
            sets_applied: r.counter("ivip_qsd_sets_applied_total", "Command sets applied."),
            resyncs: r.counter(
                "ivip_qsd_resyncs_total",
                "MABs reloaded from a snapshot after a divergence.",
            ),
            hash_mismatch: r.counter(
                "ivip_qsd_hash_mismatch_total",
                "Announced hashes that differed from this copy's.",
            ),
            hash_ok: r.counter("ivip_qsd_hash_ok_total", "Announced hashes that matched."),
            snapshots_loaded: r.counter("ivip_qsd_snapshots_loaded_total", "Snapshots loaded."),
            snapshots_refused: r.counter(
                "ivip_qsd_snapshots_refused_total",
                "Snapshots refused (signature, hash, format) or not fetched.",
            ),
            fetch_requests: r.counter(
                "ivip_qsd_mps_requests_total",
                "Requests to MPSes for missing payloads.",
            ),
            fetched_payloads: r.counter(
                "ivip_qsd_mps_payloads_total",
                "Payloads recovered from MPSes.",
            ),
            fetch_failures: r.counter("ivip_qsd_mps_failures_total", "MPS requests that failed."),
            fetch_queue_full: r.counter(
                "ivip_qsd_fetch_queue_full_total",
                "Fetches not queued (the fetcher was behind).",
            ),
            missing: r.gauge(
                "ivip_qsd_missing_payloads",
                "Payloads known missing and still looked for.",
            ),
            mabs_ready: r.gauge("ivip_qsd_mabs_ready", "MABs serving."),
            mabs_loading: r.gauge(
                "ivip_qsd_mabs_loading",
                "MABs loading or resyncing (queries get `resyncing`).",
            ),
            notify_sent: r.counter(
                "ivip_qsd_notifications_sent_total",
                "Notifications sent (first copies).",
            ),
            notify_resent: r.counter(
                "ivip_qsd_notifications_resent_total",
                "Notification resends.",
            ),
            notify_acked: r.counter(
                "ivip_qsd_notifications_acked_total",
                "Notifications acknowledged.",
            ),
            notify_expired: r.counter(
                "ivip_qsd_notifications_expired_total",
                "Notifications given up unacknowledged.",
            ),
            watches: r.gauge("ivip_qsd_watches", "Queriers remembered for notifications."),
        }
    }
}

/// Sends a notification datagram from the query port.
pub type NotifySender = Box<dyn FnMut(SocketAddr, &[u8]) + Send>;

/// Notifier backlog drained per tick, at most.
const NOTIFIER_DRAIN_MAX: usize = 65_536;
/// How often the notifier backlog is drained.
const NOTIFIER_TICK: Duration = Duration::from_ms(5);
/// Fetch results handled per wake, at most.
const RESULTS_PER_WAKE_MAX: usize = 256;

/// Everything the feed core needs from the driver.
pub struct FeedParts {
    /// Upstream feeds.
    pub feeds: Vec<FeedSpec>,
    /// Feed timers.
    pub timing: FeedTiming,
    /// Subscription nonce.
    pub nonce: u64,
    /// Signature checks.
    pub verifier: Arc<dyn Verifier>,
    /// Snapshot servers per RUAS.
    pub snapshot_urls: BTreeMap<RuasId, Vec<String>>,
    /// Known MABs, shared with the workers.
    pub known: Arc<ArcSwap<Vec<Mab>>>,
    /// To the fetchers.
    pub jobs: Sender<FetchJob>,
    /// From the fetchers.
    pub results: Receiver<FetchResult>,
    /// From the workers.
    pub notifier_rx: Receiver<NotifierMsg>,
    /// Sends notifications.
    pub notify_send: NotifySender,
    /// Applied-set log for `/v1/applied`.
    pub applied: Arc<AppliedLog>,
    /// Wall clock (applied times).
    pub wall: Arc<dyn WallClock>,
    /// Seed for notification ids.
    pub notify_seed: u64,
}

/// The feed core.
pub struct FeedCore {
    feeds: FeedSet,
    stream: Stream,
    reader: DbReader,
    parts: FeedParts,
    notifier: Notifier,
    batch: Vec<Vec<u8>>,
    next_tick: Instant,
    m: Metrics,
    notify_out: Vec<Transmit>,
}

impl FeedCore {
    /// A feed core around `stream`.
    pub fn new(stream: Stream, parts: FeedParts, now: Instant, registry: &Registry) -> FeedCore {
        let feeds = FeedSet::new(
            Role::Qsd,
            parts.nonce,
            &parts.feeds,
            parts.timing,
            now,
            registry,
            "ivip_qsd_feed",
        );
        let notifier = Notifier::new(NotifierConfig::default(), parts.notify_seed);
        FeedCore {
            feeds,
            reader: stream.reader(),
            stream,
            parts,
            notifier,
            batch: Vec::new(),
            next_tick: now,
            m: Metrics::register(registry),
            notify_out: Vec::new(),
        }
    }

    /// The stream (status pages).
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    fn drop(&self, d: Drop) {
        self.m.dropped.at(d as usize).inc();
    }

    /// Check signatures (in one batch when several wait) and feed the good ones to
    /// the stream.
    fn verify_and_apply(&mut self, now: Instant, payloads: Vec<Vec<u8>>, fetched: bool) {
        if payloads.is_empty() {
            return;
        }
        let mut checked: Vec<(Payload<'_>, PublicKey)> = Vec::with_capacity(payloads.len());
        for b in &payloads {
            let p = match Payload::new_checked(b) {
                Ok(p) => p,
                Err(_) => {
                    self.drop(Drop::Malformed);
                    continue;
                }
            };
            match self.stream.key_of(p.id().ruas) {
                Some(k) => checked.push((p, k)),
                None => self.drop(Drop::UnknownRuas),
            }
        }
        let sigs: Vec<[u8; 64]> = checked.iter().map(|(p, _)| p.signature()).collect();
        let items: Vec<(&PublicKey, &[u8], &[u8; 64])> = checked
            .iter()
            .zip(&sigs)
            .map(|((p, k), s)| (k, p.signed_bytes(), s))
            .collect();
        let all_good = self.parts.verifier.verify_batch(&items).is_ok();
        for (i, (p, k)) in checked.iter().enumerate() {
            // spec: payload.md §5 — a payload that fails its signature is never applied.
            if !all_good
                && self
                    .parts
                    .verifier
                    .verify(k, p.signed_bytes(), &sigs[i])
                    .is_err()
            {
                self.drop(Drop::BadSignature);
                continue;
            }
            self.m.verified.inc();
            if fetched {
                self.m.fetched_payloads.inc();
            }
            self.stream.handle_payload(now, p, fetched);
        }
        self.stream.publish();
        self.handle_events(now);
    }

    fn handle_events(&mut self, now: Instant) {
        // Replies sent before these changes were applied must be watched first: a
        // querier that was answered, then changed its mapping, must hear of it.
        self.drain_notifier_queue(now);
        for ev in self.stream.take_events() {
            match ev {
                Event::FetchPayloads {
                    ruas,
                    epoch,
                    from,
                    to,
                    mps,
                } => self.job(FetchJob::Payloads {
                    ruas,
                    epoch,
                    from,
                    to,
                    mps,
                }),
                Event::FetchSnapshot { mab, ruas, attempt } => {
                    let urls = self
                        .parts
                        .snapshot_urls
                        .get(&ruas)
                        .cloned()
                        .unwrap_or_default();
                    if urls.is_empty() {
                        self.stream.handle_snapshot(
                            now,
                            mab,
                            Err("no snapshot server".into()),
                            self.parts.verifier.as_ref(),
                        );
                        continue;
                    }
                    let server = urls[attempt as usize % urls.len()].clone();
                    self.job(FetchJob::Snapshot { mab, server });
                }
                Event::Changed { family, start, len } => {
                    let reader = &self.reader;
                    self.notifier.changed(
                        now,
                        family,
                        start,
                        len,
                        |s, l| clipped_mapping(reader, family, s, l),
                        &mut self.notify_out,
                    );
                }
                Event::Applied { mab, mab_seq } => {
                    self.m.sets_applied.inc();
                    self.parts
                        .applied
                        .record(mab, mab_seq, self.parts.wall.now_unix_us());
                }
                Event::Ready { mab, mab_seq } => {
                    log::info!("MAB {mab} ready at sequence {mab_seq}")
                }
                Event::Resync { mab, reason } => {
                    self.m.resyncs.inc();
                    log::warn!(
                        "MAB {mab}: {reason}; reloading it from a snapshot while the others serve"
                    );
                }
            }
        }
        self.send_notifications();
    }

    fn job(&mut self, j: FetchJob) {
        if matches!(j, FetchJob::Payloads { .. }) {
            self.m.fetch_requests.inc();
        }
        if self.parts.jobs.try_send(j).is_err() {
            self.m.fetch_queue_full.inc();
        }
    }

    fn send_notifications(&mut self) {
        for t in self.notify_out.drain(..) {
            (self.parts.notify_send)(t.to, &t.bytes);
        }
    }

    fn drain_notifier_queue(&mut self, now: Instant) {
        for _ in 0..NOTIFIER_DRAIN_MAX {
            match self.parts.notifier_rx.try_recv() {
                Ok(NotifierMsg::Told(t)) => self.notifier.remember(now, t),
                Ok(NotifierMsg::Ack { from, notify_id }) => {
                    self.notifier.ack(from, notify_id);
                }
                Err(_) => break,
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.drain_notifier_queue(now);
        self.notifier.poll(now, &mut self.notify_out);
        self.send_notifications();
        let st = self.stream.stats();
        sync(&self.m.resyncs, st.resyncs);
        sync(&self.m.hash_mismatch, st.hash_mismatch);
        sync(&self.m.hash_ok, st.hash_ok);
        sync(&self.m.snapshots_loaded, st.snapshots_loaded);
        sync(&self.m.snapshots_refused, st.snapshots_refused);
        sync(&self.m.repeats, st.repeats);
        sync(&self.m.gaps, st.gaps);
        let ns = self.notifier.stats();
        sync(&self.m.notify_sent, ns.sent);
        sync(&self.m.notify_resent, ns.resent);
        sync(&self.m.notify_acked, ns.acked);
        sync(&self.m.notify_expired, ns.expired);
        self.m.watches.set(self.notifier.watches() as i64);
        self.m.missing.set(self.stream.missing() as i64);
        let states = self.stream.mab_states();
        let ready = states.iter().filter(|s| s.1.is_some()).count();
        self.m.mabs_ready.set(ready as i64);
        self.m.mabs_loading.set((states.len() - ready) as i64);
    }
}

/// Bring a counter up to a total kept elsewhere.
fn sync(c: &Counter, total: u64) {
    let have = c.get();
    if total > have {
        c.add(total - have);
    }
}

/// The micronets now covering `[s, s + l)`, clipped to it; `None` when the MAB is
/// not loaded (the querier is told to flush).
fn clipped_mapping(
    reader: &DbReader,
    family: ivip_wire::Family,
    s: u64,
    l: u64,
) -> Option<Vec<MappedRange>> {
    let mab = reader.mab_of(ivip_wire::addr::unit_addr(family, s))?;
    let view = reader.view(&mab)?;
    let end = u128::from(s) + u128::from(l);
    let mut v = Vec::new();
    for m in view.range(s, l) {
        if let Mapping::Micronet(n) = m {
            let a = u128::from(n.start).max(u128::from(s));
            let b = (u128::from(n.start) + u128::from(n.len)).min(end);
            if a < b {
                v.push(MappedRange {
                    start: a as u64,
                    len: (b - a) as u64,
                    etr: n.etr,
                });
            }
        }
    }
    Some(v)
}

impl DatagramCore for FeedCore {
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
                Err(_) => return self.drop(Drop::Malformed),
            };
            self.feeds.note_payload(t, now);
            if !self.stream.is_new(id) {
                self.m.repeats.inc();
                return;
            }
            self.batch.push(bytes.to_vec());
        } else if control::is_control_kind(kind) {
            match Control::parse(bytes) {
                Ok(
                    m @ (Control::Challenge { .. }
                    | Control::Accept { .. }
                    | Control::Refuse { .. }),
                ) => {
                    if self.feeds.handle_control(now, from, &m, out) == FeedOutcome::Ignored {
                        self.drop(Drop::Control);
                    }
                }
                _ => self.drop(Drop::Control),
            }
        } else {
            self.drop(Drop::UnknownKind);
        }
    }

    fn handle_oversized(&mut self, _now: Instant, _from: SocketAddr) {
        self.drop(Drop::Oversized);
    }

    fn handle_batch_end(&mut self, now: Instant, _out: &mut Outbox) {
        let batch = std::mem::take(&mut self.batch);
        self.verify_and_apply(now, batch, false);
    }

    fn handle_wake(&mut self, now: Instant, _out: &mut Outbox) {
        for _ in 0..RESULTS_PER_WAKE_MAX {
            match self.parts.results.try_recv() {
                Ok(FetchResult::Payloads(Ok(body))) => match Bundle::new_checked(&body) {
                    Ok(b) => {
                        let ps: Vec<Vec<u8>> = b.iter().map(|(_, bytes)| bytes.to_vec()).collect();
                        self.verify_and_apply(now, ps, true);
                    }
                    Err(_) => self.m.fetch_failures.inc(),
                },
                Ok(FetchResult::Payloads(Err(e))) => {
                    log::debug!("MPS fetch: {e}");
                    self.m.fetch_failures.inc();
                }
                Ok(FetchResult::Directory(d)) => {
                    self.stream.set_directory(&d.infos(), now);
                    self.parts.snapshot_urls = d
                        .infos()
                        .iter()
                        .map(|r| (r.id, d.snapshot_urls(r.id)))
                        .collect();
                    self.parts.known.store(Arc::new(d.mabs()));
                    log::info!(
                        "directory refreshed: {} RUAS(es), {} MAB(s)",
                        d.ruas.len(),
                        d.mabs().len()
                    );
                }
                Ok(FetchResult::Snapshot(mab, r)) => {
                    self.stream
                        .handle_snapshot(now, mab, r, self.parts.verifier.as_ref());
                    self.stream.publish();
                    self.handle_events(now);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.feeds.handle_timeout(now, out);
        self.stream.handle_timeout(now);
        self.handle_events(now);
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + NOTIFIER_TICK;
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.feeds.poll_timeout(),
            self.stream.poll_timeout(),
            Some(self.next_tick),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn shutdown(&mut self, _now: Instant, out: &mut Outbox) -> bool {
        self.feeds.shutdown(out)
    }
}
