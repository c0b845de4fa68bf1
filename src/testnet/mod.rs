//! `ivip testnet`: a whole fast-push mapping system on loopback, driven by a steady
//! workload of end-user changes, measured end to end (issue 8).
//!
//! [`plan`] generates keys and configs into a directory; [`net`] starts every
//! daemon from its config (2 RUASes with IPv4 and IPv6 MABs, a UAS tree for each, 4
//! level-0 replicators in a full mesh, two further levels, 20 QSDs, 2 MPSes and a
//! QSC by default); [`workload`] sends changes through the leaf UASes' HTTP API;
//! [`report`] measures propagation latency from UAS acceptance to application in
//! every QSD, payloads lost and recovered, and whether every QSD's MAB hashes equal
//! the RUAS masters'.

pub mod net;
pub mod plan;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use net::Testnet;
pub use plan::{Knobs, Shape};
pub use report::Summary;

use crate::daemon::Shutdown;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where keys, configs, data and the plot go (a new temporary directory if
    /// `None`; kept when given).
    pub dir: Option<PathBuf>,
    /// The network's shape.
    pub shape: Shape,
    /// Config knobs (loss, batch window, ...).
    pub knobs: Knobs,
    /// How long the workload runs.
    pub duration: Duration,
    /// Changes per second.
    pub rate: f64,
    /// Stop after this many changes.
    pub changes_max: u64,
    /// Kill a level-1 replicator a third of the way in.
    pub kill_replicator: bool,
    /// Workload threads.
    pub threads: usize,
    /// Seed of the workload.
    pub seed: u64,
    /// Print a progress line every second.
    pub progress: bool,
    /// Run RUASes as child processes of this binary.
    pub ruas_exe: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            shape: Shape::default(),
            knobs: Knobs::default(),
            duration: Duration::from_secs(20),
            rate: 100.0,
            changes_max: u64::MAX,
            kill_replicator: false,
            threads: 8,
            seed: 1,
            progress: true,
            ruas_exe: None,
        }
    }
}

/// A directory under the system's temporary directory, unique to this run.
pub fn temp_dir() -> PathBuf {
    let n = crate::rng::Rng::from_os().next_u64();
    std::env::temp_dir().join(format!("ivip-testnet-{}-{n:08x}", std::process::id()))
}

