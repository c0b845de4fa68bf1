//! The QSD daemon: threads and sockets around the [`FeedCore`] and the
//! [`QueryCore`]s.
//!
//! * One feed loop (mio, the feed socket): subscriptions, signature checks, the
//!   stream, the notifier.
//! * One query loop per worker, each on its own `SO_REUSEPORT` socket of the query
//!   port, reading the database lock-free.
//! * Two fetcher threads: MPS range fetches and snapshot downloads (blocking HTTP),
//!   results back through a channel and the feed loop's waker.
//! * A directory refresher when the directory is fetched over HTTP (s5: daily).
//! * The admin HTTP server: `/metrics`, `/v1/status`, `/v1/applied`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, bounded};
use ivip_wire::{Mab, RuasId};
use serde_json::json;

use super::config::{DirectorySource, QsdSettings};
use super::directory::Directory;
use super::feed::{AppliedLog, FeedCore, FeedParts, FetchJob, FetchResult};
use super::query::{NotifierMsg, QueryCore, QueryMetrics, QueryShared};
use super::stream::Stream;
use crate::daemon::{SHUTDOWN_POLL_MS, Shutdown};
use crate::http::{self, HttpServer, Request, Response, ServerConfig};
use crate::metrics::Registry;
use crate::net::event_loop::Stop;
use crate::net::{LoopConfig, LoopMetrics, UdpLoop, cores, random_bytes};
use crate::sign::Ed25519Verifier;
use crate::table::DbReader;
use crate::time::SystemClock;

/// Fetch jobs waiting, at most.
const FETCH_QUEUE_MAX: usize = 4096;
/// Notifier messages waiting, at most.
const NOTIFIER_QUEUE_MAX: usize = 1 << 16;

/// Why the QSD could not start.
#[derive(Debug)]
pub enum QsdError {
    /// The directory could not be read, fetched or trusted.
    Directory(String),
    /// A socket.
    Bind(std::io::Error),
    /// The admin HTTP server.
    Http(http::ServerError),
    /// A thread.
    Worker(std::io::Error),
}

impl std::fmt::Display for QsdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QsdError::Directory(e) => write!(f, "directory: {e}"),
            QsdError::Bind(e) => write!(f, "{e} (is another daemon using the port?)"),
            QsdError::Http(e) => write!(f, "{e}"),
            QsdError::Worker(e) => write!(f, "worker: {e}"),
        }
    }
}

impl std::error::Error for QsdError {}

fn http_client(total: std::time::Duration) -> http::Client {
    http::Client {
        connect_timeout: std::time::Duration::from_secs(2),
        total_timeout: total,
        body_max: 1 << 30,
    }
}

/// Read or fetch the directory.
///
/// # Errors
/// A sentence for the operator.
pub fn load_directory(src: &DirectorySource) -> Result<Directory, String> {
    match src {
        DirectorySource::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Directory::parse(p, &text).map_err(|e| e.to_string())
        }
        DirectorySource::Url { url, key } => {
            let c = http_client(std::time::Duration::from_secs(10));
            let body = c.get(url).map_err(|e| format!("{url}: {e}"))?;
            if body.status != 200 {
                return Err(format!("{url}: HTTP {}", body.status));
            }
            let sig = c
                .get(&format!("{url}.sig"))
                .map_err(|e| format!("{url}.sig: {e}"))?;
            if sig.status != 200 {
                return Err(format!("{url}.sig: HTTP {}", sig.status));
            }
            let sig_text = String::from_utf8_lossy(&sig.body).into_owned();
            Directory::parse_signed(url, &body.body, &sig_text, key, &Ed25519Verifier)
        }
    }
}

