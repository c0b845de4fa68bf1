//! `cargo bench --bench replicator`: how fast one replicator core copies payloads,
//! and how much latency a hop adds, on loopback (issue 5).
//!
//! Figures, one JSON object per line:
//! - `hop_latency_p50_us`, `hop_latency_p99_us`: added one-way latency of one
//!   replicator hop (fan-out 1): each sample is (send → replicator → receive)
//!   minus the median direct loopback send → receive, measured in the same run
//!   (also printed: `loopback_direct_p50_us`, `loopback_direct_p99_us`).
//! - `fanout_copies_per_s` (with `fanout` 20 and 100): payload copies the
//!   replicator's single worker sends per second while a generator on another
//!   thread keeps its input queue full of fresh payloads (paced at 1.5 times
//!   what the raw rate could fan out, so it takes little CPU from the worker).
//! - `raw_sendmmsg_per_s` (with `dests` 20 and 100): the baseline, measured in the
//!   same run to the same destination sockets: one thread sending the same bytes
//!   with the same `sendmmsg` batch code and nothing else.
//! - `fanout_vs_raw`: the ratio (target ≥ 0.5).
//! - `fanout_copies_per_s_dtls` (with `fanout` 20 and 100): the same with DTLS on
//!   every link (issue 9): the generator is a pinned DTLS client, the sinks are
//!   DTLS-subscribed clients that stop reading, and the replicator seals one
//!   record per copy. Same pacing (from the plain run's raw rate), same window.
//! - `fanout_dtls_vs_plain`: the ratio at the same fan-out (target ≥ 0.7).
//!
//! Targets: p99 added latency < 200 µs; fan-out ≥ 50 % of raw sendmmsg (issue
//! 5); DTLS fan-out ≥ 70 % of plain at the same fan-out (issue 9).
//! `IVIP_BENCH_QUICK=1` runs short windows and few samples. Inputs are fixed (a
//! seeded-free, constant payload; sequence numbers counted up).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
use ivip::dtls::identity::{KeyKind, write_new_identity};
use ivip::dtls::{AddrPattern, BlockingSocket, Identity, Limits, Link, Pin, PinSet};
use ivip::metrics::Registry;
use ivip::net::udp::{SendBatch, SocketOptions, bind};
use ivip::net::{FaultInjector, SockAddr};
use ivip::replicator::{Replicator, ReplicatorConfig};
use ivip_wire::control::{Control, Role};
use ivip_wire::payload::{PayloadRepr, Record};
use ivip_wire::{Command, Etr, Mab, PayloadId, RuasId, Seq};

struct Mode {
    quick: bool,
    window: Duration,
    latency_samples: usize,
}

fn mode() -> Mode {
    let quick = std::env::var_os("IVIP_BENCH_QUICK").is_some_and(|v| v != "0");
    Mode {
        quick,
        window: if quick {
            Duration::from_millis(400)
        } else {
            Duration::from_secs(3)
        },
        latency_samples: if quick { 300 } else { 5000 },
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn figure(name: &str, value: f64, unit: &str, params: &[(&str, String)]) {
    let mut s = format!("{{\"figure\": \"{name}\", \"value\": {value:.3}, \"unit\": \"{unit}\"");
    for (k, v) in params {
        s.push_str(&format!(", \"{k}\": {v}"));
    }
    s.push_str(&format!(", \"cpus\": {}}}", cpus()));
    println!("{s}");
}

/// A realistic payload: one IPv4 MAB update with 30 set-ETR commands.
fn payload() -> Vec<u8> {
    let mab: Mab = "20.0.0.0/14".parse().unwrap();
    let commands = (0..30u64)
        .map(|i| Command::SetEtr {
            start: 0x1400_0000 + i * 4,
            len: 4,
            etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, (i + 1) as u8)),
        })
        .collect();
    PayloadRepr {
        id: PayloadId {
            ruas: RuasId::new(3).unwrap(),
            epoch: 1,
            seq: Seq(1),
        },
        timestamp_us: 1_764_000_000_000_000,
        records: vec![Record::MabUpdate {
            mab,
            mab_seq: 1,
            commands,
        }],
        signature: [0x5a; 64],
    }
    .to_vec()
    .unwrap()
}