/// Wait up to `limit` for every QSD to converge; returns how many did.
///
/// # Errors
/// A RUAS did not answer.
pub fn wait_converged(net: &Testnet, limit: Duration) -> Result<usize, String> {
    let end = Instant::now() + limit;
    loop {
        let n = net.converged_qsds()?;
        if n == net.plan.qsds.len() || Instant::now() > end {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Plan, start, load, run the workload, measure, stop. `stop` ends the workload
/// early (Ctrl-C). Returns the summary and where the files are.
///
/// # Errors
/// Start-up failures, in one line.
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<(Summary, PathBuf), String> {
    let dir = opts.dir.clone().unwrap_or_else(temp_dir);
    let t0 = Instant::now();
    let plan = plan::make(&dir, &opts.shape, &opts.knobs)
        .map_err(|e| format!("cannot write the testnet into {}: {e}", dir.display()))?;
    let mut net = Testnet::start(plan, opts.ruas_exe.clone())?;
    let result = drive(&mut net, opts, stop, t0);
    net.stop();
    result.map(|s| (s, dir))
}

fn drive(
    net: &mut Testnet,
    opts: &Options,
    stop: &AtomicBool,
    t0: Instant,
) -> Result<Summary, String> {
    let say = |s: String| {
        if opts.progress {
            eprintln!("{s}");
        }
    };
    let mut wl = workload::Workload::new(&net.plan, opts.threads)?;
    wl.setup(opts.seed)?;
    net.wait_ready(Duration::from_secs(60))?;
    say(format!(
        "testnet up in {:.1}s: {} RUASes, {} MABs, {} replicators, {} QSDs, {} MPSes, 1 QSC, {} users; files in {}",
        t0.elapsed().as_secs_f64(),
        net.plan.ruases.len(),
        net.mabs().len(),
        net.plan.replicators.iter().map(Vec::len).sum::<usize>(),
        net.plan.qsds.len(),
        net.plan.mpses.len(),
        net.plan.users.len(),
        net.plan.dir.display()
    ));
    let done = Arc::new(AtomicBool::new(false));
    let counts = wl.counts.clone();
    let accepted = wl.accepted.clone();
    let start = Instant::now();
    let mut killed = false;
    std::thread::scope(|scope| {
        let (done2, counts2) = (done.clone(), counts.clone());
        let progress = opts.progress;
        // Progress: once a second.
        scope.spawn(move || {
            let mut last = 0;
            while !done2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let el = start.elapsed().as_secs();
                if progress && el > last {
                    last = el;
                    eprintln!(
                        "[{el:>4}s] changes sent {:>7}  accepted {:>7}  refused {:>4}  unanswered {:>4}",
                        counts2.sent.load(Ordering::Relaxed),
                        counts2.accepted.load(Ordering::Relaxed),
                        counts2.refused.load(Ordering::Relaxed),
                        counts2.failed.load(Ordering::Relaxed)
                    );
                }
            }
        });
        let h = scope.spawn(|| wl.run(opts.rate, opts.duration, opts.changes_max, stop, opts.seed));
        if opts.kill_replicator {
            let at = start + opts.duration / 3;
            while Instant::now() < at && !h.is_finished() && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(a) = net.kill_replicator(1, 0) {
                say(format!("killed level-1 replicator {a}"));
                killed = true;
            }
        }
        let _ = h.join();
        done.store(true, Ordering::Relaxed);
    });
    let _ = killed;
    // Let the last changes arrive (2 s is the bound under 5% loss).
    let converged_qsds = wait_converged(
        net,
        Duration::from_secs(if opts.knobs.loss_percent > 0.0 { 2 } else { 5 }),
    )?;
    let acc = accepted.lock().clone();
    let (latencies_ms, missing) = report::latencies(net, &acc);
    let (payloads_sent, payloads_lost, payloads_recovered, datagrams_dropped) =
        report::payload_counts(net);
    let s = Summary {
        qsds: net.plan.qsds.len(),
        changes: acc.len(),
        refused: counts.refused.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        converged: converged_qsds == net.plan.qsds.len(),
        converged_qsds,
        missing,
        latencies_ms,
        payloads_sent,
        payloads_lost,
        payloads_recovered,
        datagrams_dropped,
        wal_commit_max_ms: report::wal_commit_max_ms(net),
    };
    let svg = report::histogram_svg(
        &s.latencies_ms,
        "ivip testnet: propagation latency, UAS acceptance to applied in each QSD",
    );
    let _ = std::fs::write(net.plan.dir.join("latency.svg"), svg);
    Ok(s)
}

/// `ivip testnet [options]`.
///
/// # Errors
/// One line for the operator.
pub fn cli(args: Vec<std::ffi::OsString>) -> Result<bool, String> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut json = false;
    let mut p = lexopt::Parser::from_args(args);
    let num = |v: std::ffi::OsString, what: &str| -> Result<f64, String> {
        v.to_string_lossy()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("{what}: expected a number ≥ 0, not {v:?}"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        fn val(p: &mut lexopt::Parser) -> Result<std::ffi::OsString, String> {
            p.value().map_err(|e| e.to_string())
        }
        match arg {
            Long("dir") => o.dir = Some(PathBuf::from(val(&mut p)?)),
            Long("duration") => {
                o.duration = Duration::from_secs_f64(num(val(&mut p)?, "--duration")?)
            }
            Long("rate") => o.rate = num(val(&mut p)?, "--rate")?.max(0.1),
            Long("loss") => {
                o.knobs.loss_percent = num(val(&mut p)?, "--loss")?;
                if o.knobs.loss_percent > 100.0 {
                    return Err("--loss: a percentage, 0 to 100".into());
                }
            }
            Long("batch-window-ms") => {
                o.knobs.batch_window_ms = num(val(&mut p)?, "--batch-window-ms")? as u64
            }
            Long("kill-replicator") => o.kill_replicator = true,
            Long("qsds") => o.shape.qsds = (num(val(&mut p)?, "--qsds")? as usize).max(1),
            Long("changes") => o.changes_max = num(val(&mut p)?, "--changes")? as u64,
            Long("seed") => o.seed = num(val(&mut p)?, "--seed")? as u64,
            Long("json") => json = true,
            Long("help") | Short('h') => {
                print!("{HELP}");
                return Ok(true);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let stop = Shutdown::on_signals();
    let flag = Arc::new(AtomicBool::new(false));
    let f2 = flag.clone();
    let s2 = stop.clone();
    std::thread::spawn(move || {
        while !s2.is_requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        f2.store(true, Ordering::Relaxed);
    });
    let keep = o.dir.is_some();
    let header = format!(
        "ivip testnet: {} QSDs, {:.0} s at {} changes/s, loss {}%, batch window {} ms{}",
        o.shape.qsds,
        o.duration.as_secs_f64(),
        o.rate,
        o.knobs.loss_percent,
        o.knobs.batch_window_ms,
        if o.kill_replicator {
            ", a level-1 replicator killed"
        } else {
            ""
        }
    );
    let (s, dir) = run(&o, &flag)?;
    println!("{}", s.table(&header));
    if keep {
        println!(
            "  files, configs and latency histogram (latency.svg) in {}",
            dir.display()
        );
    } else {
        let plot = std::env::temp_dir().join("ivip-testnet-latency.svg");
        let _ = std::fs::copy(dir.join("latency.svg"), &plot);
        println!("  latency histogram: {}", plot.display());
        let _ = std::fs::remove_dir_all(&dir);
    }
    if json {
        println!("{}", s.json());
    }
    Ok(s.converged && s.missing == 0)
}

const HELP: &str = "\
usage: ivip testnet [--duration S] [--rate N] [--loss PCT] [--batch-window-ms MS]
                    [--kill-replicator] [--qsds N] [--changes N] [--seed N]
                    [--dir DIR] [--json]

Runs a whole fast-push mapping system on loopback: 2 RUASes (IPv4 and IPv6
MABs), a UAS tree for each, 4 level-0 replicators in a full mesh, two further
levels, 20 QSDs, 2 MPSes and a QSC; drives end-user changes through the UAS API
and reports propagation latency, payloads lost and recovered, and whether every
QSD converged on the RUAS masters. Ctrl-C stops the workload and prints the table.

  --duration S          workload length (default 20)
  --rate N              changes per second (default 100)
  --loss PCT            drop PCT% of datagrams on every link, in the send path
  --batch-window-ms MS  RUAS batch window (default 0)
  --kill-replicator     kill a level-1 replicator a third of the way in
  --qsds N              number of QSDs (default 20)
  --dir DIR             keep keys, configs, data and latency.svg in DIR
  --json                end with one JSON line of the figures
";
