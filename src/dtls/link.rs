//! One socket's DTLS associations: the table keyed by peer address, the
//! stateless cookie exchange, handshakes and their timers, sealing and opening
//! records, re-handshakes after restarts, and the limits that keep bad input
//! cheap.
//!
//! spec: dtls.md §4–§6. A [`Link`] is shared by every worker loop of a daemon's
//! socket group (the workers share one address, so a peer has one association
//! with the daemon whichever worker serves it). It does no I/O: received
//! datagrams come in through [`Link::receive`], cores' datagrams through
//! [`Link::seal`], and everything to send goes out through a caller's [`Wire`].
//! Time comes in as [`Instant`]s; the retransmission timer itself is OpenSSL's
//! (its clock), driven from [`Link::handle_timeout`].
//!
//! # Routing a received datagram (spec: dtls.md §4.2)
//! 1. Not a DTLS record: dropped (`plain_udp`, `malformed`).
//! 2. A ClientHello (epoch 0): the same client random as the association in
//!    hand is a retransmission (server side) or a late duplicate; otherwise it
//!    opens a new association — the peer restarted, or both sides open at once
//!    (the larger client random stays client). New ones go through
//!    `DTLSv1_listen`: no state is kept until the client echoes a cookie bound to
//!    its address, so a spoofed source cannot make this node hold state or send
//!    more than it received. Hellos are rate-limited per IP and in total.
//! 3. Anything else goes to the sender's association: handshake records drive
//!    its handshake; application records are decrypted and handed to the role.
//!    With no association, a record of epoch ≥ 1 means the peer still holds one
//!    this node lost (it restarted): this node opens a new one (rate-limited),
//!    which replaces the peer's old one when it completes.
//!
//! # Locks
//! Order: `timers` or `listener`, then one association's mutex, then `changes`.
//! The table itself is an `ArcSwap` snapshot, read without locking.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use ivip_wire::dtls::{ClientHelloPeek, ContentType, peek_client_hello, split_record};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509StoreContextRef;
use parking_lot::Mutex;

use super::ffi;
use super::identity::{Fingerprint, Identity, KeyKind};
use super::metrics::{Drop, DtlsMetrics, Outcome, RateLog};
use super::pins::{Pin, PinError, PinSet};
use crate::metrics::Registry;
use crate::net::SockAddr;
use crate::time::{Duration, Instant};

/// The cipher suites offered and accepted: ECDHE with an ECDSA (P-256) or Ed25519
/// certificate, AEAD only (spec: dtls.md §4.1).
pub const CIPHER_LIST: &str =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305";
/// Key-exchange groups, in order of preference.
pub const GROUPS: &str = "X25519:P-256";
/// Records read from one datagram at most.
pub const RECORDS_PER_DATAGRAM_MAX: usize = 16;
/// Bytes of plaintext one record may give (datagrams are cut at 2048 bytes).
pub const PLAINTEXT_MAX: usize = crate::net::udp::RECV_SLOT_LEN;
/// How often timers run at least (idle expiry, gauges).
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// A cookie is valid in the window it was made in and the next; each this long.
pub const COOKIE_WINDOW: Duration = Duration::from_secs(30);
/// Bytes of a cookie: one byte of window number, 16 of keyed hash.
pub const COOKIE_LEN: usize = 17;
/// Slots of the per-IP hello rate table (IPs hash into them).
pub const HELLO_SLOTS: usize = 1024;

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Every bound of a link (spec: dtls.md §5). Defaults suit a replicator with a
/// few hundred peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Associations whose handshake is running, at most.
    pub half_open_max: usize,
    /// Of those, from one IP address, at most.
    pub half_open_per_ip_max: usize,
    /// A handshake not done after this long fails.
    pub handshake_timeout: Duration,
    /// An association with no traffic either way for this long is removed.
    pub idle_timeout: Duration,
    /// Datagrams queued per peer while its handshake runs, at most.
    pub pending_max: usize,
    /// ClientHellos accepted per second from one IP (and burst).
    pub hello_per_ip_per_s: u32,
    /// ClientHellos accepted per second in total (and burst).
    pub hello_total_per_s: u32,
    /// After a handshake with a peer fails, wait this long before the next.
    pub retry_after_failure: Duration,
    /// Largest datagram the layer writes (record headers included), bytes.
    pub mtu: u32,
}

/// Datagrams queued per peer while its handshake runs, by default. A RUAS that
/// restarts sends its last 64 payloads again and keeps producing new ones while
/// its first handshakes run (on a loaded host, a second or more); a queue no
/// longer than the resend dropped those new payloads at the origin, where no MPS
/// could fill them in. 1024 payloads of at most 1,400 bytes: 1.4 MB per peer
/// being opened, and only towards peers this node chose to send to.
pub const PENDING_MAX_DEFAULT: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            half_open_max: 64,
            half_open_per_ip_max: 4,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            pending_max: PENDING_MAX_DEFAULT,
            hello_per_ip_per_s: 20,
            hello_total_per_s: 2000,
            retry_after_failure: Duration::from_ms(1000),
            mtu: 1400,
        }
    }
}

// ---------------------------------------------------------------------------
// I/O seams
// ---------------------------------------------------------------------------

/// Where the link puts datagrams to send (handshake flights, records, alerts).
pub trait Wire {
    /// Send one datagram to `to`.
    fn transmit(&mut self, to: &SockAddr, bytes: &[u8]);
}

/// The plaintexts one received datagram gave, reused across datagrams.
#[derive(Debug, Default)]
pub struct Opened {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Opened {
    /// Empty, with room for a few records.
    pub fn new() -> Opened {
        Opened {
            data: Vec::with_capacity(4 * PLAINTEXT_MAX),
            ends: Vec::with_capacity(RECORDS_PER_DATAGRAM_MAX),
        }
    }

    /// Forget the plaintexts (keeps the memory).
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Number of plaintexts.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// `true` when none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The plaintexts in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let s = &self.data[start..e];
            start = e;
            s
        })
    }
}

