//! The RUAS daemon: threads, files and sockets around the [`Engine`].
//!
//! * HTTP threads (tiny_http) parse and authorise SUMUCs and serve the read API and
//!   snapshots; authorised SUMUCs go to the writer over a bounded channel.
//! * The writer thread owns the engine, the WAL and the UDP socket. Each round it
//!   takes every request waiting (group commit), decides them, commits the WAL once,
//!   answers, and sends the payloads the round produced to every level-0 replicator.
//! * The snapshot thread writes snapshot files from published table versions, so
//!   the writer never waits for a file.
//!
//! A WAL commit that fails stops the daemon (engine.rs, durability contract).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use ivip_wire::Mab;
use ivip_wire::frame::kind;
use ivip_wire::snapshot::{SnapshotName, StreamPosition};
use ivip_wire::sumuc::SumucView;

use super::config::RuasConfig;
use super::engine::{Engine, RecoveryError, Step};
use super::http::{HttpState, REJECT_REASONS, WriterRequest};
use super::packer::PackerConfig;
use super::sender::SenderCore;
use super::snapshots::{self, Catalog, SnapshotFileError};
use crate::daemon::{SHUTDOWN_POLL_MS, Shutdown};
use crate::delegation::Child;
use crate::http::{HttpServer, ServerConfig, ServerError};
use crate::keyfile::KeyFileError;
use crate::metrics::{Counter, Gauge, Registry};
use crate::net::event_loop::Stop;
use crate::net::{LoopConfig, LoopMetrics, UdpLoop, cores};
use crate::sign::{Ed25519Verifier, KeyPair};
use crate::store::log::{AppendLog, LogError};
use crate::table::{DbReader, TableView};
use crate::time::{Duration, Instant, SystemClock, unix_now_us};

/// Requests taken per writer round, at most.
const ROUND_REQUESTS_MAX: usize = 4096;
/// Requests waiting for the writer, at most (then HTTP threads wait).
const WRITER_QUEUE_MAX: usize = 8192;

