//! The recorder's driver: the feed loop, the recording thread, the fetcher, the
//! HTTP server.
//!
//! Threads: the *feed loop* (one UDP loop) runs the MPS core — receives, checks,
//! verifies and buffers payloads, answers feed control — and after each batch
//! publishes the per-RUAS sequence state and wakes the *recording thread*, which
//! runs the [`IngestCore`]: records what is next in each RUAS's sequence and
//! commits the history (one `fdatasync` for everything recorded since the last:
//! group commit); only then is the progress in `/v1/history/status` advanced.
//! Verification and recording so use two cores, and a slow `fdatasync` never
//! stops receiving. The *fetcher* performs the recording thread's [`Job`]s with
//! the blocking HTTP client: payload ranges from peer MPSes (answers go to the
//! feed loop, to be checked like any payload) and RUAS snapshots (to the
//! recording thread). tiny_http workers answer searches from a [`StoreReader`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use ivip_wire::{Mab, RuasId};
use parking_lot::Mutex;

use super::config::HistorySettings;
use super::http::{Api, IngestStatus};
use super::ingest::{IngestCore, Job, TICK, Trackers};
use super::segment::sync_dir;
use super::store::{Store, StoreReader};
use crate::daemon::Shutdown;
use crate::dtls::tls::ClientTls;
use crate::http::{self, HttpServer, ServerConfig};
use crate::metrics::Registry;
use crate::mps::core::{FetchJob, MpsCore};
use crate::mps::store::Store as PayloadBuffer;
use crate::net::event_loop::Stop;
use crate::net::{DatagramCore, FanoutSet, LoopMetrics, Outbox, UdpLoop, cores, random_bytes};
use crate::sign::Ed25519Verifier;
use crate::time::{Duration, Instant, SystemClock, unix_now_us};

/// Directory of kept snapshot files inside the history directory.
pub const BASELINES_DIR: &str = "baselines";
/// Jobs queued for the fetcher at most.
const FETCH_QUEUE_MAX: usize = 256;
/// How often the retention policy is applied.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// A fetcher's answer for the recording thread.
#[derive(Debug)]
enum Done {
    List(RuasId, Result<Vec<Mab>, String>),
    Snapshot(RuasId, Mab, Result<(String, Vec<u8>), String>),
}

type PayloadResult = (FetchJob, Result<Vec<u8>, String>);

/// What the feed loop publishes to the recording thread.
#[derive(Debug, Default)]
struct Board {
    trackers: Mutex<Trackers>,
}

/// Why a recorder could not start or stopped with an error.
#[derive(Debug)]
pub enum RecorderError {
    /// The history store could not be opened or written.
    Store(super::StoreError),
    /// The feed socket could not be bound.
    Bind(std::io::Error),
    /// The HTTP server could not start.
    Http(http::ServerError),
    /// A thread could not start, or the loop failed.
    Worker(std::io::Error),
    /// Setup failed.
    Setup(String),
}

