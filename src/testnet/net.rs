//! Running the planned network: start every daemon from its config file, stop,
//! kill and restart them, and read their state over HTTP.
//!
//! Daemons run as threads of this process through the same `start` functions
//! `ivip ROLE` uses; RUASes may instead run as child processes of the `ivip` binary
//! (so a test can SIGKILL one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ivip_wire::Mab;

use super::plan::Plan;
use crate::daemon::Shutdown;
use crate::http::Client;

/// A RUAS in this process or in a child process.
#[derive(Debug)]
pub enum RuasHandle {
    /// Threads of this process.
    InProcess(Box<crate::ruas::Ruas>),
    /// A child process running `ivip ruas`.
    Process(std::process::Child),
}

/// The running network.
pub struct Testnet {
    /// The plan it runs.
    pub plan: Plan,
    ruases: Vec<Option<RuasHandle>>,
    uases: Vec<crate::uas::http::UasServer>,
    replicators: Vec<Vec<Option<crate::replicator::Replicator>>>,
    mpses: Vec<Option<crate::mps::Mps>>,
    qsds: Vec<Option<crate::qsd::Qsd>>,
    qsc: Option<crate::qsc::Qsc>,
    ruas_exe: Option<PathBuf>,
}

impl std::fmt::Debug for Testnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Testnet({})", self.plan.dir.display())
    }
}

fn client(total: Duration) -> Client {
    Client {
        connect_timeout: Duration::from_secs(2),
        total_timeout: total,
        body_max: 64 << 20,
    }
}

/// GET a JSON resource.
pub fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let r = client(Duration::from_secs(10))
        .get(url)
        .map_err(|e| format!("{url}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{url}: HTTP {}", r.status));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("{url}: {e}"))
}

/// One series from a Prometheus text page.
pub fn metric(url: &str, series: &str) -> f64 {
    client(Duration::from_secs(5))
        .get(url)
        .ok()
        .and_then(|r| String::from_utf8(r.body).ok())
        .and_then(|t| crate::metrics::sample(&t, series))
        .unwrap_or(0.0)
}