/// The BIO's I/O object: one datagram in, datagrams out (TOOLCHAIN.md: exactly
/// one datagram per read and per write call).
#[derive(Debug, Default)]
struct Datagrams {
    rx: Vec<u8>,
    rx_ready: bool,
    tx: Vec<u8>,
    tx_ends: Vec<usize>,
}

impl Datagrams {
    fn new() -> Datagrams {
        Datagrams {
            rx: Vec::with_capacity(PLAINTEXT_MAX),
            rx_ready: false,
            tx: Vec::with_capacity(2 * PLAINTEXT_MAX),
            tx_ends: Vec::with_capacity(8),
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.rx.clear();
        self.rx.extend_from_slice(bytes);
        self.rx_ready = true;
    }

    fn drain(&mut self, to: &SockAddr, wire: &mut dyn Wire) -> usize {
        let mut start = 0;
        for &e in &self.tx_ends {
            wire.transmit(to, &self.tx[start..e]);
            start = e;
        }
        let n = self.tx_ends.len();
        self.tx.clear();
        self.tx_ends.clear();
        n
    }
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.rx_ready {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.rx_ready = false;
        let n = self.rx.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rx[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx.extend_from_slice(buf);
        self.tx_ends.push(self.tx.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Per-call context for OpenSSL's callbacks
// ---------------------------------------------------------------------------

/// What the verify and cookie callbacks need to know about the call in progress.
/// Set around every handshake call on this thread; callbacks run synchronously
/// inside those calls, so a thread-local is exact.
#[derive(Debug, Default)]
struct Call {
    peer: Option<SocketAddr>,
    now: Instant,
    verdict: Option<Result<usize, PinError>>,
}

thread_local! {
    static CALL: RefCell<Call> = RefCell::new(Call::default());
}

fn with_call<R>(
    peer: SocketAddr,
    now: Instant,
    f: impl FnOnce() -> R,
) -> (R, Option<Result<usize, PinError>>) {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        c.peer = Some(peer);
        c.now = now;
        c.verdict = None;
    });
    let r = f();
    let v = CALL.with(|c| {
        let mut c = c.borrow_mut();
        c.peer = None;
        c.verdict.take()
    });
    (r, v)
}

fn call_peer() -> Option<(SocketAddr, Instant)> {
    CALL.with(|c| {
        let c = c.borrow();
        c.peer.map(|p| (p, c.now))
    })
}

fn verify_peer(pins: &PinSet, ctx: &mut X509StoreContextRef) -> bool {
    // Only the leaf's key matters: trust comes from the pin, not from a chain.
    if ctx.error_depth() != 0 {
        return true;
    }
    let Some((peer, _)) = call_peer() else {
        return false;
    };
    let verdict = match ctx.current_cert().map(Fingerprint::of_cert) {
        Some(Ok(fp)) => pins.check(peer, fp, false),
        _ => Err(PinError::NoKey { peer }),
    };
    let ok = verdict.is_ok();
    CALL.with(|c| c.borrow_mut().verdict = Some(verdict));
    ok
}

fn cookie_for(secret: &[u8; 32], peer: SocketAddr, window: u64) -> [u8; COOKIE_LEN] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(secret);
    h.update(window.to_be_bytes());
    let ip = match peer.ip().to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    h.update(ip);
    h.update(peer.port().to_be_bytes());
    let d = h.finalize();
    let mut c = [0u8; COOKIE_LEN];
    c[0] = window as u8;
    c[1..].copy_from_slice(&d[..COOKIE_LEN - 1]);
    c
}

fn cookie_window(now: Instant) -> u64 {
    now.as_us() / COOKIE_WINDOW.as_us()
}

fn cookie_valid(secret: &[u8; 32], cookie: &[u8]) -> bool {
    let Some((peer, now)) = call_peer() else {
        return false;
    };
    if cookie.len() != COOKIE_LEN {
        return false;
    }
    let w = cookie_window(now);
    [w, w.saturating_sub(1)]
        .iter()
        .any(|&w| w as u8 == cookie[0] && openssl::memcmp::eq(&cookie_for(secret, peer, w), cookie))
}

/// The SSL context of a link: DTLS 1.2, AEAD suites, pinned keys both ways,
/// cookies bound to the peer's address.
fn context(identity: &Identity, pins: Arc<PinSet>) -> Result<SslContext, String> {
    let e = |what: &str, err: openssl::error::ErrorStack| format!("DTLS context: {what}: {err}");
    let secret: [u8; 32] =
        crate::net::random_bytes().map_err(|m| format!("DTLS cookie secret: {m}"))?;
    let mut b = SslContext::builder(SslMethod::dtls()).map_err(|x| e("new", x))?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(|x| e("min version", x))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(|x| e("max version", x))?;
    b.set_cipher_list(CIPHER_LIST)
        .map_err(|x| e("cipher list", x))?;
    b.set_groups_list(GROUPS).map_err(|x| e("groups", x))?;
    b.set_private_key(identity.key())
        .map_err(|x| e("private key", x))?;
    b.set_certificate(identity.cert())
        .map_err(|x| e("certificate", x))?;
    b.check_private_key().map_err(|x| e("key check", x))?;
    b.set_options(
        SslOptions::NO_QUERY_MTU
            | SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_COMPRESSION,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        move |_preverified, ctx| verify_peer(&pins, ctx),
    );
    b.set_cookie_generate_cb(move |_ssl, buf| {
        let Some((peer, now)) = call_peer() else {
            return Err(openssl::error::ErrorStack::get());
        };
        let c = cookie_for(&secret, peer, cookie_window(now));
        let n = c.len().min(buf.len());
        buf[..n].copy_from_slice(&c[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |_ssl, cookie| cookie_valid(&secret, cookie));
    Ok(b.build())
}

// ---------------------------------------------------------------------------
// Associations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// This node sent the ClientHello; handshake running.
    Client,
    /// The peer's ClientHello carried a valid cookie; handshake running.
    Server,
    /// Handshake done: records flow.
    Established,
    /// Removed (failed, closed, expired or replaced).
    Closed,
}

impl Phase {
    fn half_open(self) -> bool {
        matches!(self, Phase::Client | Phase::Server)
    }
}

struct State {
    stream: SslStream<Datagrams>,
    phase: Phase,
    started: Instant,
    last_active: Instant,
    /// The client random of this association's handshake (either side's).
    client_random: [u8; 32],
    /// Datagrams from the role waiting for the handshake.
    pending: VecDeque<Vec<u8>>,
    /// The pin the peer matched.
    pin: Option<usize>,
    /// What the verify callback said last.
    verdict: Option<Result<usize, PinError>>,
    /// OpenSSL's next retransmission.
    retransmit: Option<Instant>,
}

struct Assoc {
    peer: SocketAddr,
    peer_sa: SockAddr,
    state: Mutex<State>,
    /// The next time timers have work for this association, µs.
    deadline_us: AtomicU64,
}

type Table = HashMap<SocketAddr, Arc<Assoc>>;

/// Changes to the table and the half-open accounting, behind one mutex.
#[derive(Debug, Default)]
struct Changes {
    half_open: usize,
    half_open_by_ip: HashMap<IpAddr, usize>,
    /// When this node last started a handshake with, or saw one fail with, a peer.
    attempts: HashMap<SocketAddr, (Instant, bool)>,
}

/// Token buckets for ClientHellos: per IP (hashed into slots) and in total.
#[derive(Debug)]
struct HelloLimiter {
    /// Keyed per process from the OS's randomness, so no one can choose IPs that
    /// share a slot.
    hasher: std::collections::hash_map::RandomState,
    /// Per-slot bucket: the IP holding it, tokens, last refill.
    slots: Vec<(Option<IpAddr>, u64, Instant)>,
    total: (u64, Instant),
    per_ip: u64,
    all: u64,
}

/// Token units per hello (so refills are exact in integer arithmetic).
const TOKEN: u64 = 1_000_000;

impl HelloLimiter {
    fn new(per_ip: u32, all: u32) -> HelloLimiter {
        HelloLimiter {
            hasher: std::collections::hash_map::RandomState::new(),
            slots: vec![(None, 0, Instant::ZERO); HELLO_SLOTS],
            total: (u64::from(all) * TOKEN, Instant::ZERO),
            per_ip: u64::from(per_ip),
            all: u64::from(all),
        }
    }

    fn refill(tokens: u64, last: Instant, now: Instant, rate: u64) -> u64 {
        let add = now.saturating_since(last).as_us().saturating_mul(rate);
        tokens.saturating_add(add).min(rate * TOKEN)
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        use std::hash::BuildHasher;
        let ip = ip.to_canonical();
        let i = (self.hasher.hash_one(ip) as usize) % self.slots.len();
        // An IP taking over a slot starts with a full bucket, so a legitimate
        // peer that happens to share a slot with a flooder is not starved; the
        // random key keeps anyone from choosing IPs that share one.
        let slot = &mut self.slots[i];
        if slot.0 != Some(ip) {
            *slot = (Some(ip), self.per_ip * TOKEN, now);
        }
        let t = HelloLimiter::refill(slot.1, slot.2, now, self.per_ip);
        let total = HelloLimiter::refill(self.total.0, self.total.1, now, self.all);
        slot.2 = now;
        self.total.1 = now;
        if t < TOKEN || total < TOKEN {
            slot.1 = t;
            self.total.0 = total;
            return false;
        }
        slot.1 = t - TOKEN;
        self.total.0 = total - TOKEN;
        true
    }
}

// ---------------------------------------------------------------------------
// The link
// ---------------------------------------------------------------------------

/// The DTLS associations of one socket (or one `SO_REUSEPORT` group).
pub struct Link {
    ctx: SslContext,
    fingerprint: Fingerprint,
    pins: Arc<PinSet>,
    limits: Limits,
    table: ArcSwap<Table>,
    changes: Mutex<Changes>,
    listener: Mutex<Option<SslStream<Datagrams>>>,
    hello: Mutex<HelloLimiter>,
    deadline_us: AtomicU64,
    timers: Mutex<()>,
    loops: AtomicUsize,
    metrics: DtlsMetrics,
    log: RateLog,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dtls::Link({}, {} associations)",
            self.fingerprint,
            self.table.load().len()
        )
    }
}

/// What happened to one datagram given to [`Link::seal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Encrypted and handed to the wire.
    Sent,
    /// Queued until the peer's handshake completes.
    Queued,
    /// Dropped (counted under this reason).
    Dropped(Drop),
}

impl Link {
    /// A link with `identity`, accepting the peers in `pins`. Metrics are
    /// registered as `{prefix}_dtls_*`.
    ///
    /// # Errors
    /// The identity's key kind is unusable here, or OpenSSL failed.
    pub fn new(
        identity: &Identity,
        pins: PinSet,
        limits: Limits,
        registry: &Registry,
        prefix: &str,
    ) -> Result<Arc<Link>, String> {
        identity.check_usable().map_err(|e| e.to_string())?;
        Link::build(identity, pins, limits, registry, prefix)
    }