/// Why the RUAS could not start or had to stop.
#[derive(Debug)]
pub enum RuasError {
    /// The signing key.
    Key(KeyFileError),
    /// The write-ahead log.
    Log(LogError),
    /// Recovery found the log and snapshots inconsistent.
    Recovery(RecoveryError),
    /// The snapshot directory.
    Snapshot(SnapshotFileError),
    /// The HTTP server.
    Http(ServerError),
    /// The UDP socket.
    Socket {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread could not start or panicked.
    Thread(String),
    /// The DTLS identity or link.
    Dtls(String),
}

impl std::fmt::Display for RuasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuasError::Key(e) => write!(f, "{e}"),
            RuasError::Log(e) => write!(f, "write-ahead log: {e}"),
            RuasError::Recovery(e) => write!(f, "recovery: {e}"),
            RuasError::Snapshot(e) => write!(f, "{e}"),
            RuasError::Http(e) => write!(f, "{e}"),
            RuasError::Socket { addr, source } => {
                write!(f, "cannot open the UDP socket on {addr}: {source}")
            }
            RuasError::Thread(e) => write!(f, "{e}"),
            RuasError::Dtls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RuasError {}

struct WriterMetrics {
    payloads: Counter,
    payload_bytes: Counter,
    queue_sets: Gauge,
    queue_payloads: Gauge,
    scheduled: Gauge,
    fsyncs: Counter,
    fsync_us: Counter,
    fsync_last_us: Gauge,
    fsync_max_us: Gauge,
    epoch: Gauge,
    next_seq: Gauge,
    round_requests: Counter,
}

impl WriterMetrics {
    fn register(r: &Registry) -> WriterMetrics {
        WriterMetrics {
            payloads: r.counter(
                "ivip_ruas_payloads_sent_total",
                "Payloads sent (each to every level-0 replicator).",
            ),
            payload_bytes: r.counter(
                "ivip_ruas_payload_bytes_sent_total",
                "Bytes of payloads sent, counted once per payload.",
            ),
            queue_sets: r.gauge(
                "ivip_ruas_queue_sets",
                "Accepted sets waiting to be packed.",
            ),
            queue_payloads: r.gauge(
                "ivip_ruas_queue_payloads",
                "Payloads held back by the byte quota.",
            ),
            scheduled: r.gauge(
                "ivip_ruas_scheduled_sets",
                "Sets waiting for their execute-at time.",
            ),
            fsyncs: r.counter(
                "ivip_ruas_wal_commits_total",
                "WAL commits (each one fdatasync).",
            ),
            fsync_us: r.counter(
                "ivip_ruas_wal_commit_microseconds_total",
                "Time spent in WAL commits.",
            ),
            fsync_last_us: r.gauge(
                "ivip_ruas_wal_commit_last_microseconds",
                "Duration of the last WAL commit.",
            ),
            fsync_max_us: r.gauge(
                "ivip_ruas_wal_commit_max_microseconds",
                "Longest WAL commit since start.",
            ),
            epoch: r.gauge("ivip_ruas_epoch", "The payload stream's epoch."),
            next_seq: r.gauge(
                "ivip_ruas_next_seq",
                "The sequence number the next payload gets.",
            ),
            round_requests: r.counter(
                "ivip_ruas_writer_requests_total",
                "SUMUCs decided by the writer (group commits share fsyncs).",
            ),
        }
    }
}

struct SnapJob {
    view: TableView,
    created_us: u64,
    position: StreamPosition,
    segment: u64,
}

struct Writer {
    engine: Engine,
    log: AppendLog,
    /// Payloads to the sender loop, which seals one record per replicator.
    udp: crossbeam_channel::Sender<Vec<u8>>,
    udp_waker: Arc<mio::Waker>,
    clock: SystemClock,
    requests: Receiver<WriterRequest>,
    snap_tx: Sender<SnapJob>,
    done_rx: Receiver<(Mab, u64)>,
    snapshot_interval: Duration,
    next_snapshot: BTreeMap<Mab, Instant>,
    checkpoint_segment: HashMap<Mab, u64>,
    segment_closed: BTreeMap<u64, Instant>,
    replay_window: Duration,
    m: WriterMetrics,
    shutdown: Shutdown,
}

impl Writer {
    fn commit(&mut self, wal: &[Vec<u8>]) -> Result<(), LogError> {
        if wal.is_empty() {
            return Ok(());
        }
        for w in wal {
            self.log.append(w);
        }
        let seg = self.log.current_segment();
        let t = std::time::Instant::now();
        self.log.commit()?;
        let us = t.elapsed().as_micros() as i64;
        self.m.fsyncs.inc();
        self.m.fsync_us.add(us as u64);
        self.m.fsync_last_us.set(us);
        if us > self.m.fsync_max_us.get() {
            self.m.fsync_max_us.set(us);
        }
        if self.log.current_segment() != seg {
            // A new segment opens with what recovery needs from older ones.
            self.segment_closed.insert(seg, self.clock.now());
            for r in self.engine.segment_preamble() {
                self.log.append(&r);
            }
            self.log.commit()?;
        }
        Ok(())
    }

    fn send(&mut self, step: &Step) {
        for o in &step.send {
            // The sender loop lives as long as the writer; a closed channel only
            // happens while stopping, when nothing more can be sent anyway.
            let _ = self.udp.send(o.bytes.clone());
            self.m.payloads.inc();
            self.m.payload_bytes.add(o.bytes.len() as u64);
        }
        if !step.send.is_empty() {
            let _ = self.udp_waker.wake();
        }
    }

    fn take_snapshots(&mut self, now: Instant, now_us: u64) {
        let due: Vec<Mab> = self
            .next_snapshot
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(m, _)| *m)
            .collect();
        for mab in due {
            self.next_snapshot.insert(mab, now + self.snapshot_interval);
            let (epoch, seq) = self.engine.stream_position();
            if self.engine.announce_snapshot(now, now_us, &mab).is_none() {
                continue;
            }
            let Some(t) = self.engine.db().table(&mab) else {
                continue;
            };
            let job = SnapJob {
                view: t.reader().load_owned(),
                created_us: now_us,
                position: StreamPosition { epoch, seq: seq.0 },
                segment: self.log.current_segment(),
            };
            let _ = self.snap_tx.send(job);
        }
    }