fn set_seq(p: &mut [u8], seq: u32) {
    p[8..12].copy_from_slice(&seq.to_be_bytes());
}

fn replicator(listen: &str, ruas_ip: &str) -> Replicator {
    let text = format!(
        "listen = {listen:?}\nworkers = 1\nruas_sources = [{ruas_ip:?}]\n\
         [downstream]\ncapacity = 1000\nallow = [\"127.0.0.0/8\"]\nexpiry_ms = 60000\n\
         [dedupe]\nwindow = 65536\n[dtls]\ninsecure_plain_udp = true\n"
    );
    let p = Path::new("bench.toml");
    let s = ivip::config::parse::<ReplicatorConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap();
    ivip::replicator::start(&s, Shutdown::new()).unwrap()
}

/// Subscribe `sock` to `up` (challenge and accept); returns the cookie.
fn subscribe(sock: &UdpSocket, up: SocketAddr, nonce: u64) -> u64 {
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sub = |cookie| {
        Control::Subscribe {
            role: Role::Replicator,
            nonce,
            cookie,
        }
        .to_bytes()
    };
    sock.send_to(&sub(0), up).unwrap();
    let mut buf = [0u8; 2048];
    let mut cookie = 0;
    for _ in 0..100 {
        let (n, _) = sock.recv_from(&mut buf).expect("no answer to subscribe");
        match Control::parse(&buf[..n]) {
            Ok(Control::Challenge { cookie: c, .. }) => {
                cookie = c;
                sock.send_to(&sub(c), up).unwrap();
            }
            Ok(Control::Accept { .. }) => return cookie,
            _ => {}
        }
    }
    panic!("subscription did not complete");
}

