//! `cargo bench --bench table`: how fast the mapping engine answers, how much memory
//! it takes, how fast it applies sets, and how long snapshots take — with the
//! baselines the issue names measured in the same run: a `BTreeMap` holding the same
//! micronets, and the machine's own rate of independent random 8-byte reads over an
//! array as large as the table (the physical limit: a look-up in a table this size
//! needs at least one DRAM access).
//!
//! One JSON object per line: `{"figure": NAME, "value": N, "unit": U, ...}`.
//! `IVIP_BENCH_QUICK=1` runs small sizes for a smoke test.
//!
//! Inputs are seeded: micronets of 1–4 units, one in eight followed by an unassigned
//! gap of 1–4 units, ETRs drawn from 65,536 addresses (one in sixteen zero). Look-up
//! addresses are uniform over the populated part of the MAB.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ivip::sign::{Ed25519Verifier, KeyPair};
use ivip::table::{Mapping, Micronet, Table};
use ivip_wire::{Command, Etr, Family, Mab, RuasId};

// ---------------------------------------------------------------------------
// Output and inputs
// ---------------------------------------------------------------------------

fn emit(figure: &str, value: f64, unit: &str, params: &[(&str, serde_json::Value)]) {
    let mut m = serde_json::Map::new();
    m.insert("figure".into(), figure.into());
    m.insert(
        "value".into(),
        serde_json::json!((value * 1000.0).round() / 1000.0),
    );
    m.insert("unit".into(), unit.into());
    for (k, v) in params {
        m.insert((*k).into(), v.clone());
    }
    println!("{}", serde_json::Value::Object(m));
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Wall time and this thread's CPU time since it was made. On a shared machine the
/// two differ; every figure gives wall time as its value and CPU time as a key.
struct Timer {
    wall: Instant,
    cpu: f64,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu_s(),
        }
    }
    fn wall_s(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }
    fn cpu_s(&self) -> f64 {
        thread_cpu_s() - self.cpu
    }
    fn elapsed(&self) -> Duration {
        self.wall.elapsed()
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn etr(f: Family, rng: &mut Rng) -> Etr {
    let k = rng.next();
    if k.is_multiple_of(16) {
        return Etr::zero(f);
    }
    let i = (k >> 8) as u16;
    match f {
        Family::V4 => Etr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8 | 1)),
        Family::V6 => Etr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xe7, i, 0, 0, 0, 1)),
    }
}

/// `n` seeded micronets from `start`; every 64th is also kept as a sample.
struct Gen {
    f: Family,
    rng: Rng,
    at: u64,
    left: u64,
    sample: Vec<Micronet>,
}

impl Iterator for Gen {
    type Item = Micronet;
    fn next(&mut self) -> Option<Micronet> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = 1 + self.rng.below(4);
        let m = Micronet {
            start: self.at,
            len,
            etr: etr(self.f, &mut self.rng),
        };
        self.at += len;
        if self.rng.next().is_multiple_of(8) {
            self.at += 1 + self.rng.below(4);
        }
        if self.left.is_multiple_of(64) {
            self.sample.push(m);
        }
        Some(m)
    }
}