    /// Delete WAL segments that every MAB's newest snapshot covers and that closed
    /// more than two replay windows ago (repeats of their SUMUCs are refused as
    /// stale by then).
    fn collect_segments(&mut self, now: Instant) {
        while let Ok((mab, seg)) = self.done_rx.try_recv() {
            self.checkpoint_segment.insert(mab, seg);
        }
        let mabs = self.next_snapshot.len();
        if self.checkpoint_segment.len() < mabs {
            return;
        }
        let Some(&covered) = self.checkpoint_segment.values().min() else {
            return;
        };
        let old_enough: Vec<u64> = self
            .segment_closed
            .iter()
            .filter(|(s, t)| {
                **s < covered && now.saturating_since(**t) >= self.replay_window.saturating_mul(2)
            })
            .map(|(s, _)| *s)
            .collect();
        if let Some(&highest) = old_enough.last() {
            match self.log.remove_segments_before(highest + 1) {
                Ok(n) if n > 0 => log::info!("removed {n} old WAL segment(s)"),
                Ok(_) => {}
                Err(e) => log::warn!("{e}"),
            }
            for s in old_enough {
                self.segment_closed.remove(&s);
            }
        }
    }

    fn gauges(&self) {
        let (sets, held) = self.engine.queue_depth();
        self.m.queue_sets.set(sets as i64);
        self.m.queue_payloads.set(held as i64);
        self.m.scheduled.set(self.engine.scheduled() as i64);
        let (e, s) = self.engine.stream_position();
        self.m.epoch.set(i64::from(e));
        self.m.next_seq.set(i64::from(s.0));
    }

    fn run(mut self) -> Result<(), RuasError> {
        loop {
            let now = self.clock.now();
            let now_us = unix_now_us();
            if self.shutdown.is_requested() {
                return self.stop(now, now_us);
            }
            let mut deadline = now + Duration::from_ms(SHUTDOWN_POLL_MS);
            if let Some(t) = self.engine.poll_timeout(now, now_us) {
                deadline = deadline.min(t);
            }
            if let Some(t) = self.next_snapshot.values().min() {
                deadline = deadline.min(*t);
            }
            let mut batch = Vec::new();
            match self
                .requests
                .recv_timeout(deadline.saturating_since(now).to_std())
            {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.stop(now, now_us),
            }
            while batch.len() < ROUND_REQUESTS_MAX {
                match self.requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let now = self.clock.now();
            let now_us = unix_now_us();
            let mut step = Step::default();
            let mut replies = Vec::with_capacity(batch.len());
            for req in batch {
                let outcome = match SumucView::new_checked(&req.bytes) {
                    Ok(v) => {
                        self.engine
                            .submit(now, now_us, &v, &req.bytes, req.dry_run, &mut step)
                    }
                    Err(_) => continue,
                };
                replies.push((req.reply, outcome));
            }
            self.m.round_requests.add(replies.len() as u64);
            self.engine.publish();
            self.take_snapshots(now, now_us);
            self.engine.poll(now, now_us, &mut step);
            if let Err(e) = self.commit(&step.wal) {
                for (tx, _) in replies {
                    let _ = tx.send(Err(format!(
                        "the RUAS could not make the set durable ({e}); nothing was accepted"
                    )));
                }
                log::error!(
                    "write-ahead log commit failed: {e}; stopping so that no unlogged change is ever sent"
                );
                self.shutdown.request();
                return Err(RuasError::Log(e));
            }
            for (tx, o) in replies {
                let _ = tx.send(Ok(o));
            }
            self.send(&step);
            self.collect_segments(now);
            self.gauges();
        }
    }

    fn stop(mut self, now: Instant, now_us: u64) -> Result<(), RuasError> {
        // Refuse what is still waiting, then put every accepted set on the wire.
        while let Ok(r) = self.requests.try_recv() {
            let _ = r
                .reply
                .send(Err("the RUAS is stopping; nothing was accepted".into()));
        }
        let mut step = Step::default();
        self.engine.flush(now, now_us, &mut step);
        self.commit(&step.wal).map_err(RuasError::Log)?;
        self.send(&step);
        // What the last flush sent shows in the gauges (a test or an operator
        // reading `ivip_ruas_next_seq` after the stop sees the true last number).
        self.gauges();
        log::info!("RUAS writer stopped");
        Ok(())
    }
}

/// A running RUAS.
pub struct Ruas {
    http: Option<HttpServer>,
    https: Option<HttpServer>,
    udp: SocketAddr,
    link: Option<Arc<crate::dtls::Link>>,
    threads: Vec<JoinHandle<Result<(), RuasError>>>,
    udp_thread: Option<JoinHandle<Result<(), RuasError>>>,
    udp_stop: Stop,
    shutdown: Shutdown,
    registry: Registry,
    reader: DbReader,
    catalog: Arc<Catalog>,
    public_key: [u8; 32],
}

impl std::fmt::Debug for Ruas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ruas(udp {})", self.udp)
    }
}