    fn build(
        identity: &Identity,
        pins: PinSet,
        limits: Limits,
        registry: &Registry,
        prefix: &str,
    ) -> Result<Arc<Link>, String> {
        let pins = Arc::new(pins);
        let ctx = context(identity, pins.clone())?;
        Ok(Arc::new(Link {
            ctx,
            fingerprint: identity.fingerprint(),
            pins,
            limits,
            table: ArcSwap::from_pointee(Table::new()),
            changes: Mutex::new(Changes::default()),
            listener: Mutex::new(None),
            hello: Mutex::new(HelloLimiter::new(
                limits.hello_per_ip_per_s,
                limits.hello_total_per_s,
            )),
            deadline_us: AtomicU64::new(u64::MAX),
            timers: Mutex::new(()),
            loops: AtomicUsize::new(0),
            metrics: DtlsMetrics::register(registry, prefix),
            log: if prefix == PROBE_PREFIX {
                RateLog::silent(prefix)
            } else {
                RateLog::new(prefix)
            },
        }))
    }

    /// This node's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The pins.
    pub fn pins(&self) -> &PinSet {
        &self.pins
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &DtlsMetrics {
        &self.metrics
    }

    /// The last messages the link logged (handshake failures, refusals), oldest
    /// first.
    pub fn recent_events(&self) -> Vec<String> {
        self.log.recent()
    }

    /// Peers with an established association, and the name of the pin each matched.
    pub fn established(&self) -> Vec<(SocketAddr, String)> {
        let t = self.table.load();
        let mut v: Vec<(SocketAddr, String)> = t
            .values()
            .filter_map(|a| {
                let st = a.state.lock();
                (st.phase == Phase::Established).then(|| {
                    (
                        a.peer,
                        st.pin.map_or("?", |i| self.pins.name(i)).to_string(),
                    )
                })
            })
            .collect();
        v.sort();
        v
    }

    /// `true` when an association with `peer` is established.
    pub fn is_established(&self, peer: SocketAddr) -> bool {
        self.table
            .load()
            .get(&peer)
            .is_some_and(|a| a.state.lock().phase == Phase::Established)
    }

    fn new_stream(&self, client: bool) -> Result<SslStream<Datagrams>, String> {
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| format!("SSL_new: {e}"))?;
        ssl.set_mtu(self.limits.mtu)
            .map_err(|e| format!("set_mtu: {e}"))?;
        if client {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        ffi::set_timer_cb(&ssl);
        SslStream::new(ssl, Datagrams::new()).map_err(|e| format!("SSL stream: {e}"))
    }

    // -----------------------------------------------------------------------
    // Receiving
    // -----------------------------------------------------------------------

    /// One datagram from `from`. Plaintexts for the role land in `opened`
    /// (cleared first); handshake messages to send go to `wire`.
    pub fn receive(
        &self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        wire: &mut dyn Wire,
        opened: &mut Opened,
    ) {
        opened.clear();
        // The first byte tells DTLS (content types 20..=23) from plain ivip
        // datagrams (version 1) and other garbage, whatever the length.
        let first = bytes.first().map(|b| ContentType::from_code(*b));
        let rec = match split_record(bytes) {
            Ok((r, _)) => r,
            Err(_) if !matches!(first, Some(Ok(_))) => {
                self.metrics.drop(Drop::PlainUdp);
                self.log.log(now, log::Level::Warn, || {
                    format!(
                        "dropped a datagram from {from} that is not DTLS (plain UDP: is the sender \
                         configured with insecure_plain_udp = true?)"
                    )
                });
                return;
            }
            Err(_) => {
                self.metrics.drop(Drop::Malformed);
                return;
            }
        };
        if rec.content_type == ContentType::Handshake
            && rec.epoch == 0
            && let Ok(ch) = peek_client_hello(bytes)
        {
            return self.client_hello(now, from, bytes, &ch, wire);
        }
        let assoc = self.table.load().get(&from).cloned();
        let Some(a) = assoc else {
            self.metrics.drop(Drop::NoAssociation);
            if rec.epoch >= 1 {
                self.rehandshake(now, from, wire);
            }
            return;
        };
        let mut st = a.state.lock();
        match st.phase {
            Phase::Closed => {
                self.metrics.drop(Drop::NoAssociation);
            }
            Phase::Client | Phase::Server => {
                if rec.content_type == ContentType::ApplicationData {
                    self.metrics.drop(Drop::NotEstablished);
                    return;
                }
                st.stream.get_mut().put(bytes);
                self.drive(&a, &mut st, now, wire);
            }
            Phase::Established => {
                st.stream.get_mut().put(bytes);
                self.open_records(&a, &mut st, now, wire, opened);
                if rec.content_type == ContentType::ApplicationData && opened.is_empty() {
                    self.metrics.drop(Drop::DecryptFailed);
                    self.log.log(now, log::Level::Warn, || {
                        format!("a record from {from} failed decryption: dropped")
                    });
                }
            }
        }
    }

    fn open_records(
        &self,
        a: &Arc<Assoc>,
        st: &mut State,
        now: Instant,
        wire: &mut dyn Wire,
        opened: &mut Opened,
    ) {
        for _ in 0..RECORDS_PER_DATAGRAM_MAX {
            let start = opened.data.len();
            opened.data.resize(start + PLAINTEXT_MAX, 0);
            let r = st.stream.ssl_read(&mut opened.data[start..]);
            match r {
                Ok(n) => {
                    opened.data.truncate(start + n);
                    opened.ends.push(start + n);
                    st.last_active = now;
                }
                Err(e) => {
                    opened.data.truncate(start);
                    match e.code() {
                        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {}
                        ErrorCode::ZERO_RETURN => {
                            self.metrics.closed_by_peer.inc();
                            self.log.log(now, log::Level::Info, || {
                                format!("{} closed its DTLS association", a.peer)
                            });
                            st.stream.get_mut().drain(&a.peer_sa, wire);
                            self.retire(a, st);
                        }
                        _ => {
                            self.log.log(now, log::Level::Warn, || {
                                format!("DTLS association with {} failed: {e}", a.peer)
                            });
                            st.stream.get_mut().drain(&a.peer_sa, wire);
                            self.retire(a, st);
                        }
                    }
                    break;
                }
            }
        }
        st.stream.get_mut().drain(&a.peer_sa, wire);
    }

    fn client_hello(
        &self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        ch: &ClientHelloPeek,
        wire: &mut dyn Wire,
    ) {
        if let Some(a) = self.table.load().get(&from).cloned() {
            let mut st = a.state.lock();
            if st.phase != Phase::Closed && st.client_random == ch.random {
                if st.phase == Phase::Server {
                    // The client repeats its hello: our flight was lost. Each
                    // repeat costs a flight, so repeats share the hello budget.
                    if !self.hello.lock().allow(from.ip(), now) {
                        self.metrics.drop(Drop::HelloRate);
                        return;
                    }
                    st.stream.get_mut().put(bytes);
                    self.drive(&a, &mut st, now, wire);
                } else {
                    self.metrics.drop(Drop::DuplicateHello);
                }
                return;
            }
            if st.phase == Phase::Client && st.client_random > ch.random {
                // Both sides opened at once: the larger client random stays client.
                self.metrics.drop(Drop::SimultaneousOpen);
                return;
            }
            // Our own client attempt with the smaller random, an established
            // association, or a server handshake with another random: the peer
            // opened at the same time, restarted, or gave up on that attempt. Its
            // new association replaces the old only once the cookie proves its
            // address (`insert`, which also carries our attempt's queued
            // datagrams over), so a hello with a forged source cannot abort a
            // handshake of ours.
        }
        if !self.hello.lock().allow(from.ip(), now) {
            self.metrics.drop(Drop::HelloRate);
            self.log.log(now, log::Level::Warn, || {
                format!(
                    "ClientHellos from {} over the rate limit: dropped",
                    from.ip()
                )
            });
            return;
        }
        let mut l = self.listener.lock();
        if l.is_none() {
            match self.new_stream(false) {
                Ok(s) => *l = Some(s),
                Err(e) => {
                    self.log
                        .log(now, log::Level::Error, || format!("DTLS listener: {e}"));
                    return;
                }
            }
        }
        let Some(listener) = l.as_mut() else {
            return;
        };
        listener.get_mut().put(bytes);
        let (res, _) = with_call(from, now, || ffi::listen(listener.ssl()));
        let to = SockAddr::from(from);
        if listener.get_mut().drain(&to, wire) > 0 {
            self.metrics.hello_verify.inc();
        }
        match res {
            ffi::Listen::NoCookie => {}
            ffi::Listen::Failed => {
                self.log.log(now, log::Level::Error, || {
                    format!("DTLSv1_listen failed on a hello from {from}; making a new listener")
                });
                *l = None;
            }
            ffi::Listen::Accepted => {
                let Some(stream) = l.take() else {
                    return;
                };
                drop(l);
                let a = match self.insert(now, from, stream, Phase::Server, ch.random) {
                    Ok(a) => a,
                    Err(why) => {
                        self.metrics.drop(why);
                        self.log.log(now, log::Level::Warn, || {
                            format!(
                                "refused a new DTLS association with {from}: too many half-open"
                            )
                        });
                        return;
                    }
                };
                let mut st = a.state.lock();
                self.drive(&a, &mut st, now, wire);
            }
        }
    }

    /// Records came from `from` for an association this node does not have:
    /// open one, so the peer replaces its stale association.
    fn rehandshake(&self, now: Instant, from: SocketAddr, wire: &mut dyn Wire) {
        if !self.pins.covers(from) {
            return;
        }
        {
            let c = self.changes.lock();
            if let Some((t, _)) = c.attempts.get(&from)
                && now.saturating_since(*t) < self.limits.retry_after_failure
            {
                return;
            }
        }
        if !self.hello.lock().allow(from.ip(), now) {
            return;
        }
        self.metrics.rehandshakes.inc();
        self.log.log(now, log::Level::Info, || {
            format!(
                "records from {from} for an association this node does not hold \
                 (one side restarted): opening a new one"
            )
        });
        let _ = self.open(now, from, None, wire);
    }

    // -----------------------------------------------------------------------
    // Sending
    // -----------------------------------------------------------------------

    /// Encrypt `bytes` for `to` and hand the record to `wire`; or queue it while the handshake runs, starting one when there is
    /// no association yet.
    pub fn seal(&self, now: Instant, to: SocketAddr, bytes: &[u8], wire: &mut dyn Wire) -> Sealed {
        let assoc = self.table.load().get(&to).cloned();
        if let Some(a) = assoc
            && let Some(r) = self.seal_to(&a, now, bytes, wire)
        {
            return r;
        }
        self.open(now, to, Some(bytes), wire)
    }

    /// A sealer holding one snapshot of the table, for many datagrams (a flush).
    pub fn sealer(&self) -> Sealer<'_> {
        Sealer {
            link: self,
            table: self.table.load_full(),
        }
    }