/// A MAB large enough for `n` generated micronets (about 2.9 units each).
fn mab_for(f: Family, n: u64) -> Mab {
    let need = (n as f64 * 2.9) as u64 + 64;
    let host_bits = 64 - (need - 1).leading_zeros() as u8;
    match f {
        Family::V4 => Mab::new(f, 0x2000_0000, 32 - host_bits.max(1)).expect("aligned"),
        Family::V6 => Mab::new(f, 0x2001_0db8_0000_0000, 32).expect("aligned"),
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

// ---------------------------------------------------------------------------
// The physical limit: independent random reads over a big array
// ---------------------------------------------------------------------------

/// Random 8-byte reads, 32 in flight (prefetch all, then read all), over `bytes`
/// of anonymous memory, with or without transparent huge pages.
fn random_reads(bytes: usize, huge: bool, dur: Duration) -> (f64, f64) {
    let words = (bytes / 8).max(1 << 20);
    let len = words * 8;
    // SAFETY: an anonymous private mapping of `len` bytes, used only as a [u64].
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap {len} bytes");
    if huge {
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    }
    // SAFETY: the mapping holds `words` u64s and nothing else refers to it.
    let a = unsafe { std::slice::from_raw_parts_mut(p.cast::<u64>(), words) };
    for (i, w) in a.iter_mut().enumerate() {
        *w = i as u64;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut acc = 0u64;
    let mut n = 0u64;
    let t = Timer::start();
    while t.elapsed() < dur {
        for _ in 0..1024 {
            const G: usize = 32;
            let mut idx = [0usize; G];
            for i in idx.iter_mut() {
                *i = rng.below(words as u64) as usize;
                prefetch(&a[*i]);
            }
            for i in idx {
                acc = acc.wrapping_add(a[i]);
            }
            n += G as u64;
        }
    }
    let rate = (n as f64 / t.wall_s(), n as f64 / t.cpu_s());
    black_box(acc);
    // SAFETY: unmapping the mapping made above; `a` is not used after.
    unsafe { libc::munmap(p, len) };
    rate
}

fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint does not dereference.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
}

// ---------------------------------------------------------------------------
// One size
// ---------------------------------------------------------------------------

struct Cfg {
    dur: Duration,
    sets: u64,
}

fn bench_size(f: Family, n: u64, cfg: &Cfg, snapshot: bool) {
    let fam = match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    let mab = mab_for(f, n);
    let mut g = Gen {
        f,
        rng: Rng(0x5eed ^ n),
        at: mab.start(),
        left: n,
        sample: Vec::with_capacity((n / 64 + 1) as usize),
    };
    // Build, and measure what the table takes.
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let table = Table::from_micronets(mab, 0, &mut g).expect("generated micronets are valid");
    let build_s = t0.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss0);
    let sample = std::mem::take(&mut g.sample);
    run_size(
        f, fam, n, mab, table, g.at, build_s, rss, sample, cfg, snapshot,
    );
}

/// Single look-ups per second in a `BTreeMap` from start to (length, ETR) holding the
/// table's micronets; also its bytes per micronet and build time.
fn btree_baseline<K: Ord + Copy, V: Copy>(
    table: &Table,
    n: u64,
    units: &[u64],
    dur: Duration,
    key: impl Fn(u64) -> K,
    val: impl Fn(&Micronet) -> V,
    end: impl Fn(K, V) -> u64,
) -> (f64, f64, f64, f64) {
    let mab = table.mab();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let bt: BTreeMap<K, V> = table
        .range(mab.start(), mab.len())
        .filter_map(|m| match m {
            Mapping::Micronet(m) => Some((key(m.start), val(&m))),
            _ => None,
        })
        .collect();
    let build = t0.elapsed().as_secs_f64();
    let bytes = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    let mask = units.len() - 1;
    let mut acc = 0u64;
    let mut i = 0usize;
    let t = Timer::start();
    while t.elapsed() < dur {
        for _ in 0..4096 {
            let u = units[i & mask];
            if let Some((&s, &v)) = bt.range(..=key(u)).next_back()
                && u < end(s, v)
            {
                acc = acc.wrapping_add(1);
            }
            i += 1;
        }
    }
    black_box(acc);
    let (rate, cpu_rate) = (i as f64 / t.wall_s(), i as f64 / t.cpu_s());
    drop(bt);
    (rate, cpu_rate, bytes, build)
}

#[allow(clippy::too_many_arguments)]
fn run_size(
    f: Family,
    fam: &str,
    n: u64,
    mab: Mab,
    mut table: Table,
    end: u64,
    build_s: f64,
    rss: u64,
    sample: Vec<Micronet>,
    cfg: &Cfg,
    snapshot: bool,
) {
    let p =
        |extra: &[(&'static str, serde_json::Value)]| -> Vec<(&'static str, serde_json::Value)> {
            let mut v = vec![("micronets", n.into()), ("family", fam.into())];
            v.extend_from_slice(extra);
            v
        };
    emit("table_build_s", build_s, "s", &p(&[]));
    // Node memory counted block by block (leaves, inner nodes, the IPv6 dictionary
    // and its index); the process's resident-set growth during the build is given
    // alongside (it includes the generator's sample and partly filled 2 MiB chunks).
    let bytes = table.memory_bytes();
    emit(
        "bytes_per_micronet",
        bytes as f64 / n as f64,
        "B",
        &p(&[
            ("runs_per_micronet", (table.runs() as f64 / n as f64).into()),
            ("rss_bytes_per_micronet", (rss as f64 / n as f64).into()),
        ]),
    );

    // Look-up addresses: uniform over the populated part of the MAB.
    let mut rng = Rng(0xadd ^ n);
    let span = end - mab.start();
    let units: Vec<u64> = (0..1 << 22)
        .map(|_| mab.start() + rng.below(span))
        .collect();
    let mask = units.len() - 1;

    table.publish();
    let reader = table.reader();

    // Single look-ups.
    let view = reader.load();
    let mut acc = 0u64;
    let mut i = 0usize;
    let t = Timer::start();
    while t.elapsed() < cfg.dur {
        for _ in 0..4096 {
            if let Mapping::Micronet(m) = view.lookup(units[i & mask]) {
                acc = acc.wrapping_add(m.start);
            }
            i += 1;
        }
    }
    let (single, single_cpu) = (i as f64 / t.wall_s(), i as f64 / t.cpu_s());
    black_box(acc);
    drop(view);
    emit(
        "lookup_single_per_s",
        single,
        "1/s",
        &p(&[("per_cpu_s", single_cpu.round().into())]),
    );

    // Batched look-ups, one version per batch.
    for batch in [64usize, 1024] {
        let mut out = vec![Mapping::OutsideMab; batch];
        let mut i = 0usize;
        let mut acc = 0u64;
        let t = Timer::start();
        while t.elapsed() < cfg.dur {
            for _ in 0..16 {
                let at = i & mask & !(batch - 1);
                let v = reader.load();
                v.lookup_batch(&units[at..at + batch], &mut out);
                if let Mapping::Micronet(m) = out[batch / 2] {
                    acc = acc.wrapping_add(m.start);
                }
                i += batch;
            }
        }
        black_box(acc);
        emit(
            "lookup_batched_per_s",
            i as f64 / t.wall_s(),
            "1/s",
            &p(&[
                ("per_cpu_s", (i as f64 / t.cpu_s()).round().into()),
                ("batch", batch.into()),
            ]),
        );
    }

    // The same micronets in a BTreeMap: start -> (len, ETR), in the family's own
    // integer widths.
    let (bt_rate, bt_cpu, bt_bytes, bt_build) = match f {
        Family::V4 => btree_baseline(
            &table,
            n,
            &units,
            cfg.dur,
            |u| u as u32,
            |m| (m.len as u32, m.etr.to_u128() as u32),
            |s, (len, _)| u64::from(s) + u64::from(len),
        ),
        Family::V6 => btree_baseline(
            &table,
            n,
            &units,
            cfg.dur,
            |u| u,
            |m| (m.len, m.etr.to_u128()),
            |s, (len, _)| s.saturating_add(len),
        ),
    };
    emit(
        "btreemap_lookup_per_s",
        bt_rate,
        "1/s",
        &p(&[
            ("per_cpu_s", bt_cpu.round().into()),
            ("btreemap_bytes_per_micronet", bt_bytes.into()),
            ("btreemap_build_s", bt_build.into()),
        ]),
    );

    // The physical limit over an array as large as the table.
    for huge in [true, false] {
        let (rate, cpu_rate) = random_reads(bytes, huge, cfg.dur);
        emit(
            "random_read_per_s",
            rate,
            "1/s",
            &p(&[
                ("per_cpu_s", cpu_rate.round().into()),
                ("bytes", bytes.into()),
                ("huge_pages", huge.into()),
            ]),
        );
    }

    // Single-command sets while another thread looks up: one `apply` per set, and
    // `apply_many` (the same sets, fetched ahead in groups of 32).
    for (api, publish_every) in [("apply", 1u64), ("apply", 1024), ("apply_many", 1024)] {
        let stop = Arc::new(AtomicBool::new(false));
        let looked = Arc::new(AtomicU64::new(0));
        let r = reader.clone();
        let (s2, l2) = (stop.clone(), looked.clone());
        let probe: Vec<u64> = units[..1 << 16].to_vec();
        let h = std::thread::spawn(move || {
            let mut out = vec![Mapping::OutsideMab; 64];
            let mut i = 0usize;
            while !s2.load(Ordering::Relaxed) {
                let at = (i * 64) & 0xffff;
                r.load().lookup_batch(&probe[at..at + 64], &mut out);
                i += 1;
            }
            l2.store(i as u64 * 64, Ordering::Relaxed);
        });
        let mut rng = Rng(0x5e7 ^ n);
        let mut cmds: Vec<[Command; 1]> = Vec::with_capacity(publish_every as usize);
        let mut applied = 0u64;
        let mut el = 0.0f64;
        let mut cpu = 0.0f64;
        let wall = Instant::now();
        while applied < cfg.sets && el < 4.0 * cfg.dur.as_secs_f64() {
            cmds.clear();
            for _ in 0..publish_every {
                let m = sample[rng.below(sample.len() as u64) as usize];
                cmds.push([Command::SetEtr {
                    start: m.start,
                    len: m.len,
                    etr: etr(f, &mut rng),
                }]);
            }
            // Only applying and publishing is timed, not making the commands.
            let t = Timer::start();
            if api == "apply" {
                for c in &cmds {
                    table.apply(c).expect("sampled micronets exist");
                }
            } else {
                table.apply_many(cmds.iter().map(|c| &c[..]), |r| {
                    r.expect("sampled micronets exist");
                });
            }
            table.publish();
            el += t.wall_s();
            cpu += t.cpu_s();
            applied += publish_every;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = h.join();
        let wall = wall.elapsed().as_secs_f64();
        emit(
            "sets_applied_per_s",
            applied as f64 / el,
            "1/s",
            &p(&[
                ("per_cpu_s", (applied as f64 / cpu).round().into()),
                ("api", api.into()),
                ("publish_every", publish_every.into()),
                (
                    "reader_lookups_per_s",
                    (looked.load(Ordering::Relaxed) as f64 / wall)
                        .round()
                        .into(),
                ),
            ]),
        );
    }

    if snapshot {
        let key = KeyPair::from_seed(&[7; 32]);
        let t0 = Timer::start();
        let bytes =
            table.write_snapshot(&key, RuasId::new(1).expect("7 bits"), 1_764_073_316_000_000);
        emit(
            "snapshot_write_s",
            t0.wall_s(),
            "s",
            &p(&[("cpu_s", t0.cpu_s().into()), ("bytes", bytes.len().into())]),
        );
        let t0 = Timer::start();
        let (loaded, _) = Table::load_snapshot(&bytes, &Ed25519Verifier, &key.public(), Some(mab))
            .expect("own snapshot loads");
        let (load_s, load_cpu) = (t0.wall_s(), t0.cpu_s());
        emit(
            "snapshot_load_s",
            load_s,
            "s",
            &p(&[
                ("cpu_s", load_cpu.into()),
                ("bytes", bytes.len().into()),
                ("verified", true.into()),
            ]),
        );
        drop(bytes);
        let t0 = Timer::start();
        let h = table.hash();
        emit(
            "table_hash_s",
            t0.wall_s(),
            "s",
            &p(&[("cpu_s", t0.cpu_s().into())]),
        );
        assert_eq!(loaded.hash(), h, "loaded table hashes the same");
    }
}

fn main() {
    let quick = std::env::var_os("IVIP_BENCH_QUICK").is_some_and(|v| v != "0");
    let cfg = if quick {
        Cfg {
            dur: Duration::from_millis(200),
            sets: 200_000,
        }
    } else {
        Cfg {
            dur: Duration::from_secs(1),
            sets: 4_000_000,
        }
    };
    // IVIP_BENCH_V4 / IVIP_BENCH_V6: comma-separated sizes instead of the defaults.
    let sizes = |var: &str, quick_sizes: &[u64], full: &[u64]| -> Vec<u64> {
        match std::env::var(var) {
            Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
            Err(_) if quick => quick_sizes.to_vec(),
            Err(_) => full.to_vec(),
        }
    };
    for n in sizes(
        "IVIP_BENCH_V4",
        &[100_000, 1_000_000],
        &[1_000_000, 10_000_000, 100_000_000],
    ) {
        bench_size(Family::V4, n, &cfg, true);
    }
    for n in sizes("IVIP_BENCH_V6", &[100_000], &[10_000_000]) {
        bench_size(Family::V6, n, &cfg, true);
    }
}