impl std::fmt::Display for RecorderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecorderError::Store(e) => write!(f, "history store: {e}"),
            RecorderError::Bind(e) => write!(f, "{e} (is another daemon using the port?)"),
            RecorderError::Http(e) => write!(f, "{e}"),
            RecorderError::Worker(e) => write!(f, "worker: {e}"),
            RecorderError::Setup(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RecorderError {}

/// The feed loop's core: the MPS core, plus publishing to the recording thread.
struct FeedSide {
    mps: MpsCore,
    results: Receiver<PayloadResult>,
    board: Arc<Board>,
    notify: Sender<()>,
    dirty: bool,
}

impl FeedSide {
    fn publish(&mut self) {
        *self.board.trackers.lock() = Trackers::from_mps(&self.mps);
        let _ = self.notify.try_send(());
        self.dirty = false;
    }
}

impl DatagramCore for FeedSide {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        self.mps.handle_datagram(now, from, bytes, out);
        self.dirty = true;
    }
    fn handle_oversized(&mut self, now: Instant, from: SocketAddr) {
        self.mps.handle_oversized(now, from);
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if self.mps.poll_timeout().is_some_and(|t| t <= now) {
            self.mps.handle_timeout(now, out);
        }
        if self.dirty {
            self.publish();
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if self.dirty {
            return Some(Instant(0));
        }
        self.mps.poll_timeout()
    }
    fn handle_wake(&mut self, now: Instant, _out: &mut Outbox) {
        for _ in 0..FETCH_QUEUE_MAX {
            match self.results.try_recv() {
                Ok((job, r)) => {
                    self.mps.handle_fetch_result(now, job, r);
                    self.dirty = true;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }
    fn shutdown(&mut self, now: Instant, out: &mut Outbox) -> bool {
        self.mps.shutdown(now, out)
    }
    fn fanout(&self) -> Arc<FanoutSet> {
        Arc::new(FanoutSet::default())
    }
}

/// The recording thread.
struct Recording {
    core: IngestCore,
    dir: PathBuf,
    board: Arc<Board>,
    wake: Receiver<()>,
    snapshots: Receiver<Done>,
    jobs: Sender<Job>,
    status: Arc<Mutex<IngestStatus>>,
    clock: SystemClock,
    next_retention: Instant,
    stop: Stop,
}

impl Recording {
    fn run(mut self) -> std::io::Result<()> {
        loop {
            if self.stop.is_aborted() {
                return Ok(());
            }
            let stopping = self.stop.is_stopping();
            let _ = self.wake.recv_timeout(TICK.to_std());
            let now = self.clock.now();
            for _ in 0..FETCH_QUEUE_MAX {
                match self.snapshots.try_recv() {
                    Ok(Done::List(ruas, r)) => self.core.handle_snapshot_list(now, ruas, r),
                    Ok(Done::Snapshot(ruas, mab, r)) => {
                        self.core.handle_snapshot(now, unix_now_us(), ruas, mab, r)
                    }
                    Err(_) => break,
                }
            }
            let trackers = self.board.trackers.lock().clone();
            self.core.handle_timeout(now, unix_now_us(), &trackers);
            if !self.settle(now) {
                self.stop.abort();
                return Ok(());
            }
            if stopping {
                return Ok(());
            }
        }
    }

    /// Keep snapshot files, commit, publish progress, hand out jobs, apply
    /// retention. `false` when the history cannot be written.
    fn settle(&mut self, now: Instant) -> bool {
        for (name, bytes) in self.core.take_files() {
            if let Err(e) = keep_file(&self.dir, &name, &bytes) {
                log::error!("history: cannot keep snapshot file {name}: {e}");
            }
        }
        if let Some(f) = self.core.failure() {
            log::error!("history: {f}; stopping (a restart resumes from the last complete record)");
            return false;
        }
        if self.core.store().pending_frames() > 0
            && let Err(e) = self.core.store_mut().commit()
        {
            log::error!(
                "history: commit failed: {e}; stopping (a restart resumes from the last complete record)"
            );
            return false;
        }
        {
            let mut st = self.status.lock();
            st.ruas = self.core.progress();
            st.mabs = self
                .core
                .mab_states()
                .into_iter()
                .map(|(m, s)| (m.to_string(), s))
                .collect();
            st.payloads_recorded = self.core.metrics().payloads.get();
        }
        for j in self.core.take_jobs() {
            if self.jobs.try_send(j.clone()).is_err() {
                log::debug!("history: fetch queue full; {j:?} dropped (it is asked again)");
            }
        }
        if now >= self.next_retention {
            self.next_retention = now + RETENTION_INTERVAL;
            match self.core.store_mut().apply_retention(unix_now_us()) {
                Ok(r) if !r.segments.is_empty() => log::info!(
                    "history retention: removed {} segment(s), {} bytes",
                    r.segments.len(),
                    r.bytes
                ),
                Ok(_) => {}
                Err(e) => log::error!("history retention: {e}"),
            }
        }
        true
    }
}

/// Write a kept snapshot file (temporary name, sync, rename, directory sync).
fn keep_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), super::StoreError> {
    use std::io::Write as _;
    let bdir = dir.join(BASELINES_DIR);
    std::fs::create_dir_all(&bdir).map_err(super::StoreError::io(&bdir, "cannot create"))?;
    let path = bdir.join(name);
    if path.exists() {
        return Ok(());
    }
    let tmp = bdir.join(format!("{name}.tmp"));
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(super::StoreError::io(&tmp, "cannot write"))?;
    std::fs::rename(&tmp, &path).map_err(super::StoreError::io(&path, "cannot rename to"))?;
    sync_dir(&bdir)
}

/// A running recorder.
pub struct Recorder {
    addr: SocketAddr,
    http: Option<HttpServer>,
    reader: StoreReader,
    registry: Registry,
    status: Arc<Mutex<IngestStatus>>,
    stop: Stop,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({})", self.addr)
    }
}

/// Open the record, replay it, and start recording; runs until `shutdown` is
/// requested or [`Recorder::stop`].
///
/// # Errors
/// [`RecorderError`].
pub fn start(s: &HistorySettings, shutdown: Shutdown) -> Result<Recorder, RecorderError> {
    let registry = Registry::new();
    let clock = SystemClock::new();
    let (store, report) = Store::open(&s.dir, s.store).map_err(RecorderError::Store)?;
    if report.torn_bytes > 0 {
        log::info!(
            "history: cut a torn tail of {} bytes (never acknowledged)",
            report.torn_bytes
        );
    }
    for d in &report.damage {
        log::error!("{d}");
    }
    let reader = store.reader();
    let nonce = u64::from_be_bytes(random_bytes::<8>().map_err(RecorderError::Setup)?);
    let buffer = Arc::new(PayloadBuffer::new(s.buffer_retention, s.buffer_bytes));
    let verifier = Arc::new(Ed25519Verifier);
    let mps = MpsCore::new(
        s.mps.clone(),
        buffer.clone(),
        verifier.clone(),
        nonce,
        clock.now(),
        &registry,
    );
    let mut core = IngestCore::new(
        buffer,
        store,
        &s.keys,
        verifier,
        s.repair,
        s.peers.len(),
        &registry,
    );
    let mut replayed = 0u64;
    let from = reader.replay_start();
    reader
        .replay(from, |at, rec| {
            core.replay(at, &rec);
            replayed += 1;
        })
        .map_err(RecorderError::Store)?;
    core.start(clock.now());
    log::info!(
        "history: {} record(s) replayed from segment {from}; resuming at {:?}",
        replayed,
        core.progress()
    );
    let sock = cores::bind_group(s.listen, 1, s.socket.options())
        .map_err(RecorderError::Bind)?
        .remove(0);
    let addr = sock.local_addr().map_err(RecorderError::Bind)?;
    let link = s
        .dtls
        .link("history", &registry, "ivip_history")
        .map_err(RecorderError::Setup)?;
    let tls = match s.dtls.https().map_err(RecorderError::Setup)? {
        Some((_, pins)) => Some(ClientTls::new(pins).map_err(RecorderError::Setup)?),
        None => None,
    };
    let lp = UdpLoop::new(
        sock,
        s.event_loop,
        s.fault.injector(0),
        LoopMetrics::register(&registry, "ivip_history"),
        clock,
    )
    .map_err(RecorderError::Worker)?
    .with_link(link);
    let waker = lp.waker();
    let (jobs_tx, jobs_rx) = bounded::<Job>(FETCH_QUEUE_MAX);
    let (pay_tx, pay_rx) = bounded::<PayloadResult>(FETCH_QUEUE_MAX);
    let (snap_tx, snap_rx) = bounded::<Done>(FETCH_QUEUE_MAX);
    let (wake_tx, wake_rx) = bounded::<()>(1);
    let board = Arc::new(Board::default());
    let stop = Stop::new(shutdown.clone());
    let status = Arc::new(Mutex::new(IngestStatus::default()));
    let mut feed = FeedSide {
        mps,
        results: pay_rx,
        board: board.clone(),
        notify: wake_tx.clone(),
        dirty: true,
    };
    let recording = Recording {
        core,
        dir: s.dir.clone(),
        board,
        wake: wake_rx,
        snapshots: snap_rx,
        jobs: jobs_tx,
        status: status.clone(),
        clock,
        next_retention: clock.now(),
        stop: stop.clone(),
    };
    let mut threads = Vec::new();
    let loop_stop = stop.clone();
    threads.push(
        cores::spawn("history-feed".into(), move || lp.run(&mut feed, &loop_stop))
            .map_err(RecorderError::Worker)?,
    );
    match cores::spawn("history-record".into(), move || recording.run()) {
        Ok(t) => threads.push(t),
        Err(e) => {
            stop.abort();
            return Err(RecorderError::Worker(e));
        }
    }
    let client = http::Client {
        connect_timeout: s.timeout,
        total_timeout: s.timeout,
        body_max: 1 << 30,
    };
    let peers = s.peers.clone();
    let urls = s.snapshot_urls.clone();
    let fetch_stop = stop.clone();
    let out = FetchOut {
        payloads: pay_tx,
        waker,
        snapshots: snap_tx,
        wake: wake_tx,
    };
    match cores::spawn("history-fetch".into(), move || {
        fetch_loop(
            &client,
            tls.as_ref(),
            &peers,
            &urls,
            &jobs_rx,
            &out,
            &fetch_stop,
        );
        Ok(())
    }) {
        Ok(t) => threads.push(t),
        Err(e) => {
            stop.abort();
            return Err(RecorderError::Worker(e));
        }
    }
    let api = Api {
        reader: reader.clone(),
        registry: registry.clone(),
        status: Some(status.clone()),
    };
    let server = match HttpServer::spawn(
        s.http,
        "history",
        ServerConfig {
            threads: 4,
            body_max: 1024,
        },
        shutdown,
        super::http::handler(api),
    ) {
        Ok(h) => h,
        Err(e) => {
            stop.abort();
            return Err(RecorderError::Http(e));
        }
    };
    log::info!(
        "history: feeds on {addr}, HTTP on {}, record in {}",
        server.local_addr(),
        s.dir.display()
    );
    Ok(Recorder {
        addr,
        http: Some(server),
        reader,
        registry,
        status,
        stop,
        threads,
    })
}

/// The MABs in a RUAS's `GET /v1/snapshots` answer.
fn parse_list(body: &[u8]) -> Result<Vec<Mab>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("snapshot list is not JSON: {e}"))?;
    let arr = v
        .as_array()
        .ok_or_else(|| "snapshot list is not a JSON array".to_string())?;
    let mut out: Vec<Mab> = Vec::new();
    for e in arr {
        let m = e["mab"]
            .as_str()
            .ok_or_else(|| "snapshot list entry without `mab`".to_string())?;
        let mab: Mab = m
            .parse()
            .map_err(|e| format!("snapshot list entry `{m}`: {e}"))?;
        if !out.contains(&mab) {
            out.push(mab);
        }
    }
    Ok(out)
}