    /// `None` when the association is closed (look again).
    fn seal_to(
        &self,
        a: &Arc<Assoc>,
        now: Instant,
        bytes: &[u8],
        wire: &mut dyn Wire,
    ) -> Option<Sealed> {
        let mut st = a.state.lock();
        match st.phase {
            Phase::Established => Some(self.seal_locked(a, &mut st, now, bytes, wire)),
            Phase::Client | Phase::Server => Some(self.enqueue(&mut st, bytes)),
            Phase::Closed => None,
        }
    }

    #[inline]
    fn seal_locked(
        &self,
        a: &Assoc,
        st: &mut State,
        now: Instant,
        bytes: &[u8],
        wire: &mut dyn Wire,
    ) -> Sealed {
        match st.stream.ssl_write(bytes) {
            Ok(_) => {
                st.last_active = now;
                st.stream.get_mut().drain(&a.peer_sa, wire);
                Sealed::Sent
            }
            Err(_) => {
                st.stream.get_mut().drain(&a.peer_sa, wire);
                self.metrics.drop(Drop::SealFailed);
                Sealed::Dropped(Drop::SealFailed)
            }
        }
    }

    fn enqueue(&self, st: &mut State, bytes: &[u8]) -> Sealed {
        if st.pending.len() >= self.limits.pending_max {
            self.metrics.drop(Drop::QueueFull);
            return Sealed::Dropped(Drop::QueueFull);
        }
        st.pending.push_back(bytes.to_vec());
        Sealed::Queued
    }

