//! `cargo bench --bench qsd`: how fast one QSD query worker answers (issue 6).
//!
//! Figures (one JSON line each):
//! * `queries_per_s` — map requests answered per second by one worker holding
//!   `micronets` IPv4 micronets, the load generator on the other core keeping a
//!   window of requests in flight with batched sends and receives.
//! * `query_latency_p50_us`, `query_latency_p99_us` — round trip at a moderate rate.
//! * `raw_udp_echo_per_s` — the same loop and batching answering with a plain echo:
//!   the machine's limit for one request and one reply. Measured in the same run.
//! * `payloads_verified_per_s` — Ed25519 payload signatures checked per second,
//!   in batches of `batch` (1 = one by one).
//!
//! `IVIP_BENCH_QUICK=1`: 10^6 micronets and short phases. Inputs are seeded.

#[path = "common/mod.rs"]
mod common;
use common::{figure, quick};

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ivip::metrics::Registry;
use ivip::net::event_loop::Stop;
use ivip::net::udp::{RecvBatch, SendBatch, SockAddr, SocketOptions};
use ivip::net::{DatagramCore, FaultInjector, LoopConfig, LoopMetrics, Outbox, UdpLoop};
use ivip::qsd::query::{QueryCore, QueryMetrics, QueryShared};
use ivip::rng::Rng;
use ivip::sign::{Ed25519Verifier, KeyPair, Verifier};
use ivip::table::{Database, Micronet, Table};
use ivip::time::SystemClock;
use ivip_wire::query::{MapRequest, QueryMessage};
use ivip_wire::{Etr, Mab};

/// A /4 MAB (2^28 addresses) tiled with `n` micronets of 16 addresses each, one
/// unassigned address between each (so gaps exist too), random ETRs.
fn database(n: u64) -> (Database, Mab) {
    let mab: Mab = "32.0.0.0/4".parse().unwrap();
    let mut rng = Rng::seeded(7);
    let nets = (0..n).map(move |i| Micronet {
        start: 0x2000_0000 + i * 17,
        len: 16,
        etr: Etr::V4(std::net::Ipv4Addr::from(
            0xc000_0000 | (rng.next_u64() as u32 & 0x00ff_ffff) | 1,
        )),
    });
    let t = Table::from_micronets(mab, 1, nets).expect("valid micronets");
    let mut db = Database::new();
    db.insert(t).unwrap();
    (db, mab)
}

/// Echo every datagram back (the raw baseline through the same loop).
struct Echo;

impl DatagramCore for Echo {
    fn handle_datagram(
        &mut self,
        _now: ivip::time::Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Outbox,
    ) {
        let _ = out.push_to(from, bytes);
    }
    fn handle_timeout(&mut self, _now: ivip::time::Instant, _out: &mut Outbox) {}
    fn poll_timeout(&self) -> Option<ivip::time::Instant> {
        None
    }
}

fn serve<C: DatagramCore + Send + 'static>(
    core: C,
) -> (SocketAddr, Stop, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Stop::new(ivip::daemon::Shutdown::new());
    let lp = UdpLoop::new(
        sock,
        LoopConfig::default(),
        FaultInjector::none(),
        LoopMetrics::detached(),
        SystemClock::new(),
    )
    .unwrap();
    let st = stop.clone();
    let t = std::thread::spawn(move || {
        let mut core = core;
        let _ = lp.run(&mut core, &st);
    });
    (addr, stop, t)
}

/// Requests with random addresses in the MAB (seeded).
fn requests(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::seeded(seed);
    (0..n)
        .map(|i| {
            let a = 0x2000_0000u32 | (rng.next_u64() as u32 & 0x0fff_ffff);
            QueryMessage::Request(MapRequest {
                nonce: i as u64,
                addr: IpAddr::V4(a.into()),
            })
            .to_vec()
            .unwrap()
        })
        .collect()
}

/// Keep `window` requests in flight for `secs`; returns answers per second.
fn throughput(server: SocketAddr, reqs: &[Vec<u8>], window: usize, secs: f64) -> f64 {
    let sock = ivip::net::udp::bind(
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions {
            reuse_port: false,
            recv_buffer_bytes: Some(4 << 20),
            send_buffer_bytes: Some(4 << 20),
        },
    )
    .unwrap();
    let to = SockAddr::from(server);
    let mut send = SendBatch::new(256, FaultInjector::none());
    let mut recv = RecvBatch::new(256);
    let mut inflight = 0usize;
    let mut got = 0u64;
    let mut next = 0usize;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        let room = window.saturating_sub(inflight).min(256);
        if room > 0 {
            send.batch(&sock, |p| {
                for _ in 0..room {
                    p.push(&to, &reqs[next % reqs.len()]);
                    next += 1;
                }
            });
            inflight += room;
        }
        match recv.recv(&sock) {
            Ok(n) if n > 0 => {
                got += n as u64;
                inflight = inflight.saturating_sub(n);
                last_progress = Instant::now();
            }
            _ => {
                // Replies lost to a full queue never come: re-open the window.
                if last_progress.elapsed() > Duration::from_millis(20) {
                    inflight = 0;
                    last_progress = Instant::now();
                }
            }
        }
    }
    got as f64 / t0.elapsed().as_secs_f64()
}