/// Start a RUAS: recover, then serve until `shutdown`.
///
/// # Errors
/// [`RuasError`].
pub fn start(cfg: &RuasConfig, shutdown: Shutdown) -> Result<Ruas, RuasError> {
    let key = crate::keyfile::read(&cfg.key_file).map_err(RuasError::Key)?;
    let verifier: Arc<dyn crate::sign::Verifier> = Arc::new(Ed25519Verifier);
    let snap_dir = cfg.data_dir.join("snapshots");
    let loaded = snapshots::load_dir(&snap_dir, &key.public(), verifier.as_ref(), &cfg.mabs)
        .map_err(RuasError::Snapshot)?;
    let (mut log, records, report) = AppendLog::open(
        &cfg.data_dir.join("wal"),
        kind::RUAS_WAL,
        cfg.wal_segment_bytes,
    )
    .map_err(RuasError::Log)?;
    if report.torn_bytes > 0 {
        log::warn!(
            "cut {} bytes of a torn WAL write (never acknowledged)",
            report.torn_bytes
        );
    }
    let clock = SystemClock::new();
    let replay_window = Duration::from_secs(cfg.replay_window_s);
    let packer_config = PackerConfig {
        ruas: cfg.id(),
        batch_window: Duration::from_ms(cfg.batch_window_ms),
        heartbeat_interval: Duration::from_ms(cfg.heartbeat_ms),
        quota_bytes: cfg.quota_bytes,
        quota_interval: Duration::from_ms(cfg.quota_interval_ms),
    };
    let bodies: Vec<Vec<u8>> = records.into_iter().map(|r| r.body).collect();
    let (engine, rec, first) = Engine::recover(
        packer_config,
        key.clone(),
        &cfg.mabs,
        loaded.checkpoints,
        loaded.highest_epoch,
        &bodies,
        replay_window,
        clock.now(),
    )
    .map_err(RuasError::Recovery)?;
    log::info!(
        "RUAS {} recovered: {} set(s) replayed, epoch {}, next payload {}, {} requeued, {} scheduled{}",
        cfg.ruas_id,
        rec.sets,
        rec.epoch,
        rec.next_seq,
        rec.requeued,
        rec.scheduled,
        if rec.new_epoch {
            " (sequence state was lost: new epoch)"
        } else {
            ""
        }
    );
    for w in &first.wal {
        log.append(w);
    }
    log.commit().map_err(RuasError::Log)?;
    let registry = Registry::new();
    let security = cfg
        .security(std::path::Path::new("the RUAS config"))
        .map_err(|e| RuasError::Dtls(e.to_string()))?;
    let link = security
        .link("ruas", &registry, "ivip_ruas")
        .map_err(RuasError::Dtls)?;
    let socket = cores::bind_group(
        cfg.udp_bind,
        1,
        crate::net::SocketConfig::default().options(),
    )
    .map_err(|source| RuasError::Socket {
        addr: cfg.udp_bind,
        source,
    })?
    .remove(0);
    let udp = socket.local_addr().unwrap_or(cfg.udp_bind);
    let udp_loop = UdpLoop::new(
        socket,
        LoopConfig::default(),
        cfg.fault.injector(u64::from(cfg.ruas_id)),
        LoopMetrics::register(&registry, "ivip_ruas"),
        clock,
    )
    .map_err(|source| RuasError::Socket {
        addr: cfg.udp_bind,
        source,
    })?
    .with_link(link.clone());
    let udp_link = link;
    let (udp_tx, udp_rx) = unbounded::<Vec<u8>>();
    let udp_waker = udp_loop.waker();
    let mut sender = SenderCore::new(
        udp_rx,
        &cfg.replicators,
        registry.counter(
            "ivip_ruas_unexpected_datagrams_total",
            "Datagrams received on the payload socket (nothing is expected there).",
        ),
        registry.counter(
            "ivip_ruas_sender_outbox_full_total",
            "Times the payload sender filled its outbox and waited a round.",
        ),
    );
    // Stopped after the writer has sent its last payloads (not by the signal).
    let udp_stop = Stop::new(Shutdown::new());
    let m = WriterMetrics::register(&registry);
    let (req_tx, req_rx) = bounded(WRITER_QUEUE_MAX);
    let (snap_tx, snap_rx) = unbounded::<SnapJob>();
    let (done_tx, done_rx) = unbounded();
    let catalog = Arc::new(Catalog::new(snap_dir.clone(), loaded.files));
    let reader = engine.db().reader();
    let now = clock.now();
    let mut writer = Writer {
        next_snapshot: cfg.mabs.iter().map(|m| (*m, now)).collect(),
        engine,
        log,
        udp: udp_tx,
        udp_waker,
        clock,
        requests: req_rx,
        snap_tx,
        done_rx,
        snapshot_interval: Duration::from_secs(cfg.snapshot_interval_s),
        checkpoint_segment: HashMap::new(),
        segment_closed: BTreeMap::new(),
        replay_window,
        m,
        shutdown: shutdown.clone(),
    };
    // The payloads recovery found at the tail of the log go out again: one that was
    // logged but not sent is recovered; one that was sent is a harmless repeat.
    writer.send(&first);

    let state = HttpState {
        children: cfg
            .uas
            .iter()
            .map(|u| Child {
                name: u.name.clone(),
                public_key: u.public_key,
                ranges: u.ranges.clone(),
            })
            .collect(),
        mabs: cfg.mabs.clone(),
        verifier,
        writer: req_tx,
        reader: reader.clone(),
        catalog: catalog.clone(),
        accepted: registry.counter(
            "ivip_ruas_accepted_total",
            "SUMUCs accepted (applied or scheduled).",
        ),
        rejected: registry.counter_vec(
            "ivip_ruas_rejected_total",
            "SUMUCs refused, by reason.",
            "reason",
            REJECT_REASONS,
        ),
        registry: registry.clone(),
        replay_window_s: cfg.replay_window_s,
        answer_key: key.clone(),
    };
    let state = Arc::new(state);
    let http_state = state.clone();
    let http = HttpServer::spawn(
        cfg.http_listen,
        "ruas",
        ServerConfig {
            threads: cfg.http_threads,
            body_max: ivip_wire::sumuc::SUMUC_LEN_MAX,
        },
        shutdown.clone(),
        Arc::new(move |r| http_state.handle(r)),
    )
    .map_err(RuasError::Http)?;

    let https = match cfg.https_listen {
        None => None,
        Some(addr) => {
            let (id, _) = security
                .https()
                .map_err(RuasError::Dtls)?
                .ok_or_else(|| RuasError::Dtls("https_listen needs [dtls]".into()))?;
            let tls = crate::dtls::tls::ServerTls::new(&id)
                .map_err(|e| RuasError::Dtls(e.to_string()))?;
            let state = state.clone();
            Some(
                HttpServer::spawn_tls(
                    addr,
                    "ruas",
                    ServerConfig {
                        threads: cfg.http_threads,
                        body_max: ivip_wire::sumuc::SUMUC_LEN_MAX,
                    },
                    shutdown.clone(),
                    Arc::new(move |r| state.handle(r)),
                    &tls,
                )
                .map_err(RuasError::Http)?,
            )
        }
    };
    let mut threads = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() -> Result<(), RuasError> + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| RuasError::Thread(format!("cannot start thread {name}: {e}")))
    };
    let loop_stop = udp_stop.clone();
    let udp_thread = spawn(
        "ruas-udp",
        Box::new(move || {
            udp_loop
                .run(&mut sender, &loop_stop)
                .map_err(|e| RuasError::Thread(format!("payload sender loop: {e}")))
        }),
    )?;
    let abort_udp = udp_stop.clone();
    let abort = move |e| {
        abort_udp.abort();
        e
    };
    threads.push(spawn("ruas-writer", Box::new(move || writer.run())).map_err(&abort)?);
    let snap_key = key.clone();
    let ruas_id = cfg.id();
    let snap_catalog = catalog.clone();
    threads.push(
        spawn(
            "ruas-snapshots",
            Box::new(move || {
                snapshot_loop(
                    &snap_rx,
                    &done_tx,
                    &snap_key,
                    ruas_id,
                    &snap_dir,
                    &snap_catalog,
                );
                Ok(())
            }),
        )
        .map_err(&abort)?,
    );
    log::info!(
        "RUAS {} up: HTTP http://{}, payloads from {udp} to {} replicator(s)",
        cfg.ruas_id,
        http.local_addr(),
        cfg.replicators.len()
    );
    Ok(Ruas {
        http: Some(http),
        https,
        udp,
        link: udp_link,
        threads,
        udp_thread: Some(udp_thread),
        udp_stop,
        shutdown,
        registry,
        reader,
        catalog,
        public_key: key.public(),
    })
}