    /// Open an association to `to` as client (or find the one another thread just
    /// opened) and queue `bytes`.
    fn open(
        &self,
        now: Instant,
        to: SocketAddr,
        bytes: Option<&[u8]>,
        wire: &mut dyn Wire,
    ) -> Sealed {
        if !self.pins.covers(to) {
            self.metrics.drop(Drop::UnpinnedDestination);
            self.log.log(now, log::Level::Warn, || {
                format!("not sending to {to}: no [[dtls.peer]] covers that address")
            });
            return Sealed::Dropped(Drop::UnpinnedDestination);
        }
        let stream = match self.new_stream(true) {
            Ok(s) => s,
            Err(e) => {
                self.log
                    .log(now, log::Level::Error, || format!("DTLS to {to}: {e}"));
                self.metrics.drop(Drop::SealFailed);
                return Sealed::Dropped(Drop::SealFailed);
            }
        };
        let a = match self.insert(now, to, stream, Phase::Client, [0; 32]) {
            Ok(a) => a,
            Err(Drop::DuplicateHello) => {
                // Another thread opened it meanwhile: use that one.
                let existing = self.table.load().get(&to).cloned();
                return match (existing, bytes) {
                    (Some(a), Some(b)) => self
                        .seal_to(&a, now, b, wire)
                        .unwrap_or(Sealed::Dropped(Drop::NoAssociation)),
                    _ => Sealed::Queued,
                };
            }
            Err(why) => {
                self.metrics.drop(why);
                return Sealed::Dropped(why);
            }
        };
        let mut st = a.state.lock();
        if st.phase == Phase::Client && st.client_random == [0; 32] {
            self.drive(&a, &mut st, now, wire);
            let mut r = [0u8; 32];
            st.stream.ssl().client_random(&mut r);
            st.client_random = r;
        }
        match bytes {
            None => Sealed::Queued,
            Some(b) => match st.phase {
                Phase::Established => self.seal_locked(&a, &mut st, now, b, wire),
                Phase::Client | Phase::Server => self.enqueue(&mut st, b),
                Phase::Closed => {
                    self.metrics.drop(Drop::HandshakeFailed);
                    Sealed::Dropped(Drop::HandshakeFailed)
                }
            },
        }
    }