/// K subscribed sockets that never read payloads (their queues fill and the
/// kernel drops, the same for the fan-out run and the raw baseline), kept alive
/// by a thread.
struct Sinks {
    addrs: Vec<SockAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sinks {
    fn new(k: usize, up: SocketAddr) -> Sinks {
        let socks: Vec<(UdpSocket, u64)> = (0..k)
            .map(|i| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                let c = subscribe(&s, up, i as u64 + 1);
                (s, c)
            })
            .collect();
        let addrs = socks
            .iter()
            .map(|(s, _)| SockAddr::from(s.local_addr().unwrap()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for (i, (s, cookie)) in socks.iter().enumerate() {
                    let c = Control::Subscribe {
                        role: Role::Replicator,
                        nonce: i as u64 + 1,
                        cookie: *cookie,
                    };
                    let _ = s.send_to(&c.to_bytes(), up);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Sinks {
            addrs,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sent_total(r: &Replicator) -> f64 {
    ivip::metrics::sample(
        &r.registry().render(),
        "ivip_replicator_datagrams_sent_total",
    )
    .unwrap_or(0.0)
}

/// One thread, the same batch code, the same bytes, the same destinations.
fn raw_sendmmsg(m: &Mode, dests: &[SockAddr]) -> f64 {
    let sock = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
    let p = payload();
    let mut sb = SendBatch::new(256, FaultInjector::none());
    let mut sent = 0u64;
    let t0 = Instant::now();
    let end = t0 + m.window;
    while Instant::now() < end {
        let r = sb.batch(&sock, |push| {
            for _ in 0..4 {
                for d in dests {
                    push.push(d, &p);
                }
            }
        });
        sent += r.sent;
    }
    sent as f64 / t0.elapsed().as_secs_f64()
}

/// A payload generator on its own thread, paced at `inputs_per_s` while active
/// (pacing restarts at each activation), idle otherwise.
struct Generator {
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Generator {
    /// `make` runs on the generator's thread and returns its send function (the
    /// send path's batches are not `Send`).
    fn spawn<F: FnMut(&[Vec<u8>])>(
        inputs_per_s: f64,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> Generator {
        let active = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (on, st) = (active.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut send = make();
            let batch = 16usize;
            let gap = Duration::from_secs_f64(batch as f64 / inputs_per_s);
            let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| payload()).collect();
            let mut seq = 1u32;
            let limit = Instant::now() + Duration::from_secs(600);
            while !st.load(Ordering::Relaxed) && Instant::now() < limit {
                if !on.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let t0 = Instant::now();
                let mut n = 0u32;
                while on.load(Ordering::Relaxed) && !st.load(Ordering::Relaxed) {
                    for b in bufs.iter_mut() {
                        set_seq(b, seq);
                        seq = seq.wrapping_add(1);
                    }
                    send(&bufs);
                    n += 1;
                    let next = t0 + gap * n;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            }
        });
        Generator {
            active,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, on: bool) {
        self.active.store(on, Ordering::SeqCst);
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies per second the replicator's worker sends while `g` feeds it: warm up,
/// then count over the window.
fn measure(m: &Mode, r: &Replicator, g: &Generator) -> f64 {
    g.set(true);
    std::thread::sleep(m.window / 4);
    let (c0, t0) = (sent_total(r), Instant::now());
    std::thread::sleep(m.window);
    let (c1, t1) = (sent_total(r), Instant::now());
    g.set(false);
    std::thread::sleep(Duration::from_millis(20));
    (c1 - c0) / (t1 - t0).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A plain replicator with `k` subscribed sinks and its generator; returns it
/// with the raw sendmmsg rate to the same sinks (measured first, alone). The
/// generator is paced at 1.5 times the input the raw rate could fan out, so the
/// worker's input never runs dry while the generator takes little CPU from it
/// (two cores, shared).
fn plain_setup(m: &Mode, k: usize, port: u16) -> (Replicator, Sinks, Generator, f64) {
    let ruas_ip = "127.21.0.100";
    let r = replicator(&format!("127.21.0.1:{port}"), ruas_ip);
    let up = r.local_addr();
    let sinks = Sinks::new(k, up);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.downstream_count() < k {
        assert!(Instant::now() < deadline, "subscribers did not all join");
        std::thread::sleep(Duration::from_millis(5));
    }
    let raw = raw_sendmmsg(m, &sinks.addrs);
    let sock = bind(
        SocketAddr::new(ruas_ip.parse().unwrap(), 0),
        &SocketOptions::default(),
    )
    .unwrap();
    let to = SockAddr::from(up);
    let g = Generator::spawn(1.5 * raw / k as f64, move || {
        let mut sb = SendBatch::new(16, FaultInjector::none());
        move |bufs: &[Vec<u8>]| {
            sb.batch(&sock, |p| {
                for b in bufs {
                    p.push(&to, b);
                }
            });
        }
    });
    (r, sinks, g, raw)
}

// ---------------------------------------------------------------------------
// DTLS
// ---------------------------------------------------------------------------

struct Ids {
    dir: std::path::PathBuf,
    replicator: (std::path::PathBuf, std::path::PathBuf, Identity),
    ruas: Identity,
    sink: Identity,
}

fn ids() -> Ids {
    let dir = std::env::temp_dir().join(format!("ivip-bench-dtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (k, c) = (dir.join("r.key"), dir.join("r.crt"));
    let r = write_new_identity(&k, &c, KeyKind::P256, "replicator").unwrap();
    Ids {
        replicator: (k, c, r),
        ruas: Identity::generate(KeyKind::P256, "ruas").unwrap(),
        sink: Identity::generate(KeyKind::P256, "sink").unwrap(),
        dir,
    }
}

fn replicator_dtls(listen: &str, ruas_ip: &str, ids: &Ids) -> Replicator {
    let text = format!(
        "listen = {listen:?}\nworkers = 1\nruas_sources = [{ruas_ip:?}]\n\
         [downstream]\ncapacity = 1000\nallow = [\"127.0.0.0/8\"]\nexpiry_ms = 60000\n\
         [dedupe]\nwindow = 65536\n\
         [dtls]\nkey_file = {:?}\ncert_file = {:?}\n\
         hello_per_ip_per_s = 10000\nhalf_open_per_ip_max = 256\nhalf_open_max = 256\n\
         [[dtls.peer]]\nname = \"ruas\"\nfingerprint = \"{}\"\naddress = [{ruas_ip:?}]\n\
         [[dtls.peer]]\nname = \"sinks\"\nfingerprint = \"{}\"\naddress = [\"127.0.0.0/8\"]\n",
        ids.replicator.0,
        ids.replicator.1,
        ids.ruas.fingerprint(),
        ids.sink.fingerprint()
    );
    let p = Path::new("bench-dtls.toml");
    let s = ivip::config::parse::<ReplicatorConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap();
    ivip::replicator::start(&s, Shutdown::new()).unwrap()
}

fn client(id: &Identity, up: &Identity) -> Arc<Link> {
    let pins = PinSet::new(vec![Pin {
        name: "replicator".into(),
        fingerprint: up.fingerprint(),
        addresses: vec!["127.0.0.0/8".parse::<AddrPattern>().unwrap()],
    }]);
    Link::new(id, pins, Limits::default(), &Registry::new(), "bench").unwrap()
}

/// Subscribe over DTLS (handshake, challenge, accept); returns the cookie.
fn subscribe_dtls(sock: &mut BlockingSocket, up: SocketAddr, nonce: u64) -> u64 {
    let sub = |cookie| {
        Control::Subscribe {
            role: Role::Replicator,
            nonce,
            cookie,
        }
        .to_bytes()
    };
    sock.send_to(&sub(0), up);
    let mut cookie = 0;
    for _ in 0..100 {
        let (_, b) = sock
            .recv(Duration::from_secs(2))
            .expect("no answer to subscribe");
        match Control::parse(&b) {
            Ok(Control::Challenge { cookie: c, .. }) => {
                cookie = c;
                sock.send_to(&sub(c), up);
            }
            Ok(Control::Accept { .. }) => return cookie,
            _ => {}
        }
    }
    panic!("subscription did not complete");
}

/// K DTLS-subscribed sockets that never read payloads, kept alive by a thread
/// that seals their keepalives.
struct DtlsSinks {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DtlsSinks {
    fn new(k: usize, up: SocketAddr, ids: &Ids) -> DtlsSinks {
        let mut socks: Vec<(BlockingSocket, u64)> = (0..k)
            .map(|i| {
                let mut s = BlockingSocket::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    client(&ids.sink, &ids.replicator.2),
                )
                .unwrap();
                let c = subscribe_dtls(&mut s, up, i as u64 + 1);
                (s, c)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for (i, (s, cookie)) in socks.iter_mut().enumerate() {
                    let c = Control::Subscribe {
                        role: Role::Replicator,
                        nonce: i as u64 + 1,
                        cookie: *cookie,
                    };
                    s.send_to(&c.to_bytes(), up);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        DtlsSinks {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DtlsSinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records the link hands over, sent in one sendmmsg by the generator.
#[derive(Default)]
struct Collect(Vec<(SockAddr, Vec<u8>)>);

impl ivip::dtls::Wire for Collect {
    fn transmit(&mut self, to: &SockAddr, bytes: &[u8]) {
        self.0.push((*to, bytes.to_vec()));
    }
}

/// A DTLS replicator with `k` DTLS-subscribed sinks and a DTLS generator (a
/// pinned client whose association is open before the clock starts), paced as
/// the plain one.
fn dtls_setup(
    k: usize,
    port: u16,
    inputs_per_s: f64,
    ids: &Ids,
) -> (Replicator, DtlsSinks, Generator) {
    let ruas_ip = "127.21.0.110";
    let r = replicator_dtls(&format!("127.21.0.3:{port}"), ruas_ip, ids);
    let up = r.local_addr();
    let sinks = DtlsSinks::new(k, up, ids);
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.downstream_count() < k {
        assert!(Instant::now() < deadline, "subscribers did not all join");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut gen_sock = BlockingSocket::bind(
        SocketAddr::new(ruas_ip.parse().unwrap(), 0),
        client(&ids.ruas, &ids.replicator.2),
    )
    .unwrap();
    let mut first = payload();
    set_seq(&mut first, 0);
    gen_sock.send_to(&first, up);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gen_sock.link().is_established(up) {
        assert!(Instant::now() < deadline, "the generator's handshake");
        let _ = gen_sock.recv(Duration::from_millis(10));
    }
    let clock = ivip::time::SystemClock::new();
    let g = Generator::spawn(inputs_per_s, move || {
        let mut sb = SendBatch::new(16, FaultInjector::none());
        let mut recs = Collect::default();
        move |bufs: &[Vec<u8>]| {
            let now = clock.now();
            for b in bufs {
                gen_sock.link().seal(now, up, b, &mut recs);
            }
            sb.batch(gen_sock.socket(), |p| {
                for (to, r) in &recs.0 {
                    p.push(to, r);
                }
            });
            recs.0.clear();
        }
    });
    (r, sinks, g)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Added latency of one hop, fan-out 1.
fn hop_latency(m: &Mode) -> (Vec<f64>, Vec<f64>) {
    let ruas_ip = "127.21.0.101";
    let r = replicator("127.21.0.2:45210", ruas_ip);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cookie = subscribe(&rx, r.local_addr(), 1);
    let tx = UdpSocket::bind((ruas_ip, 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let mut p = payload();
    let mut buf = [0u8; 2048];
    let mut seq = 100u32;
    // One sample: send, then block until that payload arrives (skipping control
    // datagrams). `via` picks the replicator or the receiver directly.
    let mut sample = |via: SocketAddr, p: &mut Vec<u8>| -> Option<f64> {
        seq += 1;
        set_seq(p, seq);
        let t0 = Instant::now();
        tx.send_to(p, via).ok()?;
        for _ in 0..10 {
            let (n, _) = rx.recv_from(&mut buf).ok()?;
            if n == p.len() && buf[8..12] == seq.to_be_bytes() {
                return Some(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
        None
    };
    let warm = m.latency_samples / 10;
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for i in 0..(m.latency_samples + warm) {
        // Interleave, so both see the same machine state.
        let d = sample(rx_addr, &mut p);
        let t = sample(r.local_addr(), &mut p);
        if i >= warm {
            direct.extend(d);
            through.extend(t);
        }
        if i % 200 == 0 {
            // Keep the subscription alive.
            let c = Control::Subscribe {
                role: Role::Replicator,
                nonce: 1,
                cookie,
            };
            let _ = rx.send_to(&c.to_bytes(), r.local_addr());
        }
    }
    r.stop().unwrap();
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    (direct, through)
}

fn main() {
    let m = mode();
    let bytes = payload().len().to_string();
    eprintln!(
        "replicator bench ({} mode), {} CPUs, payload {bytes} bytes",
        if m.quick { "quick" } else { "full" },
        cpus()
    );

    let (direct, through) = hop_latency(&m);
    let base = percentile(&direct, 0.5);
    let mut added: Vec<f64> = through.iter().map(|t| t - base).collect();
    added.sort_by(f64::total_cmp);
    let samples = added.len().to_string();
    let params = [("payload_bytes", bytes.clone()), ("samples", samples)];
    figure("hop_latency_p50_us", percentile(&added, 0.5), "us", &params);
    figure(
        "hop_latency_p99_us",
        percentile(&added, 0.99),
        "us",
        &params,
    );
    figure(
        "loopback_direct_p50_us",
        percentile(&direct, 0.5),
        "us",
        &params,
    );
    figure(
        "loopback_direct_p99_us",
        percentile(&direct, 0.99),
        "us",
        &params,
    );

    // Plain and DTLS fan-out are measured in alternating windows of the same
    // run (median of `rounds` each), so both see the same machine state.
    let ids = ids();
    let rounds = if m.quick { 1 } else { 3 };
    for (k, port) in [(20usize, 45220u16), (100, 45221)] {
        let (rp, sinks, gp, raw) = plain_setup(&m, k, port);
        let (rd, dsinks, gd) = dtls_setup(k, port + 10, 1.5 * raw / k as f64, &ids);
        let (mut plain, mut dtls) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain.push(measure(&m, &rp, &gp));
            dtls.push(measure(&m, &rd, &gd));
        }
        drop((gp, gd, sinks, dsinks));
        rp.stop().unwrap();
        rd.stop().unwrap();
        let (rate, dtls) = (median(plain), median(dtls));
        let p = [("fanout", k.to_string()), ("payload_bytes", bytes.clone())];
        figure("fanout_copies_per_s", rate, "copies/s", &p);
        figure(
            "raw_sendmmsg_per_s",
            raw,
            "packets/s",
            &[("dests", k.to_string()), ("payload_bytes", bytes.clone())],
        );
        figure("fanout_vs_raw", rate / raw, "ratio", &p);
        figure("fanout_copies_per_s_dtls", dtls, "copies/s", &p);
        figure("fanout_dtls_vs_plain", dtls / rate, "ratio", &p);
    }
    let _ = std::fs::remove_dir_all(&ids.dir);
}
