//! The MPS's driver: the feed socket loop, the HTTP server, and the peer fetcher.
//!
//! Threads: one UDP loop (an MPS takes a few feeds; one core is plenty) running
//! the [`MpsCore`]; tiny_http workers reading the shared [`Store`]; one fetcher
//! that performs [`FetchJob`]s with the blocking HTTP client and hands results
//! back through a channel and the loop's waker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

use super::config::MpsSettings;
use super::core::{FetchJob, MpsCore};
use super::store::Store;
use crate::daemon::Shutdown;
use crate::http::{self, HttpServer, ServerConfig};
use crate::metrics::Registry;
use crate::net::event_loop::Stop;
use crate::net::{DatagramCore, FanoutSet, LoopMetrics, Outbox, UdpLoop, cores, random_bytes};
use crate::sign::Ed25519Verifier;
use crate::time::{Instant, SystemClock};

/// Fetch jobs queued for the fetcher at most.
const FETCH_QUEUE_MAX: usize = 256;

type FetchResult = (FetchJob, Result<Vec<u8>, String>);

/// Why an MPS could not start or stopped with an error.
#[derive(Debug)]
pub enum MpsError {
    /// The feed socket could not be bound.
    Bind(std::io::Error),
    /// The HTTP server could not start.
    Http(http::ServerError),
    /// A thread could not start, or the loop failed.
    Worker(std::io::Error),
    /// No randomness.
    Setup(String),
}