    /// Put a new association in the table, replacing any other for `peer`.
    /// Refused: `DuplicateHello` when a live client association exists (another
    /// thread's), `HandshakeFailed` after a recent failure, `HalfOpenFull` over the caps.
    fn insert(
        &self,
        now: Instant,
        peer: SocketAddr,
        stream: SslStream<Datagrams>,
        phase: Phase,
        client_random: [u8; 32],
    ) -> Result<Arc<Assoc>, Drop> {
        let ip = peer.ip().to_canonical();
        let replaced;
        let a;
        {
            let mut c = self.changes.lock();
            let table = self.table.load();
            if phase == Phase::Client {
                if table.contains_key(&peer) {
                    return Err(Drop::DuplicateHello);
                }
                if let Some((t, failed)) = c.attempts.get(&peer)
                    && *failed
                    && now.saturating_since(*t) < self.limits.retry_after_failure
                {
                    return Err(Drop::HandshakeFailed);
                }
            }
            let by_ip = c.half_open_by_ip.get(&ip).copied().unwrap_or(0);
            if c.half_open >= self.limits.half_open_max || by_ip >= self.limits.half_open_per_ip_max
            {
                return Err(Drop::HalfOpenFull);
            }
            c.half_open += 1;
            *c.half_open_by_ip.entry(ip).or_insert(0) += 1;
            if phase == Phase::Client {
                c.attempts.insert(peer, (now, false));
                if c.attempts.len() > 4 * self.limits.half_open_max.max(256) {
                    let horizon = self.limits.retry_after_failure;
                    c.attempts
                        .retain(|_, (t, _)| now.saturating_since(*t) < horizon);
                }
            }
            self.metrics.half_open.set(c.half_open as i64);
            a = Arc::new(Assoc {
                peer,
                peer_sa: SockAddr::from(peer),
                state: Mutex::new(State {
                    stream,
                    phase,
                    started: now,
                    last_active: now,
                    client_random,
                    pending: VecDeque::new(),
                    pin: None,
                    verdict: None,
                    retransmit: None,
                }),
                deadline_us: AtomicU64::new(u64::MAX),
            });
            let mut next = Table::clone(&table);
            replaced = next.insert(peer, a.clone());
            self.table.store(Arc::new(next));
        }
        if let Some(old) = replaced {
            // The peer's address-proven association replaces ours; a client
            // attempt of ours that lost the tie (simultaneous open) hands over
            // the datagrams it queued.
            let carried = {
                let mut st = old.state.lock();
                let carried = if st.phase == Phase::Client && phase == Phase::Server {
                    self.metrics.drop(Drop::SimultaneousOpen);
                    std::mem::take(&mut st.pending)
                } else {
                    VecDeque::new()
                };
                self.retire(&old, &mut st);
                carried
            };
            if !carried.is_empty() {
                a.state.lock().pending.extend(carried);
            }
        }
        Ok(a)
    }

