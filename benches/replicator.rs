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
//!
//! Targets (issue 5): p99 added latency < 200 µs; fan-out ≥ 50 % of raw sendmmsg.
//! `IVIP_BENCH_QUICK=1` runs short windows and few samples. Inputs are fixed (a
//! seeded-free, constant payload; sequence numbers counted up).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
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
         [downstream]\ncapacity = 1000\nallow = [\"127.0.0.0/8\"]\n\
         [dedupe]\nwindow = 65536\n"
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

/// Raw sendmmsg to `k` subscribed sinks, then the copies per second the
/// replicator's single worker sends to them. The generator is paced at 1.5 times
/// the input the raw rate could fan out, so the worker's input never runs dry
/// while the generator takes little CPU from it (two cores, shared).
fn fanout(m: &Mode, k: usize, port: u16) -> (f64, f64) {
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
    let inputs_per_s = 1.5 * raw / k as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let generator = std::thread::spawn(move || {
        let sock = bind(
            SocketAddr::new(ruas_ip.parse().unwrap(), 0),
            &SocketOptions::default(),
        )
        .unwrap();
        let to = SockAddr::from(up);
        let batch = 16usize;
        let gap = Duration::from_secs_f64(batch as f64 / inputs_per_s);
        let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| payload()).collect();
        let mut sb = SendBatch::new(batch, FaultInjector::none());
        let mut seq = 1u32;
        let t0 = Instant::now();
        let limit = t0 + Duration::from_secs(60);
        let mut n = 0u32;
        while !st.load(Ordering::Relaxed) && Instant::now() < limit {
            for b in bufs.iter_mut() {
                set_seq(b, seq);
                seq = seq.wrapping_add(1);
            }
            sb.batch(&sock, |p| {
                for b in &bufs {
                    p.push(&to, b);
                }
            });
            n += 1;
            let next = t0 + gap * n;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    });
    // Warm up, then measure the worker's sends over the window.
    std::thread::sleep(m.window / 4);
    let (c0, t0) = (sent_total(&r), Instant::now());
    std::thread::sleep(m.window);
    let (c1, t1) = (sent_total(&r), Instant::now());
    stop.store(true, Ordering::SeqCst);
    generator.join().unwrap();
    drop(sinks);
    r.stop().unwrap();
    ((c1 - c0) / (t1 - t0).as_secs_f64(), raw)
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

    for (k, port) in [(20usize, 45220u16), (100, 45221)] {
        let (rate, raw) = fanout(&m, k, port);
        let p = [("fanout", k.to_string()), ("payload_bytes", bytes.clone())];
        figure("fanout_copies_per_s", rate, "copies/s", &p);
        figure(
            "raw_sendmmsg_per_s",
            raw,
            "packets/s",
            &[("dests", k.to_string()), ("payload_bytes", bytes.clone())],
        );
        figure("fanout_vs_raw", rate / raw, "ratio", &p);
    }
}
