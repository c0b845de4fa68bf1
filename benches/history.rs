//! `cargo bench --bench history`: how fast the recorder records, how fast it
//! answers, and how much disk a change costs (issue 10; spec: history.md).
//!
//! Figures, one JSON object per line:
//! - `changes_recorded_per_s`: command sets recorded per second by the recorder
//!   daemon (`ivip::history::driver`, in process) fed over loopback UDP on two
//!   feeds: payload check and Ed25519 verification (feed loop), the cursor, the
//!   table engine applying each set, encoding, append, and `fdatasync` before
//!   progress is acknowledged (recording thread). The sender keeps at most 1500
//!   payloads ahead of what is durably recorded, so nothing is lost; the clock
//!   stops when the last payload is durable. Target ≥ 100,000/s (300 times the
//!   seed's 320/s average, s1.2 and s7). The feeds here are plain UDP
//!   (`insecure_plain_udp`): this measures recording; the DTLS layer's cost is
//!   measured by `cargo bench --bench replicator` (`fanout_copies_per_s_dtls`).
//! - `store_changes_per_s` (with `stored_changes`): the same, for the store alone,
//!   while the large stores below are generated (append and group commit).
//! - `search_latency_p50_us`, `search_latency_p99_us` (with `stored_changes`):
//!   "every mapping this address had in this window", for random addresses and
//!   windows (up to one day of stream time) over a store of that many changes,
//!   after its index files merged as a running recorder's do. Each line also
//!   gives `cpu_us`, the same percentile of the searching thread's CPU time (the
//!   machine is shared: wall time includes what the scheduler takes), and the
//!   index blocks and frames read per search. Target p99 < 10 ms at 10^8.
//! - `bytes_per_change` (with `stored_changes`): all files of the store (segments
//!   with the signed payloads, index files) divided by the changes held.
//!
//! Inputs are seeded: [`Workload`] over eight /10 MABs with about a million
//! micronets each, one to four units long, changes mostly new ETRs with splits,
//! joins, defines and deletes, packed 30 sets to a payload, the stream timed at
//! the seed's worst-case average rate (320 changes/s), so 10^8 changes are 3.6
//! days of stream. The large stores are written straight through the storage
//! API (not the ingest path) and deleted afterwards. `IVIP_BENCH_QUICK=1` uses
//! 10^5 and 10^6 changes and fewer queries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use std::net::UdpSocket;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ivip::daemon::Shutdown;
use ivip::history::config::HistoryConfig;
use ivip::history::ingest::table_from;
use ivip::history::query;
use ivip::history::workload::Workload;
use ivip::history::{Store, StoreConfig};
use ivip::http::HttpServer;
use ivip::http::server::{Request, Response, ServerConfig};
use ivip::rng::Rng;
use ivip::sign::KeyPair;
use ivip_wire::control::Control;
use ivip_wire::history::HistoryRecord;
use ivip_wire::snapshot::StreamPosition;
use ivip_wire::{Mab, RuasId};

const T0: u64 = 1_764_000_000_000_000;
/// Sets per payload: as many one-command sets as fit 1200 bytes.
const SETS_PER_PAYLOAD: usize = 30;
/// Stream time per payload at 320 changes/s.
const STEP_US: u64 = SETS_PER_PAYLOAD as u64 * 1_000_000 / 320;

mod common;

use common::{figure, quick};