fn snapshot_loop(
    jobs: &Receiver<SnapJob>,
    done: &Sender<(Mab, u64)>,
    key: &KeyPair,
    ruas: ivip_wire::RuasId,
    dir: &std::path::Path,
    catalog: &Catalog,
) {
    // Ends when the writer drops its sender.
    for job in jobs {
        let mab = job.view.mab();
        let bytes =
            job.view
                .write_snapshot_with(key, ruas, job.created_us, &job.position.to_record());
        let name = SnapshotName {
            mab,
            created_s: job.created_us / 1_000_000,
            mab_seq: job.view.mab_seq(),
        }
        .to_string();
        match snapshots::write_file(dir, &name, &bytes) {
            Ok(()) => {
                if let Some(f) = snapshots::describe(&name, &bytes) {
                    catalog.add(f);
                }
                let _ = done.send((mab, job.segment));
            }
            Err(e) => log::error!("{e}"),
        }
    }
}

impl Ruas {
    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), HttpServer::local_addr)
    }

    /// The UDP address payloads come from.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The HTTPS address, when `https_listen` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(HttpServer::local_addr)
    }

    /// The payload socket's DTLS link (`None` with `insecure_plain_udp`).
    pub fn link(&self) -> Option<&Arc<crate::dtls::Link>> {
        self.link.as_ref()
    }

    /// The metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A reader of the master database.
    pub fn reader(&self) -> &DbReader {
        &self.reader
    }

    /// The snapshot files on offer.
    pub fn snapshots(&self) -> Vec<snapshots::SnapshotFile> {
        self.catalog.list()
    }

    /// The RUAS's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// Stop gracefully: queued sets are sent, the WAL is synced.
    ///
    /// # Errors
    /// What stopped a thread.
    pub fn stop(self) -> Result<(), RuasError> {
        self.shutdown.request();
        self.wait()
    }

    /// Wait until the shutdown flag stops it.
    ///
    /// # Errors
    /// What stopped a thread.
    pub fn wait(mut self) -> Result<(), RuasError> {
        let mut result = Ok(());
        // The writer first: it drops the snapshot channel, which ends the other.
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(RuasError::Thread("a RUAS thread panicked".into())),
            }
        }
        // Then the payload loop: it sends what the writer queued last, closes its
        // DTLS associations, and ends.
        self.udp_stop.stop();
        if let Some(t) = self.udp_thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(RuasError::Thread("the RUAS sender panicked".into())),
            }
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
        if let Some(h) = self.https.take() {
            h.stop();
        }
        result
    }
}

impl Drop for Ruas {
    fn drop(&mut self) {
        // Dropped without `wait` (a failed test): do not leave the sender loop
        // running on its own.
        self.udp_stop.abort();
    }
}

/// Run until SIGTERM/SIGINT (or `shutdown`).
///
/// # Errors
/// [`RuasError`].
pub fn run(cfg: &RuasConfig, shutdown: Shutdown) -> Result<(), RuasError> {
    start(cfg, shutdown)?.wait()
}

/// The data directory's parts, for tools and tests.
pub fn paths(cfg: &RuasConfig) -> (PathBuf, PathBuf) {
    (cfg.data_dir.join("wal"), cfg.data_dir.join("snapshots"))
}