/// Where the fetcher sends answers.
struct FetchOut {
    payloads: Sender<PayloadResult>,
    waker: Arc<mio::Waker>,
    snapshots: Sender<Done>,
    wake: Sender<()>,
}

/// `tls` holds the `[dtls]` pins that `https://` URLs are checked against.
fn fetch_loop(
    client: &http::Client,
    tls: Option<&ClientTls>,
    peers: &[String],
    urls: &[(RuasId, String)],
    jobs: &Receiver<Job>,
    out: &FetchOut,
    stop: &Stop,
) {
    let wait = std::time::Duration::from_millis(crate::daemon::SHUTDOWN_POLL_MS);
    let url_of = |r: RuasId| urls.iter().find(|(x, _)| *x == r).map(|(_, u)| u.as_str());
    while !stop.is_stopping() && !stop.is_aborted() {
        let job = match jobs.recv_timeout(wait) {
            Ok(j) => j,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let done = match job {
            Job::Payloads(j) => {
                let Some(base) = peers.get(j.peer) else {
                    continue;
                };
                let url = format!(
                    "{base}/payloads/{}/{}?from={}&to={}",
                    j.ruas, j.epoch, j.from, j.to
                );
                let r = match client.get_with(&url, tls) {
                    Ok(r) if r.status == 200 => Ok(r.body),
                    Ok(r) => Err(format!("{url}: HTTP {}", r.status)),
                    Err(e) => Err(format!("{url}: {e}")),
                };
                if out.payloads.send((j, r)).is_err() {
                    return;
                }
                let _ = out.waker.wake();
                continue;
            }
            Job::SnapshotList { ruas } => {
                let Some(base) = url_of(ruas) else { continue };
                let url = format!("{base}/v1/snapshots");
                Done::List(
                    ruas,
                    match client.get_with(&url, tls) {
                        Ok(r) if r.status == 200 => parse_list(&r.body),
                        Ok(r) => Err(format!("{url}: HTTP {}", r.status)),
                        Err(e) => Err(format!("{url}: {e}")),
                    },
                )
            }
            Job::Snapshot { ruas, mab } => {
                let Some(base) = url_of(ruas) else { continue };
                let url = format!("{base}/v1/snapshots/latest?mab={mab}");
                Done::Snapshot(
                    ruas,
                    mab,
                    match client.get_with(&url, tls) {
                        Ok(r) if r.status == 200 => match r.header("ivip-snapshot-name") {
                            Some(n) if n.parse::<ivip_wire::snapshot::SnapshotName>().is_ok() => {
                                Ok((n.to_string(), r.body))
                            }
                            _ => Err(format!("{url}: no standard Ivip-Snapshot-Name header")),
                        },
                        Ok(r) => Err(format!("{url}: HTTP {}", r.status)),
                        Err(e) => Err(format!("{url}: {e}")),
                    },
                )
            }
        };
        if out.snapshots.send(done).is_err() {
            return;
        }
        let _ = out.wake.try_send(());
    }
}

/// Start and run until `shutdown`.
///
/// # Errors
/// [`RecorderError`].
pub fn run(s: &HistorySettings, shutdown: Shutdown) -> Result<(), RecorderError> {
    start(s, shutdown)?.wait()
}

impl Recorder {
    /// The feed socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), HttpServer::local_addr)
    }

    /// A reader of the record.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// The metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What has been recorded durably so far.
    pub fn status(&self) -> IngestStatus {
        self.status.lock().clone()
    }

    fn join(mut self) -> Result<(), RecorderError> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(RecorderError::Worker(e)),
                Err(_) => {
                    result = Err(RecorderError::Worker(std::io::Error::other(
                        "a thread panicked",
                    )))
                }
            }
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
        result
    }

    /// Wait until the shutdown flag stops it.
    ///
    /// # Errors
    /// The loop failed.
    pub fn wait(self) -> Result<(), RecorderError> {
        self.join()
    }

    /// Stop gracefully: record and commit what is ready, unsubscribe.
    ///
    /// # Errors
    /// The loop failed.
    pub fn stop(self) -> Result<(), RecorderError> {
        self.stop.stop();
        self.join()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.abort();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_are_read_for_their_mabs() {
        let body = br#"[{"name":"a","mab":"20.0.0.0/14","mab_seq":1},{"name":"b","mab":"20.0.0.0/14"},{"name":"c","mab":"2001:db8::/32"}]"#;
        let m = parse_list(body).unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_list(b"{}").is_err());
        assert!(parse_list(br#"[{"mab":"20.0.0.1/14"}]"#).is_err());
    }
}