impl std::fmt::Display for MpsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MpsError::Bind(e) => write!(f, "{e} (is another daemon using the port?)"),
            MpsError::Http(e) => write!(f, "{e}"),
            MpsError::Worker(e) => write!(f, "worker: {e}"),
            MpsError::Setup(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for MpsError {}

/// The core as the loop drives it: results come in on wake, jobs go out after
/// timers.
struct Driven {
    core: MpsCore,
    results: Receiver<FetchResult>,
    jobs: Sender<FetchJob>,
}

impl Driven {
    fn push_jobs(&mut self, now: Instant) {
        let tx = &self.jobs;
        self.core.take_jobs(now, |j| tx.try_send(j).is_ok());
    }
}

impl DatagramCore for Driven {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        self.core.handle_datagram(now, from, bytes, out);
    }
    fn handle_oversized(&mut self, now: Instant, from: SocketAddr) {
        self.core.handle_oversized(now, from);
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.core.handle_timeout(now, out);
        self.push_jobs(now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
    fn handle_wake(&mut self, now: Instant, _out: &mut Outbox) {
        // Bounded: at most what the queue can hold.
        for _ in 0..FETCH_QUEUE_MAX {
            match self.results.try_recv() {
                Ok((job, r)) => self.core.handle_fetch_result(now, job, r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }
    fn shutdown(&mut self, now: Instant, out: &mut Outbox) -> bool {
        self.core.shutdown(now, out)
    }
    fn fanout(&self) -> Arc<FanoutSet> {
        Arc::new(FanoutSet::default())
    }
}

/// A running MPS.
pub struct Mps {
    addr: SocketAddr,
    http: Option<HttpServer>,
    store: Arc<Store>,
    registry: Registry,
    stop: Stop,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Mps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mps({})", self.addr)
    }
}

/// Start an MPS; it runs until `shutdown` is requested or [`Mps::stop`].
///
/// # Errors
/// [`MpsError`].
pub fn start(s: &MpsSettings, shutdown: Shutdown) -> Result<Mps, MpsError> {
    let registry = Registry::new();
    let clock = SystemClock::new();
    let nonce = u64::from_be_bytes(random_bytes::<8>().map_err(MpsError::Setup)?);
    let store = Arc::new(Store::new(s.retention, s.bytes_max));
    let core = MpsCore::new(
        s.core.clone(),
        store.clone(),
        Arc::new(Ed25519Verifier),
        nonce,
        clock.now(),
        &registry,
    );
    let sock = cores::bind_group(s.listen, 1, s.socket.options())
        .map_err(MpsError::Bind)?
        .remove(0);
    let addr = sock.local_addr().map_err(MpsError::Bind)?;
    let lp = UdpLoop::new(
        sock,
        s.event_loop,
        s.fault.injector(0),
        LoopMetrics::register(&registry, "ivip_mps"),
        clock,
    )
    .map_err(MpsError::Worker)?;
    let waker = lp.waker();
    let (jobs_tx, jobs_rx) = bounded::<FetchJob>(FETCH_QUEUE_MAX);
    let (res_tx, res_rx) = bounded::<FetchResult>(FETCH_QUEUE_MAX);
    let stop = Stop::new(shutdown.clone());
    let mut threads = Vec::new();
    let mut driven = Driven {
        core,
        results: res_rx,
        jobs: jobs_tx,
    };
    let loop_stop = stop.clone();
    threads.push(
        cores::spawn("mps-feed".into(), move || lp.run(&mut driven, &loop_stop))
            .map_err(MpsError::Worker)?,
    );
    let client = http::Client {
        connect_timeout: s.fetch_timeout,
        total_timeout: s.fetch_timeout,
        body_max: 64 << 20,
    };
    let peers = s.peers.clone();
    let fetch_stop = stop.clone();
    let fetcher = cores::spawn("mps-fetch".into(), move || {
        fetch_loop(&client, &peers, &jobs_rx, &res_tx, &waker, &fetch_stop);
        Ok(())
    });
    match fetcher {
        Ok(t) => threads.push(t),
        Err(e) => {
            stop.abort();
            return Err(MpsError::Worker(e));
        }
    }
    let handler = super::http::handler(store.clone(), registry.clone(), s.core.range_max);
    let server = match HttpServer::spawn(s.http, "mps", ServerConfig::default(), shutdown, handler)
    {
        Ok(h) => h,
        Err(e) => {
            stop.abort();
            return Err(MpsError::Http(e));
        }
    };
    log::info!(
        "mps: feeds on {addr}, HTTP on {}, {} feed(s), {} peer(s)",
        server.local_addr(),
        s.core.feeds.len(),
        s.peers.len()
    );
    Ok(Mps {
        addr,
        http: Some(server),
        store,
        registry,
        stop,
        threads,
    })
}

fn fetch_loop(
    client: &http::Client,
    peers: &[String],
    jobs: &Receiver<FetchJob>,
    results: &Sender<FetchResult>,
    waker: &mio::Waker,
    stop: &Stop,
) {
    let wait = std::time::Duration::from_millis(crate::daemon::SHUTDOWN_POLL_MS);
    while !stop.is_stopping() && !stop.is_aborted() {
        let job = match jobs.recv_timeout(wait) {
            Ok(j) => j,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let Some(base) = peers.get(job.peer) else {
            continue;
        };
        let url = format!(
            "{base}/payloads/{}/{}?from={}&to={}",
            job.ruas, job.epoch, job.from, job.to
        );
        let r = match client.get(&url) {
            Ok(resp) if resp.status == 200 => Ok(resp.body),
            Ok(resp) => Err(format!("{url}: HTTP {}", resp.status)),
            Err(e) => Err(format!("{url}: {e}")),
        };
        if results.send((job, r)).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// Start and run until `shutdown`.
///
/// # Errors
/// [`MpsError`].
pub fn run(s: &MpsSettings, shutdown: Shutdown) -> Result<(), MpsError> {
    start(s, shutdown)?.wait()
}

impl Mps {
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

    /// The store (read-only use: tests and status).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn join(mut self) -> Result<(), MpsError> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(MpsError::Worker(e)),
                Err(_) => {
                    result = Err(MpsError::Worker(std::io::Error::other("a thread panicked")))
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
    pub fn wait(self) -> Result<(), MpsError> {
        self.join()
    }

    /// Stop gracefully (unsubscribe from feeds).
    ///
    /// # Errors
    /// The loop failed.
    pub fn stop(self) -> Result<(), MpsError> {
        self.stop.stop();
        self.join()
    }
}

impl Drop for Mps {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.abort();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