fn fetch_loop(
    jobs: &Receiver<FetchJob>,
    results: &Sender<FetchResult>,
    mps: &[String],
    waker: &mio::Waker,
    stop: &Stop,
) {
    let wait = std::time::Duration::from_millis(SHUTDOWN_POLL_MS);
    let quick = http_client(std::time::Duration::from_millis(800));
    let slow = http_client(std::time::Duration::from_secs(120));
    while !stop.is_stopping() && !stop.is_aborted() {
        let job = match jobs.recv_timeout(wait) {
            Ok(j) => j,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let result = match job {
            FetchJob::Payloads {
                ruas,
                epoch,
                from,
                to,
                mps: i,
            } => {
                if mps.is_empty() {
                    FetchResult::Payloads(Err("no MPS configured".into()))
                } else {
                    let url = format!(
                        "{}/payloads/{ruas}/{epoch}?from={from}&to={to}",
                        mps[i % mps.len()]
                    );
                    FetchResult::Payloads(match quick.get(&url) {
                        Ok(r) if r.status == 200 => Ok(r.body),
                        Ok(r) => Err(format!("{url}: HTTP {}", r.status)),
                        Err(e) => Err(format!("{url}: {e}")),
                    })
                }
            }
            FetchJob::Snapshot { mab, server } => {
                let url = format!("{server}/v1/snapshots/latest?mab={mab}");
                FetchResult::Snapshot(
                    mab,
                    match slow.get(&url) {
                        Ok(r) if r.status == 200 => Ok(r.body),
                        Ok(r) => Err(format!(
                            "{url}: HTTP {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body).trim()
                        )),
                        Err(e) => Err(format!("{url}: {e}")),
                    },
                )
            }
        };
        if results.send(result).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// Read or fetch the directory again every `every`; a directory that fails to
/// load or verify is logged and the one in use is kept.
fn refresh_loop(
    src: &DirectorySource,
    every: crate::time::Duration,
    results: &Sender<FetchResult>,
    waker: &mio::Waker,
    stop: &Stop,
) {
    let mut next = std::time::Instant::now() + every.to_std();
    while !stop.is_stopping() && !stop.is_aborted() {
        std::thread::sleep(std::time::Duration::from_millis(SHUTDOWN_POLL_MS));
        if std::time::Instant::now() < next {
            continue;
        }
        next = std::time::Instant::now() + every.to_std();
        match load_directory(src) {
            Ok(d) => {
                if results.send(FetchResult::Directory(d)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
            Err(e) => log::warn!("directory refresh failed, keeping the one in use: {e}"),
        }
    }
}

/// A running QSD.
pub struct Qsd {
    query: SocketAddr,
    feed: SocketAddr,
    admin: Option<HttpServer>,
    registry: Registry,
    reader: DbReader,
    stop: Stop,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for Qsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qsd(query {}, feed {})", self.query, self.feed)
    }
}

struct Admin {
    reader: DbReader,
    known: Arc<ArcSwap<Vec<Mab>>>,
    applied: Arc<AppliedLog>,
    registry: Registry,
}

impl Admin {
    fn handle(&self, r: &Request) -> Response {
        let json = |v: serde_json::Value| {
            Response::new(200, "application/json", v.to_string().into_bytes())
        };
        match (r.method.as_str(), r.segments().as_slice()) {
            ("GET", ["metrics"]) => http::metrics_response(&self.registry),
            ("GET", ["v1", "status"]) => {
                let with_hash = matches!(r.query_param("hash"), Some("1" | "true"));
                let loaded: BTreeMap<Mab, u64> = self.reader.mabs().into_iter().collect();
                let mabs: Vec<serde_json::Value> = self
                    .known
                    .load()
                    .iter()
                    .map(|m| match loaded.get(m) {
                        Some(seq) => {
                            let hash = with_hash
                                .then(|| self.reader.view(m).map(|v| ivip_wire::hex::encode(&v.hash())))
                                .flatten();
                            json!({"mab": m.to_string(), "state": "ready", "mab_seq": seq, "sha256": hash})
                        }
                        None => json!({"mab": m.to_string(), "state": "loading"}),
                    })
                    .collect();
                json(json!({"mabs": mabs}))
            }
            ("GET", ["v1", "applied"]) => {
                let mab = match r
                    .query_param("mab")
                    .map(crate::ruas::http::percent_decode)
                    .map(|s| s.parse::<Mab>())
                {
                    Some(Ok(m)) => m,
                    _ => return Response::bad_request("give mab=PREFIX, e.g. mab=20.0.0.0/14"),
                };
                let num = |k: &str, d: u64| {
                    r.query_param(k)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(d)
                };
                let list = self
                    .applied
                    .range(&mab, num("from", 0), num("to", u64::MAX));
                json(json!({"mab": mab.to_string(), "applied": list}))
            }
            _ => Response::not_found(&format!("no resource {}", r.path)),
        }
    }
}

/// Start a QSD.
///
/// # Errors
/// [`QsdError`].
pub fn start(s: &QsdSettings, shutdown: Shutdown) -> Result<Qsd, QsdError> {
    let dir = load_directory(&s.directory).map_err(QsdError::Directory)?;
    let registry = Registry::new();
    let clock = SystemClock::new();
    let now = clock.now();
    let stream = Stream::new(s.stream, &dir.infos(), now);
    let reader = stream.reader();
    let known = Arc::new(ArcSwap::from_pointee(dir.mabs()));
    let snapshot_urls: BTreeMap<RuasId, Vec<String>> = dir
        .infos()
        .iter()
        .map(|r| (r.id, dir.snapshot_urls(r.id)))
        .collect();
    let stop = Stop::new(shutdown.clone());
    let mut threads = Vec::new();

    // Query workers.
    let query_socks =
        cores::bind_group(s.query_listen, s.workers, s.socket.options()).map_err(QsdError::Bind)?;
    let query = query_socks[0].local_addr().map_err(QsdError::Bind)?;
    let notify_sock: UdpSocket = query_socks[0].try_clone().map_err(QsdError::Bind)?;
    let (ntx, nrx) = bounded::<NotifierMsg>(NOTIFIER_QUEUE_MAX);
    let qm = QueryMetrics::register(&registry);
    let loop_metrics = LoopMetrics::register(&registry, "ivip_qsd_query");
    for (i, sock) in query_socks.into_iter().enumerate() {
        let shared = QueryShared {
            reader: reader.clone(),
            known: known.clone(),
            notifier: ntx.clone(),
            cache_time: s.cache_time,
            negative_cache_time: s.negative_cache_time,
            clients: s.clients.clone(),
            metrics: qm.clone(),
        };
        let lp = UdpLoop::new(
            sock,
            LoopConfig::default(),
            s.fault.injector(1000 + i as u64),
            loop_metrics.clone(),
            clock,
        )
        .map_err(QsdError::Worker)?;
        let st = stop.clone();
        threads.push(
            cores::spawn(format!("qsd-query-{i}"), move || {
                let mut core = QueryCore::new(shared);
                lp.run(&mut core, &st)
            })
            .map_err(QsdError::Worker)?,
        );
    }

    // The feed loop.
    let feed_sock = cores::bind_group(s.feed_listen, 1, s.socket.options())
        .map_err(QsdError::Bind)?
        .remove(0);
    let feed = feed_sock.local_addr().map_err(QsdError::Bind)?;
    let lp = UdpLoop::new(
        feed_sock,
        LoopConfig::default(),
        s.fault.injector(0),
        LoopMetrics::register(&registry, "ivip_qsd_feed_loop"),
        clock,
    )
    .map_err(QsdError::Worker)?;
    let waker = Arc::new(lp.waker());
    let (jobs_tx, jobs_rx) = bounded::<FetchJob>(FETCH_QUEUE_MAX);
    let (res_tx, res_rx) = bounded::<FetchResult>(FETCH_QUEUE_MAX);
    let applied = Arc::new(AppliedLog::default());
    let seed = random_bytes::<16>().map_err(QsdError::Directory)?;
    let parts = FeedParts {
        feeds: s.feeds.clone(),
        timing: s.timing,
        nonce: u64::from_be_bytes(seed[..8].try_into().unwrap_or([1; 8])),
        verifier: Arc::new(Ed25519Verifier),
        snapshot_urls,
        known: known.clone(),
        jobs: jobs_tx,
        results: res_rx,
        notifier_rx: nrx,
        notify_send: Box::new(move |to, bytes| {
            let _ = notify_sock.send_to(bytes, to);
        }),
        applied: applied.clone(),
        wall: Arc::new(clock),
        notify_seed: u64::from_be_bytes(seed[8..].try_into().unwrap_or([2; 8])),
    };
    let mut core = FeedCore::new(stream, parts, now, &registry);
    let st = stop.clone();
    threads.push(
        cores::spawn("qsd-feed".into(), move || lp.run(&mut core, &st))
            .map_err(QsdError::Worker)?,
    );
    for i in 0..2 {
        let (jobs, results, mps, waker, st) = (
            jobs_rx.clone(),
            res_tx.clone(),
            s.mps.clone(),
            waker.clone(),
            stop.clone(),
        );
        threads.push(
            cores::spawn(format!("qsd-fetch-{i}"), move || {
                fetch_loop(&jobs, &results, &mps, &waker, &st);
                Ok(())
            })
            .map_err(QsdError::Worker)?,
        );
    }

    {
        let (src, every, results, waker, st) = (
            s.directory.clone(),
            s.directory_refresh,
            res_tx.clone(),
            waker.clone(),
            stop.clone(),
        );
        threads.push(
            cores::spawn("qsd-directory".into(), move || {
                refresh_loop(&src, every, &results, &waker, &st);
                Ok(())
            })
            .map_err(QsdError::Worker)?,
        );
    }
    let admin = Arc::new(Admin {
        reader: reader.clone(),
        known: known.clone(),
        applied,
        registry: registry.clone(),
    });
    let server = HttpServer::spawn(
        s.admin_listen,
        "qsd",
        ServerConfig::default(),
        shutdown,
        Arc::new(move |r| admin.handle(r)),
    )
    .map_err(QsdError::Http)?;
    log::info!(
        "qsd: queries on {query} ({} worker(s)), feeds on {feed}, admin http://{}, {} MAB(s) from {} RUAS(es)",
        s.workers,
        server.local_addr(),
        dir.mabs().len(),
        dir.ruas.len()
    );
    Ok(Qsd {
        query,
        feed,
        admin: Some(server),
        registry,
        reader,
        stop,
        threads,
    })
}

impl Qsd {
    /// The query port.
    pub fn query_addr(&self) -> SocketAddr {
        self.query
    }

    /// The feed port.
    pub fn feed_addr(&self) -> SocketAddr {
        self.feed
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .as_ref()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), HttpServer::local_addr)
    }

    /// Metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The database.
    pub fn reader(&self) -> &DbReader {
        &self.reader
    }

    fn join(mut self) -> Result<(), QsdError> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(QsdError::Worker(e)),
                Err(_) => {
                    result = Err(QsdError::Worker(std::io::Error::other(
                        "a QSD thread panicked",
                    )))
                }
            }
        }
        if let Some(h) = self.admin.take() {
            h.stop();
        }
        result
    }

    /// Wait until the shutdown flag stops it.
    ///
    /// # Errors
    /// A thread failed.
    pub fn wait(self) -> Result<(), QsdError> {
        self.join()
    }

    /// Stop gracefully (unsubscribe from feeds).
    ///
    /// # Errors
    /// A thread failed.
    pub fn stop(self) -> Result<(), QsdError> {
        self.stop.stop();
        self.join()
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.abort();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

/// Run until SIGTERM/SIGINT.
///
/// # Errors
/// [`QsdError`].
pub fn run(s: &QsdSettings, shutdown: Shutdown) -> Result<(), QsdError> {
    start(s, shutdown)?.wait()
}