    /// Mark `a` closed, fix the counters, and take it out of the table if it is
    /// still there. Called with `a`'s lock held (`st`).
    fn retire(&self, a: &Arc<Assoc>, st: &mut State) {
        let was = st.phase;
        if was == Phase::Closed {
            return;
        }
        st.phase = Phase::Closed;
        st.pending.clear();
        a.deadline_us.store(u64::MAX, Ordering::Relaxed);
        let mut c = self.changes.lock();
        if was.half_open() {
            c.half_open = c.half_open.saturating_sub(1);
            let ip = a.peer.ip().to_canonical();
            if let Some(n) = c.half_open_by_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.half_open_by_ip.remove(&ip);
                }
            }
            self.metrics.half_open.set(c.half_open as i64);
        } else if was == Phase::Established {
            self.metrics.associations.add(-1);
        }
        let table = self.table.load();
        if table.get(&a.peer).is_some_and(|x| Arc::ptr_eq(x, a)) {
            let mut next = Table::clone(&table);
            next.remove(&a.peer);
            self.table.store(Arc::new(next));
        }
    }

    // -----------------------------------------------------------------------
    // Handshakes
    // -----------------------------------------------------------------------

    /// Run the handshake as far as the datagrams in hand allow.
    fn drive(&self, a: &Arc<Assoc>, st: &mut State, now: Instant, wire: &mut dyn Wire) {
        let (r, verdict) = with_call(a.peer, now, || st.stream.do_handshake());
        if verdict.is_some() {
            st.verdict = verdict;
        }
        st.stream.get_mut().drain(&a.peer_sa, wire);
        match r {
            Ok(()) => self.completed(a, st, now, wire),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                st.retransmit = ffi::timeout(st.stream.ssl()).map(|d| now + Duration::from(d));
                self.arm(a, st);
            }
            Err(e) => self.failed(a, st, now, Some(&e)),
        }
    }

    fn completed(&self, a: &Arc<Assoc>, st: &mut State, now: Instant, wire: &mut dyn Wire) {
        let pin = match &st.verdict {
            Some(Ok(i)) => Some(*i),
            _ => None,
        };
        let Some(pin) = pin else {
            // Cannot happen: OpenSSL requires the peer's certificate, and the
            // verify callback records a verdict whenever it sees one. Refuse rather
            // than trust an unchecked peer.
            return self.failed(a, st, now, None);
        };
        {
            let mut c = self.changes.lock();
            c.half_open = c.half_open.saturating_sub(1);
            let ip = a.peer.ip().to_canonical();
            if let Some(n) = c.half_open_by_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.half_open_by_ip.remove(&ip);
                }
            }
            c.attempts.remove(&a.peer);
            self.metrics.half_open.set(c.half_open as i64);
        }
        st.phase = Phase::Established;
        st.pin = Some(pin);
        st.last_active = now;
        st.retransmit = None;
        self.metrics.associations.add(1);
        self.metrics.outcome(Outcome::Completed);
        let cipher = st
            .stream
            .ssl()
            .current_cipher()
            .map_or("?", |c| c.name())
            .to_string();
        self.log.log(now, log::Level::Info, || {
            format!(
                "DTLS association with {} ({}) established, {cipher}",
                a.peer,
                self.pins.name(pin)
            )
        });
        let pending = std::mem::take(&mut st.pending);
        for p in &pending {
            self.seal_locked(a, st, now, p, wire);
        }
        self.arm(a, st);
    }

    fn failed(
        &self,
        a: &Arc<Assoc>,
        st: &mut State,
        now: Instant,
        err: Option<&openssl::ssl::Error>,
    ) {
        let (outcome, msg) = self.classify(a.peer, st.verdict.as_ref(), err);
        self.metrics.outcome(outcome);
        let lost = st.pending.len() as u64;
        if lost > 0 {
            self.metrics
                .dropped
                .at(Drop::HandshakeFailed as usize)
                .add(lost);
        }
        self.log.log(now, log::Level::Warn, || msg);
        {
            let mut c = self.changes.lock();
            c.attempts.insert(a.peer, (now, true));
        }
        self.retire(a, st);
    }

    fn classify(
        &self,
        peer: SocketAddr,
        verdict: Option<&Result<usize, PinError>>,
        err: Option<&openssl::ssl::Error>,
    ) -> (Outcome, String) {
        if let Some(Err(pe)) = verdict {
            let o = if matches!(pe, PinError::WrongAddress { .. }) {
                Outcome::FailedWrongAddress
            } else {
                Outcome::FailedUnpinnedKey
            };
            return (o, format!("DTLS handshake with {peer} failed: {pe}"));
        }
        let Some(e) = err else {
            return (
                Outcome::FailedTimeout,
                format!(
                    "DTLS handshake with {peer} failed: no answer within {} (is the peer up, \
                     and does it pin this node's key {} for this address?)",
                    self.limits.handshake_timeout, self.fingerprint
                ),
            );
        };
        let reasons: Vec<String> = e
            .ssl_error()
            .map(|s| {
                s.errors()
                    .iter()
                    .filter_map(|x| x.reason().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let alert = reasons.iter().find(|r| r.contains("alert")).cloned();
        match alert {
            Some(al) => (
                Outcome::FailedRefusedByPeer,
                format!(
                    "DTLS handshake with {peer} failed: the peer refused it ({al}); does the peer \
                     pin this node's key {} for this address?",
                    self.fingerprint
                ),
            ),
            None => (
                Outcome::FailedProtocol,
                format!(
                    "DTLS handshake with {peer} failed: {}",
                    if reasons.is_empty() {
                        e.to_string()
                    } else {
                        reasons.join("; ")
                    }
                ),
            ),
        }
    }

    // -----------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------

    fn arm(&self, a: &Assoc, st: &State) {
        let d = match st.phase {
            Phase::Client | Phase::Server => {
                let limit = st.started + self.limits.handshake_timeout;
                st.retransmit.map_or(limit, |r| r.min(limit))
            }
            Phase::Established => st.last_active + self.limits.idle_timeout,
            Phase::Closed => Instant(u64::MAX),
        };
        a.deadline_us.store(d.as_us(), Ordering::Relaxed);
        self.deadline_us.fetch_min(d.as_us(), Ordering::Relaxed);
    }

    /// The next time [`Link::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.deadline_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Instant(us)),
        }
    }

    /// Retransmit flights, fail handshakes past their timeout, expire idle
    /// associations. Early calls are harmless; with several loops on one link,
    /// one of them does the work.
    pub fn handle_timeout(&self, now: Instant, wire: &mut dyn Wire) {
        if now.as_us() < self.deadline_us.load(Ordering::Relaxed) {
            return;
        }
        let Some(_g) = self.timers.try_lock() else {
            return;
        };
        self.deadline_us.store(u64::MAX, Ordering::Relaxed);
        let mut next = (now + HOUSEKEEPING).as_us();
        let table = self.table.load_full();
        for a in table.values() {
            let d = a.deadline_us.load(Ordering::Relaxed);
            if d > now.as_us() {
                next = next.min(d);
                continue;
            }
            let mut st = a.state.lock();
            match st.phase {
                Phase::Client | Phase::Server => {
                    if now >= st.started + self.limits.handshake_timeout {
                        self.failed(a, &mut st, now, None);
                    } else {
                        let (alive, _) =
                            with_call(a.peer, now, || ffi::handle_timeout(st.stream.ssl()));
                        st.stream.get_mut().drain(&a.peer_sa, wire);
                        if alive {
                            st.retransmit =
                                ffi::timeout(st.stream.ssl()).map(|d| now + Duration::from(d));
                            self.arm(a, &st);
                        } else {
                            self.failed(a, &mut st, now, None);
                        }
                    }
                }
                Phase::Established => {
                    if now >= st.last_active + self.limits.idle_timeout {
                        self.metrics.expired.inc();
                        self.log.log(now, log::Level::Info, || {
                            format!(
                                "DTLS association with {} idle for {}: removed",
                                a.peer, self.limits.idle_timeout
                            )
                        });
                        self.retire(a, &mut st);
                    } else {
                        self.arm(a, &st);
                    }
                }
                Phase::Closed => {}
            }
            next = next.min(a.deadline_us.load(Ordering::Relaxed));
        }
        self.deadline_us.fetch_min(next, Ordering::Relaxed);
    }

    // -----------------------------------------------------------------------
    // Loops and shutdown
    // -----------------------------------------------------------------------

    /// A loop starts using this link.
    pub fn loop_started(&self) {
        self.loops.fetch_add(1, Ordering::SeqCst);
    }

    /// A loop stops gracefully; the last one to stop closes every association
    /// (close_notify), so peers drop theirs at once instead of waiting.
    pub fn loop_stopped(&self, now: Instant, wire: &mut dyn Wire) {
        if self.loops.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.close_all(now, wire);
        }
    }

    /// Send close_notify on every established association and forget them all.
    pub fn close_all(&self, now: Instant, wire: &mut dyn Wire) {
        let table = self.table.load_full();
        for a in table.values() {
            let mut st = a.state.lock();
            if st.phase == Phase::Established {
                let _ = st.stream.shutdown();
                st.stream.get_mut().drain(&a.peer_sa, wire);
            }
            self.retire(a, &mut st);
        }
        let _ = now;
    }
}