/// Round trips at `rate` per second, one at a time.
fn latency(server: SocketAddr, reqs: &[Vec<u8>], rate: f64, count: usize) -> Vec<f64> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut buf = [0u8; 1500];
    let mut lat = Vec::with_capacity(count);
    let t0 = Instant::now();
    for (i, r) in reqs.iter().take(count).enumerate() {
        if let Some(w) = (t0 + gap * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let t = Instant::now();
        sock.send_to(r, server).unwrap();
        if sock.recv_from(&mut buf).is_ok() {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn verify_rate() {
    let k = KeyPair::from_seed(&[1; 32]);
    let msgs: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| [i.to_be_bytes().as_slice(), &[7u8; 600]].concat())
        .collect();
    let sigs: Vec<[u8; 64]> = msgs.iter().map(|m| k.sign(m)).collect();
    let pk = k.public();
    let v = Ed25519Verifier;
    let rounds = if quick() { 2 } else { 8 };
    for batch in [1usize, 16, 64] {
        let t0 = Instant::now();
        let mut n = 0u64;
        for _ in 0..rounds {
            for chunk in msgs.iter().zip(&sigs).collect::<Vec<_>>().chunks(batch) {
                if batch == 1 {
                    let (m, s) = chunk[0];
                    assert!(v.verify(&pk, m, s).is_ok());
                } else {
                    let items: Vec<(&[u8; 32], &[u8], &[u8; 64])> =
                        chunk.iter().map(|(m, s)| (&pk, m.as_slice(), *s)).collect();
                    assert!(v.verify_batch(&items).is_ok());
                }
                n += chunk.len() as u64;
            }
        }
        figure(
            "payloads_verified_per_s",
            n as f64 / t0.elapsed().as_secs_f64(),
            "payloads/s",
            &[("batch", batch.to_string())],
        );
    }
}

fn main() {
    let n: u64 = if quick() { 1_000_000 } else { 10_000_000 };
    let secs = if quick() { 1.5 } else { 5.0 };
    let reqs = requests(1 << 16, 11);

    // The machine's limit: the same loop answering with an echo.
    let (echo, stop, t) = serve(Echo);
    let raw = throughput(echo, &reqs, 512, secs);
    stop.stop();
    let _ = t.join();
    figure(
        "raw_udp_echo_per_s",
        raw,
        "datagrams/s",
        &[("window", "512".into())],
    );

    let t_build = Instant::now();
    let (db, mab) = database(n);
    eprintln!(
        "built {n} micronets in {:.1}s",
        t_build.elapsed().as_secs_f64()
    );
    let (tx, rx) = crossbeam_channel::bounded(1 << 20);
    // Drain the notifier channel as the feed loop would.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    let core = QueryCore::new(QueryShared {
        reader: db.reader(),
        known: Arc::new(ArcSwap::from_pointee(vec![mab])),
        notifier: tx,
        cache_time: ivip::time::Duration::from_secs(600),
        negative_cache_time: ivip::time::Duration::from_secs(60),
        clients: vec![],
        metrics: QueryMetrics::register(&Registry::new()),
    });
    let (qsd, stop, t) = serve(core);
    let qps = throughput(qsd, &reqs, 512, secs);
    let params = [("micronets", n.to_string()), ("workers", "1".into())];
    figure("queries_per_s", qps, "queries/s", &params);
    figure("queries_vs_raw_echo", qps / raw, "ratio", &params);
    let lat = latency(qsd, &reqs, 5000.0, if quick() { 2000 } else { 10_000 });
    if !lat.is_empty() {
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        let lp = [
            ("micronets", n.to_string()),
            ("rate_per_s", "5000".into()),
            ("samples", lat.len().to_string()),
        ];
        figure("query_latency_p50_us", pct(0.5), "us", &lp);
        figure("query_latency_p99_us", pct(0.99), "us", &lp);
    }
    stop.stop();
    let _ = t.join();
    drop(db);
    verify_rate();
}