/// `mab -> (mab_seq, sha256)` from a `/v1/status?hash=1` answer.
fn hashes(v: &serde_json::Value) -> Vec<(String, u64, String)> {
    v["mabs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some((
                        m["mab"].as_str()?.to_string(),
                        m["mab_seq"].as_u64()?,
                        m["sha256"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Testnet {
    /// Start everything in the plan, upstream first. `ruas_exe`: run RUASes as child
    /// processes of this `ivip` binary instead of in this process.
    ///
    /// # Errors
    /// The first daemon that failed to start, in one line.
    pub fn start(mut plan: Plan, ruas_exe: Option<PathBuf>) -> Result<Testnet, String> {
        plan.release_ports();
        let mut t = Testnet {
            ruases: Vec::new(),
            uases: Vec::new(),
            replicators: Vec::new(),
            mpses: Vec::new(),
            qsds: Vec::new(),
            qsc: None,
            ruas_exe,
            plan,
        };
        for level in &t.plan.replicators {
            let mut v = Vec::new();
            for r in level {
                v.push(Some(start_replicator(&r.config)?));
            }
            t.replicators.push(v);
        }
        for i in 0..t.plan.ruases.len() {
            let h = t.start_ruas(i)?;
            t.ruases.push(Some(h));
        }
        for i in 0..t.plan.ruases.len() {
            t.wait_http(t.plan.ruases[i].http, Duration::from_secs(30))?;
        }
        for r in &t.plan.ruases {
            for cfg in [&r.middle.0, &r.leaf.0] {
                let c = crate::uas::config::UasConfig::load(cfg).map_err(|e| e.to_string())?;
                t.uases.push(crate::uas::http::start(c, Shutdown::new())?);
            }
        }
        for (cfg, _) in &t.plan.mpses {
            let s = crate::mps::MpsConfig::load(cfg).map_err(|e| e.to_string())?;
            t.mpses.push(Some(
                crate::mps::start(&s, Shutdown::new()).map_err(|e| format!("mps: {e}"))?,
            ));
        }
        for i in 0..t.plan.qsds.len() {
            let q = t.start_qsd(i)?;
            t.qsds.push(Some(q));
        }
        let c = crate::qsc::QscConfig::load(&t.plan.qsc.0).map_err(|e| e.to_string())?;
        t.qsc = Some(crate::qsc::start(&c, Shutdown::new())?);
        Ok(t)
    }

    fn start_ruas(&self, i: usize) -> Result<RuasHandle, String> {
        let cfg = &self.plan.ruases[i].config;
        match &self.ruas_exe {
            Some(exe) => {
                // Its log goes to a file beside its config (appended across restarts),
                // so a run that went wrong can be read afterwards.
                let log = self.ruas_log(i);
                let err = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
                std::process::Command::new(exe)
                    .args(["ruas", "--config"])
                    .arg(cfg)
                    .env("RUST_LOG", "info")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(err)
                    .spawn()
                    .map(RuasHandle::Process)
                    .map_err(|e| format!("cannot run {}: {e}", exe.display()))
            }
            None => {
                let c = crate::ruas::RuasConfig::load(cfg).map_err(|e| e.to_string())?;
                crate::ruas::start(&c, Shutdown::new())
                    .map(|r| RuasHandle::InProcess(Box::new(r)))
                    .map_err(|e| format!("ruas {i}: {e}"))
            }
        }
    }

    /// Process ids of the RUASes running as child processes.
    pub fn ruas_pids(&self) -> Vec<u32> {
        self.ruases
            .iter()
            .filter_map(|r| match r {
                Some(RuasHandle::Process(c)) => Some(c.id()),
                _ => None,
            })
            .collect()
    }

    /// Where a RUAS run as a separate process logs.
    pub fn ruas_log(&self, i: usize) -> PathBuf {
        self.plan.dir.join(format!("ruas-{i}.log"))
    }

    fn start_qsd(&self, i: usize) -> Result<crate::qsd::Qsd, String> {
        let s = crate::qsd::QsdConfig::load(&self.plan.qsds[i].0).map_err(|e| e.to_string())?;
        crate::qsd::start(&s, Shutdown::new()).map_err(|e| format!("qsd {i}: {e}"))
    }

    fn wait_http(&self, addr: SocketAddr, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        while client(Duration::from_secs(1))
            .get(&format!("http://{addr}/metrics"))
            .is_err()
        {
            if Instant::now() > end {
                return Err(format!("nothing answers on http://{addr} after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Every MAB of every RUAS: `(mab, mab_seq, sha256)` of the masters.
    ///
    /// # Errors
    /// A RUAS did not answer.
    pub fn master_hashes(&self) -> Result<Vec<(String, u64, String)>, String> {
        let mut v = Vec::new();
        for r in &self.plan.ruases {
            v.extend(hashes(&get_json(&format!(
                "http://{}/v1/status?hash=1",
                r.http
            ))?));
        }
        Ok(v)
    }

    /// One QSD's ready MABs: `(mab, mab_seq, sha256)`; `None` when it is down.
    pub fn qsd_hashes(&self, i: usize) -> Option<Vec<(String, u64, String)>> {
        self.qsds.get(i)?.as_ref()?;
        get_json(&format!("http://{}/v1/status?hash=1", self.plan.qsds[i].2))
            .ok()
            .map(|v| hashes(&v))
    }

    /// One QSD's per-MAB sequences (cheap: no hashes); empty when it is down.
    pub fn qsd_seqs(&self, i: usize) -> Vec<(String, u64)> {
        if self.qsds.get(i).is_none_or(Option::is_none) {
            return Vec::new();
        }
        get_json(&format!("http://{}/v1/status", self.plan.qsds[i].2))
            .ok()
            .and_then(|v| {
                v["mabs"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|m| {
                            Some((m["mab"].as_str()?.to_string(), m["mab_seq"].as_u64()?))
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Where the QSDs differ from the masters, one line per QSD and MAB
    /// (`qsd 2 20.0.0.0/16: has #90, master #91`); empty when all agree. For the
    /// message of a convergence check that failed.
    pub fn divergence(&self) -> String {
        let masters = match self.master_hashes() {
            Ok(m) => m,
            Err(e) => return e,
        };
        let mut out = String::new();
        for i in 0..self.plan.qsds.len() {
            let Some(h) = self.qsd_hashes(i) else {
                out.push_str(&format!("qsd {i}: down or not answering\n"));
                continue;
            };
            let have: HashMap<&str, (u64, &str)> = h
                .iter()
                .map(|(m, s, x)| (m.as_str(), (*s, x.as_str())))
                .collect();
            for (mab, seq, hash) in &masters {
                match have.get(mab.as_str()) {
                    None => out.push_str(&format!("qsd {i} {mab}: not loaded, master #{seq}\n")),
                    Some((s, x)) if s != seq || x != hash => out.push_str(&format!(
                        "qsd {i} {mab}: has #{s}{}, master #{seq}\n",
                        if s == seq { " with another hash" } else { "" }
                    )),
                    Some(_) => {}
                }
            }
            // What its stream saw, for a difference that needs explaining.
            if let Ok(r) = client(Duration::from_secs(5))
                .get(&format!("http://{}/metrics", self.plan.qsds[i].2))
            {
                for l in String::from_utf8_lossy(&r.body).lines() {
                    let stream = [
                        "payload",
                        "missing",
                        "resync",
                        "mps",
                        "feed_dropped",
                        "stuck",
                    ]
                    .iter()
                    .any(|k| l.contains(k));
                    if stream && !l.starts_with('#') && !l.ends_with(" 0") {
                        out.push_str(&format!("  qsd {i} {l}\n"));
                    }
                }
            }
        }
        out
    }

    /// How many QSDs hold every MAB with exactly the masters' hashes.
    ///
    /// # Errors
    /// A RUAS did not answer.
    pub fn converged_qsds(&self) -> Result<usize, String> {
        let mut m = self.master_hashes()?;
        m.sort();
        let mut n = 0;
        for i in 0..self.plan.qsds.len() {
            if let Some(mut h) = self.qsd_hashes(i) {
                h.sort();
                if h == m {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Wait until every running QSD has every MAB loaded.
    ///
    /// # Errors
    /// Not within `limit`.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let want: usize = self.plan.ruases.iter().map(|r| r.mabs.len()).sum();
        let end = Instant::now() + limit;
        loop {
            let ready = (0..self.plan.qsds.len())
                .filter(|&i| self.qsds[i].is_some())
                .all(|i| self.qsd_seqs(i).len() == want);
            if ready {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("the QSDs did not load every MAB within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop a replicator the hard way (its downstreams see silence).
    pub fn kill_replicator(&mut self, level: usize, i: usize) -> Option<SocketAddr> {
        let r = self.replicators.get_mut(level)?.get_mut(i)?.take()?;
        let addr = r.local_addr();
        r.abort();
        Some(addr)
    }

    /// Stop a QSD (gracefully) and start it again from its config: it boots from
    /// snapshots again.
    ///
    /// # Errors
    /// It did not start again.
    pub fn restart_qsd(&mut self, i: usize) -> Result<(), String> {
        if let Some(q) = self.qsds.get_mut(i).and_then(Option::take) {
            let _ = q.stop();
        }
        let q = self.start_qsd(i)?;
        self.qsds[i] = Some(q);
        Ok(())
    }

    /// SIGKILL a RUAS that runs as a child process. `false` if it runs in-process.
    pub fn kill_ruas(&mut self, i: usize) -> bool {
        match self.ruases.get_mut(i).and_then(Option::take) {
            Some(RuasHandle::Process(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
                true
            }
            Some(h) => {
                self.ruases[i] = Some(h);
                false
            }
            None => false,
        }
    }

    /// Start a killed RUAS again (it recovers from its WAL and snapshots).
    ///
    /// # Errors
    /// It did not start or answer.
    pub fn restart_ruas(&mut self, i: usize) -> Result<(), String> {
        let h = self.start_ruas(i)?;
        self.ruases[i] = Some(h);
        self.wait_http(self.plan.ruases[i].http, Duration::from_secs(30))
    }

    /// A QSD's query address.
    pub fn qsd_query_addr(&self, i: usize) -> SocketAddr {
        self.plan.qsds[i].1
    }

    /// A QSD's admin address.
    pub fn qsd_admin_addr(&self, i: usize) -> SocketAddr {
        self.plan.qsds[i].2
    }

    /// The QSC's address.
    pub fn qsc_addr(&self) -> SocketAddr {
        self.plan.qsc.1
    }

    /// A running replicator.
    pub fn replicator(&self, level: usize, i: usize) -> Option<&crate::replicator::Replicator> {
        self.replicators.get(level)?.get(i)?.as_ref()
    }

    /// The addresses of one replicator level.
    pub fn replicator_addrs(&self, level: usize) -> Vec<SocketAddr> {
        self.plan
            .replicators
            .get(level)
            .map(|l| l.iter().map(|r| r.addr).collect())
            .unwrap_or_default()
    }

    /// MABs of every RUAS.
    pub fn mabs(&self) -> Vec<Mab> {
        self.plan
            .ruases
            .iter()
            .flat_map(|r| r.mabs.iter().copied())
            .collect()
    }

    /// Stop everything, downstream first.
    pub fn stop(mut self) {
        if let Some(q) = self.qsc.take() {
            q.stop();
        }
        for q in self.qsds.iter_mut().filter_map(Option::take) {
            let _ = q.stop();
        }
        for m in self.mpses.iter_mut().filter_map(Option::take) {
            let _ = m.stop();
        }
        for u in self.uases.drain(..) {
            u.stop();
        }
        for r in self.ruases.iter_mut().filter_map(Option::take) {
            match r {
                RuasHandle::InProcess(r) => {
                    let _ = r.stop();
                }
                RuasHandle::Process(mut c) => {
                    // SIGTERM first: a graceful stop syncs the WAL.
                    #[allow(unsafe_code)]
                    // SAFETY: kill(2) on our own child's pid has no memory effects.
                    unsafe {
                        libc::kill(c.id() as i32, libc::SIGTERM);
                    }
                    let end = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        for level in self.replicators.iter_mut().rev() {
            for r in level.iter_mut().filter_map(Option::take) {
                let _ = r.stop();
            }
        }
    }
}

impl Drop for Testnet {
    /// A testnet dropped without [`Testnet::stop`] (a failed test unwinding, an
    /// early return) must not leave RUAS child processes running: they would
    /// outlive this process and load the machine. In-process daemons end with it.
    fn drop(&mut self) {
        for r in self.ruases.iter_mut().filter_map(Option::take) {
            if let RuasHandle::Process(mut c) = r {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn start_replicator(cfg: &std::path::Path) -> Result<crate::replicator::Replicator, String> {
    let s = crate::replicator::ReplicatorConfig::load(cfg).map_err(|e| e.to_string())?;
    crate::replicator::start(&s, Shutdown::new())
        .map_err(|e| format!("replicator {}: {e}", cfg.display()))
}