/// Seals many datagrams against one snapshot of the table (see [`Link::sealer`]).
pub struct Sealer<'l> {
    link: &'l Link,
    table: Arc<Table>,
}

impl std::fmt::Debug for Sealer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} associations)", self.table.len())
    }
}

impl Sealer<'_> {
    /// As [`Link::seal`].
    #[inline]
    pub fn seal(&self, now: Instant, to: SocketAddr, bytes: &[u8], wire: &mut dyn Wire) -> Sealed {
        if let Some(a) = self.table.get(&to)
            && let Some(r) = self.link.seal_to(a, now, bytes, wire)
        {
            return r;
        }
        self.link.seal(now, to, bytes, wire)
    }
}

// ---------------------------------------------------------------------------
// In-memory handshakes (probe and tests)
// ---------------------------------------------------------------------------

/// The metrics prefix of probe links (their log is silent).
const PROBE_PREFIX: &str = "ivip_dtls_probe";

/// Datagrams collected in memory, for handshakes without sockets.
#[derive(Debug, Default)]
pub struct MemWire {
    /// `(to, bytes)` in order.
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
}

impl Wire for MemWire {
    fn transmit(&mut self, to: &SockAddr, bytes: &[u8]) {
        if let Some(a) = to.to_std() {
            self.sent.push((a, bytes.to_vec()));
        }
    }
}

/// `true` when two links with keys of `kind` complete a handshake in memory.
///
/// # Errors
/// A message when an identity or link could not even be made.
pub fn probe_handshake(kind: KeyKind) -> Result<bool, String> {
    let ia = Identity::generate(kind, "probe a").map_err(|e| e.to_string())?;
    let ib = Identity::generate(kind, "probe b").map_err(|e| e.to_string())?;
    let (pa, pb): (SocketAddr, SocketAddr) = (
        SocketAddr::from(([127, 0, 0, 1], 1)),
        SocketAddr::from(([127, 0, 0, 1], 2)),
    );
    let pin = |name: &str, id: &Identity| Pin {
        name: name.into(),
        fingerprint: id.fingerprint(),
        addresses: vec![],
    };
    let reg = Registry::new();
    let mk = |id: &Identity, other: Pin| {
        Link::build(
            id,
            PinSet::new(vec![other]),
            Limits::default(),
            &reg,
            PROBE_PREFIX,
        )
    };
    let a = mk(&ia, pin("b", &ib))?;
    let b = mk(&ib, pin("a", &ia))?;
    Ok(pump(&a, pa, &b, pb, b"probe", 20))
}

/// Send `msg` from `a` (at `pa`) to `b` (at `pb`) in memory, exchanging datagrams
/// for at most `rounds`; `true` when `b` opened exactly `msg`.
pub fn pump(a: &Link, pa: SocketAddr, b: &Link, pb: SocketAddr, msg: &[u8], rounds: usize) -> bool {
    let now = Instant(1_000_000);
    let mut wa = MemWire::default();
    a.seal(now, pb, msg, &mut wa);
    let mut opened = Opened::new();
    for _ in 0..rounds {
        let mut wb = MemWire::default();
        for (_, d) in wa.sent.drain(..) {
            b.receive(now, pa, &d, &mut wb, &mut opened);
            if opened.iter().any(|p| p == msg) {
                return true;
            }
        }
        for (_, d) in wb.sent.drain(..) {
            a.receive(now, pb, &d, &mut wa, &mut opened);
        }
        if wa.sent.is_empty() {
            return false;
        }
    }
    false
}