/// CPU time of the calling thread, seconds: a search's own work, apart from
/// the time the shared machine's scheduler takes from it.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts)
    };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-bench-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn disk_bytes(d: &Path) -> u64 {
    let mut n = 0;
    for sub in ["segments", "index"] {
        if let Ok(rd) = std::fs::read_dir(d.join(sub)) {
            for e in rd.flatten() {
                n += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    n
}

fn mabs(count: u32, plen: u8) -> Vec<Mab> {
    (0..count)
        .map(|i| {
            Mab::new(
                ivip_wire::Family::V4,
                u64::from(0x0A00_0000 + (i << (32 - plen))),
                plen,
            )
            .unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// changes_recorded_per_s: the recorder daemon, over loopback UDP
// ---------------------------------------------------------------------------

/// A stand-in upstream replicator: accepts subscriptions, then sends what it is
/// given to every subscriber.
struct Upstream {
    sock: Arc<UdpSocket>,
    subs: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Upstream {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        sock.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let subs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, l, st) = (sock.clone(), subs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                match Control::parse(&buf[..n]) {
                    Ok(Control::Subscribe {
                        nonce, cookie: 0, ..
                    }) => {
                        let _ =
                            s.send_to(&Control::Challenge { nonce, cookie: 9 }.to_bytes(), from);
                    }
                    Ok(Control::Subscribe { nonce, .. }) => {
                        let a = Control::Accept {
                            nonce,
                            keepalive_ms: 300,
                            expiry_ms: 5000,
                        };
                        let _ = s.send_to(&a.to_bytes(), from);
                        let mut v = l.lock().unwrap();
                        if !v.contains(&from) {
                            v.push(from);
                        }
                    }
                    _ => {}
                }
            }
        });
        Upstream { sock, subs, stop }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, b: &[u8]) {
        for a in self.subs.lock().unwrap().iter() {
            let _ = self.sock.send_to(b, a);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn ingest_rate(changes: usize) {
    let key = KeyPair::from_seed(&[0x33; 32]);
    let ruas = RuasId::new(5).unwrap();
    let ms = mabs(2, 14);
    let mut w = Workload::new(1, &ms, 50_000, 4, T0, STEP_US);
    // The RUAS's snapshots of the initial layouts, served as a RUAS does.
    let mut nets: std::collections::BTreeMap<Mab, Vec<_>> = Default::default();
    for b in w.baselines(T0) {
        if let HistoryRecord::Baseline(b) = b {
            nets.entry(b.mab)
                .or_default()
                .extend_from_slice(&b.micronets);
        }
    }
    let snaps: Arc<Vec<(Mab, String, Vec<u8>)>> = Arc::new(
        nets.into_iter()
            .map(|(mab, n)| {
                let mut t = table_from(mab, 0, &n).unwrap();
                t.publish();
                let b = t.reader().load_owned().write_snapshot_with(
                    &key,
                    ruas,
                    T0,
                    &StreamPosition { epoch: 1, seq: 1 }.to_record(),
                );
                let name = ivip_wire::snapshot::Snapshot::new_checked(&b)
                    .unwrap()
                    .meta()
                    .name()
                    .to_string();
                (mab, name, b)
            })
            .collect(),
    );
    let files = snaps.clone();
    let handler: ivip::http::server::Handler =
        Arc::new(move |r: &Request| match r.segments().as_slice() {
            ["v1", "snapshots"] => {
                let list: Vec<String> = files
                    .iter()
                    .map(|(m, n, _)| format!("{{\"name\":\"{n}\",\"mab\":\"{m}\"}}"))
                    .collect();
                Response::new(
                    200,
                    "application/json",
                    format!("[{}]", list.join(",")).into_bytes(),
                )
            }
            ["v1", "snapshots", "latest"] => {
                let want = r.query_param("mab").unwrap_or("");
                match files.iter().find(|(m, _, _)| m.to_string() == want) {
                    Some((_, n, b)) => Response::new(200, "application/octet-stream", b.clone())
                        .with_header("Ivip-Snapshot-Name", n),
                    None => Response::not_found("no such MAB"),
                }
            }
            _ => Response::not_found("no such resource"),
        });
    let server = HttpServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        "bench-snapshots",
        ServerConfig::default(),
        Shutdown::new(),
        handler,
    )
    .unwrap();
    // Signed payloads.
    let mut payloads = Vec::new();
    let mut total = 0usize;
    while total < changes {
        let (rec, ch) = w.next_payload(SETS_PER_PAYLOAD);
        let HistoryRecord::Payload(p) = rec else {
            unreachable!()
        };
        let mut b = p.payload;
        let n = b.len() - 64;
        let sig = key.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        total += ch.len();
        payloads.push(b);
    }
    let d = dir("ingest");
    let (u1, u2) = (Upstream::start(), Upstream::start());
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\ndir = {:?}\n\
         [[ruas]]\nid = 5\npublic_key = \"{}\"\nsnapshots = \"http://{}\"\n\
         [[feed]]\naddress = \"{}\"\n[[feed]]\naddress = \"{}\"\n\
         [socket]\nrecv_buffer_bytes = 16777216\nsend_buffer_bytes = 4194304\n\
         [dtls]\ninsecure_plain_udp = true\n",
        d.display(),
        ivip_wire::hex::encode(&key.public()),
        server.local_addr(),
        u1.addr(),
        u2.addr()
    );
    let p = Path::new("bench-history.toml");
    let settings = ivip::config::parse::<HistoryConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap();
    let rec = ivip::history::driver::start(&settings, Shutdown::new()).unwrap();
    let recorded = |rec: &ivip::history::driver::Recorder| -> u64 {
        rec.status()
            .ruas
            .first()
            .map_or(0, |r| u64::from(r.next_seq).saturating_sub(1))
    };
    let deadline = StdInstant::now() + std::time::Duration::from_secs(30);
    while (u1.subs.lock().unwrap().is_empty()
        || u2.subs.lock().unwrap().is_empty()
        || rec.status().mabs.iter().any(|(_, s)| s.is_none())
        || rec.status().mabs.len() < 2)
        && StdInstant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Send with flow control (at most LAG payloads ahead of what is durably
    // recorded, well inside the socket buffer), on both feeds.
    const LAG: u64 = 1500;
    let started = StdInstant::now();
    for (i, p) in payloads.iter().enumerate() {
        while i as u64 > recorded(&rec) + LAG {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        u1.send(p);
        u2.send(p);
    }
    let want = payloads.len() as u64;
    let deadline = StdInstant::now() + std::time::Duration::from_secs(120);
    while recorded(&rec) < want && StdInstant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(recorded(&rec), want, "every payload was recorded");
    let m = rec.registry().render();
    let sets =
        ivip::metrics::sample(&m, "ivip_history_sets_total{outcome=\"applied\"}").unwrap_or(0.0);
    let gaps =
        ivip::metrics::sample(&m, "ivip_history_gaps_total{kind=\"payloads\"}").unwrap_or(0.0);
    assert_eq!(sets as usize, total, "every set applied");
    let commits = rec.reader().status().commits;
    figure(
        "changes_recorded_per_s",
        total as f64 / secs,
        "changes/s",
        &[
            ("changes", total.to_string()),
            ("payloads", payloads.len().to_string()),
            ("sets_per_payload", format!("{:.1}", total as f64 / payloads.len() as f64)),
            ("fdatasyncs", commits.to_string()),
            ("gaps", gaps.to_string()),
            ("path", "\"recorder daemon over loopback UDP, two feeds: check, Ed25519 verify, table apply, encode, append, fdatasync before progress is acknowledged\"".into()),
            ("target", "100000".into()),
        ],
    );
    rec.stop().unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------
// Large stores: bytes per change, search latency
// ---------------------------------------------------------------------------

fn scale(changes: u64, micronets_per_mab: u64, queries: usize) {
    let ms = mabs(8, 10);
    let mut w = Workload::new(2, &ms, micronets_per_mab, 4, T0, STEP_US);
    let d = dir(&format!("scale-{changes}"));
    let (mut store, _) = Store::open(
        &d,
        StoreConfig {
            verify_on_open: false,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    for b in w.baselines(T0) {
        store.append(&b).unwrap();
    }
    // The baseline (the initial layout, from the RUAS's snapshot) in a segment
    // of its own, so its size is known apart from the changes'.
    store.seal().unwrap();
    let baseline_bytes = disk_bytes(&d);
    let started = StdInstant::now();
    let mut total = 0u64;
    let mut n = 0u64;
    while total < changes {
        let (rec, ch) = w.next_payload(SETS_PER_PAYLOAD);
        total += ch.len() as u64;
        store.append(&rec).unwrap();
        n += 1;
        if n.is_multiple_of(256) {
            store.commit().unwrap();
        }
    }
    store.commit().unwrap();
    let gen_s = started.elapsed().as_secs_f64();
    // Seal the last segment too, so every index entry is on disk and counted,
    // and let the index files merge as a running recorder's would.
    store.seal().unwrap();
    store.merge_now().unwrap();
    let t1 = w.now_us();
    let bytes = disk_bytes(&d);
    let segments = store.reader().status().segments;
    let index_files = store.reader().view(|_, runs| runs.len()).0;
    figure(
        "store_changes_per_s",
        total as f64 / gen_s,
        "changes/s",
        &[
            ("stored_changes", total.to_string()),
            (
                "path",
                "\"store only: workload generation, encode, append, fdatasync per 256 payloads\""
                    .into(),
            ),
        ],
    );
    figure(
        "bytes_per_change",
        (bytes - baseline_bytes) as f64 / total as f64,
        "bytes",
        &[
            ("stored_changes", total.to_string()),
            ("disk_bytes", bytes.to_string()),
            ("baseline_bytes", baseline_bytes.to_string()),
            ("segments", segments.to_string()),
            ("index_files", index_files.to_string()),
            ("micronets", w.micronet_count().to_string()),
            (
                "counts",
                "\"segments and index files, signed payloads included, baseline excluded\"".into(),
            ),
        ],
    );
    // Searches.
    let r = store.reader();
    let mut rng = Rng::seeded(3);
    let mut lat: Vec<f64> = Vec::with_capacity(queries);
    let mut cpu: Vec<f64> = Vec::with_capacity(queries);
    let mut reads: Vec<(u64, u64)> = Vec::with_capacity(queries);
    let mut mappings = 0usize;
    let day = 86_400_000_000u64;
    for _ in 0..queries {
        let mab = ms[rng.below(ms.len() as u64) as usize];
        let unit = mab.start() + rng.below(mab.len());
        let from = T0 + rng.below(t1 - T0);
        let to = from + rng.below(day);
        let (b0, f0) = io();
        let t = StdInstant::now();
        let c = thread_cpu_s();
        let h =
            query::address_history(&r, IpAddr::V4(Ipv4Addr::from(unit as u32)), from, to).unwrap();
        cpu.push((thread_cpu_s() - c) * 1e6);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        let (b1, f1) = io();
        reads.push((b1 - b0, f1 - f0));
        mappings += h.mappings.len();
    }
    lat.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let cpu_pct = |p: f64| cpu[((cpu.len() as f64 * p) as usize).min(cpu.len() - 1)];
    let mut blocks: Vec<u64> = reads.iter().map(|r| r.0).collect();
    let mut frames: Vec<u64> = reads.iter().map(|r| r.1).collect();
    blocks.sort_unstable();
    frames.sort_unstable();
    let p99 = |v: &[u64]| v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)];
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let params = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("stored_changes", total.to_string()),
            ("queries", queries.to_string()),
            (
                "mappings_per_answer",
                format!("{:.2}", mappings as f64 / queries as f64),
            ),
            ("window", "\"random start, up to one day\"".to_string()),
            ("index_blocks_mean", format!("{:.2}", mean(&blocks))),
            ("index_blocks_p99", p99(&blocks).to_string()),
            ("frames_read_mean", format!("{:.2}", mean(&frames))),
            ("frames_read_p99", p99(&frames).to_string()),
            ("load_avg", load_avg()),
        ];
        v.extend_from_slice(extra);
        v
    };
    figure(
        "search_latency_p50_us",
        pct(0.5),
        "us",
        &params(&[("cpu_us", format!("{:.1}", cpu_pct(0.5)))]),
    );
    figure(
        "search_latency_p99_us",
        pct(0.99),
        "us",
        &params(&[
            ("max_us", format!("{:.1}", lat[lat.len() - 1])),
            ("cpu_us", format!("{:.1}", cpu_pct(0.99))),
            ("target_us", "10000".into()),
        ]),
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&d);
}

fn io() -> (u64, u64) {
    (
        ivip::history::index::BLOCKS_READ.load(std::sync::atomic::Ordering::Relaxed),
        ivip::history::store::FRAMES_READ.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// The 1-minute load average, to read latencies on a shared machine by.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "null".into())
}

fn main() {
    let q = quick();
    if std::env::var_os("IVIP_BENCH_ONLY_INGEST").is_some() {
        ingest_rate(200_000);
        return;
    }
    if let Some(n) = std::env::var_os("IVIP_BENCH_ONLY_SCALE") {
        let n: u64 = n.to_string_lossy().parse().unwrap_or(1_000_000);
        scale(n, 1_000_000, 2_000);
        return;
    }
    ingest_rate(if q { 20_000 } else { 1_000_000 });
    if q {
        scale(100_000, 20_000, 500);
        scale(1_000_000, 100_000, 500);
    } else {
        scale(10_000_000, 1_000_000, 10_000);
        scale(100_000_000, 1_000_000, 10_000);
    }
}
